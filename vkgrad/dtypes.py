"""dtype objects and numpy-style type promotion.

>>> import vkgrad as vk
>>> vk.result_type(vk.bfloat16, vk.float32)
vkgrad.float32
"""
import ml_dtypes
import numpy as np

from .kernels import DTYPE_CODES


class DType:
    """A tensor element type: its numpy twin on the host and its packing on the device."""

    def __init__(self, name, np_dtype, kind):
        self.name = name
        self.np_dtype = np.dtype(np_dtype)
        self.kind = kind  # "f" floating, "i" signed, "u" unsigned, "b" bool
        self.itemsize = self.np_dtype.itemsize
        self.code = DTYPE_CODES.get(name)  # None: no device representation (float64)

    @property
    def is_floating(self):
        return self.kind == "f"

    @property
    def on_device(self):
        return self.code is not None

    @property
    def per_word(self):
        """Elements packed into one 32-bit device word."""
        return 4 // self.itemsize

    def __repr__(self):
        return f"vkgrad.{self.name}"

    def __reduce__(self):
        return (dtype, (self.name,))


float32 = DType("float32", np.float32, "f")
bfloat16 = DType("bfloat16", ml_dtypes.bfloat16, "f")
float64 = DType("float64", np.float64, "f")
int32 = DType("int32", np.int32, "i")
uint32 = DType("uint32", np.uint32, "u")
uint8 = DType("uint8", np.uint8, "u")
bool_ = DType("bool", np.bool_, "b")

ALL = (float32, bfloat16, float64, int32, uint32, uint8, bool_)
_BY_NAME = {d.name: d for d in ALL}
_BY_NAME.update({"f32": float32, "bf16": bfloat16, "f64": float64, "bool_": bool_})
_BY_NUMPY = {d.np_dtype: d for d in ALL}
# numpy types vkgrad narrows on the way in, as torch does for its default types.
_NARROWED = {np.dtype(np.int64): int32, np.dtype(np.uint64): uint32, np.dtype(np.int16): int32,
             np.dtype(np.int8): int32, np.dtype(np.uint16): int32, np.dtype(np.float16): float32}


def dtype(spec):
    """The DType for a DType, a name ("float32", "bf16"), a numpy dtype, or a Python type."""
    if isinstance(spec, DType):
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]
    if spec is float:
        return float32
    if spec is int:
        return int32
    if spec is bool:
        return bool_
    try:
        npd = np.dtype(spec)
    except TypeError:
        npd = None
    if npd is not None and npd in _BY_NUMPY:
        return _BY_NUMPY[npd]
    if npd is not None and npd in _NARROWED:
        return _NARROWED[npd]
    raise TypeError(f"unsupported dtype {spec!r}; vkgrad has "
                    + ", ".join(d.name for d in ALL))


def check_int_range(values, dtype):
    """OverflowError unless integer `values` (a Python int, or anything np.asarray takes) fit the
    integer `dtype`: numpy's rule for Python ints, which vkgrad also applies where it narrows
    numpy integers of its own accord (int64 to int32). Anything else passes."""
    if dtype.kind not in "iu":
        return
    if isinstance(values, int) and not isinstance(values, bool):
        low = high = values
    else:
        a = np.asarray(values)
        if a.dtype.kind not in "iu" or not a.size or np.can_cast(a.dtype, dtype.np_dtype):
            return
        low, high = a.min(), a.max()
    info = np.iinfo(dtype.np_dtype)
    if low < info.min or high > info.max:
        raise OverflowError(f"integer {low if low < info.min else high} is out of bounds for "
                            f"{dtype.name}")


_FLOAT_RANK = {bfloat16: 0, float32: 1, float64: 2}


def result_type(a, b):
    """Promotion of two DTypes, as numpy does it, with bf16 below f32 and no 64-bit integers."""
    if a is b:
        return a
    if a.kind == "b":
        return b
    if b.kind == "b":
        return a
    if a.is_floating or b.is_floating:
        if a.is_floating and b.is_floating:
            return a if _FLOAT_RANK[a] > _FLOAT_RANK[b] else b
        return a if a.is_floating else b  # float with integer keeps the float type, as torch
    if a.kind == b.kind:  # both signed or both unsigned: the wider
        return a if a.itemsize >= b.itemsize else b
    signed, unsigned = (a, b) if a.kind == "i" else (b, a)
    return signed if signed.itemsize > unsigned.itemsize else int32


def scalar_result_type(tensor_dtype, scalar):
    """Promotion of a tensor with a Python scalar, which is weak: it keeps the tensor's type
    unless the scalar is of a higher kind (a float with an integer tensor gives float32)."""
    if isinstance(scalar, (bool, np.bool_)):
        return tensor_dtype
    if isinstance(scalar, (int, np.integer)):
        return int32 if tensor_dtype.kind == "b" else tensor_dtype
    if isinstance(scalar, (float, np.floating)):
        return tensor_dtype if tensor_dtype.is_floating else float32
    raise TypeError(f"unsupported scalar operand {scalar!r} of type {type(scalar).__name__}")
