"""float32 accuracy of the transcendental elementwise ops over the whole range, near zero too.

Each op runs on every device over +-10^k for k from -30 to its range's end, and is held to its
bounds in tests/tolerances.py in ulps of the float64 reference (math/numpy) rounded to float32:
a RELATIVE bound, so tanh(1e-6) and erf(1e-20) are checked as tightly as tanh(1). Every device
meets the Vulkan spec's bound; the host and lavapipe also their tight ones. Edge values
(infinities, NaN, the limits) are compared exactly. bf16 scalars and (-inf) ** y follow torch.
"""
import math

import ml_dtypes
import numpy as np
import pytest
import torch

import vkgrad as vk

import tolerances
from tolerances import K_TANH as K

_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_erf = np.vectorize(math.erf, otypes=[np.float64])
F32_MAX = float(np.finfo(np.float32).max)


def _sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


# name: (float64 reference, largest |x| tested)
OPS = {
    "exp": (np.exp, 88.0),
    "expm1": (np.expm1, 88.0),
    "log": (np.log, 1e30),
    "log1p": (np.log1p, 1e30),
    "tanh": (np.tanh, 20.0),
    "sigmoid": (_sigmoid, 100.0),
    "silu": (lambda x: x * _sigmoid(x), 100.0),
    "softplus": (lambda x: np.logaddexp(0, x), 100.0),
    "erf": (_erf, 10.0),
    "gelu": (lambda x: 0.5 * x * _erfc(-x / math.sqrt(2)), 14.0),
    "gelu_tanh": (lambda x: x * _sigmoid(K * (x + 0.044715 * x ** 3)), 9.0),
    "log2": (np.log2, 1e30),
    "log10": (np.log10, 1e30),
    "exp2": (np.exp2, 127.0),
    "sin": (np.sin, F32_MAX),
    "cos": (np.cos, F32_MAX),
    "tan": (np.tan, F32_MAX),
    "asin": (np.arcsin, 1.0),
    "acos": (np.arccos, 1.0),
    "atan": (np.arctan, 1e30),
    "sinh": (np.sinh, 89.0),
    "cosh": (np.cosh, 89.0),
    "asinh": (np.arcsinh, 1e30),
    "acosh": (np.arccosh, 1e30),
    "atanh": (np.arctanh, 1.0),
    "mish": (lambda x: x * np.tanh(np.logaddexp(0, x)), 100.0),
    "logsigmoid": (lambda x: -np.logaddexp(0, -x), 100.0),
    "selu": (lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
             100.0),
    "softsign": (lambda x: x / (1 + np.abs(x)), 1e30),
    "sqrt": (np.sqrt, F32_MAX),
    "rsqrt": (lambda x: 1 / np.sqrt(x), F32_MAX),
}
# sin, cos, tan: also the float32 numbers nearest to multiples of pi/2, where the reduction
# cancels most (x mod pi/2 is then smallest relative to x)
_NEAR_PIO2 = (np.arange(1, 20001) * (np.pi / 2)).astype(np.float32)


def _inputs(name, top):
    k = np.linspace(-30, np.log10(top), 3000)
    x = np.concatenate([10.0 ** k, -(10.0 ** k)]).astype(np.float32)
    x = x[np.abs(x) <= top]
    if name in ("sin", "cos", "tan"):
        x = np.concatenate([x, _NEAR_PIO2, -_NEAR_PIO2, 2.0 ** np.arange(-20, 128)]).astype(
            np.float32)
    if name in ("log", "log2", "log10", "sqrt", "rsqrt"):
        x = np.abs(x)
    if name == "log1p":
        x = x[x > -1]
    if name == "acosh":
        x = 1 + np.abs(x)  # acosh(1 + t) ~ sqrt(2t) for tiny t
    return x


def _accuracy_cases(names):
    """(name, which bound, device) for the ops `names` on every device: the spec's bound, and
    the tight one ("host", "ieee") where the device has one."""
    from conftest import DEVICES
    cases = []
    for d in DEVICES:
        marks = [pytest.mark.vulkan] if d.kind == "vulkan" else []
        for which in ["spec"] + [w for w in [tolerances.tight(d)] if w]:
            cases += [pytest.param(name, which, d, marks=marks, id=f"{name}-{which}-{d}")
                      for name in names]
    return cases


@pytest.mark.parametrize("name,which,device", _accuracy_cases(OPS))
def test_relative_accuracy_f32(name, which, device):
    fn, top = OPS[name]
    x = _inputs(name, top)
    with np.errstate(over="ignore"):
        ref = fn(x.astype(np.float64))
    got = getattr(vk.tensor(x, device=device), name)()
    assert got.dtype is vk.float32
    got = got.numpy()
    checked = (np.abs(ref) >= 1e-30) & (np.abs(ref) < 3e38)  # float32's normal range, roughly
    tolerances.check(name, got[checked], ref[checked], [x[checked].astype(np.float64)], which,
                     f"on {device}")


@pytest.mark.parametrize("name,which,device", _accuracy_cases(["pow"]))
def test_pow_accuracy_f32(name, which, device):
    """x ** y against float64 over x from 1e-40 (subnormal) to 1e38 with moderate y, x near 1
    with y up to 3e4, and |y log2 x| up to 150: the rounding of t = y log2 x, which the
    driver's pow passes on as |t| ulps, stays out of the result."""
    rng = np.random.default_rng(2)
    n = 20000
    x = np.concatenate([10.0 ** rng.uniform(-40, 38, n), 1 + rng.uniform(-1e-3, 1e-3, n),
                        10.0 ** rng.uniform(-3, 3, n)]).astype(np.float32)
    y = np.concatenate([rng.uniform(-3, 3, n), rng.uniform(-3e4, 3e4, n),
                        rng.uniform(-40, 40, n)]).astype(np.float32)
    exact = [x.astype(np.float64), y.astype(np.float64)]
    with np.errstate(over="ignore", under="ignore"):
        ref = np.power(*exact)
    got = (vk.tensor(x, device=device) ** vk.tensor(y, device=device)).numpy()
    checked = (ref >= 1e-30) & (ref < 3e38)
    tolerances.check("pow", got[checked], ref[checked], [e[checked] for e in exact], which,
                     f"on {device}")


EDGES = {
    "exp": {np.inf: np.inf, -np.inf: 0.0, 89.0: np.inf, -104.0: 0.0},
    "expm1": {np.inf: np.inf, -np.inf: -1.0, 89.0: np.inf, -30.0: -1.0},
    "log": {0.0: -np.inf, np.inf: np.inf, -1.0: np.nan},
    "log1p": {-1.0: -np.inf, np.inf: np.inf, -2.0: np.nan},
    "tanh": {np.inf: 1.0, -np.inf: -1.0, 30.0: 1.0},
    "sigmoid": {np.inf: 1.0, -np.inf: 0.0},
    "softplus": {np.inf: np.inf, -np.inf: 0.0},
    "erf": {np.inf: 1.0, -np.inf: -1.0, 5.0: 1.0},
    "gelu": {np.inf: np.inf, -np.inf: np.nan, -20.0: -0.0},  # torch: gelu(-inf) is NaN
    "gelu_tanh": {np.inf: np.inf, -20.0: -0.0},
    "silu": {np.inf: np.inf, -200.0: -0.0},
    "log2": {0.0: -np.inf, np.inf: np.inf, -1.0: np.nan, 8.0: 3.0, 0.5: -1.0, 1.0: 0.0},
    "log10": {0.0: -np.inf, np.inf: np.inf, -1.0: np.nan, 1.0: 0.0},
    "exp2": {np.inf: np.inf, -np.inf: 0.0, 128.0: np.inf, -151.0: 0.0, 10.0: 1024.0, -3.0: 0.125},
    "tan": {np.inf: np.nan, -np.inf: np.nan, 0.0: 0.0},
    "sin": {np.inf: np.nan, -np.inf: np.nan, 0.0: 0.0, 1e-30: 1e-30},
    "cos": {np.inf: np.nan, -np.inf: np.nan, 0.0: 1.0, 1e-30: 1.0},
    "sqrt": {0.0: 0.0, np.inf: np.inf, -1.0: np.nan, -np.inf: np.nan, 4.0: 2.0},
    "rsqrt": {0.0: np.inf, np.inf: 0.0, -1.0: np.nan, -np.inf: np.nan, 4.0: 0.5},
    "asin": {1.0: np.float32(np.pi / 2), -1.0: -np.float32(np.pi / 2), 1.5: np.nan,
             -np.inf: np.nan},
    "acos": {1.0: 0.0, -1.0: np.float32(np.pi), 2.0: np.nan, 0.0: np.float32(np.pi / 2)},
    "atan": {np.inf: np.float32(np.pi / 2), -np.inf: -np.float32(np.pi / 2)},
    "sinh": {np.inf: np.inf, -np.inf: -np.inf, 90.0: np.inf, -90.0: -np.inf},
    "cosh": {np.inf: np.inf, -np.inf: np.inf, 90.0: np.inf, 0.0: 1.0},
    "asinh": {np.inf: np.inf, -np.inf: -np.inf},
    "acosh": {1.0: 0.0, np.inf: np.inf, 0.5: np.nan, -np.inf: np.nan},
    "atanh": {1.0: np.inf, -1.0: -np.inf, 2.0: np.nan},
    "trunc": {2.7: 2.0, -2.7: -2.0, np.inf: np.inf, -0.5: -0.0},
}


@pytest.mark.parametrize("name", list(EDGES))
def test_edge_values(name, device):
    x = np.array([*EDGES[name], np.nan], np.float32)
    expected = np.array([*EDGES[name].values(), np.nan], np.float32)
    got = getattr(vk.tensor(x, device=device), name)().numpy()
    np.testing.assert_array_equal(got, expected, err_msg=f"{name} on {device} at {x}")


@pytest.mark.parametrize("name", ["sin", "tan", "rsqrt", "cos"])
def test_negative_zero(name, device):
    """-0 keeps its sign through sin and tan (odd), rsqrt gives -inf (IEEE), cos gives 1."""
    got = getattr(vk.tensor(np.array([-0.0], np.float32), device=device), name)().numpy()
    expected = {"sin": -0.0, "tan": -0.0, "rsqrt": -np.inf, "cos": 1.0}[name]
    assert got[0] == expected and np.signbit(got[0]) == np.signbit(expected), (name, got)


def test_pow_negative_infinity(device):
    # IEEE pow, as numpy and torch: (-inf)^y = (-0)^-y, negative only for odd integers y
    y = np.array([0.3, 3.3, 3.0, 2.0, 4.0, -0.3, -3.0, -2.0, 0.0], np.float32)
    x = np.full_like(y, -np.inf)
    expected = torch.from_numpy(x) ** torch.from_numpy(y)
    got = (vk.tensor(x, device=device) ** vk.tensor(y, device=device)).numpy()
    np.testing.assert_array_equal(got, expected.numpy())
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected.numpy()))


def test_pow_nan(device):
    # IEEE pow, as numpy and torch: NaN in, NaN out, except x ** 0 and 1 ** y, which are 1
    x = np.array([np.nan, np.nan, np.nan, np.nan, 2.0, 1.0, 1.0, -np.nan, 0.0], np.float32)
    y = np.array([3.0, 0.5, 0.0, 2.0, np.nan, np.nan, np.inf, -1.0, np.nan], np.float32)
    expected = (torch.from_numpy(x) ** torch.from_numpy(y)).numpy()
    got = (vk.tensor(x, device=device) ** vk.tensor(y, device=device)).numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal((vk.tensor(x, device=device) ** 3.0).numpy(), x ** 3)


def _same_bits(got, expected, what):
    """Equal values, zeros' signs equal too, NaN where expected (its sign bit means nothing)."""
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=what)
    np.testing.assert_array_equal(got[~nan], expected[~nan], err_msg=what)
    np.testing.assert_array_equal(np.signbit(got[~nan]), np.signbit(expected[~nan]), err_msg=what)


POW_EDGES = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, -2.5, 1e-45,
                      -1e-45, 1e30, -1e30, 2.0 ** 24 + 2, -(2.0 ** 24 + 2), np.inf, -np.inf,
                      np.nan], np.float32)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pow_special_cases_against_numpy(dtype, device):
    """IEEE pow's table (C99 F.9.4.4), as numpy: (+-0)^y is +-0 / +-inf for odd integers y > 0 /
    < 0 and +0 / +inf otherwise (-inf too); (-1)^+-inf and 1^y are 1 (NaN y too), x^+-0 is 1 (NaN
    x too); x^-inf and x^inf by |x| < 1 or > 1; (-inf)^y; x < 0 with a non-integer y is NaN; NaN
    otherwise. Every pair of POW_EDGES: exactly (zeros' signs too) where the result is 0, +-1,
    +-inf or NaN, or x is one of those, or y is +-0, +-inf or NaN, or x is +-0.5 or +-2 and y
    an integer (exact powers of two), elsewhere within pow's tolerance (2 ulps here)."""
    x, y = np.repeat(POW_EDGES, POW_EDGES.size), np.tile(POW_EDGES, POW_EDGES.size)
    narrow = vk.dtype(dtype).np_dtype
    x, y = x.astype(narrow).astype(np.float32), y.astype(narrow).astype(np.float32)
    with np.errstate(all="ignore"):
        expected = np.power(x, y).astype(narrow).astype(np.float32)
    got = (vk.tensor(x, dtype, device) ** vk.tensor(y, dtype, device)).numpy().astype(np.float32)
    special = lambda v, values: np.isin(np.abs(v), values) | np.isnan(v)
    exact = (special(expected, [0.0, 1.0, np.inf]) | special(x, [0.0, 1.0, np.inf])
             | special(y, [0.0, np.inf])
             | (np.isin(np.abs(x), [0.5, 2.0]) & (y == np.floor(y))))
    _same_bits(got[exact], expected[exact], f"pow {dtype} on {device}")
    ulp = 2.0 ** -23 if dtype == "float32" else 2.0 ** -7
    np.testing.assert_allclose(got[~exact], expected[~exact], rtol=2 * ulp)


def _division_operands():
    """Pairs at the edges of float32 division: subnormal and huge divisors, quotients far past
    2^24 and past float32's range (1e30 / 1e-30, 1 / 1.4e-45), every sign; then random bit
    patterns over the whole finite range (both as float32 arrays)."""
    v = np.array([1.0, 3.0, 0.3, 2.5, 7.0, 1e-45, 1e-40, 1.2e-38, 1e-30, 16777217.0, 1e30,
                  3.4e38], np.float32)
    v = np.concatenate([v, -v, [0.0, -0.0, np.inf, -np.inf, np.nan]]).astype(np.float32)
    bits = np.random.default_rng(7).integers(0, 2 ** 32, (2, 20000), dtype=np.uint64)
    x, y = bits.astype(np.uint32).view(np.float32)
    x, y = x[np.isfinite(x) & np.isfinite(y)], y[np.isfinite(x) & np.isfinite(y)]
    return (np.concatenate([np.repeat(v, v.size), x]).astype(np.float32),
            np.concatenate([np.tile(v, v.size), y]).astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_division_exact_at_extreme_quotients(dtype, device):
    """fmod is exact for every finite pair (the remainder always is a float), also where a / b
    overflows or b is subnormal, and remainder and floor division follow from it as numpy's
    npy_divmod: the same bits as numpy (1 % 1.4e-45 is 0, 1e30 // 1e-30 is inf, not -inf)."""
    x, y = _division_operands()
    narrow = vk.dtype(dtype).np_dtype
    x, y = x.astype(narrow).astype(np.float32), y.astype(narrow).astype(np.float32)
    vx, vy = vk.tensor(x, dtype, device), vk.tensor(y, dtype, device)
    for name, got, ref in [("fmod", vk.fmod(vx, vy), np.fmod), ("remainder", vx % vy, np.remainder),
                           ("floordiv", vx // vy, np.floor_divide)]:
        with np.errstate(all="ignore"):
            expected = ref(x, y).astype(narrow).astype(np.float32)
        _same_bits(got.numpy().astype(np.float32), expected, f"{name} {dtype} on {device}")


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "lt", "maximum"])
def test_bf16_python_scalar_at_f32_precision(op, device):
    """x (op) 0.1 on a bf16 tensor: the scalar stays a float32 0.1 and the float32 result rounds
    once, the same bits on every device. (torch 2.13's CPU add and sub round the scalar to bf16
    first, its mul, div and comparisons do not: the rule here is the latter.)"""
    x = np.random.default_rng(3).standard_normal(4000).astype(ml_dtypes.bfloat16)
    fn = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
          "div": lambda a, b: a / b, "lt": lambda a, b: a < b, "maximum": vk.maximum}[op]
    numpy_fn = {"maximum": np.maximum}.get(op, fn)
    expected = np.asarray(numpy_fn(x.astype(np.float32), np.float32(0.1)))
    expected = expected if op == "lt" else expected.astype(ml_dtypes.bfloat16)
    got = fn(vk.tensor(x, device=device), 0.1)
    assert got.dtype is (vk.bool_ if op == "lt" else vk.bfloat16)
    np.testing.assert_array_equal(got.numpy(), expected)


def _pairs(dtype):
    """Dividends and divisors of every sign (zeros too for floats), as numpy arrays."""
    a = np.array([7, -7, 7, -7, 6, -6, 0, 5, -2147483647, 2147483647, -2147483648], np.int64)
    b = np.array([3, 3, -3, -3, 3, -3, 5, 7, -1, -1, 7], np.int64)
    if dtype == "int32":
        return a.astype(np.int32), b.astype(np.int32)
    x = np.array([7.5, -7.5, 7.5, -7.5, 6.0, -6.0, 0.0, -0.0, 1.0, -1.0, 0.0, 3.0, np.inf, 1e-3],
                 np.float32)
    y = np.array([2.0, 2.0, -2.0, -2.0, 3.0, 3.0, 5.0, 5.0, 0.0, 0.0, 0.0, np.inf, 2.0, 0.1],
                 np.float32)
    return x, y


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_division_rules_against_torch(dtype, device):
    """remainder (the divisor's sign), fmod (the dividend's) and div's rounding modes, as torch,
    for floats (zero and infinite divisors too) and int32 (INT_MIN / -1 wraps, as numpy)."""
    a, b = _pairs(dtype)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    va, vb = vk.tensor(a, device=device), vk.tensor(b, device=device)
    cases = {"remainder": (vk.remainder(va, vb), torch.remainder(ta, tb)),
             "fmod": (vk.fmod(va, vb), torch.fmod(ta, tb)),
             "trunc": (vk.div(va, vb, rounding_mode="trunc"), torch.div(ta, tb,
                                                                       rounding_mode="trunc")),
             "floor": (va.div(vb, rounding_mode="floor"), torch.div(ta, tb, rounding_mode="floor")),
             "true": (vk.div(va, vb), torch.div(ta, tb))}
    for name, (got, expected) in cases.items():
        assert got.dtype.name == str(expected.dtype).replace("torch.", ""), name
        np.testing.assert_array_equal(got.numpy(), expected.numpy(), err_msg=name)
        if dtype == "float32":  # signed zeros as torch; remainder's as numpy's (the divisor's)
            signs = np.signbit(np.remainder(a, b) if name == "remainder" else expected.numpy())
            number = ~np.isnan(expected.numpy())  # (a NaN's sign bit means nothing)
            np.testing.assert_array_equal(np.signbit(got.numpy())[number], signs[number],
                                          err_msg=name)
    # (torch raises for integer division by zero, and traps on INT_MIN / -1; vkgrad gives
    # numpy's 0, and INT_MIN with a zero remainder)
    if dtype == "int32":
        lowest, minus1 = vk.tensor([-2 ** 31], device=device), vk.tensor([-1], device=device)
        for got, expected in [(vk.div(lowest, minus1, rounding_mode="trunc"), -2 ** 31),
                              (lowest // minus1, -2 ** 31), (vk.fmod(lowest, minus1), 0),
                              (vk.remainder(lowest, minus1), 0)]:
            np.testing.assert_array_equal(got.numpy(), [expected])
        zero = vk.tensor(np.zeros(2, np.int32), device=device)
        for got in (vk.fmod(va[:2], zero), vk.remainder(va[:2], zero),
                    vk.div(va[:2], zero, rounding_mode="trunc")):
            np.testing.assert_array_equal(got.numpy(), [0, 0])
    with pytest.raises(ValueError, match="rounding_mode"):
        vk.div(va, vb, rounding_mode="round")


def test_shifts_and_invert_against_torch(device):
    """<<, >> and ~ as torch and numpy: counts outside [0, 32) shift every bit out (0; -1 for a
    negative value shifted right), never GLSL's undefined shift; ~ of bool is not."""
    rng = np.random.default_rng(0)
    a = rng.integers(-2 ** 31, 2 ** 31, 200).astype(np.int32)
    a[:4] = [1, -1, -2147483648, 2147483647]
    count = rng.integers(-5, 70, 200).astype(np.int32)
    count[:8] = [31, 31, 32, 32, 0, -1, 33, 64]
    ta, tc = torch.from_numpy(a), torch.from_numpy(count)
    va, vc = vk.tensor(a, device=device), vk.tensor(count, device=device)
    np.testing.assert_array_equal((va << vc).numpy(), (ta << tc).numpy())
    np.testing.assert_array_equal((va >> vc).numpy(), (ta >> tc).numpy())
    np.testing.assert_array_equal(vk.left_shift(va, vc).numpy(), np.left_shift(a, count))
    np.testing.assert_array_equal(vk.right_shift(va, vc).numpy(), np.right_shift(a, count))
    np.testing.assert_array_equal((3 << vc[:20]).numpy(), (3 << tc[:20]).numpy())
    np.testing.assert_array_equal((va >> 3).numpy(), (ta >> 3).numpy())
    u8 = np.array([0, 1, 127, 128, 255], np.uint8)
    np.testing.assert_array_equal((vk.tensor(u8, device=device) << 1).numpy(), u8 << 1)
    for x in (a, u8, np.array([True, False, True])):
        np.testing.assert_array_equal((~vk.tensor(x, device=device)).numpy(), ~x)
        np.testing.assert_array_equal(vk.bitwise_not(vk.tensor(x, device=device)).numpy(),
                                      (~torch.from_numpy(x)).numpy())
    with pytest.raises(TypeError, match="integer and bool"):
        ~vk.tensor([1.0], device=device)
    with pytest.raises(TypeError, match="integer and bool"):
        vk.tensor([1.0], device=device) << 1


def test_binary_edges_against_torch(device):
    """copysign, logaddexp, atan2 and lerp at signed zeros, infinities and NaN, as torch."""
    v = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-30, -3.5, 100.0], np.float32)
    x, y = np.repeat(v, v.size), np.tile(v, v.size)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    vx, vy = vk.tensor(x, device=device), vk.tensor(y, device=device)
    for name, got, expected in [("copysign", vk.copysign(vx, vy), torch.copysign(tx, ty)),
                                ("logaddexp", vx.logaddexp(vy), torch.logaddexp(tx, ty)),
                                ("atan2", vk.atan2(vx, vy), torch.atan2(tx, ty))]:
        got, expected = got.numpy(), expected.numpy()
        exact = ~np.isfinite(expected) | (expected == 0) | (np.abs(expected) == np.float32(
            np.pi)) | (np.abs(expected) == np.float32(np.pi / 2))
        np.testing.assert_array_equal(got[exact], expected[exact], err_msg=name)
        number = ~np.isnan(expected)
        np.testing.assert_array_equal(np.signbit(got)[number], np.signbit(expected)[number],
                                      err_msg=name)
        np.testing.assert_allclose(got, expected, rtol=4 * 2 ** -24, err_msg=name)
    w = np.array([0.0, 1.0, 0.5, 0.25, 2.0, -1.0, np.nan, 0.75], np.float32)
    start = np.arange(8, dtype=np.float32) - 3
    end = np.array([1.0, -2.0, np.inf, 4.0, 1e-30, 5.0, 1.0, -7.0], np.float32)
    expected = torch.lerp(torch.from_numpy(start), torch.from_numpy(end), torch.from_numpy(w))
    got = vk.tensor(start, device=device).lerp(vk.tensor(end, device=device),
                                               vk.tensor(w, device=device))
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_isclose_against_torch(device):
    a = np.array([1.0, 1.0, np.inf, np.inf, -np.inf, np.nan, 0.0, 1e-9, 100.0, 1.0], np.float32)
    b = np.array([1.0 + 1e-6, 1.1, np.inf, -np.inf, 1e30, np.nan, 1e-9, 0.0, 100.001, np.inf],
                 np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for dtype in ("float32", "bfloat16"):
        va, vb = vk.tensor(a, dtype, device), vk.tensor(b, dtype, device)
        tta, ttb = ta.to(getattr(torch, dtype)), tb.to(getattr(torch, dtype))
        for kwargs in ({}, {"rtol": 0.0, "atol": 1e-3}, {"equal_nan": True}, {"rtol": 0.2}):
            got = vk.isclose(va, vb, **kwargs)
            assert got.dtype is vk.bool_
            np.testing.assert_array_equal(got.numpy(), torch.isclose(tta, ttb, **kwargs).numpy(),
                                          err_msg=f"{dtype} {kwargs}")
            assert va.allclose(vb, **kwargs) == torch.allclose(tta, ttb, **kwargs)
    assert vk.allclose(vk.tensor(a[:2], device=device), vk.tensor(a[:2], device=device))
    ints = vk.tensor([1, 2, 3], device=device)
    np.testing.assert_array_equal(vk.isclose(ints, ints + 1, atol=1).numpy(), [True] * 3)
    with pytest.raises(ValueError, match="non-negative"):
        vk.isclose(ints, ints, rtol=-1)
