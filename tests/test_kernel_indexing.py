"""How elementwise.comp and gather.comp find their elements: coordinates split off a linear
index by multiply-high and shift (vkgrad.layout.div_magic, checked here against integer division
on the dividends where it could fail), several elements per invocation, and grids past 65,535
workgroups; ops over awkward sizes, packed dtypes and strided, reversed, transposed and
broadcast views of 1-4 dims, against numpy."""
import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk
from vkgrad import kernels, layout

BOUND = layout.DIV_MAGIC_BOUND  # 2^31
DIVISORS = sorted({1, 2, 3, 5, 6, 7, 10, 11, 13, 100, 641, 1000, 1023, 65535, 65536, 65537,
                   1000003, 6700417, 16777215, 16777217, 1 << 30, (1 << 30) + 1, 2147483629,
                   2147483647, BOUND,
                   *(1 << k for k in range(32)), *((1 << k) + 1 for k in range(1, 31)),
                   *((1 << k) - 1 for k in range(2, 32)),
                   *((1 << k) // 3 for k in range(4, 33))})


def _quotient(n, m, s):
    """div_magic as common.glsl computes it (2n in a 32-bit word), on uint64 arrays."""
    twice = (n << np.uint64(1)) & np.uint64(0xffffffff)
    return (twice * np.uint64(m) >> np.uint64(32)) >> np.uint64(s)


def _dividends(d, rng):
    """Every small dividend, the top of the range (where n e / 2^(31+s), the error the proof
    bounds, is largest), the multiples of d and their neighbours at both ends, and random ones."""
    top_q = (BOUND - 1) // d
    near = [q * d + r for q in (0, 1, 2, 3, top_q - 2, top_q - 1, top_q)
            for r in (0, 1, d - 2, d - 1) if 0 <= r < d]
    n = np.concatenate([np.arange(1 << 16), np.arange(BOUND - (1 << 16), BOUND),
                        np.array(near), rng.integers(0, BOUND, 1 << 14)])
    return n[(n >= 0) & (n < BOUND)].astype(np.uint64)


def test_div_magic_divides_exactly_below_2_to_the_31(rng):
    for d in DIVISORS:
        m, s = layout.div_magic(d)
        assert 0 < m < 1 << 32 and 0 <= s <= 31, d
        n = _dividends(d, rng)
        q = _quotient(n, m, s)
        assert (q == n // np.uint64(d)).all(), d


def test_div_magic_is_exact_for_every_dividend_of_small_divisors():
    n = np.arange(1 << 24, dtype=np.uint64)
    for d in (3, 7, 255, 641, 65535):
        assert (_quotient(n, *layout.div_magic(d)) == n // np.uint64(d)).all(), d


def test_div_magic_bounds():
    # from 2^31 on, 2n leaves the word: the launchers refuse bigger domains
    m, s = layout.div_magic(7)
    n = np.arange(BOUND, BOUND + (1 << 20), dtype=np.uint64)
    assert not (_quotient(n, m, s) == n // np.uint64(7)).all()
    for bad in (0, BOUND + 1):
        with pytest.raises(ValueError):
            layout.div_magic(bad)


def test_div_magic_fields():
    fields = layout.div_magic_fields((5, 3, 1 << 20, 7), 4, "a test")
    magics = [layout.div_magic(d) for d in (3, 1 << 20, 7)]
    assert fields["inner"] == [3, 1 << 20, 7]
    assert fields["magic"] == [m for m, _ in magics]
    assert fields["shifts"] == magics[0][1] | magics[1][1] << 8 | magics[2][1] << 16
    assert layout.div_magic_fields((9,), 5, "a test") == {"inner": [1] * 4,
                                                          "magic": [1 << 31] * 4, "shifts": 0}
    layout.div_magic_fields((2, 1 << 30), 4, "a test")  # 2^31 elements: indices below it
    with pytest.raises(NotImplementedError, match=r"a test of 2147483649 elements"):
        layout.div_magic_fields((BOUND + 1,), 4, "a test")


# ---- ops on the device ---------------------------------------------------------------------------
SIZES = [1, 15, 17, 127, 129, 1000, 1025]
SHAPES = [(n,) for n in SIZES] + [(3, 5), (17, 129), (1, 1000), (3, 4, 17), (2, 3, 5, 7),
                                  (2, 3, 1, 129), (5, 2, 9, 3)]
VIEWS = ["contiguous", "strided", "reversed", "transposed", "broadcast"]
DTYPES = ["float32", "bfloat16", "int32", "uint8"]


def _values(rng, shape, dtype):
    if dtype in ("int32", "uint8"):
        return rng.integers(0, 200, shape).astype(dtype)
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    return x.astype(ml_dtypes.bfloat16) if dtype == "bfloat16" else x


def _view(rng, shape, dtype, kind, device):
    """A numpy array of `shape` and the same values as a vkgrad view of kind `kind`."""
    nd = len(shape)
    if kind == "strided":  # every other element of the last axis
        base = _values(rng, (*shape[:-1], 2 * shape[-1]), dtype)
        return base[..., ::2], vk.tensor(base, device=device)[..., ::2]
    if kind == "reversed":
        base = _values(rng, shape, dtype)
        return base[::-1], vk.tensor(base, device=device)[::-1]
    if kind == "transposed":
        base = _values(rng, shape[::-1], dtype)
        axes = tuple(range(nd))[::-1]
        return base.transpose(axes), vk.tensor(base, device=device).transpose(*axes)
    if kind == "broadcast":  # the first axis and (for 3-d or more) the last broadcast
        small = tuple(1 if d == 0 or (d == nd - 1 and nd > 2) else n for d, n in enumerate(shape))
        base = _values(rng, small, dtype)
        return np.broadcast_to(base, shape), vk.tensor(base, device=device).broadcast_to(shape)
    base = _values(rng, shape, dtype)
    return base, vk.tensor(base, device=device)


def _bits(x):
    return np.ascontiguousarray(x).view(np.uint8)


_OPS = {np.add: lambda x, y: x + y, np.multiply: lambda x, y: x * y}


def _expected(op, a, b):
    if a.dtype == ml_dtypes.bfloat16:  # computed in f32, rounded once
        return op(a.astype(np.float32), b.astype(np.float32)).astype(ml_dtypes.bfloat16)
    return op(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_binary_ops_over_awkward_shapes_and_views(vulkan, rng, shape, dtype):
    for kind_a, kind_b in [("contiguous", "contiguous"), *zip(VIEWS, VIEWS[1:] + VIEWS[:1])]:
        a, ta = _view(rng, shape, dtype, kind_a, vulkan)
        b, tb = _view(rng, shape, dtype, kind_b, vulkan)
        for op in (np.add, np.multiply):
            got = np.asarray(_OPS[op](ta, tb).numpy())
            want = _expected(op, a, b)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert (_bits(got) == _bits(want)).all(), (kind_a, kind_b, op)
        # packed outputs whose words hold elements of several invocations' neighbours: bool
        assert (np.asarray((ta < tb).numpy()) == (a < b)).all(), (kind_a, kind_b)
        got = np.asarray(vk.where(ta < tb, ta, tb).numpy())
        assert (_bits(got) == _bits(np.where(a < b, a, b))).all()


@pytest.mark.parametrize("n", [1, 3, 15, 17, 127, 129, 1001])
def test_bf16_and_uint8_odd_lengths_with_scalars(vulkan, rng, n):
    x = _values(rng, (n,), "bfloat16")
    got = np.asarray((vk.tensor(x, device=vulkan) * 1.5 + 0.25).numpy())
    want = (x.astype(np.float32) * np.float32(1.5)).astype(ml_dtypes.bfloat16)
    want = (want.astype(np.float32) + np.float32(0.25)).astype(ml_dtypes.bfloat16)
    assert (got.view(np.uint16) == want.view(np.uint16)).all()
    u = _values(rng, (n,), "uint8")
    got = np.asarray((vk.tensor(u, device=vulkan)[::-1] + 100).numpy())
    assert (got == (u[::-1] + np.uint8(100))).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_contiguous_operands_at_every_alignment(vulkan, rng, dtype):
    # a quad of four elements moves in one access only when every operand starts at a multiple
    # of 4; the others, and the last n % 4 elements, go element by element
    base_a, base_b = _values(rng, (40,), dtype), _values(rng, (40,), dtype)
    ta, tb = vk.tensor(base_a, device=vulkan), vk.tensor(base_b, device=vulkan)
    for oa in range(5):
        for ob in (0, 1, 3, 4):
            for n in (1, 3, 4, 5, 8, 9, 17, 31):
                a, b = base_a[oa:oa + n], base_b[ob:ob + n]
                got = np.asarray((ta[oa:oa + n] * tb[ob:ob + n]).numpy())
                assert (_bits(got) == _bits(_expected(np.multiply, a, b))).all(), (oa, ob, n)
                got = np.asarray((ta[oa:oa + n] < tb[ob:ob + n]).numpy())
                assert (got == (a < b)).all(), (oa, ob, n)


def test_zero_dim_and_empty(vulkan):
    x = vk.tensor(np.float32(2.5), device=vulkan)
    assert np.asarray((x * 2).numpy()) == np.float32(5.0)
    e = vk.zeros((0, 3), device=vulkan, dtype="bfloat16") + 1
    assert e.shape == (0, 3) and np.asarray(e.numpy()).shape == (0, 3)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "uint8", "bool"])
@pytest.mark.parametrize("shape", [(1, 1), (15, 17), (129, 3), (1000, 7), (6, 5, 4, 3)], ids=str)
def test_gathers_over_awkward_shapes_and_views(vulkan, rng, shape, dtype):
    base = rng.standard_normal(shape[::-1]) > 0 if dtype == "bool" else _values(rng, shape[::-1],
                                                                                 dtype)
    axes = tuple(range(len(shape)))[::-1]
    x, tx = base.transpose(axes), vk.tensor(base, device=vulkan).transpose(*axes)
    for axis in range(len(shape)):  # an index along each axis of a transposed source
        idx = rng.integers(-shape[axis], shape[axis], 2 * shape[axis] + 1).astype(np.int32)
        key = (slice(None),) * axis + (idx,)
        tkey = (slice(None),) * axis + (vk.tensor(idx, device=vulkan),)
        got = np.asarray(tx[tkey].numpy())
        assert (_bits(got) == _bits(x[key])).all(), axis
    got = np.asarray(tx[..., ::2].contiguous().numpy())  # a plain strided copy
    assert (_bits(got) == _bits(x[..., ::2])).all()


# ---- grids past 65,535 workgroups -------------------------------------------------------------------
# More elements than the capped grid's invocations compute in one pass (65,535 x 256 x
# ELEMS_PER_INVOCATION): the kernels loop over the rest. uint8 and bool keep each tensor within
# lavapipe's 128 MiB storage buffers (about 68 MB).
ROWS, COLS = 65, 1 << 20


def test_grid_covers_more_elements_than_one_pass():
    assert ROWS * COLS > vk.Kernel.MAX_THREADS * kernels.ELEMS_PER_INVOCATION


def test_elementwise_past_65535_workgroups(vulkan, rng):
    a = rng.integers(0, 256, (ROWS, 1)).astype(np.uint8)
    b = rng.integers(0, 256, (1, COLS)).astype(np.uint8)
    ta, tb = vk.tensor(a, device=vulkan), vk.tensor(b, device=vulkan)
    got = np.asarray((ta + tb).numpy())  # broadcast: two dims, a division per element
    assert (got == a + b).all()
    del got
    assert (np.asarray((ta < tb).numpy()) == (a < b)).all()  # bool, four to a word


def test_gather_past_65535_workgroups(vulkan, rng):
    x = rng.integers(0, 256, (3, COLS)).astype(np.uint8)
    idx = rng.integers(-3, 3, ROWS).astype(np.int32)
    got = np.asarray(vk.tensor(x, device=vulkan)[vk.tensor(idx, device=vulkan)].numpy())
    assert (got == x[idx]).all()
