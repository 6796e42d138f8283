"""The small ops attention needs: tril, triu (torch's names and `diagonal`) and masked_fill.

>>> import vkgrad as vk
>>> vk.tril(vk.ones((3, 3)), -1).tolist()
[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
>>> vk.ones(3).masked_fill(vk.tensor([True, False, True]), -1.0).tolist()
[-1.0, 1.0, -1.0]

tril(x, k) keeps x[..., i, j] where j - i <= k and zeroes the rest; triu(x, k) keeps j - i >= k.
On Vulkan the triangle is computed, not uploaded: column and row indices come from one arange
dispatch each (shaders/random.comp), one comparison makes the mask and one `where` selects; the
leading dims broadcast. masked_fill(x, mask, value) is where(mask, value, x). Both round nothing,
so every dtype passes through exactly.

attention(q, k, v, scale, causal) is softmax(q k^T * scale) v without a mask (or with the causal
one) over [B, L, E], [B, S, E], [B, S, Ev]: F.scaled_dot_product_attention's fused path. On Vulkan
it is one dispatch of shaders/attention.comp (an online softmax per query row, so the L x S
scores are never stored, and a causal row reads only the keys it sees); the host computes it with
numpy. Both compute in float32 and round the output once. Its backward recomputes the weights
P = softmax(q k^T * scale) in Tensor ops: dv = P^T g, dS = P * (g v^T - rowsum(P * g v^T)),
dq = dS k * scale, dk = dS^T q * scale.
"""
import operator

import numpy as np

from .. import dtypes, layout
from ..backend.vulkan import f32_bits
from ..random import launch as pattern_launch
from ..tensor import Tensor, _narrow, _widen, full, tensor_method, where
from .elementwise import compute_domain, contiguous, launch as elementwise_launch
from .registry import OPS, Op, OpTest, apply


def _tri_host(a, diagonal, upper):
    return (np.triu if upper else np.tril)(a, diagonal)


def _tri_vulkan(backend, a, diagonal, upper):
    """keep = col <= row + k (tril) or col >= row + k (triu), then where(keep, a, 0)."""
    n, m = a.shape[-2:]
    cols = pattern_launch(backend, (1, m), dtypes.int32, "arange_int", 0, 1)
    rows = pattern_launch(backend, (n, 1), dtypes.int32, "arange_int", diagonal, 1)
    keep = elementwise_launch(backend, "ge" if upper else "le", dtypes.bool_, (n, m),
                              [cols, rows], "int")
    return elementwise_launch(backend, "where", a.dtype, a.shape, [keep, a, 0],
                              compute_domain(a.dtype))


def _tri(x, diagonal, upper, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a Tensor, not {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name}: input must have at least 2 dims, got shape {x.shape}")
    diagonal = operator.index(diagonal)
    n, m = x.shape[-2:]
    diagonal = max(-n, min(m, diagonal))  # beyond the matrix the result no longer changes
    return apply(OPS["tri"], x, diagonal=diagonal, upper=upper)


@tensor_method("tril")
def tril(x, diagonal=0):
    """The lower triangle of the last two dims of x: x[..., i, j] where j - i <= diagonal, else
    0 (torch.tril; diagonal > 0 keeps diagonals above the main one too)."""
    return _tri(x, diagonal, False, "tril")


@tensor_method("triu")
def triu(x, diagonal=0):
    """The upper triangle of the last two dims of x: x[..., i, j] where j - i >= diagonal, else
    0 (torch.triu)."""
    return _tri(x, diagonal, True, "triu")


@tensor_method("masked_fill")
def masked_fill(x, mask, value):
    """x with `value` wherever the boolean `mask` (broadcast against x) is True (torch's
    Tensor.masked_fill); value is a Python scalar or a 0-d tensor. The result keeps x's shape
    and dtype."""
    if not isinstance(mask, Tensor) or mask.dtype is not dtypes.bool_:
        raise TypeError("masked_fill: mask must be a bool Tensor, not "
                        + (mask.dtype.name if isinstance(mask, Tensor) else type(mask).__name__))
    if isinstance(value, Tensor):
        if value.ndim:
            raise ValueError(f"masked_fill: value must be a scalar or 0-d tensor, got shape "
                             f"{value.shape}")
        value = value.astype(x.dtype)
    out = where(mask, value, x)
    if out.shape != x.shape:
        raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to the "
                         f"input's shape {x.shape}")
    return out.astype(x.dtype) if out.dtype is not x.dtype else out


MAX_FUSED_FEATURES = 128  # attention.comp's MAXE: the longest q/k and v rows it keeps in registers


def _attention_host(q, k, v, scale, causal):
    out = dtypes.dtype(q.dtype)
    compute = np.float64 if out is dtypes.float64 else np.float32  # bf16 too: in float32
    q, k, v = (x.astype(compute) for x in (q, k, v))
    if k.shape[-2] == 0:
        return np.zeros((*q.shape[:-1], v.shape[-1]), out.np_dtype)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * compute(scale)
    if causal:
        s = np.where(np.tri(*s.shape[-2:], dtype=bool), s, compute(-np.inf))
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.matmul(w / w.sum(axis=-1, keepdims=True), v).astype(out.np_dtype)


def _attention_vulkan(backend, q, k, v, scale, causal):
    q, k, v = (x if x.strides == layout.contiguous_strides(x.shape) else contiguous(x)
               for x in (q, k, v))
    (b, big_l, e), (s, ev) = q.shape, v.shape[-2:]
    out = backend.empty((b, big_l, ev), q.dtype)
    if out.size:
        backend.launch("attention", "", b * big_l,
                       [b * big_l, big_l, s, e, ev, q.start, k.start, v.start, out.start,
                        f32_bits(scale)], (q.dtype.code, int(causal)), reads=[q, k, v],
                       writes=[out])
    return out


def _attention_weights(q, k, scale, causal):
    """P = softmax(q k^T * scale) in float32 Tensor ops (masked keys get exactly 0)."""
    s = (_widen(q) @ _widen(k).swapaxes(-1, -2)) * scale
    if causal:
        s = where(tril(full(s.shape[-2:], True, dtypes.bool_, s.device)), s, float("-inf"))
    w = (s - s.max(axis=-1, keepdims=True).detach()).exp()
    return w / w.sum(axis=-1, keepdims=True)


def _attention_vjp(ctx, g):
    q, k, v = ctx.inputs
    scale, causal = ctx.params["scale"], ctx.params["causal"]
    if k.shape[-2] == 0:  # no keys: the output is 0 whatever the inputs
        return tuple(full(x.shape, 0, x.dtype, x.device) if need else None
                     for x, need in zip(ctx.inputs, ctx.needs_input_grad))
    p, g = _attention_weights(q, k, scale, causal), _widen(g)
    dp = g @ _widen(v).swapaxes(-1, -2)
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True)) * scale
    grads = (lambda: ds @ _widen(k), lambda: ds.swapaxes(-1, -2) @ _widen(q),
             lambda: p.swapaxes(-1, -2) @ g)
    return tuple(_narrow(rule(), x.dtype) if need else None
                 for rule, need, x in zip(grads, ctx.needs_input_grad, ctx.inputs))


def fused_attention(q, k, v, scale, causal):
    """softmax(q k^T * scale) v (causal: key j only for query i >= j) for q [B, L, E],
    k [B, S, E], v [B, S, Ev] of one floating dtype, E and Ev at most MAX_FUSED_FEATURES
    (and Ev even for bf16): the op F.scaled_dot_product_attention uses when it can."""
    return apply(OPS["attention"], q, k, v, scale=float(scale), causal=bool(causal))


# ---- the op and its tests ------------------------------------------------------------------------
def _cases_tri(rng):
    x = rng.standard_normal
    return [([x((4, 4))], {"diagonal": 0}), ([x((3, 5))], {"diagonal": 1}),
            ([x((5, 3))], {"diagonal": -2}), ([x((2, 3, 7, 6))], {"diagonal": 0}),
            ([x((3, 4))], {"diagonal": 9}), ([x((3, 4))], {"diagonal": -9}),
            ([x((0, 3))], {"diagonal": 0}), ([x((1, 257))], {"diagonal": 100})]


def _cases_masked_fill(rng):
    x = rng.standard_normal
    return [([x((3, 4)), rng.random((3, 4)) > 0.5], {"value": -2.5}),
            ([x((2, 3, 5)), rng.random((3, 1)) > 0.5], {"value": 0.0}),
            ([x((7,)), rng.random(()) > 0.5], {"value": 3.0})]


_TRI_DTYPES = ("float32", "bfloat16", "int32", "bool")

Op("tri", _tri_host, _tri_vulkan, saves=(),
   vjp=lambda ctx, g: (apply(OPS["tri"], g, **ctx.params),), tests=[
       OpTest(tril, lambda x, diagonal: np.tril(x, diagonal), _cases_tri, dtypes=_TRI_DTYPES),
       OpTest(triu, lambda x, diagonal: np.triu(x, diagonal), _cases_tri, dtypes=_TRI_DTYPES)])
OPS["where"].tests.append(OpTest(
    masked_fill, lambda x, mask, value: np.where(mask, value, x).astype(x.dtype),
    _cases_masked_fill))


def _cases_attention(rng):
    x = rng.standard_normal
    return [([x((2, 5, 8)), x((2, 7, 8)), x((2, 7, 6))], {"scale": 8 ** -0.5, "causal": False}),
            ([x((3, 9, 4)), x((3, 9, 4)), x((3, 9, 4))], {"scale": 0.5, "causal": True}),
            ([x((1, 4, 16)), x((1, 6, 16)), x((1, 6, 2))], {"scale": 0.25, "causal": True}),
            ([x((2, 3, 4)), x((2, 0, 4)), x((2, 0, 2))], {"scale": 1.0, "causal": False}),
            ([x((1, 40, 128)), x((1, 40, 128)), x((1, 40, 128))], {"scale": 128 ** -0.5,
                                                                    "causal": True})]


def _attention_reference(q, k, v, scale, causal):
    if k.shape[-2] == 0:
        return np.zeros((*q.shape[:-1], v.shape[-1]))
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        s = np.where(np.tri(*s.shape[-2:], dtype=bool), s, -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True) @ v


Op("attention", _attention_host, _attention_vulkan, vjp=_attention_vjp, tests=[OpTest(
    fused_attention, _attention_reference, _cases_attention,
    reduction_length=lambda inputs, params: max(inputs[0].shape[-1], inputs[1].shape[-2]))])
