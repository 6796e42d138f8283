"""The Vulkan arena grows into chunks: allocations past one chunk open another, kernels whose
operands live in different chunks (elementwise, matmul, conv, a LeNet5 training step, its
compiled replay) compute what they compute in one chunk, bit for bit, steady steps still create
and allocate nothing, and a tensor larger than one binding can address is refused.

The multi-chunk cases run in a child process with 1 MiB chunks (VKGRAD_ARENA_CHUNK_MB, read
when vkgrad opens the device), against the same computations in this process's arena, whose
one chunk holds them all."""
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad.backend.vulkan import (CHUNK_SPAN, DEFAULT_CHUNK_BYTES, MAX_BUFFER_BYTES,
                                   TensorTooLargeError, VulkanBackend)
from vkgrad.kernels import ARENA_SLOTS

from conftest import lenet_trainer

pytestmark = pytest.mark.vulkan

TESTS = Path(__file__).resolve().parent
CHUNK_MB = 1
SIDE = 400  # a 400 x 400 float32 tensor (625 KiB): one to a 1 MiB chunk

CHILD = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import numpy as np
from test_arena_chunks import compute
np.savez(sys.argv[2], **compute(sys.argv[1]))
"""


KERNEL = """
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform Params { uint n; uint x; uint y; } p;
void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u)
        WORD(p.y + i) = floatBitsToUint(2.0 * uintBitsToFloat(WORD(p.x + i)));
}"""
DOUBLE = vk.Kernel("double_chunks", KERNEL.replace("WORD(p.y + i)", "ARENA(p.y + i)")
                   .replace("WORD(p.x + i)", "ARENA(p.x + i)"))
DOUBLE_ONE_BUFFER = vk.Kernel("double_one_buffer", KERNEL.replace("WORD(p.y + i)", "arena[p.y + i]")
                              .replace("WORD(p.x + i)", "arena[p.x + i]"))


def chunk_of(t):
    return t._data.block.word // CHUNK_SPAN


def _lenet_steps(device, compiled, tag, steps=4, batch=8):
    """Losses and parameters after `steps` seeded LeNet5 SGD steps (compiled: through
    vk.compile), and the counters of the last step, keyed `<name>_<tag>`."""
    model, _, step = lenet_trainer(device)
    run = vk.compile(step) if compiled else step
    rng = np.random.default_rng(1)
    losses = []
    for i in range(steps):
        x = vk.tensor(rng.standard_normal((batch, 1, 28, 28)), "float32", device)
        y = vk.tensor(rng.integers(0, 10, batch), "int32", device)
        if i == steps - 1:
            vk.reset_stats()
        losses.append(run(x, y).item())
    stats = vk.stats()
    out = {f"loss_{tag}": np.array(losses),
           f"steady_{tag}": np.array(
               [stats["pipelines_created"], stats["device_bytes_allocated"],
                stats["chunk_bindings_created"]])}
    for name, p in model.named_parameters():
        out[f"{name}_{tag}"] = p.numpy()
    return out


def compute(device):
    """Every multi-chunk case on `device`, as arrays; `chunks_*` say where operands lived."""
    rng = np.random.default_rng(0)
    out = {}
    a_np, b_np = (rng.standard_normal((SIDE, SIDE)).astype(np.float32) for _ in range(2))
    a, b = vk.tensor(a_np, device=device), vk.tensor(b_np, device=device)
    c = a * b + a  # the product lives in a third chunk, the sum in a fourth
    out["chunks_elementwise"] = np.array([chunk_of(a), chunk_of(b), chunk_of(c)])
    out["elementwise"] = c.numpy()
    h = a.astype("bfloat16")
    hb = h * b
    out["chunks_bf16"] = np.array([chunk_of(h), chunk_of(b), chunk_of(hb)])
    out["bf16"] = hb.astype("float32").numpy()
    d = vk.empty(a.shape, device=device)
    DOUBLE.launch(a.size, a.size, a, d)
    out["chunks_kernel"] = np.array([chunk_of(a), chunk_of(d)])
    out["kernel"] = d.numpy()
    try:
        DOUBLE_ONE_BUFFER.launch(a.size, a.size, a, d)
        out["one_buffer_refused"] = np.array("")
    except RuntimeError as error:
        out["one_buffer_refused"] = np.array(str(error))
    m = a @ b.T
    out["chunks_matmul"] = np.array([chunk_of(a), chunk_of(b), chunk_of(m)])
    out["matmul"] = m.numpy()
    chunks = len(vk.device(device).backend.pool.chunks)
    # in 1 MiB chunks, 8 or fewer: every kernel binds them all
    out.update(_lenet_steps(device, compiled=False, tag="e"))
    out.update(_lenet_steps(device, compiled=True, tag="c"))
    out["lenet_new_chunks"] = np.array(len(vk.device(device).backend.pool.chunks) - chunks)
    big = vk.tensor(rng.standard_normal(400_000).astype(np.float32), device=device)  # 1.5 MiB
    out["big"] = (big + 1.0).numpy()
    out["big_chunk_words"] = np.array(vk.device(device).backend.pool.chunks[chunk_of(big)])
    x = vk.tensor(rng.standard_normal((4, 3, 128, 128)).astype(np.float32), device=device)
    w = vk.tensor(rng.standard_normal((8, 3, 5, 5)).astype(np.float32), device=device)
    y = F.conv2d(x, w, padding=2)
    out["chunks_conv"] = np.array([chunk_of(x), chunk_of(w), chunk_of(y)])
    out["conv"] = y.numpy()
    out["chunks_before_p"] = np.array(len(vk.device(device).backend.pool.chunks))
    # more than 8 chunks: every kernel binds its own operands' chunks
    out.update(_lenet_steps(device, compiled=True, tag="p"))
    out.update(_lenet_steps(device, compiled=False, tag="q"))
    out["chunk_words"] = np.array(vk.device(device).backend.pool.chunks)
    return out


@pytest.fixture(scope="module")
def vulkan_device():
    found = [d for d in vk.devices() if d.kind == "vulkan"]
    if not found:
        pytest.skip("no Vulkan device")
    return found[0]


@pytest.fixture(scope="module")
def chunked(vulkan_device, tmp_path_factory):
    """compute() in a child process whose arena grows in 1 MiB chunks."""
    target = tmp_path_factory.mktemp("chunks") / "results.npz"
    env = {**os.environ, "VKGRAD_ARENA_CHUNK_MB": str(CHUNK_MB)}
    child = subprocess.run([sys.executable, "-c", CHILD, str(vulkan_device), str(target)], env=env,
                           capture_output=True, text=True, cwd=TESTS.parent)
    assert child.returncode == 0, child.stderr[-3000:]
    return dict(np.load(target))


@pytest.fixture(scope="module")
def one_chunk(vulkan_device):
    return compute(str(vulkan_device))


@pytest.mark.parametrize("case", ["elementwise", "bf16", "kernel", "matmul", "conv"])
def test_kernels_with_operands_in_different_chunks_match_one_chunk(chunked, one_chunk, case):
    where = chunked[f"chunks_{case}"]
    assert len(set(where.tolist())) > 1, where  # the operands live in different chunks
    np.testing.assert_array_equal(chunked[case], one_chunk[case])


def test_a_kernel_that_addresses_one_buffer_is_refused_across_chunks(chunked):
    message = str(chunked["one_buffer_refused"])
    assert "double_one_buffer" in message and "ARENA(w)" in message, message


def test_a_request_larger_than_the_chunk_size_gets_a_chunk_of_its_size(chunked, one_chunk):
    np.testing.assert_array_equal(chunked["big"], one_chunk["big"])
    assert chunked["big_chunk_words"] == 400_000
    sizes = chunked["chunk_words"].tolist()
    assert len(sizes) >= 5 and sizes[:2] == [CHUNK_MB << 18] * 2, sizes
    assert all(size >= CHUNK_MB << 18 for size in sizes), sizes


def test_training_across_chunks_equals_one_chunk_and_replays_bit_for_bit(chunked, one_chunk):
    assert chunked["lenet_new_chunks"] >= 2, chunked["lenet_new_chunks"]
    assert chunked["chunks_before_p"] > ARENA_SLOTS
    names = [k[:-2] for k in chunked if k.endswith("_e") and not k.startswith("steady")]
    assert len(names) > 5
    for name in names:
        for tag in "ecpq":  # compiled (c, p) and eager (e, q), in 8 chunks or fewer and more
            key = f"{name}_{tag}"
            np.testing.assert_array_equal(chunked[key], one_chunk[f"{name}_e"], err_msg=key)


def test_steady_steps_across_chunks_create_and_allocate_nothing(chunked):
    for tag in "ec":  # nothing at all, bindings of chunks included
        assert chunked[f"steady_{tag}"].tolist() == [0, 0, 0], tag
    for tag in "pq":  # past 8 chunks: no pipeline, no memory
        assert chunked[f"steady_{tag}"].tolist()[:2] == [0, 0], tag


def test_a_tensor_larger_than_one_binding_is_refused_changing_nothing(vulkan):
    backend = vulkan.backend
    limit = backend.max_chunk_bytes
    before, chunks = backend.memory_stats(), len(backend.pool.chunks)
    vk.reset_stats()
    with pytest.raises(TensorTooLargeError) as error:
        vk.empty(limit // 4 + 1, device=vulkan)
    assert isinstance(error.value, MemoryError)
    message = str(error.value)
    assert str(limit // 4 * 4 + 4) in message and str(limit) in message
    assert "maxStorageBufferRange" in message
    assert backend.memory_stats() == before and len(backend.pool.chunks) == chunks
    assert vk.stats()["device_bytes_allocated"] == 0
    vk.empty(limit // 4, device=vulkan)  # the largest that one binding addresses is fine


def test_the_arena_stops_at_its_limit(tmp_path):
    code = ("import vkgrad as vk\n"
            "keep = [vk.empty(200_000, device='vulkan') for _ in range(4)]\n"
            "try:\n"
            "    keep += [vk.empty(200_000, device='vulkan') for _ in range(20)]\n"
            "except MemoryError as e:\n"
            "    print('refused', len(keep), vk.device('vulkan').backend.memory_stats()"
            "['arena_chunks'], e)\n")
    env = {**os.environ, "VKGRAD_ARENA_CHUNK_MB": "1", "VKGRAD_ARENA_MB": "4"}
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, cwd=TESTS.parent)
    assert child.returncode == 0, child.stderr[-3000:]
    words = child.stdout.split()
    assert words[:3] == ["refused", "4", "4"], child.stdout  # 4 chunks of 1 MiB, one each
    assert "VKGRAD_ARENA_MB" in child.stdout


def test_chunks_fit_the_devices_allocation_and_binding_limits(monkeypatch):
    """A chunk (so the staging buffer and any one tensor too) is never larger than one
    allocation may be (maxMemoryAllocationSize), one binding addresses (maxStorageBufferRange)
    or Kompute sizes (MAX_BUFFER_BYTES), in 64-byte units: from fake limits dicts. Nothing else
    caps it (operands' slots travel in a push word of their own, not in their starts); a new
    chunk is DEFAULT_CHUNK_BYTES where one may be larger."""
    monkeypatch.delenv("VKGRAD_ARENA_CHUNK_MB", raising=False)
    monkeypatch.delenv("VKGRAD_ARENA_MB", raising=False)
    base = {"max_storage_buffer_range": 1 << 28, "device_local_heap_size": 8 << 30,
            "storage_buffer_array_dynamic_indexing": True}
    for limits, most in [({"max_memory_allocation_size": (3 << 20) + 63}, 3 << 20),
                         ({"max_memory_allocation_size": 0}, 1 << 28),  # not reported: 0
                         ({"max_storage_buffer_range": (1 << 20) - 1}, (1 << 20) - 64),
                         ({"max_memory_allocation_size": 1 << 40}, 1 << 28),
                         ({"max_storage_buffer_range": 1 << 31}, 1 << 31),
                         ({"max_storage_buffer_range": 1 << 32}, MAX_BUFFER_BYTES)]:
        fake = SimpleNamespace()
        VulkanBackend._set_arena_limits(fake, {**base, **limits})
        assert fake.max_chunk_bytes == most, limits
        assert fake.chunk_bytes == min(most, DEFAULT_CHUNK_BYTES), limits
        assert fake.arena_limit == 8 << 30
    monkeypatch.setenv("VKGRAD_ARENA_CHUNK_MB", "64")  # asked for more than an allocation takes
    fake = SimpleNamespace()
    VulkanBackend._set_arena_limits(fake, {**base, "max_memory_allocation_size": 16 << 20})
    assert fake.chunk_bytes == 16 << 20
