"""The numpy-facing surface of Tensor beyond single ops: composite reductions, in-place
arithmetic, functions, conversions, promotion and the errors a user sees."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import vkgrad as vk

from conftest import DEVICES


@pytest.mark.parametrize("axis,ddof,keepdims", [(None, 0, False), (1, 1, False), ((0, 2), 0, True),
                                                (-1, 2, False)])
def test_var_std_logsumexp(device, rng, axis, ddof, keepdims):
    a = (rng.standard_normal((4, 7, 5)) * 3).astype(np.float32)
    t = vk.tensor(a, device=device)
    np.testing.assert_allclose(t.var(axis=axis, ddof=ddof, keepdims=keepdims).numpy(),
                               a.astype(np.float64).var(axis=axis, ddof=ddof, keepdims=keepdims),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.std(axis=axis, ddof=ddof, keepdims=keepdims).numpy(),
                               a.astype(np.float64).std(axis=axis, ddof=ddof, keepdims=keepdims),
                               rtol=1e-5, atol=1e-5)
    big = a * 100  # exp would overflow without the max shift
    ref = np.log(np.exp(big.astype(np.float64) - big.max()).sum(axis=axis, keepdims=keepdims)) \
        + big.max()
    if axis is not None:
        m = big.astype(np.float64).max(axis=axis, keepdims=True)
        ref = np.log(np.exp(big - m).sum(axis=axis, keepdims=True)) + m
        ref = ref if keepdims else ref.squeeze(axis)
    np.testing.assert_allclose(vk.tensor(big, device=device).logsumexp(axis=axis, keepdims=keepdims)
                               .numpy(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
def test_inplace_arithmetic_on_views(device, rng, dtype):
    npd = vk.dtype(dtype).np_dtype
    a = (rng.standard_normal((6, 9)) * 4).astype(npd)
    t = vk.tensor(a.copy(), device=device)
    view = t[1:5, ::2] if dtype != "bfloat16" else t[2:6]  # a word-aligned packed view
    before = id(view)
    view += 3
    view *= 2
    if dtype != "int32":
        view /= 4
        view -= 0.5
    assert id(view) == before
    want = a.astype(np.float64)
    sl = (slice(1, 5), slice(None, None, 2)) if dtype != "bfloat16" else (slice(2, 6),)
    want[sl] = (want[sl] + 3) * 2
    if dtype != "int32":
        want[sl] = want[sl] / 4 - 0.5
    tol = 0.1 if dtype == "bfloat16" else 1e-5
    np.testing.assert_allclose(t.numpy().astype(np.float64), want, rtol=tol, atol=tol)
    if dtype == "int32":
        with pytest.raises(TypeError, match="float32.*int32"):
            view += 0.5


def test_numpy_functions_and_methods(device, rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float32)
    ta, tb = vk.tensor(a, device=device), vk.tensor(b, device=device)
    np.testing.assert_allclose(vk.maximum(ta, tb).numpy(), np.maximum(a, b))
    np.testing.assert_allclose(vk.where(ta > 0, ta, tb).numpy(), np.where(a > 0, a, b))
    np.testing.assert_allclose(vk.where(vk.tensor([1, 0, 2, 0], device=device), 1.0, tb).numpy(),
                               np.where([1, 0, 2, 0], 1.0, b))
    np.testing.assert_allclose(ta.clip(None, 0.1).numpy(), np.clip(a, None, 0.1))
    np.testing.assert_allclose(vk.exp(ta).numpy(), np.exp(a), rtol=1e-6)
    np.testing.assert_allclose(ta.sigmoid().numpy(), 1 / (1 + np.exp(-a)), rtol=1e-6)
    np.testing.assert_array_equal((~(ta > 0)).numpy(), ~(a > 0))
    np.testing.assert_array_equal(((ta > 0) & (tb < 0)).numpy(), (a > 0) & (b < 0))
    with pytest.raises(ValueError, match="a_min or a_max"):
        ta.clip()


def test_conversions(device):
    t = vk.tensor([[1.5, 2.0], [3.0, -4.0]], device=device)
    assert t.tolist() == [[1.5, 2.0], [3.0, -4.0]]
    assert float(t[0, 0]) == 1.5 and t.sum().item() == 2.5
    assert len(t) == 2 and [r.tolist() for r in t] == [[1.5, 2.0], [3.0, -4.0]]
    assert "dtype=float32" in repr(t) and str(device) in repr(t)
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="one element"):
        t.item()
    with pytest.raises(TypeError, match="0-d"):
        len(t.sum())
    assert vk.tensor([1, 2], dtype=vk.bfloat16, device=device).numpy().dtype == ml_dtypes.bfloat16
    if device.kind == "vulkan":
        with pytest.raises(ValueError, match="copy"):
            np.asarray(t, copy=False)


@pytest.mark.parametrize("src,dst", [("bfloat16", "float32"), ("float32", "bfloat16"),
                                     ("float32", "float32"), ("int32", "float32"),
                                     ("float32", "int32"), ("uint8", "int32")])
def test_astype_is_a_new_tensor_with_the_values_cast(device, rng, src, dst):
    """astype copies (the result never shares the source's memory, so writing one leaves the
    other), from contiguous and transposed sources, with numpy's values (ml_dtypes' rounding)."""
    values = (rng.standard_normal((5, 7)) * 50).astype(np.float32)
    a = vk.tensor(values, device=device).astype(src)
    for source in (a, a.T):
        out = source.astype(dst)
        expected = source.numpy().astype(vk.dtype(dst).np_dtype)
        assert out.dtype is vk.dtype(dst)
        np.testing.assert_array_equal(out.numpy(), expected)
        before = source.numpy().copy()
        out[...] = 3
        np.testing.assert_array_equal(source.numpy(), before)


def test_errors_name_the_problem(device):
    t = vk.ones((2, 3), device=device)
    with pytest.raises(IndexError, match="axis 2 is out of bounds.*dimension 2"):
        t.sum(axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        t.sum(axis=(0, -2))
    with pytest.raises(ValueError, match="cannot reshape tensor of size 6 into shape"):
        t.reshape(4, -1)
    with pytest.raises(ValueError, match=r"cannot broadcast shape \(2, 3\) to \(3, 3\)"):
        t.broadcast_to((3, 3))
    with pytest.raises(IndexError, match="index 5 is out of bounds for axis 1 with size 3"):
        t[0, 5]
    with pytest.raises(ValueError, match="cannot squeeze axis 1 of size 3"):
        vk.squeeze(t, 1)
    with pytest.raises(TypeError, match="unsupported dtype"):
        vk.zeros(3, dtype="complex64", device=device)
    with pytest.raises(TypeError, match="bitwise_and|bitand"):
        t & t


# ---- property tests against numpy ------------------------------------------------------------
_shapes = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)


@st.composite
def _broadcastable_pair(draw):
    shape = draw(_shapes)
    other = tuple(1 if draw(st.booleans()) else n for n in shape)
    cut = draw(st.integers(0, len(other)))
    return shape, other[cut:]


@pytest.mark.parametrize("device", [pytest.param(d, id=str(d), marks=[pytest.mark.vulkan]
                                                 if d.kind == "vulkan" else []) for d in DEVICES])
@settings(max_examples=25, deadline=None)
@given(pair=_broadcastable_pair(), swap=st.booleans(), seed=st.integers(0, 2**16))
def test_broadcasting_matches_numpy(device, pair, swap, seed):
    rng = np.random.default_rng(seed)
    sa, sb = pair if not swap else pair[::-1]
    a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    got = (vk.tensor(a, device=device) * vk.tensor(b, device=device) - 1).numpy()
    np.testing.assert_allclose(got, np.asarray(a * b - 1), rtol=1e-6)


_DTYPES = ["float32", "bfloat16", "int32", "uint8", "bool"]


@settings(max_examples=60, deadline=None)
@given(da=st.sampled_from(_DTYPES), db=st.sampled_from(_DTYPES),
       scalar=st.sampled_from([None, 2, 2.5, True]))
def test_promotion_matches_numpy_conventions(da, db, scalar):
    a = vk.ones(2, dtype=da)
    b = vk.ones(2, dtype=db) if scalar is None else scalar
    got = (a + b).dtype
    if scalar is None:
        if "bfloat16" in (da, db):
            # bf16 with f32 widens; with integers vkgrad keeps the float type (as torch does)
            want = np.float32 if "float32" in (da, db) else ml_dtypes.bfloat16
        else:
            want = np.result_type(vk.dtype(da).np_dtype, vk.dtype(db).np_dtype)
            want = {np.dtype(np.float64): np.float32, np.dtype(np.int64): np.int32,
                    np.dtype(np.int16): np.int32}.get(want, want)
        assert got.np_dtype == want, (da, db, got)
    elif isinstance(scalar, bool):
        assert got is vk.dtype(da)
    elif isinstance(scalar, int):
        assert got is (vk.int32 if da == "bool" else vk.dtype(da))
    else:
        assert got is (vk.dtype(da) if vk.dtype(da).is_floating else vk.float32)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_long_reductions_take_two_passes(device, rng, dtype):
    """Rows longer than one pass handles (lavapipe ends shader loops after 65535 iterations)."""
    a = rng.standard_normal((2, 300_001)).astype(vk.dtype(dtype).np_dtype)
    a[1, 7] = np.nan
    t = vk.tensor(a, device=device)
    ref = a.astype(np.float64)
    np.testing.assert_allclose(t[0].sum().item(), ref[0].sum(), rtol=1e-3 if dtype == "float32"
                               else 2e-2, atol=0.5)
    np.testing.assert_allclose(t.mean(axis=1, keepdims=True).numpy().astype(np.float64),
                               ref.mean(axis=1, keepdims=True), rtol=2e-2, atol=1e-4)
    np.testing.assert_array_equal(t.max(axis=1).numpy().astype(np.float32),
                                  a.max(axis=1).astype(np.float32))
    np.testing.assert_array_equal(t.argmax(axis=1).numpy(), a.argmax(axis=1))
    np.testing.assert_array_equal(t.argmin(axis=-1).numpy(), a.argmin(axis=-1))
    np.testing.assert_array_equal((t > 4).any(axis=1).numpy(), (a > 4).any(axis=1))
    np.testing.assert_array_equal((t < 10).all(axis=1).numpy(), (a < 10).all(axis=1))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32", "bool"])
def test_where_selects_bits_exactly(device, rng, dtype):
    """where moves values untouched: infinities and NaNs in the branch not taken stay out (a
    product by the mask would turn them into NaN), -0.0 and NaN payloads survive, and scalars
    and broadcast operands select like numpy's."""
    np_dtype = vk.dtype(dtype).np_dtype
    if dtype in ("float32", "bfloat16"):
        pool = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0, 1.5, -2.25, 3e38], np.float32)
    else:
        pool = np.array([0, 1, -7, 2**31 - 1, -2**31] if dtype == "int32" else [0, 1])
    a = rng.choice(pool, (5, 33)).astype(np_dtype)
    b = rng.choice(pool, (33,)).astype(np_dtype)
    cond = rng.random((5, 33)) > 0.5
    ta, tb, tc = (vk.tensor(v, device=device) for v in (a, b, cond))
    zero, one = (False, True) if dtype == "bool" else (0, 1)
    cases = [((tc, ta, tb), (cond, a, b)), ((tc, ta, zero), (cond, a, np.zeros((), np_dtype))),
             ((tc, one, tb), (cond, np.ones((), np_dtype), b)), ((tc[0], ta, tb), (cond[0], a, b))]
    bits = np.dtype(f"u{np.dtype(np_dtype).itemsize}")
    for args, np_args in cases:
        got = vk.where(*args).numpy()
        expected = np.where(*np_args).astype(np_dtype)
        np.testing.assert_array_equal(got.view(bits), expected.view(bits))
