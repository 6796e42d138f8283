"""Every op in the registry, on every device and dtype, against numpy (or torch) on random data.

The cases come from each op's OpTest entries (vkgrad/ops/*.py), so adding an op adds its tests.
Each case also runs with non-contiguous inputs (transposed or strided views of the same values).
"""
from math import sqrt

import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk
from vkgrad.ops import OPS

from conftest import DEVICES

CASES = [(name, i, t, dtype) for name, op in sorted(OPS.items())
         for i, t in enumerate(op.tests) for dtype in t.dtypes]


def _cast(x, dtype):
    """An input as the test dtype: floating data is rounded to it, ints and bools stay."""
    if isinstance(x, np.generic):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        return x
    if x.dtype.kind == "f":
        return x.astype(vk.dtype(dtype).np_dtype)
    if dtype == "int32" and x.dtype.kind in "iu":
        return x.astype(np.int32)
    return x


def _reference_input(x):
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" or isinstance(x, np.ndarray) and \
            x.dtype == ml_dtypes.bfloat16:
        return x.astype(np.float64)
    return x


def _to_tensor(x, device, strided):
    if not isinstance(x, np.ndarray):
        return x
    if strided and x.ndim >= 2:
        return vk.tensor(np.ascontiguousarray(x.swapaxes(0, 1)), device=device).swapaxes(0, 1)
    if strided and x.ndim == 1 and x.size > 1:
        return vk.tensor(np.repeat(x, 2), device=device)[::2]
    return vk.tensor(x, device=device)


def _tolerance(dtype, length):
    scale = max(1.0, sqrt(length))
    if dtype == "bfloat16":
        return dict(rtol=1.6e-2 * scale, atol=1.6e-2 * scale)
    return dict(rtol=2e-5 * scale, atol=2e-5 * scale)


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("name,index,spec,dtype", CASES,
                         ids=[f"{n}-{i}-{d}" for n, i, _, d in CASES])
@pytest.mark.parametrize("device", [pytest.param(d, id=str(d), marks=[pytest.mark.vulkan]
                                                 if d.kind == "vulkan" else []) for d in DEVICES])
def test_op(name, index, spec, dtype, device, strided):
    rng = np.random.default_rng(sum(map(ord, name)) + 7 * index)
    for inputs, params in spec.cases(rng):
        inputs = [_cast(x, dtype) for x in inputs]
        tensors = [_to_tensor(x, device, strided) for x in inputs]
        got = spec.call(*tensors, **params)
        expected = np.asarray(spec.reference(*[_reference_input(x) for x in inputs], **params))
        assert got.device == device
        assert got.shape == expected.shape, (name, params, got.shape, expected.shape)
        result = got.numpy()
        where = f"{name} {params} on shapes {[getattr(x, 'shape', x) for x in inputs]}"
        if expected.dtype.kind in "biu":
            np.testing.assert_array_equal(result, expected, err_msg=where)
            continue
        if dtype in ("float32", "bfloat16"):
            assert got.dtype is vk.dtype(dtype), where
        length = spec.reduction_length(inputs, params) if spec.reduction_length else 1
        np.testing.assert_allclose(result.astype(np.float64), expected, equal_nan=True,
                                   err_msg=where, **_tolerance(dtype, length))
