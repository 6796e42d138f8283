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
"""
import operator

import numpy as np

from .. import dtypes
from ..random import launch as pattern_launch
from ..tensor import Tensor, tensor_method, where
from .elementwise import compute_domain, launch as elementwise_launch
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
