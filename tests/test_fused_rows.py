"""The fused row kernels (vkgrad/ops/rownorm.py, shaders/rownorm.comp) and the reductions
(shaders/reduce.comp) on every device, and on Vulkan in both variants: subgroup arithmetic and
the shared-memory tree, forced through the backend's documented `subgroups` switch.

- softmax, log_softmax, layer_norm and cross_entropy, forward and backward, against torch in
  float64: rows of 1, 15, 17, 127, 129, 1,000 and 5,000 elements, odd leading dims, rows along
  a middle axis, empty tensors, rows with NaN and infinities; bf16 within 1 ulp of the float64
  result rounded once (plus float32 accumulation);
- the dispatches each takes on Vulkan (vk.stats()): one per op, cross-entropy's "mean" two;
- reductions over the same lengths, rows and columns, NaN winning max/min/argmax/argmin.
"""
import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import vkgrad as vk
import vkgrad.nn.functional as F

from conftest import DEVICES, bf16_ulp

LENGTHS = [1, 15, 17, 127, 129, 1000, 5000]
U32 = 2.0 ** -24


def _params():
    out = [pytest.param((d, None), id="host") for d in DEVICES if d.kind == "host"]
    for d in DEVICES:
        if d.kind == "vulkan":
            out += [pytest.param((d, variant), id=f"{d}-{variant}", marks=pytest.mark.vulkan)
                    for variant in ("subgroup", "shared")]
    return out


@pytest.fixture(params=_params())
def device(request):
    """A device, and on Vulkan the kernel variant: backend.subgroups on (skipped where the
    device has no subgroup arithmetic) or off, restored afterwards."""
    dev, variant = request.param
    if variant is None:
        yield dev
        return
    backend = dev.backend
    saved = backend.subgroups
    backend.subgroups = variant == "subgroup"
    if variant == "subgroup" and not backend.subgroups:
        backend.subgroups = saved
        pytest.skip(f"{dev} has no subgroup arithmetic")
    try:
        yield dev
    finally:
        backend.subgroups = bool(saved)


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def _close(got, expected, dtype, length, what, magnitude=0.0):
    """float32: within 1e-5 relative (plus float32 accumulation over `length` terms of the size
    of the largest result, or `magnitude` if larger); bf16: the float64 result rounded once,
    within 1 ulp plus that accumulation. NaN where expected."""
    got = got.numpy().astype(np.float64)
    expected = np.asarray(expected, np.float64)
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=what)
    got, expected = got[~nan], expected[~nan]
    same = got == expected  # infinities
    scale = max(np.abs(expected).max(initial=0.0), magnitude)
    if dtype == "bfloat16":
        tol = bf16_ulp(expected) + 4 * length * U32 * scale
    else:
        tol = 1e-5 * np.abs(expected) + 4 * length * U32 * max(scale, 1.0)
    with np.errstate(invalid="ignore"):  # (inf - inf where both are infinite: `same`)
        bad = ~same & ~(np.abs(got - expected) <= tol)
    assert not bad.any(), f"{what}: {got[bad][:4]} vs {expected[bad][:4]}"


def _row_cases(rng):
    """(shape, axis) pairs: every length, odd leading dims, middle and first axes (strided
    rows; many of them get one thread each), empty ones."""
    cases = [((3, n), 1) for n in LENGTHS] + [((5, 3, 17), 2), ((3, 129, 5), 1), ((7, 9), 0),
                                              ((17, 301), 0), ((0, 17), 1), ((4, 0), 1), ((1,), 0)]
    return [(rng.standard_normal(shape) * 4, axis) for shape, axis in cases]


def _vk(a, device, dtype, grad=False):
    return vk.tensor(np.asarray(a, np.float32), dtype=dtype, device=device, requires_grad=grad)


def _rounded(a, dtype):
    return np.asarray(a, np.float32).astype(vk.dtype(dtype).np_dtype).astype(np.float64)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_rows(device, dtype, name, rng):
    for x, axis in _row_cases(rng):
        x = _rounded(x, dtype)
        g = _rounded(rng.standard_normal(x.shape), dtype)
        v = _vk(x, device, dtype, grad=True)
        out = getattr(F, name)(v, axis)
        (gx,) = vk.grad(out, v, _vk(g, device, dtype))
        t = _t(x, grad=True)
        ref = getattr(torch, name)(t, axis)
        (ref_gx,) = torch.autograd.grad(ref, t, _t(g)) if x.size else (t.detach(),)
        n = x.shape[axis]
        what = f"{name} {x.shape} axis {axis} {dtype} on {device}"
        _close(out, ref.detach(), dtype, n, what)
        _close(gx, ref_gx, dtype, n, what + " gradient")


def test_softmax_edge_rows(device):
    """NaN anywhere in a row makes it NaN; a row of -inf is NaN (0 / 0); +inf makes the row NaN
    (inf - inf), as the composite and torch; -inf entries give 0 (log_softmax: -inf)."""
    x = np.array([[0.0, np.nan, 1.0], [-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 2.0],
                  [-np.inf, 1.0, 2.0], [80.0, -80.0, 0.0], [np.inf, np.inf, 0.0]])
    for dtype in ("float32", "bfloat16"):
        for name in ("softmax", "log_softmax"):
            for axis in (1, 0):
                got = getattr(F, name)(_vk(x, device, dtype), axis)
                ref = getattr(torch, name)(_t(x), axis)
                _close(got, ref, dtype, 6, f"{name} axis {axis} {dtype}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_layer_norm_rows(device, dtype, rng):
    for n in LENGTHS + [0]:
        for lead in ((3,), (5, 3), (0,)):
            x = _rounded(rng.standard_normal((*lead, n)) * 3 + 1, dtype)
            w, b = (_rounded(rng.standard_normal(n), dtype) for _ in range(2))
            g = _rounded(rng.standard_normal(x.shape), dtype)
            vs = [_vk(a, device, dtype, grad=True) for a in (x, w, b)]
            out = F.layer_norm(vs[0], (n,), vs[1], vs[2])
            ts = [_t(a, grad=True) for a in (x, w, b)]
            ref = TF.layer_norm(ts[0], (n,), ts[1], ts[2])
            what = f"layer_norm {x.shape} {dtype} on {device}"
            _close(out, ref.detach(), dtype, n, what)
            if not x.size:
                continue
            grads = vk.grad(out, vs, _vk(g, device, dtype))
            ref_grads = torch.autograd.grad(ref, ts, _t(g))
            for i, (a, r) in enumerate(zip(grads, ref_grads)):
                # the gradients are sums of terms of the size of g w (dx, which cancels) and of
                # g (dw, db: of rows x.size / n)
                length = n + (x.size // n if i else 0)
                size = np.abs(g).max() * (np.abs(w).max() if i == 0 else 1.0)
                _close(a, r, dtype, length * (8 if dtype == "bfloat16" and i == 0 else 1),
                       f"{what} gradient {i}", size)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_rows(device, dtype, reduction, rng):
    for c in LENGTHS:
        for shape in ((5, c), (3, c, 2)) + (((3, c, 97),) if c < 100 else ()):
            x = _rounded(rng.standard_normal(shape) * 3, dtype)
            target_shape = shape[:1] + shape[2:]
            labels = rng.integers(0, c, target_shape)
            labels.flat[::4] = -100
            w = rng.uniform(0.5, 2, c).astype(np.float32)
            for weight, smoothing in ((None, 0.0), (w, 0.1)):
                v = _vk(x, device, dtype, grad=True)
                out = F.cross_entropy(v, vk.tensor(labels.astype(np.int32), device=device),
                                      None if weight is None else vk.tensor(weight, device=device),
                                      reduction=reduction, label_smoothing=smoothing)
                t = _t(x, grad=True)
                ref = TF.cross_entropy(t, torch.tensor(labels), None if weight is None
                                       else _t(weight), reduction=reduction,
                                       label_smoothing=smoothing)
                g = _rounded(rng.standard_normal(ref.shape), dtype)
                (gx,) = vk.grad(out, v, _vk(g, device, dtype))
                (ref_gx,) = torch.autograd.grad(ref, t, _t(g))
                what = f"cross_entropy {shape} {reduction} {smoothing} {dtype} on {device}"
                rows = 1 if reduction == "none" else labels.size
                _close(out, ref.detach(), dtype, c * rows, what)
                _close(gx, ref_gx, dtype, c * rows, what + " gradient")


def test_cross_entropy_edges(device):
    """Every row ignored: "mean" is 0 / 0 = NaN with a zero gradient; no rows at all: "sum" 0,
    "mean" NaN; a row with an infinite logit is NaN."""
    x = _vk(np.zeros((3, 4)), device, "float32", grad=True)
    labels = vk.tensor(np.full(3, -100, np.int32), device=device)
    loss = F.cross_entropy(x, labels)
    assert np.isnan(loss.item())
    (gx,) = vk.grad(loss, x)
    np.testing.assert_array_equal(gx.numpy(), 0.0)
    empty = _vk(np.zeros((0, 4)), device, "float32")
    none = vk.tensor(np.zeros(0, np.int32), device=device)
    assert F.cross_entropy(empty, none, reduction="sum").item() == 0.0
    assert np.isnan(F.cross_entropy(empty, none).item())
    assert F.cross_entropy(empty, none, reduction="none").shape == (0,)
    inf = _vk([[np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]], device, "float32")
    got = F.cross_entropy(inf, vk.tensor(np.array([1, 2], np.int32), device=device),
                          reduction="none").numpy()
    assert np.isnan(got[0]) and np.isfinite(got[1])


def test_cross_entropy_at_huge_logits(device):
    """Logits so large that lse = m + log(sum exp(x - m)) rounds to m: the loss is
    (m - x[t]) + log(sum), log 3 for a row of three equal 1e30 (or 1e8, or -1e30) logits and log 2
    for a target tied with the maximum, as torch (lse - x[t] gave 0). Label smoothing's
    sum_c w[c] (lse - x[c]) too; a target far below the maximum keeps its m - x[t]."""
    x = np.array([[1e30] * 3, [1e8] * 3, [-1e30] * 3, [1e30, 1e30, 0.0], [1e30, 1e30, 0.0],
                  [1e30, 1e30 * (1 - 2 ** -23), 1e30], [1.0, 2.0, 3.0]])
    labels = np.array([1, 2, 0, 0, 2, 1, 1])
    w = np.array([0.5, 2.0, 1.0])
    for dtype in ("float32", "bfloat16"):
        x_d = _rounded(x, dtype)
        for weight, smoothing, reduction in ((None, 0.0, "none"), (w, 0.1, "none"),
                                             (None, 0.0, "mean"), (w, 0.1, "sum")):
            got = F.cross_entropy(_vk(x_d, device, dtype),
                                  vk.tensor(labels.astype(np.int32), device=device),
                                  None if weight is None else _vk(weight, device, "float32"),
                                  reduction=reduction, label_smoothing=smoothing)
            ref = TF.cross_entropy(_t(x_d), torch.tensor(labels),
                                   None if weight is None else _t(weight), reduction=reduction,
                                   label_smoothing=smoothing).numpy()
            ref = _rounded(ref, dtype)
            error = np.abs(got.numpy().astype(np.float64) - ref)
            tol = bf16_ulp(ref) if dtype == "bfloat16" else 4 * U32 * np.abs(ref)
            assert (error <= tol).all(), (weight, smoothing, reduction, dtype, got.numpy(), ref)


# ---- dispatches ------------------------------------------------------------------------------
def _dispatches(fn):
    vk.synchronize()
    vk.reset_stats()
    out = fn()
    vk.synchronize()
    return vk.stats()["dispatches"], out


@pytest.mark.vulkan
@pytest.mark.parametrize("variant", ["subgroup", "shared"])
def test_dispatch_counts(vulkan, variant, rng):
    """softmax, log_softmax, layer_norm: one dispatch forward and one backward (layer norm's
    weight and bias gradients: one reduction each); cross-entropy: two ("mean", "sum") or one
    ("none") forward, one backward. Contiguous rows of every length."""
    backend = vulkan.backend
    saved, backend.subgroups = backend.subgroups, variant == "subgroup"
    try:
        for n in (17, 1000, 5000):
            x = _vk(rng.standard_normal((6, n)), vulkan, "float32", grad=True)
            g = _vk(rng.standard_normal((6, n)), vulkan, "float32")
            for fn in (F.softmax, F.log_softmax):
                count, out = _dispatches(lambda: fn(x, -1))
                assert count == 1, (fn.__name__, n, count)
                count, _ = _dispatches(lambda: vk.grad(out, x, g))
                assert count == 1, (fn.__name__, "backward", n, count)
            w = _vk(rng.standard_normal(n), vulkan, "float32", grad=True)
            b = _vk(rng.standard_normal(n), vulkan, "float32", grad=True)
            count, out = _dispatches(lambda: F.layer_norm(x, (n,), w, b))
            assert count == 1, ("layer_norm", n, count)
            count, _ = _dispatches(lambda: vk.grad(out, [x, w, b], g))
            assert count == 3, ("layer_norm backward", n, count)
            labels = vk.tensor(rng.integers(0, n, 6).astype(np.int32), device=vulkan)
            for reduction, forward in (("mean", 2), ("sum", 2), ("none", 1)):
                count, out = _dispatches(lambda: F.cross_entropy(x, labels, reduction=reduction))
                assert count == forward, ("cross_entropy", reduction, n, count)
                ones = vk.ones_like(out)
                count, _ = _dispatches(lambda: vk.grad(out, x, ones))
                assert count == 1, ("cross_entropy backward", reduction, n, count)
    finally:
        backend.subgroups = bool(saved)


# ---- reductions ----------------------------------------------------------------------------------
REDUCTIONS = ["sum", "prod", "max", "min", "argmax", "argmin", "mean"]


def _reduce_reference(name, x, axis):
    with np.errstate(all="ignore"):
        return getattr(np, name)(x, axis=axis)


@pytest.mark.parametrize("name", REDUCTIONS)
def test_reductions_over_rows_and_columns(device, name, rng):
    for n in LENGTHS + [70000]:
        for shape, axis in (((3, n), 1), ((n, 3), 0), ((2, n, 3), 1)):
            if n == 70000 and axis != 1:
                continue
            x = rng.uniform(0.9, 1.1, shape) if name == "prod" else rng.standard_normal(shape)
            x = x.astype(np.float32)
            got = getattr(vk.tensor(x, device=device), name)(axis=axis).numpy()
            expected = _reduce_reference(name, x.astype(np.float64), axis)
            what = f"{name} {shape} axis {axis} on {device}"
            if name.startswith("arg"):
                np.testing.assert_array_equal(got, expected, err_msg=what)
            else:
                np.testing.assert_allclose(got, expected, rtol=2e-5 * np.sqrt(n) + 1e-5,
                                           atol=1e-5 * np.sqrt(n), err_msg=what)
    # through strided views: a transposed one and every other element
    x = rng.standard_normal((129, 40)).astype(np.float32)
    t = vk.tensor(x, device=device)
    for view, ref in ((t.swapaxes(0, 1), x.T), (t[::2, 1::3], x[::2, 1::3])):
        for axis in (0, 1):
            got = getattr(view, name)(axis=axis).numpy()
            expected = _reduce_reference(name, ref.astype(np.float64), axis)
            if name.startswith("arg"):
                np.testing.assert_array_equal(got, expected)
            else:
                np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [1, 17, 129, 1000, 5000, 70000])
def test_nan_wins_max_min_argmax_argmin(device, n, rng):
    """NaN propagates through max and min and is the argmax/argmin (its first position), ties
    go to the first index, and infinities compare as numbers."""
    x = rng.standard_normal((4, n)).astype(np.float32)
    x[0, n // 2] = np.nan
    x[1, -1] = np.nan
    x[1, 0] = np.nan if n > 1 else x[1, 0]
    x[2, :] = 1.0
    x[3, n // 3] = np.inf
    x[3, n - 1 - n // 3] = -np.inf
    t = vk.tensor(x, device=device)
    for name in ("max", "min", "argmax", "argmin"):
        got = getattr(t, name)(axis=1).numpy()
        expected = getattr(np, name)(x, axis=1)
        np.testing.assert_array_equal(got, expected, err_msg=f"{name} {n} on {device}")


def test_bool_and_bf16_reductions(device, rng):
    """any/all into bool outputs and bf16 sums over long rows: whole output words per
    workgroup whatever the threads per output."""
    for n in LENGTHS:
        b = rng.random((5, n)) > 0.02
        tb = vk.tensor(b, device=device)
        np.testing.assert_array_equal(tb.all(axis=1).numpy(), b.all(axis=1))
        np.testing.assert_array_equal(tb.any(axis=1).numpy(), b.any(axis=1))
        np.testing.assert_array_equal(tb.all(axis=0).numpy(), b.all(axis=0))
        x = rng.standard_normal((5, n)).astype(ml_dtypes.bfloat16)
        got = vk.tensor(x, device=device).sum(axis=1).numpy().astype(np.float64)
        expected = x.astype(np.float64).sum(axis=1)
        scale = np.abs(x.astype(np.float64)).sum(axis=1)
        assert (np.abs(got - expected) <= bf16_ulp(expected) + 4 * n * U32 * scale).all()
