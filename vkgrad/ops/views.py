"""Ops that only re-describe memory: reshape, permute, broadcast, basic indexing, contiguous.

On the host numpy makes the views; on Vulkan the same shape/stride arithmetic (vkgrad.layout)
makes DeviceArray views without copying. Only a reshape that cannot be expressed in strides, or an
explicit contiguous(), copies.
"""
import numpy as np

from .. import layout
from .elementwise import contiguous as _device_contiguous
from .registry import Op


def _reshape_vulkan(backend, a, shape):
    strides = layout.reshape_strides(a.shape, a.strides, shape)
    if strides is None:
        a = _device_contiguous(a)
        strides = layout.contiguous_strides(shape)
    return a.view(shape, strides, a.offset)


def _permute_vulkan(backend, a, axes):
    return a.view([a.shape[i] for i in axes], [a.strides[i] for i in axes], a.offset)


def _broadcast_vulkan(backend, a, shape):
    return a.view(shape, layout.broadcast_strides(a.shape, a.strides, shape), a.offset)


def _getitem_vulkan(backend, a, key):
    shape, strides, offset = layout.basic_index(a.shape, a.strides, a.offset, key)
    return a.view(shape, strides, offset)


def _contiguous_vulkan(backend, a):
    return a if a.is_contiguous() and a.start % a.dtype.per_word == 0 else _device_contiguous(a)


# ---- backward rules: views map gradients back by the inverse view ------------------------------
def _permute_vjp(ctx, g):
    axes = ctx.params["axes"]
    return (g.transpose(sorted(range(len(axes)), key=axes.__getitem__)),)


def _getitem_vjp(ctx, g):
    from .indexing import index_add
    from ..tensor import zeros
    return (index_add(zeros(ctx.shapes[0], g.dtype, g.device), ctx.params["key"], g),)


Op("reshape", lambda a, shape: a.reshape(shape), _reshape_vulkan, saves=(),
   vjp=lambda ctx, g: (g.reshape(ctx.shapes[0]),))
Op("permute", lambda a, axes: a.transpose(axes), _permute_vulkan, vjp=_permute_vjp, saves=())
# broadcast_to's gradient is summed back to the input's shape by autograd itself (its _fit)
Op("broadcast_to", lambda a, shape: np.broadcast_to(a, shape), _broadcast_vulkan,
   vjp=lambda ctx, g: (g,), saves=())
Op("getitem", lambda a, key: a[key], _getitem_vulkan, vjp=_getitem_vjp, saves=())


def _contiguous_host(a):
    return np.asarray(a, order="C")  # np.ascontiguousarray would make 0-d arrays 1-d


Op("contiguous", _contiguous_host, _contiguous_vulkan, vjp=lambda ctx, g: (g,), saves=())
