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

attention(q, k, v, mask, scale, causal) is softmax(q k^T * scale + M) v over [..., L, E],
[..., S, E], [..., S, Ev] (M: causal, a bool or an additive mask broadcast over the leading dims):
F.scaled_dot_product_attention's fused path. The forward also returns each row's log-sum-exp
lse = log sum_j exp(s_ij) and the output before rounding, kept for the backward (the op's
"stats"). The backward is flash attention's: P = exp(s - lse) recomputed, dP = g v^T,
D = rowsum(P * dP) = rowsum(g * out), dS = P (dP - D), dq = dS k * scale, dk = dS^T q * scale,
dv = P^T g. On Vulkan the forward is one dispatch of
shaders/attention.comp and the backward two (dq and D over query rows, then dk and dv over key
rows), none of which stores an L x S matrix, a causal one visiting only the pairs j <= i; the
host computes the same in numpy. Both compute in float32 (float64 for float64 on the host) and
round each result once. Under create_graph the backward is the composed reference's
(composed_weights), so that it differentiates again.
"""
import operator
from math import prod

import numpy as np

from .. import dtypes, kernels, layout
from ..autograd import grad as autograd_grad, is_grad_enabled
from ..random import launch as pattern_launch
from ..tensor import Tensor, _narrow, _widen, full, tensor_method, where
from .elementwise import compute_domain, contiguous, launch as elementwise_launch
from .registry import OPS, Op, apply


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


ATTENTION = kernels.LAYOUTS["attention"]
MAX_FUSED_FEATURES = ATTENTION.MAXE  # the longest q/k and v rows attention.comp keeps in registers


def _fold_mask(mask_shape, lead, big_l, s):
    """How attention.comp finds a contiguous mask of `mask_shape` broadcast to (*lead, L, S):
    (n_lo, s_hi, s_lo, s_l, s_s), element strides (0 along broadcast dims) with the leading dims
    folded into two, batch b = hi n_lo + lo at hi s_hi + lo s_lo; None if they do not fold."""
    target = (*lead, big_l, s)
    strides = layout.broadcast_strides(mask_shape, layout.contiguous_strides(mask_shape), target)
    groups = []  # (size, stride) of runs of leading dims that index like one dim
    for n, st in zip(lead, strides):
        if n == 1:
            continue
        if groups and groups[-1][1] == st * n:
            groups[-1] = (groups[-1][0] * n, st)
        else:
            groups.append((n, st))
    if len(groups) > 2:
        return None
    (_, s_hi), (n_lo, s_lo) = [(1, 0)] * (2 - len(groups)) + groups
    return n_lo, s_hi, s_lo, *strides[-2:]


def fused_fits(query, key, value, mask):
    """Whether F.scaled_dot_product_attention can run as the fused op: q, k, v of one floating
    dtype with equal leading dims and rows of at most MAX_FUSED_FEATURES, and a mask that is
    None, bool, or floating without a gradient, whose leading dims fold into two."""
    dtype, lead = query.dtype, query.shape[:-2]
    if not (dtype.is_floating and key.dtype is dtype and value.dtype is dtype
            and key.shape[:-2] == lead == value.shape[:-2]
            and max(query.shape[-1], value.shape[-1]) <= MAX_FUSED_FEATURES):
        return False
    return mask is None or ((mask.dtype is dtypes.bool_ or mask.dtype.is_floating)
                            and not mask.requires_grad
                            and _fold_mask(mask.shape, lead, query.shape[-2], key.shape[-2])
                            is not None)


def _scores_host(q, k, mask, scale, causal):
    """s = q k^T * scale, -inf where the key takes no part (causal, or a False in a bool mask),
    plus an additive mask."""
    s = np.matmul(q, np.swapaxes(k, -1, -2))
    s *= s.dtype.type(scale)
    if causal:
        s = np.where(np.tri(*s.shape[-2:], dtype=bool), s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask.astype(s.dtype)
    return s


def _attention_host(q, k, v, mask, scale, causal):
    """(out, lse, out unrounded) with lse = log sum_j exp(s_ij), 0 for a row without keys (out 0
    there)."""
    out = dtypes.dtype(q.dtype)
    compute = np.float64 if out is dtypes.float64 else np.float32  # bf16 too: in float32
    q, k, v = (x.astype(compute) for x in (q, k, v))
    s = _scores_host(q, k, mask, scale, causal)
    m = s.max(axis=-1, keepdims=True, initial=-np.inf)
    m[m == -np.inf] = 0
    s -= m
    np.exp(s, out=s)
    total = s.sum(axis=-1, keepdims=True)
    total[total == 0] = 1  # a row without keys: its weights and output are 0
    wide = np.matmul(s, v) / total
    return wide.astype(out.np_dtype, copy=False), (m + np.log(total))[..., 0], wide


def _attention_backward_host(q, k, v, mask, g, lse, o, scale, causal, need_kv):
    """P = exp(s - lse), D = rowsum(P * dP) = rowsum(g * o) with dP = g v^T and o the unrounded
    output, dS = P (dP - D) * scale: (dq, dk, dv) = (dS k, dS^T q, P^T g), each rounded once to
    its input's dtype."""
    out = dtypes.dtype(q.dtype).np_dtype
    q, k, v, g = (x.astype(lse.dtype) for x in (q, k, v, g))
    p = _scores_host(q, k, mask, scale, causal)
    p -= lse[..., None]
    np.exp(p, out=p)
    ds = np.matmul(g, np.swapaxes(v, -1, -2))
    ds -= (g * o).sum(axis=-1, keepdims=True)
    ds *= p
    ds *= lse.dtype.type(scale)
    dq = np.matmul(ds, k).astype(out)
    if not need_kv:
        return dq, None, None
    return (dq, np.matmul(np.swapaxes(ds, -1, -2), q).astype(out),
            np.matmul(np.swapaxes(p, -1, -2), g).astype(out))


def _operands_vulkan(arrays):
    return [x if x is None or x.strides == layout.contiguous_strides(x.shape) else contiguous(x)
            for x in arrays]


def _output_vulkan(backend, shape, dtype):
    """An output for attention.comp to write: `dtype`, or float32 where bf16 rows would share
    words (odd width); _round_vulkan then rounds it once."""
    wide = dtype is dtypes.bfloat16 and shape[-1] % 2
    return backend.empty(shape, dtypes.float32 if wide else dtype)


def _round_vulkan(backend, array, dtype):
    return array if array.dtype is dtype else elementwise_launch(
        backend, "identity", dtype, array.shape, [array], "float")


def _push(rows, q, k, v, mask, scale, lse, o32, g=None, d=None, out=None, outv=None):
    """attention.comp's push constants over `rows` rows, and its mask's specialization
    constants (by name)."""
    (big_l, e), (s, ev) = q.shape[-2:], v.shape[-2:]
    fold, spec = (1, 0, 0, 0, 0), dict(MASK=0, MDT=0)
    if mask is not None:
        fold = _fold_mask(mask.shape, q.shape[:-2], big_l, s)
        spec = dict(MASK=1, MDT=0) if mask.dtype is dtypes.bool_ else dict(
            MASK=2, MDT=mask.dtype.code)
    starts = {f"{name}_start": 0 if x is None else x.start for name, x in zip(
        ("q", "k", "v", "lse", "o32", "g", "d", "out", "outv", "mask"),
        (q, k, v, lse, o32, g, d, out, outv, mask))}
    n_lo, s_hi, s_lo, s_l, s_s = fold
    return ATTENTION.pack(rows=rows, L=big_l, S=s, E=e, EV=ev, scale=scale, **starts, n_lo=n_lo,
                          s_hi=s_hi, s_lo=s_lo, s_l=s_l, s_s=s_s), spec


def _attention_vulkan(backend, q, k, v, mask, scale, causal):
    q, k, v, mask = _operands_vulkan((q, k, v, mask))
    rows = prod(q.shape[:-1])
    out = _output_vulkan(backend, (*q.shape[:-1], v.shape[-1]), q.dtype)
    lse = backend.empty(q.shape[:-1], dtypes.float32)
    o32 = out if out.dtype is dtypes.float32 else backend.empty(out.shape, dtypes.float32)
    if rows:
        push, spec = _push(rows, q, k, v, mask, scale, lse, o32, out=out)
        backend.launch("attention", "", rows, push,
                       ATTENTION.spec(DT=q.dtype.code, CAUSAL=int(causal), PASS=0, **spec,
                                      ODT=0, ODTV=out.dtype.code),
                       reads=[q, k, v, mask], writes=[out, lse, o32])
    return _round_vulkan(backend, out, q.dtype), lse, o32


def _attention_backward_vulkan(backend, q, k, v, mask, g, lse, o32, scale, causal, need_kv):
    """Two attention.comp dispatches: pass 1 over query rows (D and dq), then, if need_kv,
    pass 2 over key rows (dk and dv), which reads pass 1's D."""
    q, k, v, mask, g = _operands_vulkan((q, k, v, mask, g))
    rows_q, rows_k = prod(q.shape[:-1]), prod(k.shape[:-1])
    d = backend.empty(q.shape[:-1], dtypes.float32)
    dq = _output_vulkan(backend, q.shape, q.dtype)
    base = dict(DT=q.dtype.code, CAUSAL=int(causal))
    if rows_q:
        push, spec = _push(rows_q, q, k, v, mask, scale, lse, o32, g, d, dq)
        backend.launch("attention", "", rows_q, push,
                       ATTENTION.spec(**base, PASS=1, **spec, ODT=dq.dtype.code, ODTV=0),
                       reads=[q, k, v, mask, g, lse, o32], writes=[d, dq])
    if not need_kv:
        return _round_vulkan(backend, dq, q.dtype), None, None
    dk, dv = _output_vulkan(backend, k.shape, q.dtype), _output_vulkan(backend, v.shape, q.dtype)
    if rows_k:
        push, spec = _push(rows_k, q, k, v, mask, scale, lse, o32, g, d, dk, dv)
        backend.launch("attention", "", rows_k, push,
                       ATTENTION.spec(**base, PASS=2, **spec, ODT=dk.dtype.code,
                                      ODTV=dv.dtype.code),
                       reads=[q, k, v, mask, g, lse, d], writes=[dk, dv])
    return tuple(_round_vulkan(backend, x, q.dtype) for x in (dq, dk, dv))


def composed_weights(query, key, mask, scale, causal):
    """softmax(Q K^T * scale + M) in float32 Tensor ops (the reference the fused op is tested
    against): masked keys get exactly 0, and a row no key takes part for is all 0, not 0 / 0."""
    scores = (_widen(query) @ _widen(key).swapaxes(-1, -2)) * scale
    if causal:
        mask = tril(full(scores.shape[-2:], True, dtypes.bool_, scores.device))
    if mask is not None:
        scores = (where(mask, scores, float("-inf")) if mask.dtype is dtypes.bool_
                  else scores + _widen(mask))
    m = scores.max(axis=-1, keepdims=True).detach()
    w = (scores - where(m == float("-inf"), 0.0, m)).exp()
    total = w.sum(axis=-1, keepdims=True)
    return w / where(total == 0, 1.0, total)


def _attention_vjp(ctx, g):
    q, k, v, mask = ctx.inputs
    scale, causal = ctx.params["scale"], ctx.params["causal"]
    needs = ctx.needs_input_grad[:3]
    if is_grad_enabled():  # create_graph: the composed reference's gradients, which differentiate
        out = _narrow(composed_weights(q, k, mask, scale, causal) @ _widen(v), q.dtype)
        grads = iter(autograd_grad(out, [x for x, n in zip((q, k, v), needs) if n], g,
                                   create_graph=True))
        return tuple(next(grads) if n else None for n in needs) + (None,)
    g = g if g.dtype is q.dtype else g.astype(q.dtype)
    arrays = g.device.backend.run(
        ATTENTION_BACKWARD, q._data, k._data, v._data, None if mask is None else mask._data,
        g._data, *(t._data for t in ctx.stats), scale=scale, causal=causal,
        need_kv=needs[1] or needs[2])
    return tuple(Tensor._wrap(a, g.device) if n else None for a, n in zip(arrays, needs)) + (None,)


def fused_attention(q, k, v, mask, scale, causal):
    """softmax(q k^T * scale + M) v for q [..., L, E], k [..., S, E], v [..., S, Ev] of one
    floating dtype and equal leading dims, E and Ev at most MAX_FUSED_FEATURES; key j takes no
    part for query i where causal and j > i, or where a bool mask is False; a floating mask is
    added to the scores (it gets no gradient); the mask broadcasts to [..., L, S] (fused_fits says
    which do). The op F.scaled_dot_product_attention uses when it can: on Vulkan one
    attention.comp dispatch forward and two backward, none of which stores L x S values."""
    if mask is not None and mask.requires_grad:
        raise ValueError("fused_attention: the mask gets no gradient; use "
                         "F.scaled_dot_product_attention, which composes this case")
    return apply(OPS["attention"], q, k, v, mask, scale=float(scale), causal=bool(causal))


# ---- the ops ------------------------------------------------------------------------------------
Op("tri", _tri_host, _tri_vulkan, saves=(),
   vjp=lambda ctx, g: (apply(OPS["tri"], g, **ctx.params),))
Op("attention", _attention_host, _attention_vulkan, vjp=_attention_vjp, saves=("inputs", "stats"))
ATTENTION_BACKWARD = Op("attention_backward", _attention_backward_host,
                        _attention_backward_vulkan, saves=())
