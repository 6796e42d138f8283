"""The examples in examples/: each runs as a script, and what it prints is checked."""
import importlib.util
import pathlib
import re
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


# ---- the examples people run first, at tiny settings ---------------------------------------------
def numbers(pattern, text):
    """The floats captured by `pattern` on each line of `text` that matches it."""
    return [tuple(float(v) for v in m.groups()) for m in re.finditer(pattern, text)]


def test_softmax_regression(device):
    out = run("softmax_regression", "--device", str(device), "--epochs", "1", "--limit", "1000",
              "--lr", "0.003")
    (epoch,) = numbers(r"epoch 1/1: train loss ([\d.]+) \| test accuracy ([\d.]+)% \| "
                       r"([\d.]+) s/epoch", out)
    loss, acc, seconds = epoch
    assert loss < 2.0 and seconds > 0
    assert acc >= 75  # 80.4% on the host and on lavapipe (1,000 digits, one epoch)
    assert f"test accuracy {acc:.2f}%" in out


def test_moons_mlp(device, tmp_path):
    step = r"step (\d+)/\d+: loss ([\d.]+) \(margin ([\d.]+)\) \| train accuracy ([\d.]+)%"
    if device.kind == "host":  # the default run: micrograd's demo reaches 100%
        out = run("moons_mlp", "--device", "host", "--plot", str(tmp_path / "hinge.png"))
        assert "final train accuracy 100.0%" in out
    else:  # lavapipe is slow at many tiny steps: 10 of them, checked against the host's
        args = ("--steps", "10", "--log-every", "3")
        out = run("moons_mlp", "--device", str(device), *args, "--plot",
                  str(tmp_path / "hinge.png"))
        host = run("moons_mlp", "--device", "host", *args, "--plot", str(tmp_path / "h.png"))
        assert np.allclose(numbers(step, out), numbers(step, host), atol=2e-4)
    logged = numbers(step, out)
    assert logged[-1][1] < 0.5 * logged[0][1]  # the loss falls
    assert (tmp_path / "hinge.png").stat().st_size > 10_000


def test_moons_mlp_multi_margin(tmp_path):
    out = run("moons_mlp", "--device", "host", "--loss", "multi-margin", "--steps", "40",
              "--dtype", "bf16", "--plot", str(tmp_path / "mm.png"))
    assert "multi-margin loss, MLP 2-16-16-2" in out and "bfloat16 on host" in out
    (acc,) = numbers(r"final train accuracy ([\d.]+)%", out)
    assert acc[0] >= 85
    assert (tmp_path / "mm.png").stat().st_size > 10_000


def compare_torch(device, dtype, model, tol):
    """Run examples/compare_torch.py for 4 steps; check each step's two losses agree."""
    out = run("compare_torch", "--device", str(device), "--dtype", dtype, "--model", model,
              "--steps", "4", "--batch-size", "8")
    steps = numbers(r"step +\d+: vkgrad ([\d.]+) torch ([\d.]+) diff \S+ rel (\S+)", out)
    assert len(steps) == 4
    for ours, theirs, rel in steps:
        assert ours == pytest.approx(theirs, rel=tol) and rel <= tol
        assert 1.5 < ours < 3  # cross entropy of 10 classes near the start: about log(10)
    assert "OK: vkgrad and torch agree" in out


def test_compare_torch(device):
    compare_torch(device, "f32", "lenet5", 1e-5)


def test_compare_torch_bf16():
    compare_torch("host", "bf16", "mlp", 3e-2)  # host only: lavapipe is slow enough already


def test_compare_torch_detects_divergence(monkeypatch, capsys):
    """A twin whose weights differ from vkgrad's makes the script exit with status 1."""
    module = load("compare_torch")
    twin = module.torch_twin

    def perturbed(model, dtype):
        t = twin(model, dtype)
        with torch.no_grad():
            t[0].weight.mul_(1.5)
        return t

    monkeypatch.setattr(module, "torch_twin", perturbed)
    state = vk.get_rng_state()  # main() seeds both libraries: later tests find them as they were
    with torch.random.fork_rng(), pytest.raises(SystemExit) as exit:
        module.main(["--device", "host", "--model", "mlp", "--steps", "2", "--batch-size", "8"])
    vk.set_rng_state(state)
    assert exit.value.code == 1
    assert "FAIL: the losses diverged" in capsys.readouterr().out


def test_mnist_lenet5_smoke(tmp_path):
    """The main job at tiny settings: its lines, its checkpoint and its learning curves."""
    checkpoint, plot = tmp_path / "ck.safetensors", tmp_path / "curves.png"
    out = run("mnist_lenet5", "--device", "host", "--epochs", "1", "--limit", "200",
              "--checkpoint", str(checkpoint), "--plot", str(plot))
    assert "LeNet5 on embedded MNIST, sgd lr 0.01, batch 32, float32 on host: 200 training " \
           "and 200 test images, 47154 parameters" in out
    (epoch,) = numbers(r"epoch 1/1: train loss ([\d.]+) acc ([\d.]+)% \| test loss ([\d.]+) acc "
                       r"([\d.]+)% \| ([\d.]+) s", out)
    assert 1.5 < epoch[0] < 2.6 and 1.5 < epoch[2] < 2.6  # near log(10) after 7 steps
    assert f"test accuracy {epoch[3]:.2f}%; checkpoint {checkpoint}" in out
    state = vk.load(checkpoint)
    assert state["epoch"] == 1 and set(state["model"]) == set(vk.models.lenet5().state_dict())
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mnist_lenet5_steps_replay_as_eager_steps(device, optimizer):
    """The main job's training step goes through vk.compile on every device: after its first
    steps record, it replays, with the eager step's losses and counts to the last bit."""
    module = load("mnist_lenet5")
    rng = np.random.default_rng(5)
    batches = [(vk.tensor(rng.standard_normal((8, 1, 28, 28)), "float32", device),
                vk.tensor(rng.integers(0, 10, 8), "int32", device)) for _ in range(5)]
    results = []
    for compiled in (True, False):
        vk.manual_seed(0)
        model = vk.models.lenet5(device=device)
        opt = (vk.optim.Adam(model.parameters(), lr=1e-3) if optimizer == "adam"
               else vk.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
        step = module.training_step(model, opt)
        assert isinstance(step, vk.compiler.Compiled)
        if not compiled:
            step = step.fn  # the same step, eagerly
        results.append([(loss.item(), int(correct.item())) for loss, correct in
                        (step(x, y) for x, y in batches)])
        if compiled:
            assert max(c.replays for c in step._captures.values()) >= 2
    assert results[0] == results[1]


@pytest.mark.full_run
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_mnist_lenet5_defaults_reach_95_percent(device, dtype, tmp_path):
    """The main job's promise: with its defaults (10 epochs of SGD at batch 32 on the embedded
    4,000 digits) LeNet5 reaches at least 95% on the 1,000 held-out ones, on every device, in
    f32 and bf16 (about 10 s on the host and 80 s on lavapipe, on 2 cores)."""
    checkpoint, plot = tmp_path / "ck.safetensors", tmp_path / "curves.png"
    out = run("mnist_lenet5", "--device", str(device), "--dtype", dtype,
              "--checkpoint", str(checkpoint), "--plot", str(plot))
    (accuracy,) = numbers(r"test accuracy ([\d.]+)%; checkpoint", out)
    assert accuracy[0] >= 95.0, out
    assert "epoch 10/10" in out
