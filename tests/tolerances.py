"""float32 error bounds of the elementwise ops, per op: what a correct result may be off by.

Declared once, used by tests/test_ops.py (its float32 comparisons, and the absolute terms in its
bf16 ones) and tests/test_elementwise_accuracy.py. A bound is `ulps` of the float64 reference's
float32 spacing plus an absolute term, each a number or a function of the (float64) inputs.

Three bounds per op:
- `ieee`: where +, -, *, / and sqrt round correctly, as on CPU Vulkan drivers (lavapipe compiles
  them to the CPU's IEEE instructions). For the project's own formulas (shaders/elementwise.comp)
  this is the largest error found on lavapipe over 800,000 inputs per op (log-uniform magnitudes
  from 1e-30 to the end of the range and uniform ones near 0, both signs), rounded up past it to
  the next half ulp (at least a quarter ulp of room); tests/test_elementwise_accuracy.py holds
  every device to it over its own sweep.
- `host`: the host's functions, where they differ from `ieee` (numpy's float32 exp and log are
  its SIMD versions, documented to 2.52 and 3.83 ulps; erf and gelu evaluate their fits in
  float64); otherwise `ieee`.
- `spec`: what every Vulkan device is allowed, from the Vulkan spec's table "Precision and
  Operation of SPIR-V Instructions" (single precision, no RelaxedPrecision):
    OpFAdd, OpFSub, OpFMul, conversions: correctly rounded; comparisons exact;
    OpFDiv: 2.5 ulp for a divisor's magnitude in [2^-126, 2^126];
    fma: inherited from OpFMul then OpFAdd (it may round twice);
    exp, exp2: (3 + 2|x|) ulp; log, log2: 3 ulp outside [0.5, 2], absolute 2^-21 inside;
    pow(x, y): inherited from exp2(y log2 x); inversesqrt: 2 ulp;
    sqrt: inherited from 1.0 / inversesqrt;
    sin, cos: absolute 2^-11 inside [-pi, pi], nothing outside; tan: from sin / cos;
    floor, ceil, trunc, roundEven, abs, min, max, clamp, frexp, ldexp: exact;
    denormals may be flushed to zero (so results below 2^-126 may be 0).
  Results below 2^-126 are held to an absolute 2^-126 (SUBNORMAL) everywhere: besides flushing,
  subnormal intermediates keep fewer bits, which a later product multiplies.
  The project's formulas use only the exact and correctly rounded operations and division
  (their square roots are the driver's corrected by a Newton step with an exact residual,
  sqrt_acc, which leaves half an ulp and a hair on any device); each division on the way to the
  result adds 2 ulps of its quotient (2.5 instead of 0.5). `spec` is `ieee` plus those, carried
  to the result: k ulps of an intermediate are a relative error of at most k 2^-23, which is at most
  2k ulps of a result with the same relative error (an ulp is 2^-24 to 2^-23 of a value), times
  the factor by which the formula passes the intermediate's relative error on (its condition,
  at most 1 unless stated). So: a division inside a formula adds 4 ulps, a final one 2 (its own
  ulps).

Ops absent here are exact (integer results, comparisons, selections, copies).
"""
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from vkgrad.kernels import ERFC_MAX, ERFC_R

U = 2.0 ** -24          # float32's unit roundoff: a correct rounding's relative error
SUBNORMAL = 2.0 ** -126  # float32's smallest normal number
DIV = 4                 # a division inside a formula: 2 more ulps of its quotient, doubled
K_TANH = 2 * 0.7978845608028654  # gelu_tanh: x sigmoid(K_TANH (x + 0.044715 x^3))

Number = Union[float, Callable]


def _erfc_condition():
    """max |t R'(t) / R(t)| of the erfc fit R over its range (t = 1 / (1 + z / 2), z in
    [0.5, ERFC_MAX]): how much the relative error of erfc_tail's t (one division) grows in erfc."""
    t = np.linspace(1 / (1 + ERFC_MAX / 2), 1 / 1.25, 20001)
    r = np.polynomial.polynomial.polyval(t, ERFC_R)
    dr = np.polynomial.polynomial.polyval(t, np.polynomial.polynomial.polyder(ERFC_R))
    return float(np.abs(t * dr / r).max())


ERFC_COND = _erfc_condition()  # 2.08


def _gelu_tanh_ieee(x, *_):
    # u = sqrt(2/pi) (x + c x^3) takes 5 roundings, whose ~3 ulps of relative error become
    # |2u| times that in e^(2u): (4 + 6|u|) ulps
    return 4 + 3 * np.abs(K_TANH * (x + 0.044715 * x ** 3))


def _pow_spec(a, b, *_):
    """2^t with t = b log2|a| in two-float arithmetic (pow_pos): exp2_split's 2 ulps, and t's
    relative error, that of log2_split's float tail (4 roundings of a term below 1% of log2 a:
    0.04 U), which 2^t multiplies by ln 2 |t|: 2 + 0.03 |t| ulps."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = np.abs(np.asarray(b, np.float64) * np.log2(np.abs(np.asarray(a, np.float64))))
    return 2 + 0.03 * np.where(np.isfinite(t), t, 0.0)


def _near_integer(a, b):
    """Where a / b lies within 3 ulps of an integer: a 2.5-ulp division may truncate it to the
    neighbouring integer there."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.asarray(a, np.float64) / np.asarray(b, np.float64)
        return np.abs(q - np.round(q)) <= 3 * np.spacing(np.abs(q).astype(np.float32))


def _quotient_step(a, b, *_):  # trunc(a / b) one integer off near integers
    return np.where(_near_integer(a, b), 1.0, 0.0)


def _logaddexp_abs(a, b, *_):
    # max(a, b) + log1p(e^-d): the sum may cancel (a result near 0 from max near -ln 2), so its
    # roundings count against the terms: 2 U (|max| + ln 2), and d = |a - b| rounded moves
    # e^-d by U d e^-d <= U / e
    return 2 * U * (np.abs(np.maximum(a, b)) + 1.0)


def _lerp_abs(a, b, c):
    # a + c (b - a) or b - (b - a)(1 - c): three roundings of terms up to (1 + |c|)(|a| + |b|)
    return 3 * U * (1 + np.abs(c)) * (np.abs(a) + np.abs(b))


@dataclass(frozen=True)
class Bound:
    ieee: Number
    spec: Number
    abs: Callable = None  # an absolute term for ops whose result may cancel
    host: Number = None   # numpy's bound, where it is not `ieee`


def _value(v, inputs):
    return v(*inputs) if callable(v) else v


# name: Bound(ieee, spec). Each comment gives the formula (elementwise.comp) and the spec's sum.
ELEMENTWISE = {
    # correctly rounded single steps: half an ulp on every device
    **{name: Bound(0.5, 0.5) for name in (
        "add", "sub", "mul", "square", "leaky_relu", "identity", "neg", "abs", "relu", "sign",
        "floor", "ceil", "round", "trunc", "maximum", "minimum", "clip", "hardtanh", "copysign",
        "where")},
    "div": Bound(0.5, 2.5),         # OpFDiv
    "reciprocal": Bound(0.5, 2.5),  # 1.0 / a: OpFDiv
    # sqrt_acc: the driver's (1 / inversesqrt: 6.5 ulps) and a Newton step, whose residual is
    # exact and whose correction is off by 2.5 ulps of itself (< 1e-5 ulp); lavapipe's sqrt is
    # IEEE, which the step leaves 1 in 1,000 results a hair past half an ulp
    "sqrt": Bound(0.6, 0.6, host=0.5),
    "rsqrt": Bound(1.5, 2),         # inversesqrt (host: 1 / np.sqrt, two roundings)
    "truncdiv": Bound(0.5, 0.5, _quotient_step),   # trunc(a / b)
    "floordiv": Bound(0.5, 0.5, _quotient_step),   # from fmod, one integer off near integers
    "fmod": Bound(0.5, 0.5),                       # exact (fmod_mag: integer long division)
    "mod": Bound(0.5, 0.5),                        # exact fmod + b: one rounding
    "pow": Bound(1.5, _pow_spec, host=1.25),  # own (no division); numpy's powf for the host
    # min(max(a + 3, 0), 6) / 6: the sum's U (1 ulp), the final division's 0.5 / 2.5 ulps
    "hardsigmoid": Bound(1.5, 3.5),
    "hardswish": Bound(2.5, 4.5),   # (a m) / 6: two more correct roundings (2 ulps)
    "softsign": Bound(2, 3.5),      # a / (1 + |a|): 1 + |a| (1 ulp), the final division
    "lerp": Bound(0.5, 0.5, _lerp_abs),
    # the project's formulas: ieee as proven (tests/test_elementwise_accuracy.py), spec adding
    # the divisions and sqrts on the way
    "exp": Bound(2, 2, host=3),     # Cody-Waite, series, ldexp: no division
    "expm1": Bound(3, 3),
    "exp2": Bound(2, 2, host=2.5),
    "log": Bound(2.5, 2.5 + DIV, host=4),  # log1p(f) = 2 atanh(f / (2 + f)): one division
    "log2": Bound(3.5, 3.5 + DIV),
    "log10": Bound(3.5, 3.5 + DIV),
    "log1p": Bound(3, 3 + DIV),     # log1p_small, or log u minus a tiny quotient
    "tanh": Bound(2, 2 + DIV),      # 1 - 2 / (expm1(2|x|) + 2): quotient <= 0.46 of t >= 0.54
    "sigmoid": Bound(4, 4 + DIV),   # 1 / (1 + e^-|x|)
    "silu": Bound(4.5, 4.5 + DIV),
    "softplus": Bound(3.5, 3.5 + DIV),  # max(x, 0) + log1p(e^-|x|)
    "logsigmoid": Bound(3.5, 3.5 + DIV),
    "logaddexp": Bound(3, 3 + DIV, _logaddexp_abs),
    "selu": Bound(3.5, 3.5),            # expm1, products
    "elu": Bound(5, 5),             # alpha expm1(a s): a s rounded (1 ulp), the product (1)
    # softplus(a b) / b: softplus, the product's rounding (1 ulp: the condition of softplus is
    # at most 1), the final division
    "softplus_beta": Bound(4.5, 6.5 + DIV),
    "mish": Bound(5, 5 + DIV),      # x n / (n + 2)
    # 1 - erfc for |x| > 1, erfc <= 0.157 of erf >= 0.843: t's division, through the fit's
    # condition ERFC_COND, reaches erf 0.19 times
    "erf": Bound(3, 3 + DIV * ERFC_COND * 0.19, host=1),
    # x < 0: x erfc / 2, the full ERFC_COND DIV; x > 0 as erf
    "gelu": Bound(6.5, 6.5 + DIV * ERFC_COND, host=1),
    "gelu_tanh": Bound(_gelu_tanh_ieee, lambda x, *_: _gelu_tanh_ieee(x) + DIV),  # sigmoid
    # own sin and cos (Cody-Waite or Payne-Hanek reduction, series): no division, no sqrt
    "sin": Bound(3, 3),
    "cos": Bound(3, 3),
    "tan": Bound(4.5, 4.5 + 2),         # sin r / cos r: a final division
    "atan": Bound(3, 3 + DIV),      # -1 / |x| or (|x| - 1) / (|x| + 1) reduced
    "atan2": Bound(3, 3 + 2 * DIV),  # |y| / |x|, then atan's division
    # atan2(x, sqrt_acc((1 - x)(1 + x))): atan2's divisions
    "asin": Bound(4, 4 + 2 * DIV),
    "acos": Bound(4, 4 + 2 * DIV),
    "sinh": Bound(3, 3 + DIV),      # (E + E / (E + 1)) / 2
    "cosh": Bound(3, 3 + DIV),      # (t + 1 / t) / 2
    # log1p(a + a^2 / (1 + sqrt_acc(1 + a^2))): a division, log1p's division
    "asinh": Bound(3.5, 3.5 + 2 * DIV),
    "acosh": Bound(4, 4 + DIV),     # log1p(t + sqrt_acc(t (x + 1)))
    "atanh": Bound(3.5, 3.5 + 2 * DIV),      # log1p(2a / (1 - a)) / 2
}


def tight(device):
    """The tight bound that `device` is held to besides "spec": "host" for the host, "ieee" for
    a CPU Vulkan driver (IEEE division and sqrt), None for other Vulkan devices."""
    if device.kind == "host":
        return "host"
    return "ieee" if device.backend.is_cpu else None


def allowed(name, inputs, which, shape=None):
    """(ulps, absolute) arrays that the float32 result of op `name` on `inputs` (float64 arrays
    or Python scalars) may be off by; which: "host", "ieee" or "spec"."""
    bound = ELEMENTWISE[name]
    inputs = [np.asarray(x, np.float64) if isinstance(x, np.ndarray) else x for x in inputs]
    ulps = bound.ieee if which == "host" and bound.host is None else getattr(bound, which)
    ulps = _value(ulps, inputs)
    extra = (bound.abs(*inputs) if bound.abs else 0.0) + SUBNORMAL
    if shape is not None:
        ulps, extra = np.broadcast_to(ulps, shape), np.broadcast_to(extra, shape)
    return ulps, extra


def f32_spacing(ref):
    """The spacing of float32 numbers at |ref| (inf where ref is beyond float32's range)."""
    with np.errstate(over="ignore"):
        return np.spacing(np.abs(np.asarray(ref, np.float64)).astype(np.float32)).astype(
            np.float64)


def violations(got, ref, ulps, extra):
    """Where float32 results `got` are farther from the float64 reference `ref` than `ulps` of
    its float32 spacing plus `extra`; NaN must match NaN, and a reference that float32 rounds to
    an infinity or zero may be matched exactly."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = ref.astype(np.float32).astype(np.float64)
        ok = (np.abs(got - ref) <= ulps * f32_spacing(ref) + extra) | (got == rounded) | (
            np.isnan(got) & np.isnan(ref))
    return ~ok


def check(name, got, ref, inputs, which, where=""):
    """Assert that op `name`'s float32 results are within its `which` bound of `ref`."""
    ulps, extra = allowed(name, inputs, which, np.shape(ref))
    bad = violations(got, ref, ulps, extra)
    if bad.any():
        got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
        with np.errstate(invalid="ignore"):
            excess = np.where(bad, (np.abs(got - ref) - extra) / f32_spacing(ref)
                              / np.maximum(ulps, 1e-9), 0)
        worst = np.unravel_index(np.nanargmax(excess), np.shape(ref))
        at = [np.broadcast_to(x, bad.shape)[worst] if isinstance(x, np.ndarray) else x
              for x in inputs]
        raise AssertionError(
            f"{name} {where}: {int(bad.sum())} of {bad.size} results beyond the {which} bound "
            f"({np.broadcast_to(ulps, bad.shape)[worst]:.3g} ulps + "
            f"{np.broadcast_to(extra, bad.shape)[worst]:.3g}); worst at inputs {at}: "
            f"got {got[worst]!r}, expected {ref[worst]!r}")
