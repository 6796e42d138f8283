"""The backward rule of every differentiable op in the registry, from its OpTest cases
(tests/opdb.py).

- test_finite_differences: in float64 on the host, the gradient of sum(g * op(x)) against central
  differences (every element of small inputs, random elements of large ones). This checks the
  rule's mathematics.
- test_gradient_on_device: on every device, f32 and bf16, contiguous and strided inputs, the
  gradient against the float64 host gradient of the same (dtype-rounded) inputs.
- test_gradient_against_torch: the same gradients against torch's autograd, for the ops that have
  a direct torch twin (TORCH below).
"""
import numpy as np
import pytest
import torch

import vkgrad as vk
from vkgrad.ops import OPS

from conftest import DEVICES, cast_input, to_tensor
from opdb import op_tests

FLOATS = ("float32", "bfloat16")
CASES = [(name, i, t) for name, op in sorted(OPS.items()) if op.vjp is not None
         for i, t in enumerate(op_tests(name)) if t.grad]
IDS = [f"{n}-{i}" for n, i, _ in CASES]


def _cases(name, index, spec):
    rng = np.random.default_rng(sum(map(ord, name)) + 7 * index)
    return spec.cases(rng), np.random.default_rng(99 + index)


def _is_float(x):
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def _grads(spec, inputs, params, device, strided, upstream_rng):
    """(output as numpy, [gradient as float64 numpy or None per input]) of sum(g * op(inputs))."""
    tensors = [to_tensor(x, device, strided) for x in inputs]
    for t, x in zip(tensors, inputs):
        if _is_float(x) or isinstance(x, np.ndarray) and x.dtype.kind == "V":
            t.requires_grad_()
    out = spec.call(*tensors, **params)
    g_np = upstream_rng.standard_normal(out.shape)
    g = vk.tensor(g_np, dtype=out.dtype, device=device)
    wanted = [t for t in tensors if isinstance(t, vk.Tensor) and t.requires_grad]
    got = iter(vk.grad(out, wanted, g, allow_unused=True))
    grads = [next(got) if isinstance(t, vk.Tensor) and t.requires_grad else None for t in tensors]
    for t, d in zip(tensors, grads):
        if d is not None:
            assert d.shape == t.shape and d.dtype is t.dtype and d.device == device
    return g_np, [None if d is None else d.numpy().astype(np.float64) for d in grads]


@pytest.mark.parametrize("name,index,spec", CASES, ids=IDS)
def test_finite_differences(name, index, spec):
    cases, upstream = _cases(name, index, spec)
    for inputs, params in cases:
        inputs = [cast_input(x, "float64") for x in inputs]
        g, grads = _grads(spec, inputs, params, vk.device("host"), False, upstream)

        def loss(xs):
            with vk.no_grad():
                out = spec.call(*[vk.tensor(x) if isinstance(x, np.ndarray) else x for x in xs],
                                **params)
            return float((out.numpy().astype(np.float64) * g).sum())

        direction_rng = np.random.default_rng(5)
        for i, (x, d) in enumerate(zip(inputs, grads)):
            if d is None or x.size == 0:
                continue
            # every element of small inputs, 8 random ones of large inputs (one element at a
            # time, so that piecewise-constant ops are rarely caught across a jump)
            picks = range(x.size) if x.size <= 40 else direction_rng.choice(x.size, 8, False)
            directions = [np.eye(1, x.size, k).reshape(x.shape) for k in picks]
            for v in directions:
                h = 1e-6
                plus, minus = list(inputs), list(inputs)
                plus[i], minus[i] = np.asarray(x + h * v), np.asarray(x - h * v)
                numeric = (loss(plus) - loss(minus)) / (2 * h)
                analytic = float((d * v).sum())
                assert abs(numeric - analytic) <= 1e-5 * (1 + abs(numeric)), \
                    f"{name} {params} input {i} shape {x.shape}: {analytic} vs FD {numeric}"


def _close(got, expected, dtype, where):
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    tol = 3e-2 if dtype == "bfloat16" else 1e-4
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * scale, err_msg=where)


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,index,spec", CASES, ids=IDS)
@pytest.mark.parametrize("device", [pytest.param(d, id=str(d), marks=[pytest.mark.vulkan]
                                                 if d.kind == "vulkan" else []) for d in DEVICES])
def test_gradient_on_device(name, index, spec, dtype, device, strided):
    if dtype not in spec.dtypes:
        pytest.skip(f"{name} is not tested in {dtype}")
    cases, upstream = _cases(name, index, spec)
    for inputs, params in cases:
        inputs = [cast_input(x, dtype) for x in inputs]
        state = upstream.bit_generator.state
        _, got = _grads(spec, inputs, params, device, strided, upstream)
        upstream.bit_generator.state = state  # the same upstream gradient for the reference
        wide = [x.astype(np.float64) if isinstance(x, np.ndarray) and x.dtype.kind in "fV"
                else x for x in inputs]
        _, expected = _grads(spec, wide, params, vk.device("host"), False, upstream)
        for i, (a, b) in enumerate(zip(got, expected)):
            assert (a is None) == (b is None)
            if a is not None:
                _close(a, b, dtype, f"{name} {params} input {i} on {device}")


def _t_reduce(fn):
    def call(x, axis, keepdims):
        dims = tuple(range(x.ndim)) if axis is None else axis
        return fn(x, dim=dims, keepdim=keepdims) if dims != () else x
    return call


def _tensors(*values):
    """Python scalars as 0-d tensors of the other operands' dtype (torch wants all or none)."""
    like = next(v for v in values if isinstance(v, torch.Tensor))
    return [v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=like.dtype) for v in values]


# op name -> torch twin of OpTest.call (by index of the op's test), for test_gradient_against_torch
F = torch.nn.functional
TORCH = {
    **{name: {0: getattr(torch, name)} for name in (
        "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "reciprocal", "square", "sin",
        "cos", "tanh", "sigmoid", "relu", "erf", "sign", "floor", "ceil", "round", "neg")},
    # (mod is left to the finite differences: torch has no gradient of remainder for its divisor)
    "maximum": {0: lambda a, b: torch.maximum(*_tensors(a, b))},
    "minimum": {0: lambda a, b: torch.minimum(*_tensors(a, b))},
    "gelu": {0: F.gelu}, "softplus": {0: F.softplus}, "silu": {0: F.silu},
    "gelu_tanh": {0: lambda x: F.gelu(x, approximate="tanh")},
    "add": {0: lambda a, b: a + b}, "sub": {0: lambda a, b: a - b},
    "mul": {0: lambda a, b: a * b}, "div": {0: lambda a, b: a / b},
    "pow": {0: lambda a, b: a ** b},
    "where": {0: lambda c, a, b: torch.where(c, a, b)},
    "clip": {0: lambda x, lo, hi: torch.clamp(*_tensors(x, lo, hi))},
    "sum": {0: _t_reduce(torch.sum)}, "mean": {0: _t_reduce(torch.mean)},
    "max": {0: _t_reduce(torch.amax)}, "min": {0: _t_reduce(torch.amin)},
    "matmul": {0: torch.matmul, 3: lambda a, b: torch.tensordot(a, b, dims=(
        [a.ndim - 1], [max(b.ndim - 2, 0)])) if a.ndim and b.ndim else a * b,
        4: lambda a, b: torch.outer(a.reshape(-1), b.reshape(-1))},
    "cumsum": {0: lambda x, axis: torch.cumsum(x.reshape(-1) if axis is None else x,
                                               0 if axis is None else axis)},
    "flip": {0: lambda x, axis: torch.flip(x, tuple(range(x.ndim)) if axis is None else
                                           ((axis,) if isinstance(axis, int) else axis))},
    "reshape": {0: lambda a, shape: a.reshape(shape)},
    "permute": {0: lambda a, axes: a.permute(axes)},
}
TORCH_CASES = [(n, i, t) for n, i, t in CASES if i in TORCH.get(n, {})]


def _torch_in(x, dtype):
    if not isinstance(x, np.ndarray):
        return x
    t = torch.from_numpy(np.asarray(x, np.float32) if x.dtype.kind in "fV" else x)
    return t.to(torch.bfloat16 if dtype == "bfloat16" else torch.float32).requires_grad_() \
        if x.dtype.kind in "fV" else t


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,index,spec", TORCH_CASES, ids=[f"{n}-{i}" for n, i, _ in TORCH_CASES])
@pytest.mark.parametrize("device", [pytest.param(d, id=str(d), marks=[pytest.mark.vulkan]
                                                 if d.kind == "vulkan" else []) for d in DEVICES])
def test_gradient_against_torch(name, index, spec, dtype, device):
    cases, upstream = _cases(name, index, spec)
    for inputs, params in cases:
        inputs = [cast_input(x, dtype) for x in inputs]
        if any(isinstance(x, np.ndarray) and x.size == 0 for x in inputs):
            continue  # torch's reductions and matmul treat some empty shapes differently
        g, got = _grads(spec, inputs, params, device, False, upstream)
        tin = [_torch_in(x, dtype) for x in inputs]
        out = TORCH[name][index](*tin, **params)
        out.backward(torch.from_numpy(g).to(out.dtype))
        for i, (a, t) in enumerate(zip(got, tin)):
            if a is not None:
                expected = t.grad.double().numpy() if t.grad is not None else np.zeros(a.shape)
                _close(a, expected, dtype, f"{name} {params} input {i} on {device} vs torch")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("device", [pytest.param(d, id=str(d), marks=[pytest.mark.vulkan]
                                                 if d.kind == "vulkan" else []) for d in DEVICES])
def test_pow_gradient_at_zero(device, dtype):
    """x ** y at x == 0: torch's gradients (0 where x^(y-1) or log 0 meets a zero factor, and the
    infinities where it does not), for tensor and scalar bases and exponents."""
    x_np = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.5], np.float32)
    y_np = np.array([0.0, 1.0, 2.5, 0.5, -1.0, -1.5, 3.0], np.float32)
    tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    for base, exponent in [("tensor", "tensor"), ("scalar", "tensor"), ("tensor", "scalar")]:
        cases = [(x_np, y_np)] if base == exponent else (
            [(0.0, y_np)] if base == "scalar" else [(x_np, y) for y in (0.0, 1.0, 2.5, -1.0)])
        for x, y in cases:
            vx, vy = [vk.tensor(v, dtype=dtype, device=device, requires_grad=True)
                      if isinstance(v, np.ndarray) else v for v in (x, y)]
            tx, ty = [torch.tensor(v, dtype=tdtype, requires_grad=True)
                      if isinstance(v, np.ndarray) else v for v in (x, y)]
            got = vk.grad((vx ** vy).sum(), [v for v in (vx, vy) if isinstance(v, vk.Tensor)])
            (tx ** ty).sum().backward()
            expected = [t.grad.float().numpy() for t in (tx, ty) if isinstance(t, torch.Tensor)]
            for a, b in zip(got, expected):
                np.testing.assert_allclose(a.numpy().astype(np.float32), b, rtol=1e-2,
                                           err_msg=f"{base} ** {exponent}: x={x}, y={y}")
