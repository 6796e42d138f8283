"""Indexing with integer arrays and boolean masks, take, take_along_axis, one_hot, __setitem__
and add_at: against numpy on every device, for every dtype, with awkward shapes, strided and
reversed inputs, random keys (hypothesis), and the errors numpy users expect."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vkgrad as vk
from vkgrad.ops.indexing import index_add

from conftest import assert_op_close

DTYPES = [vk.float32, vk.bfloat16, vk.int32, vk.bool_]
DTYPE_IDS = ["f32", "bf16", "i32", "bool"]


def sample(rng, shape, dtype):
    """Random values of `dtype` (never all zeros)."""
    x = rng.standard_normal(shape) * 3
    return np.asarray(x > 0 if dtype is vk.bool_ else x.astype(dtype.np_dtype))


def as_np(t):
    return np.asarray(t.numpy())


def on_device(key, device):
    """`key` with its lists and numpy arrays as tensors on `device` ([] as an int32 tensor)."""
    return tuple(vk.tensor(np.asarray(k) if np.size(k) else np.zeros(0, np.int32), device=device)
                 if isinstance(k, (list, np.ndarray)) else k
                 for k in (key if isinstance(key, tuple) else (key,)))


# ---- reads --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_integer_array_keys_match_numpy(device, dtype, rng):
    x = sample(rng, (5, 6, 7), dtype)
    t = vk.tensor(x, device=device)
    keys = [
        [4, 0, -1, 4],                                        # a list
        (np.array([[1, 2], [0, -5]]), slice(None), 3),        # ints count as arrays: dims first
        (slice(1, None, 2), np.array([5, 0, 2])),             # adjacent: dims stay in place
        (Ellipsis, [[0], [6]], ),
        (np.array([0, 4]), np.array([[1], [5]]), np.array([6, -7])),   # three broadcast arrays
        (None, [3, 1], None, slice(None, None, -2)),
        (2, [1, 1, 0], slice(0, 0)),                          # an empty slice
        ([],),
    ]
    for key in keys:
        np.testing.assert_array_equal(as_np(t[key]), x[key], err_msg=str(key))
        np.testing.assert_array_equal(as_np(t[on_device(key, device)]), x[key], err_msg=str(key))


def test_reads_strided_and_reversed_sources_and_indices(device, rng):
    x = rng.standard_normal((8, 9)).astype(np.float32)
    t = vk.tensor(x, device=device)
    idx = np.array([7, 0, 3, 3, -2, 5], np.int32)
    strided_idx = vk.tensor(np.repeat(idx, 2), device=device)[::2]           # stride 2
    reversed_idx = vk.tensor(idx[::-1].copy(), device=device)[::-1]          # stride -1
    for src, ref in [(t.T, x.T), (t[::-1, 1::3], x[::-1, 1::3]), (vk.flip(t, 1), x[:, ::-1])]:
        for i in (strided_idx, reversed_idx):
            want = ref[idx % ref.shape[0]]
            np.testing.assert_array_equal(as_np(src[i]), want)
            np.testing.assert_array_equal(as_np(src[:, i[:3] % ref.shape[1]]),
                                          ref[:, idx[:3] % ref.shape[1]])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_boolean_masks_match_numpy(device, dtype, rng):
    x = sample(rng, (4, 7, 3), dtype)
    t = vk.tensor(x, device=device)
    masks = [(rng.random((4, 7, 3)) > 0.5,), (rng.random((4, 7)) > 0.3,),
             (slice(1, 3), rng.random(7) > 0.5), (Ellipsis, rng.random(3) > 0.5),
             (np.zeros((4, 7, 3), bool),), (np.ones(4, bool), slice(None), 1),
             (rng.random(4) > 0.5, slice(None), [2, 0, 1, 1][:1])]
    for key in masks:
        want = x[key]
        np.testing.assert_array_equal(as_np(t[key]), want)
        np.testing.assert_array_equal(as_np(t[on_device(key, device)]), want)
    # A mask made on the device, non-contiguous, and 0-d masks.
    m = (t.astype(vk.float32) > 0.5) if dtype is not vk.bool_ else t
    np.testing.assert_array_equal(as_np(t[m]), x[x.astype(np.float32) > 0.5] if dtype
                                  is not vk.bool_ else x[x])
    np.testing.assert_array_equal(as_np(t.T[m.T]), x.T[as_np(m).T])
    for flag in (True, False):
        np.testing.assert_array_equal(as_np(t[flag]), x[flag])
        np.testing.assert_array_equal(as_np(t[1, vk.tensor(flag, device=device)]), x[1, flag])


def test_large_mask_spans_many_chunks(device, rng):
    x = rng.standard_normal(70001).astype(np.float32)
    t = vk.tensor(x, device=device)
    np.testing.assert_array_equal(as_np(t[t > 1.0]), x[x > 1.0])


def test_zero_dim_and_empty(device, rng):
    s = vk.tensor(np.float32(2.5), device=device)
    assert as_np(s[True]).tolist() == [2.5] and s[False].shape == (0,)
    assert as_np(s[None][vk.tensor([0, 0], device=device)]).tolist() == [2.5, 2.5]
    e = vk.tensor(np.zeros((0, 3), np.float32), device=device)
    assert e[[]].shape == (0, 3) and e[:, [2, 0]].shape == (0, 2)
    assert e[vk.tensor(np.zeros(0, bool), device=device)].shape == (0, 3)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = vk.tensor(x, device=device)
    np.testing.assert_array_equal(as_np(t[vk.tensor(np.int32(2), device=device)]), x[2])


def test_take(device, rng):
    x = rng.standard_normal((4, 5)).astype(np.float32)
    t = vk.tensor(x, device=device)
    for indices, axis in [([[0, -1], [3, 2]], 1), ([7, 0, -20], None), (2, 0), ([1, 1], -2)]:
        np.testing.assert_array_equal(as_np(vk.take(t, indices, axis=axis)),
                                      np.take(x, indices, axis=axis))
    np.testing.assert_array_equal(as_np(t.take(vk.tensor([3, 0], device=device), axis=0)),
                                  x[[3, 0]])
    with pytest.raises(IndexError, match="index 5 is out of bounds for axis 1 with size 5"):
        vk.take(t, [0, 5], axis=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_take_along_axis(device, dtype, rng):
    x = sample(rng, (4, 6, 5), dtype)
    t = vk.tensor(x, device=device)
    for shape, axis in [((4, 2, 5), 1), ((1, 6, 3), 2), ((7, 1, 5), 0), ((4, 6, 5), -1)]:
        n = x.shape[axis]
        idx = rng.integers(-n, n, shape)
        want = np.take_along_axis(x, idx, axis)
        np.testing.assert_array_equal(as_np(vk.take_along_axis(t, idx, axis)), want)
        np.testing.assert_array_equal(
            as_np(vk.take_along_axis(t, vk.tensor(idx, device=device), axis)), want)
    flat = rng.integers(0, x.size, 9)
    np.testing.assert_array_equal(as_np(vk.take_along_axis(t, flat, None)),
                                  np.take_along_axis(x, flat, None))
    # The classic use: values at the argmax, from a transposed view.
    y = rng.standard_normal((6, 3)).astype(np.float32)
    ty = vk.tensor(y, device=device).T
    np.testing.assert_array_equal(
        as_np(vk.take_along_axis(ty, ty.argmax(axis=1, keepdims=True), 1)),
        y.T.max(axis=1, keepdims=True))


def test_take_along_axis_errors(device):
    t = vk.ones((3, 4), device=device)
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 4\)"):
        vk.take_along_axis(t, vk.tensor([0, 1, 2], device=device), 1)
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 1 with size 4"):
        vk.take_along_axis(t, [[4]], 1)
    with pytest.raises(IndexError, match="integer"):
        vk.take_along_axis(t, np.zeros((3, 1), np.float32), 1)
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(2, 1\)"):
        vk.take_along_axis(t, [[0], [1]], 1)


def test_one_hot(device, rng):
    labels = rng.integers(0, 7, (3, 5)).astype(np.int32)
    t = vk.tensor(labels, device=device)
    want = np.eye(7, dtype=np.float32)[labels]
    got = vk.one_hot(t, 7)
    assert got.dtype is vk.float32 and got.shape == (3, 5, 7)
    np.testing.assert_array_equal(as_np(got), want)
    for dtype in (vk.bfloat16, vk.int32, vk.bool_):
        got = vk.one_hot(t.T, 7, dtype=dtype)
        assert got.dtype is dtype
        np.testing.assert_array_equal(as_np(got), want.transpose(1, 0, 2).astype(dtype.np_dtype))
    assert vk.one_hot([2, 0], 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(TypeError, match="integer labels.*float32"):
        vk.one_hot(vk.ones(3, device=device), 3)
    if device.kind == "host":
        with pytest.raises(ValueError, match=r"\[0, 3\).*found 3"):
            vk.one_hot(vk.tensor([0, 3]), 3)
    else:  # device labels are not read back: one outside the classes gives a row of zeros
        np.testing.assert_array_equal(as_np(vk.one_hot(vk.tensor([1, 5, -1], device=device), 3)),
                                      [[0, 1, 0], [0, 0, 0], [0, 0, 0]])


# ---- writes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES + [vk.uint8], ids=DTYPE_IDS + ["u8"])
def test_setitem_basic_keys_write_in_place(device, dtype, rng):
    x = sample(rng, (5, 9), dtype)
    t = vk.tensor(x, device=device)
    alias = t[1:]  # a view: writes through t must show in it
    cases = [((1, slice(2, 7)), 1), ((slice(None, None, -2), slice(1, None, 3)),
                                      sample(rng, (3, 3), dtype)),
             ((Ellipsis, 4), sample(rng, (5,), dtype)),
             ((slice(1, 4),), sample(rng, (1, 9), dtype)),
             ((-1,), sample(rng, (1, 1, 9), dtype)), ((slice(3, 3),), 0),
             ((), sample(rng, (9,), dtype))]
    for key, value in cases:
        x[key] = value
        t[key] = vk.tensor(value, device=device) if isinstance(value, np.ndarray) else value
        np.testing.assert_array_equal(as_np(t), x, err_msg=str(key))
    np.testing.assert_array_equal(as_np(alias), x[1:])


def test_setitem_packed_neighbours_do_not_race(device, rng):
    # Every element of a word written by a different invocation, at odd offsets and strides.
    for dtype in (vk.bool_, vk.uint8, vk.bfloat16):
        x = sample(rng, (3, 4099), dtype)
        t = vk.tensor(x, device=device)
        for key in [(slice(None), slice(1, None, 2)), (slice(None), slice(None, None, -3)),
                    (slice(0, 3, 2), slice(5, 4000)),
                    (slice(None), rng.permutation(4099)[:3001])]:
            value = sample(rng, x[key].shape, dtype)
            x[key] = value
            t[key] = vk.tensor(value, device=device)
            np.testing.assert_array_equal(as_np(t), x, err_msg=f"{dtype} {key}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_setitem_advanced_keys(device, dtype, rng):
    x = sample(rng, (6, 5, 4), dtype)
    t = vk.tensor(x, device=device)
    keys = [([5, 0, 2],), (slice(None), [4, 1], [[0], [3]]), (rng.random((6, 5)) > 0.5,),
            (1, slice(None, None, -1), rng.random(4) > 0.4), (np.array([[1, 0]]), Ellipsis, -1)]
    for key in keys:
        for value in (sample(rng, x[key].shape, dtype), sample(rng, x[key].shape[-1:], dtype),
                      sample(rng, (), dtype).item()):
            x[key] = value
            t[key] = vk.tensor(value, device=device) if isinstance(value, np.ndarray) else value
            np.testing.assert_array_equal(as_np(t), x, err_msg=str(key))
        value = sample(rng, x[key].shape, dtype)
        x[key] = value
        t[on_device(key, device)] = vk.tensor(value, device=device)
        np.testing.assert_array_equal(as_np(t), x, err_msg=str(key))


def test_setitem_values_convert_and_overlap(device, rng):
    x = np.arange(10, dtype=np.int32)
    t = vk.tensor(x, device=device)
    t[[1, 2]] = vk.tensor([1.9, -2.7], device=device)     # float into int truncates, as numpy
    t[3] = 7.5
    t[4:6] = [True, False]
    t[1:] = t[:-1]                                       # the value overlaps the target
    x[[1, 2]] = [1.9, -2.7]
    x[3] = 7.5
    x[4:6] = [True, False]
    x[1:] = x[:-1].copy()
    np.testing.assert_array_equal(as_np(t), x)
    b = vk.tensor(np.zeros(5, bool), device=device)
    b[[0, 3]] = 0.5                                      # nonzero is True
    assert b.tolist() == [True, False, False, True, False]
    h = vk.tensor(np.ones(4, ml_dtypes.bfloat16), device=device)
    h[1:3] = vk.tensor([1.00390625, 3.0], device=device)   # f32 rounds to nearest even bf16
    np.testing.assert_array_equal(as_np(h).astype(np.float32), [1, 1, 3, 1])


def test_setitem_refuses_bad_values(device):
    t = vk.zeros((3, 4), device=device)
    with pytest.raises(ValueError, match=r"\(2,\).*\(3, 4\)|\(2,\).*\(3,4\)"):
        t[...] = vk.ones(2, device=device)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        t[[0, 1]] = vk.ones(5, device=device)


def test_device_indices_wrap_and_are_checked(vulkan):
    # Index tensors on the device are not read back: negative ones wrap, and one out of range
    # is clamped (nothing outside the tensor is touched) and raises at the next synchronisation.
    t = vk.tensor(np.arange(5, dtype=np.float32), device=vulkan)
    i = vk.tensor([-1, -5, 2], device=vulkan)
    assert t[i].tolist() == [4.0, 0.0, 2.0]
    t[i] = 10.0
    assert t.tolist() == [10.0, 1.0, 10.0, 3.0, 10.0]
    before, t, after = (vk.zeros(3, device=vulkan) for _ in range(3))
    for bad in ([3], [-4], [2 ** 31 - 1], [-2 ** 31]):
        t[vk.tensor(bad, device=vulkan)] = 1.0
        with pytest.raises(IndexError, match="setitem: index out of range"):
            t.numpy()
    assert before.tolist() == after.tolist() == [0.0] * 3


@pytest.mark.parametrize("dtype", [vk.float32, vk.bfloat16, vk.int32], ids=["f32", "bf16", "i32"])
def test_add_at_accumulates_repeated_indices(device, dtype, rng):
    x = sample(rng, (5, 3), dtype)
    t = vk.tensor(x.copy(), device=device)  # host tensors share numpy's memory
    idx = np.array([4, 0, 4, 2, 0, 4, 4])
    values = sample(rng, (7, 3), dtype)
    vk.add_at(t, idx, vk.tensor(values, device=device))
    want = x.astype(np.float64)
    np.add.at(want, idx, values.astype(np.float64))
    tol = 3e-2 if dtype is vk.bfloat16 else 1e-6
    np.testing.assert_allclose(as_np(t).astype(np.float64), want, rtol=tol, atol=tol)
    # Many invocations adding into the same elements and their word neighbours (counts stay
    # below 256, which bf16 holds exactly).
    counts = vk.zeros(15, dtype=dtype, device=device)
    hits = rng.integers(0, 15, 1500)
    vk.add_at(counts, vk.tensor(hits, device=device), 1)
    np.testing.assert_array_equal(as_np(counts).astype(np.float64), np.bincount(hits, minlength=15))


@pytest.mark.parametrize("op", ["add_at", "index_add"])
def test_bf16_index_adds_round_once(device, op, rng):
    # 48 values land on each of 4 elements: adding them in float32 and rounding once keeps each
    # result within the op-table bound of the exact sum; rounding to bf16 after every addition
    # (as a bf16 destination updated in place would) drifts several ulps away.
    x = rng.standard_normal(4).astype(ml_dtypes.bfloat16)
    values = rng.uniform(0.5, 1.5, 192).astype(ml_dtypes.bfloat16)
    idx = np.repeat(np.arange(4), 48)
    want = x.astype(np.float64)
    np.add.at(want, idx, values.astype(np.float64))
    t, v = vk.tensor(x.copy(), device=device), vk.tensor(values, device=device)
    if op == "add_at":
        vk.add_at(t, vk.tensor(idx, device=device), v)
    else:
        t = index_add(t, vk.tensor(idx, device=device), v)
    magnitude = np.abs(x.astype(np.float64)) + 48 * 1.5
    assert_op_close(as_np(t), want, "bfloat16", 49, magnitude, f"{op} on {device}")


# ---- errors -------------------------------------------------------------------------------------
def test_bad_keys_raise_index_errors_naming_the_problem(device):
    t = vk.ones((3, 4), device=device)
    cases = [([0, 2, 5], r"index 5 is out of bounds for axis 0 with size 3"),
             ((slice(None), [-5]), r"index -5 is out of bounds for axis 1 with size 4"),
             ((1, 7), r"index 7 is out of bounds for axis 1 with size 4"),
             (([0, 1], [0, 1, 2]), r"broadcast.*\(2,\) \(3,\)"),
             (np.ones(4, bool), r"axis 0; size of axis is 3 but size of corresponding boolean "
                                r"axis is 4"),
             ((0, 0, [0]), r"too many indices.*2-dimensional, but 3"),
             ([0.5], r"integer or boolean arrays.*float"),
             ((Ellipsis, [0], Ellipsis), r"single ellipsis"),
             (vk.tensor([1.0], device=device), r"integer or boolean arrays.*float32")]
    for key, message in cases:
        with pytest.raises(IndexError, match=message):
            t[key]
        with pytest.raises(IndexError, match=message):
            t[key] = 1.0


def test_index_tensors_on_another_device_are_refused(vulkan):
    t = vk.ones(3)
    with pytest.raises(ValueError, match="different devices"):
        t[vk.tensor([0], device=vulkan)]
    # Host index tensors are host data: they serve any device.
    assert vk.ones(3, device=vulkan)[vk.tensor([0, 2])].tolist() == [1.0, 1.0]


# ---- properties: random keys against numpy -------------------------------------------------------
@st.composite
def keys(draw):
    """(shape, key): a random shape and a key of slices, ints, None, Ellipsis, integer arrays
    (sharing one broadcast shape) and at most one boolean mask, as numpy accepts them."""
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
    b_shape = draw(st.sampled_from([(), (1,), (3,), (2, 1), (2, 3)]))
    front = draw(st.integers(0, len(shape)))
    ellipsis = draw(st.booleans())
    back = draw(st.integers(0, len(shape) - front)) if ellipsis else 0
    key, mask = [], False
    axes = [*range(front), *([None] if ellipsis else []), *range(len(shape) - back, len(shape))]
    for axis in axes:
        if axis is None:
            key.append(Ellipsis)
            continue
        n = shape[axis]
        if draw(st.integers(0, 5)) == 0:
            key.append(None)
        kind = draw(st.sampled_from(["slice", "slice", "int", "array", "mask"]))
        if kind == "int" and n:
            key.append(draw(st.integers(-n, n - 1)))
        elif kind == "array" and n:
            suffix = b_shape[draw(st.integers(0, len(b_shape))):]
            size = int(np.prod(suffix))
            key.append(np.asarray(draw(st.lists(st.integers(-n, n - 1), min_size=size,
                                                max_size=size)), np.int64).reshape(suffix))
        elif kind == "mask" and not mask:
            key.append(np.asarray(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool))
            mask = True
        else:
            bound = st.none() | st.integers(-7, 7)
            key.append(slice(draw(bound), draw(bound), draw(st.none() | st.sampled_from(
                [-3, -2, -1, 1, 2, 3]))))
    return shape, tuple(key)


def _container(draw, k, device):
    if not isinstance(k, np.ndarray):
        return k
    return draw(st.sampled_from([lambda: k, lambda: k.tolist() if k.ndim else k,
                                 lambda: vk.tensor(k, device=device)]))()


PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(case=keys(), dtype=st.sampled_from(DTYPES), data=st.data())
def test_random_keys_read_like_numpy(device, case, dtype, data):
    shape, key = case
    x = sample(np.random.default_rng(len(shape)), shape, dtype)
    t = vk.tensor(x, device=device)
    try:
        want = x[key]
    except IndexError:
        with pytest.raises(IndexError):
            t[key]
        return
    got = t[tuple(_container(data.draw, k, device) for k in key)]
    assert got.shape == want.shape
    np.testing.assert_array_equal(as_np(got), want)


@PROPERTY
@given(case=keys(), dtype=st.sampled_from(DTYPES), scalar=st.booleans(), data=st.data())
def test_random_keys_write_like_numpy(device, case, dtype, scalar, data):
    shape, key = case
    rng = np.random.default_rng(len(key))
    x = sample(rng, shape, dtype)
    t = vk.tensor(x, device=device)
    try:
        # Values read from a second array through the same key, so that positions a key
        # repeats receive the same value (where numpy's last-write-wins is not promised here).
        value = sample(rng, shape, dtype)[key]
    except IndexError:
        return
    value = value.reshape(-1)[0].item() if scalar and value.size else value
    x[key] = value
    t[tuple(_container(data.draw, k, device) for k in key)] = (
        value if not isinstance(value, np.ndarray) else vk.tensor(value, device=device))
    np.testing.assert_array_equal(as_np(t), x)
