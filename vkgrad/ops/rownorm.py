"""Fused row ops: softmax, log_softmax, layer_norm and cross_entropy, forward and backward.

Each is one op of the table, with a numpy implementation and one kernel of shaders/rownorm.comp
(cross-entropy's "mean" and "sum": two, the second adding the rows up), instead of a chain of
reductions and elementwise ops; vkgrad/nn/functional.py calls them. A row is the run of
elements along the normalised axis (softmax, log_softmax: `axis`; cross_entropy: the class
axis; layer_norm: the trailing normalised dims, flattened). All compute in float32 (float64
inputs on the host: in float64) and round their result once.

  softmax(x)_j     = exp(x_j - m) / sum_k exp(x_k - m),  m = max_k x_k
  log_softmax(x)_j = x_j - m - log sum_k exp(x_k - m)
  layer_norm(x)_j  = (x_j - mean) rstd w_j + b_j,  rstd = 1 / sqrt(var + eps), var biased
  cross_entropy    per row: (1 - s) w[t] (lse - x_t) + s / C (lse sum_c w_c - sum_c w_c x_c)
                   (lse = log sum_c exp x_c, s the label smoothing, C classes, w the class
                   weights or 1), 0 where t == ignore_index; "mean" divides the sum of the rows
                   by sum w[t] over the rows not ignored.
Backward, each one op too: softmax's dx = p (g - sum g p); log_softmax's dx = g - p sum g
(p = softmax(x), recomputed from x in float32, never from a rounded output); layer norm's
dx = rstd (g w - mean(g w) - xhat mean(g w xhat)) with the forward's (mean, rstd) rows, and
dw = sum over rows of g xhat, db = sum of g (two reductions); cross-entropy's dx = scale
((1 - s) w[t] (p - onehot(t)) + s / C (p sum_c w_c - w)), scale = g (/ sum w[t] for "mean").
The backward ops are differentiable again (second order through create_graph), softmax's and
log_softmax's by backward rules of their own, layer norm's and cross-entropy's by the same
formulas in Tensor ops.

On Vulkan, rows have at most MAX_ROW elements; GROUP threads share one (threads_per_row), and
the kernels use subgroup arithmetic where the backend's `subgroups` says so.
"""
from math import prod

import numpy as np

from .. import dtypes, kernels
from ..autograd import is_grad_enabled
from ..kernels import f32_bits
from .elementwise import contiguous
from .registry import OPS, Op, apply

ROWNORM = kernels.LAYOUTS["rownorm"]
WG = ROWNORM.workgroup
MAX_ROW = WG * 65535    # lavapipe ends a shader loop after 65,535 iterations
MODES = {name[5:].lower(): code for name, code in kernels.ROWNORM_CODES.items()
         if name.startswith("MODE_")}
FLAGS = {name[5:].lower(): code for name, code in kernels.ROWNORM_CODES.items()
         if name.startswith("FLAG_")}
IMM = kernels.DTYPE_CODES["imm"]


# ---- host ----------------------------------------------------------------------------------------
def _wide(x):
    """x as the float type the host computes in: float64 stays, the rest becomes float32."""
    return x if x.dtype == np.float64 else x.astype(np.float32)


def _stats(z, axis):
    """(m, log s): the maximum along `axis` and the log of s = sum exp(z - m) (both kept), so
    lse = m + log s; as the composite, a NaN or +inf maximum gives NaN and a row of -inf gives
    -inf - -inf = NaN out."""
    m = z.max(axis=axis, keepdims=True)
    return m, np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def _softmax_host(x, axis):
    if x.size == 0:
        return np.empty(x.shape, x.dtype)
    z = _wide(x)
    with np.errstate(all="ignore"):
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        e /= e.sum(axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


def _log_softmax_host(x, axis):
    if x.size == 0:
        return np.empty(x.shape, x.dtype)
    z = _wide(x)
    with np.errstate(all="ignore"):
        m, log_s = _stats(z, axis)
        # (z - m) - log s, as the shader: z - lse loses log s where lse = m + log s rounds to m
        return ((z - m) - log_s).astype(x.dtype, copy=False)


def _softmax_backward_host(x, g, axis):
    if x.size == 0:
        return np.empty(x.shape, x.dtype)
    with np.errstate(all="ignore"):
        p = _softmax_host(_wide(x), axis)
        g = _wide(g)
        return (p * (g - (g * p).sum(axis=axis, keepdims=True))).astype(x.dtype, copy=False)


def _log_softmax_backward_host(x, g, axis):
    if x.size == 0:
        return np.empty(x.shape, x.dtype)
    with np.errstate(all="ignore"):
        g = _wide(g)
        p = _softmax_host(_wide(x), axis)
        return (g - p * g.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False)


def _layer_norm_dtype(x, w, b):
    """The result dtype: x's if bf16 (its float32 result rounds once), else that of x, w, b."""
    if dtypes.dtype(x.dtype) is dtypes.bfloat16:
        return x.dtype
    out = dtypes.float32
    for a in (x, w, b):
        out = out if a is None else dtypes.result_type(out, dtypes.dtype(a.dtype))
    return out.np_dtype


def _layer_norm_host(x, w, b, k, eps):
    """(y, stats): stats holds each row's (mean, rstd) in its last axis, of shape
    x.shape[:-k] + (1,) * k + (2,), in the compute dtype."""
    axes = tuple(range(x.ndim - k, x.ndim))
    z = _wide(x)
    if z.size == 0:  # (rows of no elements: NaN statistics, as the mean of nothing)
        return np.empty(x.shape, _layer_norm_dtype(x, w, b)), np.full(
            x.shape[:x.ndim - k] + (1,) * k + (2,), np.nan, z.dtype)
    with np.errstate(all="ignore"):
        mean = z.mean(axis=axes, keepdims=True)
        d = z - mean
        rstd = 1 / np.sqrt((d * d).mean(axis=axes, keepdims=True) + eps)
        d *= rstd
        if w is not None:
            d *= _wide(w)
        if b is not None:
            d += _wide(b)
    return d.astype(_layer_norm_dtype(x, w, b), copy=False), np.stack([mean, rstd], -1)


def _layer_norm_backward_host(x, w, g, stats, k, weight_grad):
    """dx (x's dtype) and, with weight_grad, the float32 rows g xhat stacked after it: an array
    of shape (2,) + x.shape (one of x.shape without)."""
    axes = tuple(range(x.ndim - k, x.ndim))
    z, g, mean, rstd = _wide(x), _wide(g), stats[..., 0], stats[..., 1]
    with np.errstate(all="ignore"):
        xhat = (z - mean) * rstd
        gy = g if w is None else g * _wide(w)
        dx = rstd * (gy - gy.mean(axis=axes, keepdims=True)
                     - xhat * (gy * xhat).mean(axis=axes, keepdims=True))
    if not weight_grad:
        return dx.astype(x.dtype, copy=False)
    return np.stack([dx, g * xhat]).astype(np.float32 if x.dtype != np.float64 else x.dtype)


def _rows(x, axis):
    """x (class axis `axis`) as [rows, C]: a view or copy with the class axis last."""
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])


def _ce_parts(x, t, w, axis, ignore_index):
    """Per row: z = float logits [rows, C], the valid mask, the safe targets, w[t] (0 where
    ignored), the log-sum-exp (kept) and sum_c w_c (1 per class without weights)."""
    z = _wide(_rows(x, axis))
    t = t.reshape(-1)
    valid = t != ignore_index
    safe = np.where(valid, t, 0)
    wc = np.ones(z.shape[1], z.dtype) if w is None else _wide(w)
    wt = np.where(valid, wc[safe], 0)
    return z, valid, safe, wt, wc


def _cross_entropy_host(x, t, w, axis, ignore_index, smoothing, reduction):
    """(loss, sum of w[t] over the rows not ignored): loss per row of t's shape ("none") or
    reduced; float32 (float64) in x's dtype."""
    z, valid, safe, wt, wc = _ce_parts(x, t, w, axis, ignore_index)
    with np.errstate(all="ignore"):
        # lse - z as (m - z) + log s: m + log s rounds to m where |m| > 2^24 log s (a row of
        # equal 1e30 logits would lose its log n), m - z is exact where z is near m
        m, log_s = _stats(z, 1) if z.shape[0] else (np.zeros((0, 1), z.dtype),) * 2
        loss = wt * ((m[:, 0] - z[np.arange(z.shape[0]), safe]) + log_s[:, 0]) * (1 - smoothing)
        if smoothing:
            loss += smoothing / z.shape[1] * ((m - z) @ wc + wc.sum() * log_s[:, 0])
        loss = np.where(valid, loss, 0)
        total = np.asarray(wt.sum(), z.dtype)
        if reduction == "mean":
            loss = loss.sum() / total
        elif reduction == "sum":
            loss = loss.sum()
        else:
            loss = loss.reshape(t.shape)
    return np.asarray(loss, z.dtype).astype(x.dtype, copy=False), total


def _cross_entropy_backward_host(x, t, w, g, total, axis, ignore_index, smoothing, reduction):
    z, valid, safe, wt, wc = _ce_parts(x, t, w, axis, ignore_index)
    with np.errstate(all="ignore"):
        # softmax as exp(z - m) / sum, not exp(z - lse): lse = m + log(sum) loses the log to
        # rounding where |m| > 2^24 log(sum), and the probabilities then sum to more than 1
        p = _softmax_host(z, 1)
        g = _wide(g)
        scale = g.reshape(-1) if reduction == "none" else np.full(z.shape[0], g / total
                                                                 if reduction == "mean" else g)
        d = p * ((1 - smoothing) * wt)[:, None]
        d[np.arange(z.shape[0]), safe] -= (1 - smoothing) * wt
        if smoothing:
            d += smoothing / z.shape[1] * (p * wc.sum() - wc)
        d *= np.where(valid, scale, 0)[:, None]
        d[~valid] = 0
    shape = [n for i, n in enumerate(x.shape) if i != axis] + [x.shape[axis]]
    return np.moveaxis(d.reshape(shape), -1, axis).astype(x.dtype)


# ---- Vulkan --------------------------------------------------------------------------------------
def threads_per_row(backend, n, rows, inner):
    """GROUP for rows of n elements: about 8 elements a thread, a power of two up to the
    workgroup; 1 where rows are strided (inner > 1) and many, so neighbouring threads read
    neighbouring elements; with subgroups, 1 or at least the subgroup size."""
    if inner > 1 and rows >= WG:
        return 1
    group = 1
    while group < min(-(-n // 8), WG):
        group *= 2
    size = backend.subgroups
    return size if size and 1 < group < size else group


def _operand(a, default):
    """(start, dtype code) of an optional operand: DT_IMM with `default`'s bits when absent."""
    return (f32_bits(default), IMM) if a is None else (a.start, a.dtype.code)


def _start(a):
    return 0 if a is None else a.start


def _row_launch(backend, mode, x, out, rows, n, inner, g=None, w=None, b=None, t=None,
                aux=None, side=None, eps=0.0, ignore_index=0, error=0, flags=0, group=None):
    """One dispatch of rownorm.comp's `mode` over `rows` rows of n elements (stride inner)."""
    if n > MAX_ROW:
        raise ValueError(f"rows of {n} elements are longer than the {MAX_ROW} that one Vulkan "
                         "row kernel handles")
    group = group or threads_per_row(backend, n, rows, inner)
    (w_start, w_dt), (b_start, b_dt) = _operand(w, 1.0), _operand(b, 0.0)
    push = ROWNORM.pack(rows=rows, n=n, inner=inner, x_start=x.start, g_start=_start(g),
                        out_start=out.start, w_start=w_start, b_start=b_start, t_start=_start(t),
                        aux_start=_start(aux), side_start=_start(side), eps=eps,
                        ignore_index=ignore_index, error_code=error)
    spec = ROWNORM.spec(MODE=MODES[mode], GROUP=group, X_DT=x.dtype.code,
                        G_DT=0 if g is None else g.dtype.code, OUT_DT=out.dtype.code, W_DT=w_dt,
                        B_DT=b_dt, T_DT=0 if t is None else t.dtype.code, FLAGS=flags)
    writes = [out, side] + ([aux] if mode in ("layer_norm", "cross_entropy") else [])
    if t is not None:
        writes.append(backend.staging_range)
    reads = [x, g, w, b, t] + ([] if aux in writes else [aux])
    variant = "_".join(([] if t is None else ["ce"]) + (["subgroup"] if backend.subgroups else []))
    backend.launch("rownorm", variant,
                   -(-rows * group // WG) * WG, push, spec, reads=reads, writes=writes)


def _flat(a):
    return a if a.is_contiguous() else contiguous(a)


def _maybe_flat(a):
    return None if a is None else _flat(a)


def _split(shape, axis):
    """(outer, n, inner) of a contiguous `shape` around `axis` (negative: from the end)."""
    axis %= len(shape)
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])


def _softmax_vulkan(mode):
    def vulkan(backend, x, axis):
        out = backend.empty(x.shape, x.dtype)
        if out.size:
            outer, n, inner = _split(x.shape, axis)
            _row_launch(backend, mode, _flat(x), out, outer * inner, n, inner)
        return out
    return vulkan


def _softmax_backward_vulkan(mode):
    def vulkan(backend, x, g, axis):
        out = backend.empty(x.shape, x.dtype)
        if out.size:
            outer, n, inner = _split(x.shape, axis)
            _row_launch(backend, mode, _flat(x), out, outer * inner, n, inner, g=_flat(g))
        return out
    return vulkan


def _layer_norm_vulkan(backend, x, w, b, k, eps):
    out = backend.empty(x.shape, dtypes.dtype(_layer_norm_dtype(x, w, b)))
    stats = backend.empty(x.shape[:x.ndim - k] + (1,) * k + (2,), dtypes.float32)
    rows, n = prod(x.shape[:x.ndim - k]), prod(x.shape[x.ndim - k:])
    if out.size:
        _row_launch(backend, "layer_norm", _flat(x), out, rows, n, 1, w=_maybe_flat(w),
                    b=_maybe_flat(b), aux=stats, eps=eps, flags=FLAGS["stats"])
    return out, stats


def _layer_norm_backward_vulkan(backend, x, w, g, stats, k, weight_grad):
    dtype = dtypes.float32 if weight_grad else x.dtype
    both = backend.empty(((2,) if weight_grad else ()) + x.shape, dtype)
    rows, n = prod(x.shape[:x.ndim - k]), prod(x.shape[x.ndim - k:])
    if x.size:
        out = both.view(x.shape, both.strides[1:], 0) if weight_grad else both
        side = both.view(x.shape, both.strides[1:], x.size) if weight_grad else None
        _row_launch(backend, "layer_norm_back", _flat(x), out, rows, n, 1, g=_flat(g),
                    w=_maybe_flat(w), aux=stats, side=side,
                    flags=FLAGS["gxhat"] if weight_grad else 0)
    return both


def _ce_flags(smoothing, reduction):
    return ((FLAGS["smooth"] if smoothing else 0) | (FLAGS["mean"] if reduction == "mean" else 0)
            | (FLAGS["none"] if reduction == "none" else 0))


def _cross_entropy_vulkan(backend, x, t, w, axis, ignore_index, smoothing, reduction):
    outer, c, inner = _split(x.shape, axis)
    rows = outer * inner
    out = backend.empty(t.shape if reduction == "none" else (), x.dtype)
    total = backend.empty((), dtypes.float32)
    code = backend.error_code("cross_entropy")
    pairs = None if reduction == "none" else backend.empty((max(rows, 1), 2), dtypes.float32)
    args = dict(t=_flat(t), w=_maybe_flat(w), eps=smoothing, ignore_index=ignore_index,
                error=code, flags=_ce_flags(smoothing, reduction))
    if rows:
        _row_launch(backend, "cross_entropy", _flat(x), out, rows, c, inner, aux=pairs, **args)
    if pairs is not None:  # the rows added up (no rows: 0, and "mean" 0 / 0)
        _row_launch(backend, "ce_finish", pairs, out, 1, rows, 1, aux=pairs, side=total,
                    flags=args["flags"], group=WG)
    return out, total


def _cross_entropy_backward_vulkan(backend, x, t, w, g, total, axis, ignore_index, smoothing,
                                   reduction):
    outer, c, inner = _split(x.shape, axis)
    out = backend.empty(x.shape, x.dtype)
    if out.size:
        _row_launch(backend, "ce_back", _flat(x), out, outer * inner, c, inner, g=_flat(g),
                    t=_flat(t), w=_maybe_flat(w), aux=total, eps=smoothing,
                    ignore_index=ignore_index, error=backend.error_code("cross_entropy"),
                    flags=_ce_flags(smoothing, reduction))
    return out


# ---- backward rules --------------------------------------------------------------------------
def _softmax(x, axis):
    return apply(OPS["softmax"], x, axis=axis)


def _softmax_backward(x, g, axis):
    return apply(OPS["softmax_backward"], x, g, axis=axis)


def _softmax_vjp(ctx, g):
    return (_softmax_backward(ctx.inputs[0], g, ctx.params["axis"]),)


def _log_softmax_vjp(ctx, g):
    return (apply(OPS["log_softmax_backward"], ctx.inputs[0], g, **ctx.params),)


def _softmax_backward_vjp(ctx, h):
    """out = p (g - sum g p): dg = p (h - sum h p), the same op on h; dx = softmax_backward of
    the gradient through p, h (g - sum g p) - g sum h p."""
    from ..tensor import _widen
    (x, g), axis = ctx.inputs, ctx.params["axis"]
    p, g, h = _softmax(_widen(x), axis), _widen(g), _widen(h)
    dx = _softmax_backward(x, h * (g - (g * p).sum(axis=axis, keepdims=True))
                           - g * (h * p).sum(axis=axis, keepdims=True), axis) \
        if ctx.needs_input_grad[0] else None
    return dx, _softmax_backward(x, h, axis) if ctx.needs_input_grad[1] else None


def _log_softmax_backward_vjp(ctx, h):
    """out = g - p sum g: dg = h - sum h p (broadcast), dx = softmax_backward(x, -h sum g)."""
    from ..tensor import _widen
    (x, g), axis = ctx.inputs, ctx.params["axis"]
    g, h = _widen(g), _widen(h)
    dx = _softmax_backward(x, -h * g.sum(axis=axis, keepdims=True), axis) \
        if ctx.needs_input_grad[0] else None
    dg = h - (h * _softmax(_widen(x), axis)).sum(axis=axis, keepdims=True) \
        if ctx.needs_input_grad[1] else None
    return dx, dg


def _layer_norm_vjp(ctx, g):
    """dx, dw, db; under create_graph in Tensor ops (differentiable again), else one
    layer_norm_backward op and the two sums over the rows."""
    x, w, b = ctx.inputs
    k = ctx.params["k"]
    lead = tuple(range(x.ndim - k))
    if is_grad_enabled():
        from ..tensor import _widen
        axes = tuple(range(x.ndim - k, x.ndim))
        z, g = _widen(x), _widen(g)
        d = z - z.mean(axis=axes, keepdims=True)
        rstd = ((d * d).mean(axis=axes, keepdims=True) + ctx.params["eps"]).rsqrt()
        xhat = d * rstd
        gy = g if w is None else g * _widen(w)
        dx = rstd * (gy - gy.mean(axis=axes, keepdims=True)
                     - xhat * (gy * xhat).mean(axis=axes, keepdims=True))
        gxhat = g * xhat
    else:
        weight_grad = w is not None and ctx.needs_input_grad[1]
        out = apply(OPS["layer_norm_backward"], x, w, g, ctx.stats[0], k=k,
                    weight_grad=weight_grad)
        dx, gxhat = (out[0], out[1]) if weight_grad else (out, None)
    dw = gxhat.sum(axis=lead) if w is not None and ctx.needs_input_grad[1] else None
    db = g.sum(axis=lead) if b is not None and ctx.needs_input_grad[2] else None
    return dx, dw, db


def _cross_entropy_vjp(ctx, g):
    """dx (targets and weights get none: functional.cross_entropy composes the loss when the
    weights require grad); under create_graph in Tensor ops, else one cross_entropy_backward."""
    x, t, w = ctx.inputs
    params = ctx.params
    if not is_grad_enabled():
        return (apply(OPS["cross_entropy_backward"], x, t, w, g, ctx.stats[0], **params),
                None, None)
    from ..creation import arange
    from ..tensor import _widen, where
    from .indexing import take
    axis, s, reduction = params["axis"], params["smoothing"], params["reduction"]
    c, tail = x.shape[axis], (1,) * (x.ndim - axis - 1)
    valid = (t != params["ignore_index"]).expand_dims(axis)
    safe = where(valid, t.expand_dims(axis), 0)
    wc = 1.0 if w is None else _widen(w).reshape((c,) + tail)
    wt = where(valid, 1.0 if w is None else take(_widen(w), safe), 0.0)
    p = _softmax(_widen(x), axis)
    hit = arange(c, device=x.device).reshape((c,) + tail) == safe
    d = (1 - s) * wt * (p - where(hit, 1.0, 0.0))
    if s:
        d = d + s / c * (p * (c if w is None else _widen(w).sum()) - wc)
    scale = _widen(g).expand_dims(axis) if reduction == "none" else _widen(g)
    if reduction == "mean":
        scale = scale / ctx.stats[0]
    return where(valid, d * scale, 0.0), None, None


# ---- the ops ------------------------------------------------------------------------------------
Op("softmax", _softmax_host, _softmax_vulkan("softmax"), vjp=_softmax_vjp)
Op("log_softmax", _log_softmax_host, _softmax_vulkan("log_softmax"), vjp=_log_softmax_vjp)
Op("softmax_backward", _softmax_backward_host, _softmax_backward_vulkan("softmax_back"),
   vjp=_softmax_backward_vjp)
Op("log_softmax_backward", _log_softmax_backward_host,
   _softmax_backward_vulkan("log_softmax_back"), vjp=_log_softmax_backward_vjp)
Op("layer_norm", _layer_norm_host, _layer_norm_vulkan, vjp=_layer_norm_vjp,
   saves=("inputs", "stats"))
Op("layer_norm_backward", _layer_norm_backward_host, _layer_norm_backward_vulkan)
Op("cross_entropy", _cross_entropy_host, _cross_entropy_vulkan, vjp=_cross_entropy_vjp,
   saves=("inputs", "stats"))
Op("cross_entropy_backward", _cross_entropy_backward_host, _cross_entropy_backward_vulkan)
