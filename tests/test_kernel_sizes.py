"""Every kernel family at awkward sizes and operand layouts on the Vulkan device (issue 17).

Sizes 1, 15, 17, 127, 129 and 1,000 (odd bf16 lengths: bf16 packs two elements per 32-bit
word, so odd lengths and odd view offsets split words), over operands that are contiguous, start
at an odd element, transposed, strided and broadcast, against numpy or torch in float64. Integer
results and copies are exact; float results are within the rounding of one op
(tests/conftest.py assert_op_close: bf16 within 2 ulps of the float64 result rounded once),
sums and products within the float32 accumulation bound length * 2^-24 * (the same on |terms|).
Then one launch per family whose grid is sized by elements past 65,535 workgroups
(vk.Kernel.MAX_THREADS invocations), checking that the far end is computed.

Covered elsewhere, at these sizes, and not repeated here:
- matmul.comp, every tile, the DIRECT variant, layouts NN/NT/TN/TT/strided, aligned and not,
  and more tiles than workgroups: tests/test_gemm_variants.py;
- rownorm.comp (softmax, log-softmax, layer norm, cross-entropy, forward and backward) and
  reduce.comp's float variants, subgroup and shared memory, rows of 1 ... 5,000 and 70,000 (two
  passes): tests/test_fused_rows.py (reduce's integer variants are here);
- random.comp's draws against the host's bits at (), (1,), (7, 3), (3, 5, 7), (70001,):
  tests/test_random.py (its index patterns, arange, linspace, eye, are here);
- past 65,535 workgroups: random.comp (arange), tests/test_gpu_correctness.py; elementwise.comp
  and gather.comp's word copies (4 elements per invocation), tests/test_kernel_indexing.py;
  matmul.comp, tests/test_gemm_variants.py.
Not launched past 65,535 workgroups, because the memory would exceed lavapipe's 128 MiB arena:
sort.comp (8 bytes of keys and indices per slot), conv.comp (16 outputs per invocation: 2^28
outputs), attention.comp (one invocation per query row), scan.comp's chunk passes (about 16K
invocations whatever the length; its per-row pass is launched past the limit here).
"""
import collections

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import vkgrad as vk
import vkgrad.nn.functional as F

from conftest import assert_op_close

pytestmark = pytest.mark.vulkan
SIZES = [1, 15, 17, 127, 129, 1000]
BF16 = ml_dtypes.bfloat16
U = 2.0 ** -24
NP = {"float32": np.float32, "bfloat16": BF16, "int32": np.int32, "uint8": np.uint8,
      "bool": np.bool_}
LAYOUTS = ["contiguous", "offset", "transposed", "strided", "broadcast"]


def _values(rng, shape, dtype, low=None):
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "uint8":
        return rng.integers(low or 0, 256, shape).astype(np.uint8)
    if dtype == "int32":
        return rng.integers(low or -1000, 1000, shape).astype(np.int32)
    return (rng.standard_normal(shape) * 2).astype(NP[dtype])


def _stored(values, device, layout):
    """A tensor view holding `values` (2-D), stored as `layout` says: "offset" starts one element
    into its buffer, "transposed" is the transpose of a contiguous array, "strided" every other
    element of a wider row starting at the second, "broadcast" row 0 of `values` repeated (the
    values returned are then the broadcast ones)."""
    rows, cols = values.shape
    if layout == "contiguous":
        return values, vk.tensor(values, device=device)
    if layout == "offset":
        flat = np.concatenate([values.ravel()[:1], values.ravel()])
        return values, vk.tensor(flat, device=device)[1:].reshape(rows, cols)
    if layout == "transposed":
        return values, vk.tensor(np.ascontiguousarray(values.T), device=device).T
    if layout == "strided":
        store = np.repeat(values, 2, axis=1)
        store = np.concatenate([store[:, :1], store], axis=1)
        return values, vk.tensor(store, device=device)[:, 1::2]
    row = values[:1]
    return np.broadcast_to(row, values.shape), vk.tensor(row, device=device).broadcast_to(
        values.shape)


def _close(got, expected, dtype, what, length=1, magnitude=0.0):
    if np.asarray(expected).dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected, err_msg=what)
    else:
        assert_op_close(got, expected, dtype, length, magnitude, what)


def _sum_close(got, expected, magnitude, length, dtype, what):
    """A sum of `length` float32 terms: within length * 2^-24 * (the sum of |terms|), plus the
    one rounding to bf16 for bf16 results."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    tol = length * U * np.abs(magnitude)
    if dtype == "bfloat16":
        tol = tol + 2 * np.ldexp(1.0, np.frexp(np.abs(expected))[1] - 8)
    bad = ~(np.abs(got - expected) <= tol)
    assert not bad.any(), f"{what}: {bad.sum()} of {bad.size} out of tolerance, e.g. " \
                          f"{got[bad][:3]} against {expected[bad][:3]}"


# ---- elementwise.comp: float, int and uint domains --------------------------------------------
def _elementwise_cases(dtype):
    """(name, vkgrad call, numpy reference on float64 or exact integer inputs)."""
    if dtype in ("float32", "bfloat16"):
        return [("add", vk.add, np.add), ("mul", vk.multiply, np.multiply),
                ("exp", lambda a, b: vk.exp(a), lambda a, b: np.exp(a)),
                ("where", lambda a, b: vk.where(a > b, a, b), lambda a, b: np.where(a > b, a, b)),
                ("scalar", lambda a, b: a - 1.5, lambda a, b: a - 1.5)]
    if dtype == "bool":
        return [("and", vk.logical_and, np.logical_and), ("or", vk.logical_or, np.logical_or),
                ("not", lambda a, b: vk.logical_not(a), lambda a, b: np.logical_not(a)),
                ("eq", vk.equal, np.equal)]
    return [("add", vk.add, np.add), ("mul", vk.multiply, np.multiply),
            ("max", vk.maximum, np.maximum), ("floordiv", vk.floor_divide, np.floor_divide),
            ("scalar", lambda a, b: a - 3, lambda a, b: a - np.array(3, a.dtype))]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "uint8", "bool"])
def test_elementwise(vulkan, rng, dtype, n):
    cases = _elementwise_cases(dtype)
    for layout in LAYOUTS:
        a, ta = _stored(_values(rng, (n, 3), dtype), vulkan, layout)
        b, tb = _stored(_values(rng, (n, 3), dtype, low=1), vulkan, "offset")
        for name, call, ref in cases:
            expected = ref(*[x.astype(np.float64) if x.dtype.kind == "f" or x.dtype == BF16
                             else x for x in (a, b)])
            if dtype in ("int32", "uint8", "bool"):
                expected = expected.astype(np.dtype(NP[dtype]) if name != "eq" else np.bool_)
            got = call(ta, tb)
            assert got.shape == (n, 3)
            _close(got.numpy(), expected, dtype, f"{name} {dtype} {layout} ({n}, 3)")
        # with an operand of another dtype (promoted in the kernel: the two read different
        # words per element), against the float64 sum rounded to the result's dtype
        other = {"float32": "bfloat16", "bfloat16": "uint8", "int32": "uint8", "uint8": "bool",
                 "bool": "int32"}[dtype]
        o, to = _stored(_values(rng, (n, 3), other), vulkan, "offset")
        got = ta + to
        kind = got.dtype.name
        if kind in ("float32", "bfloat16"):
            assert_op_close(got.numpy(), a.astype(np.float64) + o.astype(np.float64), kind, 1,
                            0.0, f"{dtype} {layout} + {other}")
        else:
            np.testing.assert_array_equal(
                got.numpy(), (a.astype(np.int64) + o.astype(np.int64)).astype(NP[kind]),
                err_msg=f"{dtype} {layout} + {other}")
        # conversions to every dtype (from floats only where numpy's own cast is defined: to
        # floats, to int32 for values in range, to bool)
        targets = ["float32", "bfloat16", "int32", "bool"] + (
            [] if dtype in ("float32", "bfloat16") else ["uint8"])
        for target in targets:
            got = ta.astype(target).numpy()
            expected = np.ascontiguousarray(a.astype(np.float32).astype(NP[target])
                                            if dtype == "bfloat16" else a.astype(NP[target]))
            np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8),
                                          err_msg=f"{dtype} {layout} astype {target}")
        # a row broadcast against a column: the output's two strides come from different operands
        col = _values(rng, (n, 1), dtype, low=1)
        got = cases[0][1](vk.tensor(col, device=vulkan), tb[:1]).numpy()
        wide = [x.astype(np.float64) if dtype in ("float32", "bfloat16") else x
                for x in (col, b[:1])]
        expected = cases[0][2](*wide)
        if dtype not in ("float32", "bfloat16"):
            expected = expected.astype(NP[dtype])
        _close(got, expected, dtype, f"{cases[0][0]} {dtype} ({n}, 1) with (1, 3)")


# ---- gather.comp: strided copies, with an index at the source, the destination or the value ---
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "uint8", "bool"])
def test_copies(vulkan, rng, dtype, n):
    for layout in LAYOUTS:
        a, ta = _stored(_values(rng, (n, 3), dtype), vulkan, layout)
        # into rows 1 .. n of a bigger tensor (odd element offsets for n * 3 odd)
        base = _values(rng, (n + 2, 3), dtype)
        dst = vk.tensor(base, device=vulkan)
        dst[1:n + 1] = ta
        expected = base.copy()
        expected[1:n + 1] = a
        np.testing.assert_array_equal(dst.numpy(), expected, err_msg=f"setitem {layout}")
        # into a strided column of a packed destination
        dst = vk.tensor(base, device=vulkan)
        dst[:n, 1] = ta[:, 2]
        expected = base.copy()
        expected[:n, 1] = a[:, 2]
        np.testing.assert_array_equal(dst.numpy(), expected, err_msg=f"column {layout}")
        # an index at the source (rows picked, with repeats), at the value (along axis 1) and at
        # the destination (a permutation of the rows)
        rows = rng.integers(0, n, 2 * n + 1)
        np.testing.assert_array_equal(ta[vk.tensor(rows, device=vulkan)].numpy(), a[rows],
                                      err_msg=f"gather rows {layout}")
        cols = rng.integers(0, 3, (n, 5))
        np.testing.assert_array_equal(
            vk.take_along_axis(ta, vk.tensor(cols, device=vulkan), 1).numpy(),
            np.take_along_axis(a, cols, 1), err_msg=f"take_along_axis {layout}")
        perm = rng.permutation(n)
        dst = vk.tensor(base[:n], device=vulkan)
        dst[vk.tensor(perm, device=vulkan)] = ta
        expected = base[:n].copy()
        expected[perm] = a
        np.testing.assert_array_equal(dst.numpy(), expected, err_msg=f"scatter rows {layout}")


# ---- reduce.comp's integer variants, subgroup and shared memory -------------------------------
@pytest.fixture(params=["subgroup", "shared"])
def reduce_variant(request, vulkan):
    backend = vulkan.backend
    saved = backend.subgroups
    backend.subgroups = request.param == "subgroup"
    if request.param == "subgroup" and not backend.subgroups:
        backend.subgroups = saved
        pytest.skip("the device has no subgroup arithmetic")
    yield vulkan
    backend.subgroups = bool(saved)


@pytest.mark.parametrize("n", SIZES + [70000])  # 70,000 > 2^16: two passes
@pytest.mark.parametrize("dtype", ["int32", "uint8", "bfloat16"])
def test_reductions(reduce_variant, rng, dtype, n):
    """reduce.comp's int variants (and, for bf16 views that start mid-word, its float ones;
    tests/test_fused_rows.py runs float32 at these lengths)."""
    device = reduce_variant
    x = _values(rng, (3, n), dtype)
    for layout in ("contiguous", "offset", "transposed", "strided"):
        a, t = _stored(x, device, layout)
        wide = a.astype(np.float64 if dtype == "bfloat16" else np.int64)
        for axis in (1, 0):
            for name in ("sum", "max", "min", "argmax", "argmin"):
                got = getattr(t, name)(axis=axis).numpy()
                expected = getattr(np, name)(wide, axis=axis)
                what = f"{name} axis {axis} {layout} {dtype} (3, {n})"
                if name == "sum" and dtype == "bfloat16":
                    _sum_close(got, expected, np.abs(wide).sum(axis=axis), a.shape[axis],
                               dtype, what)
                else:
                    np.testing.assert_array_equal(got.astype(expected.dtype), expected,
                                                  err_msg=what)
    signs = np.where(rng.random((3, n)) < 0.5, -1, 1).astype(np.int32)  # no overflow
    np.testing.assert_array_equal(vk.tensor(signs, device=device).prod(axis=1).numpy(),
                                  signs.prod(axis=1))
    flags = rng.random((3, n)) < 0.99
    t = vk.tensor(flags, device=device)
    np.testing.assert_array_equal(t.all(axis=1).numpy(), flags.all(axis=1))
    np.testing.assert_array_equal((~t).any(axis=1).numpy(), (~flags).any(axis=1))


# ---- scan.comp: prefix sums and running combinations, and boolean compaction -----------------
def _scan_reference(name, x, axis):
    if name == "cumsum":
        return np.cumsum(x, axis), np.cumsum(np.abs(x), axis)
    if name == "cumprod":
        return np.cumprod(x, axis), np.abs(np.cumprod(x, axis))
    if name == "logcumsumexp":
        # each step rounds a max, an exp and a log1p, at most 1/2 ulp of |result| + 1 each
        out = np.logaddexp.accumulate(x, axis)
        return out, np.abs(out) + 1
    return getattr(np, {"cummax": "maximum", "cummin": "minimum"}[name]).accumulate(x, axis), 0


@pytest.mark.parametrize("n", SIZES + [5000])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
def test_scans(vulkan, rng, dtype, n):
    names = ["cumsum", "cumprod", "cummax", "cummin"] + (
        ["logcumsumexp"] if dtype != "int32" else [])
    for layout in ("contiguous", "transposed", "strided"):
        for name in names:
            if name == "cumprod":  # products near 1 (floats) or of signs (ints) stay in range
                x = rng.uniform(0.99, 1.01, (3, n)) if dtype != "int32" else \
                    np.where(rng.random((3, n)) < 0.5, -1, 1)
                x = x.astype(NP[dtype])
            else:
                x = _values(rng, (3, n), dtype)
            a, t = _stored(x, vulkan, layout)
            for axis in (1, 0):
                got = getattr(t, name)(axis)
                got = (got.values if name in ("cummax", "cummin") else got).numpy()
                wide = a.astype(np.float64) if dtype != "int32" else a.astype(np.int64)
                expected, magnitude = _scan_reference(name, wide, axis)
                what = f"{name} axis {axis} {layout} {dtype} (3, {n})"
                if dtype == "int32":
                    np.testing.assert_array_equal(got, expected, err_msg=what)
                elif name in ("cummax", "cummin"):
                    np.testing.assert_array_equal(got.astype(np.float64), expected, err_msg=what)
                else:  # each step rounds once in float32: the accumulation bound over the axis
                    _sum_close(got, expected, magnitude, 2 * a.shape[axis], dtype, what)
    for packed in ("uint8", "bool"):  # sources of several elements per word, mid-word views
        for layout in ("offset", "strided"):
            a, t = _stored(_values(rng, (3, n), packed), vulkan, layout)
            np.testing.assert_array_equal(t.cumsum(1).numpy(), np.cumsum(a.astype(np.int64), 1),
                                          err_msg=f"cumsum {packed} {layout} (3, {n})")
    mask = rng.random((n, 3)) < 0.3
    np.testing.assert_array_equal(vk.tensor(mask, device=vulkan).T.nonzero().numpy(),
                                  np.stack(np.nonzero(mask.T), axis=1))
    values = _values(rng, (n, 3), dtype)
    np.testing.assert_array_equal(
        vk.tensor(values, device=vulkan)[1:].masked_select(vk.tensor(mask[1:], device=vulkan))
        .numpy(), values[1:][mask[1:]])


# ---- sort.comp: bitonic argsort over padded rows ---------------------------------------------
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "uint8"])
def test_sorts(vulkan, rng, dtype, n):
    x = _values(rng, (3, n), dtype)
    for layout in ("contiguous", "transposed", "strided"):
        a, t = _stored(x, vulkan, layout)
        for axis in (1, 0):
            for descending in (False, True):
                what = f"argsort axis {axis} {layout} descending={descending} {dtype}"
                order = vk.argsort(t, axis=axis, descending=descending).numpy()
                assert (np.sort(order, axis=axis) ==
                        np.arange(a.shape[axis]).reshape([-1 if d == axis else 1
                                                          for d in range(2)])).all(), what
                expected = np.sort(a.astype(np.float64), axis=axis)
                if descending:
                    expected = np.flip(expected, axis)
                np.testing.assert_array_equal(
                    np.take_along_axis(a, order, axis).astype(np.float64), expected, err_msg=what)


# ---- scatter.comp: deterministic (sort-based) accumulation ------------------------------------
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
def test_add_at(vulkan, rng, dtype, n):
    index = rng.integers(0, n, 2 * n + 1)
    values = _values(rng, (2 * n + 1, 3), dtype)
    start = _values(rng, (n, 3), dtype)
    wide = (lambda v: v.astype(np.float64)) if dtype != "int32" else (lambda v: v.astype(np.int64))
    expected, magnitude = wide(start), np.abs(wide(start))
    np.add.at(expected, index, wide(values))
    np.add.at(magnitude, index, np.abs(wide(values)))
    count = np.bincount(index, minlength=n)[:, None] + 1
    for layout in ("contiguous", "transposed", "strided"):
        _, src = _stored(values, vulkan, layout)
        # the destination is a view that starts at an odd element and has a row stride of 4
        store = np.concatenate([start, start[:, :1]], axis=1)
        dst_store = vk.tensor(np.concatenate([store.ravel()[:1], store.ravel()]), device=vulkan)
        dst = dst_store[1:].reshape(n, 4)[:, :3]
        vk.add_at(dst, vk.tensor(index, device=vulkan), src)
        what = f"add_at {layout} {dtype} n={n}"
        if dtype == "int32":
            np.testing.assert_array_equal(dst.numpy(), expected, err_msg=what)
        else:
            _sum_close(dst.numpy(), expected, magnitude, count, dtype, what)
        np.testing.assert_array_equal(dst_store[1:].reshape(n, 4)[:, 3].numpy(), store[:, 3],
                                      err_msg=f"{what}: outside the view")
        # no index (a slice): every destination once, gather.comp's add mode
        # (one addition of the values to what the first add_at left: one rounding)
        want = wide(dst.numpy()) + wide(values[:n])
        vk.add_at(dst, slice(None), src[:n])
        _close(dst.numpy(), want.astype(np.int32) if dtype == "int32" else want, dtype,
               what + " slice")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
def test_scatter_reduce(vulkan, rng, dtype, n):
    """scatter.comp's multiply, max and min modes (torch's scatter_reduce: the index varies
    along every dim), exact: products of powers of two, and maxima, round nothing."""
    index = rng.integers(0, n, (2 * n + 1, 3))
    src = rng.choice([-2, -1, 1, 2, 4], (2 * n + 1, 3)).astype(NP[dtype])
    base = rng.choice([-1, 1, 2], (n, 3)).astype(NP[dtype])
    cols = np.broadcast_to(np.arange(3), index.shape)
    for reduce, ufunc in (("prod", np.multiply), ("amax", np.maximum), ("amin", np.minimum)):
        for include_self in (True, False):
            expected = base.astype(np.float64)
            if not include_self:  # the destinations hit start from the identity
                expected[index, cols] = {"prod": 1, "amax": -np.inf, "amin": np.inf}[reduce]
            ufunc.at(expected, (index, cols), src.astype(np.float64))
            for layout in ("contiguous", "transposed"):
                _, tsrc = _stored(src, vulkan, layout)
                got = vk.tensor(base, device=vulkan).scatter_reduce(
                    0, vk.tensor(index, device=vulkan), tsrc, reduce, include_self=include_self)
                np.testing.assert_array_equal(
                    got.numpy().astype(np.float64), expected,
                    err_msg=f"scatter_reduce {reduce} include_self={include_self} {layout}")


# ---- random.comp's index patterns ---------------------------------------------------------------
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "uint8"])
def test_patterns(vulkan, dtype, n):
    np_dtype = NP[dtype]
    got = vk.arange(min(n, 256) if dtype == "uint8" else n, dtype=dtype, device=vulkan).numpy()
    np.testing.assert_array_equal(got, np.arange(len(got)).astype(np_dtype))
    m = min(n, 126) if dtype == "uint8" else n  # the values stay in uint8's range
    got = vk.arange(3, 3 + 2 * m, 2, dtype=dtype, device=vulkan).numpy()
    np.testing.assert_array_equal(got, np.arange(3, 3 + 2 * m, 2).astype(np_dtype))
    got = vk.eye(n, n + 1, dtype=dtype, device=vulkan).numpy()
    np.testing.assert_array_equal(got, np.eye(n, n + 1).astype(np_dtype))
    if dtype in ("float32", "bfloat16"):
        got = vk.linspace(-1.0, 2.0, n, dtype=dtype, device=vulkan).numpy()
        assert_op_close(got, np.linspace(-1.0, 2.0, n), dtype, 1, 0.0, f"linspace {n} {dtype}")


@pytest.mark.parametrize("n", [15, 17, 129, 1000])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_draws_match_the_host(vulkan, dtype, n):
    for fn in (lambda **kw: vk.rand((n,), dtype=dtype, **kw),
               lambda **kw: vk.randn((3, n), dtype=dtype, **kw),
               lambda **kw: vk.randint(-5, 300, (n, 3), **kw)):
        vk.set_rng_state((99, 5))
        host = fn(device="host").numpy()
        vk.set_rng_state((99, 5))
        dev = fn(device=vulkan).numpy()
        assert dev.dtype == host.dtype
        np.testing.assert_array_equal(dev.view(np.uint8), host.view(np.uint8))  # the same bits


# ---- optim.comp: every rule and flag on parameters of awkward sizes ---------------------------
OPTIMIZERS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd-momentum-nesterov": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True,
                                          weight_decay=0.01)),
    "sgd-maximize": ("SGD", dict(lr=0.1, momentum=0.5, maximize=True)),
    "adam-amsgrad": ("Adam", dict(lr=0.01, amsgrad=True)),
    "adamw": ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    "rmsprop-centered-momentum": ("RMSprop", dict(lr=0.01, centered=True, momentum=0.9)),
}


@pytest.mark.parametrize("dtype,master", [("float32", False), ("bfloat16", False),
                                          ("bfloat16", True)], ids=["f32", "bf16", "bf16-master"])
@pytest.mark.parametrize("config", list(OPTIMIZERS))
def test_optimizer_steps(vulkan, rng, config, dtype, master):
    """Three steps on parameters of every size (one optimizer holds them all) and on a
    transposed parameter, on Vulkan against the host backend's same update (optim.comp's
    rules and flags: momentum, Nesterov, maximize, AMSGrad, centred, the first step's FRESH,
    bf16 master weights)."""
    name, kwargs = OPTIMIZERS[config]
    kwargs = dict(kwargs, master_weights=True) if master else kwargs
    shapes = [(n,) for n in SIZES] + [(3, 17)]
    start = [rng.standard_normal(s).astype(NP[dtype]) for s in shapes]
    grads = [[rng.standard_normal(s).astype(NP[dtype]) for s in shapes] for _ in range(3)]
    results = []
    for device in ("host", vulkan):
        # copies: host tensors share numpy's memory
        params = [vk.tensor(v.copy(), device=device, requires_grad=True) for v in start[:-1]]
        params.append(vk.tensor(np.ascontiguousarray(start[-1].T), device=device).T.detach())
        params[-1].requires_grad = True
        opt = getattr(vk.optim, name)(params, **kwargs)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = vk.tensor(g, device=device)
            opt.step()
        results.append([p.numpy() for p in params])
    for n, host, dev in zip(shapes, *results):
        assert_op_close(dev, host.astype(np.float64), dtype, 1, 0.0,
                        f"{config} {dtype} {n} after 3 steps", steps=3,
                        level=np.abs(host.astype(np.float64)))


# ---- conv.comp: im2col, col2im, pooling and their backward passes ------------------------------
@pytest.mark.parametrize("size", [1, 15, 17])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_conv_and_pools(vulkan, rng, dtype, size):
    x = rng.standard_normal((2, 3, size, size + 2)).astype(NP[dtype])
    w = rng.standard_normal((5, 3, 3, 3)).astype(NP[dtype])
    g = rng.standard_normal((2, 5, size, size + 2)).astype(NP[dtype])
    tx, tw = (vk.tensor(v, device=vulkan, requires_grad=True) for v in (x, w))
    out = F.conv2d(tx, tw, padding=1)
    out.backward(vk.tensor(g, device=vulkan))
    rx, rw = (torch.tensor(v.astype(np.float64), requires_grad=True) for v in (x, w))
    ref = TF.conv2d(rx, rw, padding=1)
    ref.backward(torch.tensor(g.astype(np.float64)))
    mag = TF.conv2d(rx.detach().abs(), rw.detach().abs(), padding=1).numpy()
    what = f"conv2d {x.shape} {dtype}"
    _sum_close(out.numpy(), ref.detach().numpy(), mag, 27, dtype, what)
    gx_mag = torch.nn.grad.conv2d_input(rx.shape, rw.detach().abs(), torch.tensor(
        np.abs(g.astype(np.float64))), padding=1).numpy()
    _sum_close(tx.grad.numpy(), rx.grad.numpy(), gx_mag, 45, dtype, what + " grad x")
    gw_mag = torch.nn.grad.conv2d_weight(rx.detach().abs(), rw.shape, torch.tensor(
        np.abs(g.astype(np.float64))), padding=1).numpy()
    _sum_close(tw.grad.numpy(), rw.grad.numpy(), gw_mag, 2 * size * (size + 2), dtype,
               what + " grad w")
    for pool, tpool in ((F.max_pool2d, TF.max_pool2d), (F.avg_pool2d, TF.avg_pool2d)):
        kwargs = dict(kernel_size=2, stride=2) if size > 1 else dict(kernel_size=1)
        tx = vk.tensor(x, device=vulkan, requires_grad=True)
        rx = torch.tensor(x.astype(np.float64), requires_grad=True)
        out, ref = pool(tx, **kwargs), tpool(rx, **kwargs)
        go = rng.standard_normal(ref.shape).astype(NP[dtype])
        out.backward(vk.tensor(go, device=vulkan))
        ref.backward(torch.tensor(go.astype(np.float64)))
        what = f"{pool.__name__} {x.shape} {dtype}"
        assert_op_close(out.numpy(), ref.detach().numpy(), dtype, 4, np.abs(ref.detach().numpy()),
                        what)
        assert_op_close(tx.grad.numpy(), rx.grad.numpy(), dtype, 4, np.abs(rx.grad.numpy()),
                        what + " backward")


# ---- attention.comp -----------------------------------------------------------------------------
@pytest.mark.parametrize("length,e,ev", [(1, 15, 16), (17, 16, 15), (129, 16, 16)],
                         ids=["L1-E15-Ev16", "L17-E16-Ev15", "L129-E16-Ev16"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_attention(vulkan, rng, dtype, length, e, ev):
    """The fused forward and both backward passes, unmasked, causal, and with a bool and an
    additive mask broadcast over batch and heads; S = L + 2 keys; odd and even feature widths
    (a bf16 output of odd width is computed in f32 and rounded by the caller)."""
    keys = length + 2
    q = rng.standard_normal((2, 3, length, e)).astype(NP[dtype])
    k = rng.standard_normal((2, 3, keys, e)).astype(NP[dtype])
    v = rng.standard_normal((2, 3, keys, ev)).astype(NP[dtype])
    g = rng.standard_normal((2, 3, length, ev)).astype(NP[dtype])
    take = rng.random((length, keys)) < 0.7
    take[:, 0] = True  # every query sees a key (torch gives NaN for one that sees none)
    add = rng.standard_normal((1, 3, length, keys)).astype(NP[dtype])
    ours = [vk.tensor(a, device=vulkan, requires_grad=True) for a in (q, k, v)]
    refs = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in (q, k, v)]
    for causal, mask in ((False, None), (True, None), (False, take), (False, add)):
        mine = None if mask is None else vk.tensor(mask, device=vulkan)
        theirs = None if mask is None else torch.tensor(
            mask if mask.dtype == np.bool_ else mask.astype(np.float64))
        out = F.scaled_dot_product_attention(*ours, attn_mask=mine, is_causal=causal)
        ref = TF.scaled_dot_product_attention(*refs, attn_mask=theirs, is_causal=causal)
        out.backward(vk.tensor(g, device=vulkan))
        ref.backward(torch.tensor(g.astype(np.float64)))
        what = (f"attention {q.shape} {k.shape} {v.shape} causal={causal} mask="
                f"{None if mask is None else mask.dtype} {dtype}")
        # out_i = sum_j P_ij v_j with weights summing to 1: float32 rounds the S + E terms of a
        # row (the scores' E products, the softmax's S terms), each error carried at most at
        # a few times max|v| (scores of standard normals are a few units), so S + E terms of
        # 4 max|v| in the accumulation bound (for bf16 far below its 2 ulps of the result)
        scale = np.abs(v.astype(np.float64)).max()
        assert_op_close(out.numpy(), ref.detach().numpy(), dtype, keys + e,
                        np.full(ref.shape, 4 * scale), what)
        for t, r, name in zip(ours, refs, "qkv"):
            grad_scale = np.full(r.shape, 4 * np.abs(r.grad.numpy()).max() + 1)
            assert_op_close(t.grad.numpy(), r.grad.numpy(), dtype, 2 * (keys + e), grad_scale,
                            f"{what} grad {name}")
            t.grad, r.grad = None, None


# ---- grids past 65,535 workgroups -------------------------------------------------------------
N = vk.Kernel.MAX_THREADS + 1000  # more invocations than one capped grid holds


@pytest.fixture
def launches(vulkan, monkeypatch):
    """family -> the invocation counts of its launches on the device, from a spy on the
    backend's launch: each test below asserts that its launch went past one grid."""
    backend, seen = vulkan.backend, collections.defaultdict(list)
    launch = backend.launch

    def spy(family, variant, threads, *args, **kwargs):
        seen[family].append(threads)
        return launch(family, variant, threads, *args, **kwargs)

    monkeypatch.setattr(backend, "launch", spy)
    return seen


def _past_one_grid(launches, family):
    assert max(launches[family], default=0) > vk.Kernel.MAX_THREADS, (family, launches[family])


def _tail(t, k=1000):
    return t[-k:].numpy()


# elementwise.comp past 65,535 workgroups: tests/test_kernel_indexing.py (uint8 and bool; at four
# elements per invocation a one-word-per-element dtype would need more than the 128 MiB arena).


def test_copy_past_65535_workgroups(vulkan, launches):
    # a strided copy of uint8 moves one element per invocation
    store = vk.zeros(2 * N, dtype="uint8", device=vulkan)
    store[1::2] = 5
    store[-1] = 6
    dst = vk.zeros(N + 1, dtype="uint8", device=vulkan)
    dst[1:] = store[1::2]
    del store
    assert (_tail(dst)[:-1] == 5).all() and int(dst[-1].item()) == 6
    assert int(dst[0].item()) == 0 and int(dst[1].item()) == 5
    _past_one_grid(launches, "gather")


def test_reduce_past_65535_workgroups(vulkan, launches):
    # down the columns of a (2, N) bool array: one invocation per output
    x = vk.zeros((2, N), dtype="bool", device=vulkan)
    x[1, -3:] = True
    got = x.any(axis=0)
    _past_one_grid(launches, "reduce")
    expected = np.zeros(1000, bool)
    expected[-3:] = True
    np.testing.assert_array_equal(_tail(got), expected)
    assert not got[:-3].any().item()


def test_scan_past_65535_workgroups(vulkan, launches):
    # N rows of one element: one invocation per row in the write pass
    x = vk.zeros((N, 1), dtype="bool", device=vulkan)
    x[-3:] = True
    got = x.cumsum(1)
    _past_one_grid(launches, "scan")
    np.testing.assert_array_equal(got[-5:, 0].numpy(), [0, 0, 1, 1, 1])


def test_scatter_past_65535_workgroups(vulkan, launches):
    # three keyed rows of N / 2 free elements: one invocation per (key, free element)
    cols = N // 2 + 1
    dst = vk.zeros((2, cols), dtype="uint8", device=vulkan)
    vk.add_at(dst, vk.tensor([1, 0, 1], device=vulkan), vk.ones((3, cols), dtype="uint8",
                                                              device=vulkan))
    _past_one_grid(launches, "scatter")
    np.testing.assert_array_equal(dst[:, -1000:].numpy(), [[1] * 1000, [2] * 1000])


def test_rownorm_past_65535_workgroups(vulkan, launches):
    # N bf16 rows of one element (at least one invocation per row): softmax of one is 1
    x = vk.full((N, 1), -3.0, dtype="bfloat16", device=vulkan)
    got = F.softmax(x, 1)
    _past_one_grid(launches, "rownorm")
    np.testing.assert_array_equal(got[-1000:].numpy().astype(np.float64), 1.0)


def test_optimizer_past_65535_workgroups(vulkan, launches):
    p = vk.zeros(N, dtype="bfloat16", device=vulkan, requires_grad=True)
    p.grad = vk.ones(N, dtype="bfloat16", device=vulkan)
    vk.optim.SGD([p], lr=0.5).step()
    _past_one_grid(launches, "optim")
    np.testing.assert_array_equal(_tail(p).astype(np.float64), -0.5)
