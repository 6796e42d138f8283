"""Moving data around: concatenate, stack, split, chunk, pad, flip, roll, tile, repeat, diagonal,
diag, meshgrid, and the running ops cumsum, cumprod, cummax, cummin, logcumsumexp.

>>> import vkgrad as vk
>>> a = vk.tensor([[1, 2], [3, 4]], device="vulkan")
>>> vk.concatenate([a, a], axis=1).tolist()
[[1, 2, 1, 2], [3, 4, 3, 4]]
>>> vk.pad(a, 1).shape
(4, 4)
>>> a.cumsum(axis=0).tolist()
[[1, 2], [4, 6]]

Semantics are numpy's (torch's for chunk, cummax, cummin and logcumsumexp, which numpy lacks).
flip, split, chunk, diagonal and meshgrid return views (no copy: flip negates strides, split
slices, diagonal adds two strides, meshgrid broadcasts) and stack concatenates views with a new
axis. The others write one new tensor through shaders/gather.comp (strided copies: one dispatch
per input of concatenate, per piece of roll, one for tile or repeat, two for pad) or
shaders/scan.comp (the running ops: one associative combination per op, in chunks). Integer
cumsum and cumprod wrap at 32 bits (int32, or uint32 for unsigned inputs, where numpy would use
64 bits); floating running ops accumulate in float32 and round once to the input's dtype, on both
backends. cummax/cummin find their indices with a second, integer scan; their values are
gathered at those indices (so the gradient goes there). A 0-d tensor accepts axis 0 and -1.
"""
import itertools
import operator

import numpy as np

from .. import dtypes, layout
from ..tensor import (Tensor, _axes, _check_device_dtype, _narrow, _widen, tensor, tensor_method,
                      where, zeros)
from .elementwise import launch as elementwise_launch
from .indexing import index_add, scan_rows, strided_copy, take, take_along_axis
from .reduce import result_dtype as reduce_dtype
from .registry import OPS, Op, apply


# ---- ops: numpy on the host, strided copies on Vulkan ---------------------------------------
def _concatenate_host(*arrays, axis, dtype):
    return np.concatenate([a.astype(dtype.np_dtype, copy=False) for a in arrays], axis=axis)


def _concatenate_vulkan(backend, *arrays, axis, dtype):
    shape = list(arrays[0].shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    out = backend.empty(shape, dtype)
    at = 0
    for a in arrays:
        strided_copy(a.shape, out.view((), (), at * out.strides[axis]), out.strides, a, a.strides)
        at += a.shape[axis]
    return out


def _pad_host(a, widths, value):
    return np.pad(a, np.asarray(widths, np.intp).reshape(a.ndim, 2),
                  constant_values=np.asarray(value).astype(a.dtype))


def _pad_vulkan(backend, a, widths, value):
    shape = tuple(n + lo + hi for n, (lo, hi) in zip(a.shape, widths))
    out = backend.empty(shape, a.dtype)
    strided_copy(shape, out, out.strides, value, fresh=True)
    inside = sum(lo * s for (lo, _), s in zip(widths, out.strides))
    strided_copy(a.shape, out.view((), (), inside), out.strides, a, a.strides)
    return out


def _diagonal_layout(shape, strides, offset, axis1, axis2):
    """(shape, strides, element offset) of the diagonal view: axis1 and axis2 replaced by one
    last dim of stride strides[axis1] + strides[axis2]."""
    n1, n2 = shape[axis1], shape[axis2]
    length = max(0, min(n1, n2 - offset) if offset >= 0 else min(n1 + offset, n2))
    start = (offset * strides[axis2] if offset >= 0 else -offset * strides[axis1]) if length else 0
    rest = [d for d in range(len(shape)) if d not in (axis1, axis2)]
    return ((*[shape[d] for d in rest], length),
            (*[strides[d] for d in rest], strides[axis1] + strides[axis2]), start)


def _diagonal_host(a, offset, axis1, axis2):
    # numpy's np.diagonal is a read-only view: this one is writable, as torch's and the device's
    shape, strides, _ = _diagonal_layout(a.shape, a.strides, offset, axis1, axis2)
    if not shape[-1]:
        return np.diagonal(a, offset, axis1, axis2)
    key = [slice(None)] * a.ndim
    key[axis1], key[axis2] = slice(max(-offset, 0), None), slice(max(offset, 0), None)
    return np.lib.stride_tricks.as_strided(a[tuple(key)], shape, strides)


def _diagonal_vulkan(backend, a, offset, axis1, axis2):
    shape, strides, start = _diagonal_layout(a.shape, a.strides, offset, axis1, axis2)
    return a.view(shape, strides, a.offset + start)


def _diagonal_vjp(ctx, g):
    # the gradient added back at the diagonal of zeros laid out with axis1, axis2 last
    shape, p = ctx.shapes[0], ctx.params
    rest = [d for d in range(len(shape)) if d not in (p["axis1"], p["axis2"])]
    order = rest + [p["axis1"], p["axis2"]]
    rows = np.arange(g.shape[-1]) + max(-p["offset"], 0)
    z = zeros([shape[d] for d in order], g.dtype, g.device)
    return (index_add(z, (Ellipsis, rows, rows + p["offset"]), g).transpose(
        sorted(range(len(order)), key=order.__getitem__)),)


def _flip_vulkan(backend, a, axes):
    strides, offset = list(a.strides), a.offset
    for d in axes:
        if a.shape[d]:
            offset += (a.shape[d] - 1) * strides[d]
        strides[d] = -strides[d]
    return a.view(a.shape, strides, offset)


def _roll_vulkan(backend, a, shifts):
    """shifts: {axis: shift in [0, n)}. Each shifted axis splits into two runs, so the result is
    2**len(shifts) pieces, each one strided copy."""
    out = backend.empty(a.shape, a.dtype)
    runs = [[(0, 0, n)] if not shifts.get(d) else [(0, shifts[d], n - shifts[d]),
                                                   (n - shifts[d], 0, shifts[d])]
            for d, n in enumerate(a.shape)]
    for piece in itertools.product(*runs):
        src = a.offset + sum(lo * s for (lo, _, _), s in zip(piece, a.strides))
        dst = sum(to * s for (_, to, _), s in zip(piece, out.strides))
        strided_copy([n for _, _, n in piece], out.view((), (), dst), out.strides,
                     a.view((), (), src), a.strides)
    return out


def _tile_vulkan(backend, a, reps):
    # out viewed as (r0, n0, r1, n1, ...) reads a with stride 0 along each repetition dim.
    lead = len(reps) - a.ndim
    shape = (1,) * lead + a.shape
    strides = (0,) * lead + a.strides
    out = backend.empty([r * n for r, n in zip(reps, shape)], a.dtype)
    domain = [x for r, n in zip(reps, shape) for x in (r, n)]
    src = [x for s in strides for x in (0, s)]
    strided_copy(domain, out, layout.contiguous_strides(domain), a, src, fresh=True)
    return out


def _repeat_vulkan(backend, a, repeats, axis):
    # out viewed as (..., n, repeats, ...) reads a with stride 0 along the repetition dim.
    domain = [*a.shape[:axis + 1], repeats, *a.shape[axis + 1:]]
    src = [*a.strides[:axis + 1], 0, *a.strides[axis + 1:]]
    out = backend.empty([n * repeats if d == axis else n for d, n in enumerate(a.shape)],
                        a.dtype)
    strided_copy(domain, out, layout.contiguous_strides(domain), a, src, fresh=True)
    return out


# Running ops along an axis: name -> (scan.comp's combination, numpy's accumulate).
_SCANS = {"cumsum": ("sum", np.cumsum), "cumprod": ("prod", np.cumprod),
          "cummax": ("max", np.maximum.accumulate), "cummin": ("min", np.minimum.accumulate),
          "logcumsumexp": ("logaddexp", np.logaddexp.accumulate)}


def _scan_dtypes(name, dtype):
    """(accumulator, result): floats accumulate in float32 (float64 on the host: itself);
    integers and bools in 32 bits, unsigned ones unsigned. cumsum and cumprod give int32 (uint32)
    for integers and bools, as sum; the others keep the dtype."""
    result = reduce_dtype("sum", dtype) if name in ("cumsum", "cumprod") else dtype
    if dtype.is_floating:
        return (dtypes.float32 if dtype.itemsize <= 4 else dtype), result
    return (dtypes.int32 if dtype.kind == "i" else dtypes.uint32), result


def _scan_host(name):
    def host(a, axis):
        acc, result = _scan_dtypes(name, dtypes.dtype(a.dtype))
        with np.errstate(all="ignore"):
            r = _SCANS[name][1](a.astype(acc.np_dtype), axis=axis)
        return r.astype(result.np_dtype)
    return host


def _scan_vulkan(name):
    def vulkan(backend, a, axis):
        acc, result = _scan_dtypes(name, a.dtype)
        out = backend.empty(a.shape, acc)
        scan_rows(a, out, axis, _SCANS[name][0])
        if result is not acc:
            out = elementwise_launch(backend, "identity", result, a.shape, [out], "float")
        return out
    return vulkan


# ---- public API ----------------------------------------------------------------------------------
def _tensors(items, what):
    items = list(items)
    if not items:
        raise ValueError(f"need at least one tensor to {what}")
    device = next((t.device for t in items if isinstance(t, Tensor)), None)
    return [t if isinstance(t, Tensor) else tensor(t, device=device) for t in items]


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis (numpy's rules; dtypes promote).

    >>> vk.concatenate([vk.ones((2, 3)), vk.zeros((1, 3))]).shape
    (3, 3)
    """
    tensors = _tensors(tensors, "concatenate")
    first = tensors[0]
    if first.ndim == 0:
        raise ValueError("zero-dimensional tensors cannot be concatenated")
    axis = layout.normalize_axis(axis, first.ndim)
    dtype = first.dtype
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != first.ndim:
            raise ValueError(f"concatenate: tensor 0 has {first.ndim} dims (shape {first.shape}) "
                             f"but tensor {i} has {t.ndim} (shape {t.shape})")
        for d in range(first.ndim):
            if d != axis and t.shape[d] != first.shape[d]:
                raise ValueError(f"concatenate along axis {axis}: tensor 0 has shape "
                                 f"{first.shape} but tensor {i} has shape {t.shape} (dim {d} "
                                 "differs)")
        dtype = dtypes.result_type(dtype, t.dtype)
    _check_device_dtype(first.device, dtype)
    return apply(OPS["concatenate"], *tensors, axis=axis, dtype=dtype)


def stack(tensors, axis=0):
    """Join tensors of one shape along a new axis.

    >>> vk.stack([vk.ones(3), vk.zeros(3)], axis=1).shape
    (3, 2)
    """
    tensors = _tensors(tensors, "stack")
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack needs tensors of one shape: tensor 0 has shape "
                             f"{tensors[0].shape} but tensor {i} has shape {t.shape}")
    axis = layout.normalize_axis(axis, tensors[0].ndim + 1)
    return concatenate([t.expand_dims(axis) for t in tensors], axis)


def split(t, indices_or_sections, axis=0):
    """Views of `t` cut along `axis`: into N equal parts (an int), or at the given indices.

    >>> [p.shape for p in vk.split(vk.ones(10), [3, 5])]
    [(3,), (2,), (5,)]
    """
    axis = layout.normalize_axis(axis, t.ndim)
    n = t.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = operator.index(indices_or_sections)
        if sections <= 0 or n % sections:
            raise ValueError(f"split: {n} elements along axis {axis} do not divide into "
                             f"{sections} equal sections")
        cuts = [n // sections * i for i in range(1, sections)]
    else:
        cuts = [operator.index(i) for i in indices_or_sections]
    bounds = [None, *cuts, None]
    lead = (slice(None),) * axis
    return [t[(*lead, slice(lo, hi))] for lo, hi in zip(bounds, bounds[1:])]


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def pad_indices(mode, n, before, after):
    """The source index along an axis of length n of each of the before + n + after elements
    that `pad` makes there in `mode` (not "constant"): element i (from -before) reads
    reflect: i mirrored about the end elements, which are not repeated (period 2(n - 1));
    edge: i clipped to [0, n - 1]; wrap: i mod n. numpy's rules, also for pads longer than n."""
    i = np.arange(-before, n + after)
    if mode == "edge" or (mode == "reflect" and n == 1):
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return i % n
    i %= 2 * (n - 1)
    return np.where(i >= n, 2 * (n - 1) - i, i)


def pad(t, pad_width, mode="constant", constant_values=0):
    """`t` padded: pad_width is numpy's (an int, (before, after), or one (before, after) pair per
    axis). mode (numpy's names): "constant" fills with the scalar `constant_values`; "reflect"
    mirrors about the edge element (not repeated), "edge" repeats the edge element and "wrap"
    continues from the other end (torch's "reflect", "replicate" and "circular"). Those three are
    gathers along each padded axis (take; its backward sums each copy's gradient into its source).

    >>> vk.pad(vk.ones((2, 2)), ((1, 0), (0, 2))).shape
    (3, 4)
    """
    if t.ndim == 0:
        raise ValueError("pad: a 0-d tensor has no axes to pad")
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be one of {_PAD_MODES}, not {mode!r}")
    if not isinstance(constant_values, (int, float, bool, np.number, np.bool_)):
        raise TypeError("pad: constant_values must be a scalar here, not "
                        f"{type(constant_values).__name__}")
    widths = np.asarray(pad_width)
    if widths.size and widths.dtype.kind not in "iu":
        raise TypeError(f"pad: pad_width must hold integers, not {widths.dtype}")
    try:
        widths = np.broadcast_to(widths, (t.ndim, 2))
    except ValueError:
        raise ValueError(f"pad: pad_width of shape {widths.shape} does not fit a tensor of "
                         f"shape {t.shape}: give an int, (before, after), or {t.ndim} such "
                         "pairs") from None
    if (widths < 0).any():
        raise ValueError(f"pad: negative pad widths {widths.tolist()}")
    widths = tuple((int(lo), int(hi)) for lo, hi in widths)
    if mode == "constant":
        return apply(OPS["pad"], t, widths=widths, value=constant_values)
    out = _widen(t)  # bf16: the gradient sums each axis's copies in float32, rounds once
    for axis, (lo, hi) in enumerate(widths):
        if lo or hi:
            if t.shape[axis] == 0:
                raise ValueError(f"pad: mode={mode!r} cannot pad axis {axis} of size 0 (shape "
                                 f"{t.shape})")
            out = take(out, pad_indices(mode, t.shape[axis], lo, hi), axis)
    return _narrow(out, t.dtype)


def flip(t, axis=None):
    """A view of `t` with the order of elements reversed along `axis` (None: every axis)."""
    return apply(OPS["flip"], t, axes=layout.normalize_axes(axis, t.ndim))


def roll(t, shift, axis=None):
    """Elements shifted by `shift` along `axis`, those that fall off one end coming back at the
    other (numpy's np.roll; shift and axis may be tuples; axis None rolls the flattened tensor).

    >>> vk.roll(vk.tensor([1, 2, 3, 4]), 1).tolist()
    [4, 1, 2, 3]
    """
    if axis is None:
        return roll(t.reshape(-1), shift, 0).reshape(t.shape)
    try:
        pairs = np.broadcast(np.asarray(shift), np.asarray(axis))
    except ValueError:
        raise ValueError(f"roll: shift {shift} and axis {axis} do not match") from None
    shifts = {}
    for s, a in pairs:
        a = layout.normalize_axis(a, t.ndim)
        shifts[a] = shifts.get(a, 0) + int(s)
    shifts = {a: s % t.shape[a] for a, s in shifts.items() if t.shape[a]}
    return apply(OPS["roll"], t, shifts={a: s for a, s in shifts.items() if s})


def tile(t, reps):
    """`t` repeated reps[d] times along each dim d (numpy's np.tile: reps and t.shape are padded
    with leading 1s to the same length).

    >>> vk.tile(vk.tensor([1, 2]), (2, 2)).tolist()
    [[1, 2, 1, 2], [1, 2, 1, 2]]
    """
    reps = (reps,) if isinstance(reps, (int, np.integer)) else tuple(reps)
    reps = tuple(operator.index(r) for r in reps)
    if any(r < 0 for r in reps):
        raise ValueError(f"tile: negative repetitions {reps}")
    reps = (1,) * (t.ndim - len(reps)) + reps
    return apply(OPS["tile"], t, reps=reps)


@tensor_method("repeat")
def repeat(t, repeats, axis=None):
    """Each element repeated along `axis` (None: of the flattened tensor): `repeats` times, or
    repeats[i] times for element i (numpy's np.repeat).

    >>> vk.repeat(vk.tensor([1, 2]), 2).tolist()
    [1, 1, 2, 2]
    >>> vk.repeat(vk.tensor([1, 2]), [1, 3]).tolist()
    [1, 2, 2, 2]

    Per-element repeats are host data (a tensor on a device is read back): the result's shape
    depends on them.
    """
    if axis is None:
        t, axis = t.reshape(-1), 0
    axis = layout.normalize_axis(axis, t.ndim)
    counts = np.asarray(repeats.numpy() if isinstance(repeats, Tensor) else repeats)
    if counts.dtype.kind not in "iu" or counts.ndim > 1:
        raise TypeError(f"repeat: repeats must be an int or a 1-d sequence of ints, not "
                        f"{repeats!r}")
    if (counts < 0).any():
        raise ValueError(f"repeat: negative repeats {counts.tolist()}")
    if counts.size == 1:
        return apply(OPS["repeat"], t, repeats=int(counts.reshape(())), axis=axis)
    if counts.size != t.shape[axis]:
        raise ValueError(f"repeat: {counts.size} repeats for {t.shape[axis]} elements along "
                         f"axis {axis} of shape {t.shape}")
    return take(t, np.repeat(np.arange(t.shape[axis]), counts), axis)


@tensor_method("cumsum")
def cumsum(t, axis=None, *, dim=None):
    """Running sums along `axis` (`dim`; None: of the flattened tensor):
    out[..., j] = sum(t[..., :j+1]).

    >>> vk.tensor([1.0, 2.0, 3.0]).cumsum().tolist()
    [1.0, 3.0, 6.0]
    """
    return _scan("cumsum", t, axis if dim is None else dim)


@tensor_method("cumprod")
def cumprod(t, axis=None, *, dim=None):
    """Running products along `axis` (`dim`; None: flattened): out[..., j] = prod(t[..., :j+1]).
    The gradient is torch's, exact also where t has zeros."""
    return _scan("cumprod", t, axis if dim is None else dim)


@tensor_method("logcumsumexp")
def logcumsumexp(t, axis=None, *, dim=None):
    """out[..., j] = log(sum(exp(t[..., :j+1]))) along `axis` (`dim`; None: flattened), combined
    pairwise as max + log1p(exp(min - max)), so nothing overflows. Floating tensors only."""
    if not t.dtype.is_floating:
        raise TypeError(f"logcumsumexp needs a floating tensor, not {t.dtype.name}")
    return _scan("logcumsumexp", t, axis if dim is None else dim)


def _running_extreme(name, t, axis):
    from .sorting import ValuesIndices
    from ..creation import arange
    t, axis, shape = _scan_axis(t, axis)
    v = apply(OPS[name], t, axis=axis)
    # the index of the running extreme at j is the last i <= j where t attains it (t[i] equals
    # the running value there), or the last NaN (torch's rule): a running max of such i
    hit = t == v
    if t.dtype.is_floating:
        hit = hit | t.isnan()
    at = arange(t.shape[axis], dtype=dtypes.int32, device=t.device).reshape(
        [-1 if d == axis else 1 for d in range(t.ndim)])
    indices = apply(OPS["cummax"], where(hit, at, 0), axis=axis)
    return ValuesIndices(take_along_axis(t, indices, axis).reshape(shape), indices.reshape(shape))


@tensor_method("cummax")
def cummax(t, axis=None, *, dim=None):
    """torch's cummax: (values, indices) with values[..., j] = max(t[..., :j+1]) along `axis`
    (`dim`; None: flattened) and indices where they were found: among equal values the last,
    and NaN, once met, stays (the last NaN's index). The gradient goes to those indices."""
    return _running_extreme("cummax", t, axis if dim is None else dim)


@tensor_method("cummin")
def cummin(t, axis=None, *, dim=None):
    """torch's cummin: as cummax, with the running minimum."""
    return _running_extreme("cummin", t, axis if dim is None else dim)


def _scan(name, t, axis):
    t, axis, shape = _scan_axis(t, axis)
    return apply(OPS[name], t, axis=axis).reshape(shape)


def _scan_axis(t, axis):
    """(t as at least 1-d, its axis, the result's shape) for a running op along `axis`: None
    scans the flattened tensor; a 0-d tensor accepts axis 0 and -1 (as torch and numpy)."""
    if axis is None:
        return t.reshape(-1), 0, (t.size,)
    if t.ndim == 0:
        _axes(axis, 0)
        return t.reshape(1), 0, ()
    return t, layout.normalize_axis(axis, t.ndim), t.shape


def squeeze(t, axis=None):
    """numpy's np.squeeze: `t` without its size-1 dims among `axis` (None: all of them); a named
    axis whose size is not 1 raises ValueError. (The method t.squeeze(dim) follows torch
    instead and leaves such a dim as it is.)"""
    return t.squeeze(axis, strict=True)


@tensor_method("chunk")
def chunk(t, chunks, dim=0):
    """torch's chunk: views of `t` cut along `dim` into pieces of ceil(n / chunks) elements (the
    last one shorter), so there may be fewer than `chunks` pieces.

    >>> [p.shape for p in vk.ones(5).chunk(3)]
    [(2,), (2,), (1,)]
    """
    chunks = operator.index(chunks)
    if chunks <= 0:
        raise ValueError(f"chunk: chunks must be positive, not {chunks}")
    dim = layout.normalize_axis(dim, t.ndim)
    n = t.shape[dim]
    step = max(-(-n // chunks), 1)
    return split(t, list(range(step, n, step)), dim)


@tensor_method("diagonal")
def diagonal(t, offset=0, axis1=0, axis2=1):
    """A view of the diagonal out[..., i] = t[..., i, i + offset] (numpy's np.diagonal, torch's
    diagonal with dim1/dim2 as axis1/axis2): axis1 and axis2 are removed and the diagonal is the
    last dim. offset > 0 is above the main diagonal, < 0 below."""
    offset = operator.index(offset)
    a1, a2 = layout.normalize_axis(axis1, t.ndim), layout.normalize_axis(axis2, t.ndim)
    if a1 == a2:
        raise ValueError(f"diagonal: axis1 and axis2 are both {a1}")
    return apply(OPS["diagonal"], t, offset=offset, axis1=a1, axis2=a2)


def diag(t, k=0):
    """numpy's and torch's diag: of a 1-D `t`, the square matrix with `t` on its k-th diagonal
    (zeros elsewhere); of a 2-D `t`, a copy of its k-th diagonal."""
    k = operator.index(k)
    if t.ndim == 2:
        return diagonal(t, k).contiguous()
    if t.ndim != 1:
        raise ValueError(f"diag needs a 1-D or 2-D tensor, not shape {t.shape}")
    n = t.shape[0]
    rows = np.arange(n) + max(-k, 0)
    return index_add(zeros((n + abs(k),) * 2, t.dtype, t.device), (rows, rows + k), t)


def meshgrid(*tensors, indexing="xy"):
    """numpy's meshgrid (also torch's with indexing="ij", torch's default): views of the 1-D
    `tensors` broadcast to one grid; with indexing="xy" (numpy's default) the first two dims are
    swapped, so that x varies along columns."""
    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', not {indexing!r}")
    tensors = _tensors(tensors, "meshgrid") if tensors else []
    for i, t in enumerate(tensors):
        if t.ndim != 1:
            raise ValueError(f"meshgrid needs 1-D tensors, but tensor {i} has shape {t.shape}")
    shape = [t.shape[0] for t in tensors]
    dims = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) > 1:
        shape[0], shape[1], dims[0], dims[1] = shape[1], shape[0], 1, 0
    return [t.reshape([-1 if d == dims[i] else 1 for d in range(len(tensors))]).broadcast_to(shape)
            for i, t in enumerate(tensors)]


# ---- backward rules -------------------------------------------------------------------------------
def _concatenate_vjp(ctx, g):
    axis, lead, start, grads = ctx.params["axis"], (slice(None),) * ctx.params["axis"], 0, []
    for shape, need in zip(ctx.shapes, ctx.needs_input_grad):
        grads.append(g[(*lead, slice(start, start + shape[axis]))] if need else None)
        start += shape[axis]
    return tuple(grads)


def _pad_vjp(ctx, g):
    return (g[tuple(slice(lo, lo + n) for (lo, _), n in zip(ctx.params["widths"],
                                                           ctx.shapes[0]))],)


def _roll_vjp(ctx, g):
    shape = ctx.shapes[0]
    return (apply(OPS["roll"], g, shifts={a: -s % shape[a] for a, s in ctx.params["shifts"].items()}),)


def _tile_vjp(ctx, g):
    # out[(r, i) along each dim] = x[i]: view the gradient as (reps_d, n_d) pairs, sum the reps
    reps = ctx.params["reps"]
    shape = (1,) * (len(reps) - len(ctx.shapes[0])) + ctx.shapes[0]
    pairs = g.reshape([m for r, n in zip(reps, shape) for m in (r, n)])
    return (pairs.sum(axis=tuple(range(0, 2 * len(reps), 2))).reshape(ctx.shapes[0]),)


def _repeat_vjp(ctx, g):
    # out[(i, r) along axis] = x[i]: view the gradient as (n, repeats) there, sum the repeats
    shape, axis, r = ctx.shapes[0], ctx.params["axis"], ctx.params["repeats"]
    return (g.reshape((*shape[:axis], shape[axis], r, *shape[axis + 1:])).sum(axis=axis + 1),)


def _reversed_cumsum(g, axis):
    return flip(cumsum(flip(g, axis), axis), axis)


def _cumsum_vjp(ctx, g):
    # d(out_j)/d(x_i) = 1 for j >= i: the reversed running sum of the gradient
    return (_reversed_cumsum(g, ctx.params["axis"]),)


def _cumprod_vjp(ctx, g):
    """dL/dx_i = sum_{j >= i} g_j prod_{k <= j, k != i} x_k, as torch. Before a row's first
    zero: sum_{j >= i} g_j out_j / x_i. At the first zero z: out_{z-1} times
    sum_{j >= z} g_j prod_{z < k <= j} x_k, which is the reversed running sum of g * q from z on,
    q the running product with x_z read as 1. After it: 0. bf16: computed in float32."""
    axis, dtype = ctx.params["axis"], ctx.inputs[0].dtype
    x, out, g = _widen(ctx.inputs[0]), _widen(ctx.output), _widen(g)
    zeros_so_far = cumsum((x == 0).astype(dtypes.int32), axis)
    before, first = zeros_so_far == 0, (x == 0) & (zeros_so_far == 1)
    q = cumprod(where(first, 1.0, x), axis)
    at_zero = _reversed_cumsum(where(zeros_so_far > 0, g * q, 0.0), axis)
    grad = where(before, _reversed_cumsum(g * out, axis) / where(before, x, 1.0),
                 where(first, at_zero, 0.0))
    return (_narrow(grad, dtype),)


def _logcumsumexp_vjp(ctx, g):
    """dL/dx_i = sum_{j >= i} g_j exp(x_i - out_j), in log space as torch: the positive and the
    negative parts of g each through a reversed logcumsumexp, so nothing overflows (their
    difference cancels digits where both parts are large, as in torch)."""
    axis, dtype = ctx.params["axis"], ctx.inputs[0].dtype
    x, out, g = _widen(ctx.inputs[0]), _widen(ctx.output), _widen(g)
    ninf = float("-inf")

    def part(h):  # sum_{j >= i} h_j exp(x_i - out_j) for h >= 0
        logs = where(h > 0, where(h > 0, h, 1.0).log() - out, ninf)
        return (x + flip(logcumsumexp(flip(logs, axis), axis), axis)).exp()
    return (_narrow(part(where(g > 0, g, 0.0)) - part(where(g < 0, -g, 0.0)), dtype),)


# ---- the op table --------------------------------------------------------------------------------
Op("concatenate", _concatenate_host, _concatenate_vulkan, vjp=_concatenate_vjp, saves=())
Op("pad", _pad_host, _pad_vulkan, vjp=_pad_vjp, saves=())
Op("flip", lambda a, axes: np.flip(a, axes), _flip_vulkan, saves=(),
   vjp=lambda ctx, g: (flip(g, ctx.params["axes"]),))
Op("roll", lambda a, shifts: np.roll(a, tuple(shifts.values()), tuple(shifts)) if shifts
   else a.copy(), _roll_vulkan, vjp=_roll_vjp, saves=())
Op("tile", lambda a, reps: np.tile(a, reps), _tile_vulkan, vjp=_tile_vjp, saves=())
Op("repeat", lambda a, repeats, axis: np.repeat(a, repeats, axis), _repeat_vulkan,
   vjp=_repeat_vjp, saves=())
Op("cumsum", _scan_host("cumsum"), _scan_vulkan("cumsum"), vjp=_cumsum_vjp, saves=())
Op("cumprod", _scan_host("cumprod"), _scan_vulkan("cumprod"), vjp=_cumprod_vjp,
   saves=("inputs", "output"))
for _name in ("cummax", "cummin"):
    Op(_name, _scan_host(_name), _scan_vulkan(_name))
Op("logcumsumexp", _scan_host("logcumsumexp"), _scan_vulkan("logcumsumexp"),
   vjp=_logcumsumexp_vjp, saves=("inputs", "output"))
Op("diagonal", _diagonal_host, _diagonal_vulkan, vjp=_diagonal_vjp, saves=())
