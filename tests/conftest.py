"""Shared fixtures: every test that takes `device` runs on the host and on each Vulkan device.

Vulkan parametrisations carry the `vulkan` marker, so `pytest -m vulkan` (make test-sync) runs
exactly the device tests. Where a Vulkan device exists, its tests run; they are never skipped.
"""
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
