"""The examples in examples/: each runs as a script, and what it prints is checked."""
import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import vkgrad as vk

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(name, *args):
    result = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_micrograd_demo(device):
    out = run("micrograd_demo", "--device", str(device))
    # micrograd's published values, and torch's in the same run
    assert f"vkgrad ({device}): g = 24.7041, dg/da = 138.8338, dg/db = 645.5773" in out
    assert "torch:          g = 24.7041, dg/da = 138.8338, dg/db = 645.5773" in out


def test_partial_derivatives(device):
    module = load("partial_derivatives")
    for x, y in [(2.0, -1.5), (-0.75, 4.0)]:
        got = module.partials(x, y, device)
        assert got == pytest.approx({"z": 2 * x * x + 3 * y + 1, "dz/dx": 4 * x, "dz/dy": 3.0,
                                     "d2z/dx2": 4.0, "d2z/dxdy": 0.0, "d2z/dydx": 0.0,
                                     "d2z/dy2": 0.0})
    assert "d2z/dx2   = 4" in run("partial_derivatives", "--device", str(device))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_custom_op(device, dtype):
    module = load("custom_op")
    rng = np.random.default_rng(3)
    values = rng.standard_normal((5, 33)) * 3
    x = vk.tensor(values, dtype=dtype, device=device, requires_grad=True)
    y = module.squareplus(x, 2.5)
    g = rng.standard_normal(values.shape)
    (dx,) = vk.grad(y, x, vk.tensor(g, dtype=dtype, device=device), create_graph=True)
    (d2x,) = vk.grad(dx.sum(), x)

    tx = torch.tensor(x.numpy().astype(np.float32), dtype=torch.float64, requires_grad=True)
    ty = (tx + (tx * tx + 2.5).sqrt()) / 2
    (tdx,) = torch.autograd.grad(ty, tx, torch.from_numpy(g), create_graph=True)
    (td2x,) = torch.autograd.grad(tdx.sum(), tx)
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == "bfloat16" else dict(rtol=1e-5, atol=1e-5)
    assert y.dtype is vk.dtype(dtype) and y.device == device
    for got, expected in ((y, ty), (dx, tdx), (d2x, td2x)):
        np.testing.assert_allclose(got.numpy().astype(np.float64), expected.detach().numpy(),
                                   **tol)
    assert "d2y/dx2" in run("custom_op", "--device", str(device), "--dtype", dtype)


def test_kernel_errors(vulkan):
    module = load("custom_op")
    x = vk.ones(4, device=vulkan)
    with pytest.raises(ValueError, match="contiguous"):
        module.SQUAREPLUS.launch(4, 4, x.dtype, vk.ones((4, 2), device=vulkan).T, x, 1.0)
    with pytest.raises(ValueError, match="one Vulkan device"):
        module.SQUAREPLUS.launch(4, 4, x.dtype, vk.ones(4), x, 1.0)
    with pytest.raises(TypeError, match="argument 1"):
        module.SQUAREPLUS.launch(4, 4, "float32", x, x, 1.0)
    with pytest.raises(ValueError, match="does not compile"):
        vk.Kernel("broken", "#version 450\nvoid main() { undefined_function(); }").spirv()
