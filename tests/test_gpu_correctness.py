"""Behaviour that lavapipe gives for free and a GPU driver need not (issue 17).

- NaN and infinities through the ops that must test for them: the shaders test bits, never
  isnan/isinf, which a driver may fold to false under fast math. The inputs include the NaNs
  nearest infinity (0x7f800001, 0xff800001) and the largest finite float, so a bit test off by one
  fails here.
- float -> integer casts, which GLSL leaves undefined for NaN, infinities and values out of range:
  docs/numerics.md defines them (truncate, saturate, NaN to 0), on the host and the device alike.
- Grids past 65,535 workgroups: kernels loop over the rest; user kernels refuse what they would
  skip. Device limits (shared memory, workgroup size) are read from the SPIR-V and checked.
"""
import math

import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad import kernels

# widening a signalling NaN (0x7f800001) to float64 quiets it, and numpy warns about that
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")

F32 = np.array([0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7f800000, 0xff800000, 0x7f7fffff,
                0xff7fffff, 0x3fc00000, 0xbfc00000, 0, 0x80000000], np.uint32).view(np.float32)
# the same in bf16, whose NaN nearest infinity is 0x7f81 (0x7f810000 as a float32)
BF16 = np.array([0x7fc0, 0xffc0, 0x7f81, 0xff81, 0x7f80, 0xff80, 0x7f7f, 0xff7f, 0x3fc0, 0xbfc0, 0,
                 0x8000], np.uint16).view(vk.bfloat16.np_dtype)


def _specials(dtype):
    return F32 if dtype == "float32" else BF16


def _values(t):
    return t.numpy().astype(np.float64)


def _same(result, expected):
    np.testing.assert_array_equal(result, np.asarray(expected, np.float64))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nan_and_infinities_through_unary_ops(device, dtype):
    x = _specials(dtype)
    wide = x.astype(np.float64)
    t = vk.tensor(x, device=device)
    _same(_values(vk.relu(t)), np.maximum(wide, 0))  # NaN stays NaN
    _same(_values(vk.clip(t, -1.0, 1.0)), np.clip(wide, -1, 1))
    _same(_values(vk.isnan(t)), np.isnan(wide))
    _same(_values(vk.isinf(t)), np.isinf(wide))
    _same(_values(vk.isfinite(t)), np.isfinite(wide))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nan_and_infinities_through_maximum_and_minimum(device, dtype):
    x = _specials(dtype)
    a, b = np.meshgrid(x, x, indexing="ij")  # every pair, both orders
    ta, tb = vk.tensor(a, device=device), vk.tensor(b, device=device)
    wa, wb = a.astype(np.float64), b.astype(np.float64)
    _same(_values(vk.maximum(ta, tb)), np.maximum(wa, wb))
    _same(_values(vk.minimum(ta, tb)), np.minimum(wa, wb))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nan_and_infinities_through_argmax_and_max(device, dtype):
    # Each row puts one special first, then the rest: NaN wins, the first of equal values wins.
    x = _specials(dtype)
    rows = np.stack([np.roll(x, -k) for k in range(len(x))])
    t = vk.tensor(rows, device=device)
    wide = rows.astype(np.float64)
    np.testing.assert_array_equal(t.argmax(axis=1).numpy(), np.argmax(wide, axis=1))
    np.testing.assert_array_equal(t.argmin(axis=1).numpy(), np.argmin(wide, axis=1))
    _same(_values(t.max(axis=1)), np.max(wide, axis=1))
    _same(_values(t.min(axis=1)), np.min(wide, axis=1))
    no_nan = np.stack([np.roll(x[4:], -k) for k in range(len(x) - 4)])  # infinity wins, 0 == -0
    t = vk.tensor(no_nan, device=device)
    np.testing.assert_array_equal(t.argmax(axis=1).numpy(), np.argmax(no_nan, axis=1))
    np.testing.assert_array_equal(t.argmin(axis=1).numpy(), np.argmin(no_nan, axis=1))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nan_and_infinities_through_long_reductions(device, dtype, rng):
    # rows longer than a workgroup: the partial results of many threads combine
    rows = rng.standard_normal((3, 5000)).astype(np.float32)
    rows[:, 100], rows[:, 4000] = np.inf, -np.inf
    rows[1, 2000] = rows[1, 3000] = np.nan
    rows[2, 4999] = np.nan
    rows = rows.astype(vk.dtype(dtype).np_dtype)
    t, wide = vk.tensor(rows, device=device), rows.astype(np.float64)
    np.testing.assert_array_equal(t.argmax(axis=1).numpy(), [100, 2000, 4999])
    np.testing.assert_array_equal(t.argmin(axis=1).numpy(), [4000, 2000, 4999])
    _same(_values(t.max(axis=1)), np.max(wide, axis=1))
    _same(_values(t.min(axis=1)), np.min(wide, axis=1))
    _same(_values(t.max()), np.nan)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nan_and_infinities_through_max_pool(device, dtype):
    # 2x2 windows over pairs of specials (every ordered pair): NaN wins, then the larger value.
    x = _specials(dtype)
    a, b = np.meshgrid(x, x, indexing="ij")
    img = np.stack([a, b], axis=-1).reshape(1, 1, len(x), 2 * len(x))
    img = np.repeat(img, 2, axis=2)  # rows twice: each 2x2 window holds the pair twice
    out = F.max_pool2d(vk.tensor(img, device=device), kernel_size=2, stride=2)
    wide = img.astype(np.float64).reshape(len(x), 2, len(x), 2)
    expected = np.where(np.isnan(wide).any(axis=(1, 3)), np.nan, wide.max(axis=(1, 3)))
    _same(_values(out)[0, 0], expected)


# ---- float -> integer casts ----------------------------------------------------------------------
CAST_INPUTS = [math.nan, -math.nan, math.inf, -math.inf, -1.0, 3e9, -3e9, 2.75, -2.75, -0.5, 255.5,
               256.0, 300.0, 2147483520.0, 2147483648.0, 4294967040.0, 4294967296.0, -2147483648.0]


def _defined_cast(v, np_dtype):
    """docs/numerics.md's rule, one Python float at a time: NaN 0, truncate, saturate."""
    if math.isnan(v):
        return 0
    info = np.iinfo(np_dtype)
    return int(max(info.min, min(info.max, math.trunc(v) if math.isfinite(v) else v)))


@pytest.mark.parametrize("src", ["float32", "bfloat16"])
@pytest.mark.parametrize("dst", ["int32", "uint32", "uint8"])
def test_float_to_int_casts_are_defined(device, src, dst):
    x = np.array(CAST_INPUTS, np.float32).astype(vk.dtype(src).np_dtype)
    expected = [_defined_cast(float(v), np.dtype(dst)) for v in x.astype(np.float64)]
    result = vk.tensor(x, device=device).astype(dst).numpy()
    assert result.dtype == np.dtype(dst)
    assert result.tolist() == expected


@pytest.mark.parametrize("src", ["float32", "bfloat16"])
def test_float_to_bool_is_nonzero(device, src):
    x = np.array(CAST_INPUTS + [0.0, -0.0], np.float32).astype(vk.dtype(src).np_dtype)
    result = vk.tensor(x, device=device).astype("bool").numpy()
    assert result.tolist() == [True] * len(CAST_INPUTS) + [False, False]  # NaN is true


@pytest.mark.parametrize("dst", ["int32", "uint32", "uint8"])
def test_float_values_written_into_integer_tensors_cast_as_astype(device, dst):
    x = np.array(CAST_INPUTS, np.float32)
    expected = [_defined_cast(float(v), np.dtype(dst)) for v in x]
    t = vk.zeros(len(x), dtype=dst, device=device)
    t[:] = vk.tensor(x, device=device)  # a float tensor: gather.comp converts
    assert t.numpy().tolist() == expected
    for i, v in enumerate(x):
        t[i] = float(v)  # a Python float: converted on the host, as a push constant
    assert t.numpy().tolist() == expected


# ---- grids past 65,535 workgroups ----------------------------------------------------------------
def test_kernels_cover_more_than_65535_workgroups(vulkan):
    # More elements than one capped grid has invocations (65,535 x 256): the kernels loop over the
    # rest. About 67 MB (lavapipe's arena is 128 MB). elementwise.comp and gather.comp compute 4
    # elements per invocation: tests/test_kernel_indexing.py takes them past their grid.
    n = vk.Kernel.MAX_THREADS + 1000
    filled = vk.arange(n, dtype="int32", device=vulkan)  # random.comp
    assert (filled.numpy() == np.arange(n, dtype=np.int32)).all()


SCALE = vk.Kernel("scale_strided", """
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 256) in;
layout(push_constant) uniform Params { uint n; uint x; uint y; } p;
void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * gl_WorkGroupSize.x)
        arena[p.y + i] = floatBitsToUint(2.0 * uintBitsToFloat(arena[p.x + i]));
}""")


def test_user_kernel_grid_is_capped_with_a_clear_error(vulkan):
    x = vk.arange(1000, dtype="float32", device=vulkan)
    y = vk.zeros(1000, device=vulkan)
    SCALE.launch(256, x.size, x, y)  # one workgroup, looping over 1000 elements
    np.testing.assert_array_equal(y.numpy(), 2.0 * np.arange(1000, dtype=np.float32))
    before = vulkan.backend.counters.dispatches
    with pytest.raises(ValueError, match=r"scale_strided: 16776961 threads .*Kernel.MAX_THREADS"):
        SCALE.launch(vk.Kernel.MAX_THREADS + 1, x.size, x, y)
    assert vulkan.backend.counters.dispatches == before  # nothing queued


# ---- device limits -------------------------------------------------------------------------------
def test_shared_memory_and_workgroup_size_read_from_spirv(vulkan):
    from vkgrad.backend.vulkan import SPIRV_DIR, spirv_needs
    # matmul.comp's sizes are specialization constants (spec[i] is constant_id i): BK rows of
    # BM + PAD and BN + PAD floats, a workgroup of WG threads, defaults without spec
    spirv = (SPIRV_DIR / kernels.spirv_name("matmul", "")).read_bytes()
    pad = kernels.MATMUL_PAD
    assert spirv_needs(spirv) == (16 * (64 + 64 + 2 * pad) * 4, (256, 1, 1))
    for wg, bm, bn, bk in [(256, 128, 128, 8), (128, 32, 64, 16), (256, 16, 256, 16)]:
        spec = kernels.LAYOUTS["matmul"].spec(OUT_DT=0, A_DT=0, B_DT=0, WG=wg, BM=bm, BN=bn, BK=bk)
        assert spirv_needs(spirv, spec) == (bk * (bm + bn + 2 * pad) * 4, (wg, 1, 1))
    reduce = (SPIRV_DIR / kernels.spirv_name("reduce", "float")).read_bytes()
    assert spirv_needs(reduce) == (256 * 4 + 256 * 4, (256, 1, 1))  # values and indices


BIG_SHARED = vk.Kernel("big_shared", """
#version 450
layout(local_size_x = 256) in;
shared float tile[16384];  // 64 KiB: more than lavapipe's 32 KiB
layout(std430, binding = 0) buffer Arena { uint arena[]; };
layout(push_constant) uniform Params { uint x; } p;
void main() {
    tile[gl_LocalInvocationID.x] = 1.0;
    barrier();
    arena[p.x + gl_LocalInvocationID.x] = floatBitsToUint(tile[255u - gl_LocalInvocationID.x]);
}""")


def test_kernel_beyond_the_device_limits_is_refused_clearly(vulkan):
    x = vk.zeros(256, device=vulkan)
    before = vulkan.backend.counters.dispatches
    limit = vulkan.info()["shared_memory_size"]
    with pytest.raises(RuntimeError, match=rf"big_shared.* needs 65536 bytes of shared memory; "
                                           rf".* allows {limit}"):
        BIG_SHARED.launch(256, x)
    assert vulkan.backend.counters.dispatches == before
