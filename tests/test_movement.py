"""concatenate, stack, split, pad, flip, roll, tile, repeat and cumsum: against numpy on every
device, for every dtype, with awkward shapes, strided and reversed inputs, and bad inputs."""
import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk

DTYPES = [vk.float32, vk.bfloat16, vk.int32, vk.bool_, vk.uint8]
DTYPE_IDS = ["f32", "bf16", "i32", "bool", "u8"]


def sample(rng, shape, dtype):
    """Random values of `dtype` (never all zeros)."""
    x = rng.standard_normal(shape) * 3
    if dtype is vk.bool_:
        return np.asarray(x > 0)
    if dtype is vk.uint8:
        return np.asarray(np.abs(x) * 40).astype(np.uint8)
    return np.asarray(x.astype(dtype.np_dtype))


def as_np(t):
    return np.asarray(t.numpy())


def views(x, device):
    """(tensor, numpy) pairs: x contiguous, transposed, and reversed with a step, as views."""
    t = vk.tensor(x, device=device)
    out = [(t, x)]
    if x.ndim >= 2:
        out.append((vk.tensor(np.ascontiguousarray(x.swapaxes(0, 1)), device=device)
                    .swapaxes(0, 1), x))
    if x.ndim >= 1 and x.shape[0]:
        doubled = np.repeat(x[::-1], 2, axis=0)
        out.append((vk.tensor(doubled, device=device)[::-2], x))
    return out


# ---- concatenate, stack, split ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_concatenate_and_stack(device, dtype, rng):
    # Odd piece sizes along the last axis: neighbouring packed elements come from different inputs.
    parts = [sample(rng, (3, n), dtype) for n in (5, 0, 1, 7, 2)]
    for pairs in zip(*[views(p, device) for p in parts if p.size]):  # each layout in turn
        ts, xs = zip(*pairs)
        np.testing.assert_array_equal(as_np(vk.concatenate(ts, axis=-1)), np.concatenate(xs, 1))
    ts = [vk.tensor(p, device=device) for p in parts]
    np.testing.assert_array_equal(as_np(vk.concatenate(ts, 1)), np.concatenate(parts, 1))
    rows = [sample(rng, (n, 4), dtype) for n in (1, 3, 2)]
    np.testing.assert_array_equal(as_np(vk.concatenate([vk.tensor(r, device=device)
                                                        for r in rows])), np.concatenate(rows))
    same = [sample(rng, (2, 3), dtype) for _ in range(3)]
    for axis in (0, 1, 2, -1, -3):
        got = vk.stack([vk.tensor(s, device=device) for s in same], axis=axis)
        np.testing.assert_array_equal(as_np(got), np.stack(same, axis=axis))
    assert vk.stack([vk.tensor(np.float32(1), device=device)] * 2).shape == (2,)


def test_concatenate_packed_pieces_do_not_race(device, rng):
    for dtype in (vk.bool_, vk.uint8, vk.bfloat16):
        parts = [sample(rng, (257, n), dtype) for n in (1, 2, 3, 5, 1, 7)]
        got = vk.concatenate([vk.tensor(p, device=device) for p in parts], axis=1)
        np.testing.assert_array_equal(as_np(got), np.concatenate(parts, 1))


def test_concatenate_promotes_like_numpy(device):
    i = vk.tensor(np.array([1, 2], np.int32), device=device)
    f = vk.tensor(np.array([0.5], np.float32), device=device)
    b = vk.tensor(np.array([True]), device=device)
    h = vk.tensor(np.array([1.5], ml_dtypes.bfloat16), device=device)
    for parts, dtype, values in [((i, f), vk.float32, [1, 2, 0.5]), ((b, i), vk.int32, [1, 1, 2]),
                                 ((h, f), vk.float32, [1.5, 0.5]), ((b, h), vk.bfloat16, [1, 1.5]),
                                 ((i, [7, 8]), vk.int32, [1, 2, 7, 8])]:
        got = vk.concatenate(parts)
        assert got.dtype is dtype and got.device == device
        np.testing.assert_array_equal(as_np(got).astype(np.float64), values)


def test_concatenate_and_stack_errors(device):
    a, b = vk.ones((2, 3), device=device), vk.ones((2, 4), device=device)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\).*dim 1"):
        vk.concatenate([a, b])
    with pytest.raises(ValueError, match=r"tensor 0 has 2 dims.*tensor 1 has 1"):
        vk.concatenate([a, vk.ones(3, device=device)])
    with pytest.raises(ValueError, match="zero-dimensional"):
        vk.concatenate([vk.ones((), device=device)] * 2)
    with pytest.raises(ValueError, match="at least one tensor"):
        vk.concatenate([])
    with pytest.raises(IndexError, match="axis 2 is out of bounds"):
        vk.concatenate([a, a], axis=2)
    with pytest.raises(ValueError, match=r"one shape.*\(2, 3\).*\(2, 4\)"):
        vk.stack([a, b])
    with pytest.raises(IndexError, match="axis 3 is out of bounds"):
        vk.stack([a, a], axis=3)


def test_concatenate_refuses_mixed_devices(vulkan):
    with pytest.raises(ValueError, match="different devices"):
        vk.concatenate([vk.ones(2), vk.ones(2, device=vulkan)])


@pytest.mark.parametrize("dtype", [vk.float32, vk.bool_], ids=["f32", "bool"])
def test_split_returns_views(device, dtype, rng):
    x = sample(rng, (10, 3), dtype)
    t = vk.tensor(x.copy(), device=device)
    for spec, axis in [(5, 0), ([2, 3, 7], 0), ([4, 20], 0), ([-4], 0), (3, 1), ([], 1),
                       ([2, 1], 0)]:
        got = vk.split(t, spec, axis=axis)
        want = np.split(x, spec, axis=axis)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(as_np(g), w)
    first, rest = vk.split(t, [1])
    first[...] = sample(rng, (1, 3), dtype)   # writes through the view into t
    np.testing.assert_array_equal(as_np(t)[:1], as_np(first))
    with pytest.raises(ValueError, match="10 elements along axis 0 do not divide into 4"):
        vk.split(t, 4)
    with pytest.raises(IndexError, match="axis 2"):
        vk.split(t, 2, axis=2)


# ---- pad, flip, roll, tile, repeat --------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_pad(device, dtype, rng):
    x = sample(rng, (3, 5), dtype)
    for width in [1, (2,), (1, 3), ((0, 1), (3, 0)), [[2, 2], [0, 0]], np.array([[1], [2]])]:
        for t, ref in views(x, device):
            for value in (0, -2, 1.5, True):
                got = vk.pad(t, width, constant_values=value)
                want = np.pad(ref, width, constant_values=np.asarray(value).astype(ref.dtype))
                assert got.dtype is dtype
                np.testing.assert_array_equal(as_np(got), want, err_msg=f"{width} {value}")
    e = vk.tensor(sample(rng, (0, 3), dtype), device=device)
    assert vk.pad(e, 1).shape == (2, 5)


def test_pad_errors(device):
    t = vk.ones((2, 3), device=device)
    with pytest.raises(ValueError, match="negative pad widths"):
        vk.pad(t, ((1, -1), (0, 0)))
    with pytest.raises(ValueError, match=r"pad_width of shape \(3, 2\).*\(2, 3\)"):
        vk.pad(t, ((1, 1), (1, 1), (1, 1)))
    with pytest.raises(ValueError, match="mode must be one of .*not 'symmetric'"):
        vk.pad(t, 1, mode="symmetric")  # numpy's, not (yet) vkgrad's
    with pytest.raises(TypeError, match="integers"):
        vk.pad(t, 1.5)
    with pytest.raises(ValueError, match="0-d"):
        vk.pad(vk.ones((), device=device), 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_flip_is_a_view(device, dtype, rng):
    x = sample(rng, (3, 4, 5), dtype)
    for t, ref in views(x, device):
        for axis in (None, 0, -1, (0, 2), ()):
            np.testing.assert_array_equal(as_np(vk.flip(t, axis)), np.flip(ref, axis))
    t = vk.tensor(x.copy(), device=device)
    f = vk.flip(t, 1)
    f[:, 0] = sample(rng, (3, 5), dtype)       # the last column of t, written through the view
    np.testing.assert_array_equal(as_np(t)[:, -1], as_np(f)[:, 0])
    np.testing.assert_array_equal(as_np(vk.flip(vk.flip(t))), as_np(t))
    assert vk.flip(vk.ones((), device=device)).shape == ()
    assert vk.flip(vk.ones((0, 2), device=device), 0).shape == (0, 2)
    with pytest.raises(IndexError, match="axis 3"):
        vk.flip(t, 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_roll(device, dtype, rng):
    x = sample(rng, (4, 5, 3), dtype)
    cases = [(1, None), (-7, None), (2, 0), (-1, 1), ((1, 2), (0, 2)), ((3, -3), (1, 1)),
             (5, 1), (0, 2), ([1, 2], 2)]
    for t, ref in views(x, device):
        for shift, axis in cases:
            np.testing.assert_array_equal(as_np(vk.roll(t, shift, axis)), np.roll(ref, shift, axis),
                                          err_msg=f"{shift} {axis}")
    assert vk.roll(vk.ones((0, 3), device=device), 2, 0).shape == (0, 3)
    with pytest.raises(ValueError, match="shift.*axis"):
        vk.roll(vk.ones((2, 2), device=device), (1, 2, 3), (0, 1))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tile_and_repeat(device, dtype, rng):
    x = sample(rng, (2, 3), dtype)
    for t, ref in views(x, device):
        for reps in (2, (3, 1), (2, 1, 2), (0, 2), (1, 1, 1, 2, 1)):
            np.testing.assert_array_equal(as_np(vk.tile(t, reps)), np.tile(ref, reps))
        for repeats, axis in [(3, None), (2, 0), (1, -1), (0, 1), ([2, 0, 1], 1), ([3], 0),
                              (np.array([1, 2]), 0)]:
            want = np.repeat(ref, repeats, axis)
            np.testing.assert_array_equal(as_np(vk.repeat(t, repeats, axis)), want)
            np.testing.assert_array_equal(as_np(t.repeat(repeats, axis=axis)), want)
    counts = vk.tensor([1, 0, 4], device=device)
    np.testing.assert_array_equal(as_np(vk.repeat(vk.tensor(x, device=device), counts, 1)),
                                  np.repeat(x, [1, 0, 4], 1))
    assert vk.tile(vk.tensor(np.float32(2), device=device), 3).tolist() == [2, 2, 2]
    assert vk.repeat(vk.tensor(np.float32(2), device=device), 2).tolist() == [2, 2]


def test_tile_and_repeat_errors(device):
    t = vk.ones((2, 3), device=device)
    with pytest.raises(ValueError, match="negative repetitions"):
        vk.tile(t, (-1, 2))
    with pytest.raises(ValueError, match=r"2 repeats for 3 elements along axis 1"):
        vk.repeat(t, [1, 2], axis=1)
    with pytest.raises(ValueError, match="negative repeats"):
        vk.repeat(t, -1)
    with pytest.raises(TypeError, match="repeats must be an int"):
        vk.repeat(t, 1.5)


# ---- cumsum -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cumsum(device, dtype, rng):
    x = sample(rng, (6, 37, 5), dtype)
    result = {vk.bool_: vk.int32, vk.uint8: vk.uint32}.get(dtype, dtype)
    for t, ref in views(x, device):
        for axis in (0, 1, -1, None):
            got = t.cumsum(axis=axis)
            assert got.dtype is result
            want = np.cumsum(ref.astype(np.float64), axis=axis)
            if dtype.is_floating:
                tol = 2e-2 if dtype is vk.bfloat16 else 1e-5
                np.testing.assert_allclose(as_np(got).astype(np.float64), want, rtol=tol,
                                           atol=tol * np.abs(want).max())
            else:
                np.testing.assert_array_equal(as_np(got), want.astype(result.np_dtype))


def test_cumsum_long_rows_accumulate_in_float32(device, rng):
    # Long rows are scanned in chunks whose sums are scanned again: the result must still be
    # the running sum; bf16 inputs accumulate in f32 and round once.
    for n in (1, 31, 32, 33, 5000, 100003):
        x = rng.uniform(0.5, 1.5, n).astype(np.float32)
        got = as_np(vk.cumsum(vk.tensor(x, device=device)))
        np.testing.assert_allclose(got, np.cumsum(x.astype(np.float64)), rtol=2e-5)
    h = np.full(4096, 1.0, ml_dtypes.bfloat16)
    got = as_np(vk.tensor(h, device=device).cumsum()).astype(np.float32)
    np.testing.assert_array_equal(got, np.arange(1, 4097, dtype=np.float32).astype(
        ml_dtypes.bfloat16).astype(np.float32))  # a bf16 accumulator would stop at 256
    i = rng.integers(-1000, 1000, (3, 20001)).astype(np.int32)
    np.testing.assert_array_equal(as_np(vk.cumsum(vk.tensor(i, device=device), axis=1)),
                                  np.cumsum(i, axis=1))


def test_cumsum_awkward_shapes(device):
    assert vk.cumsum(vk.tensor(np.float32(3), device=device)).tolist() == [3.0]
    assert vk.cumsum(vk.ones((0, 4), device=device), axis=0).shape == (0, 4)
    assert vk.cumsum(vk.ones((4, 0), device=device), axis=0).shape == (4, 0)
    with pytest.raises(IndexError, match="axis 2"):
        vk.cumsum(vk.ones((2, 2), device=device), axis=2)
