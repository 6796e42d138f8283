"""The op database: how tests/test_ops.py and test_autograd_ops.py check each op of the table
(vkgrad.ops.OPS), on every device and dtype, against numpy references on random data.

OPDB maps an op's name to its OpTests (below: the public call under test, its float64
reference, the cases, dtypes, tolerances' reduction length, whether gradients are checked); an
OpTest's position in its op's list seeds its cases' random numbers. NO_TESTS names the
ops checked through another op instead, and why. tests/test_opdb.py checks that every op has one
or the other.
"""
from dataclasses import dataclass
from math import prod
from typing import Callable, Optional

import numpy as np

import vkgrad as vk
from vkgrad import layout
from vkgrad.ops import OPS
from vkgrad.ops.conv import (AVG_POOL_BACKWARD, MAX_POOL, MAX_POOL_BACKWARD, _out_hw, _pool_args, _tuple,
                             adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, conv2d_relu,
                             conv_transpose2d, fold, max_pool2d, unfold)
from vkgrad.ops.elementwise import TABLE as ELEMENTWISE_TABLE
from vkgrad.ops.indexing import index_add
from vkgrad.ops.linalg import _parse_einsum, _size
from vkgrad.ops.reduce import _NUMPY as _REDUCE_NUMPY, REDUCTIONS, _host_arg
from vkgrad.ops.registry import apply, apply_with_stats
from vkgrad.ops.sorting import _scatter_host, _scatter_reduce_host
from vkgrad.ops.transformer_ops import fused_attention
from vkgrad.tensor import elementwise


@dataclass
class OpTest:
    """How tests/test_ops.py checks an op, on every device and dtype, against numpy or torch.

    call(*tensors, **params)      the public API under test (e.g. lambda a, b: a @ b)
    reference(*arrays, **params)  the expected result from float64 copies of the (dtype-rounded)
                                  inputs; integer/bool inputs are passed as they are
    cases(rng)                    [(inputs: [np.ndarray | scalar], params: dict), ...]: random
                                  data, never all zeros, awkward shapes (0-d, odd, empty, broadcast)
    dtypes                        dtypes the floating inputs are cast to
    reduction_length(inputs, params) -> int: terms summed per output (scales the tolerance)
    grad                          whether autograd's tests differentiate it (floating outputs)
    """
    call: Callable
    reference: Callable
    cases: Callable
    dtypes: tuple = ("float32", "bfloat16")
    reduction_length: Optional[Callable] = None
    grad: bool = True


OPDB = {}

NO_TESTS = {
    "attention_backward": "attention's vjp: checked by test_autograd_ops through attention",
    "layer_norm_backward": "layer_norm's vjp: checked by test_autograd_ops through layer_norm",
    "cross_entropy_backward": "cross_entropy's vjp: checked by test_autograd_ops through "
                              "cross_entropy",
    "conv2d_backward": "conv2d's vjp: checked by test_autograd_ops through conv2d",
}


def op_tests(name):
    """The OpTests of op `name` (none for an op in NO_TESTS)."""
    return OPDB.get(name, [])


def _add(name, *tests):
    OPDB.setdefault(name, []).extend(tests)


# ---- elementwise ops (vkgrad/ops/elementwise.py; first: where's list continues below) ---------
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
    if domain == "above1":
        return rng.uniform(1.2, 4.0, shape)
    if domain == "int":
        return rng.integers(-100, 100, shape).astype(np.int32)
    return rng.standard_normal(shape) * 2


_WIDE_BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "pow", "copysign",
                "logaddexp", "atan2", "leaky_relu")


def _wide(rng, shape, domain):
    """Magnitudes from 1e-6 to 1e3 (below 0.9 for "unit"), signed unless "positive"; 1 plus
    those for "above1"."""
    top = np.log10(0.9) if domain == "unit" else 3.0
    x = 10.0 ** rng.uniform(-6.0, top, shape)
    if domain == "above1":
        return 1 + x
    return x if domain == "positive" else x * rng.choice([-1.0, 1.0], shape)


# The scalar parameters the activations are tested with (exact in bf16): (alpha, input scale),
# (beta, threshold), (min, max).
_PARAMS = {"elu": [(1.0, 1.0), (0.5, 2.0), (2.0, 0.5)],
           "softplus_beta": [(1.0, 20.0), (2.0, 1.0), (0.5, 3.0), (-1.0, 20.0)],
           "hardtanh": [(-1.0, 1.0), (0.0, 6.0), (-0.5, 0.75)]}


def _param_cases(rng, name, draw):
    return [([draw(rng, s, "any"), *params], {}) for s in [(7,), (3, 257), (), (0, 2)]
            for params in _PARAMS[name]]


def _lerp_cases(rng):
    w = lambda shape: rng.uniform(-0.5, 1.5, shape)  # both sides of torch's 0.5 switch
    return [([_sample(rng, (3, 5), "any"), _sample(rng, (3, 5), "any"), w((3, 5))], {}),
            ([_sample(rng, (300,), "any"), _sample(rng, (), "any"), w((300,))], {}),
            ([_sample(rng, (4, 1), "any"), 2.0, w((1, 6))], {}),
            ([_sample(rng, (7,), "any"), _sample(rng, (7,), "any"), 0.25], {}),
            ([_sample(rng, (7,), "any"), _sample(rng, (7,), "any"), 0.75], {}),
            ([_sample(rng, (0, 3), "any"), _sample(rng, (3,), "any"), 0.5], {})]


def _shift_cases(rng):
    # counts beyond [0, 32) too: every bit shifted out, as numpy and torch
    a = lambda shape: rng.integers(-2 ** 31, 2 ** 31, shape).astype(np.int32)
    count = lambda shape: rng.integers(-3, 40, shape).astype(np.int32)
    return [([a((3, 257)), count((3, 257))], {}), ([a((2, 3, 4)), count((4,))], {}),
            ([a((7,)), 3], {}), ([a((7,)), 31], {}), ([5, count((9,))], {}),
            ([a(()), count(())], {}), ([a((0, 3)), count((1, 3))], {})]


def _wide_cases(rng, arity, domain, name):
    # tiny and large operands (the test_ops cases above stay near 1, for the gradient tests)
    if name in _PARAMS:
        return _param_cases(rng, name, _wide)
    if arity == 1:
        return [([_wide(rng, (4, 300), domain)], {})]
    second = _draw(rng, (300,), "any") if name == "pow" else _wide(rng, (300,), domain)
    return [([_wide(rng, (300,), domain), second], {}), ([_wide(rng, (7,), domain), 1e-3], {})]


def _cases(rng, arity, domain, name):
    if name in _PARAMS:
        return _param_cases(rng, name, _sample)
    if name == "lerp":
        return _lerp_cases(rng)
    if domain == "shift":
        return _shift_cases(rng)
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


def _elementwise_tests(name, fn, result, arity, domain):
    """An elementwise op's OpTests: its cases near 1 (and gradients, for float results; not for
    identity, a copy), and for float ops with tiny and large operands."""
    def call(*operands):
        return elementwise(name, *operands)

    def reference(*arrays):
        with np.errstate(all="ignore"):
            return fn(*arrays)

    integer = domain in ("int", "shift")
    tests = [] if name == "identity" else [OpTest(
        call, reference, lambda rng: _cases(rng, arity, domain, name),
        dtypes=("int32",) if integer else ("float32", "bfloat16"),
        grad=result != "bool" and not integer)]
    if result != "bool" and not integer and (arity == 1 or name in _WIDE_BINARY + tuple(_PARAMS)):
        tests.append(OpTest(call, reference, lambda rng: _wide_cases(rng, arity, domain, name),
                            grad=False))
    return tests


for _name, (_fn, _result, _arity, _domain) in ELEMENTWISE_TABLE.items():
    _add(_name, *_elementwise_tests(_name, _fn, _result, _arity, _domain))


# ---- views (vkgrad/ops/views.py) ---------------------------------------------------------------
def _view_cases(*param_sets):
    return lambda rng: [([rng.standard_normal(shape)], params) for shape, params in param_sets]


def _view_test(call, reference, *param_sets):
    return OpTest(call, reference, _view_cases(*param_sets))


_add("reshape", _view_test(
    lambda a, shape: a.reshape(shape), lambda a, shape: a.reshape(shape),
    ((3, 4, 5), {"shape": (5, -1)}), ((6,), {"shape": (2, 1, 3)}), ((), {"shape": (1, 1)}),
    ((0, 4), {"shape": (4, 0)}), ((2, 3, 4), {"shape": (6, 4)}), ((7, 1, 3), {"shape": (21,)})))
_add("permute", _view_test(
    lambda a, axes: a.transpose(axes), lambda a, axes: a.transpose(axes),
    ((3, 4, 5), {"axes": (2, 0, 1)}), ((7, 9), {"axes": (1, 0)}), ((), {"axes": ()})))
_add("broadcast_to", _view_test(
    lambda a, shape: a.broadcast_to(shape), lambda a, shape: np.broadcast_to(a, shape),
    ((3, 1), {"shape": (2, 3, 5)}), ((), {"shape": (4,)}), ((5,), {"shape": (0, 5)})))
_add("getitem", _view_test(
    lambda a, key: a[key], lambda a, key: a[key],
    ((5, 6, 7), {"key": (1, slice(None, None, -2), None, Ellipsis)}),
    ((9,), {"key": slice(7, 1, -3)}), ((4, 5), {"key": (Ellipsis, 3)}),
    ((4, 5), {"key": (slice(2, 2), 1)}), ((3, 4), {"key": ()})))
_add("contiguous", _view_test(
    lambda a: a.contiguous(), lambda a: np.asarray(a, order="C"),
    ((3, 5), {}), ((), {}), ((0, 2), {})))


# ---- reductions (vkgrad/ops/reduce.py) ---------------------------------------------------------
_REDUCE_SHAPES = [((), None), ((1000,), None), ((3, 4, 5), 0), ((3, 4, 5), -1), ((3, 4, 5), (0, 2)),
                  ((257, 3), 0), ((5, 70), 1), ((2, 3, 4, 5), (1, 3))]


def _reduce_cases(name):
    def cases(rng):
        out = []
        for shape, axis in _REDUCE_SHAPES:
            if name in ("any", "all"):
                x = rng.random(shape) > (0.1 if name == "all" else 0.9)
            elif name == "prod":
                x = rng.uniform(0.7, 1.3, shape)
            else:
                x = rng.standard_normal(shape)
            out.append(([x], {"axis": axis, "keepdims": False}))
        out.append(([rng.standard_normal((4, 6))], {"axis": 1, "keepdims": True}))
        if name not in ("max", "min", "argmax", "argmin"):
            out.append(([rng.standard_normal((0, 3))], {"axis": 0, "keepdims": False}))
        return out
    return cases


def _reduce_length(inputs, params):
    x = np.asarray(inputs[0])
    axes = layout.normalize_axes(params["axis"], x.ndim)
    return prod(x.shape[d] for d in axes)


def _reduce_reference(name):
    def reference(x, axis, keepdims):
        if name in ("argmax", "argmin"):
            return _host_arg(name, x, layout.normalize_axes(axis, x.ndim), keepdims)
        return _REDUCE_NUMPY[name](x, axis=axis, keepdims=keepdims)
    return reference


def _reduce_call(name):
    return lambda x, axis, keepdims: getattr(x, name)(axis=axis, keepdims=keepdims)


for _name in REDUCTIONS:
    _add(_name, OpTest(
        _reduce_call(_name), _reduce_reference(_name), _reduce_cases(_name),
        dtypes=("bool",) if _name in ("any", "all") else ("float32", "bfloat16"),
        reduction_length=_reduce_length, grad=_name in ("sum", "prod", "max", "min", "mean")))


# ---- row ops (vkgrad/ops/rownorm.py) ------------------------------------------------------------
_ROW_SHAPES = [((5, 7), 1), ((3, 17), -1), ((4, 6), 0), ((2, 3, 129), 2), ((3, 5, 4), 1),
               ((1,), 0), ((2, 1000), 1), ((0, 4), 1), ((3, 0), 1)]


def _cases_softmax(rng):
    return [([rng.standard_normal(shape) * 3], {"axis": axis}) for shape, axis in _ROW_SHAPES]


def _cases_edges(rng):
    """Rows with a NaN, all -inf, a +inf, two +inf, a -inf, a large value, all 1e30 (whose
    log-sum-exp rounds to the maximum: log_softmax is -log 5, not 0) (along both axes)."""
    edge = rng.standard_normal((7, 5))
    edge[0, 1], edge[1, :] = np.nan, -np.inf
    edge[2, 3], edge[3, 0], edge[4, 2] = np.inf, -np.inf, 80.0
    edge[5, 1:3], edge[6, :] = np.inf, 1e30
    return [([edge], {"axis": 1}), ([edge], {"axis": 0})]


def _softmax_reference(x, axis):
    with np.errstate(all="ignore"):
        e = np.exp(x - x.max(axis=axis, keepdims=True)) if x.size else x
        return e / e.sum(axis=axis, keepdims=True) if x.size else x


def _log_softmax_reference(x, axis):
    with np.errstate(all="ignore"):
        z = x - x.max(axis=axis, keepdims=True) if x.size else x
        return z - np.log(np.exp(z).sum(axis=axis, keepdims=True)) if x.size else x


def _cases_backward(rng):
    return [([rng.standard_normal(shape) * 3, rng.standard_normal(shape)], {"axis": axis})
            for shape, axis in _ROW_SHAPES]


def _softmax_backward_reference(x, g, axis):
    p = _softmax_reference(x, axis)
    return p * (g - (g * p).sum(axis=axis, keepdims=True))


def _log_softmax_backward_reference(x, g, axis):
    return g - _softmax_reference(x, axis) * g.sum(axis=axis, keepdims=True)


def _row_length(inputs, params):
    x = np.asarray(inputs[0])
    return x.shape[params["axis"]] if x.ndim else 1


def _cases_layer_norm(rng):
    x = rng.standard_normal
    return [([x((4, 7)) * 3 + 1, x(7), x(7)], {"k": 1, "eps": 1e-5}),
            ([x((2, 3, 129)), None, x(129)], {"k": 1, "eps": 1e-5}),
            ([x((3, 4, 5)), x((4, 5)), None], {"k": 2, "eps": 1e-3}),
            ([x((2, 1000)), x(1000), x(1000)], {"k": 1, "eps": 1e-5}),
            ([x((0, 6)), x(6), x(6)], {"k": 1, "eps": 1e-5}),
            ([x((3, 1)), None, None], {"k": 1, "eps": 1e-5})]


def _layer_norm_reference(x, w, b, k, eps):
    axes = tuple(range(x.ndim - k, x.ndim))
    d = x - x.mean(axis=axes, keepdims=True) if x.size else x
    y = d / np.sqrt((d * d).mean(axis=axes, keepdims=True) + eps) if x.size else x
    return y * (1 if w is None else w) + (0 if b is None else b)


def _layer_norm_call(x, w, b, k, eps):
    return apply(OPS["layer_norm"], x, w, b, k=k, eps=eps)


def _cases_cross_entropy(rng):
    out = []
    for shape in ((6, 5), (4, 3, 2), (5,), (3, 17), (2, 129), (0, 4)):
        c = shape[1] if len(shape) > 1 else shape[0]
        t_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
        t = rng.integers(0, c, t_shape).astype(np.int32)
        if t.ndim:
            t.flat[::3] = -100
        for reduction, smoothing, w in (("mean", 0.0, None), ("sum", 0.2, rng.uniform(0.5, 2, c)),
                                        ("none", 0.1, None), ("mean", 0.3, rng.uniform(0, 2, c))):
            out.append(([rng.standard_normal(shape) * 3, t, w],
                        {"axis": 1 if len(shape) > 1 else 0, "ignore_index": -100,
                         "smoothing": smoothing, "reduction": reduction}))
    return out


def _cross_entropy_reference(x, t, w, axis, ignore_index, smoothing, reduction):
    logp = _log_softmax_reference(x, axis)
    c = x.shape[axis]
    logp = np.moveaxis(logp, axis, -1).reshape(-1, c)
    t = t.reshape(-1)
    valid = t != ignore_index
    wc = np.ones(c) if w is None else w
    safe = np.where(valid, t, 0)
    wt = np.where(valid, wc[safe], 0.0)
    loss = -(1 - smoothing) * wt * logp[np.arange(t.size), safe] \
        - smoothing / c * (logp * wc).sum(axis=1)
    loss = np.where(valid, loss, 0.0)
    if reduction == "mean":
        with np.errstate(all="ignore"):
            return loss.sum() / wt.sum()
    return loss.sum() if reduction == "sum" else loss.reshape(x.shape[:axis] + x.shape[axis + 1:])


def _cross_entropy_call(x, t, w, axis, ignore_index, smoothing, reduction):
    return apply(OPS["cross_entropy"], x, t, w, axis=axis, ignore_index=ignore_index,
                 smoothing=smoothing, reduction=reduction)


def _ce_length(inputs, params):
    x = np.asarray(inputs[0])
    rows = x.size // max(x.shape[params["axis"]], 1)
    return x.shape[params["axis"]] * (rows if params["reduction"] != "none" else 1)


def _softmax(x, axis):
    return apply(OPS["softmax"], x, axis=axis)


def _log_softmax(x, axis):
    return apply(OPS["log_softmax"], x, axis=axis)


def _softmax_backward(x, g, axis):
    return apply(OPS["softmax_backward"], x, g, axis=axis)


_add("softmax",
     OpTest(_softmax, _softmax_reference, _cases_softmax, reduction_length=_row_length),
     OpTest(_softmax, _softmax_reference, _cases_edges, grad=False))
_add("log_softmax",
     OpTest(_log_softmax, _log_softmax_reference, _cases_softmax, reduction_length=_row_length),
     OpTest(_log_softmax, _log_softmax_reference, _cases_edges, grad=False))
_add("softmax_backward", OpTest(_softmax_backward, _softmax_backward_reference, _cases_backward,
                                reduction_length=_row_length))
_add("log_softmax_backward", OpTest(
    lambda x, g, axis: apply(OPS["log_softmax_backward"], x, g, axis=axis),
    _log_softmax_backward_reference, _cases_backward, reduction_length=_row_length))
_add("layer_norm", OpTest(
    _layer_norm_call, _layer_norm_reference, _cases_layer_norm,
    reduction_length=lambda inputs, params: int(np.prod(inputs[0].shape[-params["k"]:]))))
_add("cross_entropy", OpTest(_cross_entropy_call, _cross_entropy_reference,
                             _cases_cross_entropy, reduction_length=_ce_length))


# ---- sorting and scatter (vkgrad/ops/sorting.py) ------------------------------------------------
def _cases_argsort(rng):
    x = rng.standard_normal
    ties = rng.integers(-3, 4, (6, 40)).astype(np.float64)
    return [([x((7,))], {"axis": -1, "descending": False}),
            ([x((5, 33))], {"axis": 1, "descending": True}),
            ([x((9, 4, 3))], {"axis": 0, "descending": False}),
            ([ties], {"axis": 1, "descending": False}),                  # stability
            ([ties], {"axis": 0, "descending": True}),
            ([x((2, 1000))], {"axis": -1, "descending": False}),
            ([x(())], {"axis": 0, "descending": False}),
            ([x((3, 0))], {"axis": 1, "descending": False}),
            ([x((1, 1))], {"axis": 0, "descending": True})]


def _reference_argsort(x, axis, descending):
    # (numpy makes a 0-d argsort 1-d; torch and vkgrad keep it 0-d)
    x1 = x.reshape(-1) if np.ndim(x) == 0 else x
    return np.argsort(-x1 if descending else x1, axis=axis, kind="stable").reshape(np.shape(x))


def _reference_sort(x, axis, descending):
    x1 = x.reshape(-1) if np.ndim(x) == 0 else x
    order = _reference_argsort(x1, axis, descending)
    return np.take_along_axis(x1, order, axis).reshape(np.shape(x))


_add("argsort",
     OpTest(vk.argsort, _reference_argsort, _cases_argsort,
            dtypes=("float32", "bfloat16", "int32"), grad=False),
     OpTest(lambda x, axis, descending: vk.sort(x, axis, descending), _reference_sort,
            _cases_argsort, dtypes=("float32", "bfloat16", "int32")),
     OpTest(lambda x, k, largest: vk.topk(x, k, -1, largest).values,
            lambda x, k, largest: _reference_sort(x, -1, largest)[..., :k],
            lambda rng: [([rng.standard_normal((4, 9))], {"k": 3, "largest": True}),
                         ([rng.standard_normal((300,))], {"k": 5, "largest": False}),
                         ([rng.standard_normal((2, 5))], {"k": 0, "largest": True})]))


def _cases_scatter(rng):
    x = rng.standard_normal
    return [([x((5, 4)), rng.permutation(5)[:3].reshape(3, 1).repeat(4, 1), x((3, 4))],
             {"dim": 0}),
            ([x((3, 6)), np.stack([rng.permutation(6)[:4] for _ in range(2)]), x((2, 5))],
             {"dim": 1}),
            ([x((2, 3, 4)), rng.permutation(3)[:2].reshape(1, 2, 1).repeat(2, 0).repeat(3, 2),
              x((2, 2, 3))], {"dim": 1}),
            ([x((4,)), np.zeros((0,), np.int32), x((2,))], {"dim": 0})]


def _reference_scatter(a, index, src, dim):
    return _scatter_host(a, index, src[tuple(slice(0, n) for n in index.shape)], dim)


def _cases_scatter_reduce(reduce, include_self):
    def cases(rng):
        x = rng.standard_normal
        out = [([x((5, 4)), rng.integers(0, 5, (7, 3)), x((7, 4))], {"dim": 0}),
               ([x((3, 6)), rng.integers(0, 6, (3, 9)), x((3, 9))], {"dim": -1}),
               ([x((2, 3, 4)), rng.integers(0, 3, (2, 5, 4)), x((2, 5, 4))], {"dim": 1}),
               ([x((4,)), rng.integers(0, 4, (300,)), x((300,))], {"dim": 0})]
        if reduce == "prod":  # products of many terms: |x| near 1, and zeros
            out = [([np.where(np.abs(a) < 0.2, 0.0, np.sign(a) * (0.9 + np.abs(a) / 10)), i,
                     np.where(np.abs(s) < 0.2, 0.0, np.sign(s) * (0.9 + np.abs(s) / 10))], p)
                   for (a, i, s), p in out]
        return [(inputs, {**p, "reduce": reduce, "include_self": include_self})
                for inputs, p in out]
    return cases


def _reference_scatter_reduce(a, index, src, dim, reduce, include_self):
    src = src[tuple(slice(0, n) for n in index.shape)]
    if reduce == "mean":
        total = _scatter_reduce_host(a, index, src, dim, "sum", include_self)
        count = _scatter_reduce_host(np.full(a.shape, float(include_self)), index,
                                     np.ones_like(src), dim, "sum", True)
        return total / np.maximum(count, 1)
    return _scatter_reduce_host(a, index, src, dim % a.ndim, reduce, include_self)


def _scatter_reduce_length(inputs, params):
    return inputs[1].shape[params["dim"]] + 1


_add("scatter", OpTest(lambda a, i, s, dim: vk.scatter(a, dim, i, s), _reference_scatter,
                       _cases_scatter, dtypes=("float32", "bfloat16", "int32")))
_add("scatter_reduce", *[
    OpTest(lambda a, i, s, dim, reduce, include_self: vk.scatter_reduce(
        a, dim, i, s, reduce, include_self=include_self), _reference_scatter_reduce,
        _cases_scatter_reduce(reduce, include_self), reduction_length=_scatter_reduce_length)
    for reduce in ("sum", "prod", "amax", "amin", "mean") for include_self in (True, False)])


# ---- attention's ops (vkgrad/ops/transformer_ops.py) --------------------------------------------
def _cases_tri(rng):
    x = rng.standard_normal
    return [([x((4, 4))], {"diagonal": 0}), ([x((3, 5))], {"diagonal": 1}),
            ([x((5, 3))], {"diagonal": -2}), ([x((2, 3, 7, 6))], {"diagonal": 0}),
            ([x((3, 4))], {"diagonal": 9}), ([x((3, 4))], {"diagonal": -9}),
            ([x((0, 3))], {"diagonal": 0}), ([x((1, 257))], {"diagonal": 100})]


def _cases_masked_fill(rng):
    x = rng.standard_normal
    return [([x((3, 4)), rng.random((3, 4)) > 0.5], {"value": -2.5}),
            ([x((2, 3, 5)), rng.random((3, 1)) > 0.5], {"value": 0.0}),
            ([x((7,)), rng.random(()) > 0.5], {"value": 3.0})]


_TRI_DTYPES = ("float32", "bfloat16", "int32", "bool")

_add("tri",
     OpTest(vk.tril, lambda x, diagonal: np.tril(x, diagonal), _cases_tri, dtypes=_TRI_DTYPES),
     OpTest(vk.triu, lambda x, diagonal: np.triu(x, diagonal), _cases_tri, dtypes=_TRI_DTYPES))
_add("where", OpTest(
    vk.masked_fill, lambda x, mask, value: np.where(mask, value, x).astype(x.dtype),
    _cases_masked_fill))


def _cases_attention(rng):
    x = rng.standard_normal
    keep = lambda shape: rng.random(shape) > 0.3  # noqa: E731
    return [([x((2, 5, 8)), x((2, 7, 8)), x((2, 7, 6)), None],
             {"scale": 8 ** -0.5, "causal": False}),
            ([x((3, 9, 4)), x((3, 9, 4)), x((3, 9, 4)), None], {"scale": 0.5, "causal": True}),
            ([x((1, 4, 16)), x((1, 6, 16)), x((1, 6, 2)), None], {"scale": 0.25, "causal": True}),
            ([x((2, 3, 4)), x((2, 0, 4)), x((2, 0, 2)), None], {"scale": 1.0, "causal": False}),
            ([x((2, 2, 5, 3)), x((2, 2, 6, 3)), x((2, 2, 6, 5)), keep((2, 1, 5, 6))],
             {"scale": 0.6, "causal": False}),
            ([x((7, 4)), x((7, 4)), x((7, 3)), keep((7,))], {"scale": 0.5, "causal": False}),
            ([x((1, 40, 128)), x((1, 40, 128)), x((1, 40, 128)), None],
             {"scale": 128 ** -0.5, "causal": True})]


def _attention_reference(q, k, v, mask, scale, causal):
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        s = np.where(np.tri(*s.shape[-2:], dtype=bool), s, -np.inf)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True, initial=-np.inf)
    w = np.exp(s - np.where(m == -np.inf, 0, m))
    return w / np.maximum(w.sum(axis=-1, keepdims=True), 1e-300) @ v


_add("attention", OpTest(fused_attention, _attention_reference, _cases_attention,
                         reduction_length=lambda inputs, params: max(inputs[0].shape[-1],
                                                                     inputs[1].shape[-2])))


# ---- movement (vkgrad/ops/movement.py) ----------------------------------------------------------
_ALL_DTYPES = ("float32", "bfloat16", "int32", "bool")


def _cases_concatenate(rng):
    x = rng.standard_normal
    return [([x((2, 3)), x((1, 3)), x((4, 3))], {"axis": 0}),
            ([x((3, 5, 2)), x((3, 1, 2)), x((3, 7, 2))], {"axis": 1}),
            ([x((3, 5)), x((3, 0)), x((3, 2))], {"axis": -1}),       # odd pieces of packed words
            ([x((7,)), x((300,))], {"axis": 0}),
            ([x((0, 4)), x((0, 4))], {"axis": 0})]


def _cases_stack(rng):
    x = rng.standard_normal
    return [([x((2, 3)), x((2, 3)), x((2, 3))], {"axis": 0}),
            ([x((5,)), x((5,))], {"axis": 1}),
            ([x(()), x(())], {"axis": 0}),
            ([x((3, 0))], {"axis": -1})]


def _cases_pad(rng):
    x = rng.standard_normal
    return [([x((3, 4))], {"pad_width": 1, "constant_values": 0}),
            ([x((2, 3, 5))], {"pad_width": ((0, 1), (2, 0), (1, 3)), "constant_values": -1.5}),
            ([x((7,))], {"pad_width": (3, 0), "constant_values": 2}),
            ([x((0, 2))], {"pad_width": ((1, 1), (0, 1)), "constant_values": 1}),
            ([x((17, 31))], {"pad_width": ((5, 300), (1, 2)), "constant_values": 0.5})]


def _cases_pad_modes(rng):
    x = rng.standard_normal
    return [([x((3, 4))], {"pad_width": 2, "mode": "reflect"}),
            ([x((2, 3, 5))], {"pad_width": ((0, 1), (2, 0), (4, 9)), "mode": "reflect"}),
            ([x((1, 5))], {"pad_width": ((2, 1), (0, 3)), "mode": "reflect"}),
            ([x((4, 3))], {"pad_width": ((1, 6), (2, 0)), "mode": "edge"}),
            ([x((3, 5))], {"pad_width": ((4, 2), (7, 11)), "mode": "wrap"}),
            ([x((0, 3))], {"pad_width": ((0, 0), (1, 1)), "mode": "wrap"})]


def _cases_flip(rng):
    x = rng.standard_normal
    return [([x((3, 4))], {"axis": None}), ([x((2, 3, 5))], {"axis": (0, 2)}),
            ([x((9,))], {"axis": 0}), ([x(())], {"axis": None}), ([x((0, 3))], {"axis": 0})]


def _cases_roll(rng):
    x = rng.standard_normal
    return [([x((3, 4))], {"shift": 1, "axis": None}),
            ([x((5, 6, 7))], {"shift": (2, -3), "axis": (0, 2)}),
            ([x((9,))], {"shift": 13, "axis": 0}),
            ([x((4, 3))], {"shift": (1, 2), "axis": 1}),             # both on axis 1: 3 = 0
            ([x((2, 301))], {"shift": -100, "axis": -1}),
            ([x(())], {"shift": 5, "axis": None}),
            ([x((0, 3))], {"shift": 1, "axis": 0})]


def _cases_tile(rng):
    x = rng.standard_normal
    return [([x((2, 3))], {"reps": (2, 3)}), ([x((3,))], {"reps": (2, 1, 3)}),
            ([x((2, 3, 4))], {"reps": 2}), ([x(())], {"reps": 3}), ([x((3, 5))], {"reps": (0, 2)}),
            ([x((2, 1, 3, 2))], {"reps": (2, 2, 2, 2)})]                # 8 dims before merging


def _cases_repeat(rng):
    x = rng.standard_normal
    return [([x((2, 3))], {"repeats": 2, "axis": None}), ([x((2, 3))], {"repeats": 3, "axis": 1}),
            ([x((4, 3))], {"repeats": [1, 0, 3, 2], "axis": 0}), ([x(())], {"repeats": 4,
                                                                          "axis": None}),
            ([x((5, 7))], {"repeats": 0, "axis": 0}), ([x((3, 101))], {"repeats": 3, "axis": -1})]


def _cases_cumsum(rng):
    x = rng.standard_normal
    return [([x((5, 6))], {"axis": 1}), ([x((5, 6))], {"axis": 0}),
            ([x((2, 3, 4))], {"axis": None}),
            ([x((3, 1000))], {"axis": 1}), ([x((2000,))], {"axis": 0}), ([x(())], {"axis": None}),
            ([x((0, 3))], {"axis": 0}), ([x((70, 3, 2))], {"axis": 0})]


def _cases_cumprod(rng):
    def x(shape):  # |x| near 1 keeps long products finite
        return np.asarray(rng.uniform(0.8, 1.25, shape) * rng.choice([-1, 1], shape))
    zeros = x((3, 7))
    zeros[0, 2] = zeros[1, 0] = zeros[1, 4] = zeros[2, 6] = 0  # one zero, two zeros, last zero
    return [([x((5, 6))], {"axis": 1}), ([x((5, 6))], {"axis": 0}),
            ([x((2, 3, 4))], {"axis": None}), ([x((3, 1000))], {"axis": 1}),
            ([x(())], {"axis": None}), ([x((0, 3))], {"axis": 0}), ([zeros], {"axis": 1}),
            ([x((70, 3, 2))], {"axis": 0})]


def _cases_extreme(rng):
    ties = rng.integers(-2, 3, (5, 30)).astype(np.float64)
    return [([rng.standard_normal((5, 6))], {"axis": 1}), ([ties], {"axis": 1}),
            ([ties], {"axis": 0}), ([rng.standard_normal((3, 1000))], {"axis": -1}),
            ([rng.standard_normal((2, 3, 4))], {"axis": None}),
            ([rng.standard_normal(())], {"axis": 0}), ([rng.standard_normal((0, 3))], {"axis": 0})]


def _cases_logcumsumexp(rng):
    x = rng.standard_normal
    return [([3 * x((5, 6))], {"axis": 1}), ([x((5, 6))], {"axis": 0}),
            ([x((2, 3, 4))], {"axis": None}), ([3 * x((3, 1000))], {"axis": 1}),
            ([x(())], {"axis": 0}), ([x((0, 3))], {"axis": 0}), ([x((70, 3, 2))], {"axis": 0})]


def _accumulated(accumulate):
    """The reference of a running op: numpy's `accumulate` (None: flattened; 0-d: itself)."""
    def reference(x, axis):
        if axis is None:
            return accumulate(x.reshape(-1), axis=0)
        return accumulate(x.reshape(x.shape or (1,)), axis=axis).reshape(x.shape)
    return reference


def _cumsum_length(inputs, params):
    x = inputs[0]
    return x.size if params["axis"] is None else x.shape[params["axis"]]


def _cases_diagonal(rng):
    x = rng.standard_normal
    return [([x((4, 5))], {"offset": 0, "axis1": 0, "axis2": 1}),
            ([x((4, 5))], {"offset": 2, "axis1": 0, "axis2": 1}),
            ([x((5, 3))], {"offset": -3, "axis1": 1, "axis2": 0}),
            ([x((2, 3, 4, 3))], {"offset": -1, "axis1": 3, "axis2": 1}),
            ([x((3, 4))], {"offset": 7, "axis1": 0, "axis2": 1}),          # empty diagonal
            ([x((0, 3))], {"offset": 0, "axis1": 0, "axis2": -1})]


def _cases_diag(rng):
    x = rng.standard_normal
    return [([x((4,))], {"k": 0}), ([x((3,))], {"k": 2}), ([x((5,))], {"k": -1}),
            ([x((4, 6))], {"k": 1}), ([x((6, 4))], {"k": -2}), ([x((0,))], {"k": 0})]


_add("concatenate",
     OpTest(lambda *ts, axis: vk.concatenate(ts, axis),
            lambda *xs, axis: np.concatenate(xs, axis), _cases_concatenate, dtypes=_ALL_DTYPES),
     OpTest(lambda *ts, axis: vk.stack(ts, axis), lambda *xs, axis: np.stack(xs, axis),
            _cases_stack, dtypes=_ALL_DTYPES))
_add("pad",
     OpTest(vk.pad, lambda x, pad_width, constant_values: np.pad(
         x, pad_width, constant_values=np.asarray(constant_values).astype(x.dtype)),
         _cases_pad, dtypes=_ALL_DTYPES),
     OpTest(vk.pad, lambda x, pad_width, mode: np.pad(x, pad_width, mode), _cases_pad_modes,
            dtypes=_ALL_DTYPES))
_add("flip", OpTest(vk.flip, lambda x, axis: np.flip(x, axis), _cases_flip, dtypes=_ALL_DTYPES))
_add("roll", OpTest(vk.roll, lambda x, shift, axis: np.roll(x, shift, axis), _cases_roll,
                    dtypes=_ALL_DTYPES))
_add("tile", OpTest(vk.tile, lambda x, reps: np.tile(x, reps), _cases_tile, dtypes=_ALL_DTYPES))
_add("repeat", OpTest(vk.repeat, lambda x, repeats, axis: np.repeat(x, repeats, axis),
                      _cases_repeat, dtypes=_ALL_DTYPES))
_add("cumsum", OpTest(vk.cumsum, lambda x, axis: np.cumsum(x, axis), _cases_cumsum,
                      dtypes=("float32", "bfloat16", "int32", "bool"),
                      reduction_length=_cumsum_length))
_add("cumprod",
     OpTest(vk.cumprod, lambda x, axis: np.cumprod(x, axis), _cases_cumprod,
            reduction_length=_cumsum_length),
     OpTest(vk.cumprod, lambda x, axis: np.cumprod(x, axis), lambda rng: [
         ([rng.integers(-3, 4, (4, 9))], {"axis": 1}),
         ([rng.integers(-2, 3, (40,))], {"axis": 0})], dtypes=("int32",), grad=False))
for _name, _numpy in (("cummax", np.maximum.accumulate), ("cummin", np.minimum.accumulate)):
    _add(_name, OpTest(lambda x, axis, _n=_name: getattr(x, _n)(axis).values,
                       _accumulated(_numpy), _cases_extreme,
                       dtypes=("float32", "bfloat16", "int32")))
_add("logcumsumexp", OpTest(vk.logcumsumexp, _accumulated(np.logaddexp.accumulate),
                            _cases_logcumsumexp))
_add("diagonal",
     OpTest(vk.diagonal, lambda x, offset, axis1, axis2: np.diagonal(x, offset, axis1, axis2),
            _cases_diagonal, dtypes=_ALL_DTYPES),
     OpTest(vk.diag, lambda x, k: np.diag(x, k), _cases_diag, dtypes=_ALL_DTYPES))


# ---- indexing (vkgrad/ops/indexing.py) ----------------------------------------------------------
def _cases_index(rng):
    x = rng.standard_normal
    return [
        ([x((5, 6)), np.array([4, 0, -1, 2])], {"key": lambda i: i}),
        ([x((5, 6, 7)), np.array([[1, 3], [0, 0]]), np.array([6, -7])],
         {"key": lambda i, j: (i, slice(1, 5, 2), j)}),                 # not adjacent: dims first
        ([x((4, 5, 3)), np.array([2, 0, 4])], {"key": lambda i: (slice(None, None, -1), i)}),
        ([x((3, 4, 5)), np.array([[1], [2]]), np.array([0, 4, 3])],
         {"key": lambda i, j: (Ellipsis, i, j)}),
        ([x((6, 5)), rng.random((6, 5)) > 0.5], {"key": lambda m: m}),
        ([x((4, 7, 3)), rng.random(7) > 0.3], {"key": lambda m: (slice(1, 3), m)}),
        ([x((2, 300)), rng.random((2, 300)) > 0.5], {"key": lambda m: m}),  # several chunks
        ([x((4, 3)), np.zeros(4, bool)], {"key": lambda m: m}),           # nothing selected
        ([x(()), np.array(True)], {"key": lambda m: m}),                  # 0-d
        ([x((0, 3)), np.zeros((0,), np.int32)], {"key": lambda i: i}),    # empty
        ([x((3, 5)), np.array(2)], {"key": lambda i: (i, slice(None))}),  # 0-d index
        ([x((7, 3)), np.array([6, 1])], {"key": lambda i: (i, 2)}),
    ]


def _cases_host_keys(rng):
    x = rng.standard_normal
    return [([x((5, 6))], {"key": ([1, -2, 1], slice(None, None, 2))}),
            ([x((3, 4, 5))], {"key": (0, slice(None), [1, 3])}),
            ([x((3, 4, 5))], {"key": (None, [[0], [2]], 1, [0, 4, 1])}),
            ([x((6, 3))], {"key": np.array([True, False, True, True, False, True])}),
            ([x((4, 5))], {"key": (np.ones((4, 5), bool) & (rng.random((4, 5)) > 0.5),)}),
            ([x((4, 5))], {"key": (slice(None), [])})]


def _call_key(a, *indices, key):
    return a[key(*indices)]


def _reference_key(a, *indices, key):
    return a[key(*[i.astype(np.intp) if i.dtype.kind != "b" else i for i in indices])]


def _write_call(add):
    def call(a, v, *indices, key):
        b = vk.zeros(a.shape, a.dtype, a.device)
        b[...] = a
        k = key(*indices) if callable(key) else key
        (vk.add_at(b, k, v) if add else b.__setitem__(k, v))
        return b
    return call


def _write_reference(add):
    def reference(a, v, *indices, key):
        b = a.copy()
        k = key(*[i.astype(np.intp) if i.dtype.kind != "b" else i for i in indices]) \
            if callable(key) else key
        (np.add.at(b, k, v) if add else b.__setitem__(k, v))
        return b
    return reference


def _cases_write(rng):
    x = rng.standard_normal
    return [
        ([x((5, 6)), x((3, 6)), np.array([4, 0, 2])], {"key": lambda i: i}),
        ([x((5, 7)), x(()), np.array([[1, 3], [4, 0]])], {"key": lambda i: (slice(None), i)}),
        ([x((9, 5)), 2.5, rng.random(9) > 0.4], {"key": lambda m: m}),
        ([x((9,)), x((4,))], {"key": slice(1, 9, 2)}),
        ([x((3, 8)), x((8,))], {"key": (1,)}),
        ([x((4, 5, 3)), x((5, 1))], {"key": (slice(None, None, -2), Ellipsis)}),
        ([x((6, 4)), -1.0, np.array([[0], [5]]), np.array([3, 1, 0])],
         {"key": lambda i, j: (i, j)}),
        ([x((3, 301)), x((301,))], {"key": (2,)}),
        ([x(()), 7.0], {"key": ()}),
    ]


def _cases_add_at(rng):
    x = rng.standard_normal
    return [([x((5, 3)), x((6, 3)), np.array([4, 0, 4, 2, 0, 4])], {"key": lambda i: i}),
            ([x((7,)), 1.5, np.array([1, 1, 1, 6])], {"key": lambda i: i}),
            ([x((4, 5)), x((4, 2)), np.array([3, 3])], {"key": lambda i: (slice(None), i)}),
            ([x((5,)), x((3,))], {"key": slice(0, 5, 2)})]


def _cases_take(rng):
    x = rng.standard_normal
    return [([x((5, 6)), np.array([[0, 5], [-1, 3]])], {"axis": 1}),
            ([x((4, 3)), np.array([11, 0, -12])], {"axis": None}),
            ([x((7,)), np.array(3)], {"axis": 0}),
            ([x((3, 0)), np.array([1, 2])], {"axis": 0})]


def _cases_take_along_axis(rng):
    x = rng.standard_normal
    return [([x((5, 6)), rng.integers(-6, 6, (5, 3))], {"axis": 1}),
            ([x((4, 3, 5)), rng.integers(0, 4, (2, 1, 5))], {"axis": 0}),
            ([x((3, 300)), rng.integers(0, 300, (3, 257))], {"axis": -1}),
            ([x((6,)), rng.integers(0, 6, (9,))], {"axis": None}),
            ([x((2, 3)), np.zeros((2, 0), np.int32)], {"axis": 1})]


def _cases_one_hot(rng):
    return [([rng.integers(0, 5, (7,))], {"num_classes": 5}),
            ([rng.integers(0, 3, (2, 4))], {"num_classes": 3}),
            ([np.array(2)], {"num_classes": 4}),
            ([rng.integers(0, 300, (3,))], {"num_classes": 300}),
            ([np.zeros((0,), np.int32)], {"num_classes": 2})]


_add("index",
     OpTest(_call_key, _reference_key, _cases_index, dtypes=_ALL_DTYPES),
     OpTest(lambda a, key: a[key], lambda a, key: a[key], _cases_host_keys),
     OpTest(lambda a, i, axis: vk.take(a, i, axis), lambda a, i, axis: np.take(a, i, axis),
            _cases_take, dtypes=_ALL_DTYPES))
_add("setitem",
     OpTest(_write_call(False), _write_reference(False), _cases_write, dtypes=_ALL_DTYPES,
            grad=False),
     OpTest(_write_call(True), _write_reference(True), _cases_add_at, grad=False))
_add("index_add", OpTest(lambda a, v, *i, key: index_add(a, key(*i) if callable(key) else key, v),
                         _write_reference(True), _cases_add_at))
_add("take_along_axis", OpTest(
    vk.take_along_axis, lambda a, i, axis: np.take_along_axis(a, i.astype(np.intp), axis),
    _cases_take_along_axis, dtypes=_ALL_DTYPES))
_add("one_hot", OpTest(
    vk.one_hot, lambda labels, num_classes: np.eye(num_classes)[labels.astype(np.intp)]
    if num_classes else np.zeros((*labels.shape, 0)), _cases_one_hot, dtypes=("int32",),
    grad=False))


# ---- products (vkgrad/ops/linalg.py) ------------------------------------------------------------
def _pairs(*shape_pairs):
    def cases(rng):
        return [([rng.standard_normal(sa), rng.standard_normal(sb)], {}) for sa, sb in shape_pairs]
    return cases


def _int_pairs(rng):
    return [([rng.integers(-9, 10, sa), rng.integers(-9, 10, sb)], {})
            for sa, sb in (((7, 5), (5, 3)), ((2, 3, 4), (4, 5)), ((6,), (6,)),
                           ((33, 40), (40, 9)))]


def _inner_length(inputs, params):
    a, b = inputs
    return a.shape[-1] if np.ndim(a) and np.ndim(b) else 1


def _einsum_cases(rng):
    specs = [("ij,jk->ik", (7, 5), (5, 3)), ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)),
             ("ij,kj->ik", (6, 5), (4, 5)), ("i,i->", (9,), (9,)), ("ij,j->i", (4, 6), (6,)),
             ("bhqd,bhkd->bhqk", (2, 3, 5, 4), (2, 3, 6, 4)), ("i,j->ij", (3,), (4,)),
             ("ij,jk", (3, 4), (4, 2)), ("ijk,kl->lij", (2, 3, 4), (4, 5)),
             ("bij,bjk->bki", (3, 2, 5), (3, 5, 4)), ("ij,jk->k", (3, 4), (4, 2)),
             ("ij,ij->i", (5, 7), (5, 7)), ("ii->", (4, 4)), ("ii->i", (5, 5)), ("ij->ji", (3, 4)),
             ("ijk->", (2, 3, 4)), ("iji->j", (3, 2, 3)), ("...ij->...ji", (2, 3, 4)),
             ("ij,jk,kl->il", (3, 4), (4, 5), (5, 2)), ("i,i,i->i", (6,), (6,), (6,)),
             ("...ij,...jk->...ik", (2, 1, 3, 4), (5, 4, 2)), ("ii,ij->j", (3, 3), (3, 4)),
             ("bii,bij,k->bjk", (2, 3, 3), (2, 3, 4), (2,)), ("ab,cd,bc->ad", (2, 3), (4, 5),
                                                               (3, 4)),
             (",ij->ij", (), (2, 3)), ("ij,ij", (0, 3), (0, 3)), ("i...,i...", (3, 2), (3, 2))]
    return [([rng.standard_normal(shape) for shape in shapes], {"subscripts": s})
            for s, *shapes in specs]


def _einsum_length(inputs, params):
    _, out, sizes = _parse_einsum(params["subscripts"], [np.shape(x) for x in inputs])
    return max(_size(sizes, [c for c in sizes if c not in out]), 1)


def _swap(x):
    return x.swapaxes(-1, -2)


_add("matmul",
     OpTest(lambda a, b: a @ b, np.matmul, _pairs(
         ((1, 1), (1, 1)), ((7, 5), (5, 3)), ((65, 33), (33, 70)), ((129, 17), (17, 131)),
         ((2, 3, 4), (4, 5)), ((3, 4, 5), (3, 5, 2)), ((3, 1, 4, 5), (2, 5, 6)),
         ((5,), (5,)), ((5,), (5, 3)), ((4, 5), (5,)), ((2, 4, 5), (5,)), ((6, 1), (1, 7)),
         ((0, 5), (5, 3)), ((4, 0), (0, 3)), ((4, 5), (5, 0)),
         ((2, 1, 3, 1, 2, 3), (1, 4, 1, 5, 3, 2)),   # batch dims that cannot merge: > MAXB
         ((6, 25), (25, 600)), ((600, 25), (25, 6)),  # flat and tall tiles
         ((6, 3000), (3000, 25)), ((2, 5, 1024), (1024, 3))),  # K split in chunks
         reduction_length=_inner_length),
     OpTest(lambda a, b: _swap(a).matmul(_swap(b)), lambda a, b: _swap(a) @ _swap(b),
            _pairs(((5, 7), (3, 5)), ((2, 33, 65), (70, 33))),
            reduction_length=lambda inputs, params: inputs[0].shape[-2]),
     OpTest(lambda a, b: a @ b, np.matmul, _int_pairs, dtypes=("int32",), grad=False),
     OpTest(lambda a, b: a.dot(b), np.dot, _pairs(
         ((5,), (5,)), ((4, 5), (5, 3)), ((4, 5), (5,)), ((5,), (5, 3)), ((2, 3, 4), (5, 4, 2)),
         ((2, 3, 4), (4,)), ((), (3, 4)), ((3,), ())), reduction_length=_inner_length),
     OpTest(lambda a, b: vk.outer(a, b), np.outer, _pairs(
         ((5,), (7,)), ((2, 3), (4,)), ((0,), (3,)), ((1,), (1,)))),
     OpTest(lambda *ts, subscripts: vk.einsum(subscripts, *ts),
            lambda *xs, subscripts: np.einsum(subscripts, *xs), _einsum_cases,
            reduction_length=_einsum_length))



def _linear_cases(rng):
    return [([rng.standard_normal(sx), rng.standard_normal((n, sx[-1])), rng.standard_normal(n)],
             {}) for sx, n in (((5, 7), 3), ((2, 4, 6), 5), ((1, 1), 1), ((0, 4), 3),
                               ((4, 33), 65), ((3, 0), 2))]


# widen_weight is F.linear's float32 copy of a bf16 weight (kept by the host between calls)
_add("widen_weight",
     OpTest(lambda x, w, b: vk.nn.functional.linear(x, w, b), lambda x, w, b: x @ w.T + b,
            _linear_cases, reduction_length=lambda inputs, params: inputs[0].shape[-1] + 1))

# ---- optimizers (vkgrad/ops/optimizers.py): a few steps of each against torch.optim in float64
_OPTIM_SHAPES = [(), (7,), (3, 257), (0, 4), (2, 3, 5), (513,)]


def _optimizer_test(optimizer, configs):
    def call(param, grad, options, steps):
        # A contiguous host tensor shares the test's input array: update a copy of it. Strided
        # inputs are views of private copies already, and stay strided parameters.
        contiguous = param.contiguous()._data is param._data
        p = vk.nn.Parameter(param.astype(param.dtype) if contiguous else param)
        opt = getattr(vk.optim, optimizer)([p], **options)
        for k in range(steps):
            p.grad = grad if k % 2 == 0 else grad * -0.5
            opt.step()
        return p

    def reference(param, grad, options, steps):
        import torch
        p = torch.tensor(param, dtype=torch.float64, requires_grad=True)
        options = {k: v for k, v in options.items() if k != "master_weights"}
        opt = getattr(torch.optim, optimizer)([p], **options)
        g = torch.tensor(grad, dtype=torch.float64)
        for k in range(steps):
            p.grad = g if k % 2 == 0 else g * -0.5
            opt.step()
        return p.detach().numpy()

    def cases(rng):
        return [([rng.standard_normal(shape) * 2, rng.standard_normal(shape)],
                 {"options": configs[i % len(configs)], "steps": 3})
                for i, shape in enumerate(_OPTIM_SHAPES)]

    return OpTest(call, reference, cases, grad=False)


_add("optimizer_update",
     _optimizer_test("SGD", [dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                             dict(lr=0.1, momentum=0.9, dampening=0.3, maximize=True,
                                  master_weights=True),
                             dict(lr=0.05)]),
     _optimizer_test("Adam", [dict(lr=0.01, amsgrad=True, weight_decay=0.1),
                              dict(lr=0.02, betas=(0.3, 0.8), master_weights=True,
                                   maximize=True)]),
     _optimizer_test("AdamW", [dict(lr=0.01, weight_decay=0.1), dict(lr=0.01, amsgrad=True)]),
     _optimizer_test("RMSprop", [dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1),
                                 dict(lr=0.01, alpha=0.9, master_weights=True)]))


# ---- convolution and pooling (vkgrad/ops/conv.py) ------------------------------------------------
def _torch(fn):
    """A reference that runs torch.nn.functional.`fn` on float64 copies (torch imported
    lazily, as the tests that need it run)."""
    def reference(*arrays, **params):
        import torch
        tensors = [torch.from_numpy(np.asarray(a, np.float64)) for a in arrays]
        return getattr(torch.nn.functional, fn)(*tensors, **params).numpy()
    return reference


def _conv_cases(rng):
    r = rng.standard_normal
    return [
        ([r((2, 3, 7, 6)), r((4, 3, 3, 2)), r(4)], {}),
        ([r((1, 1, 9, 8)), r((2, 1, 3, 3)), r(2)], {"stride": 2, "padding": 1}),
        ([r((2, 4, 6, 7)), r((6, 2, 2, 3))], {"groups": 2, "dilation": (2, 1),
                                              "padding": (1, 2)}),
        ([r((3, 5, 4, 4)), r((3, 5, 1, 1)), r(3)], {}),
        ([r((2, 6, 5, 5)), r((6, 1, 3, 3)), r(6)], {"groups": 6, "stride": (1, 2),
                                                    "padding": 1}),
        ([r((0, 2, 4, 4)), r((3, 2, 3, 3)), r(3)], {}),
    ]


def _conv1d_cases(rng):
    r = rng.standard_normal
    return [([r((2, 3, 11)), r((4, 3, 3)), r(4)], {"stride": 2, "padding": 1}),
            ([r((1, 2, 9)), r((2, 1, 4))], {"groups": 2, "dilation": 2})]


def _conv_transpose_cases(rng):
    r = rng.standard_normal
    return [([r((2, 4, 5, 6)), r((4, 3, 3, 2)), r(3)], {"stride": 2, "padding": 1,
                                                       "output_padding": 1}),
            ([r((1, 6, 4, 3)), r((6, 2, 3, 3))], {"groups": 3, "stride": (2, 3),
                                                  "dilation": (1, 2), "output_padding": (1, 2)}),
            ([r((2, 2, 3, 3)), r((2, 3, 2, 2)), r(3)], {"dilation": 3, "output_padding": 2})]


def _conv_transpose_length(inputs, params):
    w = inputs[1]
    return w.shape[0] * prod(w.shape[2:]) + (len(inputs) > 2)


def _conv_length(inputs, params):
    w = inputs[1]
    return prod(w.shape[1:]) + (len(inputs) > 2)


def _unfold_cases(rng):
    r = rng.standard_normal
    return [([r((2, 3, 7, 5))], {"kernel_size": (3, 2)}),
            ([r((1, 1, 6, 9))], {"kernel_size": 3, "stride": 2, "padding": 1}),
            ([r((2, 2, 9, 8))], {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 0),
                                 "dilation": (2, 1)}),
            ([r((3, 2, 5, 5))], {"kernel_size": 5}),
            ([r((0, 2, 4, 4))], {"kernel_size": 3})]


def _fold_cases(rng):
    r = rng.standard_normal
    return [([r((2, 3 * 6, 5 * 4))], {"output_size": (7, 5), "kernel_size": (3, 2)}),
            ([r((1, 9, 15))], {"output_size": (6, 9), "kernel_size": 3, "stride": 2,
                               "padding": 1}),
            ([r((2, 2 * 6, 5 * 6))], {"output_size": (9, 8), "kernel_size": (2, 3),
                                      "stride": (2, 1), "padding": (1, 0), "dilation": (2, 1)})]


_MAX_POOLS = [((2, 3, 7, 6), {"kernel_size": 2}),
              ((1, 2, 9, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
              ((2, 1, 5, 7), {"kernel_size": (2, 3), "stride": 1}),
              ((1, 2, 8, 9), {"kernel_size": 3, "stride": (2, 1), "padding": 1, "dilation": 2})]
_CEIL_POOLS = [((2, 3, 7, 8), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
               ((1, 2, 7, 8), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
               ((1, 2, 5, 7), {"kernel_size": (2, 3), "stride": (2, 3), "ceil_mode": True})]
_AVG_CEIL_POOLS = _CEIL_POOLS + [
    ((1, 2, 7, 8), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                    "count_include_pad": False}),
    ((2, 1, 6, 6), {"kernel_size": 2, "divisor_override": 3})]
_AVG_POOLS = [((2, 3, 7, 6), {"kernel_size": 2}),
              ((1, 2, 9, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
              ((1, 2, 9, 8), {"kernel_size": 3, "stride": 2, "padding": 1,
                              "count_include_pad": False}),
              ((2, 1, 5, 7), {"kernel_size": (2, 3), "stride": 1, "padding": (1, 0),
                              "count_include_pad": False})]


def _pool_cases(pools):
    return lambda rng: [([rng.standard_normal(shape)], params) for shape, params in pools]


def _pool_call_args(name, shape, params):
    """The pooling op's parameters for the public arguments `params` on an input of `shape`."""
    window = {k: v for k, v in params.items() if k != "count_include_pad"}
    kernel, stride, padding, dilation = _pool_args(name, shape, **window)
    if name == "max_pool2d":
        return dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    return dict(kernel=kernel, stride=stride, padding=padding,
                include_pad=params.get("count_include_pad", True))


def _max_pool_backward_call(x, g, **params):
    window = _pool_call_args("max_pool2d", x.shape, params)
    _, tap = apply_with_stats(MAX_POOL, x.detach(), **window, argmax=True)
    return apply(MAX_POOL_BACKWARD, tap, g, size=x.shape[2:], **window)


def _avg_pool_backward_call(x, g, **params):
    # x only gives the input's shape: the average pool's backward reads g alone
    return apply(AVG_POOL_BACKWARD, g, size=x.shape[2:],
                 **_pool_call_args("avg_pool2d", x.shape, params))


def _pool_backward_cases(name, pools):
    """(input, upstream gradient) pairs for a pooling backward op."""
    def cases(rng):
        out = []
        for shape, params in pools:
            geometry = _pool_call_args(name, shape, params)
            out_hw = _out_hw(shape[2:], geometry["kernel"], geometry["stride"],
                             geometry["padding"], geometry.get("dilation", (1, 1)))
            out.append(([rng.standard_normal(shape), rng.standard_normal(shape[:2] + out_hw)],
                        params))
        return out
    return cases


def _torch_pool_backward(fn):
    def reference(x, g, **params):
        import torch
        xt = torch.from_numpy(np.asarray(x, np.float64)).requires_grad_()
        getattr(torch.nn.functional, fn)(xt, **params).backward(torch.from_numpy(g))
        return xt.grad.numpy()
    return reference


def _adaptive_cases(rng):
    r = rng.standard_normal
    return [([r((2, 3, 7, 9))], {"output_size": (3, 4)}),
            ([r((1, 2, 6, 6))], {"output_size": (2, 3)}),
            ([r((1, 1, 5, 5))], {"output_size": 1}),
            ([r((1, 2, 3, 3))], {"output_size": (5, None)})]


def _bin_length(inputs, params):
    (h, w), size = inputs[0].shape[2:], params["output_size"]
    oh, ow = (size, size) if isinstance(size, int) else (size[0], size[1] or w)
    return (-(-h // oh) + 1) * (-(-w // ow) + 1)


def _window_length(inputs, params):
    return prod(_tuple("", "", params["kernel_size"], 2, 1))


def _conv_without_grad(*tensors, relu=False, **params):
    with vk.no_grad():
        return (conv2d_relu if relu else conv2d)(*tensors, **params)


def _torch_conv_relu(*arrays, **params):
    return np.maximum(_torch("conv2d")(*arrays, **params), 0)


_add("conv2d_inference",
     OpTest(_conv_without_grad, _torch("conv2d"), _conv_cases, reduction_length=_conv_length,
            grad=False),
     OpTest(lambda *t, **p: _conv_without_grad(*t, relu=True, **p), _torch_conv_relu,
            _conv_cases, reduction_length=_conv_length, grad=False))
_add("conv2d",
     OpTest(conv2d, _torch("conv2d"), _conv_cases, reduction_length=_conv_length),
     OpTest(conv2d_relu, _torch_conv_relu, _conv_cases, reduction_length=_conv_length),
     OpTest(conv1d, _torch("conv1d"), _conv1d_cases, reduction_length=_conv_length))
_add("im2col", OpTest(unfold, _torch("unfold"), _unfold_cases))
_add("col2im",
     OpTest(fold, _torch("fold"), _fold_cases, reduction_length=_window_length),
     OpTest(conv_transpose2d, _torch("conv_transpose2d"), _conv_transpose_cases,
            reduction_length=_conv_transpose_length))
_add("max_pool2d",
     OpTest(max_pool2d, _torch("max_pool2d"), _pool_cases(_MAX_POOLS)),
     OpTest(max_pool2d, _torch("max_pool2d"), _pool_cases(_CEIL_POOLS)))
_add("max_pool2d_backward", OpTest(
    _max_pool_backward_call, _torch_pool_backward("max_pool2d"),
    _pool_backward_cases("max_pool2d", _MAX_POOLS), reduction_length=_window_length))
_add("avg_pool2d",
     OpTest(avg_pool2d, _torch("avg_pool2d"), _pool_cases(_AVG_POOLS),
            reduction_length=_window_length),
     OpTest(adaptive_avg_pool2d, _torch("adaptive_avg_pool2d"), _adaptive_cases,
            reduction_length=_bin_length),
     OpTest(avg_pool2d, _torch("avg_pool2d"), _pool_cases(_AVG_CEIL_POOLS),
            reduction_length=_window_length))
_add("avg_pool2d_backward", OpTest(
    _avg_pool_backward_call, _torch_pool_backward("avg_pool2d"),
    _pool_backward_cases("avg_pool2d", _AVG_POOLS), reduction_length=_window_length))
