"""Reductions over axes: sum, prod, max, min, argmax, argmin, any, all (and mean via a scale).

The device runs shaders/reduce.comp, which reads strided views in place. Floating reductions
accumulate in float32 on both backends, so bf16 sums do not lose precision as they grow.
"""
from math import isqrt, prod

import numpy as np

from .. import dtypes, kernels, layout
from ..kernels import f32_bits
from .registry import Op

REDUCE = kernels.LAYOUTS["reduce"]
MAXD = REDUCE.MAXD  # kept dims and reduced dims reduce.comp describes, each (after coalescing)
MAX_GROUP = REDUCE.workgroup  # threads cooperating on one output
ELEMENTS_PER_THREAD = 16       # what a thread reduces alone before the group combines (at most)
ITERATIONS_PER_THREAD = 4096   # a thread's loop stays this short (lavapipe stops at 65,535)
TWO_PASS_ABOVE = 1 << 16       # longer reductions go in two passes (see _two_pass)


def result_dtype(name, dtype):
    if name in ("argmax", "argmin"):
        return dtypes.int32
    if name in ("any", "all"):
        return dtypes.bool_
    if name in ("sum", "prod", "mean") and not dtype.is_floating:
        return dtypes.float32 if name == "mean" else (
            dtypes.uint32 if dtype.kind == "u" else dtypes.int32)
    return dtype


_NUMPY = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min, "any": np.any,
          "all": np.all, "mean": np.mean}


def _host(name):
    def host(a, axes, keepdims):
        out_dtype = result_dtype(name, dtypes.dtype(a.dtype))
        if name in ("argmax", "argmin"):
            return _host_arg(name, a, axes, keepdims)
        if a.size == 0 and name in ("max", "min") and any(a.shape[d] == 0 for d in axes):
            raise ValueError(f"zero-size reduction with {name}, which has no identity")
        acc = a
        if name in ("sum", "prod", "mean"):  # accumulate narrow floats and ints as the device does
            acc = a.astype(np.float32 if dtypes.dtype(a.dtype).is_floating and a.dtype.itemsize < 4
                           else out_dtype.np_dtype, copy=False)
        with np.errstate(all="ignore"):
            r = _NUMPY[name](acc, axis=axes, keepdims=keepdims)
        return np.asarray(r).astype(out_dtype.np_dtype, copy=False)
    return host


def _host_arg(name, a, axes, keepdims):
    # numpy's argmax takes one axis: move the reduced axes last and flatten them.
    kept = [d for d in range(a.ndim) if d not in axes]
    if any(a.shape[d] == 0 for d in axes):
        raise ValueError(f"attempt to get {name} of an empty sequence")
    moved = np.transpose(a, kept + list(axes)).reshape([a.shape[d] for d in kept] + [-1])
    r = (np.argmax if name == "argmax" else np.argmin)(moved, axis=-1).astype(np.int32)
    if keepdims:
        r = r.reshape([1 if d in axes else a.shape[d] for d in range(a.ndim)])
    return np.asarray(r)


def _vulkan(name):
    def vulkan(backend, a, axes, keepdims):
        out_dtype = result_dtype(name, a.dtype)
        kept = [d for d in range(a.ndim) if d not in axes]
        out_shape = tuple(a.shape[d] for d in kept)
        n_red = prod(a.shape[d] for d in axes)
        if n_red == 0 and name in ("max", "min", "argmax", "argmin") and prod(out_shape):
            raise ValueError(f"zero-size reduction with {name}, which has no identity")
        out = backend.empty(out_shape, out_dtype)
        if out.size:
            mean_scale = 1.0 / n_red if n_red else float("nan")  # numpy: mean of nothing is NaN
            scale = mean_scale if name == "mean" else 1.0
            if n_red > TWO_PASS_ABOVE:
                _two_pass(backend, name, a, kept, list(axes), out, scale, n_red)
            else:
                launch(backend, name, a, kept, list(axes), out, scale)
        if keepdims:
            shape = tuple(1 if d in axes else a.shape[d] for d in range(a.ndim))
            out = out.view(shape, layout.contiguous_strides(shape), 0)
        return out
    return vulkan


def _two_pass(backend, name, a, kept, axes, out, scale, n_red):
    """A long reduction in two dispatches: the first reduces each row's ~sqrt(n) pieces of
    ~sqrt(n) consecutive elements into float32 (int32) partials, argmax/argmin keeping the
    winners' indices beside them; the second reduces the partials into `out`. A long row so
    spreads over ~sqrt(n) groups of threads (workgroups, on a GPU's many cores) instead of one, a
    thread's loop stays short, a float sum is sequential over only ~sqrt(n)/GROUP elements per
    thread in each pass, and the only workspace is the partials: rows * sqrt(n) words (twice
    that for argmax/argmin)."""
    pieces = isqrt(n_red - 1) + 1
    chunk = -(-n_red // pieces)
    pieces = -(-n_red // chunk)  # no piece empty
    partial = backend.empty((out.size, pieces),
                            dtypes.float32 if a.dtype.is_floating else dtypes.int32)
    index = backend.empty((out.size, pieces), dtypes.int32) \
        if name in ("argmax", "argmin") else None
    launch(backend, name, a, kept, axes, partial, 1.0, chunk, index)
    launch(backend, name, partial, [0], [1], out, scale, index=index)


def threads_per_output(backend, chunk, n_out, out_strides, red_strides, per_word):
    """GROUP, the threads that share one output's `chunk` elements: a power of two near
    chunk / ELEMENTS_PER_THREAD, at most MAX_GROUP and few enough that a workgroup's outputs
    fill whole words of `per_word` outputs; with subgroups, 1 or at least the subgroup size
    (reduce.comp combines whole subgroups). Down columns (outputs adjacent in memory, reduced
    elements apart), with outputs enough to fill a workgroup, one thread each: a workgroup's
    threads then read neighbouring words."""
    if (n_out >= REDUCE.workgroup and chunk <= ITERATIONS_PER_THREAD and out_strides
            and out_strides[-1] == 1 and 1 not in red_strides):
        return 1
    group, most = 1, min(MAX_GROUP, REDUCE.workgroup // per_word)
    while group < min(-(-chunk // ELEMENTS_PER_THREAD), most):
        group *= 2
    size = backend.subgroups
    if size and 1 < group < size:
        group = size if size <= most else 1
    return group


def launch(backend, name, a, kept, axes, out, scale, chunk=None, index=None):
    """Reduce the `axes` of `a` into `out` (the `kept` axes, contiguous), times `scale`. With
    `chunk`, the first pass of _two_pass: `out` is (rows, pieces), piece j of a row reducing
    its elements [j * chunk, (j + 1) * chunk). `index`: the int32 (rows, pieces) indices of an
    argmax/argmin in two passes, written by the first pass and read by the second."""
    out_shape, (out_strides,) = layout.coalesce([a.shape[d] for d in kept],
                                                [a.strides[d] for d in kept])
    red_shape, (red_strides,) = layout.coalesce([a.shape[d] for d in axes],
                                                [a.strides[d] for d in axes])
    if len(out_shape) > MAXD or len(red_shape) > MAXD:
        # Move the reduced axes last and copy: both sides then coalesce to one dimension.
        from .elementwise import contiguous
        moved = contiguous(a.view([a.shape[d] for d in kept + axes],
                                  [a.strides[d] for d in kept + axes], a.offset))
        k = len(kept)
        return launch(backend, name, moved, list(range(k)), list(range(k, moved.ndim)), out,
                      scale, chunk, index)
    n_red = prod(red_shape) if axes else 1
    stage = 0 if index is None else (2 if chunk is None else 1)  # as reduce.comp's STAGE
    pieces, chunk = (1, n_red) if chunk is None else (-(-n_red // chunk), chunk)
    group = threads_per_output(backend, chunk, out.size, out_strides, red_strides,
                               out.dtype.per_word)
    per_group = REDUCE.workgroup // group
    n_out = out.size
    code = kernels.REDUCE_CODES["sum" if name == "mean" else name]
    push = REDUCE.pack(n_out=n_out, n_red=n_red, out_start=out.start, a_start=a.start,
                       scale_bits=f32_bits(scale), ndim_out=len(out_shape), out_shape=out_shape,
                       out_strides=out_strides, red_shape=red_shape, red_strides=red_strides,
                       pieces=pieces, chunk=chunk, idx_start=0 if index is None else index.start)
    domain = "float" if a.dtype.is_floating else "int"
    variant = domain + ("_subgroup" if backend.subgroups else "")
    backend.launch("reduce", variant, -(-n_out // per_group) * REDUCE.workgroup, push,
                   REDUCE.spec(OP=code, OUT_DT=out.dtype.code, A_DT=a.dtype.code, GROUP=group,
                               STAGE=stage, RED_DIMS=len(red_shape)),
                   reads=[a], writes=[out, index])


# ---- backward rules ------------------------------------------------------------------------------
def _kept(ctx, t):
    """A reduced result (gradient or output) with its reduced axes back as size 1."""
    if ctx.params["keepdims"]:
        return t
    shape = ctx.shapes[0]
    return t.reshape([1 if d in ctx.params["axes"] else n for d, n in enumerate(shape)])


def _sum_vjp(ctx, g):
    return (_kept(ctx, g).broadcast_to(ctx.shapes[0]),)


def _mean_vjp(ctx, g):
    n = prod(ctx.shapes[0][d] for d in ctx.params["axes"])
    return ((_kept(ctx, g) / n).broadcast_to(ctx.shapes[0]),)


def _prod_vjp(ctx, g):
    """d(prod x)/dx_i is the product of the other elements: prod(x) / x_i where x_i != 0; at a
    zero, the product p of the nonzero elements if it is the only zero, else 0 (as torch). At a
    zero beside exactly one other, p * (s - x_i), s the sum of the zeros: 0, but it is the other
    zero's value, so second derivatives come out right too. At an infinite or NaN x_i, where
    prod(x) / x_i is inf / inf or NaN, the product of the finite elements if x_i is the only such
    one (0 beside a zero: torch's product of the others), else that NaN. bf16: in float32."""
    from ..tensor import _widen, where
    x, axes = _widen(ctx.inputs[0]), ctx.params["axes"]
    g, out = _widen(_kept(ctx, g)), _widen(_kept(ctx, ctx.output))
    zero = x == 0
    zeros = zero.sum(axis=axes, keepdims=True)
    p = where(zero, 1.0, x).prod(axis=axes, keepdims=True)
    other_zeros = where(zeros == 1, 1.0, where(
        zeros == 2, where(zero, x, 0.0).sum(axis=axes, keepdims=True) - x, 0.0))
    infinite = ~x.isfinite()
    alone = infinite & (infinite.sum(axis=axes, keepdims=True) == 1)
    finite = where(infinite, 1.0, x).prod(axis=axes, keepdims=True)
    return (where(zero, g * p * other_zeros,
                  where(alone, g * finite, g * out / where(zero, 1.0, x))),)


def _extreme_vjp(ctx, g):
    # the gradient goes to the elements equal to the extreme, shared evenly among ties (torch's
    # amax/amin and full max/min); a NaN wins, so where the extreme is NaN it goes to the NaNs
    # (torch's full max/min; its amax gives NaN to the whole slice, a 0/0)
    from ..tensor import where
    x, axes = ctx.inputs[0], ctx.params["axes"]
    hit = (x == _kept(ctx, ctx.output)) | x.isnan()
    share = _kept(ctx, g) / hit.sum(axis=axes, keepdims=True)
    return (where(hit, share, 0.0),)


VJPS = {"sum": (_sum_vjp, ()), "mean": (_mean_vjp, ()), "prod": (_prod_vjp, ("inputs", "output")),
        "max": (_extreme_vjp, ("inputs", "output")), "min": (_extreme_vjp, ("inputs", "output"))}

REDUCTIONS = ("sum", "mean", "prod", "max", "min", "argmax", "argmin", "any", "all")

for _name in REDUCTIONS:
    _vjp, _saves = VJPS.get(_name, (None, ()))
    Op(_name, _host(_name), _vulkan(_name), vjp=_vjp, saves=_saves)
