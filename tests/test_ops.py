"""Every op in the registry, on every device and dtype, against numpy (or torch) on random data.

The cases come from each op's OpTest entries (vkgrad/ops/*.py), so adding an op adds its tests.
Each case also runs with non-contiguous inputs (transposed or strided views of the same values).
"""
import numpy as np
import pytest

import vkgrad as vk
from vkgrad.ops import OPS

from conftest import DEVICES, cast_input, reference_input, to_tensor, tolerance

CASES = [(name, i, t, dtype) for name, op in sorted(OPS.items())
         for i, t in enumerate(op.tests) for dtype in t.dtypes]


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("name,index,spec,dtype", CASES,
                         ids=[f"{n}-{i}-{d}" for n, i, _, d in CASES])
@pytest.mark.parametrize("device", [pytest.param(d, id=str(d), marks=[pytest.mark.vulkan]
                                                 if d.kind == "vulkan" else []) for d in DEVICES])
def test_op(name, index, spec, dtype, device, strided):
    rng = np.random.default_rng(sum(map(ord, name)) + 7 * index)
    for inputs, params in spec.cases(rng):
        inputs = [cast_input(x, dtype) for x in inputs]
        tensors = [to_tensor(x, device, strided) for x in inputs]
        got = spec.call(*tensors, **params)
        expected = np.asarray(spec.reference(*[reference_input(x) for x in inputs], **params))
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
                                   err_msg=where, **tolerance(dtype, length))
