"""Ops that only re-describe memory: reshape, permute, broadcast, basic indexing, contiguous.

On the host numpy makes the views; on Vulkan the same shape/stride arithmetic (vkgrad.layout)
makes DeviceArray views without copying. Only a reshape that cannot be expressed in strides, or an
explicit contiguous(), copies.
"""
import numpy as np

from .. import layout
from .elementwise import contiguous as _device_contiguous
from .registry import Op, OpTest


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


def _view_cases(*param_sets):
    return lambda rng: [([rng.standard_normal(shape)], params) for shape, params in param_sets]


def _test(call, reference, *param_sets):
    return [OpTest(call, reference, _view_cases(*param_sets))]


Op("reshape", lambda a, shape: a.reshape(shape), _reshape_vulkan, saves=(),
   vjp=lambda ctx, g: (g.reshape(ctx.shapes[0]),), tests=_test(
    lambda a, shape: a.reshape(shape), lambda a, shape: a.reshape(shape),
    ((3, 4, 5), {"shape": (5, -1)}), ((6,), {"shape": (2, 1, 3)}), ((), {"shape": (1, 1)}),
    ((0, 4), {"shape": (4, 0)}), ((2, 3, 4), {"shape": (6, 4)}), ((7, 1, 3), {"shape": (21,)})))
Op("permute", lambda a, axes: a.transpose(axes), _permute_vulkan, vjp=_permute_vjp, saves=(),
   tests=_test(
    lambda a, axes: a.transpose(axes), lambda a, axes: a.transpose(axes),
    ((3, 4, 5), {"axes": (2, 0, 1)}), ((7, 9), {"axes": (1, 0)}), ((), {"axes": ()})))
# broadcast_to's gradient is summed back to the input's shape by autograd itself (its _fit)
Op("broadcast_to", lambda a, shape: np.broadcast_to(a, shape), _broadcast_vulkan,
   vjp=lambda ctx, g: (g,), saves=(), tests=_test(
    lambda a, shape: a.broadcast_to(shape), lambda a, shape: np.broadcast_to(a, shape),
    ((3, 1), {"shape": (2, 3, 5)}), ((), {"shape": (4,)}), ((5,), {"shape": (0, 5)})))
Op("getitem", lambda a, key: a[key], _getitem_vulkan, vjp=_getitem_vjp, saves=(), tests=_test(
    lambda a, key: a[key], lambda a, key: a[key],
    ((5, 6, 7), {"key": (1, slice(None, None, -2), None, Ellipsis)}),
    ((9,), {"key": slice(7, 1, -3)}), ((4, 5), {"key": (Ellipsis, 3)}),
    ((4, 5), {"key": (slice(2, 2), 1)}), ((3, 4), {"key": ()})))
def _contiguous_host(a):
    return np.asarray(a, order="C")  # np.ascontiguousarray would make 0-d arrays 1-d


Op("contiguous", _contiguous_host, _contiguous_vulkan, vjp=lambda ctx, g: (g,), saves=(),
   tests=_test(
    lambda a: a.contiguous(), _contiguous_host, ((3, 5), {}), ((), {}), ((0, 2), {})))
