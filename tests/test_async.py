"""Asynchronous submission on Vulkan: submitting does not wait, the host waits only to read a
value, ordering between dispatches and submissions comes from barriers placed where a hazard is,
and a compiled step's command buffer is recorded once and submitted again on every call.
Run under scripts/vk-validate.sh, these tests are also the proof that the barriers suffice."""
import gc

import numpy as np
import pytest

import vkgrad as vk
from vkgrad.backend.vulkan import ARENA, MAX_TRACKED, STAGING, Hazards

from conftest import lenet_trainer


def _batches(device, count, batch=8):
    rng = np.random.default_rng(0)
    return [(vk.tensor(rng.standard_normal((batch, 1, 28, 28)), "float32", device),
             vk.tensor(rng.integers(0, 10, batch), "int32", device)) for _ in range(count)]


def test_hazards_order_only_dependent_ranges():
    h = Hazards()
    h.add([(ARENA, 0, 16)], [(ARENA, 16, 32)])
    assert not h.conflicts([(ARENA, 0, 16)], [(ARENA, 32, 48)])   # read-read, disjoint writes
    assert not h.conflicts([(ARENA, 0, 16)], [(STAGING, 16, 32)])  # another buffer
    assert h.conflicts([(ARENA, 20, 24)], [(ARENA, 64, 80)])       # read after write
    assert h.conflicts([], [(ARENA, 8, 9)])                        # write after read
    assert h.conflicts([], [(ARENA, 31, 40)])                      # write after write
    assert h.conflicts(None, None)                                 # undeclared: anything
    h.clear()
    assert not h.conflicts(None, None)
    h.add(None, None)
    assert h.conflicts([], [(STAGING, 0, 1)])
    h.clear()
    for i in range(MAX_TRACKED):  # independent, but past what is worth checking
        h.add([], [(ARENA, i, i + 1)])
    assert h.conflicts([], [(ARENA, 1000, 1001)])


def test_independent_kernels_share_a_barrier(vulkan):
    x = vk.tensor(np.arange(64, dtype=np.float32), device=vulkan)
    vk.synchronize()
    vk.reset_stats()
    a = x + 1  # reads x
    b = x * 2  # reads x too: no hazard with a
    c = a + b  # reads both: one barrier
    vk.synchronize()
    stats = vk.stats()
    # one barrier before c, one ending the submission
    assert stats["dispatches"] == 3 and stats["barriers"] == 2, stats
    assert stats["submits"] == 1 and stats["host_syncs"] == 1, stats
    np.testing.assert_array_equal(c.numpy(), np.arange(64) * 3 + 1)


@pytest.mark.parametrize("n", [64, 256])  # lavapipe: DIRECT, the tiled GEMM
def test_unrelated_writer_waits_for_a_tiled_gemm_only(vulkan, n):
    """A kernel writing words a GEMM never reads shares its barrier with the DIRECT GEMM, but
    waits for the tiled one: that kernel's read-only view of the arena counts, for the
    validation layer, as reading all of it (Hazards; vk-validate.sh reported a write after
    read there)."""
    from vkgrad.ops.linalg import DIRECT, _variant
    tiled = _variant(vk.device(vulkan).backend, n, n, n) != DIRECT
    rng = np.random.default_rng(0)
    a, b = (vk.tensor(rng.standard_normal((n, n)), "float32", vulkan) for _ in range(2))
    x = vk.tensor(np.arange(16, dtype=np.float32), device=vulkan)
    vk.synchronize()
    vk.reset_stats()
    c = a @ b
    d = x + 1  # reads and writes nothing of the product's
    vk.synchronize()
    stats = vk.stats()
    # (a barrier before d after the tiled GEMM) and one ending the submission
    assert stats["dispatches"] == 2 and stats["barriers"] == 1 + tiled, stats
    np.testing.assert_allclose(c.numpy(), a.numpy() @ b.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(d.numpy(), np.arange(16) + 1)


def test_freed_block_reused_while_queued_work_reads_it(vulkan):
    # b's kernel reads a's block; a dies and a new tensor is written into the same words, all
    # before anything is submitted: the writer must wait for the reader
    vk.synchronize()
    a = vk.full((1024,), 3.0, device=vulkan)
    word = a._data.block.word
    b = a * 2
    del a
    gc.collect()
    c = vk.full((1024,), 5.0, device=vulkan)
    assert c._data.block.word == word  # the freed block was reused
    d = c + 1
    np.testing.assert_array_equal(b.numpy(), np.full(1024, 6.0, np.float32))
    np.testing.assert_array_equal(d.numpy(), np.full(1024, 6.0, np.float32))


def test_uploads_and_eager_steps_queue_without_waiting(vulkan):
    _, _, step = lenet_trainer(vulkan)
    batches = _batches(vulkan, 3)
    reference = [step(x, y).item() for x, y in batches]
    _, _, step = lenet_trainer(vulkan)
    vk.reset_stats()
    batches = _batches(vulkan, 3)  # uploads, queued
    losses = [step(x, y) for x, y in batches]
    assert vk.stats()["host_syncs"] == 0, vk.stats()
    first = losses[0].item()
    assert vk.stats()["host_syncs"] == 1, vk.stats()  # that wait covered all three steps
    assert [first] + [loss.item() for loss in losses[1:]] == reference  # bit for bit


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_queued_compiled_steps_equal_synchronous_run(vulkan, optimizer):
    batches = _batches(vulkan, 6)
    model, _, step = lenet_trainer(vulkan, optimizer=optimizer)
    compiled = vk.compile(step)
    # read after every step; "* 1.0" as below, so its pipeline exists before the counts
    reference = [(compiled(x, y) * 1.0).item() for x, y in batches]
    params = [p.numpy().copy() for p in model.parameters()]

    model, _, step = lenet_trainer(vulkan, optimizer=optimizer)
    compiled = vk.compile(step)
    losses = [compiled(x, y).item() for x, y in batches[:3]]  # records, then replays
    capture = next(iter(compiled._captures.values()))
    recorded = len(capture.recording.dispatches)
    vk.reset_stats()
    queued = [compiled(x, y) * 1.0 for x, y in batches[3:]]  # kept (exact); nothing read yet
    stats = vk.stats()
    assert capture.replays >= 3 and len(compiled._captures) == 1
    assert stats["host_syncs"] == 0, stats
    # per step: the "* 1.0" is recorded, the step is not; three copies (vkCmdCopyBuffer): one
    # into each of the two arguments, the loss to staging (recorded with the step)
    assert stats["dispatches_recorded"] == 3, stats
    assert stats["dispatches"] == 3 * (recorded + 1), (stats, recorded)
    assert stats["copies"] == 3 * 3, stats
    # per step: one submission, of the copies (after the last step's "* 1.0") and the step
    assert stats["submits"] == 3, stats
    # at most one barrier per dispatch, and fewer: independent kernels share one
    assert stats["barriers"] < stats["dispatches"], stats
    assert stats["pipelines_created"] == 0 and stats["device_bytes_allocated"] == 0, stats
    losses.append(queued[0].item())
    assert vk.stats()["host_syncs"] == 1  # that wait covered all three steps
    losses += [loss.item() for loss in queued[1:]]
    assert losses == reference  # bit for bit
    for p, q in zip(model.parameters(), params):
        np.testing.assert_array_equal(p.numpy(), q)


def test_dropping_a_step_while_it_is_queued(vulkan, rng):
    # the recording's command buffer may still be running: it is kept until the device is done
    compiled = vk.compile(lambda a: (a * 2).sum())
    x = rng.standard_normal(100).astype(np.float32)
    compiled(vk.tensor(x, device=vulkan)).item()
    out = compiled(vk.tensor(x, device=vulkan))
    del compiled
    gc.collect()
    np.testing.assert_allclose(out.item(), (x * 2).sum(), rtol=1e-5)
