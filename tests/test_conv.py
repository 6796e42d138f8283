"""Convolution and pooling (vkgrad/ops/conv.py) against torch.nn.functional: forward and the
gradients of every input, on every device, f32 and bf16, over awkward shapes; a LeNet-like chain;
second-order gradients; argmax ties; errors."""
import numpy as np
import pytest
import torch

import vkgrad as vk
from vkgrad.ops.conv import (adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, fold, max_pool2d,
                             unfold)

F = torch.nn.functional
DTYPES = ("float32", "bfloat16")
TORCH_DTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _close(got, expected, dtype, what):
    """Within 2e-2 (bf16) or 1e-4 (f32) of the expected values' scale."""
    expected = expected.detach().double().numpy()
    scale = max(1.0, float(np.abs(expected[np.isfinite(expected)]).max(initial=0.0)))
    tol = 2e-2 if dtype == "bfloat16" else 1e-4
    np.testing.assert_allclose(got.numpy().astype(np.float64), expected, rtol=tol,
                               atol=tol * scale, err_msg=what)


def _inputs(rng, shapes, dtype):
    """Random arrays of `shapes`, rounded to `dtype` (None entries stay None)."""
    return [None if s is None else rng.standard_normal(s).astype(vk.dtype(dtype).np_dtype)
            for s in shapes]


def check(vk_fn, torch_fn, arrays, device, dtype, what, upstream_rng, grad_norm_tol=None):
    """vk_fn(*tensors) against torch_fn(*tensors) in float64 on the same (rounded) inputs: the
    output, and the gradient of sum(g * out) for every input (elementwise, or by the norm of the
    difference relative to the norm of torch's gradient when `grad_norm_tol` is given)."""
    tensors = [None if a is None else vk.tensor(a, device=device, requires_grad=True)
               for a in arrays]
    refs = [None if a is None else torch.from_numpy(a.astype(np.float64)).requires_grad_()
            for a in arrays]
    out = vk_fn(*tensors)
    ref = torch_fn(*refs)
    assert out.shape == tuple(ref.shape) and out.dtype is vk.dtype(dtype), what
    assert out.device == device
    _close(out, ref, dtype, f"{what}: forward")
    g = upstream_rng.standard_normal(out.shape).astype(vk.dtype(dtype).np_dtype)
    used = [t for t in tensors if t is not None]
    grads = vk.grad(out, used, vk.tensor(g, device=device))
    ref_grads = torch.autograd.grad(ref, [r for r in refs if r is not None],
                                    torch.from_numpy(g.astype(np.float64)))
    for i, (d, r) in enumerate(zip(grads, ref_grads)):
        assert d.shape == tuple(r.shape) and d.dtype is vk.dtype(dtype)
        if grad_norm_tol is None:
            _close(d, r, dtype, f"{what}: gradient of input {i}")
        else:
            r = r.numpy()
            error = np.linalg.norm(d.numpy().astype(np.float64) - r) / np.linalg.norm(r)
            assert error < grad_norm_tol, f"{what}: gradient of input {i}: relative error {error}"


# ---- conv2d / conv1d -----------------------------------------------------------------------------
CONV2D = [  # (input shape, weight shape, bias?, kwargs)
    ((2, 3, 9, 7), (5, 3, 3, 2), True, {}),                                   # odd, non-square
    ((2, 2, 10, 11), (4, 2, 3, 5), True, {"stride": 2, "padding": (1, 2)}),
    ((1, 3, 11, 9), (2, 3, 3, 3), False, {"dilation": (2, 3), "padding": 2}),
    ((2, 6, 7, 8), (9, 2, 3, 3), True, {"groups": 3, "stride": (2, 1)}),
    ((1, 4, 6, 6), (4, 1, 3, 3), False, {"groups": 4, "padding": 1}),         # depthwise
    ((3, 1, 8, 8), (6, 1, 5, 5), True, {"padding": 2}),                       # in_channels 1
    ((2, 5, 4, 3), (7, 5, 1, 1), True, {}),                                   # 1x1
    ((3, 6, 6), (2, 3, 3, 3), True, {"stride": 2}),                            # unbatched
    ((1, 3, 3, 2), (4, 3, 3, 2), True, {}),                     # the kernel covers the input
    ((1, 2, 9, 10), (3, 2, 3, 2), False, {"stride": (2, 3), "dilation": 2, "padding": (2, 1)}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,w_shape,bias,kwargs", CONV2D,
                         ids=[f"{x}-{w}-{k}" for x, w, _, k in CONV2D])
def test_conv2d_against_torch(device, dtype, x_shape, w_shape, bias, kwargs, rng):
    arrays = _inputs(rng, [x_shape, w_shape, (w_shape[0],) if bias else None], dtype)
    check(lambda x, w, b: conv2d(x, w, b, **kwargs), lambda x, w, b: F.conv2d(x, w, b, **kwargs),
          arrays, device, dtype, f"conv2d {x_shape} {w_shape} {kwargs}", rng)


# matmul.comp's conv variants in every kernel: awkward sizes against each tile (not multiples
# of it), a ReLU on every other case.
CONV_GEMM = [  # (input shape, weight shape, bias?, kwargs)
    ((2, 3, 9, 7), (5, 3, 3, 3), True, {}),
    ((1, 1, 1, 1), (3, 1, 1, 1), True, {}),                                   # spatial 1
    ((3, 5, 4, 3), (7, 5, 1, 1), False, {}),                                  # 1x1
    ((1, 7, 11, 10), (9, 7, 5, 5), True, {"padding": 2}),                     # batch 1, 5x5
    ((2, 2, 10, 11), (4, 2, 3, 5), True, {"stride": 2, "padding": (1, 2)}),
    ((1, 3, 11, 9), (2, 3, 3, 3), False, {"dilation": (2, 3), "padding": 2}),
    ((2, 3, 5, 5), (6, 3, 3, 3), True, {"stride": (2, 3), "padding": 1, "dilation": 2}),
    ((2, 33, 9, 8), (70, 33, 3, 3), True, {"padding": 1}),                    # M, K > a tile
    ((4, 3, 15, 13), (5, 3, 3, 3), False, {"padding": 1}),  # dW's sum split (780 = 3 x 260)
    ((2, 3, 10, 9), (4, 3, 2, 2), True, {"stride": 3, "padding": (2, 1)}),  # pixels no window
]
# (path, the implicit GEMM's kernel): the explicit path runs matmul.comp's own choice
PATHS = [("explicit", None)] + [("implicit", v) for v in ["direct", *vk.kernels.MATMUL_TILES]]


@pytest.mark.vulkan
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path,variant", PATHS, ids=[f"{p}-{v}" for p, v in PATHS])
@pytest.mark.parametrize("index", range(len(CONV_GEMM)))
def test_conv_gemm_variants_against_torch(vulkan, dtype, path, variant, index, rng):
    """Both paths of the training convolution (im2col and the product, or the implicit GEMM in
    every kernel of matmul.comp's conv variants) and the inference one (the implicit GEMM):
    forward and the gradients of every input against torch."""
    from vkgrad.ops.conv import CONV, CONV_INFERENCE, _out_hw, _window_args
    from vkgrad.ops.registry import apply
    x_shape, w_shape, bias, kwargs = CONV_GEMM[index]
    relu = index % 2 == 0
    stride, padding, dilation = _window_args("", kwargs.get("stride", 1),
                                             kwargs.get("padding", 0), kwargs.get("dilation", 1))
    geometry = dict(kernel=w_shape[2:], stride=stride, padding=padding, dilation=dilation)
    (n, o), out_hw = (x_shape[0], w_shape[0]), _out_hw(x_shape[2:], **geometry)

    def fused(op, x, w, b):
        extra = {"path": path} if op is CONV else {}
        out = apply(op, x, w.reshape(o, -1), b, **geometry, relu=relu, out_dtype=x.dtype,
                    variant=variant, **extra)
        return out.reshape(o, *out_hw, n).transpose(3, 0, 1, 2)

    def reference(x, w, b):
        out = F.conv2d(x, w, b, **kwargs)
        return F.relu(out) if relu else out
    arrays = _inputs(rng, [x_shape, w_shape, (o,) if bias else None], dtype)
    what = f"conv GEMM {path} {variant} {x_shape} {w_shape} {kwargs} relu={relu}"
    check(lambda *t: fused(CONV, *t), reference, arrays, vulkan, dtype, what, rng)
    with vk.no_grad():
        tensors = [None if a is None else vk.tensor(a, device=vulkan) for a in arrays]
        _close(fused(CONV_INFERENCE, *tensors), reference(*[
            None if a is None else torch.from_numpy(a.astype(np.float64)) for a in arrays]),
            dtype, f"{what}: inference")



# The saved output's edge values (float32 bits; each bf16 value is the top half of its bits):
# +0, -0, +NaN, -NaN, +inf, the least normal, 1.5, a subnormal.
RELU_EDGE_BITS = [0x00000000, 0x80000000, 0x7FC00000, 0xFFC00000, 0x7F800000, 0x00800000,
                  0x3FC00000, 0x00010000]
RELU_MASK = [  # (input shape, weight shape, kwargs)
    ((2, 3, 7, 6), (4, 3, 3, 2), {"padding": 1}),
    ((1, 1, 6, 5), (3, 1, 2, 3), {"stride": 2, "dilation": (1, 2)}),  # N = 1, C = 1
    ((3, 2, 9, 8), (5, 2, 5, 5), {}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["explicit", "implicit"])
@pytest.mark.parametrize("x_shape,w_shape,kwargs", RELU_MASK,
                         ids=[f"{x}-{w}-{k}" for x, w, k in RELU_MASK])
def test_conv_relu_backward_masks_as_torch(device, dtype, path, x_shape, w_shape, kwargs, rng,
                                           monkeypatch):
    """CONV_BACKWARD's ReLU mask follows torch's rule (threshold_backward: no gradient where the
    output is <= 0) on both paths of each device (the host's: its columns kept or built again
    in blocks) at the saved output's edge values: the gradient passes at positive values,
    +inf, a subnormal and NaNs of either sign, and stops at +0 and -0, where g's infinities and
    NaNs must give exact zeros. dx, dW and db against torch's conv2d backward of that masked
    gradient, in float64."""
    from vkgrad.ops.conv import CONV, CONV_BACKWARD, _out_hw, _window_args
    from vkgrad.tensor import Tensor
    if device.kind != "vulkan":  # the host's paths: columns kept, or built again in blocks
        monkeypatch.setattr(vk.ops.conv, "_blocked_training", lambda *a: path == "implicit")
    stride, padding, dilation = _window_args("", kwargs.get("stride", 1),
                                             kwargs.get("padding", 0), kwargs.get("dilation", 1))
    geometry = dict(kernel=w_shape[2:], stride=stride, padding=padding, dilation=dilation)
    (n, o), out_hw = (x_shape[0], w_shape[0]), _out_hw(x_shape[2:], **geometry)
    vk_dtype = vk.dtype(dtype)
    x, w, b = _inputs(rng, [x_shape, w_shape, (o,)], dtype)
    tx, tw, tb = (vk.tensor(a, device=device) for a in (x, w.reshape(o, -1), b))
    extra = {"path": path} if device.kind == "vulkan" else {}
    saved = device.backend.run(CONV, tx._data, tw._data, tb._data, **geometry, relu=True,
                               out_dtype=vk_dtype, **extra)
    cols = saved[1] if len(saved) > 1 else None
    size = o * int(np.prod(out_hw)) * n
    bits = np.array(RELU_EDGE_BITS, np.uint32)[rng.permutation(np.arange(size) % 8)]
    out = (bits.view(np.float32) if dtype == "float32"
           else (bits >> 16).astype(np.uint16).view(vk_dtype.np_dtype)).reshape(o, size // o)
    g = rng.standard_normal(out.shape).astype(vk_dtype.np_dtype)
    blocked = (bits.reshape(out.shape) & 0x7FFFFFFF) == 0
    g[blocked] = np.array([np.inf, -np.nan, -np.inf, np.nan], np.float32)[
        np.arange(blocked.sum()) % 4].astype(g.dtype)  # ... where the mask must zero them
    got = device.backend.run(CONV_BACKWARD, tx._data, tw._data, cols,
                             vk.tensor(out, device=device)._data, vk.tensor(g, device=device)._data,
                             **geometry, relu=True, grad_dtypes=(vk_dtype,) * 3)
    out64 = torch.from_numpy(out.astype(np.float64))
    nans = int(((bits & 0x7FFFFFFF) > 0x7F800000).sum())
    assert int(torch.isnan(out64).sum()) == nans > 0  # (both NaNs kept through the cast)
    masked = torch.ops.aten.threshold_backward(torch.from_numpy(g.astype(np.float64)), out64, 0)
    upstream = masked.reshape(o, *out_hw, n).permute(3, 0, 1, 2)
    refs = [torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, w, b)]
    expected = torch.autograd.grad(F.conv2d(*refs, **kwargs), refs, upstream)
    for name, a, e in zip(("dx", "dW", "db"), got, expected):
        value = Tensor._wrap(a, device)
        assert np.isfinite(value.numpy().astype(np.float64)).all(), name
        _close(value.reshape(e.shape), e, dtype, f"conv relu mask {path}: {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("wanted", ["x", "w", "b", "xb", "wb"])
def test_conv_gradients_of_some_operands(device, dtype, relu, wanted, rng):
    """The one-op convolution's backward with gradients wanted for only some of x, W, b (dW
    and db come from one product when both are wanted, db from G's row sums alone otherwise)."""
    from vkgrad.ops.conv import conv2d_relu
    x, w, b = _inputs(rng, [(2, 3, 7, 8), (4, 3, 3, 2), (4,)], dtype)
    tensors = [vk.tensor(a, device=device, requires_grad=name in wanted)
               for name, a in zip("xwb", (x, w, b))]
    refs = [torch.from_numpy(a.astype(np.float64)).requires_grad_(name in wanted)
            for name, a in zip("xwb", (x, w, b))]
    out = (conv2d_relu if relu else conv2d)(*tensors, padding=1)
    ref = F.conv2d(*refs, padding=1)
    ref = F.relu(ref) if relu else ref
    g = rng.standard_normal(out.shape).astype(vk.dtype(dtype).np_dtype)
    grads = vk.grad(out, [t for t in tensors if t.requires_grad], vk.tensor(g, device=device))
    expected = torch.autograd.grad(ref, [r for r in refs if r.requires_grad],
                                   torch.from_numpy(g.astype(np.float64)))
    assert len(grads) == len(wanted)
    for name, d, e in zip(wanted, grads, expected):
        _close(d, e, dtype, f"conv relu={relu}, gradient of {name} alone ({wanted})")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocked", [False, True], ids=["kept", "blocked"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("x_shape,w_shape,bias,kwargs",
                         [c for c in CONV2D if "groups" not in c[3]],
                         ids=[f"{x}-{w}-{k}" for x, w, _, k in CONV2D if "groups" not in k])
def test_host_training_conv_column_paths(dtype, blocked, relu, x_shape, w_shape, bias, kwargs,
                                         rng, monkeypatch):
    """The host's training convolution on both of its paths (_blocked_training): the columns
    (with their row of ones) kept for the backward, or none kept, the forward made in blocks and
    the backward's weight gradient from each block's columns built again; forward and every
    gradient against torch, and the columns saved only on the first path."""
    import vkgrad.ops.conv as ops_conv
    from vkgrad.ops.conv import conv2d_relu
    calls = []
    monkeypatch.setattr(ops_conv, "_blocked_training", lambda *a: calls.append(a) or blocked)
    monkeypatch.setattr(ops_conv, "COLUMN_BLOCK", 64)  # several blocks, a ragged last one
    host = vk.device("host")
    arrays = _inputs(rng, [x_shape, w_shape, (w_shape[0],) if bias else None], dtype)

    def reference(x, w, b):
        out = F.conv2d(x, w, b, **kwargs)
        return F.relu(out) if relu else out
    check(lambda x, w, b: (conv2d_relu if relu else conv2d)(x, w, b, **kwargs), reference,
          arrays, host, dtype, f"host conv {'blocked' if blocked else 'kept'} relu={relu}", rng)
    assert calls
    x, w, b = (None if a is None else vk.tensor(a, device=host) for a in arrays)
    x, o = x.reshape(-1, *x_shape[-3:]), w_shape[0]  # (an unbatched input as a batch of 1)
    geometry = {k: v for k, v in zip(("stride", "padding", "dilation"), ops_conv._window_args(
        "", kwargs.get("stride", 1), kwargs.get("padding", 0), kwargs.get("dilation", 1)))}
    saved = host.backend.run(ops_conv.CONV, x._data, w.reshape(o, -1)._data,
                             None if b is None else b._data, kernel=w_shape[2:], **geometry,
                             relu=relu, out_dtype=vk.dtype(dtype))
    assert len(saved) == (1 if blocked else 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocked", [False, True], ids=["kept", "blocked"])
def test_host_training_conv_nonfinite_inputs_as_torch(dtype, blocked, rng, monkeypatch):
    """NaN, +-inf and -0 in x reach the host training convolution's output and gradients (both
    of its paths) where they reach torch's: the same NaN and infinite elements, the finite rest
    close."""
    import vkgrad.ops.conv as ops_conv
    from vkgrad.ops.conv import conv2d_relu
    monkeypatch.setattr(ops_conv, "_blocked_training", lambda *a: blocked)
    monkeypatch.setattr(ops_conv, "COLUMN_BLOCK", 64)
    x, w, b = _inputs(rng, [(2, 3, 7, 6), (4, 3, 3, 2), (4,)], dtype)
    x[0, 0, 1, 1], x[1, 2, 5, 4], x[0, 1, 3, 3], x[1, 0, 0, 0] = np.nan, np.inf, -0.0, -np.inf
    check(lambda x, w, b: conv2d_relu(x, w, b, padding=1),
          lambda x, w, b: F.relu(F.conv2d(x, w, b, padding=1)), [x, w, b], vk.device("host"),
          dtype, f"host conv {'blocked' if blocked else 'kept'}, x not finite", rng)

@pytest.mark.vulkan
def test_compiled_implicit_training_step_creates_and_allocates_nothing(vulkan, monkeypatch):
    """LeNet5's training step on the implicit path (a GPU's): a replay creates no pipeline and
    allocates nothing, and gives the eager step's losses."""
    from conftest import lenet_trainer
    import vkgrad.ops.conv as ops_conv
    monkeypatch.setattr(ops_conv, "_training_path", lambda backend: ops_conv.IMPLICIT)
    rng = np.random.default_rng(5)
    batches = [(vk.tensor(rng.standard_normal((8, 1, 28, 28)), vk.float32, vulkan),
                vk.tensor(rng.integers(0, 10, 8), device=vulkan)) for _ in range(5)]
    _, _, eager = lenet_trainer(vulkan)
    expected = [eager(x, y).item() for x, y in batches]
    _, _, step = lenet_trainer(vulkan)
    compiled = vk.compile(step)
    losses = [compiled(x, y).item() for x, y in batches[:3]]  # records twice, then replays
    vk.reset_stats()
    losses += [compiled(x, y).item() for x, y in batches[3:]]
    stats = vk.stats()
    assert stats["pipelines_created"] == 0 and stats["device_bytes_allocated"] == 0, stats
    assert losses == expected
    (capture,) = compiled._captures.values()
    kernels = [d[1] for d in capture.recording.dispatches]
    # two forwards, two weight gradients, the second convolution's input gradient
    assert kernels.count("matmul/conv_direct") == 5


@pytest.mark.vulkan
@pytest.mark.parametrize("variant", ["direct", "32x64"])
def test_implicit_backward_stores_no_column_matrix(vulkan, monkeypatch, variant):
    """The implicit path's backward (dx, dW, db) allocates nothing of the column matrix's
    (C kH kW, OH*OW*N) size and launches no col2im: its three gradients are two implicit GEMMs
    and a row sum, and dx (a transposed convolution) matches torch's."""
    import vkgrad.ops.conv as ops_conv
    from vkgrad.ops.registry import apply
    backend = vk.device(vulkan).backend
    rng = np.random.default_rng(3)
    (n, c, h, w), (o, kh, kw) = (4, 6, 12, 12), (5, 3, 3)
    x = vk.tensor(rng.standard_normal((n, c, h, w)), vk.float32, vulkan, requires_grad=True)
    wt = vk.tensor(rng.standard_normal((o, c * kh * kw)), vk.float32, vulkan,
                   requires_grad=True)
    b = vk.tensor(rng.standard_normal(o), vk.float32, vulkan, requires_grad=True)
    out = apply(ops_conv.CONV, x, wt, b, kernel=(kh, kw), stride=(1, 1), padding=(1, 1),
                dilation=(1, 1), relu=True, out_dtype=vk.float32, path="implicit",
                variant=variant)
    g = vk.tensor(rng.standard_normal(out.shape), vk.float32, vulkan)
    sizes, col2im = [], []
    empty = backend.empty
    monkeypatch.setattr(backend, "empty", lambda shape, dtype: sizes.append(
        int(np.prod(shape))) or empty(shape, dtype))
    monkeypatch.setattr(ops_conv, "_col2im_vulkan", lambda *a, **k: col2im.append(a))
    dx, dw, db = vk.grad(out, [x, wt, b], g)
    assert not col2im and sizes and max(sizes) < c * kh * kw * h * w * n // 2, sizes
    tx = torch.from_numpy(x.numpy().astype(np.float64)).requires_grad_()
    tw = torch.from_numpy(wt.numpy().astype(np.float64).reshape(o, c, kh, kw))
    ref = F.relu(F.conv2d(tx, tw, torch.from_numpy(b.numpy().astype(np.float64)), padding=1))
    upstream = g.numpy().astype(np.float64).reshape(o, h, w, n).transpose(3, 0, 1, 2)
    (expected,) = torch.autograd.grad(ref, [tx], torch.from_numpy(upstream.copy()))
    _close(dx, expected, "float32", f"implicit dx ({variant})")


CONV1D = [((2, 3, 17), (4, 3, 5), True, {"stride": 2, "padding": 2}),
          ((1, 4, 9), (4, 2, 3), False, {"groups": 2, "dilation": 2}),
          ((3, 10), (2, 3, 4), True, {})]                                     # unbatched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,w_shape,bias,kwargs", CONV1D,
                         ids=[f"{x}-{w}-{k}" for x, w, _, k in CONV1D])
def test_conv1d_against_torch(device, dtype, x_shape, w_shape, bias, kwargs, rng):
    arrays = _inputs(rng, [x_shape, w_shape, (w_shape[0],) if bias else None], dtype)
    check(lambda x, w, b: conv1d(x, w, b, **kwargs), lambda x, w, b: F.conv1d(x, w, b, **kwargs),
          arrays, device, dtype, f"conv1d {x_shape} {w_shape} {kwargs}", rng)


def test_unfold_and_fold_against_torch(device, rng):
    kwargs = {"kernel_size": (3, 2), "stride": (2, 1), "padding": 1, "dilation": (1, 2)}
    (x,) = _inputs(rng, [(2, 3, 8, 7)], "float32")
    check(lambda t: unfold(t, **kwargs), lambda t: F.unfold(t, **kwargs), [x], device,
          "float32", "unfold", rng)
    cols = F.unfold(torch.from_numpy(x), **kwargs)
    (c,) = _inputs(rng, [tuple(cols.shape)], "float32")
    check(lambda t: fold(t, (8, 7), **kwargs), lambda t: F.fold(t, (8, 7), **kwargs), [c],
          device, "float32", "fold", rng)


# ---- pooling -------------------------------------------------------------------------------------
MAX_POOLS = [((2, 3, 9, 7), {"kernel_size": 3, "stride": 2, "padding": 1}),  # overlapping, padded
             ((1, 2, 8, 8), {"kernel_size": 2}),
             ((2, 1, 7, 10), {"kernel_size": (3, 2), "stride": (1, 2), "padding": (1, 0)}),
             ((1, 2, 9, 9), {"kernel_size": 3, "stride": 1, "dilation": 2}),
             ((3, 6, 6), {"kernel_size": 2, "stride": 1}),                     # unbatched
             ((3, 2, 5, 2), {"kernel_size": 2, "stride": 1})]                  # one column


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kwargs", MAX_POOLS, ids=[f"{s}-{k}" for s, k in MAX_POOLS])
def test_max_pool2d_against_torch(device, dtype, shape, kwargs, rng):
    check(lambda x: max_pool2d(x, **kwargs), lambda x: F.max_pool2d(x, **kwargs),
          _inputs(rng, [shape], dtype), device, dtype, f"max_pool2d {shape} {kwargs}", rng)


AVG_POOLS = [((2, 3, 9, 7), {"kernel_size": 3, "stride": 2, "padding": 1}),
             ((2, 3, 9, 7), {"kernel_size": 3, "stride": 2, "padding": 1,
                             "count_include_pad": False}),
             ((1, 2, 8, 8), {"kernel_size": 2}),
             ((2, 1, 7, 10), {"kernel_size": (3, 2), "stride": 1, "padding": (1, 1),
                              "count_include_pad": False})]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kwargs", AVG_POOLS, ids=[f"{s}-{k}" for s, k in AVG_POOLS])
def test_avg_pool2d_against_torch(device, dtype, shape, kwargs, rng):
    check(lambda x: avg_pool2d(x, **kwargs), lambda x: F.avg_pool2d(x, **kwargs),
          _inputs(rng, [shape], dtype), device, dtype, f"avg_pool2d {shape} {kwargs}", rng)


ADAPTIVE = [((2, 3, 9, 7), (4, 3)), ((1, 2, 8, 8), 2), ((2, 2, 5, 7), (7, 3)),
            ((1, 3, 6, 5), 1), ((2, 7, 7), (3, None))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size", ADAPTIVE, ids=[f"{s}-{o}" for s, o in ADAPTIVE])
def test_adaptive_avg_pool2d_against_torch(device, dtype, shape, size, rng):
    check(lambda x: adaptive_avg_pool2d(x, size), lambda x: F.adaptive_avg_pool2d(x, size),
          _inputs(rng, [shape], dtype), device, dtype, f"adaptive_avg_pool2d {shape} {size}",
          rng)


def test_max_pool2d_ties_go_to_the_first_maximum(device):
    # Every window holds equal values: torch sends each window's gradient to its first element.
    x = np.repeat(np.repeat(np.arange(6.0).reshape(1, 1, 2, 3), 3, axis=2), 3, axis=3)
    x = x.astype(np.float32)
    kwargs = {"kernel_size": 3, "stride": 2, "padding": 1}
    check(lambda t: max_pool2d(t, **kwargs), lambda t: F.max_pool2d(t, **kwargs), [x], device,
          "float32", "max_pool2d ties", np.random.default_rng(0))


def test_max_pool2d_windows_of_minus_infinity(device):
    # The maximum of real -inf values is one of them (the first), never the padding.
    x = np.full((1, 1, 4, 5), -np.inf, np.float32)
    x[0, 0, 3, 4] = 1.0
    kwargs = {"kernel_size": 3, "stride": 2, "padding": 1}
    check(lambda t: max_pool2d(t, **kwargs), lambda t: F.max_pool2d(t, **kwargs), [x], device,
          "float32", "max_pool2d -inf", np.random.default_rng(1))


def test_max_pool2d_propagates_nan(device, rng):
    # A window holding a NaN gives NaN, and its gradient goes to the NaN (as torch).
    (x,) = _inputs(rng, [(1, 2, 5, 6)], "float32")
    x[0, 1, 2, 3] = np.nan
    kwargs = {"kernel_size": 3, "stride": 2, "padding": 1}
    check(lambda t: max_pool2d(t, **kwargs), lambda t: F.max_pool2d(t, **kwargs), [x], device,
          "float32", "max_pool2d NaN", rng)


# ---- a LeNet-like chain --------------------------------------------------------------------------
def _lenet(conv, max_pool, avg_pool, x, w1, b1, w2, b2, w3, b3, relu):
    h = max_pool(relu(conv(x, w1, b1, padding=2)), 2)
    h = avg_pool(relu(conv(h, w2, b2)), 2)
    return conv(h, w3, b3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lenet_like_chain_against_torch(device, dtype, rng):
    shapes = [(3, 1, 28, 28), (6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (10, 16, 5, 5), (10,)]
    arrays = _inputs(rng, shapes, dtype)
    for a in arrays[1:]:
        a *= 0.3  # keeps the activations of order one
    # In bf16, rounded activations tie in max-pool windows and flip ReLUs, which sends some
    # gradients elsewhere than float64 does: torch's own bf16 chain is off by 5-6% in norm.
    check(lambda *t: _lenet(conv2d, max_pool2d, avg_pool2d, *t, relu=lambda h: h.relu()),
          lambda *t: _lenet(F.conv2d, F.max_pool2d, F.avg_pool2d, *t, relu=F.relu),
          arrays, device, dtype, "LeNet-like chain", rng,
          grad_norm_tol=0.1 if dtype == "bfloat16" else None)


# ---- second order --------------------------------------------------------------------------------
def test_conv2d_second_order_against_torch(device, rng):
    """Gradients of a function of the first gradients (x, w and b of a strided, padded conv)."""
    x, w, b, g, u, v = _inputs(rng, [(2, 3, 7, 6), (4, 3, 3, 2), (4,), (2, 4, 4, 4),
                                     (2, 3, 7, 6), (4, 3, 3, 2)], "float32")
    kwargs = {"stride": 2, "padding": 1}

    def second(lib, conv, tensors):
        xt, wt, bt, gt, ut, vt = tensors
        gx, gw = lib.grad(conv(xt, wt, bt, **kwargs), [xt, wt], gt, create_graph=True)
        s = (gx * ut).sum() + (gw * gw * vt).sum()
        return lib.grad(s, [xt, wt, bt], allow_unused=True) if lib is vk else \
            torch.autograd.grad(s, [xt, wt, bt], allow_unused=True)

    arrays = [x, w, b, g, u, v]
    got = second(vk, conv2d, [vk.tensor(a, device=device, requires_grad=i < 3)
                              for i, a in enumerate(arrays)])
    expected = second(torch.autograd, F.conv2d, [
        torch.from_numpy(a.astype(np.float64)).requires_grad_(i < 3)
        for i, a in enumerate(arrays)])
    for name, d, e in zip("xwb", got, expected):
        if e is None:  # b does not reach the first gradients
            assert d is None
        else:
            _close(d, e, "float32", f"second-order gradient of {name}")


def test_pooling_second_order_against_torch(device, rng):
    (x, u) = _inputs(rng, [(2, 2, 7, 7), (2, 2, 7, 7)], "float32")
    for name in ("max_pool2d", "avg_pool2d"):
        kwargs = {"kernel_size": 3, "stride": 2, "padding": 1}

        def second(tensors, pool, grad):
            xt, ut = tensors
            y = pool(xt, **kwargs)
            (gx,) = grad((y * y).sum(), [xt], create_graph=True)
            return grad((gx * ut).sum(), [xt])

        xt = vk.tensor(x, device=device, requires_grad=True)
        (got,) = second([xt, vk.tensor(u, device=device)], globals()[name], vk.grad)
        xr = torch.from_numpy(x.astype(np.float64)).requires_grad_()
        (expected,) = second([xr, torch.from_numpy(u.astype(np.float64))], getattr(F, name),
                             torch.autograd.grad)
        _close(got, expected, "float32", f"second-order gradient of {name}")


# ---- errors --------------------------------------------------------------------------------------
def _t(*shape):
    return vk.ones(shape)


@pytest.mark.parametrize("call,match", [
    (lambda: conv2d(_t(4, 5), _t(2, 1, 3, 3)), r"conv2d: expected a 4-D input .*\(4, 5\)"),
    (lambda: conv2d(_t(1, 4, 5, 5), _t(2, 3, 3)), r"4-D weight .*\(2, 3, 3\)"),
    (lambda: conv2d(_t(1, 4, 5, 5), _t(2, 3, 3, 3)),
     r"\(1, 4, 5, 5\) has 4 channels but weight shape \(2, 3, 3, 3\) with groups=1 expects 3"),
    (lambda: conv2d(_t(1, 4, 5, 5), _t(3, 2, 3, 3), groups=2), r"groups=2 must divide"),
    (lambda: conv2d(_t(1, 3, 5, 5), _t(3, 1, 3, 3), groups=2), r"groups=2 must divide"),
    (lambda: conv2d(_t(1, 1, 3, 3), _t(1, 1, 5, 5)),
     r"kernel \(5, 5\) .* larger than the padded input: input shape \(1, 1, 3, 3\)"),
    (lambda: conv2d(_t(1, 1, 5, 5), _t(1, 1, 3, 3), dilation=3), r"larger than the padded"),
    (lambda: conv2d(_t(1, 1, 5, 5), _t(1, 1, 3, 3), stride=0), r"stride must be positive"),
    (lambda: conv2d(_t(1, 1, 5, 5), _t(1, 1, 3, 3), dilation=(1, -1)),
     r"dilation must be positive"),
    (lambda: conv2d(_t(1, 1, 5, 5), _t(1, 1, 3, 3), padding=-1), r"padding must be non-negative"),
    (lambda: conv2d(_t(1, 1, 5, 5), _t(1, 1, 3, 3), padding=(1, 2, 3)), r"padding must be an int"),
    (lambda: conv2d(_t(1, 1, 5, 5), _t(2, 1, 3, 3), _t(3)), r"bias shape \(3,\) .* \(2,\)"),
    (lambda: conv2d(_t(1, 1, 5, 5), _t(1, 1, 3, 3), groups=0), r"groups must be a positive"),
    (lambda: conv1d(_t(1, 2, 5, 5), _t(1, 2, 3)), r"conv1d: expected a 3-D input .*\(N, C, L\)"),
    (lambda: conv1d(_t(1, 2, 5), _t(1, 2, 3, 3)), r"conv1d: expected a 3-D weight"),
    (lambda: max_pool2d(_t(1, 1, 5, 5), 2, padding=2), r"padding \(2, 2\) must be at most half"),
    (lambda: max_pool2d(_t(1, 1, 2, 2), 3), r"max_pool2d: the kernel \(3, 3\)"),
    (lambda: avg_pool2d(_t(5, 5), 2), r"avg_pool2d: expected a 4-D input"),
    (lambda: adaptive_avg_pool2d(_t(1, 1, 5, 5), 0), r"output_size must be positive"),
    (lambda: fold(_t(1, 7, 4), (3, 3), 2), r"fold: input shape \(1, 7, 4\)"),
])
def test_errors_name_the_shapes(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_tensor_operands_are_a_type_error():
    with pytest.raises(TypeError, match="conv2d: weight must be a tensor"):
        conv2d(_t(1, 1, 5, 5), np.ones((1, 1, 3, 3)))
    with pytest.raises(TypeError, match="max_pool2d: input must be a tensor"):
        max_pool2d(np.ones((1, 1, 4, 4)), 2)
