"""Every op in the registry, on every device and dtype, against numpy (or torch) on random data.

The cases come from each op's OpTest entries (tests/opdb.py's op_tests), so adding an op's
entries adds its tests.
Each case also runs with non-contiguous inputs (transposed or strided views of the same values).
bf16 results must be the float64 reference rounded once, within 2 bf16 ulps (plus float32
accumulation bounds for sums): every op computes in float32 and rounds its result once.
float32 results of the elementwise ops are held to their bounds in tests/tolerances.py: what
the Vulkan spec allows on a GPU, numpy's bound on the host, the IEEE-arithmetic one on lavapipe.
"""
import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk
from vkgrad.ops import OPS
from vkgrad.ops.elementwise import TABLE

import tolerances
from conftest import DEVICES, assert_op_close, cast_input, reference_input, to_tensor
from opdb import op_tests

CASES = [(name, i, t, dtype) for name in sorted(OPS)
         for i, t in enumerate(op_tests(name)) for dtype in t.dtypes]


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
        exact = [reference_input(x) for x in inputs]
        if name in TABLE:  # an elementwise op takes a Python float at float32 precision
            exact = [float(np.float32(x)) if isinstance(x, float) else x for x in exact]
        expected = np.asarray(spec.reference(*exact, **params))
        assert got.device == device
        assert got.shape == expected.shape, (name, params, got.shape, expected.shape)
        result = got.numpy()
        where = f"{name} {params} on shapes {[getattr(x, 'shape', x) for x in inputs]}"
        if expected.dtype.kind in "biu":
            np.testing.assert_array_equal(result, expected, err_msg=where)
            continue
        if dtype in ("float32", "bfloat16"):
            assert got.dtype is vk.dtype(dtype), where
        length, magnitude = 1, 0.0
        if spec.reduction_length:  # sums of terms: their accumulation error grows with |terms|
            length = spec.reduction_length(inputs, params)
            magnitude = np.asarray(spec.reference(*[np.abs(reference_input(x)) if _is_float(x)
                                                    else reference_input(x) for x in inputs],
                                                  **params), np.float64)
        steps, level = params.get("steps", 1), 0.0
        if steps > 1:  # an optimizer's steps round the parameter (input 0) after each
            level = np.maximum(np.abs(reference_input(inputs[0])), np.abs(expected))
        bound = None
        if name in TABLE and name in tolerances.ELEMENTWISE:
            # (the tight bound implies the spec's: tests/test_tolerances.py)
            bound = tolerances.allowed(name, exact, tolerances.tight(device) or "spec",
                                       expected.shape)
        assert_op_close(result, expected, dtype, length, magnitude, where, steps, level, bound)


def _is_float(x):
    return isinstance(x, np.ndarray) and (x.dtype.kind == "f" or x.dtype == ml_dtypes.bfloat16)
