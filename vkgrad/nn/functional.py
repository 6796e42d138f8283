"""Stateless neural-network functions and losses, in PyTorch's shape (`import vkgrad.nn.functional
as F`). Every one is built from Tensor ops, so it runs on the host and on Vulkan, in float32 and
bfloat16, and is differentiable (twice, where the math is) through autograd.

>>> import vkgrad as vk
>>> import vkgrad.nn.functional as F
>>> logits = vk.randn(8, 10, device="vulkan", requires_grad=True)
>>> labels = vk.randint(0, 10, (8,), device="vulkan")
>>> loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
>>> loss.backward()

Convolution and pooling (conv1d, conv2d, conv_transpose1d, conv_transpose2d, max_pool2d,
max_unpool2d, avg_pool2d, adaptive_avg_pool2d, adaptive_max_pool2d, unfold, fold) are the ops
of vkgrad/ops/conv.py, re-exported here.

bf16 inputs: every function here built from several ops (linear and conv with a bias, softmax,
log_softmax, the normalisations, every loss) computes in float32 and rounds its result to bf16
once, as PyTorch's CPU kernels do; so do their gradients. Sums accumulate in float32 always.
"""
import operator

import numpy as np

from .. import dtypes, layout
from ..autograd import no_grad
from ..creation import arange
from ..ops.conv import (adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, conv1d, conv2d,
                        conv_transpose1d, conv_transpose2d, fold, max_pool2d, max_unpool2d, unfold)
from ..ops.elementwise import WIDEN_WEIGHT
from ..ops.indexing import host_check, take, take_along_axis
from ..ops.movement import pad as _pad_numpy
from ..ops.registry import OPS, apply
from ..ops import rownorm  # noqa: F401  (registers the fused row ops)
from ..random import rand
from ..ops.transformer_ops import composed_weights, fused_attention, fused_fits
from ..tensor import (Tensor, _add_narrow, _narrow, _sqrt_flat_at_zero, _widen, clip,
                      elementwise, tensor, where)

__all__ = [
    "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool2d", "max_unpool2d",
    "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "unfold", "fold",
    "linear", "relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout",
    "batch_norm", "layer_norm", "embedding", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
    "binary_cross_entropy_with_logits", "multi_margin_loss", "group_norm",
    "binary_cross_entropy", "smooth_l1_loss", "huber_loss", "kl_div", "cosine_similarity",
    "pad", "interpolate",
    "scaled_dot_product_attention",
    "leaky_relu", "prelu", "elu", "celu", "selu", "relu6", "hardtanh", "hardsigmoid",
    "hardswish", "mish", "softsign", "logsigmoid", "softmin", "softplus", "normalize",
]

_REDUCTIONS = ("mean", "sum", "none")


def _axis(axis, dim):
    return axis if dim is None else dim


def _check_reduction(reduction, fn):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, not {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def _check_tensor(x, name, fn):
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a Tensor, not {type(x).__name__}")


# ---- layers --------------------------------------------------------------------------------------
def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, with weight of shape [out_features, in_features] (PyTorch's
    layout) and x of shape [..., in_features]. bf16: the product stays in float32 until the
    bias is added, and the sum rounds once."""
    _check_tensor(x, "input", "linear")
    if x.ndim == 0 or x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                         f"{weight.shape} (last dims must agree: [..., in] against [out, in])")
    if x.ndim > 2 and weight.ndim == 2:  # one 2-D product, forward and for weight's gradient
        return linear(x.reshape((-1, x.shape[-1])), weight, bias).reshape(
            (*x.shape[:-1], weight.shape[0]))
    if bias is None:
        return x @ weight.T
    dtype = dtypes.result_type(dtypes.result_type(x.dtype, weight.dtype), bias.dtype)
    if dtype is dtypes.bfloat16:  # (the host keeps the widening while the weight is unchanged)
        weight = apply(WIDEN_WEIGHT, weight)
    return _add_narrow(x @ weight.T, bias, dtype)


# ---- activations ---------------------------------------------------------------------------------
def relu(x):
    """max(x, 0)."""
    return x.relu()


def gelu(x, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF: 0.5 x (1 + erf(x / sqrt 2)); approximate="tanh"
    gives 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), as PyTorch."""
    if approximate == "none":
        return x.gelu()
    if approximate == "tanh":
        return x.gelu_tanh()
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")


def silu(x):
    """x * sigmoid(x) (also called swish)."""
    return x.silu()


def sigmoid(x):
    """1 / (1 + exp(-x))."""
    return x.sigmoid()


def tanh(x):
    """tanh(x)."""
    return x.tanh()


def _row_op(name, x, axis):
    """Fused row op `name` (vkgrad/ops/rownorm.py) along `axis`; integer inputs in float32. A
    0-d tensor is a row of one (axis 0 or -1, as torch)."""
    x = x if x.dtype.is_floating else x.astype(dtypes.float32)
    if x.ndim == 0 and operator.index(axis) in (0, -1):
        return apply(OPS[name], x.reshape(1), axis=0).reshape(())
    return apply(OPS[name], x, axis=layout.normalize_axis(axis, x.ndim))


def softmax(x, axis=-1, *, dim=None):
    """exp(x_i - m) / sum_j exp(x_j - m) along `axis` (`dim` is PyTorch's name for it), with m the
    maximum along the axis so that exp cannot overflow. One fused op (one dispatch on Vulkan),
    differentiable twice; bf16 computes in float32 and rounds once."""
    return _row_op("softmax", x, _axis(axis, dim))


def log_softmax(x, axis=-1, *, dim=None):
    """x_i - m - log(sum_j exp(x_j - m)) along `axis` (`dim` too): log(softmax(x)) without its
    underflow (m the maximum along the axis). One fused op, as softmax."""
    return _row_op("log_softmax", x, _axis(axis, dim))


def _check_number(value, name, fn):
    if not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{fn}: {name} must be a number, not {type(value).__name__}")


def softmin(x, axis=-1, *, dim=None):
    """softmax(-x) along `axis` (`dim` too)."""
    return softmax(-x, _axis(axis, dim))


def leaky_relu(x, negative_slope=0.01):
    """x for x > 0, else negative_slope * x (one elementwise op)."""
    _check_number(negative_slope, "negative_slope", "leaky_relu")
    return elementwise("leaky_relu", x, negative_slope)


def prelu(x, weight):
    """leaky_relu with a learned slope per channel: `weight` has one element (shared) or one per
    channel of axis 1 (axis 0 for a 1-d x), as torch; its gradient is sum(g * min(x, 0)) over
    the rest."""
    _check_tensor(x, "input", "prelu")
    _check_tensor(weight, "weight", "prelu")
    if weight.ndim != 1:
        raise ValueError(f"prelu: weight must be 1-d, not of shape {weight.shape}")
    if weight.size != 1:
        axis = 1 if x.ndim >= 2 else 0
        if x.ndim == 0 or x.shape[axis] != weight.size:
            raise ValueError(f"prelu: {weight.size} weights for input of shape {x.shape} "
                             f"(axis {axis} must have that size)")
        weight = weight.reshape((weight.size,) + (1,) * (x.ndim - axis - 1))
    return elementwise("leaky_relu", x, weight)


def elu(x, alpha=1.0):
    """x for x > 0, else alpha * (exp(x) - 1) (one op: expm1, rounded once)."""
    _check_number(alpha, "alpha", "elu")
    return elementwise("elu", x, alpha, 1.0)


def celu(x, alpha=1.0):
    """x for x > 0, else alpha * (exp(x / alpha) - 1); alpha must not be 0."""
    _check_number(alpha, "alpha", "celu")
    if alpha == 0:
        raise ValueError("celu: alpha must not be 0 (x / alpha)")
    return elementwise("elu", x, alpha, 1.0 / alpha)


def selu(x):
    """scale * elu(x, alpha) with torch's constants alpha = 1.6732632423543772, scale =
    1.0507009873554805."""
    return x.selu()


def hardtanh(x, min_val=-1.0, max_val=1.0):
    """x clipped to [min_val, max_val]; the gradient is 1 strictly inside, 0 elsewhere, as
    torch (clip's gradient also flows at the bounds)."""
    _check_number(min_val, "min_val", "hardtanh")
    _check_number(max_val, "max_val", "hardtanh")
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val {min_val} is greater than max_val {max_val}")
    return elementwise("hardtanh", x, min_val, max_val)


def relu6(x):
    """min(max(x, 0), 6): hardtanh(x, 0, 6), as torch (gradient 0 at 0 and 6)."""
    return hardtanh(x, 0.0, 6.0)


def hardsigmoid(x):
    """min(max(x + 3, 0), 6) / 6; the gradient is 1/6 for -3 < x < 3, else 0."""
    return x.hardsigmoid()


def hardswish(x):
    """x * min(max(x + 3, 0), 6) / 6; the gradient is torch's: 0 up to -3, x / 3 + 1/2 for
    -3 < x < 3, 1 from 3 on."""
    return x.hardswish()


def mish(x):
    """x * tanh(softplus(x)), evaluated as x n / (n + 2) with n = e^x (e^x + 2)."""
    return x.mish()


def softsign(x):
    """x / (1 + |x|)."""
    return x.softsign()


def logsigmoid(x):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): no overflow, no log of 0."""
    return x.logsigmoid()


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold, as torch (one op,
    log1p(exp(-|beta x|)) + max(beta x, 0) inside)."""
    _check_number(beta, "beta", "softplus")
    _check_number(threshold, "threshold", "softplus")
    return elementwise("softplus_beta", x, beta, threshold)


def normalize(x, p=2.0, dim=1, eps=1e-12, *, axis=None):
    """x / max(||x||_p, eps) along `dim` (`axis` too), as torch: p-norms for p > 0 and
    p = inf. Computed as (max(sum |x|^p, eps^p))^(1/p), so a zero slice gets 0, with a finite
    gradient while eps^p is a normal float32. bf16: computed in float32, rounded once."""
    _check_tensor(x, "input", "normalize")
    if not p > 0:
        raise ValueError(f"normalize: p must be positive, not {p}")
    dim = dim if axis is None else axis
    z = _widen(x)
    if p == float("inf"):
        norm = elementwise("maximum", z.abs().max(axis=dim, keepdims=True), eps)
    elif p == 2:
        norm = elementwise("maximum", (z * z).sum(axis=dim, keepdims=True), eps * eps).sqrt()
    elif p == 1:
        norm = elementwise("maximum", z.abs().sum(axis=dim, keepdims=True), eps)
    else:
        total = (z.abs() ** p).sum(axis=dim, keepdims=True)
        norm = elementwise("maximum", total, eps ** p) ** (1 / p)
    return _narrow(z / norm, x.dtype)


def dropout(x, p=0.5, training=True, generator=None):
    """Zero each element with probability p and scale the rest by 1 / (1 - p), so the mean is
    unchanged; x itself when not training or p == 0. The mask comes from vkgrad's seeded
    generator (`generator`, or the default one): vk.manual_seed makes it reproducible, and the
    host and Vulkan draw the same mask."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability must be in [0, 1], not {p}")
    if not training or p == 0:
        return x
    keep = rand(x.shape, device=x.device, generator=generator) >= p
    return where(keep, x * (1 / (1 - p) if p < 1 else 0.0), 0.0)


# ---- normalisation -------------------------------------------------------------------------------
def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias per channel (axis 1 of x [N, C, ...]).

    training: mean and (biased) var of the batch over every axis but 1; running_mean and
    running_var (if given) are updated in place, outside the graph, as
    running = (1 - momentum) * running + momentum * batch, with the unbiased variance
    var * n / (n - 1) (n values per channel), as PyTorch. Otherwise the running statistics
    normalise.
    """
    _check_tensor(x, "input", "batch_norm")
    if x.ndim < 2:
        raise ValueError(f"batch_norm needs an input [N, C, ...], got shape {x.shape}")
    c = x.shape[1]
    shape = (1, c) + (1,) * (x.ndim - 2)
    n = x.size // c if c else 0
    z = _widen(x)
    if training:
        if n <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                             f"got input of shape {x.shape}")
        axes = (0,) + tuple(range(2, x.ndim))
        mean = z.mean(axis=axes, keepdims=True)
        d = z - mean
        var = (d * d).mean(axis=axes, keepdims=True)
        if running_mean is not None:
            with no_grad():
                running_mean[...] = (_widen(running_mean) * (1 - momentum)
                                     + mean.reshape(c) * momentum)
        if running_var is not None:
            with no_grad():
                running_var[...] = (_widen(running_var) * (1 - momentum)
                                    + var.reshape(c) * (momentum * n / (n - 1)))
        y = d * (var + eps).rsqrt()
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are needed when not "
                             "training")
        y = (z - running_mean.reshape(shape)) * (_widen(running_var).reshape(shape) + eps).rsqrt()
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return _narrow(y, x.dtype)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, mean and (biased) var over the last
    len(normalized_shape) axes, which must equal normalized_shape."""
    _check_tensor(x, "input", "layer_norm")
    normalized_shape = ((operator.index(normalized_shape),) if not isinstance(
        normalized_shape, (tuple, list)) else tuple(normalized_shape))
    k = len(normalized_shape)
    if k == 0 or x.shape[x.ndim - k:] != normalized_shape or x.ndim < k:
        raise ValueError(f"layer_norm: input of shape {x.shape} does not end in normalized_shape "
                         f"{normalized_shape}")
    if not x.dtype.is_floating:
        x = x.astype(dtypes.float32)
    # one fused op (one dispatch on Vulkan, backward one more and the sums for weight and bias);
    # weight and bias broadcast to normalized_shape
    weight, bias = (None if v is None else v.broadcast_to(normalized_shape)
                    for v in (weight, bias))
    return apply(OPS["layer_norm"], x, weight, bias, k=k, eps=float(eps))


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c] for x [N, C, ...], mean and (biased)
    var over each group of C / num_groups consecutive channels (and all of their positions) of
    each sample, as torch.nn.functional.group_norm; weight and bias are per channel (C,)."""
    _check_tensor(x, "input", "group_norm")
    if x.ndim < 2:
        raise ValueError(f"group_norm needs an input [N, C, ...], got shape {x.shape}")
    n, c = x.shape[:2]
    if isinstance(num_groups, bool) or operator.index(num_groups) <= 0 or c % num_groups:
        raise ValueError(f"group_norm: num_groups ({num_groups}) must be positive and divide "
                         f"the {c} channels of the input of shape {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (c,):
            raise ValueError(f"group_norm: {name} of shape {p.shape} does not match the {c} "
                             f"channels of the input of shape {x.shape}")
    z = _widen(x).reshape(n, num_groups, -1)
    d = z - z.mean(axis=2, keepdims=True)
    y = (d * ((d * d).mean(axis=2, keepdims=True) + eps).rsqrt()).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return _narrow(y, x.dtype)


def embedding(indices, weight, padding_idx=None):
    """weight[indices]: rows of the [num_embeddings, dim] table, of shape indices.shape + (dim,).
    Rows looked up at `padding_idx` get no gradient."""
    if not isinstance(indices, Tensor):
        indices = tensor(indices)
    if indices.dtype.is_floating or indices.dtype.kind == "b":
        raise TypeError(f"embedding needs integer indices, not {indices.dtype.name}")
    if indices.device.kind != "host":
        indices = indices.to(weight.device)  # host indices stay: they are checked on the host
    out = take(weight, indices, 0, caller="embedding")
    if padding_idx is not None:
        padding_idx = padding_idx % weight.shape[0]  # -1 is the last row, as PyTorch
        keep = (indices.to(weight.device) != padding_idx).expand_dims(-1)
        out = where(keep, out, out.detach())
    return out


# ---- padding and resampling ----------------------------------------------------------------------
_TORCH_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
                    "circular": "wrap"}


def pad(input, pad, mode="constant", value=None):
    """torch.nn.functional.pad: pad = (left, right) for the last dim, then (left, right) for the
    one before it, and so on (len(pad) / 2 dims). mode "constant" fills with `value` (0 if
    None), "reflect" mirrors about the edge element (each pad less than the size), "replicate"
    repeats it, "circular" continues from the other end (each pad at most the size): vk.pad's
    modes "constant", "reflect", "edge" and "wrap". A negative entry crops that side, as
    PyTorch: after padding the input ("reflect", "replicate"), or before ("circular",
    "constant"), so that a circular pad wraps the cropped tensor."""
    _check_tensor(input, "input", "pad")
    if mode not in _TORCH_PAD_MODES:
        raise ValueError(f"pad: mode must be one of {tuple(_TORCH_PAD_MODES)}, not {mode!r}")
    if mode != "constant" and value is not None:
        raise ValueError(f"pad: value is only for mode='constant', not {mode!r}")
    pad = tuple(operator.index(p) for p in pad)
    if len(pad) % 2 or len(pad) > 2 * input.ndim:
        raise ValueError(f"pad: pad {pad} must hold a (left, right) pair for each of at most "
                         f"{input.ndim} trailing dims of the input of shape {input.shape}")
    k = len(pad) // 2
    pairs = [(0, 0)] * (input.ndim - k) + [pad[2 * i:2 * i + 2] for i in reversed(range(k))]
    if any(n + min(lo, 0) + min(hi, 0) < 0 for (lo, hi), n in zip(pairs, input.shape)):
        raise ValueError(f"pad: cropping by {pad} leaves a negative size of the input of shape "
                         f"{input.shape}")
    crop = tuple(slice(-min(lo, 0), min(hi, 0) or None) for lo, hi in pairs)
    cropped = any(lo < 0 or hi < 0 for lo, hi in pairs)
    x = input[crop] if cropped and mode in ("circular", "constant") else input
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in pairs]
    limit = {"reflect": (lambda p, n: p < n, "less than"),
             "circular": (lambda p, n: p <= n, "at most")}.get(mode)
    for axis, (lo, hi) in enumerate(widths):
        if limit and not all(limit[0](p, x.shape[axis]) for p in (lo, hi)):
            raise ValueError(f"pad: mode={mode!r} needs each pad {limit[1]} the size, but pads "
                             f"{(lo, hi)} meet size {x.shape[axis]} (dim {axis} of shape "
                             f"{x.shape})")
    if any(lo or hi for lo, hi in widths):
        x = _pad_numpy(x, widths, _TORCH_PAD_MODES[mode], 0 if value is None else value)
    return x[crop] if cropped and mode in ("reflect", "replicate") else x


_LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _resample_indices(mode, n, m, scale, align_corners):
    """For output positions 0..m-1 of an axis of n inputs, PyTorch's source indices (nearest
    modes: one array) or (i0, i1, w0, w1) (linear: out = w0 x[i0] + w1 x[i1]), computed in
    float32 as its CPU kernels do. scale: the user's scale factor or None (then n / m)."""
    ratio = np.float32(1.0 / scale if scale is not None and scale > 0 else np.float32(n) / m)
    j = np.arange(m, dtype=np.float32)
    if mode == "nearest":
        if m == n or m == 2 * n:  # PyTorch's exact shortcuts
            return np.arange(m) * n // m
        return np.minimum(np.floor(j * ratio).astype(np.int64), n - 1)
    if mode == "nearest-exact":
        return np.minimum(np.floor((j + np.float32(0.5)) * ratio).astype(np.int64), n - 1)
    if align_corners:
        src = j * (np.float32(n - 1) / np.float32(m - 1) if m > 1 else np.float32(0))
    else:
        src = np.maximum(ratio * (j + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1)
    return i0, np.minimum(i0 + 1, n - 1), 1 - w1, w1


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """Resampling of the spatial dims of input (N, C, *spatial), as
    torch.nn.functional.interpolate, to `size` or to floor(n * scale_factor) per dim (one of
    the two; an int or float applies to every spatial dim).

    mode "nearest": out[j] = x[min(floor(j * r), n - 1)], r = 1 / scale_factor if given (and
    recompute_scale_factor is not True), else n / m; "nearest-exact": floor((j + 0.5) * r);
    "area" (2 spatial dims): adaptive_avg_pool2d to the output size.
    "linear" (1 spatial dim), "bilinear" (2), "trilinear" (3): per dim, out[j] = (1 - t) x[i]
    + t x[i + 1] at the source position s = i + t: s = j (n - 1) / (m - 1) with align_corners,
    else max((j + 0.5) r - 0.5, 0); the index at the last input repeats it. PyTorch's float32
    index arithmetic, so the same sources. Composed of gathers (take) and weighted sums, one dim
    at a time; bf16 in float32, rounded once."""
    _check_tensor(input, "input", "interpolate")
    dims = input.ndim - 2
    if dims < 1:
        raise ValueError(f"interpolate needs an input (N, C, *spatial), got shape {input.shape}")
    if mode in _LINEAR_MODES:
        if _LINEAR_MODES[mode] != dims:
            raise ValueError(f"interpolate: mode {mode!r} needs a {_LINEAR_MODES[mode] + 2}-D "
                             f"input, got shape {input.shape}")
        align_corners = bool(align_corners)
    elif mode in ("nearest", "nearest-exact", "area"):
        if mode == "area" and dims != 2:
            raise ValueError(f"interpolate: mode 'area' needs a 4-D input, got shape "
                             f"{input.shape}")
        if align_corners is not None:
            raise ValueError(f"interpolate: align_corners is only for the linear modes, not "
                             f"{mode!r}")
    else:
        raise ValueError(f"interpolate: mode must be 'nearest', 'nearest-exact', 'area', "
                         f"'linear', 'bilinear' or 'trilinear', not {mode!r}")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give either size or scale_factor")
    spatial = input.shape[2:]
    if size is not None:
        sizes = tuple(size) if isinstance(size, (tuple, list)) else (size,) * dims
        scales = (None,) * dims
    else:
        scales = (tuple(float(s) for s in scale_factor) if isinstance(scale_factor, (tuple, list))
                  else (float(scale_factor),) * dims)
        sizes = tuple(int(np.floor(n * s)) for n, s in zip(spatial, scales)) \
            if len(scales) == dims else ()
        if recompute_scale_factor:
            scales = (None,) * dims
    if len(sizes) != dims or any(operator.index(m) < 1 for m in sizes):
        raise ValueError(f"interpolate: the output size {sizes} must be {dims} positive sizes "
                         f"for the input of shape {input.shape}")
    if mode == "area":
        return adaptive_avg_pool2d(input, sizes)
    x = _widen(input)
    for axis, (n, m, scale) in enumerate(zip(spatial, sizes, scales), 2):
        if mode.startswith("nearest"):
            if m != n:
                x = take(x, _resample_indices(mode, n, m, scale, None), axis)
            continue
        i0, i1, w0, w1 = _resample_indices(mode, n, m, scale, align_corners)
        shape = (m,) + (1,) * (input.ndim - 1 - axis)
        w0, w1 = (tensor(w.reshape(shape), x.dtype, x.device) for w in (w0, w1))
        x = take(x, i0, axis) * w0 + take(x, i1, axis) * w1
    return _narrow(x, input.dtype)


# ---- losses --------------------------------------------------------------------------------------
def _class_targets(input, target, ignore_index, fn):
    """`target` as integer labels on input's device, checked against input [N, C, d...] (or [C]).
    Returns (labels, class axis, number of classes)."""
    _check_tensor(input, "input", fn)
    if not isinstance(target, Tensor):
        target = tensor(target)
    if target.dtype.is_floating or target.dtype.kind == "b":
        raise TypeError(f"{fn}: targets must be integer class labels, not {target.dtype.name}")
    axis = 1 if input.ndim > 1 else 0
    expected = input.shape[:axis] + input.shape[axis + 1:]
    if input.ndim == 0 or target.shape != expected:
        raise ValueError(f"{fn}: input of shape {input.shape} needs targets of shape {expected}, "
                         f"got {target.shape}")
    c = input.shape[axis]
    if target.device.kind == "host" and target.size:
        host_check(target, _check_labels, c, ignore_index, fn)
    return target.to(input.device), axis, c


def _check_labels(labels, c, ignore_index, fn):
    bad = labels[(labels < 0) | (labels >= c)]
    if ignore_index is not None:
        bad = bad[bad != ignore_index]
    if bad.size:
        raise IndexError(f"{fn}: target {bad.flat[0]} is out of bounds for {c} classes")


def _class_loss(logp, target, weight, ignore_index, reduction, label_smoothing, axis, c, fn):
    """The per-element loss (1 - s) * -w[t] logp[t] + s / C * -sum_c w[c] logp[c] (s the label
    smoothing), zero where t == ignore_index, reduced; "mean" divides by sum(w[t]) over the
    elements not ignored, as PyTorch. A device target outside [0, C) (and not ignore_index)
    makes the next synchronisation raise IndexError naming the loss `fn`."""
    valid, weight = target != ignore_index, _widen(weight)  # sum(w[t]) in float32 too
    safe = where(valid, target, 0)
    picked = take_along_axis(logp, safe.expand_dims(axis), axis, caller=fn, labels=True)
    picked = picked.squeeze(axis)
    w = where(valid, 1.0, 0.0) if weight is None else where(valid, take(weight, safe), 0.0)
    loss = where(valid, -picked * w, 0.0)  # a 0/0 "mean" sends ignored elements no NaN
    if label_smoothing:
        wc = 1.0 if weight is None else weight.reshape((c,) + (1,) * (logp.ndim - axis - 1))
        smooth = where(valid, -(logp * wc).sum(axis=axis), 0.0)
        loss = loss * (1 - label_smoothing) + smooth * (label_smoothing / c)
    if reduction == "mean":
        return loss.sum() / w.sum()
    return loss.sum() if reduction == "sum" else loss


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log likelihood of integer labels: loss_i = -weight[t_i] * input[i, t_i], where
    input holds log-probabilities [N, C] or [N, C, d...] (or [C]) and target labels [N, d...];
    elements labelled ignore_index count nowhere. "mean" divides by the sum of weight[t_i] over
    the elements not ignored (their number, without weights)."""
    _check_reduction(reduction, "nll_loss")
    target, axis, c = _class_targets(input, target, ignore_index, "nll_loss")
    z = _widen(input)
    return _narrow(_class_loss(z, target, weight, ignore_index, reduction, 0.0, axis, c,
                               "nll_loss"), input.dtype)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Cross entropy of logits `input` [N, C] or [N, C, d...] (or [C]) against `target`.

    Integer labels [N, d...]: loss_i = (1 - s) * -w[t] logp[t] + s / C * -sum_c w[c] logp[c],
    logp = log_softmax(input) along the class axis 1, s = label_smoothing, w the class weights
    (1 if None); elements labelled ignore_index count nowhere, and "mean" divides by the sum of
    w[t] over the rest (PyTorch's rule).
    Class probabilities (a floating target shaped like input): loss_i = -sum_c w[c] q[c] logp[c]
    with q = (1 - s) * target + s / C; "mean" divides by the number of elements N * d...
    """
    _check_reduction(reduction, "cross_entropy")
    _check_tensor(input, "input", "cross_entropy")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], not "
                         f"{label_smoothing}")
    axis = 1 if input.ndim > 1 else 0
    if isinstance(target, Tensor) and target.dtype.is_floating:
        if target.shape != input.shape:
            raise ValueError(f"cross_entropy: probability targets of shape {target.shape} must "
                             f"match the input's shape {input.shape}")
        c = input.shape[axis]
        logp = log_softmax(_widen(input), axis)
        q = _widen(target) * (1 - label_smoothing) + label_smoothing / c
        if weight is not None:
            q = q * weight.reshape((c,) + (1,) * (input.ndim - axis - 1))
        loss = -(logp * q).sum(axis=axis)
        return _narrow(_reduce(loss, reduction), input.dtype)
    target, axis, c = _class_targets(input, target, ignore_index, "cross_entropy")
    if weight is not None and weight._requires_grad or not input.dtype.is_floating:
        logp = log_softmax(_widen(input), axis)  # composed: differentiable in the weights too
        return _narrow(_class_loss(logp, target, weight, ignore_index, reduction,
                                   label_smoothing, axis, c, "cross_entropy"), input.dtype)
    # one fused op over the logits (two dispatches on Vulkan for "mean" and "sum", one for
    # "none"; its backward one more)
    return apply(OPS["cross_entropy"], input, target, weight, axis=axis,
                 ignore_index=-2 ** 31 if ignore_index is None else int(ignore_index),
                 smoothing=float(label_smoothing), reduction=reduction)


def mse_loss(input, target, reduction="mean"):
    """(input - target)^2, reduced ("mean": over every element)."""
    _check_reduction(reduction, "mse_loss")
    d = _widen(input) - target
    return _narrow(_reduce(d * d, reduction), input.dtype)


def l1_loss(input, target, reduction="mean"):
    """|input - target|, reduced ("mean": over every element)."""
    _check_reduction(reduction, "l1_loss")
    return _narrow(_reduce((_widen(input) - target).abs(), reduction), input.dtype)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    """-w [p y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))] for logits x and targets y in [0, 1],
    computed as w [(1 - y) x + (1 + (p - 1) y) softplus(-x)], which cannot overflow
    (p = pos_weight, broadcast along the last axis, 1 if None; w = weight, 1 if None)."""
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    _check_tensor(input, "input", "binary_cross_entropy_with_logits")
    if isinstance(target, Tensor) and target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target of shape {target.shape} must "
                         f"match the input's shape {input.shape}")
    x, y = _widen(input), _widen(target)
    scale = 1.0 if pos_weight is None else (_widen(pos_weight) - 1) * y + 1
    loss = (1 - y) * x + scale * (-x).softplus()
    if weight is not None:
        loss = loss * weight
    return _narrow(_reduce(loss, reduction), input.dtype)


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    """Multi-class hinge loss of scores x [N, C] (or [C]) and labels y [N] (or []):
    loss_n = sum_{i != y} w[y] max(0, margin - x[y] + x[i])^p / C, p = 1 or 2 (PyTorch's
    definition; w = weight, 1 if None)."""
    _check_reduction(reduction, "multi_margin_loss")
    if p not in (1, 2):
        raise ValueError(f"multi_margin_loss: p must be 1 or 2, not {p}")
    if input.ndim > 2:
        raise ValueError(f"multi_margin_loss needs scores [N, C] or [C], got shape {input.shape}")
    target, axis, c = _class_targets(input, target, None, "multi_margin_loss")
    label, x = target.expand_dims(axis), _widen(input)
    # the i == y term is made 0 before the hinge and the square, where x[y] = inf gives
    # inf - inf = NaN (whose 0 * NaN would reach the gradient)
    z = where(label == arange(c, dtype=dtypes.int32, device=input.device), 0.0,
              x - take_along_axis(x, label, axis, caller="multi_margin_loss", labels=True)
              + margin).relu()
    if p == 2:
        z = z * z
    if weight is not None:
        z = z * take(weight, label)
    return _narrow(_reduce(z.sum(axis=axis) / c, reduction), input.dtype)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-w [y max(log x, -100) + (1 - y) max(log(1 - x), -100)] for probabilities x in [0, 1] and
    targets y (w = weight, broadcast, 1 if None): PyTorch's clamp of the logs, so x = 0 or 1 gives
    a finite loss. The range of x is not checked (that would synchronise with the host). The
    gradient is w (x - y) / (x (1 - x)) wherever neither clamp is active, as PyTorch; where one is,
    that log contributes no gradient."""
    fn = "binary_cross_entropy"
    _check_reduction(reduction, fn)
    _check_tensor(input, "input", fn)
    if isinstance(target, Tensor) and target.shape != input.shape:
        raise ValueError(f"{fn}: target of shape {target.shape} must match the input's shape "
                         f"{input.shape}")
    x, y = _widen(input), _widen(target)
    loss = -(y * _clamped_log(x) + (1 - y) * _clamped_log(1 - x))
    if weight is not None:
        loss = loss * weight
    return _narrow(_reduce(loss, reduction), input.dtype)


def _clamped_log(v):
    """max(log v, -100), whose gradient at v = 0 is 0, not 0 * inf."""
    nonzero = v != 0
    return where(nonzero, clip(where(nonzero, v, 1.0).log(), -100.0), -100.0)


def _elementwise_loss_args(input, target, fn, reduction):
    _check_reduction(reduction, fn)
    _check_tensor(input, "input", fn)
    _check_tensor(target, "target", fn)
    return _widen(input) - _widen(target)


def _square_inside(d, inside):
    """d * d where `inside`, 0 elsewhere: the quadratic piece of a loss, which must not send its
    zero gradient through d * d outside, where 0 * 2d is NaN at |d| = inf (the gradient there is
    the linear piece's, sign(d), as torch)."""
    q = where(inside, d, 0.0)
    return q * q


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta, for d = input - target (PyTorch's
    smooth L1; beta = 0 is the L1 loss)."""
    d = _elementwise_loss_args(input, target, "smooth_l1_loss", reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, not {beta}")
    a = d.abs()
    inside = a < beta
    loss = a if beta == 0 else where(inside, _square_inside(d, inside) * (0.5 / beta),
                                     a - 0.5 * beta)
    return _narrow(_reduce(loss, reduction), input.dtype)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta), for d = input - target: the smooth
    L1 loss with beta = delta, times delta."""
    d = _elementwise_loss_args(input, target, "huber_loss", reduction)
    if not delta > 0:
        raise ValueError(f"huber_loss: delta must be positive, not {delta}")
    a = d.abs()
    inside = a < delta
    loss = where(inside, _square_inside(d, inside) * 0.5, (a - 0.5 * delta) * delta)
    return _narrow(_reduce(loss, reduction), input.dtype)


def kl_div(input, target, reduction="mean", log_target=False):
    """Kullback-Leibler divergence pointwise, with input holding log-probabilities x:
    target * (log(target) - x), 0 where target == 0 (PyTorch's xlogy); log_target=True takes the
    target as log-probabilities t: exp(t) * (t - x). reduction "batchmean" divides the sum by the
    batch size input.shape[0] (the true KL divergence per sample); "mean" divides by the number
    of elements, as PyTorch."""
    fn = "kl_div"
    if reduction not in _REDUCTIONS + ("batchmean",):
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS + ('batchmean',)}, not "
                         f"{reduction!r}")
    _check_tensor(input, "input", fn)
    _check_tensor(target, "target", fn)
    x, t = _widen(input), _widen(target)
    if log_target:
        loss = t.exp() * (t - x)
    else:  # t log t with t = 0 giving 0, and no NaN in its gradient there
        loss = t * where(t == 0, 1.0, t).log() - t * x
    if reduction == "batchmean":
        loss = loss.sum() / (input.shape[0] if input.ndim else 1)
    else:
        loss = _reduce(loss, reduction)
    return _narrow(loss, dtypes.result_type(input.dtype, target.dtype))


def _norm(x, axis):
    """The 2-norm along `axis` (kept), whose gradient at a zero vector is 0 (PyTorch's rule)."""
    return _sqrt_flat_at_zero((x * x).sum(axis=axis, keepdims=True))


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """sum(x1 / max(|x1|, eps) * x2 / max(|x2|, eps)) along `dim`, x1 and x2 broadcast together,
    as PyTorch 2: each vector is divided by its norm first, so the result stays in [-1, 1]. As
    there, the clamp to eps changes the value only: gradients flow through the norm itself."""
    _check_tensor(x1, "x1", "cosine_similarity")
    _check_tensor(x2, "x2", "cosine_similarity")
    dtype = dtypes.result_type(x1.dtype, x2.dtype)
    a, b = _widen(x1), _widen(x2)
    ndim = max(a.ndim, b.ndim)
    if not -ndim <= dim < max(ndim, 1):
        raise ValueError(f"cosine_similarity: dim {dim} is out of range for shapes {x1.shape} "
                         f"and {x2.shape}")
    shape = np.broadcast_shapes(a.shape, b.shape)
    a, b = a.broadcast_to(shape), b.broadcast_to(shape)

    def unit(v):
        n = _norm(v, dim)
        return v / (n + (clip(n, eps) - n).detach())  # the value max(n, eps), n's gradient

    return _narrow((unit(a) * unit(b)).sum(axis=dim), dtype)


# ---- attention -----------------------------------------------------------------------------------
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, generator=None):
    """softmax(Q K^T * scale + M) V, torch's F.scaled_dot_product_attention.

    Without dropout it runs as one fused op (vkgrad/ops/transformer_ops.py: on Vulkan one
    dispatch forward and two backward, which store no L x S scores or weights) whenever
    fused_fits says it can: q, k, v of one dtype with equal leading dims, rows of at most
    MAX_FUSED_FEATURES, a mask without a gradient that folds. Otherwise it is composed from
    matmul, where and softmax (transformer_ops.composed_weights), the reference the fused op is
    tested against.

    query [..., L, E], key [..., S, E], value [..., S, Ev] -> [..., L, Ev]; the leading (batch,
    head) dims broadcast. scale defaults to 1 / sqrt(E). attn_mask broadcasts to [..., L, S]: a
    bool mask says which keys take part (True) and a floating one is added to the scores;
    is_causal masks key j for query i where j > i (the top-left triangle, as torch, also when
    L != S) and may not be combined with attn_mask. A query that no key takes part for gets a zero
    output and zero gradients (torch's rule), not NaN. dropout_p > 0 drops attention weights as
    F.dropout does (whether or not a module is training, as torch; `generator` as F.dropout's).
    bf16: computed in float32 and rounded once.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        _check_tensor(t, name, "scaled_dot_product_attention")
        if t.ndim < 2:
            raise ValueError(f"scaled_dot_product_attention: {name} needs at least 2 dims "
                             f"[..., length, features], got shape {t.shape}")
    (big_l, e), (s, ek), sv = query.shape[-2:], key.shape[-2:], value.shape[-2]
    if ek != e or sv != s:
        raise ValueError(f"scaled_dot_product_attention: query {query.shape}, key {key.shape} "
                         f"and value {value.shape} do not fit [..., L, E], [..., S, E], "
                         "[..., S, Ev]")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal=True, not "
                         "both (fold the causal triangle into the mask)")
    if not 0 <= dropout_p <= 1:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1], not "
                         f"{dropout_p}")
    scale = e ** -0.5 if scale is None else float(scale)
    if attn_mask is not None:
        _check_tensor(attn_mask, "attn_mask", "scaled_dot_product_attention")
        scores = (*layout.broadcast_shapes(query.shape[:-2], key.shape[:-2]), big_l, s)
        try:
            fits = layout.broadcast_shapes(attn_mask.shape, scores) == scores
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape "
                             f"{attn_mask.shape} does not broadcast to the scores' shape "
                             f"{scores} [..., L, S]")
    if dropout_p == 0 and fused_fits(query, key, value, attn_mask):
        return fused_attention(query, key, value, attn_mask, scale, is_causal)
    w = composed_weights(query, key, attn_mask, scale, is_causal)
    if dropout_p > 0:
        w = dropout(w, dropout_p, generator=generator)
    return _narrow(w @ _widen(value), query.dtype)
