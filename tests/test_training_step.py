"""The structural cost of a steady-state training step on Vulkan (the benchmarks issue's targets):
one submit and one host wait (reading the loss), no pipeline created, no device memory
allocated from the driver, and no growth of the arena in use from step to step."""
import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn.functional as F


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lenet5_step_counters(vulkan, dtype, optimizer):
    vk.manual_seed(0)
    model = vk.models.lenet5(device=vulkan, dtype=dtype)
    opt = (vk.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if optimizer == "sgd"
           else vk.optim.Adam(model.parameters(), lr=1e-3))
    rng = np.random.default_rng(0)
    x = vk.tensor(rng.standard_normal((8, 1, 28, 28)), dtype, vulkan)
    y = vk.tensor(rng.integers(0, 10, 8), "int32", vulkan)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    losses = [step() for _ in range(3)]  # warm-up: pipelines, optimizer state, pool sizes
    in_use = vulkan.backend.pool.in_use
    vk.reset_stats()
    losses.append(step())
    stats = vk.stats()
    assert stats["submits"] == 1 and stats["host_syncs"] == 1, stats  # the loss read
    assert stats["copies"] == 1, stats  # vkCmdCopyBuffer: the loss to staging
    assert stats["pipelines_created"] == 0 and stats["device_bytes_allocated"] == 0, stats
    assert stats["dispatches"] > 50, stats  # it did run the model
    # a barrier only before a dispatch that depends on earlier work, and one ending the submit:
    # independent kernels (the optimizer's per-parameter updates) share one
    assert stats["barriers"] < stats["dispatches"], stats
    assert vulkan.backend.pool.in_use == in_use  # memory of the step returned to the pool
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
