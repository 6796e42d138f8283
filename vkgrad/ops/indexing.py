"""Indexing beyond views: integer arrays and boolean masks in keys, take, take_along_axis,
one_hot, and writes through any key (x[key] = v, add_at).

>>> import vkgrad as vk
>>> x = vk.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], device="vulkan")
>>> x[[1, 0], 1:].numpy()                 # rows 1 and 0, columns 1 and 2
array([[5., 6.],
       [2., 3.]], dtype=float32)
>>> x[x > 2.5].numpy()
array([3., 4., 5., 6.], dtype=float32)
>>> x[:, [0, 2]] = 0.0                    # in place, values broadcast
>>> vk.one_hot(vk.tensor([2, 0]), 3).numpy()
array([[0., 0., 1.],
       [1., 0., 0.]], dtype=float32)

Keys follow numpy's rules: index arrays (tensors, lists, numpy arrays of ints) broadcast together;
a boolean mask stands for the integer arrays of its true positions; integers count as index arrays
when arrays are present; the broadcast dims replace the indexed dims where the indexed entries are
adjacent in the key, and go first otherwise.

Device side: a read is one dispatch of shaders/gather.comp over the result's shape, reading a
basic-index view of the tensor (slices, ints, None) plus one index term: the element offsets that
the key's index arrays address, summed (on the host for host data; on the device, by gather.comp's
INDEX_VALUE mode, for index tensors there). A write is the same dispatch the other way round.
A mask on the device becomes offsets through shaders/scan.comp, and its count of true entries is
read back to the host, since the result's shape depends on it.

Index checks: indices that are host data (lists, numpy arrays, host tensors) are checked on the
host before anything runs, and one out of range raises IndexError naming the index, the axis and
its size. Index tensors on a Vulkan device are not read back: the kernel that reads them checks
them (negative indices wrap, as numpy's), clamps one out of range into the axis (memory outside
the tensor is never touched) and flags it, and the next host synchronisation (reading a value,
vk.synchronize) raises IndexError naming the op (see vkgrad/backend/vulkan.py).

Repeated indices: x[idx] = v writes one of the values for a repeated index (numpy: the last);
add_at adds them all, in source order (the key's row-major order, as numpy's np.add.at), so a
Vulkan device gives the host's f32 bits and the same bits on every run: no float atomics. On the
device that is a sort of the destinations then one ordered loop per destination (see
_scatter_sorted); index_add, and so the backward of indexing, take, take_along_axis and
embedding, goes the same way.
"""
import operator
from math import prod

import numpy as np

from .. import dtypes, kernels, layout
from ..autograd import check_inplace
from ..backend.base import Buffer
from ..tensor import _ADVANCED, Tensor, _check_device_dtype, tensor, tensor_method, zeros
from .elementwise import cast, contiguous
from .elementwise import launch as elementwise_launch
from .registry import OPS, Op, apply

GATHER = kernels.LAYOUTS["gather"]  # MAXD dims (after coalescing)
SCAN = kernels.LAYOUTS["scan"]  # MAXD row dims (after coalescing)
SCATTER = kernels.LAYOUTS["scatter"]  # KD keyed and FD free dims (after coalescing)
_G = kernels.GATHER_CODES
_S = kernels.SCAN_CODES
_ITEMSIZE = {d.code: d.itemsize for d in dtypes.ALL if d.on_device}


# ---- kernel launchers (movement.py uses them too) -----------------------------------------------
def scalar_bits(value, dtype):
    """The bits of Python scalar `value` converted to `dtype` (elementwise.cast: numpy's, with
    float -> int defined), for gather.comp."""
    with np.errstate(all="ignore"):
        a = cast(value, dtype.np_dtype)
    return int(a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[dtype.itemsize]))


def strided_copy(shape, dst, dst_strides, src, src_strides=None, index=None, add=False,
                 fresh=False, check=None, wrap=True, combine=None):
    """Queue gather.comp over the domain `shape`: element c does
    dst[sum c*dst_strides] = src[sum c*src_strides] (or += when `add`), converting to dst's dtype.

    dst, src: DeviceArrays whose `.start` is the base element (their own shape and strides are
    ignored); src may instead be a Python scalar. index = (array, strides, n, scale, side) adds
    fix(array[sum c*strides]) * scale to the side's offset ("src", "dst") or to the int32 value
    ("value"). `combine` ("mul", "max", "min"): dst = dst * src, max or min, as `add` adds;
    where elements share a destination (an index on the dst side), in element order.
    n > 0 checks the entries against an axis of n: valid in [-n, n), negative ones
    wrapping (in [0, n) when not `wrap`); one out of range is clamped into [0, n) and makes the
    next synchronisation raise IndexError naming op `check`. `fresh`: dst is a whole new
    allocation, so a partial last word belongs to it alone.
    """
    n = prod(shape)
    if n == 0:
        return
    ndim = len(shape)
    imm = not isinstance(src, Buffer)
    if imm:
        src_strides = (0,) * ndim
    array, idx_strides, idx_n, scale, side = index or (None, (0,) * ndim, 0, 0, "none")
    mode = "MODE_ADD" if add else f"MODE_{combine.upper()}" if combine else "MODE_STORE"
    if mode != "MODE_STORE" and side == "dst" and any(
            m > 1 and s == 0 for m, s in zip(shape, dst_strides)):
        # sources may share destinations: combine them in source order, not by atomics
        _scatter_sorted(shape, dst, dst_strides, src, src_strides, index, mode, check, wrap)
        return
    checked = dst.backend.error_code(check) << 1 | int(wrap) if idx_n else 0
    shape, strides = layout.coalesce(shape, dst_strides, src_strides, idx_strides)
    starts = [dst.start, scalar_bits(src, dst.dtype) if imm else src.start,
              array.start if array is not None else 0]
    codes = dict(DST_DT=dst.dtype.code, SRC_DT=kernels.DTYPE_CODES["imm"] if imm else
                 src.dtype.code, IDX_DT=array.dtype.code if array is not None else 0)
    per = dst.dtype.per_word
    if mode == "MODE_STORE" and (per == 1 or (side != "dst"
                                              and layout.is_contiguous(shape, strides[0])
                                              and dst.start % per == 0
                                              and (n % per == 0 or fresh))):
        mode = "MODE_WORDS"  # plain stores: each invocation owns whole words of dst
    # what it reads and writes (the kernel may write the error word, in staging)
    access = ([src, array], [dst, dst.backend.staging_range])
    _launch_copy(dst.backend, shape, strides, starts, [idx_n, scale, checked],
                 dict(MODE=_G[mode], SIDE=_G["INDEX_" + side.upper()], **codes), access)


def _scatter_sorted(shape, dst, dst_strides, src, src_strides, index, mode, check, wrap):
    """strided_copy's combination (`mode`: MODE_ADD, _MUL, _MAX, _MIN) through an index on the
    destination side, deterministic: each destination combines its sources in source order (the
    domain's row-major order), as numpy's ufunc.at does. Three steps (shaders/scatter.comp):
    keys = the index term over the keyed dims (those where dst's stride is 0: the index alone
    picks the destination), by gather.comp, which checks the indices; their stable argsort
    (sort.comp: log2(m)(log2(m) + 1)/2 + 1 dispatches for m keyed positions, whatever the free
    dims' size); one scatter.comp dispatch where each segment of equal keys is one invocation's
    ordered loop. One row of keys serves every free position unless the index varies along free
    dims (scatter_reduce's index), then one row each."""
    from .sorting import _argsort_vulkan  # sorting.py imports this module
    backend = dst.backend
    array, idx_strides, idx_n, scale, _ = index
    keyed = [d for d, n in enumerate(shape) if n > 1 and dst_strides[d] == 0]
    free = [d for d, n in enumerate(shape) if n > 1 and dst_strides[d] != 0]
    imm = not isinstance(src, Buffer)
    src_strides = (0,) * len(shape) if imm else src_strides
    def keyed_src():  # the keyed dims and src's strides along them, coalesced
        return layout.coalesce([shape[d] for d in keyed], [src_strides[d] for d in keyed])
    kshape, (ksrc,) = keyed_src()
    if len(kshape) > SCATTER.KD:  # read a copy of the values with the keyed dims last
        order = free + keyed
        copy_shape = [shape[d] for d in order]
        copy = backend.empty(copy_shape, src.dtype)
        strided_copy(copy_shape, copy, layout.contiguous_strides(copy_shape), src,
                     [src_strides[d] for d in order], fresh=True)
        placed = dict(zip(order, layout.contiguous_strides(copy_shape)))
        src, src_strides = copy, [placed.get(d, 0) for d in range(len(shape))]
        kshape, (ksrc,) = keyed_src()
    per_row = any(idx_strides[d] for d in free)
    key_dims = (free if per_row else []) + keyed
    m = prod(kshape)
    keys = backend.empty((prod(shape[d] for d in free) if per_row else 1, m), dtypes.int32)
    key_shape = [shape[d] for d in key_dims]
    strided_copy(key_shape, keys, layout.contiguous_strides(key_shape), 0,
                 index=(array, [idx_strides[d] for d in key_dims], idx_n, scale, "value"),
                 fresh=True, check=check, wrap=wrap)
    perm = _argsort_vulkan(backend, keys, 1, False)
    fshape, (fdst, fsrc) = layout.coalesce([shape[d] for d in free],
                                           [dst_strides[d] for d in free],
                                           [src_strides[d] for d in free])
    spec = SCATTER.spec(MODE=_G[mode], DST_DT=dst.dtype.code,
                        SRC_DT=kernels.DTYPE_CODES["imm"] if imm else src.dtype.code)
    starts = [dst.start, scalar_bits(src, dst.dtype) if imm else src.start, keys.start,
              perm.start]
    steps = (m, perm.strides[0]) if per_row else (0, 0)
    _launch_scatter(backend, m, kshape, ksrc, fshape, fdst, fsrc, starts, steps, spec,
                    ([None if imm else src, keys, perm], [dst]))


def _launch_scatter(backend, m, kshape, ksrc, fshape, fdst, fsrc, starts, steps, spec, access):
    if len(fshape) > SCATTER.FD:  # one dispatch per leading free index
        inner = prod(fshape[1:])
        for i in range(fshape[0]):
            shifted = [starts[0] + i * fdst[0], starts[1] + i * fsrc[0],
                       starts[2] + i * inner * steps[0], starts[3] + i * inner * steps[1]]
            _launch_scatter(backend, m, kshape, ksrc, fshape[1:], fdst[1:], fsrc[1:], shifted,
                            steps, spec, access)
        return
    nfree = prod(fshape)
    push = SCATTER.pack(m=m, nfree=nfree, nk=len(kshape), nf=len(fshape), dst_start=starts[0],
                        src_start=starts[1], keys_start=starts[2], keys_step=steps[0],
                        perm_start=starts[3], perm_step=steps[1], kshape=kshape, ksrc=ksrc,
                        fshape=fshape, fdst=fdst, fsrc=fsrc)
    backend.launch("scatter", "", m * nfree, push, spec, reads=access[0], writes=access[1])


def _launch_copy(backend, shape, strides, starts, index_params, spec, access):
    words = spec["MODE"] == _G["MODE_WORDS"]
    if len(shape) > GATHER.MAXD:  # too many dims survive coalescing: a dispatch per leading index
        if words and _ITEMSIZE[spec["DST_DT"]] < 4:
            spec = {**spec, "MODE": _G["MODE_STORE"]}  # slices of a packed dst may share words
        for i in range(shape[0]):
            _launch_copy(backend, shape[1:], [s[1:] for s in strides],
                         [b + i * s[0] for b, s in zip(starts, strides)], index_params, spec,
                         access)
        return
    n = prod(shape)
    push = GATHER.pack(n=n, dst_start=starts[0], src_start=starts[1],
                       idx_start=starts[2], idx_n=index_params[0], idx_scale=index_params[1],
                       idx_check=index_params[2], dst_strides=strides[0],
                       src_strides=strides[1], idx_strides=strides[2],
                       **layout.div_magic_fields(shape, GATHER.MAXD, "strided copy"))
    backend.launch("gather", "", -(-n // kernels.ELEMS_PER_INVOCATION) if words else n, push,
                   GATHER.spec(**spec), reads=access[0], writes=access[1])


def _scan_launch(backend, phase, threads, **f):
    push = SCAN.pack(len=f["len"], rows=f["rows"], chunk=f["chunk"], nchunks=f["nchunks"],
                     ndim=len(f["shape"]), src_start=f["src"].start, src_step=f["src_step"],
                     dst_start=f["dst_start"], dst_step=f["dst_step"], sums_start=f["sums_start"],
                     shape=f["shape"], src_strides=f["src_strides"], dst_strides=f["dst_strides"])
    backend.launch("scan", "", threads, push, SCAN.spec(
        PHASE=_S[phase], IS_FLOAT=f["is_float"], SRC_DT=f["src"].dtype.code,
        COMBINE=_S["COMBINE_" + f.get("combine", "sum").upper()]))


def _chunking(length, rows):
    """(chunk, nchunks): enough chunks for about 16K invocations, each of >= 32 elements."""
    nchunks = max(1, min(-(-length // 32), -(-16384 // max(rows, 1))))
    chunk = -(-length // nchunks)
    return chunk, -(-length // chunk)


def scan_rows(src, dst, axis, combine="sum"):
    """Queue the inclusive prefix sums of `src` along `axis` into `dst` (same shape, a 32-bit
    dtype: float32 accumulates floats, int32/uint32 integers), or running combinations by
    `combine`: "prod", "max", "min" (NaN propagates), "logaddexp" (floats only)."""
    backend, length = src.backend, src.shape[axis]
    rows_dims = [d for d in range(src.ndim) if d != axis]
    shape, (src_strides, dst_strides) = layout.coalesce(
        [src.shape[d] for d in rows_dims], [src.strides[d] for d in rows_dims],
        [dst.strides[d] for d in rows_dims])
    if len(shape) > SCAN.MAXD:
        return scan_rows(contiguous(src), dst, axis, combine)
    rows = prod(shape)
    if rows * length == 0:
        return
    chunk, nchunks = _chunking(length, rows)
    sums = backend.empty((rows * (nchunks + 1),), dst.dtype) if nchunks > 1 else None
    fields = dict(combine=combine, is_float=int(dst.dtype.is_floating), len=length, rows=rows,
                  chunk=chunk, nchunks=nchunks, src=src, src_step=src.strides[axis],
                  dst_start=dst.start, dst_step=dst.strides[axis], sums_start=sums.start if sums else 0, shape=shape,
                  src_strides=src_strides, dst_strides=dst_strides)
    if sums is not None:
        _scan_launch(backend, "SCAN_CHUNKS", rows * nchunks, **fields)
        _scan_launch(backend, "SCAN_SUMS", rows, **fields)
    _scan_launch(backend, "SCAN_WRITE", rows * nchunks, **fields)


def _mask_offsets(mask, strides):
    """int32 DeviceArray of sum(coord * strides) over the true entries of the bool DeviceArray
    `mask`, in row-major order. Reads the number of true entries back to the host."""
    backend = mask.backend
    if not mask.is_contiguous():
        mask = contiguous(mask)
    n = mask.size
    if n == 0:
        return backend.empty((0,), dtypes.int32)
    chunk, nchunks = _chunking(n, 1)
    sums = backend.empty((nchunks + 1,), dtypes.int32)
    shape, (_, view_strides) = layout.coalesce(mask.shape, layout.contiguous_strides(mask.shape),
                                               strides)
    if len(shape) > SCAN.MAXD:
        raise NotImplementedError(f"a boolean index of shape {mask.shape} over dims with strides "
                                  f"{tuple(strides)} ({len(shape)} dims after merging, at most "
                                  f"{SCAN.MAXD})")
    fields = dict(is_float=0, len=n, rows=1, chunk=chunk, nchunks=nchunks, src=mask, src_step=1,
                  dst_start=0, dst_step=0, sums_start=sums.start, shape=(), src_strides=(),
                  dst_strides=())
    _scan_launch(backend, "SCAN_CHUNKS", nchunks, **fields)
    _scan_launch(backend, "SCAN_SUMS", 1, **fields)
    count = int(backend.to_numpy(sums.view((), (), nchunks)))
    out = backend.empty((count,), dtypes.int32)
    if count:
        fields.update(dst_start=out.start, shape=shape, src_strides=(0,) * len(shape),
                      dst_strides=view_strides)
        _scan_launch(backend, "SCAN_COMPACT", nchunks, **fields)
    return out


# ---- keys: checked once for every device, then planned per backend ------------------------------
class _Ref:
    """An index tensor on a Vulkan device in a key template: operand `j` of the op."""
    __slots__ = ("j", "shape", "dtype")

    def __init__(self, j, shape, dtype):
        self.j, self.shape, self.dtype = j, shape, dtype

    def __repr__(self):
        return f"<index tensor {self.j} {self.shape} {self.dtype.name}>"


def _is_array(entry):
    return isinstance(entry, (np.ndarray, _Ref))


def _is_mask(entry):
    return (isinstance(entry, np.ndarray) and entry.dtype == np.bool_
            or isinstance(entry, _Ref) and entry.dtype is dtypes.bool_)


def _dims(entry):
    """How many dims of the indexed tensor a key entry consumes."""
    if entry is None or entry is Ellipsis:
        return 0
    return len(entry.shape) if _is_mask(entry) else 1


def _prepare(t, key):
    """(template, operands): `key` with host-data index arrays as numpy arrays and index tensors
    on t's (Vulkan) device as _Refs to `operands`, checked against t's shape."""
    keys = key if isinstance(key, tuple) else (key,)
    template, operands = [], []
    for k in keys:
        if k is None or k is Ellipsis or isinstance(k, slice):
            template.append(k)
        elif isinstance(k, (bool, np.bool_)):
            template.append(np.asarray(k))
        elif isinstance(k, (int, np.integer)):
            template.append(operator.index(k))
        elif isinstance(k, Tensor) and (k.device.kind != "host" or t.device.kind == "host"):
            _check_index_dtype(k.dtype)
            if k.device.kind == "host":
                template.append(k._data)  # (a step compiled on the host reads it on replay)
            else:
                operands.append(k)
                template.append(_Ref(len(operands) - 1, k.shape, k.dtype))
        else:
            a = k.numpy() if isinstance(k, Tensor) else np.asarray(k)
            if a.size == 0 and a.dtype.kind == "f":
                a = a.astype(np.intp)  # [] is an empty integer index, as in numpy
            _check_index_dtype(a.dtype)
            template.append(a)
    template = tuple(template)
    _check(template, t.shape)
    return template, operands


def _check_index_dtype(dtype):
    kind = dtype.kind if isinstance(dtype, (np.dtype, dtypes.DType)) else "O"
    if kind not in "iub":
        raise IndexError("only integers, slices (`:`), ellipsis (`...`), None and integer or "
                         f"boolean arrays are valid indices, not an array of "
                         f"{getattr(dtype, 'name', dtype)}")


def host_check(t, check, *args):
    """Run `check(values, *args)`, which raises on bad values, over a host tensor's values as a
    host kernel call: a step compiled on the host (vkgrad.compile) checks every call's values."""
    t.device.backend.call(check, t._data, *args)


def _check_one_hot(values, num_classes):
    if values.min() < 0 or values.max() >= num_classes:
        raise ValueError(f"one_hot: labels must lie in [0, {num_classes}), found "
                         f"{values.min() if values.min() < 0 else values.max()}")


def checked_index(indices, device, low, n, caller, axis_name):
    """`indices` as a Tensor on `device`. Indices that come from the host (numpy arrays, lists,
    a host tensor for a Vulkan op) are range-checked here, before their upload: each must lie in
    [low, n), else IndexError names `caller` and `axis_name`. Device indices are left to the
    kernels' own check (raised at the next synchronisation); boolean ones to the caller."""
    if isinstance(indices, Tensor) and not (indices.device.kind == "host"
                                            and device.kind != "host"):
        return indices
    host = indices.numpy() if isinstance(indices, Tensor) else np.asarray(indices)
    _check_index_dtype(host.dtype)
    if host.dtype.kind != "b":
        bad = host[(host < low) | (host >= n)]
        if bad.size:
            raise IndexError(f"{caller}: index {bad.flat[0]} is out of bounds for {axis_name} "
                             f"with size {n}")
    return Tensor._wrap(device.backend.from_numpy(host, dtypes.dtype(host.dtype)), device)


def _expand(template, shape):
    """[(entry, axis, pos)]: the key with its Ellipsis (or the missing trailing dims) as full
    slices; `axis` is the first dim of `shape` that the entry indexes, `pos` its place in the key
    (an Ellipsis keeps its place even when it stands for no dims: numpy's index arrays on either
    side of it are not adjacent)."""
    used = sum(_dims(e) for e in template)
    if sum(1 for e in template if e is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if used > len(shape):
        raise IndexError(f"too many indices for tensor: tensor is {len(shape)}-dimensional, "
                         f"but {used} were indexed")
    fill = [slice(None)] * (len(shape) - used)
    if not any(e is Ellipsis for e in template):
        template = (*template, Ellipsis)
    out, axis = [], 0
    for pos, e in enumerate(template):
        for entry in (fill if e is Ellipsis else [e]):
            out.append((entry, axis, pos))
            axis += _dims(entry)
    return out


def _check(template, shape):
    """IndexError for anything numpy would refuse, on every device alike (index values only
    where they are host data)."""
    shapes = []
    for e, axis, _ in _expand(template, shape):
        if isinstance(e, int):
            n = shape[axis]
            if not -n <= e < n:
                raise IndexError(f"index {e} is out of bounds for axis {axis} with size {n}")
        elif _is_mask(e):
            for d, m in enumerate(e.shape):
                if m != shape[axis + d]:
                    raise IndexError(f"boolean index did not match indexed tensor along axis "
                                     f"{axis + d}; size of axis is {shape[axis + d]} but size of "
                                     f"corresponding boolean axis is {m}")
            if isinstance(e, np.ndarray):
                shapes.append((int(e.sum()),))
        elif _is_array(e):
            n = shape[axis]
            if isinstance(e, np.ndarray):
                bad = e[(e < -n) | (e >= n)]
                if bad.size:
                    raise IndexError(f"index {bad.flat[0]} is out of bounds for axis {axis} "
                                     f"with size {n}")
            elif n == 0 and prod(e.shape):  # device indices are clamped, but not into nothing
                raise IndexError(f"cannot index axis {axis} of size 0 with a nonempty index "
                                 "tensor")
            shapes.append(tuple(e.shape))
    _broadcast(shapes)


def _broadcast(shapes):
    try:
        return layout.broadcast_shapes(*shapes)
    except ValueError:
        raise IndexError("shape mismatch: indexing arrays could not be broadcast together with "
                         "shapes " + " ".join(str(tuple(s)) for s in shapes)) from None


def _host_key(template, operands):
    return tuple(operands[e.j] if isinstance(e, _Ref) else e for e in template)


def _plan(a, operands, template, caller):
    """Where a[key] lives in the DeviceArray `a`: (shape, view, view_strides, index), where
    element c of `shape` is view.start + sum c*view_strides + the index term (the `index` tuple
    of strided_copy, side left for the caller, or None). Index tensors are checked as `caller`'s."""
    backend = a.backend
    offset, basic, adv_positions, terms = a.offset, [], [], []
    has_arrays = any(_is_array(e) for e in template)
    for e, axis, pos in _expand(template, a.shape):
        if e is None:
            basic.append((1, 0))
        elif isinstance(e, slice):
            n, s = a.shape[axis], a.strides[axis]
            start, stop, step = e.indices(n)
            length = len(range(start, stop, step))
            offset += start * s if length else 0
            basic.append((length, s * step))
        elif isinstance(e, int):
            offset += (e % a.shape[axis]) * a.strides[axis]
            if has_arrays:  # numpy counts integers as index arrays when arrays are present
                adv_positions.append((pos, len(basic)))
        else:
            adv_positions.append((pos, len(basic)))
            terms.append(_term(e, operands, a.shape, a.strides, axis))
    index, b_shape = _combine(backend, terms, caller)
    consecutive = all(p2 == p1 + 1 for (p1, _), (p2, _) in zip(adv_positions, adv_positions[1:]))
    at = adv_positions[0][1] if adv_positions and consecutive else 0
    shapes = [n for n, _ in basic]
    strides = [s for _, s in basic]
    nb = len(b_shape)
    shape = (*shapes[:at], *b_shape, *shapes[at:])
    view_strides = (*strides[:at], *(0,) * nb, *strides[at:])
    if index is not None:
        array, idx_strides, n, scale = index
        full = (0,) * at + tuple(idx_strides) + (0,) * (len(shapes) - at)
        index = (array, full, n, scale)
    return shape, a.view((), (), offset), view_strides, index


def _term(e, operands, shape, strides, axis):
    """One index array's contribution to the element offset: ("host", int64 offsets) for host
    data, or ("device", DeviceArray, n, scale) for offsets fix(array) * scale."""
    if _is_mask(e):
        dim_strides = strides[axis:axis + len(e.shape)]
        if isinstance(e, np.ndarray):
            offsets = np.zeros(int(e.sum()), np.int64)  # a 0-d mask selects one position or none
            for c, s in zip(np.nonzero(e) if e.ndim else (), dim_strides):
                offsets += c * s
            return ("host", offsets)
        return ("device", _mask_offsets(operands[e.j], dim_strides), 0, 1)
    n, s = shape[axis], strides[axis]
    if isinstance(e, np.ndarray):
        return ("host", (e.astype(np.int64) % n) * s)
    return ("device", operands[e.j], n, s)


def _combine(backend, terms, caller):
    """The summed offsets of all index terms as (array, strides over their broadcast shape, n,
    scale), and that shape; (None, ()) without terms. Index tensors are checked as `caller`'s."""
    if not terms:
        return None, ()
    b_shape = _broadcast([t[1].shape for t in terms])
    host = [t[1] for t in terms if t[0] == "host"]
    device = [t[1:] for t in terms if t[0] == "device"]
    if host:
        total = sum(host[1:], host[0])
        device.append((backend.from_numpy(total, dtypes.int32), 0, 1))
    if len(device) == 1:
        array, n, scale = device[0]
        return (array, layout.broadcast_strides(array.shape, array.strides, b_shape), n, scale), \
            b_shape
    out = backend.empty(b_shape, dtypes.int32)
    contiguous_strides = layout.contiguous_strides(b_shape)
    for i, (array, n, scale) in enumerate(device):
        strides = layout.broadcast_strides(array.shape, array.strides, b_shape)
        strided_copy(b_shape, out, contiguous_strides, out if i else 0, contiguous_strides,
                     index=(array, strides, n, scale, "value"), fresh=True, check=caller)
    return (out, contiguous_strides, 0, 1), b_shape


# ---- ops -----------------------------------------------------------------------------------------
def _index_host(a, *operands, key, caller="indexing"):
    return np.asarray(a[_host_key(key, operands)])


def _index_vulkan(backend, a, *operands, key, caller="indexing"):
    shape, view, view_strides, index = _plan(a, operands, key, caller)
    out = backend.empty(shape, a.dtype)
    strided_copy(shape, out, layout.contiguous_strides(shape), view, view_strides,
                 index=index and (*index, "src"), fresh=True, check=caller)
    return out


def _write_host(a, value, *operands, key, add):
    key = _host_key(key, operands)
    if not add:
        with np.errstate(invalid="ignore"):
            a[key] = cast(value, a.dtype)  # float -> int as on the device (docs/numerics.md)
    elif _accumulator(a.dtype) != a.dtype:  # bf16: add every value in float32, round once
        total = a.astype(np.float32)
        np.add.at(total, key, np.asarray(value).astype(np.float32))
        a[...] = total
    else:
        np.add.at(a, key, value)
    return a


def _write_vulkan(backend, a, value, *operands, key, add, caller=None):
    caller = caller or ("add_at" if add else "setitem")
    if add and a.dtype.is_floating and a.dtype.per_word > 1:
        # bf16: add every value into a float32 copy, then round each element once
        total = elementwise_launch(backend, "identity", dtypes.float32, a.shape, [a], "float")
        _write_vulkan(backend, total, value, *operands, key=key, add=True, caller=caller)
        # back through gather.comp, which writes any view (elementwise's assign needs a
        # contiguous, word-aligned one: `a` may start mid-word or be strided)
        strided_copy(a.shape, a, a.strides, total, total.strides)
        return a
    shape, view, view_strides, index = _plan(a, operands, key, caller)
    strides = None
    if isinstance(value, Buffer):
        if value.same_memory(a):  # the value overlaps the target: read a copy
            value = contiguous(value)
        strides = _value_strides(value, shape)
    strided_copy(shape, view, view_strides, value, strides, index=index and (*index, "dst"),
                 add=add, check=caller)
    return a


def _value_strides(value, shape):
    """Strides that read `value` broadcast to `shape`, leading 1-dims dropped as numpy does."""
    drop = 0
    while value.ndim - drop > len(shape) and value.shape[drop] == 1:
        drop += 1
    try:
        return layout.broadcast_strides(value.shape[drop:], value.strides[drop:], shape)
    except ValueError:
        raise ValueError(f"could not broadcast a value of shape {value.shape} into the indexed "
                         f"shape {tuple(shape)}") from None


def _accumulator(dtype):
    """The numpy dtype host index adds accumulate in: float32 for bf16, else the dtype."""
    return np.dtype(np.float32) if dtype.kind == "V" or dtype.itemsize < 4 and dtype.kind == "f" \
        else dtype


def _index_add_host(a, values, *operands, key):
    wide = _accumulator(a.dtype)
    out = a.astype(wide, copy=True)
    np.add.at(out, _host_key(key, operands), np.asarray(values).astype(wide))
    return out.astype(a.dtype, copy=False)


def _index_add_vulkan(backend, a, values, *operands, key):
    return _write_vulkan(backend, contiguous(a), values, *operands, key=key, add=True,
                         caller="index_add")


def _take_along_axis_host(a, indices, axis, caller="take_along_axis", wrap=True):
    return np.take_along_axis(a, indices.astype(np.intp), axis)


def _take_along_axis_vulkan(backend, a, indices, axis, caller="take_along_axis", wrap=True):
    shape = tuple(indices.shape[d] if d == axis else layout.broadcast_shapes(
        (a.shape[d],), (indices.shape[d],))[0] for d in range(a.ndim))
    a_shape = tuple(1 if d == axis else n for d, n in enumerate(a.shape))
    src_strides = layout.broadcast_strides(a_shape, a.strides, shape)
    idx_strides = layout.broadcast_strides(indices.shape, indices.strides, shape)
    out = backend.empty(shape, a.dtype)
    strided_copy(shape, out, layout.contiguous_strides(shape), a, src_strides,
                 index=(indices, idx_strides, a.shape[axis], a.strides[axis], "src"), fresh=True,
                 check=caller, wrap=wrap)
    return out


def _one_hot_host(labels, num_classes, dtype):
    return (labels[..., None] == np.arange(num_classes)).astype(dtype.np_dtype)


def _one_hot_vulkan(backend, labels, num_classes, dtype):
    column = labels.view((*labels.shape, 1), (*labels.strides, 0), labels.offset)
    classes = backend.from_numpy(np.arange(num_classes, dtype=np.int32), dtypes.int32)
    return elementwise_launch(backend, "eq", dtype, (*labels.shape, num_classes),
                              [column, classes], "int")


# ---- public API ----------------------------------------------------------------------------------
def _getitem(t, key, caller="indexing"):
    template, operands = _prepare(t, key)
    return apply(OPS["index"], t, *operands, key=template, caller=caller)


def _write_value(t, value):
    """A value to write into `t`: a scalar or a Tensor; other data (lists, numpy arrays) goes to
    t's device in t's dtype. Python ints must fit t's dtype (numpy's OverflowError)."""
    if not isinstance(value, (Tensor, np.ndarray)):
        dtypes.check_int_range(value, t.dtype)
    if not isinstance(value, (Tensor, int, float, bool, np.number, np.bool_)):
        value = Tensor._wrap(t.device.backend.from_numpy(np.asarray(value), t.dtype), t.device)
    return value


def _setitem(t, key, value, add=False):
    check_inplace(t, value)
    template, operands = _prepare(t, key)
    value = _write_value(t, value)
    if isinstance(value, Tensor) and value.device != t.device:
        raise ValueError(f"cannot write a tensor on {value.device} into one on {t.device}; "
                         "move it with .to(device) first")
    apply(OPS["setitem"], t, value, *operands, key=template, add=add)


_ADVANCED["getitem"] = _getitem
_ADVANCED["setitem"] = _setitem


def index_add(t, key, values):
    """A copy of `t` with `values` added at `t[key]`, every repeated index adding its share: the
    out-of-place, differentiable `add_at` (the backward of indexing)."""
    template, operands = _prepare(t, key)
    return apply(OPS["index_add"], t, _write_value(t, values), *operands, key=template)


def _along_axis_key(indices, shape, axis):
    """The advanced-indexing key that picks what take_along_axis(x, indices, axis) picks from an
    x of `shape`: `indices` on `axis`, broadcast aranges (or 0 for size-1 dims) elsewhere."""
    from ..creation import arange
    out = list(layout.broadcast_shapes([n for d, n in enumerate(shape) if d != axis],
                                  [n for d, n in enumerate(indices.shape) if d != axis]))
    out.insert(axis, indices.shape[axis])
    key = []
    for d, n in enumerate(shape):
        if d == axis:
            key.append(indices)
            continue
        column = [1] * len(shape)
        column[d] = out[d]
        key.append(zeros(column, dtypes.int32, indices.device) if n == 1 else
                   arange(n, dtype=dtypes.int32, device=indices.device).reshape(column))
    return tuple(key)


def add_at(t, key, values):
    """t[key] += values in place, with every repeated index adding its share (numpy's
    np.add.at), where `t[key] += values` would add once per distinct index.

    >>> x = vk.zeros(3); vk.add_at(x, [0, 0, 2], 1.0); x.tolist()
    [2.0, 0.0, 1.0]
    """
    _setitem(t, key, values, add=True)


@tensor_method("take")
def take(a, indices, axis=None, *, caller="take"):
    """Elements of `a` at `indices` along `axis` (None: of the flattened `a`), numpy's np.take:
    the same as a[:, ..., indices] with `indices` in position `axis`. `caller`: the name that an
    index error found on the device reports (callers such as F.embedding give theirs)."""
    if axis is None:
        return _getitem(a.reshape(-1), indices, caller)
    axis = layout.normalize_axis(axis, a.ndim)
    return _getitem(a, (slice(None),) * axis + (indices,), caller)


def take_along_axis(a, indices, axis, *, caller="take_along_axis", labels=False):
    """out[i..., j, k...] = a[i..., indices[i..., j, k...], k...] (numpy's take_along_axis):
    picks along `axis` with an index array of a's ndim, the other dims broadcast.

    >>> vk.take_along_axis(x, x.argmax(axis=1, keepdims=True), axis=1)   # the row maxima

    labels=True: the indices are class labels, valid in [0, n) only (negative ones do not wrap).
    `caller`: the name that an index error reports (callers such as the losses give theirs).
    """
    if axis is None:
        a, axis = a.reshape(-1), 0
    axis = layout.normalize_axis(axis, a.ndim)
    n = a.shape[axis]
    indices = checked_index(indices, a.device, 0 if labels else -n, n, caller,
                            f"axis {axis}")
    _check_index_dtype(indices.dtype)
    if indices.dtype.kind == "b":
        raise IndexError(f"take_along_axis needs integer indices, not {indices.dtype.name}")
    if indices.ndim != a.ndim:
        raise ValueError(f"take_along_axis: indices of shape {indices.shape} need as many dims "
                         f"as the tensor of shape {a.shape}")
    if n == 0 and indices.size:
        raise IndexError(f"cannot take from axis {axis} of size 0 with nonempty indices")
    other = [(n, m) for d, (n, m) in enumerate(zip(a.shape, indices.shape)) if d != axis]
    if any(n != m and 1 not in (n, m) for n, m in other):
        raise ValueError(f"take_along_axis: shapes {a.shape} and {indices.shape} do not "
                         f"broadcast outside axis {axis}")
    return apply(OPS["take_along_axis"], a, indices, axis=axis, caller=caller, wrap=not labels)


def one_hot(labels, num_classes, dtype=dtypes.float32):
    """out[..., k] = 1 where labels[...] == k else 0, of shape labels.shape + (num_classes,).

    Labels must lie in [0, num_classes): host labels are checked (ValueError); on a Vulkan
    device a label outside gives a row of zeros.
    """
    dtype = dtypes.dtype(dtype)
    if not isinstance(labels, Tensor):
        labels = tensor(labels)
    if labels.dtype.is_floating or labels.dtype.kind == "b":
        raise TypeError(f"one_hot needs integer labels, not {labels.dtype.name}")
    num_classes = operator.index(num_classes)
    if num_classes < 0:
        raise ValueError(f"one_hot: num_classes must be >= 0, not {num_classes}")
    if labels.device.kind == "host" and labels.size:
        host_check(labels, _check_one_hot, num_classes)
    _check_device_dtype(labels.device, dtype)
    return apply(OPS["one_hot"], labels, num_classes=num_classes, dtype=dtype)


# ---- backward rules: indexing's adjoint adds the gradient back at the picked places -------------
def _index_vjp(ctx, g):
    a_shape, operands = ctx.shapes[0], ctx.inputs[1:]
    zero = zeros(a_shape, g.dtype, g.device)
    return (apply(OPS["index_add"], zero, g, *operands, key=ctx.params["key"]),
            *[None] * len(operands))


def _index_add_vjp(ctx, g):
    operands = ctx.inputs[2:]
    return (g, apply(OPS["index"], g, *operands, key=ctx.params["key"]) if ctx.needs_input_grad[1]
            else None, *[None] * len(operands))


def _take_along_axis_vjp(ctx, g):
    shape, indices, axis = ctx.shapes[0], ctx.inputs[1], ctx.params["axis"]
    return index_add(zeros(shape, g.dtype, g.device), _along_axis_key(indices, shape, axis), g), None


# ---- the op table ------------------------------------------------------------------------------
Op("index", _index_host, _index_vulkan, vjp=_index_vjp)
Op("setitem", _write_host, _write_vulkan, writes=(0,))
Op("index_add", _index_add_host, _index_add_vulkan, vjp=_index_add_vjp)
Op("take_along_axis", _take_along_axis_host, _take_along_axis_vulkan, vjp=_take_along_axis_vjp)
Op("one_hot", _one_hot_host, _one_hot_vulkan)
