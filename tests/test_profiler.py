"""vk.profile(): host time per op, device time per kernel, and VKGRAD_PROFILE=1."""
import subprocess
import sys

import numpy as np

import vkgrad as vk


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
        if device.backend.info.get("timestamps_supported"):
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
