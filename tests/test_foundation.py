"""The foundation: devices, the runtime's counters and synchronisation, bf16 packing, and the
first slice of Tensor (creation, + and *, sum, astype, transfers) on every device."""
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk
from vkgrad.kernels import ELEMENTWISE_CODES
from vkgrad.ops import elementwise

BF16 = ml_dtypes.bfloat16


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


# ---- devices -----------------------------------------------------------------------------------
def test_devices_lists_host_first_then_vulkan():
    devs = vk.devices()
    assert devs[0] == vk.device("host") and devs[0].kind == "host"
    for i, d in enumerate(devs[1:]):
        assert d.kind == "vulkan" and d.index == i and d.name
        info = d.info()
        for key in ("vendor", "device_type", "subgroup_size", "shared_memory_size",
                    "max_storage_buffer_range", "push_constants_size"):
            assert key in info
        assert info["push_constants_size"] >= 128 and info["subgroup_size"] >= 1


def test_best_vulkan_device_and_index(vulkan):
    best = vk.device("vulkan")
    order = ["discrete-gpu", "integrated-gpu", "virtual-gpu", "cpu", "other"]
    ranks = [order.index(d.info()["device_type"]) for d in vk.devices()[1:]]
    assert order.index(best.info()["device_type"]) == min(ranks)
    assert vk.device(f"vulkan:{vulkan.index}") == vulkan
    with pytest.raises(vk.VulkanUnavailable, match="vulkan:99"):
        vk.device("vulkan:99")
    with pytest.raises(ValueError, match="unknown device"):
        vk.device("cuda")


def test_env_var_sets_default_device(vulkan):
    r = run_python("import vkgrad as vk; print(vk.ones(3).device)", VKGRAD_DEVICE="vulkan")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(vk.device("vulkan"))


def test_without_vulkan_the_host_still_works():
    code = ("import vkgrad as vk\n"
            "assert (vk.ones(3) + 1).sum().item() == 6.0\n"
            "print([str(d) for d in vk.devices()])\n"
            "try:\n    vk.device('vulkan')\nexcept vk.VulkanUnavailable as e:\n    print('ERR', e)\n")
    r = run_python(code, VK_ICD_FILENAMES="/nonexistent.json", VK_DRIVER_FILES="/nonexistent.json")
    assert r.returncode == 0, r.stderr
    assert "['host']" in r.stdout
    assert "ERR" in r.stdout and "mesa-vulkan-drivers" in r.stdout


# ---- runtime -------------------------------------------------------------------------------------
def test_chain_of_200_dependent_dispatches_in_one_submit(vulkan, rng):
    """Ping-pong between two buffers: each dispatch reads what the previous one wrote."""
    backend = vulkan.backend
    x = rng.standard_normal(1001).astype(np.float32)
    ping = backend.from_numpy(x, vk.float32)
    pong = backend.empty(x.shape, vk.float32)
    backend.synchronize()
    vk.reset_stats()
    expected = x.copy()
    src, dst = ping, pong
    for k in range(200):
        c = np.float32(1 + (k % 7) * 1e-3)
        elementwise._launch_into(backend, ELEMENTWISE_CODES["mul"], dst, [src, float(c)], "float")
        expected = expected * c
        src, dst = dst, src
    counts = vk.stats()
    assert counts["dispatches"] == 200 and counts["submits"] == 0 and counts["host_syncs"] == 0
    got = backend.to_numpy(src)
    assert vk.stats()["submits"] == 1 and vk.stats()["copies"] == 1
    np.testing.assert_array_equal(got, expected)


def test_steady_loop_creates_no_pipelines_and_allocates_nothing(device):
    x = vk.ones((33, 7), device=device)
    y = (x * 2 + x).sum()
    y.item()
    vk.reset_stats()
    for _ in range(1000):
        y = (x * 2 + x).sum()
    assert y.item() == 33 * 7 * 3
    counts = vk.stats()
    assert counts["pipelines_created"] == 0 and counts["device_bytes_allocated"] == 0
    if device.kind == "vulkan":
        assert counts["dispatches"] == 3000
        assert counts["copies"] == 1  # vkCmdCopyBuffer: the result read back
        assert counts["host_syncs"] <= 2


# ---- bf16 packing --------------------------------------------------------------------------------
def test_device_bf16_widening_is_exact_for_all_patterns(vulkan):
    bits = np.arange(1 << 16, dtype=np.uint16)
    t = vk.tensor(bits.view(BF16), device=vulkan)
    got = t.astype(vk.float32).numpy()
    want = bits.view(BF16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_device_bf16_narrowing_matches_ml_dtypes_bit_for_bit(vulkan, rng):
    widened = (np.arange(1 << 16, dtype=np.uint32) << 16)
    ties = widened | 0x8000                     # exactly halfway: round to even
    near = widened | rng.integers(0, 1 << 16, widened.size, dtype=np.uint32)
    special = np.array([0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffffffff, 0x00000001,
                        0x007fffff, 0x80000001, 0x7f7fffff, 0x7f7f8000, 0], np.uint32)
    values = np.concatenate([widened, ties, near, special]).view(np.float32)
    got = vk.tensor(values, device=vulkan).astype(vk.bfloat16).numpy()
    with np.errstate(invalid="ignore"):
        want = values.astype(BF16)
    nan = np.isnan(want.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint16), want[~nan].view(np.uint16))


# ---- the first slice of Tensor -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [vk.float32, vk.bfloat16], ids=["f32", "bf16"])
def test_first_slice(device, dtype, rng):
    a = rng.standard_normal((5, 1, 3)).astype(np.float32)
    b = rng.standard_normal((4, 3)).astype(np.float32)
    ra, rb = a.astype(dtype.np_dtype), b.astype(dtype.np_dtype)
    ta, tb = vk.tensor(ra, device=device), vk.tensor(rb, device=device)
    assert ta.shape == (5, 1, 3) and ta.dtype is dtype and ta.device == device

    def f32(x):
        return np.asarray(x).astype(np.float32)

    tol = dict(rtol=1e-6, atol=1e-6) if dtype is vk.float32 else dict(rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(f32(ta + tb), f32((f32(ra) + f32(rb)).astype(dtype.np_dtype)), **tol)
    np.testing.assert_allclose(f32(ta * tb), f32((f32(ra) * f32(rb)).astype(dtype.np_dtype)), **tol)
    np.testing.assert_allclose(f32(ta * 2.5 + 1), f32(((f32(ra) * 2.5).astype(dtype.np_dtype)
                                                        .astype(np.float32) + 1)
                                                       .astype(dtype.np_dtype)), **tol)
    assert (ta + 1.0).dtype is dtype  # Python scalars are weak
    s = (ta * tb).sum()
    np.testing.assert_allclose(float(s), float((f32(ra) * f32(rb)).astype(dtype.np_dtype)
                                               .astype(np.float32).sum()), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(f32((ta + tb).sum(axis=(0, -1), keepdims=True)),
                               f32((f32(ra) + f32(rb)).astype(dtype.np_dtype)).sum(
                                   axis=(0, -1), keepdims=True), **tol)
    assert np.asarray(ta).dtype == dtype.np_dtype
    back = ta.astype(vk.float32).astype(dtype)
    np.testing.assert_array_equal(np.asarray(back), ra)


def test_creation_and_transfers(device):
    for dtype in (vk.float32, vk.bfloat16):
        np.testing.assert_array_equal(vk.zeros((2, 3), dtype=dtype, device=device).numpy(),
                                      np.zeros((2, 3), dtype.np_dtype))
        np.testing.assert_array_equal(vk.ones(5, dtype=dtype, device=device).numpy(),
                                      np.ones(5, dtype.np_dtype))
        np.testing.assert_array_equal(vk.full((3,), -2.5, dtype=dtype, device=device).numpy(),
                                      np.full(3, -2.5, dtype.np_dtype))
    x = vk.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    moved = x.to(device)
    assert moved.device == device
    np.testing.assert_array_equal(moved.to("host").numpy(), x.numpy())
    np.testing.assert_array_equal(moved.to(device).numpy(), x.numpy())  # device to device
    assert vk.tensor([1.5, 2]).dtype is vk.float32 and vk.tensor([1, 2]).dtype is vk.int32


def test_host_tensors_share_numpy_memory():
    a = np.arange(6, dtype=np.float32)
    t = vk.tensor(a)
    a[0] = 42
    assert t.numpy()[0] == 42


def test_mixed_devices_are_refused(vulkan):
    with pytest.raises(ValueError, match="different devices.*host.*vulkan"):
        vk.ones(3) + vk.ones(3, device=vulkan)


def test_bad_shapes_name_both_shapes(device):
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
        vk.ones((2, 3), device=device) + vk.ones(4, device=device)


def test_float64_is_host_only(vulkan):
    assert (vk.ones(2, dtype=vk.float64) * 2).dtype is vk.float64
    with pytest.raises(TypeError, match="float64 is not supported on vulkan"):
        vk.ones(2, dtype=vk.float64, device=vulkan)


_FAULTS_SCRIPT = """
import resource, numpy as np, vkgrad
counts = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = np.ones(4 << 20, np.float32), np.ones(4 << 20, np.float32)   # 16 MiB each
    del a, b
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(vkgrad.device("host").backend.keeps_freed_memory, *counts)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator only")
@pytest.mark.parametrize("setting", ["1", "0"])
def test_host_temporaries_reuse_freed_memory(setting):
    """Like a training step's temporaries, blocks freed and allocated again: with vkgrad's glibc
    settings the second round takes no page faults (with glibc's defaults each round faults
    its memory in afresh); VKGRAD_KEEP_FREED_MEMORY=0 leaves the defaults."""
    env = {**os.environ, "VKGRAD_KEEP_FREED_MEMORY": setting}
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    kept, faults = out[0] == "True", [int(v) for v in out[1:]]
    assert kept == (setting == "1")
    if kept:
        assert faults[1] < 50 and faults[2] < 50, faults
    else:
        assert min(faults[1:]) > 500, faults
