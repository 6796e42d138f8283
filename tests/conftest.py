"""Shared fixtures: every test that takes `device` runs on the host and on each Vulkan device.

Vulkan parametrisations carry the `vulkan` marker, so `pytest -m vulkan` (make test-sync) runs
exactly the device tests. Where a Vulkan device exists, its tests run; they are never skipped.
"""
from math import sqrt

import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk

DEVICES = vk.devices()
VULKAN = [d for d in DEVICES if d.kind == "vulkan"]


def _device_params(devices):
    return [pytest.param(d, id=str(d), marks=[pytest.mark.vulkan] if d.kind == "vulkan" else [])
            for d in devices]


@pytest.fixture(params=_device_params(DEVICES))
def device(request):
    return request.param


@pytest.fixture(params=_device_params(VULKAN) or [pytest.param(None, marks=pytest.mark.skip(
    reason="no Vulkan device"))])
def vulkan(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---- helpers for the op-table tests (test_ops.py, test_autograd_ops.py) -------------------------
def cast_input(x, dtype):
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


def reference_input(x):
    if isinstance(x, np.ndarray) and x.dtype.kind == "f" or isinstance(x, np.ndarray) and \
            x.dtype == ml_dtypes.bfloat16:
        return x.astype(np.float64)
    return x


def to_tensor(x, device, strided):
    if not isinstance(x, np.ndarray):
        return x
    if strided and x.ndim >= 2:
        return vk.tensor(np.ascontiguousarray(x.swapaxes(0, 1)), device=device).swapaxes(0, 1)
    if strided and x.ndim == 1 and x.size > 1:
        return vk.tensor(np.repeat(x, 2), device=device)[::2]
    return vk.tensor(x, device=device)


def tolerance(dtype, length):
    scale = max(1.0, sqrt(length))
    if dtype == "bfloat16":
        return dict(rtol=1.6e-2 * scale, atol=1.6e-2 * scale)
    return dict(rtol=2e-5 * scale, atol=2e-5 * scale)
