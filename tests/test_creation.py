"""Creation functions (arange, linspace, eye, empty, *_like) against numpy on every device."""
import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk


def as_f64(t):
    return t.numpy().astype(np.float64)


# ---- arange --------------------------------------------------------------------------------------
ARANGE = [(7,), (0,), (-3,), (2, 11, 3), (10, -1, -3), (-5, 5), (0.0, 1.0, 0.1), (-2.5, 2, 1),
          (1000.0, 1007.3, 0.7), (3, 3.5, 0.125), (1, 0, 1), (70001,)]


@pytest.mark.parametrize("args", ARANGE, ids=str)
def test_arange_matches_numpy(device, args):
    floating = any(isinstance(a, float) for a in args)
    t = vk.arange(*args, device=device)
    expected = np.arange(*args)  # float64 or int64: the values, before vkgrad's narrower default
    assert t.dtype == (vk.float32 if floating else vk.int32) and t.device == device
    np.testing.assert_array_equal(t.numpy(), np.arange(*args, dtype=t.dtype.np_dtype))
    np.testing.assert_allclose(as_f64(t), expected, rtol=1e-6)
    # numpy's rule in float32 (first and delta in float32), rounded to bf16 for bfloat16
    f32 = np.arange(*args, dtype=np.float32)
    np.testing.assert_array_equal(vk.arange(*args, dtype=vk.float32, device=device).numpy(), f32)
    np.testing.assert_array_equal(vk.arange(*args, dtype=vk.bfloat16, device=device).numpy(),
                                  f32.astype(ml_dtypes.bfloat16))
    np.testing.assert_array_equal(vk.arange(*args, dtype="int32", device=device).numpy(),
                                  np.arange(*args, dtype=np.int32))


def test_arange_other_integer_dtypes(device):
    np.testing.assert_array_equal(vk.arange(250, 256, dtype="uint8", device=device).numpy(),
                                  np.arange(250, 256, dtype=np.uint8))
    big = 2 ** 32 - 9
    np.testing.assert_array_equal(vk.arange(big, big + 7, 2, dtype="uint32", device=device).numpy(),
                                  np.arange(big, big + 7, 2, dtype=np.uint32))
    np.testing.assert_array_equal(vk.arange(np.int64(3), np.int64(9), device=device).numpy(),
                                  np.arange(3, 9, dtype=np.int32))


def test_arange_is_one_kernel_on_vulkan(vulkan):
    vk.synchronize()
    vk.reset_stats()
    t = vk.arange(0.5, 1000.5, dtype=vk.bfloat16, device=vulkan)
    assert vk.stats()["dispatches"] == 1  # made on the device: no upload
    np.testing.assert_array_equal(t.numpy(), np.arange(0.5, 1000.5, dtype=np.float32)
                                  .astype(ml_dtypes.bfloat16))


# ---- linspace ------------------------------------------------------------------------------------
LINSPACE = [(0, 1, 5, True), (-3.5, 8.25, 7, True), (2, -1, 13, False), (1e4, 1e4 + 1, 1001, True),
            (0, 1, 1, True), (0, 1, 1, False), (4, 9, 0, True), (-1, 1, 70001, True),
            (5, 5, 4, True)]


@pytest.mark.parametrize("start,stop,num,endpoint", LINSPACE, ids=str)
def test_linspace_matches_numpy(device, start, stop, num, endpoint):
    expected = np.linspace(start, stop, num, endpoint=endpoint)
    t = vk.linspace(start, stop, num, endpoint=endpoint, device=device)
    assert t.dtype == vk.float32 and t.shape == (num,)
    scale = max(abs(start), abs(stop))
    np.testing.assert_allclose(as_f64(t), expected, rtol=2e-7, atol=2e-7 * scale)
    if endpoint and num > 1:
        assert t.numpy()[-1] == np.float32(stop)  # the end point is exact, as numpy
    b = vk.linspace(start, stop, num, endpoint=endpoint, dtype=vk.bfloat16, device=device)
    np.testing.assert_allclose(as_f64(b), expected, rtol=2 ** -8, atol=2 ** -8 * scale)
    assert np.array_equal(b.numpy(), t.numpy().astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("start,stop,num,endpoint", [(0, 10, 11, True), (-7, 7, 5, True),
                                                     (-2.5, 2.5, 6, True), (0, 100, 8, False)])
def test_linspace_integer_dtypes_floor(device, start, stop, num, endpoint):
    expected = np.linspace(start, stop, num, endpoint=endpoint, dtype=np.int32)
    t = vk.linspace(start, stop, num, endpoint=endpoint, dtype=vk.int32, device=device)
    np.testing.assert_array_equal(t.numpy(), expected)


# ---- eye -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "uint8", "bool"])
@pytest.mark.parametrize("n,m,k", [(1, None, 0), (5, None, 0), (3, 7, 2), (7, 3, -2), (4, 4, 9),
                                   (4, 6, -9), (0, 3, 0), (300, 257, 1)], ids=str)
def test_eye_matches_numpy(device, n, m, k, dtype):
    t = vk.eye(n, m, k, dtype=dtype, device=device)
    expected = np.eye(n, m, k, dtype=vk.dtype(dtype).np_dtype)
    assert t.dtype == vk.dtype(dtype) and t.shape == expected.shape
    np.testing.assert_array_equal(t.numpy(), expected)


# ---- empty and *_like ---------------------------------------------------------------------------
def test_empty(device):
    t = vk.empty((3, 0, 2), device=device)
    assert t.shape == (3, 0, 2) and t.dtype == vk.float32 and t.device == device
    t = vk.empty(5, dtype=vk.bfloat16, device=device)
    assert t.shape == (5,) and t.dtype == vk.bfloat16


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
def test_like_functions(device, dtype, rng):
    values = rng.standard_normal((3, 5)) * 10
    x = vk.tensor(values.astype(vk.dtype(dtype).np_dtype), device=device)
    ref = x.numpy()
    for fn, expected in [(vk.zeros_like, np.zeros_like(ref)), (vk.ones_like, np.ones_like(ref)),
                         (lambda t: vk.full_like(t, 2.75), np.full_like(ref, 2.75))]:
        t = fn(x)
        assert t.dtype == x.dtype and t.device == device
        np.testing.assert_array_equal(t.numpy(), expected)
    e = vk.empty_like(x)
    assert e.shape == x.shape and e.dtype == x.dtype and e.device == device
    t = vk.ones_like(x, dtype=vk.uint8)
    assert t.dtype == vk.uint8 and t.numpy().tolist() == [[1] * 5] * 3
    h = vk.zeros_like(x, device="host")
    assert h.device == vk.device("host") and h.dtype == x.dtype
    from_numpy = vk.full_like(ref, -4, device=device)  # numpy arrays work as templates too
    np.testing.assert_array_equal(from_numpy.numpy(), np.full_like(ref, -4))


# ---- errors ------------------------------------------------------------------------------------
def test_bad_arguments(device):
    with pytest.raises(ValueError, match="step must not be zero"):
        vk.arange(0, 5, 0, device=device)
    with pytest.raises(ValueError, match="length"):
        vk.arange(0.0, float("inf"), device=device)
    with pytest.raises(TypeError, match="stop must be a real number"):
        vk.arange(0, "5", device=device)
    with pytest.raises(OverflowError, match="out of bounds for uint8"):
        vk.arange(250, 260, dtype="uint8", device=device)
    with pytest.raises(TypeError, match="bool"):
        vk.arange(2, dtype="bool", device=device)
    with pytest.raises(ValueError, match="-1, must be non-negative"):
        vk.linspace(0, 1, -1, device=device)
    with pytest.raises(ValueError, match=r"negative dimension in \(2, -3\)"):
        vk.eye(2, -3, device=device)
    with pytest.raises(ValueError, match="negative dimension"):
        vk.empty((2, -1), device=device)
    if device.kind == "vulkan":
        with pytest.raises(TypeError, match="float64 is not supported"):
            vk.arange(3.0, dtype=vk.float64, device=device)
