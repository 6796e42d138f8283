"""Random numbers: Philox known answers, host/device bit equality, distributions, streams, state."""
import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk
from vkgrad.random import _cos_sin_turn, _ln, philox4x32_10

BITS = {"float32": np.uint32, "bfloat16": np.uint16}


def draw(fn, device, state, **kw):
    """fn(...) on `device` with the default generator at `state`."""
    vk.set_rng_state(state)
    return fn(device=device, **kw).numpy()


# ---- the generator itself ------------------------------------------------------------------------
@pytest.mark.parametrize("counter,key,expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(counter, key, expected):
    """The published Random123 vectors for Philox4x32-10."""
    out = philox4x32_10(np.array([counter], np.uint32), key)
    assert out.tolist() == [list(expected)]


def test_raw_words_are_philox_of_seed_and_counter(device):
    """randint over the full uint32 range returns the raw draws: counter (offset + i // 4, 0, 0, 0)
    under key (seed low, seed high) gives elements 4i .. 4i + 3."""
    vk.set_rng_state((0, 0))
    assert vk.randint(0, 2 ** 32, 4, dtype=vk.uint32, device=device).numpy().tolist() == \
        [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    seed, offset = 0x0123456789ABCDEF, 0xFFFFFFFE  # counters cross the 32-bit carry
    vk.set_rng_state((seed, offset))
    words = vk.randint(0, 2 ** 32, 12, dtype=vk.uint32, device=device).numpy()
    index = np.arange(offset, offset + 3, dtype=np.uint64)
    counters = np.zeros((3, 4), np.uint32)
    counters[:, 0], counters[:, 1] = index & 0xFFFFFFFF, index >> 32
    expected = philox4x32_10(counters, (0x89ABCDEF, 0x01234567)).reshape(-1)
    np.testing.assert_array_equal(words, expected)


# ---- host and Vulkan draw the same numbers -------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(), (1,), (7, 3), (3, 5, 7), (70001,)], ids=str)
@pytest.mark.parametrize("state", [(0, 0), (12345, 77), (2 ** 64 - 1, 2 ** 64 - 2)], ids=str)
def test_uniform_bits_match_host(vulkan, state, shape, dtype):
    for fn in (lambda **kw: vk.rand(shape, **kw), lambda **kw: vk.uniform(-2.5, 7.25, shape, **kw)):
        host = draw(fn, "host", state, dtype=dtype)
        dev = draw(fn, vulkan, state, dtype=dtype)
        assert host.shape == dev.shape == shape and dev.dtype == vk.dtype(dtype).np_dtype
        np.testing.assert_array_equal(host.view(BITS[dtype]), dev.view(BITS[dtype]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(5,), (33, 3), (70001,)], ids=str)
def test_normal_matches_host(vulkan, shape, dtype):
    for state in [(7, 0), (2 ** 40 + 3, 1000)]:
        fn = lambda **kw: vk.normal(1.5, 3.0, shape, **kw)  # noqa: E731
        host = draw(fn, "host", state, dtype=dtype).astype(np.float64)
        dev = draw(fn, vulkan, state, dtype=dtype).astype(np.float64)
        # Bit-equal on lavapipe; a few ulps where division and sqrt do not round correctly
        # (then one bf16 ulp after rounding).
        tol = 4e-6 if dtype == "float32" else 2 ** -8
        np.testing.assert_allclose(dev, host, rtol=tol, atol=3.0 * tol)


def test_series_ln_cos_sin_are_accurate():
    """The float32 series behind Box-Muller, on every uniform they can be given."""
    k = np.arange(0, 2 ** 24, 7, dtype=np.uint32).astype(np.float32)
    u1 = (k + 1) * np.float32(2.0 ** -24)
    ln = _ln(u1)
    assert ln.dtype == np.float32 and _ln(np.float32([1.0]))[0] == 0
    np.testing.assert_allclose(ln, np.log(u1.astype(np.float64)), rtol=3e-7)
    cos, sin = _cos_sin_turn(k * np.float32(2.0 ** -24))
    angle = 2 * np.pi * k.astype(np.float64) * 2.0 ** -24
    np.testing.assert_allclose(cos, np.cos(angle), atol=1.2e-7)
    np.testing.assert_allclose(sin, np.sin(angle), atol=1.2e-7)


@pytest.mark.parametrize("dtype,low,high", [
    ("int32", -7, 12), ("int32", -2 ** 31, 2 ** 31), ("int32", 5, 2 ** 31 - 1),
    ("uint32", 0, 2 ** 32), ("uint32", 3_000_000_000, 4_000_000_000), ("uint8", 0, 256),
    ("uint8", 17, 20)])
def test_randint_matches_host(vulkan, dtype, low, high):
    fn = lambda **kw: vk.randint(low, high, (4099,), dtype=dtype, **kw)  # noqa: E731
    host, dev = draw(fn, "host", (99, 5)), draw(fn, vulkan, (99, 5))
    assert host.dtype == dev.dtype == vk.dtype(dtype).np_dtype
    np.testing.assert_array_equal(host, dev)
    assert low <= host.astype(np.int64).min() and host.astype(np.int64).max() < high


def test_state_is_shared_across_devices(vulkan):
    """A stream continued on another device is the same stream."""
    vk.manual_seed(11)
    both_host = [vk.rand(9).numpy(), vk.rand(9).numpy()]
    vk.manual_seed(11)
    mixed = [vk.rand(9).numpy(), vk.rand(9, device=vulkan).numpy()]
    np.testing.assert_array_equal(both_host[1], mixed[1])


# ---- distributions -------------------------------------------------------------------------------
N = 100_000


def test_normal_statistics(device):
    vk.manual_seed(2024)
    z = vk.randn(N, device=device).numpy().astype(np.float64)
    se = 1 / np.sqrt(N)
    assert abs(z.mean()) < 5 * se
    assert abs(z.std() - 1) < 5 * se / np.sqrt(2)
    inside = np.mean(np.abs(z) < 1)  # 68.27% within one standard deviation
    assert abs(inside - 0.682689) < 5 * np.sqrt(0.6827 * 0.3173 / N)
    assert abs(np.mean(z ** 3)) < 5 * np.sqrt(15 / N)  # skewness, var(z^3) = 15
    x = vk.normal(-4.0, 0.5, (N,), device=device).numpy().astype(np.float64)
    assert abs(x.mean() + 4) < 5 * 0.5 * se and abs(x.std() - 0.5) < 5 * 0.5 * se


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_uniform_statistics(device, dtype):
    vk.manual_seed(7)
    u = vk.rand(N, device=device, dtype=dtype).numpy().astype(np.float64)
    assert u.min() >= 0 and u.max() < 1
    step = 2.0 ** -8 if dtype == "bfloat16" else 2.0 ** -24  # values are multiples of the step
    assert abs(u.mean() - (0.5 - step / 2)) < 5 * np.sqrt(1 / 12 / N)
    counts = np.histogram(u, bins=16, range=(0, 1))[0]  # 16 bins: each holds 16 bf16 values
    chi2 = ((counts - N / 16) ** 2 / (N / 16)).sum()
    assert chi2 < 50  # 15 degrees of freedom: p < 2e-5
    x = vk.uniform(-3.0, 5.0, (N,), device=device).numpy()
    assert x.min() >= -3 and x.max() < 5 and abs(x.mean() - 1) < 5 * 8 * np.sqrt(1 / 12 / N)


def test_randint_statistics(device):
    vk.manual_seed(3)
    r = vk.randint(-5, 12, (20_000,), device=device).numpy()
    assert r.dtype == np.int32 and r.min() == -5 and r.max() == 11
    counts = np.bincount(r + 5, minlength=17)
    assert (counts > 0).all() and len(counts) == 17
    chi2 = ((counts - 20_000 / 17) ** 2 / (20_000 / 17)).sum()
    assert chi2 < 50  # 16 degrees of freedom
    assert set(np.unique(vk.randint(4, shape=500, device=device).numpy())) == {0, 1, 2, 3}


# ---- streams, reproducibility and state ----------------------------------------------------------
def test_manual_seed_reproduces_and_calls_differ(device):
    vk.manual_seed(123)
    a, b = vk.rand(100, device=device).numpy(), vk.randn(3, 4, device=device).numpy()
    vk.manual_seed(123)
    np.testing.assert_array_equal(vk.rand(100, device=device).numpy(), a)
    np.testing.assert_array_equal(vk.randn((3, 4), device=device).numpy(), b)
    assert not np.array_equal(vk.rand(100, device=device).numpy(), a)  # the stream moved on
    vk.manual_seed(124)
    assert not np.array_equal(vk.rand(100, device=device).numpy(), a)


def test_generators_are_independent_streams(device):
    g1, g2 = vk.Generator(1), vk.Generator(2)
    before = vk.get_rng_state()
    a = vk.rand(10_000, device=device, generator=g1).numpy()
    b = vk.rand(10_000, device=device, generator=g2).numpy()
    assert vk.get_rng_state() == before  # the default generator is untouched
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(10_000)
    # Interleaving draws from another generator does not change a generator's stream.
    g1.manual_seed(1)
    first = vk.rand(5000, device=device, generator=g1).numpy()
    vk.rand(77, device=device, generator=g2)
    second = vk.rand(5000, device=device, generator=g1).numpy()
    np.testing.assert_array_equal(np.concatenate([first, second]), a)
    same = vk.Generator(1)
    np.testing.assert_array_equal(vk.rand(10_000, device=device, generator=same).numpy(), a)


def test_state_save_and_restore(device):
    g = vk.Generator(5)
    vk.randn(10, generator=g, device=device)
    state = g.get_state()
    assert state == (5, 3) and all(type(v) is int for v in state)  # ceil(10 / 4) counters used
    a = vk.normal(2.0, 3.0, (6, 5), generator=g, device=device).numpy()
    b = vk.randint(0, 1000, 9, generator=g, device=device).numpy()
    g.set_state(state)
    again = vk.normal(2.0, 3.0, (6, 5), generator=g, device=device)
    np.testing.assert_array_equal(again.numpy(), a)
    np.testing.assert_array_equal(vk.randint(0, 1000, 9, generator=g, device=device).numpy(), b)
    vk.manual_seed(8)
    saved = vk.get_rng_state()
    c = vk.rand(4, 4, device=device).numpy()
    vk.rand(10, device=device)
    vk.set_rng_state(saved)
    np.testing.assert_array_equal(vk.rand(4, 4, device=device).numpy(), c)
    assert vk.manual_seed(2 ** 64 + 8).get_state() == saved  # seeds are taken modulo 2^64


def test_shapes_and_dtypes(device):
    assert vk.rand(device=device).shape == ()
    assert vk.rand(2, 3, device=device).shape == vk.rand((2, 3), device=device).shape == (2, 3)
    assert vk.randn([4], dtype=vk.bfloat16, device=device).dtype == vk.bfloat16
    assert vk.uniform(shape=7, device=device).shape == (7,)
    assert vk.randint(3, 9, (2, 2), dtype="uint8", device=device).dtype == vk.uint8
    state = vk.get_rng_state()
    assert vk.rand(0, 5, device=device).shape == (0, 5)
    assert vk.get_rng_state() == state  # nothing drawn, nothing used
    bf = vk.rand(1000, dtype="bfloat16", device=device).numpy()
    assert bf.dtype == ml_dtypes.bfloat16 and (bf.astype(np.float32) * 256 % 1 == 0).all()


def test_bad_arguments(device):
    with pytest.raises(ValueError, match="negative dimension"):
        vk.rand(2, -1, device=device)
    with pytest.raises(ValueError, match="negative dimension"):
        vk.randint(0, 5, (-3,), device=device)
    with pytest.raises(TypeError, match="shape"):
        vk.randn(2.5, device=device)
    with pytest.raises(ValueError, match="low < high.*low=5, high=5"):
        vk.randint(5, 5, 3, device=device)
    with pytest.raises(ValueError, match="low < high"):
        vk.randint(0, device=device)
    with pytest.raises(ValueError, match="low < high"):
        vk.uniform(1.0, 0.5, 3, device=device)
    with pytest.raises(ValueError, match="std >= 0"):
        vk.normal(0.0, -1.0, 3, device=device)
    with pytest.raises(ValueError, match="finite"):
        vk.uniform(0.0, float("inf"), 3, device=device)
    with pytest.raises(ValueError, match="does not fit in uint8"):
        vk.randint(0, 300, 3, dtype="uint8", device=device)
    with pytest.raises(TypeError, match="integer tensors"):
        vk.randint(0, 3, 3, dtype="float32", device=device)
    with pytest.raises(TypeError, match="floating-point"):
        vk.rand(3, dtype="int32", device=device)
    with pytest.raises(TypeError, match="integer bounds"):
        vk.randint(0.5, 3, device=device)
    with pytest.raises(TypeError, match="Generator"):
        vk.rand(3, device=device, generator=42)
    g = vk.Generator()
    with pytest.raises(TypeError, match="seed, offset"):
        g.set_state("abc")
    with pytest.raises(ValueError, match="offset"):
        g.set_state((1, -1))
