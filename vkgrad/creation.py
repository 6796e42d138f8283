"""Creation functions beyond zeros/ones/full/tensor (which live in vkgrad/tensor.py).

>>> import vkgrad as vk
>>> vk.arange(5).tolist()                       # ints give int32, floats float32
[0, 1, 2, 3, 4]
>>> vk.arange(0, 1, 0.25, device="vulkan").tolist()
[0.0, 0.25, 0.5, 0.75]
>>> vk.linspace(0, 1, 5).tolist()
[0.0, 0.25, 0.5, 0.75, 1.0]
>>> vk.eye(2, 3, k=1, dtype=vk.int32).tolist()
[[0, 1, 0], [0, 0, 1]]

On Vulkan, arange, linspace and eye are computed from the element index by one dispatch of
shaders/random.comp (nothing is uploaded); the host computes the same values with numpy:
  arange    numpy's rule: first = start and delta = (start + step) - start, both in the dtype
            (float32 arithmetic for bf16), then first + i * delta, i < ceil((stop - start) / step)
  linspace  start + i * step in float32, step = (stop - start) / (num - 1) (/ num without the
            endpoint), the last element exactly `stop`; integer dtypes floor (numpy 2)
  eye       1 where column - row == k
"""
import math
import operator

import numpy as np

from . import dtypes, layout
from .device import device as as_device
from .random import _f32_word, check_real, launch
from .tensor import Tensor, _check_device_dtype, full

NO_INDEX = 0xFFFFFFFF  # arange_float's "no element is overridden"


def _make(shape, dtype, device, host, op, *words):
    """A Tensor made by `host()` (numpy) on the host, or by random.comp's pattern `op`."""
    device = as_device(device)
    _check_device_dtype(device, dtype)
    if device.kind == "host":
        return Tensor._wrap(device.backend.call(
            lambda: host().astype(dtype.np_dtype).reshape(shape)), device)
    return Tensor._wrap(launch(device.backend, shape, dtype, op, *words), device)


def _iota(n):
    return np.arange(n, dtype=np.uint32).astype(np.float32)


def empty(shape, dtype=dtypes.float32, device=None):
    """An uninitialised tensor of `shape` (its values are whatever the memory held)."""
    shape, dtype, device = layout.normalize_shape(shape), dtypes.dtype(dtype), as_device(device)
    _check_device_dtype(device, dtype)
    return Tensor._wrap(device.backend.empty(shape, dtype), device)


def arange(start, stop=None, step=1, dtype=None, device=None):
    """Evenly spaced values in [start, stop) by `step`, as numpy.arange; `arange(n)` is 0..n-1."""
    if stop is None:
        start, stop = 0, start
    start, stop, step = (check_real(v, k, "arange") for k, v in
                         (("start", start), ("stop", stop), ("step", step)))
    if step == 0:
        raise ValueError("arange: step must not be zero")
    floating = any(isinstance(v, (float, np.floating)) for v in (start, stop, step))
    if floating:
        span = (float(stop) - float(start)) / float(step)
        if not math.isfinite(span):
            raise ValueError(f"arange: cannot compute the length of [{start}, {stop}) by {step}")
        n = max(0, math.ceil(span))
    else:
        n = max(0, -((int(start) - int(stop)) // int(step)))
    if dtype is None:
        dtype = dtypes.float32 if floating else dtypes.int32
    dtype = dtypes.dtype(dtype)
    if dtype.kind == "b":
        raise TypeError("arange makes numbers, not bool tensors")
    if dtype.is_floating:
        first = np.float32(start)
        delta = np.float32(np.float32(float(start) + float(step)) - first)
        return _make((n,), dtype, device, lambda: first + _iota(n) * delta,
                     "arange_float", _f32_word(first), _f32_word(delta), NO_INDEX)
    first, delta = int(start), int(start + step) - int(start)  # int() truncates, as numpy's cast
    info = np.iinfo(dtype.np_dtype)
    last = first + (n - 1) * delta if n else first
    if not (info.min <= min(first, last) and max(first, last) <= info.max):
        raise OverflowError(f"arange: values from {first} to {last} are out of bounds for "
                            f"{dtype.name}")
    return _make((n,), dtype, device,
                 lambda: first + np.arange(n, dtype=np.int64) * delta, "arange_int", first, delta)


def linspace(start, stop, num=50, endpoint=True, dtype=None, device=None):
    """`num` evenly spaced values from `start` to `stop` (included unless endpoint=False)."""
    start, stop = check_real(start, "start", "linspace"), check_real(stop, "stop", "linspace")
    num = operator.index(num)
    if num < 0:
        raise ValueError(f"linspace: number of samples, {num}, must be non-negative")
    dtype = dtypes.dtype(dtype if dtype is not None else dtypes.float32)
    div = num - 1 if endpoint else num
    first = np.float32(start)
    step = np.float32((float(stop) - float(start)) / div if div > 0 else 0.0)
    last = num - 1 if endpoint and num > 1 else NO_INDEX

    def host():
        v = first + _iota(num) * step
        if last != NO_INDEX:
            v[last] = np.float32(stop)
        return v if dtype.is_floating else np.floor(v)

    return _make((num,), dtype, device, host, "arange_float", _f32_word(first),
                 _f32_word(step), last, _f32_word(stop))


def eye(n, m=None, k=0, dtype=dtypes.float32, device=None):
    """An n x m matrix (m = n by default) with ones on diagonal k (k > 0 above the main one)."""
    n, m, k = operator.index(n), operator.index(n if m is None else m), operator.index(k)
    if n < 0 or m < 0:
        raise ValueError(f"eye: negative dimension in ({n}, {m})")
    dtype = dtypes.dtype(dtype)
    k_word = max(-n, min(m, k))  # beyond the matrix every diagonal is empty; keeps k in int32
    return _make((n, m), dtype, device, lambda: np.eye(n, m, k, dtype=np.float32),
                 "eye", m, k_word)


def _like(t, dtype, device):
    shape = tuple(t.shape)
    dtype = dtypes.dtype(dtype if dtype is not None else t.dtype)
    if device is None and isinstance(t, Tensor):
        device = t.device
    return shape, dtype, device


def empty_like(t, dtype=None, device=None):
    """An uninitialised tensor with t's shape, dtype and device (unless given)."""
    return empty(*_like(t, dtype, device))


def zeros_like(t, dtype=None, device=None):
    """Zeros with t's shape, dtype and device (unless given)."""
    return full_like(t, 0, dtype, device)


def ones_like(t, dtype=None, device=None):
    """Ones with t's shape, dtype and device (unless given)."""
    return full_like(t, 1, dtype, device)


def full_like(t, fill_value, dtype=None, device=None):
    """`fill_value` (converted to the dtype, as numpy) with t's shape, dtype and device."""
    shape, dtype, device = _like(t, dtype, device)
    return full(shape, fill_value, dtype, device)
