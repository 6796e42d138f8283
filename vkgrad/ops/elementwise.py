"""Elementwise ops: one table row per op (numpy function, result type rule, test domain).

All of them run on the device through shaders/elementwise.comp, selected by op code, with
operands that may be strided, broadcast, of any dtype, or Python scalars carried as immediates.
Backward rules are attached by vkgrad/autograd.
"""
import math

import numpy as np

from .. import dtypes, kernels, layout
from ..backend.vulkan import DeviceArray, f32_bits
from .registry import Op, OpTest

MAXD = 4  # dims elementwise.comp's push constants describe (after coalescing)
_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_TWO_OVER_SQRT_PI = 1.1283791670955126


def _erf_parts(x):
    """(erf x, erfc x) of a float64 array from the fits in vkgrad/kernels.py, which
    elementwise.comp evaluates in float32 (relative error < 2e-9 in float64, erfc down to
    erfc(ERFC_MAX) = 7e-50, 0 beyond)."""
    a = np.abs(x)
    small = x * np.polyval(kernels.ERF_P[::-1], x * x)  # for |x| <= 1
    tail = np.where(a > kernels.ERFC_MAX, 0, np.exp(-a * a) * np.polyval(  # erfc |x|, |x| >= 0.5
        kernels.ERFC_R[::-1], 1 / (1 + 0.5 * a)))
    erf = np.where(a <= 1, small, np.sign(x) * (1 - tail))
    erfc = np.where(a < 0.5, 1 - small, np.where(x >= 0, tail, 2 - tail))
    return erf, erfc


def _erf(x):
    return _erf_parts(np.asarray(x, np.float64))[0]


def _gelu(x):
    x = np.asarray(x, np.float64)  # x Phi(x) = x erfc(-x / sqrt 2) / 2: no cancellation for x < 0
    return 0.5 * x * _erf_parts(x * -_INV_SQRT2)[1]


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


_SQRT_2_OVER_PI = 0.7978845608028654


def _gelu_tanh(x):
    # torch's gelu(approximate="tanh"), 0.5 x (1 + tanh u) = x sigmoid(2u), which does not cancel
    # for x < 0; u = sqrt(2 / pi) (x + 0.044715 x^3)
    c, k = x.dtype.type(0.044715), x.dtype.type(2 * _SQRT_2_OVER_PI)
    return x * _sigmoid(x * (1 + x * x * c) * k)


# Exact float64 references (tests/test_ops.py) for the ops whose host implementation is a fit.
_math_erf = np.vectorize(math.erf, otypes=[np.float64])
_math_erfc = np.vectorize(math.erfc, otypes=[np.float64])


# name: (numpy function, result rule, arity, test domain)
#   result rules: "same" keeps the promoted type; "float" turns integers into float32;
#                 "bool" gives bool.
#   test domains (tests/test_ops.py): "any", "positive", "unit" (|x| < 1), "nonzero"
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
}


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


def _extreme_weight(x, y, greater):
    # maximum/minimum: the gradient goes to the winner, half to each on a tie
    win = (x > y) if greater else (x < y)
    return _where(win, 1.0, _where(x == y, 0.5, 0.0))


def _clip_rules(ctx, g):
    # clip(x, lo, hi) = min(max(x, lo), hi): hi wins over lo when lo > hi, as in numpy and torch
    x, lo, hi = ctx.inputs
    return (lambda: _where((x >= lo) & (x <= hi), g, 0.0),
            lambda: _where((x < lo) & (lo <= hi), g, 0.0),
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
    "relu": _unary(lambda g, x, out: _where(out > 0, g, 0.0), ("output",)),
    "gelu": _unary(lambda g, x, out: g * (((x * _INV_SQRT2).erf() + 1) * 0.5
                                          + x * (x * x * -0.5).exp() * _INV_SQRT_2PI)),
    "gelu_tanh": _unary(lambda g, x, out: _gelu_tanh_grad(g, x)),
    "erf": _unary(lambda g, x, out: g * (x * x * -1).exp() * _TWO_OVER_SQRT_PI),
    "softplus": _unary(lambda g, x, out: g * x.sigmoid()),
    # piecewise constant: zero gradient, as torch
    **{name: _unary(lambda g, x, out: _zeros_like(g), ()) for name in
       ("sign", "floor", "ceil", "round")},
    "add": (lambda ctx, g: _each(ctx, lambda: g, lambda: g), ()),
    "sub": (lambda ctx, g: _each(ctx, lambda: g, lambda: -g), ()),
    "mul": (lambda ctx, g: _each(ctx, lambda: g * ctx.inputs[1], lambda: g * ctx.inputs[0]),
            ("inputs",)),
    "div": (lambda ctx, g: _each(ctx, lambda: g / ctx.inputs[1],
                                 lambda: -g * ctx.inputs[0] / (ctx.inputs[1] * ctx.inputs[1])),
            ("inputs",)),
    "floordiv": (lambda ctx, g: _each(ctx, lambda: _zeros_like(g), lambda: _zeros_like(g)), ()),
    "mod": (lambda ctx, g: _each(ctx, lambda: g, lambda: -g * (ctx.inputs[0] // ctx.inputs[1])),
            ("inputs",)),
    "pow": (lambda ctx, g: _each(ctx, lambda: _pow_dx(ctx, g), lambda: _pow_dy(ctx, g)),
            ("inputs", "output")),
    "maximum": (lambda ctx, g: _each(
        ctx, lambda: g * _extreme_weight(*ctx.inputs, True),
        lambda: g * (1 - _extreme_weight(*ctx.inputs, True))), ("inputs",)),
    "minimum": (lambda ctx, g: _each(
        ctx, lambda: g * _extreme_weight(*ctx.inputs, False),
        lambda: g * (1 - _extreme_weight(*ctx.inputs, False))), ("inputs",)),
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
    arrays = [o for o in operands if isinstance(o, DeviceArray)]
    strides = [layout.broadcast_strides(a.shape, a.strides, out.shape) for a in arrays]
    shape, (out_strides, *strides) = layout.coalesce(out.shape, out.strides, *strides)
    if len(shape) > MAXD:
        # Too many dims survive coalescing: split the leading one (whole words per slice only).
        if (out.strides[0] % out.dtype.per_word) or out.start % out.dtype.per_word:
            raise NotImplementedError(f"{len(shape)}-d packed elementwise output")
        for i in range(out.shape[0]):
            sub = [o if not isinstance(o, DeviceArray) else _index0(o, out.shape, i)
                   for o in operands]
            _launch_into(backend, code, out.view(out.shape[1:], out.strides[1:],
                                                 out.offset + i * out.strides[0]), sub, domain)
        return
    starts, dtypes, stride_lists, it = [], [], [], iter(strides)
    for o in list(operands) + [0] * (3 - len(operands)):
        if isinstance(o, DeviceArray):
            starts.append(o.start)
            dtypes.append(o.dtype.code)
            stride_lists.append(next(it))
        else:
            starts.append(_immediate(o, domain))
            dtypes.append(kernels.DTYPE_CODES["imm"])
            stride_lists.append((0,) * len(shape))
    pad = [0] * (MAXD - len(shape))
    push = [out.size, len(shape), out.start, *starts, *shape, *pad, *out_strides, *pad]
    for s in stride_lists:
        push += [*s, *pad]
    backend.launch("elementwise", domain, -(-out.size // out.dtype.per_word), push,
                   (code, out.dtype.code, *dtypes))


def _index0(a, out_shape, i):
    lead = len(out_shape) - a.ndim
    if lead > 0:
        return a  # broadcast along the split axis: the same view serves every slice
    if a.shape[0] == 1:
        return a.view(a.shape[1:], a.strides[1:], a.offset)
    return a.view(a.shape[1:], a.strides[1:], a.offset + i * a.strides[0])


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
        # identity is astype: always a copy, as on the device
        return np.asarray(r).astype(out_dtype.np_dtype, copy=name == "identity")

    def vulkan(backend, *args, compute, out_dtype):
        shape = layout.broadcast_shapes(*[a.shape for a in args if isinstance(a, DeviceArray)])
        return launch(backend, name, out_dtype, shape, args, compute_domain(compute))

    def call(*operands):
        from ..tensor import elementwise
        return elementwise(name, *operands)

    def reference(*arrays):
        with np.errstate(all="ignore"):
            return fn(*arrays)

    tests = [] if name == "identity" else [OpTest(
        call, reference, lambda rng: _cases(rng, arity, domain, name),
        dtypes=("int32",) if domain == "int" else ("float32", "bfloat16"),
        grad=result != "bool" and domain != "int")]
    if result != "bool" and domain != "int" and (arity == 1 or name in _WIDE_BINARY):
        tests.append(OpTest(call, reference, lambda rng: _wide_cases(rng, arity, domain, name),
                            grad=False))
    vjp, saves = VJPS.get(name, (None, ()))
    return Op(name, host, vulkan, vjp=vjp, saves=saves, tests=tests)


_SHAPES_1 = [(), (1,), (7,), (3, 257), (0, 4), (2, 3, 5), (300, 301)]
_SHAPES_2 = [((), ()), ((7,), ()), ((), (6,)), ((3, 1, 5), (4, 5)), ((0, 3), (1, 3)),
             ((2, 3, 4), (2, 3, 4)), ((513,), (513,))]


def _sample(rng, shape, domain):
    return np.asarray(_draw(rng, shape, domain))


def _draw(rng, shape, domain):
    if domain == "positive":
        return rng.uniform(0.2, 3.0, shape)
    if domain == "unit":
        return rng.uniform(-0.9, 0.9, shape)
    if domain == "nonzero":
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 3.0, shape)
    if domain == "int":
        return rng.integers(-100, 100, shape).astype(np.int32)
    return rng.standard_normal(shape) * 2


_WIDE_BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow")


def _wide(rng, shape, domain):
    """Magnitudes from 1e-6 to 1e3 (below 0.9 for "unit"), signed unless "positive"."""
    top = np.log10(0.9) if domain == "unit" else 3.0
    x = 10.0 ** rng.uniform(-6.0, top, shape)
    return x if domain == "positive" else x * rng.choice([-1.0, 1.0], shape)


def _wide_cases(rng, arity, domain, name):
    # tiny and large operands (the test_ops cases above stay near 1, for the gradient tests)
    if arity == 1:
        return [([_wide(rng, (4, 300), domain)], {})]
    second = _draw(rng, (300,), "any") if name == "pow" else _wide(rng, (300,), domain)
    return [([_wide(rng, (300,), domain), second], {}), ([_wide(rng, (7,), domain), 1e-3], {})]


def _cases(rng, arity, domain, name):
    if arity == 1:
        return [([_sample(rng, s, domain)], {}) for s in _SHAPES_1]
    if arity == 2:
        second = "any" if name == "pow" else domain
        cases = [([_sample(rng, a, domain), _sample(rng, b, second)], {}) for a, b in _SHAPES_2]
        scalar = 3 if domain == "int" else (1.5 if name != "pow" else 2.0)
        return cases + [([_sample(rng, (4, 9), domain), scalar], {}),
                        ([scalar, _sample(rng, (5,), domain)], {})]
    if name == "where":
        return [([rng.random(s) > 0.5, _sample(rng, s, domain), _sample(rng, s[-1:], domain)], {})
                for s in [(), (9,), (3, 257), (0, 2)]] + [([rng.random((4, 3)) > 0.5, -1.0,
                                                           _sample(rng, (4, 3), domain)], {})]
    return [([_sample(rng, (6, 7), domain), -0.5, 0.75], {}),
            ([_sample(rng, (300,), domain), _sample(rng, (300,), domain) - 1, 1.0], {})]


for _name, (_fn, _result, _arity, _domain) in TABLE.items():
    _make(_name, _fn, _result, _arity, _domain)


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
    if name in ("bitand", "bitor", "bitxor") and compute.is_floating:
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
