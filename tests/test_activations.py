"""Activations (vkgrad.nn.functional and their nn modules) against torch, on every device.

Forward: float32 within 4 float32 ulps of torch in float64 on the same inputs (tests/
test_elementwise_accuracy.py bounds the single ops at 3); bf16 within 2 bf16 ulps of torch in
float64 on the bf16 inputs, rounded once (each activation rounds once). Edge values (0, the
kinks, +-inf, NaN, tiny and large magnitudes) are in every input. Backward: the gradient of
sum(g * f(x)) against torch's float64 autograd at the same inputs (finite ones: at +-inf torch's
formulas give NaN where the limit is 0, or the other way), and for float32 the second derivative
too.
"""
import ml_dtypes
import numpy as np
import pytest
import torch

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad import nn

from conftest import bf16_ulp

TF = torch.nn.functional
EDGES = [0.0, -0.0, 1.0, -1.0, 3.0, -3.0, 6.0, -0.5, 0.75, 2.0, 20.0, 10.0, 1e-30, -1e-30, 1e-8,
         -1e-8, 30.0, -30.0, 100.0, -100.0, np.inf, -np.inf, np.nan]

# name: (vkgrad function, torch function, whether it is a sum over an axis, second derivative)
ACTIVATIONS = {
    "leaky_relu": (F.leaky_relu, TF.leaky_relu, False, True),
    "leaky_relu_0.2": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2), False,
                       True),
    "elu": (F.elu, TF.elu, False, True),
    "elu_0.5": (lambda x: F.elu(x, 0.5), lambda x: TF.elu(x, 0.5), False, True),
    "celu": (F.celu, TF.celu, False, True),
    "celu_2": (lambda x: F.celu(x, 2.0), lambda x: TF.celu(x, 2.0), False, True),
    "selu": (F.selu, TF.selu, False, True),
    "relu6": (F.relu6, TF.relu6, False, True),
    "hardtanh": (F.hardtanh, TF.hardtanh, False, True),
    "hardtanh_-0.5_2": (lambda x: F.hardtanh(x, -0.5, 2.0), lambda x: TF.hardtanh(x, -0.5, 2.0),
                        False, True),
    "hardsigmoid": (F.hardsigmoid, TF.hardsigmoid, False, False),  # torch: no second
    "hardswish": (F.hardswish, TF.hardswish, False, True),
    "mish": (F.mish, TF.mish, False, True),
    "softsign": (F.softsign, TF.softsign, False, True),
    "logsigmoid": (F.logsigmoid, TF.logsigmoid, False, True),
    "softplus": (F.softplus, TF.softplus, False, True),
    "softplus_2_1": (lambda x: F.softplus(x, 2.0, 1.0), lambda x: TF.softplus(x, 2.0, 1.0), False,
                     True),
    "softplus_0.5_3": (lambda x: F.softplus(x, 0.5, 3.0), lambda x: TF.softplus(x, 0.5, 3.0),
                       False, True),
    "softmin": (lambda x: F.softmin(x, dim=-1), lambda x: TF.softmin(x, dim=-1), True, True),
    "normalize": (F.normalize, TF.normalize, True, True),
    "normalize_p1": (lambda x: F.normalize(x, p=1.0, dim=-1),
                     lambda x: TF.normalize(x, p=1.0, dim=-1), True, True),
    "normalize_p3": (lambda x: F.normalize(x, p=3.0, dim=0),
                     lambda x: TF.normalize(x, p=3.0, dim=0), True, True),
}


def _inputs(name, finite=False):
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.standard_normal((4, 46)) * 3
    edges = [e for e in EDGES if np.isfinite(e)] if finite else EDGES
    x[0, :len(edges)] = edges
    return x.astype(np.float32)


def _torch64(fn, x):
    return fn(torch.from_numpy(np.asarray(x, np.float64))).numpy()


def _close_ulps(got, expected, dtype, where, sums=False):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    rounded = expected.astype(vk.dtype(dtype).np_dtype).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype == "bfloat16":
            tol = 2 * bf16_ulp(rounded)
        else:
            spacing = np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
            tol = (64 if sums else 4) * spacing + 2.0 ** -126  # subnormal results: absolute
        ok = (np.abs(got - expected) <= tol) | (got == rounded) | (np.isnan(got) & np.isnan(
            expected))
    bad = np.flatnonzero(~ok)[:5]
    assert ok.all(), (f"{where}: got {got.ravel()[bad]}, expected {expected.ravel()[bad]}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_forward_against_torch(name, dtype, device):
    fn, torch_fn, sums, _ = ACTIVATIONS[name]
    x = _inputs(name).astype(vk.dtype(dtype).np_dtype)
    got = fn(vk.tensor(x, device=device))
    assert got.dtype is vk.dtype(dtype) and got.device == device
    _close_ulps(got.numpy(), _torch64(torch_fn, x), dtype, f"{name} {dtype} on {device}", sums)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_backward_against_torch(name, dtype, device):
    fn, torch_fn, _, second = ACTIVATIONS[name]
    x = _inputs(name, finite=True).astype(vk.dtype(dtype).np_dtype)
    g = np.random.default_rng(7).standard_normal(x.shape).astype(vk.dtype(dtype).np_dtype)
    vx = vk.tensor(x, device=device, requires_grad=True)
    (got,) = vk.grad(fn(vx), [vx], vk.tensor(g, device=device), create_graph=second)
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    (expected,) = torch.autograd.grad(torch_fn(tx), tx, torch.from_numpy(g.astype(np.float64)),
                                      create_graph=second)
    assert got.dtype is vk.dtype(dtype)
    tol = 3e-2 if dtype == "bfloat16" else 1e-5
    scale = float(np.abs(expected.detach().numpy()).max())
    np.testing.assert_allclose(got.numpy().astype(np.float64), expected.detach().numpy(),
                               rtol=tol, atol=tol * scale, err_msg=f"{name} {dtype} on {device}")
    if second and dtype == "float32":  # d/dx sum(v * df/dx g): the second derivative
        v = np.random.default_rng(8).standard_normal(x.shape).astype(np.float32)
        total = (got * vk.tensor(v, device=device)).sum()  # no graph: piecewise linear f
        got2 = vk.grad(total, [vx])[0].numpy() if total.requires_grad else np.zeros(x.shape)
        expected2 = torch.autograd.grad((expected * torch.from_numpy(v.astype(np.float64)))
                                        .sum(), tx, allow_unused=True)[0]
        expected2 = np.zeros(x.shape) if expected2 is None else expected2.numpy()
        # away from the kinks (row 0 holds them), where torch's choice of side is a convention
        got2, expected2 = got2[1:].astype(np.float64), expected2[1:]
        scale = float(np.abs(expected2).max())
        np.testing.assert_allclose(got2, expected2, rtol=1e-4, atol=1e-4 * scale,
                                   err_msg=f"second derivative of {name} on {device}")


# Elementwise functions whose gradient at a NaN input is a convention (which side of a kink a NaN
# takes): torch's, from the comparisons its backward formulas make (`x <= 0 ? ... : g`).
NAN_RULES = {
    **{name: ACTIVATIONS[name][:2] for name in ACTIVATIONS if not ACTIVATIONS[name][2]},
    "relu": (F.relu, TF.relu),
    "maximum": (lambda x: vk.maximum(x, vk.flip(x, 0)), lambda x: torch.maximum(x, x.flip(0))),
    "minimum": (lambda x: vk.minimum(x, vk.flip(x, 0)), lambda x: torch.minimum(x, x.flip(0))),
    "clip": (lambda x: vk.clip(x, -0.5, 0.5), lambda x: x.clamp(-0.5, 0.5)),
}


@pytest.mark.parametrize("name", list(NAN_RULES))
def test_backward_at_nan_against_torch(name, device):
    """The gradient at NaN inputs (both signs; for the two-operand ones against a NaN or a number)
    is torch's: NaN where torch's is NaN, else the same value, g or g times a constant (float32
    torch on the same inputs and upstream gradient; a rounding apart at most). The finite inputs
    beside them are there to be paired with; test_backward_against_torch checks their values."""
    fn, torch_fn = NAN_RULES[name]
    x = np.array([np.nan, -np.nan, 0.0, 1.0, -1.0, np.nan, 2.0, -np.nan], np.float32)
    g = np.linspace(0.5, 2.0, x.size, dtype=np.float32)
    vx = vk.tensor(x, device=device, requires_grad=True)
    (got,) = vk.grad(fn(vx), [vx], vk.tensor(g, device=device))
    tx = torch.from_numpy(x).requires_grad_()
    (expected,) = torch.autograd.grad(torch_fn(tx), tx, torch.from_numpy(g))
    got, expected = got.numpy(), expected.numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"{name}: {got}")
    at_nan = np.isnan(x)
    np.testing.assert_allclose(got[at_nan], expected[at_nan], rtol=2 ** -23,
                               err_msg=f"{name} on {device}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("num_parameters", [1, 3])
def test_prelu_against_torch(num_parameters, dtype, device):
    """nn.PReLU: torch's parameter name and init, so its state dict loads; forward and both
    gradients (the weight's summed over every axis but the channels)."""
    torch.manual_seed(0)
    ref = torch.nn.PReLU(num_parameters, init=0.1).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([0.1, -0.5, 2.0][:num_parameters]))
    model = nn.PReLU(num_parameters, device=device, dtype=dtype)
    assert list(model.state_dict()) == ["weight"] and model.weight.shape == (num_parameters,)
    np.testing.assert_array_equal(model.weight.numpy().astype(np.float32), 0.25)
    model.load_state_dict({k: v.float().numpy() for k, v in ref.state_dict().items()})
    x = _inputs("prelu", finite=True)[:, :45].reshape(4, 3, 5, 3).astype(
        vk.dtype(dtype).np_dtype)
    g = np.random.default_rng(9).standard_normal(x.shape).astype(vk.dtype(dtype).np_dtype)
    vx = vk.tensor(x, device=device, requires_grad=True)
    out = model(vx)
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    expected = ref(tx)
    _close_ulps(out.numpy(), expected.detach().numpy(), dtype, f"prelu {dtype} on {device}")
    gx, gw = vk.grad(out, [vx, model.weight], vk.tensor(g, device=device))
    tgx, tgw = torch.autograd.grad(expected, [tx, ref.weight], torch.from_numpy(
        g.astype(np.float64)))
    tol = 3e-2 if dtype == "bfloat16" else 1e-5
    for a, b in [(gx, tgx), (gw, tgw)]:
        assert a.dtype is vk.dtype(dtype)
        b = b.numpy()
        np.testing.assert_allclose(a.numpy().astype(np.float64), b, rtol=tol,
                                   atol=tol * float(np.abs(b).max()))


MODULES = [
    (nn.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)), (nn.ELU(0.5), torch.nn.ELU(0.5)),
    (nn.CELU(2.0), torch.nn.CELU(2.0)), (nn.SELU(), torch.nn.SELU()),
    (nn.ReLU6(), torch.nn.ReLU6()), (nn.Hardtanh(-2.0, 0.5), torch.nn.Hardtanh(-2.0, 0.5)),
    (nn.Hardsigmoid(), torch.nn.Hardsigmoid()), (nn.Hardswish(), torch.nn.Hardswish()),
    (nn.Mish(), torch.nn.Mish()), (nn.Softsign(), torch.nn.Softsign()),
    (nn.LogSigmoid(), torch.nn.LogSigmoid()), (nn.Softmin(0), torch.nn.Softmin(0)),
    (nn.Softplus(2.0, 1.0), torch.nn.Softplus(2.0, 1.0)),
]


@pytest.mark.parametrize("module,torch_module", MODULES, ids=[type(m).__name__ for m, _ in MODULES])
def test_modules_against_torch(module, torch_module, device):
    x = _inputs(type(module).__name__)
    got = module(vk.tensor(x, device=device)).numpy()
    _close_ulps(got, _torch64(torch_module, x), "float32", f"{module!r} on {device}",
                isinstance(module, nn.Softmin))


def test_bf16_rounds_once(device):
    """A parametrised activation is one op: its bf16 result is the float32 result rounded once
    (softplus's threshold, elu's alpha and celu's 1 / alpha enter at float32 precision)."""
    x = _inputs("bf16").astype(ml_dtypes.bfloat16)
    for fn in (lambda t: F.softplus(t, 2.0, 1.0), lambda t: F.celu(t, 2.0),
               lambda t: F.leaky_relu(t, 0.2), F.hardswish, F.mish):
        wide = fn(vk.tensor(x.astype(np.float32), device=device)).numpy()
        np.testing.assert_array_equal(fn(vk.tensor(x, device=device)).numpy(),
                                      wide.astype(ml_dtypes.bfloat16))


def test_bad_parameters():
    x = vk.tensor([1.0, -1.0])
    with pytest.raises(ValueError, match="alpha must not be 0"):
        F.celu(x, 0.0)
    with pytest.raises(ValueError, match="greater than max_val"):
        F.hardtanh(x, 1.0, -1.0)
    with pytest.raises(TypeError, match="negative_slope must be a number"):
        F.leaky_relu(x, vk.tensor(0.1))
    with pytest.raises(ValueError, match="3 weights for input of shape"):
        F.prelu(vk.ones((2, 4)), vk.ones(3))
    with pytest.raises(ValueError, match="p must be positive"):
        F.normalize(x, p=0, dim=0)
