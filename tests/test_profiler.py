"""vk.profile(): host time per op, device time per kernel, and VKGRAD_PROFILE=1."""
import subprocess
import sys

import numpy as np
import pytest

import vkgrad as vk
from vkgrad.backend.vulkan import timestamp_seconds, timestamp_support
from vkgrad.profiler import NoDeviceTimes


def test_profile_counts_ops_and_kernels(device):
    x = vk.tensor(np.linspace(-1, 1, 4096), "float32", device, requires_grad=True)
    w = vk.tensor(np.linspace(0, 1, 4096), "float32", device, requires_grad=True)
    vk.synchronize()
    vk.reset_stats()
    with vk.profile() as prof:
        loss = ((x * w).tanh() ** 2).sum()
        loss.backward()
        loss.item()
    ops = prof.ops
    assert ops["mul"][0] >= 1 and ops["tanh"][0] == 1 and ops["pow"][0] >= 1  # pow: its rule too
    assert ops["tanh backward"][0] == 1 and ops["pow backward"][0] == 1
    assert all(row[1] >= 0 for row in ops.values())
    assert "tanh" in prof.table() and "total" in prof.table()
    dispatches = sum(n for n, _ in prof.kernels.values())
    assert dispatches == vk.stats()["dispatches"]
    if device.kind == "vulkan":
        assert dispatches > 0 and sum(row[3] for row in ops.values()) == dispatches
        if device.backend.timestamp_bits:
            assert prof.timed and sum(s for _, s in prof.kernels.values()) > 0
            assert ops["tanh"][2] > 0  # its kernel's device time
    else:
        assert dispatches == 0
    # profiling off again: nothing more is recorded
    before = dict(prof.ops)
    (x * 2).sum()
    assert dict(prof.ops) == before


def test_profile_environment_variable():
    code = ("import vkgrad as vk\n"
            "x = vk.ones(100, device='vulkan' if vk.devices()[-1].kind == 'vulkan' else 'host')\n"
            "(x * 3).sum().item()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "VKGRAD_PROFILE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "vkgrad profile" in out.stdout and "mul" in out.stdout


def test_timestamp_differences_wrap_at_the_valid_bits():
    """A 36-bit counter that wraps between two stamps still gives the time between them, bits
    above the valid ones are ignored, and ticks count timestampPeriod nanoseconds each."""
    top = 1 << 36
    ticks = [top - 5, 3, 10, (7 << 40) | 12]  # wraps after the first; garbage high bits last
    assert timestamp_seconds(ticks, 36, 2.0) == pytest.approx([16e-9, 14e-9, 4e-9], rel=1e-15)
    assert timestamp_seconds([5, 2 ** 64 - 1], 64, 1.0) == pytest.approx([(2 ** 64 - 6) * 1e-9],
                                                                       rel=1e-15)


def test_timestamp_support_from_the_device_limits():
    """The limits that decide whether dispatches can be timed, from fake limits dicts: each
    refusal names the device and the limit."""
    info = {"device_name": "Fake GPU", "timestamps_supported": True, "timestamp_period": 1.0}
    family = {"compute_queue_family": 0, "timestamp_valid_bits": 48}
    assert timestamp_support(info, family) == (48, None)
    assert timestamp_support(info, None) == (36, None)  # what timestampComputeAndGraphics promises
    bits, why = timestamp_support(info, {**family, "timestamp_valid_bits": 0})
    assert bits == 0 and "Fake GPU" in why and "timestampValidBits 0" in why
    bits, why = timestamp_support({**info, "timestamps_supported": False}, family)
    assert bits == 0 and "Fake GPU" in why and "timestampComputeAndGraphics" in why
    bits, why = timestamp_support({**info, "timestamp_period": 0.0}, family)
    assert bits == 0 and "timestampPeriod" in why


def test_profile_on_a_device_without_timestamps(vulkan):
    """Counts without device times, the table saying why; device_times=True refuses, naming the
    device. (The device's limits are replaced by a queue family with no timestamp bits.)"""
    backend = vulkan.backend
    real = backend.timestamp_bits, backend._timestamps
    bits, why = timestamp_support(backend.info, {"compute_queue_family": 0,
                                                 "timestamp_valid_bits": 0})
    backend._timestamps = (bits, why)
    try:
        x = vk.tensor(np.linspace(-1, 1, 1000), "float32", vulkan)
        with vk.profile() as prof:
            (x.tanh() * 2).sum().item()
        assert not prof.timed and sum(n for n, _ in prof.kernels.values()) > 0
        assert sum(s for _, s in prof.kernels.values()) == 0
        assert why in prof.table() and vulkan.name in why
        with pytest.raises(NoDeviceTimes, match="timestampValidBits 0"):
            with vk.profile(device_times=True):
                pass
    finally:
        backend._timestamps = real[1]
    if backend.timestamp_bits:  # the real device: strict profiling times every dispatch
        with vk.profile(device_times=True) as prof:
            (x.tanh() * 2).sum().item()
        assert prof.timed and prof.ops["tanh"][2] > 0
