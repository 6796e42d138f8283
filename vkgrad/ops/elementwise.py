"""Elementwise ops: one table row per op (numpy function, result type rule, test domain).

All of them run on the device through shaders/elementwise.comp, selected by op code, with
operands that may be strided, broadcast, of any dtype, or Python scalars carried as immediates.
Backward rules are attached by vkgrad/autograd.
"""
import math

import numpy as np

from .. import dtypes, kernels, layout
from ..backend.base import Buffer
from ..kernels import f32_bits
from .registry import Op

ELEMENTWISE = kernels.LAYOUTS["elementwise"]  # MAXD dims (after coalescing)
_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_TWO_OVER_SQRT_PI = 1.1283791670955126


# The host's erf and gelu evaluate the fits in vkgrad/kernels.py in float64 (relative error
# < 2e-9, so float32 results are the exact values correctly rounded but for rare ties), each
# element only through the branch it needs: the inputs are split once into index arrays (a
# boolean mask or np.where over random signs mispredicts a branch per element, several times
# slower), and Horner's rule runs in place. Both branches for every element through np.where,
# with numpy's temporaries, took 3 times longer; float32 evaluation would need an exp more
# accurate than numpy's, whose 2.3 ulps already break the bounds tests/test_elementwise_
# accuracy.py holds elementwise.comp to.
def _polyval(coefficients, t):
    """sum_i c_i t^i (coefficients lowest first) by Horner's rule, in place."""
    r = np.full_like(t, coefficients[-1])
    for c in coefficients[-2::-1]:
        r *= t
        r += c
    return r


def _erfc_tail(a):
    """erfc(a) for a float64 array a >= 0.5: e^(-a^2) R(1 / (1 + a / 2)), 0 past ERFC_MAX
    (erfc(ERFC_MAX) = 7e-50)."""
    r = _polyval(kernels.ERFC_R, 2 / (a + 2))
    e = np.square(a)
    np.negative(e, out=e)
    r *= np.exp(e, out=e)
    r *= a <= kernels.ERFC_MAX
    return r


def _indices(inner):
    """The flat indices where the boolean array `inner` holds and where it does not."""
    return np.flatnonzero(inner), np.flatnonzero(np.logical_not(inner, out=inner))


def _erf(x):
    """erf(x) = x P(x^2) for |x| <= 1, else sign(x) (1 - erfc |x|), in x's dtype."""
    x64 = x.astype(np.float64, copy=False).reshape(-1)
    out = np.empty_like(x64)
    a = np.abs(x64)
    inner, outer = _indices(a <= 1)  # NaN outside
    xi = x64[inner]
    out[inner] = xi * _polyval(kernels.ERF_P, xi * xi)
    out[outer] = np.copysign(1 - _erfc_tail(a[outer]), x64[outer])
    return out.reshape(x.shape).astype(x.dtype, copy=False)


def _gelu(x):
    """x Phi(x) = x erfc(z) / 2 with z = -x / sqrt 2 (no cancellation for x < 0): erfc(z) =
    1 - z P(z^2) for |z| < 0.5, else erfc |z| or 2 - erfc |z| by z's sign; in x's dtype."""
    x64 = x.astype(np.float64, copy=False).reshape(-1)
    z = x64 * -_INV_SQRT2
    erfc = np.empty_like(x64)
    a = np.abs(z)
    near, far = _indices(a < 0.5)  # NaN far
    zn = z[near]
    erfc[near] = 1 - zn * _polyval(kernels.ERF_P, zn * zn)
    tail = _erfc_tail(a[far])
    negative = np.flatnonzero(z[far] < 0)
    tail[negative] = 2 - tail[negative]
    erfc[far] = tail
    erfc *= x64
    erfc *= 0.5
    return erfc.reshape(x.shape).astype(x.dtype, copy=False)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


_SQRT_2_OVER_PI = 0.7978845608028654


def _gelu_tanh(x):
    # torch's gelu(approximate="tanh"), 0.5 x (1 + tanh u) = x sigmoid(2u), which does not cancel
    # for x < 0; u = sqrt(2 / pi) (x + 0.044715 x^3)
    c, k = x.dtype.type(0.044715), x.dtype.type(2 * _SQRT_2_OVER_PI)
    return x * _sigmoid(x * (1 + x * x * c) * k)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805  # torch's (Klambauer et al.)


def _softplus(z):
    return np.logaddexp(np.zeros((), z.dtype), z)


def _truncdiv(a, b):
    """a / b rounded toward zero (C's integer division; trunc(a / b) for floats, as torch)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return np.trunc(a / b)
    q = np.floor_divide(a, b)  # numpy's 0 for division by zero
    return np.where((np.remainder(a, b) != 0) & ((a < 0) != (b < 0)), q + 1, q).astype(q.dtype)


def _lerp(start, end, weight):
    # torch's two-sided formula: exact at weight 0 and at weight 1
    return np.where(np.abs(weight) < 0.5, start + weight * (end - start),
                    end - (end - start) * (1 - weight))


# Exact float64 references (tests/test_ops.py) for the ops whose host implementation is a fit.
_math_erf = np.vectorize(math.erf, otypes=[np.float64])
_math_erfc = np.vectorize(math.erfc, otypes=[np.float64])


# name: (numpy function, result rule, arity, test domain)
#   result rules: "same" keeps the promoted type; "float" turns integers into float32;
#                 "bool" gives bool.
#   test domains (tests/opdb.py's cases): "any", "positive", "unit" (|x| < 1), "nonzero",
#                 "above1" (x > 1), "int", "shift" (int32 values and shift counts)
#   Scalar parameters of the activations (slope, alpha, beta, bounds) are operands too.
TABLE = {
    "identity": (lambda a: a, "same", 1, "any"),
    "neg": (np.negative, "same", 1, "any"),
    "abs": (np.abs, "same", 1, "any"),
    "exp": (np.exp, "float", 1, "any"),
    "log": (np.log, "float", 1, "positive"),
    "log1p": (np.log1p, "float", 1, "unit"),
    "expm1": (np.expm1, "float", 1, "any"),
    "sqrt": (np.sqrt, "float", 1, "positive"),
    "rsqrt": (lambda a: 1 / np.sqrt(a), "float", 1, "positive"),
    "reciprocal": (np.reciprocal, "float", 1, "nonzero"),
    "square": (np.square, "same", 1, "any"),
    "sin": (np.sin, "float", 1, "any"),
    "cos": (np.cos, "float", 1, "any"),
    "tanh": (np.tanh, "float", 1, "any"),
    "sigmoid": (_sigmoid, "float", 1, "any"),
    "silu": (lambda a: a * _sigmoid(a), "float", 1, "any"),
    "relu": (lambda a: np.maximum(a, np.zeros((), a.dtype)), "same", 1, "any"),
    "gelu": (lambda a: 0.5 * a * _math_erfc(a * -_INV_SQRT2), "float", 1, "any"),
    "gelu_tanh": (_gelu_tanh, "float", 1, "any"),
    "erf": (_math_erf, "float", 1, "any"),
    "softplus": (lambda a: np.logaddexp(np.zeros((), a.dtype), a), "float", 1, "any"),
    "sign": (np.sign, "same", 1, "any"),
    "floor": (np.floor, "same", 1, "any"),
    "ceil": (np.ceil, "same", 1, "any"),
    "round": (np.round, "same", 1, "any"),
    "isnan": (np.isnan, "bool", 1, "any"),
    "isinf": (np.isinf, "bool", 1, "any"),
    "isfinite": (np.isfinite, "bool", 1, "any"),
    "logical_not": (np.logical_not, "bool", 1, "any"),
    "add": (np.add, "same", 2, "any"),
    "sub": (np.subtract, "same", 2, "any"),
    "mul": (np.multiply, "same", 2, "any"),
    "div": (np.true_divide, "float", 2, "nonzero"),
    "floordiv": (np.floor_divide, "same", 2, "nonzero"),
    "mod": (np.mod, "same", 2, "nonzero"),
    "pow": (np.power, "same", 2, "positive"),
    "maximum": (np.maximum, "same", 2, "any"),
    "minimum": (np.minimum, "same", 2, "any"),
    "eq": (np.equal, "bool", 2, "any"),
    "ne": (np.not_equal, "bool", 2, "any"),
    "lt": (np.less, "bool", 2, "any"),
    "le": (np.less_equal, "bool", 2, "any"),
    "gt": (np.greater, "bool", 2, "any"),
    "ge": (np.greater_equal, "bool", 2, "any"),
    "logical_and": (np.logical_and, "bool", 2, "any"),
    "logical_or": (np.logical_or, "bool", 2, "any"),
    "bitand": (np.bitwise_and, "same", 2, "int"),
    "bitor": (np.bitwise_or, "same", 2, "int"),
    "bitxor": (np.bitwise_xor, "same", 2, "int"),
    "where": (np.where, "same", 3, "any"),
    "clip": (np.clip, "same", 3, "any"),
    "trunc": (np.trunc, "same", 1, "any"),
    "log2": (np.log2, "float", 1, "positive"),
    "log10": (np.log10, "float", 1, "positive"),
    "exp2": (np.exp2, "float", 1, "any"),
    "tan": (np.tan, "float", 1, "any"),
    "asin": (np.arcsin, "float", 1, "unit"),
    "acos": (np.arccos, "float", 1, "unit"),
    "atan": (np.arctan, "float", 1, "any"),
    "sinh": (np.sinh, "float", 1, "any"),
    "cosh": (np.cosh, "float", 1, "any"),
    "asinh": (np.arcsinh, "float", 1, "any"),
    "acosh": (np.arccosh, "float", 1, "above1"),
    "atanh": (np.arctanh, "float", 1, "unit"),
    "bitnot": (np.invert, "same", 1, "int"),
    "selu": (lambda a: _SELU_SCALE * np.where(a > 0, a, _SELU_ALPHA * np.expm1(a)), "float", 1,
             "any"),
    "hardsigmoid": (lambda a: np.clip(a + 3, 0, 6) / 6, "float", 1, "any"),
    "hardswish": (lambda a: a * np.clip(a + 3, 0, 6) / 6, "float", 1, "any"),
    "mish": (lambda a: a * np.tanh(_softplus(a)), "float", 1, "any"),
    "softsign": (lambda a: a / (1 + np.abs(a)), "float", 1, "any"),
    "logsigmoid": (lambda a: -_softplus(-a), "float", 1, "any"),
    "truncdiv": (_truncdiv, "same", 2, "nonzero"),
    "fmod": (np.fmod, "same", 2, "nonzero"),
    "copysign": (np.copysign, "float", 2, "any"),
    "logaddexp": (np.logaddexp, "float", 2, "any"),
    "atan2": (np.arctan2, "float", 2, "any"),
    "lshift": (np.left_shift, "same", 2, "shift"),
    "rshift": (np.right_shift, "same", 2, "shift"),
    "leaky_relu": (lambda a, slope: np.where(a > 0, a, a * slope), "float", 2, "any"),
    "lerp": (_lerp, "float", 3, "any"),
    # clip with torch's hardtanh gradient (zero at the bounds)
    "hardtanh": (np.clip, "float", 3, "any"),
    # x > 0 ? x : alpha expm1(x * input_scale): elu, and celu with input_scale = 1 / alpha
    "elu": (lambda a, alpha, s: np.where(a > 0, a, alpha * np.expm1(a * s)), "float", 3, "any"),
    # torch's softplus(x, beta, threshold): x where beta x > threshold, else softplus(beta x) / beta
    "softplus_beta": (lambda a, beta, t: np.where(a * beta > t, a, _softplus(a * beta) / beta),
                      "float", 3, "any"),
}
INTEGER_ONLY = ("bitand", "bitor", "bitxor", "bitnot", "lshift", "rshift")


def _where_bits(cond, a, b):
    """np.where(cond, a, b) in bit operations (the host's `where`; np.where stays the reference
    it is tested against). numpy's where branches on every element, and a random mask, such as a
    ReLU's in its backward, mispredicts half of them: 1.5 ms against 0.1 ms for 345,600 floats."""
    bits = np.dtype(f"i{a.dtype.itemsize}")
    mask = np.subtract(0, cond, dtype=bits)  # all ones where cond holds
    a_bits, b_bits = a.view(bits), b.view(bits)
    if b.ndim == 0 and not b_bits:  # where(cond, x, 0)
        return np.bitwise_and(a_bits, mask).view(a.dtype)
    return np.bitwise_xor(b_bits, np.bitwise_and(np.bitwise_xor(a_bits, b_bits), mask)).view(a.dtype)


# Host implementations that differ from the TABLE's numpy function (still its reference).
HOST = {"where": _where_bits, "erf": _erf, "gelu": _gelu}


# ---- backward rules: name -> (rule(ctx, g) -> one gradient per operand, what it saves) ---------
# ctx.inputs are the operands (Tensors or Python scalars), ctx.output the result; `_each` runs
# only the rules of operands that need a gradient. Written in Tensor ops, so they differentiate.
def _where(c, a, b):
    from ..tensor import where
    return where(c, a, b)


def _zeros_like(g):
    from ..tensor import full
    return full(g.shape, 0, g.dtype, g.device)


def _each(ctx, *rules):
    return tuple(rule() if need else None for rule, need in zip(rules, ctx.needs_input_grad))


def _unary(rule, saves=("inputs",)):
    # rule(g, x, out) for a one-operand op
    return (lambda ctx, g: (rule(g, ctx.inputs[0], ctx.output if "output" in saves else None),),
            saves)


def _is_tensor(value):
    from ..tensor import Tensor
    return isinstance(value, Tensor)


def _pow_dx(ctx, g):
    x, y = ctx.inputs  # d(x^y)/dx = y x^(y-1), taken as 0 where y == 0 (as torch does)
    if _is_tensor(y):
        return _where(y == 0, 0.0, g * y * x ** (y - 1))
    return g * y * x ** (y - 1) if y != 0 else _zeros_like(g)


def _pow_dy(ctx, g):
    x, y = ctx.inputs  # d(x^y)/dy = x^y log x, taken as 0 where x == 0 and y >= 0 (as torch does)
    if _is_tensor(x):
        return _where((x == 0) & (y >= 0), 0.0, g * ctx.output * x.log())
    if x == 0:
        return _where(y >= 0, 0.0, g * ctx.output * float("-inf"))
    return g * ctx.output * float(np.log(x))


def _silu_grad(g, x):
    s = x.sigmoid()  # d(x s(x))/dx = s + x s (1 - s)
    return g * s * (x * (1 - s) + 1)


def _gelu_tanh_grad(g, x):
    # d(x s(2u))/dx = s + 2 x s (1 - s) u', s = sigmoid(2u), u' = sqrt(2 / pi) (1 + 3c x^2)
    s = (x * (x * x * 0.044715 + 1) * (2 * _SQRT_2_OVER_PI)).sigmoid()
    return g * s * (x * (1 - s) * (x * x * (3 * 0.044715) + 1) * (2 * _SQRT_2_OVER_PI) + 1)


def _elementwise(name, *operands):
    from ..tensor import elementwise
    return elementwise(name, *operands)


def _mish_grad(g, x):
    t = x.softplus().tanh()  # d(x tanh(sp x))/dx = t + x sigmoid(x) (1 - t^2)
    return g * (t + x * x.sigmoid() * (1 - t * t))


def _softsign_grad(g, x):
    d = x.abs() + 1
    return g / (d * d)


def _atan2_rules(ctx, g):
    # d atan2(y, x) = (x dy - y dx) / (x^2 + y^2), taken as 0 where x^2 + y^2 is 0 (at the
    # origin, or where it underflows), as torch
    y, x = ctx.inputs
    r2 = x * x + y * y
    zero = r2 == 0
    r2 = _where(zero, 1.0, r2)
    return (lambda: _where(zero, 0.0, g * x / r2), lambda: _where(zero, 0.0, -g * y / r2))


def _elu_rules(ctx, g):
    x, alpha, s = ctx.inputs  # x > 0 ? x : alpha expm1(x s); a NaN x takes the linear side
    negative = x <= 0         # (torch's rule for the gradient)
    return (lambda: _where(negative, g * (x * s).exp() * (alpha * s), g),
            lambda: _where(negative, g * (x * s).expm1(), 0.0),
            lambda: _where(negative, g * alpha * x * (x * s).exp(), 0.0))


def _softplus_beta_rules(ctx, g):
    x, beta, threshold = ctx.inputs  # sp(beta x) / beta below the threshold
    linear = x * beta > threshold
    return (lambda: _where(linear, g, g * (x * beta).sigmoid()),
            lambda: _where(linear, 0.0, g * (x * (x * beta).sigmoid() - ctx.output) / beta),
            lambda: _zeros_like(g))


def _hardtanh_rules(ctx, g):
    x, lo, hi = ctx.inputs  # torch: no gradient to x at the bounds themselves; a NaN x passes
    return (lambda: _where((x <= lo) | (x >= hi), 0.0, g), lambda: _where(x <= lo, g, 0.0),
            lambda: _where(x >= hi, g, 0.0))


def _extreme_weight(x, y, greater):
    """The share of maximum(x, y)'s (greater) or minimum's gradient that goes to x: none where y
    wins, half on a tie, all otherwise, so where either is NaN both get all of it (torch's rule)."""
    loses = (x < y) if greater else (x > y)
    return _where(loses, 0.0, _where(x == y, 0.5, 1.0))


def _clip_rules(ctx, g):
    # clip(x, lo, hi) = min(max(x, lo), hi): hi wins over lo when lo > hi, as in numpy and torch
    x, lo, hi = ctx.inputs
    # torch's rule: lo gets the gradient only where lo < hi, so where lo == hi and x < lo
    # none of the three gets it
    return (lambda: _where((x >= lo) & (x <= hi), g, 0.0),
            lambda: _where((x < lo) & (lo < hi), g, 0.0),
            lambda: _where((x > hi) | (lo > hi), g, 0.0))


VJPS = {
    "identity": _unary(lambda g, x, out: g, ()),
    "neg": _unary(lambda g, x, out: -g, ()),
    "abs": _unary(lambda g, x, out: g * x.sign()),
    "exp": _unary(lambda g, x, out: g * out, ("output",)),
    "log": _unary(lambda g, x, out: g / x),
    "log1p": _unary(lambda g, x, out: g / (x + 1)),
    "expm1": _unary(lambda g, x, out: g * (out + 1), ("output",)),
    "sqrt": _unary(lambda g, x, out: g / (out * 2), ("output",)),
    "rsqrt": _unary(lambda g, x, out: g * -0.5 * out * out * out, ("output",)),
    "reciprocal": _unary(lambda g, x, out: -g * out * out, ("output",)),
    "square": _unary(lambda g, x, out: g * x * 2),
    "sin": _unary(lambda g, x, out: g * x.cos()),
    "cos": _unary(lambda g, x, out: -g * x.sin()),
    "tanh": _unary(lambda g, x, out: g * (1 - out * out), ("output",)),
    "sigmoid": _unary(lambda g, x, out: g * out * (1 - out), ("output",)),
    "silu": _unary(lambda g, x, out: _silu_grad(g, x)),
    # torch's rule: the gradient passes unless the output is <= 0, so at a NaN too; the output
    # is +-0, positive or NaN, so that is where it is != 0 (where(c, g, 0) is the cheap form)
    "relu": _unary(lambda g, x, out: _where(out != 0, g, 0.0), ("output",)),
    "gelu": _unary(lambda g, x, out: g * (((x * _INV_SQRT2).erf() + 1) * 0.5
                                          + x * (x * x * -0.5).exp() * _INV_SQRT_2PI)),
    "gelu_tanh": _unary(lambda g, x, out: _gelu_tanh_grad(g, x)),
    "erf": _unary(lambda g, x, out: g * (x * x * -1).exp() * _TWO_OVER_SQRT_PI),
    "softplus": _unary(lambda g, x, out: g * x.sigmoid()),
    "log2": _unary(lambda g, x, out: g / (x * math.log(2))),
    "log10": _unary(lambda g, x, out: g / (x * math.log(10))),
    "exp2": _unary(lambda g, x, out: g * out * math.log(2), ("output",)),
    "tan": _unary(lambda g, x, out: g * (out * out + 1), ("output",)),
    "asin": _unary(lambda g, x, out: g * (1 - x * x).rsqrt()),
    "acos": _unary(lambda g, x, out: -g * (1 - x * x).rsqrt()),
    "atan": _unary(lambda g, x, out: g / (x * x + 1)),
    "sinh": _unary(lambda g, x, out: g * x.cosh()),
    "cosh": _unary(lambda g, x, out: g * x.sinh()),
    "asinh": _unary(lambda g, x, out: g * (x * x + 1).rsqrt()),
    "acosh": _unary(lambda g, x, out: g * (x * x - 1).rsqrt()),
    "atanh": _unary(lambda g, x, out: g / (1 - x * x)),
    "selu": _unary(lambda g, x, out: _where(x <= 0, g * x.exp() * (_SELU_SCALE * _SELU_ALPHA),
                                            g * _SELU_SCALE)),  # a NaN x: the linear side
    "hardsigmoid": _unary(lambda g, x, out: _where((x > -3) & (x < 3), g / 6, 0.0)),
    # torch 2.13: 0 up to -3 (inclusive), x / 3 + 1/2 inside, 1 from 3 on
    "hardswish": _unary(lambda g, x, out: _where(x <= -3, 0.0, _where(x < 3, g * (x / 3 + 0.5),
                                                                       g))),
    "mish": _unary(lambda g, x, out: _mish_grad(g, x)),
    "softsign": _unary(lambda g, x, out: _softsign_grad(g, x)),
    "logsigmoid": _unary(lambda g, x, out: g * (-x).sigmoid()),
    # piecewise constant: zero gradient, as torch
    **{name: _unary(lambda g, x, out: _zeros_like(g), ()) for name in
       ("sign", "floor", "ceil", "round", "trunc")},
    "truncdiv": (lambda ctx, g: _each(ctx, lambda: _zeros_like(g), lambda: _zeros_like(g)), ()),
    "fmod": (lambda ctx, g: _each(ctx, lambda: g,
                                  lambda: -g * _elementwise("truncdiv", *ctx.inputs)), ("inputs",)),
    # torch: the gradient is copysign(x, y) / x, taken as 0 at x == 0; none flows to y
    "copysign": (lambda ctx, g: _each(
        ctx, lambda: _where(ctx.inputs[0] == 0, 0.0, g * (ctx.output / ctx.inputs[0])),
        lambda: _zeros_like(g)), ("inputs", "output")),
    "logaddexp": (lambda ctx, g: _each(ctx, lambda: g * (ctx.inputs[0] - ctx.inputs[1]).sigmoid(),
                                       lambda: g * (ctx.inputs[1] - ctx.inputs[0]).sigmoid()),
                  ("inputs",)),
    "atan2": (lambda ctx, g: _each(ctx, *_atan2_rules(ctx, g)), ("inputs",)),
    "leaky_relu": (lambda ctx, g: _each(
        ctx, lambda: _where(ctx.inputs[0] > 0, g, g * ctx.inputs[1]),
        lambda: _where(ctx.inputs[0] > 0, 0.0, g * ctx.inputs[0])), ("inputs",)),
    "lerp": (lambda ctx, g: _each(ctx, lambda: g * (1 - ctx.inputs[2]), lambda: g * ctx.inputs[2],
                                  lambda: g * (ctx.inputs[1] - ctx.inputs[0])), ("inputs",)),
    "hardtanh": (lambda ctx, g: _each(ctx, *_hardtanh_rules(ctx, g)), ("inputs",)),
    "elu": (lambda ctx, g: _each(ctx, *_elu_rules(ctx, g)), ("inputs",)),
    "softplus_beta": (lambda ctx, g: _each(ctx, *_softplus_beta_rules(ctx, g)),
                      ("inputs", "output")),
    "add": (lambda ctx, g: _each(ctx, lambda: g, lambda: g), ()),
    "sub": (lambda ctx, g: _each(ctx, lambda: g, lambda: -g), ()),
    "mul": (lambda ctx, g: _each(ctx, lambda: g * ctx.inputs[1], lambda: g * ctx.inputs[0]),
            ("inputs",)),
    # d(a / b)/db = -(a / b) / b: b * b would underflow to 0 for |b| < 1e-19 (torch's form)
    "div": (lambda ctx, g: _each(ctx, lambda: g / ctx.inputs[1],
                                 lambda: -g * (ctx.inputs[0] / ctx.inputs[1]) / ctx.inputs[1]),
            ("inputs",)),
    "floordiv": (lambda ctx, g: _each(ctx, lambda: _zeros_like(g), lambda: _zeros_like(g)), ()),
    "mod": (lambda ctx, g: _each(ctx, lambda: g, lambda: -g * (ctx.inputs[0] // ctx.inputs[1])),
            ("inputs",)),
    "pow": (lambda ctx, g: _each(ctx, lambda: _pow_dx(ctx, g), lambda: _pow_dy(ctx, g)),
            ("inputs", "output")),
    "maximum": (lambda ctx, g: _each(
        ctx, lambda: g * _extreme_weight(*ctx.inputs, True),
        lambda: g * _extreme_weight(*ctx.inputs[::-1], True)), ("inputs",)),
    "minimum": (lambda ctx, g: _each(
        ctx, lambda: g * _extreme_weight(*ctx.inputs, False),
        lambda: g * _extreme_weight(*ctx.inputs[::-1], False)), ("inputs",)),
    "where": (lambda ctx, g: _each(ctx, lambda: None, lambda: _where(ctx.inputs[0], g, 0.0),
                                   lambda: _where(ctx.inputs[0], 0.0, g)), ("inputs",)),
    "clip": (lambda ctx, g: _each(ctx, *_clip_rules(ctx, g)), ("inputs",)),
}


def compute_domain(dtype):
    """The shader variant that computes in `dtype`'s kind."""
    if dtype.is_floating:
        return "float"
    return "uint" if dtype.kind == "u" else "int"


def _immediate(value, domain):
    if domain == "float":
        return f32_bits(float(value))
    return int(value) & 0xFFFFFFFF


def launch(backend, name, out_dtype, out_shape, operands, domain):
    """Queue elementwise.comp computing op `name` over `operands` (DeviceArrays or scalars)."""
    out = backend.empty(out_shape, out_dtype)
    if out.size == 0:
        return out
    _launch_into(backend, kernels.ELEMENTWISE_CODES[name], out, operands, domain)
    return out


def _launch_into(backend, code, out, operands, domain):
    arrays = [o for o in operands if isinstance(o, Buffer)]
    strides = [layout.broadcast_strides(a.shape, a.strides, out.shape) for a in arrays]
    shape, (out_strides, *strides) = layout.coalesce(out.shape, out.strides, *strides)
    if len(shape) > ELEMENTWISE.MAXD:
        # Too many dims survive coalescing: split the leading one (whole words per slice only).
        if (out.strides[0] % out.dtype.per_word) or out.start % out.dtype.per_word:
            raise NotImplementedError(f"{len(shape)}-d packed elementwise output")
        for i in range(out.shape[0]):
            sub = [o if not isinstance(o, Buffer) else _index0(o, out.shape, i)
                   for o in operands]
            _launch_into(backend, code, out.view(out.shape[1:], out.strides[1:],
                                                 out.offset + i * out.strides[0]), sub, domain)
        return
    starts, dtypes, stride_lists, it = [], [], [], iter(strides)
    for o in list(operands) + [0] * (3 - len(operands)):
        if isinstance(o, Buffer):
            starts.append(o.start)
            dtypes.append(o.dtype.code)
            stride_lists.append(next(it))
        else:
            starts.append(_immediate(o, domain))
            dtypes.append(kernels.DTYPE_CODES["imm"])
            stride_lists.append((0,) * len(shape))
    push = ELEMENTWISE.pack(n=out.size, ndim=len(shape), out_start=out.start, a_start=starts[0],
                            b_start=starts[1], c_start=starts[2], out_strides=out_strides,
                            a_strides=stride_lists[0], b_strides=stride_lists[1],
                            c_strides=stride_lists[2],
                            **layout.div_magic_fields(shape, ELEMENTWISE.MAXD,
                                                      "elementwise output"))
    backend.launch("elementwise", domain, -(-out.size // kernels.ELEMS_PER_INVOCATION), push,
                   ELEMENTWISE.spec(OP=code, OUT_DT=out.dtype.code, A_DT=dtypes[0],
                                    B_DT=dtypes[1], C_DT=dtypes[2]), reads=arrays, writes=[out])


def _index0(a, out_shape, i):
    lead = len(out_shape) - a.ndim
    if lead > 0:
        return a  # broadcast along the split axis: the same view serves every slice
    if a.shape[0] == 1:
        return a.view(a.shape[1:], a.strides[1:], a.offset)
    return a.view(a.shape[1:], a.strides[1:], a.offset + i * a.strides[0])


def cast(x, np_dtype):
    """`x` as `np_dtype`, defined where numpy's astype is not (docs/numerics.md): a float becomes
    an integer by truncation toward zero, saturated to the integer type's range, NaN becoming 0,
    as f32_to_i32 and f32_to_u32 in shaders/common.glsl do; every other cast is numpy's."""
    x = np.asarray(x)
    target = np.dtype(np_dtype)
    if target.kind not in "iu" or not (x.dtype.kind == "f" or x.dtype == dtypes.bfloat16.np_dtype):
        return x.astype(target)
    info = np.iinfo(target)
    wide = x.astype(np.float64)  # exact for float32 and bf16 values and for both bounds
    return np.where(np.isnan(wide), 0, np.clip(np.trunc(wide), info.min, info.max)).astype(target)


def _host_type(name, compute):
    """The numpy type the host computes op `name` in: bf16 in float32 (rounded once, at the end,
    as on the device; Python scalars enter at float32 precision), except for copies and
    selections, which round nothing."""
    if compute is dtypes.bfloat16 and name not in ("identity", "where"):
        return np.dtype(np.float32)
    return compute.np_dtype


def _make(name, fn, result, arity, domain):
    def host(*args, compute, out_dtype):
        # where's condition keeps its truth values, not the compute dtype
        wide = _host_type(name, compute)
        arrays = [np.asarray(a, dtype=bool if name == "where" and i == 0 else wide)
                  for i, a in enumerate(args)]
        with np.errstate(all="ignore"):
            r = HOST.get(name, fn)(*arrays)
            if name == "identity":  # astype: always a copy, as on the device
                if r is not args[0] and r.dtype == out_dtype.np_dtype:
                    return r  # converted to the compute type already: a new array
                return cast(r, out_dtype.np_dtype)
        return np.asarray(r).astype(out_dtype.np_dtype, copy=False)

    def vulkan(backend, *args, compute, out_dtype):
        shape = layout.broadcast_shapes(*[a.shape for a in args if isinstance(a, Buffer)])
        return launch(backend, name, out_dtype, shape, args, compute_domain(compute))

    vjp, saves = VJPS.get(name, (None, ()))
    return Op(name, host, vulkan, vjp=vjp, saves=saves)


for _name, (_fn, _result, _arity, _domain) in TABLE.items():
    _make(_name, _fn, _result, _arity, _domain)


def _widen_weight_vulkan(backend, w):
    return launch(backend, "identity", dtypes.float32, w.shape, [w], "float")


# A weight in float32 (F.linear's bf16 weight before its product): astype(float32) as an op,
# whose host implementation is given the widening the host backend keeps of a large weight
# (Op.widens) and returns it (its result is then that kept array, which nothing may write
# into), or widens a small one itself. The gradient is the float32 one, rounded once to the
# weight's dtype (by autograd, as astype's).
WIDEN_WEIGHT = Op("widen_weight", lambda w: w.astype(np.float32, copy=False),
                  _widen_weight_vulkan, vjp=lambda ctx, g: (g,), saves=(), widens=(0,))


def result_dtypes(name, operands):
    """(compute dtype, output dtype) of op `name` on tensors and Python scalars, numpy-style."""
    from ..tensor import Tensor
    result = TABLE[name][1]
    tensor_dtypes = [o.dtype for o in operands if isinstance(o, Tensor)]
    if name == "where":  # the condition does not take part in promotion
        tensor_dtypes = [o.dtype for o in operands[1:] if isinstance(o, Tensor)]
    compute = tensor_dtypes[0] if tensor_dtypes else dtypes.float32
    for d in tensor_dtypes[1:]:
        compute = dtypes.result_type(compute, d)
    for o in operands[1 if name == "where" else 0:]:
        if not isinstance(o, Tensor):
            compute = dtypes.scalar_result_type(compute, o)
    if name in INTEGER_ONLY and compute.is_floating:
        raise TypeError(f"{name} is only defined for integer and bool tensors, not {compute.name}")
    if result == "float" and not compute.is_floating:
        compute = dtypes.float32
    return compute, (dtypes.bool_ if result == "bool" else compute)


def assign(out, value):
    """Write DeviceArray `value` (broadcast, converted) into the view `out` in place. Packed
    outputs must be contiguous and word-aligned (one invocation owns each word)."""
    compute = value.dtype if value.dtype.is_floating or not out.dtype.is_floating else out.dtype
    if out.size:
        _launch_into(out.backend, kernels.ELEMENTWISE_CODES["identity"], out, [value],
                     compute_domain(compute))


def contiguous(array):
    """A contiguous copy of a DeviceArray (views are otherwise read in place by every kernel)."""
    return launch(array.backend, "identity", array.dtype, array.shape, [array],
                  compute_domain(array.dtype))
