"""Sorting and selection: argsort, sort, topk, scatter, scatter_reduce, nonzero, masked_select.

>>> import vkgrad as vk
>>> x = vk.tensor([3.0, 1.0, float("nan"), 1.0, -2.0], device="vulkan")
>>> x.argsort().tolist()                     # stable: the two 1.0 keep their order; NaN last
[4, 1, 3, 0, 2]
>>> x.sort(descending=True).values.tolist()  # torch's method: (values, indices); NaN first
[nan, 3.0, 1.0, 1.0, -2.0]
>>> vk.topk(x, 2).indices.tolist()          # the two largest: NaN counts as the largest
[2, 0]

One op does the ordering, `argsort`: stable (equal elements keep their order), NaN sorting above
+inf as in torch (last ascending, first descending), -0 equal to +0. The device runs
shaders/sort.comp, a bitonic network over rows padded to a power of two: one dispatch that writes
(order key, index) pairs, then log2(n) (log2(n) + 1) / 2 compare-exchange dispatches, and no
host synchronisation. Values are gathered with the permutation (take_along_axis), so they are the
input's bits and their gradient is the gather's (added back at the permuted places). Indices are
int32 (torch's are int64).

scatter and scatter_reduce (torch's) write through shaders/gather.comp with the index on the
destination side: plain stores (a repeated index writes one of its values); the combinations
(sum, prod, amax, amin) sort the destinations and combine each one's sources in source order
(shaders/scatter.comp, see indexing.strided_copy), as the host's ufunc.at does, so the result is
the host's bit for bit and the same on every run; index tensors on the device are checked by the
kernel (IndexError at the next synchronisation), host indices before anything runs. mean is a
sum divided by a count.

Host synchronisation: nonzero, Tensor.nonzero and masked_select return as many elements as the
data selects, so they read that count back from the device (a wait); every other op here stays on
the device.
"""
from collections import namedtuple
from math import prod

import numpy as np

from .. import dtypes, kernels, layout
from ..backend.base import Buffer
from ..tensor import Tensor, _axes, _narrow, _widen, ones, tensor_method, where, zeros
from .elementwise import compute_domain, contiguous
from .elementwise import launch as elementwise_launch
from .indexing import _check_index_dtype, checked_index, strided_copy, take_along_axis
from .registry import OPS, Op, apply

SORT = kernels.LAYOUTS["sort"]
MAXD = SORT.MAXD  # row dims that sort.comp describes (after coalescing)

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])  # torch.return_types alike


# ---- the op: host and Vulkan -------------------------------------------------------------------
def _order_keys(a):
    """Unsigned keys whose order is sort.comp's: floats by value with -0 == +0 and NaN largest,
    integers by value."""
    d = dtypes.dtype(a.dtype)
    if d.is_floating:
        f = a.astype(np.float64 if d.itemsize > 4 else np.float32)
        u = np.where(f == 0, 0, f).astype(f.dtype).view(np.uint64 if d.itemsize > 4
                                                          else np.uint32)
        sign = u.dtype.type(1) << u.dtype.type(8 * u.dtype.itemsize - 1)
        keys = np.where(u & sign, ~u, u | sign)
        return np.where(np.isnan(f), np.iinfo(u.dtype).max, keys)
    if d.kind == "i":
        return a.astype(np.int32).view(np.uint32) ^ np.uint32(0x80000000)
    return a.astype(np.uint32)


def _argsort_host(a, axis, descending):
    keys = _order_keys(a)
    return np.argsort(~keys if descending else keys, axis=axis, kind="stable").astype(np.int32)


def _argsort_vulkan(backend, a, axis, descending):
    n = a.shape[axis]
    rest = [d for d in range(a.ndim) if d != axis]
    row_shape = [a.shape[d] for d in rest]
    shape, (strides,) = layout.coalesce(row_shape, [a.strides[d] for d in rest])
    if len(shape) > MAXD:
        return _argsort_vulkan(backend, contiguous(a), axis, descending)
    rows = prod(row_shape)
    if rows * n == 0:
        return backend.empty(a.shape, dtypes.int32)
    pow2 = 1 << (n - 1).bit_length()
    keys = backend.empty((rows * pow2,), dtypes.uint32)
    index = backend.empty((rows * pow2,), dtypes.int32)
    push = lambda k, j: SORT.pack(  # noqa: E731
        len=n, rows=rows, pow2=pow2, ndim=len(shape), src_start=a.start,
        src_step=a.strides[axis], keys_start=keys.start, index_start=index.start, k=k, j=j,
        descending=int(descending), shape=shape, src_strides=strides)
    spec = lambda phase: SORT.spec(PHASE=kernels.SORT_CODES[phase], SRC_DT=a.dtype.code)  # noqa: E731
    backend.launch("sort", "", rows * pow2, push(0, 0), spec("SORT_INIT"),
                   reads=[a], writes=[keys, index])
    k = 2
    while k <= pow2:
        j = k // 2
        while j:
            backend.launch("sort", "", rows * pow2, push(k, j), spec("SORT_STEP"),
                           writes=[keys, index])
            j //= 2
        k *= 2
    # the first n slots of each padded row, with the sorted axis back in its place
    row_strides = [s * pow2 for s in layout.contiguous_strides(row_shape)]
    out_strides = list(row_strides)
    out_strides.insert(axis, 1)
    return index.view(a.shape, out_strides, index.offset)


# ---- public API ----------------------------------------------------------------------------------
def _sort_axis(t, axis, dim):
    """(t as at least 1-d, its axis, the result's shape): `dim` is torch's name for `axis`; a
    0-d tensor accepts axis 0 and -1."""
    axis = axis if dim is None else dim
    if t.ndim == 0:
        _axes(axis, 0)
        return t.reshape(1), 0, ()
    return t, layout.normalize_axis(axis, t.ndim), t.shape


@tensor_method("argsort")
def argsort(t, axis=-1, descending=False, *, dim=None, stable=True):
    """Indices (int32) that sort `t` along `axis` (`dim`): numpy's np.argsort and torch's
    argsort. Always stable (equal elements keep their order; `stable` is accepted for torch's
    signature). NaN sorts above +inf (last; first when `descending`), as torch."""
    t, axis, shape = _sort_axis(t, axis, dim)
    return apply(OPS["argsort"], t, axis=axis, descending=bool(descending)).reshape(shape)


def _sort(t, axis=-1, descending=False, *, dim=None, stable=True):
    """torch's sort: (values, indices) of `t` sorted along `axis` (`dim`), stable, NaN as in
    argsort. The values' gradient goes back to the places they came from."""
    indices = argsort(t, axis, descending, dim=dim)
    t1, a, shape = _sort_axis(t, axis, dim)
    return ValuesIndices(take_along_axis(t1, indices.reshape(t1.shape), a).reshape(shape), indices)


def sort(t, axis=-1, descending=False, *, dim=None, stable=True):
    """numpy's np.sort: the values of `t` sorted along `axis` (`dim`), stable, NaN last (first
    when `descending`). The method t.sort() is torch's and returns (values, indices)."""
    return _sort(t, axis, descending, dim=dim).values


tensor_method("sort")(_sort)


@tensor_method("topk")
def topk(t, k, dim=-1, largest=True, sorted=True):
    """torch's topk: (values, indices) of the k largest (`largest`) or smallest elements along
    `dim`, in sorted order (`sorted` is accepted; the result is always sorted). Ties keep their
    order (the earlier index first); NaN counts as the largest. Costs a full sort of each row."""
    t1, axis, _ = _sort_axis(t, dim, None)
    n = t1.shape[axis]
    if not 0 <= k <= n:
        raise ValueError(f"topk: k={k} is out of range for dim {axis} of size {n}")
    values, indices = _sort(t1, axis, largest)
    key = (slice(None),) * axis + (slice(0, k),)
    if t.ndim == 0:
        return ValuesIndices(values[key].reshape(()), indices[key].reshape(()))
    return ValuesIndices(values[key], indices[key])


# ---- scatter: the other way round from take_along_axis ------------------------------------------
_COMBINE = {"sum": "add", "prod": "mul", "amax": "max", "amin": "min"}


def _identity(reduce, dtype):
    """The value that leaves `reduce` unchanged, for include_self=False."""
    if reduce in ("sum", "prod"):
        return 0 if reduce == "sum" else 1
    if dtype.is_floating:
        return float("-inf") if reduce == "amax" else float("inf")
    info = np.iinfo(dtype.np_dtype)
    return int(info.min if reduce == "amax" else info.max)


def _host_key(index, axis):
    """numpy's key for out[i..., index[i..., j, k...], k...] over index's shape."""
    key = list(np.indices(index.shape, sparse=True))
    key[axis] = index.astype(np.intp)
    return tuple(key)


def _scatter_host(a, index, src, axis):
    out = a.copy()
    out[_host_key(index, axis)] = src
    return out


def _scatter_reduce_host(a, index, src, axis, reduce, include_self):
    d = dtypes.dtype(a.dtype)
    acc = np.float32 if d.is_floating and d.itemsize < 4 else a.dtype  # bf16: round once
    out, key = a.astype(acc), _host_key(index, axis)
    if not include_self:
        out[key] = _identity(reduce, d)
    ufunc = {"sum": np.add, "prod": np.multiply, "amax": np.maximum, "amin": np.minimum}[reduce]
    with np.errstate(all="ignore"):
        ufunc.at(out, key, np.asarray(src).astype(acc))
    return out.astype(a.dtype)


def _scatter_into(out, index, src, axis, combine, caller):
    """Queue out[i..., index[i..., j, k...], k...] = src[i..., j, k...] (combined by `combine`:
    "add", "mul", "max", "min"; src may be a scalar) over index's shape; gather.comp checks
    the indices, in [0, n)."""
    dst_strides = [0 if d == axis else s for d, s in enumerate(out.strides)]
    strided_copy(index.shape, out, dst_strides, src,
                 src.strides if isinstance(src, Buffer) else None,
                 index=(index, index.strides, out.shape[axis], out.strides[axis], "dst"),
                 add=combine == "add", combine=combine if combine != "add" else None,
                 check=caller, wrap=False)


def _scatter_vulkan(backend, a, index, src, axis):
    out = elementwise_launch(backend, "identity", a.dtype, a.shape, [a], compute_domain(a.dtype))
    _scatter_into(out, index, src, axis, None, "scatter")
    return out


def _scatter_reduce_vulkan(backend, a, index, src, axis, reduce, include_self):
    acc = dtypes.float32 if a.dtype is dtypes.bfloat16 else a.dtype  # bf16: round once
    out = elementwise_launch(backend, "identity", acc, a.shape, [a], compute_domain(acc))
    if not include_self:
        _scatter_into(out, index, _identity(reduce, a.dtype), axis, None, "scatter_reduce")
    _scatter_into(out, index, src, axis, _COMBINE[reduce], "scatter_reduce")
    if acc is not a.dtype:
        out = elementwise_launch(backend, "identity", a.dtype, a.shape, [out], "float")
    return out


def _scatter_args(name, t, dim, index, src):
    """(axis, index on t's device, src cut to index's shape): torch's rules, checked."""
    axis = layout.normalize_axis(dim, max(t.ndim, 1))
    index = checked_index(index, t.device, 0, t.shape[axis] if t.ndim else 1, name,
                          f"dim {axis}")
    _check_index_dtype(index.dtype)
    if index.dtype.kind == "b":
        raise IndexError(f"{name} needs integer indices, not {index.dtype.name}")
    if index.ndim != t.ndim:
        raise ValueError(f"{name}: index of shape {index.shape} needs as many dims as the "
                         f"tensor of shape {t.shape}")
    for d, (m, n) in enumerate(zip(index.shape, t.shape)):
        if d != axis and m > n:
            raise ValueError(f"{name}: index of shape {index.shape} is larger than the tensor "
                             f"of shape {t.shape} in dim {d}")
    if t.ndim and t.shape[axis] == 0 and index.size:
        raise IndexError(f"{name}: cannot scatter into dim {axis} of size 0")
    if isinstance(src, Tensor):
        if src.dtype is not t.dtype:
            raise TypeError(f"{name}: src of dtype {src.dtype.name} for a tensor of dtype "
                            f"{t.dtype.name} (torch's rule: they must match)")
        if src.ndim != index.ndim or any(m > n for m, n in zip(index.shape, src.shape)):
            raise ValueError(f"{name}: index of shape {index.shape} does not fit in src of "
                             f"shape {src.shape}")
        src = src[tuple(slice(0, m) for m in index.shape)]
    elif not isinstance(src, (int, float, bool, np.number, np.bool_)):
        raise TypeError(f"{name}: src must be a tensor or a scalar, not {type(src).__name__}")
    return axis, index, src


@tensor_method("scatter")
def scatter(t, dim, index, src=None, *, value=None):
    """torch's scatter: a copy of `t` with out[i][index[i][j][k]][k] = src[i][j][k] (for
    dim=1; likewise for any dim) over index's shape; `src` (or `value`) may be a scalar.
    Indices must lie in [0, t.shape[dim]); for a repeated index one of the values is written.
    Gradients: to t where nothing was written, to src by gathering at `index`."""
    src = value if src is None else src
    axis, index, src = _scatter_args("scatter", t, dim, index, src)
    return apply(OPS["scatter"], t, index, src, axis=axis)


@tensor_method("scatter_reduce")
def scatter_reduce(t, dim, index, src, reduce, *, include_self=True):
    """torch's scatter_reduce: a copy of `t` where each out[i][index[i][j][k]][k] (dim=1) combines
    the src[i][j][k] scattered there by `reduce` ("sum", "prod", "amax", "amin", "mean"), with the
    element of `t` itself too when `include_self`. Positions nothing is scattered to keep t's
    value. bf16 sums, products and means are computed in float32 and rounded once. Gradients as
    torch's (amax/amin share the gradient evenly among the elements equal to the result; a NaN
    result's among the NaNs, where torch's are NaN)."""
    if reduce not in (*_COMBINE, "mean"):
        raise ValueError(f"scatter_reduce: reduce must be one of {(*_COMBINE, 'mean')}, not "
                         f"{reduce!r}")
    axis, index, src = _scatter_args("scatter_reduce", t, dim, index, src)
    if reduce != "mean":
        return apply(OPS["scatter_reduce"], t, index, src, axis=axis, reduce=reduce,
                     include_self=include_self)
    if not t.dtype.is_floating:
        raise TypeError(f"scatter_reduce: mean needs a floating tensor, not {t.dtype.name}")
    x, s = _widen(t), _widen(src)
    total = scatter_reduce(x, axis, index, s, "sum", include_self=include_self)
    # each src counts 1 (src * 0 + 1 would count NaN for an infinite or NaN src)
    unit = ones(src.shape, x.dtype, t.device) if isinstance(src, Tensor) else 1.0
    count = scatter_reduce(zeros(t.shape, x.dtype, t.device) + float(include_self), axis, index,
                           unit, "sum")
    return _narrow(total / where(count > 0, count, 1.0), t.dtype)


@tensor_method("scatter_add")
def scatter_add(t, dim, index, src):
    """torch's scatter_add: scatter_reduce(t, dim, index, src, "sum")."""
    return scatter_reduce(t, dim, index, src, "sum")


def _gather(t, index, axis):
    """take_along_axis of t's part that index covers (torch's gather: index may be smaller)."""
    box = tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(index.shape))
    return take_along_axis(t[box], index, axis)


def _scattered(like, index, axis):
    """Where scatter writes: a bool tensor of like's shape."""
    return apply(OPS["scatter"], zeros(like.shape, dtypes.float32, like.device), index, 1.0,
                 axis=axis) > 0


def _scatter_vjp(ctx, g):
    _, index, src = ctx.inputs
    axis = ctx.params["axis"]
    ga = apply(OPS["scatter"], g, index, 0.0, axis=axis) if ctx.needs_input_grad[0] else None
    gs = _gather(g, index, axis) if isinstance(src, Tensor) and ctx.needs_input_grad[2] else None
    return ga, None, gs


def _scatter_reduce_vjp(ctx, g):
    """torch's rules: sum passes g (to t only where t takes part); prod divides the product by
    the element, with zeros handled by recomputing the product with that zero read as 1 (a src
    that shares its place with another zero gets 0); amax/amin share g evenly among the
    elements (of t and src) equal to the result, among the NaNs where it is NaN."""
    a, index, src = ctx.inputs
    out, p = ctx.output, ctx.params
    axis, reduce, include_self = p["axis"], p["reduce"], p["include_self"]
    dtype = a.dtype
    a, src, out, g = _widen(a), _widen(src), _widen(out), _widen(g)
    free = _scattered(a, index, axis) if not include_self else None  # t does not take part

    def reduced(base, values, how=reduce, itself=include_self):
        return apply(OPS["scatter_reduce"], base, index, values, axis=axis, reduce=how,
                     include_self=itself)
    if reduce == "sum":
        ga, gs = g, _gather(g, index, axis)
    elif reduce == "prod":
        ma = where(a == 0, 1.0, a)
        ga = g * reduced(ma, src) / ma
        zero = src == 0
        zeros_there = _gather(reduced(zeros(a.shape, a.dtype, a.device), zero.astype(a.dtype),
                                      "sum", True), index, axis)
        single = zero & (zeros_there == 1)
        gs = where(single, _gather(g * reduced(a, where(single, 1.0, src)), index, axis),
                   _gather(g * out, index, axis) / where(zero, 1.0, src))
    else:
        # torch counts t's ties also when include_self=False (t then gets 0); a NaN wins, so a
        # NaN result's gradient goes to the NaNs (torch's 0 / 0 gives all of them NaN)
        hit_a = (a == out) | (a.isnan() & out.isnan())
        hit_src = (src == _gather(out, index, axis)) | src.isnan()
        share = g / reduced(hit_a.astype(a.dtype), hit_src.astype(a.dtype), "sum", True)
        ga, gs = where(hit_a, share, 0.0), where(hit_src, _gather(share, index, axis), 0.0)
    if free is not None:
        ga = where(free, 0.0, ga)
    return (_narrow(ga, dtype) if ctx.needs_input_grad[0] else None, None,
            _narrow(gs, dtype) if ctx.needs_input_grad[2] else None)


# ---- selections whose size is data: they read a count back from the device ----------------------
@tensor_method("masked_select")
def masked_select(t, mask):
    """torch's masked_select: the 1-D tensor of t's elements where `mask` (broadcast with t) is
    true, in row-major order. Synchronises with the host: the result's length is the number of
    true entries, read back from the device (as boolean indexing t[mask])."""
    if not isinstance(mask, Tensor):
        mask = Tensor._wrap(t.device.backend.from_numpy(np.asarray(mask, bool), dtypes.bool_),
                            t.device)
    if mask.dtype is not dtypes.bool_:
        raise TypeError(f"masked_select needs a bool mask, not {mask.dtype.name}")
    shape = layout.broadcast_shapes(t.shape, mask.shape)
    return t.broadcast_to(shape)[mask.broadcast_to(shape)]


def _nonzero_flat(t):
    from ..creation import arange
    return arange(t.size, dtype=dtypes.int32, device=t.device).reshape(t.shape)[t != 0]


def nonzero(t):
    """numpy's np.nonzero: a tuple of int32 index tensors, one per dim, of t's nonzero elements
    in row-major order. Synchronises with the host (the count is read back from the device).
    The method t.nonzero() is torch's: one (count, ndim) tensor."""
    flat, out = _nonzero_flat(t), []
    for d in reversed(range(t.ndim)):
        out.append(flat % t.shape[d])
        flat = flat // t.shape[d]
    return tuple(reversed(out))


def _nonzero_method(t, *, as_tuple=False):
    """torch's Tensor.nonzero: the (count, ndim) int32 indices of t's nonzero elements, row-major
    (as_tuple=True: numpy's tuple, as vk.nonzero). Synchronises with the host."""
    coords = nonzero(t)
    if as_tuple:
        return coords
    if not coords:
        return zeros((int(_nonzero_flat(t).shape[0]), 0), dtypes.int32, t.device)
    from .movement import stack
    return stack(coords, axis=1)


tensor_method("nonzero")(_nonzero_method)


# ---- the op table ------------------------------------------------------------------------------
Op("argsort", _argsort_host, _argsort_vulkan)
Op("scatter", _scatter_host, _scatter_vulkan, vjp=_scatter_vjp, saves=("inputs",))
Op("scatter_reduce", _scatter_reduce_host, _scatter_reduce_vulkan, vjp=_scatter_reduce_vjp,
   saves=("inputs", "output"))
