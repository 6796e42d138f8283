"""Checkpoints of whole training runs: modules, optimizers, schedulers, data order and random
state through vk.save / vk.load files.

- exact resume: N steps, save, a NEW process loads and trains M more: bit for bit the run that
  was never interrupted (SGD with momentum, Adam, AdamW; a scheduler; dropout; f32 and bf16;
  host and Vulkan); the same for the main job, examples/mnist_lenet5.py --resume;
- portability: a checkpoint moves between host and Vulkan and between f32 and bf16, and the
  training continued after the move stays close to the run that did not move;
- PyTorch interop: state-dict files load into the same torch architecture and back with the same
  outputs; optimizer and scheduler state continue in lockstep with torch.optim across a file;
- bad checkpoints: a missing, extra, misshapen or wrongly typed entry is an error naming it, and
  the model and optimizer are left exactly as they were.
The job itself (models, data, configurations) is tests/checkpoint_job.py, so that the resuming
process runs the very same code.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import vkgrad as vk
from checkpoint_job import CONFIGS, Job

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
HOST = vk.device("host")
N, M = 3, 4  # steps before and after the checkpoint: 7 crosses an epoch of 5 batches


@pytest.fixture(autouse=True)
def keep_rng_state():
    """The jobs reseed vkgrad's default generator; other tests find it as they left it."""
    state = vk.get_rng_state()
    yield
    vk.set_rng_state(state)


def flatten(obj, where="checkpoint"):
    """(place, leaf) of every leaf of a checkpoint, in order."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flatten(v, f"{where}[{i}]")
    else:
        yield where, obj


def assert_bit_equal(got, want):
    got, want = list(flatten(got)), list(flatten(want))
    assert [w for w, _ in got] == [w for w, _ in want]
    for (where, a), (_, b) in zip(got, want):
        if isinstance(b, vk.Tensor):
            assert (a.dtype, a.shape) == (b.dtype, b.shape), where
            assert a.numpy().tobytes() == b.numpy().tobytes(), f"{where} differs"
        else:
            assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def snapshot(module):
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}


def run_job(*args):
    result = subprocess.run([sys.executable, str(TESTS / "checkpoint_job.py"), *map(str, args)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr


# ---- exact resume in a new process ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_resume_in_a_new_process_is_bit_exact(device, config, dtype, tmp_path):
    whole = Job(config, device, dtype)
    whole.train(N + M)
    expected = whole.checkpoint()  # now: the jobs share vkgrad's default generator
    interrupted = Job(config, device, dtype)
    interrupted.train(N)
    at_n = interrupted.checkpoint()
    vk.save(at_n, tmp_path / "n.safetensors")
    assert at_n["loader"]["batch"] == N  # the checkpoint falls mid-epoch

    run_job(config, device, dtype, tmp_path / "n.safetensors", M, tmp_path / "resumed.safetensors")
    resumed = vk.load(tmp_path / "resumed.safetensors", device=device)
    assert_bit_equal(resumed, expected)  # model, optimizer, scheduler, loader, rng
    assert not np.array_equal(resumed["model"]["0.weight"].numpy(),
                              at_n["model"]["0.weight"].numpy())  # M steps did train


def test_main_job_resumes_bit_exact(device, tmp_path):
    """examples/mnist_lenet5.py: --epochs 2, then --epochs 3 --resume in a second process, ends
    with the checkpoint of one --epochs 3 run, bit for bit (on lavapipe, on fewer images)."""
    size = ["--limit", "300"] if device.kind == "host" else ["--limit", "32", "--batch-size", "16"]
    # two runs at once on 2 cores: OpenBLAS threads spinning for a core made them 5x slower
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")

    def main_job(name, *args):
        return subprocess.Popen(
            [sys.executable, str(REPO / "examples" / "mnist_lenet5.py"), "--device", str(device),
             *size, "--checkpoint", str(tmp_path / f"{name}.safetensors"),
             "--plot", str(tmp_path / f"{name}.png"), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)

    def finish(process):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        return out

    whole = main_job("whole", "--epochs", "3")  # meanwhile, on the other core:
    try:
        finish(main_job("interrupted", "--epochs", "2"))
        after_two = vk.load(tmp_path / "interrupted.safetensors", device=HOST)
        assert "resumed from" in finish(main_job("interrupted", "--epochs", "3", "--resume"))
    finally:
        finish(whole)
    resumed, whole = (vk.load(tmp_path / f"{name}.safetensors", device=HOST)
                      for name in ("interrupted", "whole"))
    for part in ("model", "optimizer", "loader", "rng", "epoch"):
        assert_bit_equal(resumed[part], whole[part])
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed["history"][key] == whole["history"][key]
    assert resumed["epoch"] == 3 and after_two["epoch"] == 2
    assert not np.array_equal(resumed["model"]["0.weight"].numpy(),
                              after_two["model"]["0.weight"].numpy())


SCHEDULERS = {
    "StepLR": dict(step_size=3, gamma=0.5),
    "MultiStepLR": dict(milestones=[2, 6, 6, 9], gamma=0.3),
    "ExponentialLR": dict(gamma=0.9),
    "CosineAnnealingLR": dict(T_max=4, eta_min=0.01),
    "LinearLR": dict(start_factor=0.2, total_iters=6),
    "LambdaLR": dict(lr_lambda=lambda e: 0.9 ** e),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_resumes_through_a_file(name, tmp_path):
    """The scheduler's state (Counters, lists of floats) survives vk.save: the resumed one
    gives the same lrs, step by step and by closed form (step(epoch))."""
    def scheduler():
        opt = vk.optim.SGD([vk.nn.Parameter(vk.zeros(1))], lr=0.1)
        return getattr(vk.optim.lr_scheduler, name)(opt, **SCHEDULERS[name])

    whole = scheduler()
    for _ in range(5):
        whole.step()
    vk.save({"optimizer": whole.optimizer.state_dict(), "scheduler": whole.state_dict()},
            tmp_path / "s.safetensors")
    checkpoint = vk.load(tmp_path / "s.safetensors")
    resumed = scheduler()
    resumed.optimizer.load_state_dict(checkpoint["optimizer"])
    resumed.load_state_dict(checkpoint["scheduler"])
    for epoch in [None] * 8 + [3, 7, 12]:
        whole.step(epoch)
        resumed.step(epoch)
        assert resumed.get_last_lr() == whole.get_last_lr()
        assert resumed.optimizer.param_groups[0]["lr"] == whole.optimizer.param_groups[0]["lr"]


# ---- portability -------------------------------------------------------------------------------
def move(config, saved, loaded, tmp_path, load_dtype=None):
    """Train N steps on `saved` = (device, dtype) and save; load into a fresh job on `loaded`.
    Returns (the job that moved, the one that did not, the checkpoint as saved)."""
    stay = Job(config, *saved)
    stay.train(N)
    vk.save(stay.checkpoint(), tmp_path / "c.safetensors")
    checkpoint = vk.load(tmp_path / "c.safetensors", device=HOST)
    moved = Job(config, *loaded, seed=1)
    moved.restore(vk.load(tmp_path / "c.safetensors", device=loaded[0], dtype=load_dtype))
    assert all(p.device == loaded[0] and p.dtype is vk.dtype(loaded[1])
               for p in moved.model.parameters())
    assert all(v.device == loaded[0] and v.dtype is vk.float32
               for s in moved.optimizer.state.values() for v in s.values()
               if isinstance(v, vk.Tensor))
    return moved, stay, checkpoint


def train_both_and_compare(moved, stay, **tol):
    """M more steps of both jobs, with the same dropout masks (they share vkgrad's default
    generator, which the moved one restored); their parameters agree to `tol`."""
    resume_at = vk.get_rng_state()
    stay.train(M)
    vk.set_rng_state(resume_at)
    moved.train(M)
    for (name, a), b in zip(moved.model.state_dict().items(), stay.model.state_dict().values()):
        np.testing.assert_allclose(a.numpy().astype(np.float64), b.numpy().astype(np.float64),
                                   err_msg=name, **tol)


@pytest.mark.parametrize("config", ["sgd-momentum", "adam"])
@pytest.mark.parametrize("direction", ["vulkan-to-host", "host-to-vulkan"])
def test_a_checkpoint_moves_between_devices(vulkan, direction, config, tmp_path):
    saved, loaded = (vulkan, HOST) if direction == "vulkan-to-host" else (HOST, vulkan)
    moved, stay, checkpoint = move(config, (saved, "float32"), (loaded, "float32"), tmp_path)
    assert_bit_equal(moved.checkpoint(), checkpoint)  # every value arrived unchanged
    # measured: 3e-8 apart (the devices round differently, not much)
    train_both_and_compare(moved, stay, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", ["sgd-momentum", "adamw"])
@pytest.mark.parametrize("saved, loaded", [("float32", "bfloat16"), ("bfloat16", "float32")])
@pytest.mark.parametrize("how", ["load_state_dict casts", "load(dtype=)"])
def test_a_checkpoint_changes_dtype(device, config, saved, loaded, how, tmp_path):
    """A model + optimizer checkpoint saved in one dtype continues in the other, loaded as it
    is (load_state_dict rounds the parameters to the model's dtype) or cast by load(dtype=)."""
    load_dtype = loaded if how == "load(dtype=)" else None
    moved, stay, checkpoint = move(config, (device, saved), (device, loaded), tmp_path,
                                   load_dtype)
    for name, t in moved.model.state_dict().items():  # rounded to nearest even, or widened
        want = checkpoint["model"][name].numpy().astype(vk.dtype(loaded).np_dtype)
        assert t.numpy().tobytes() == want.tobytes(), name
    # measured: 2e-3 to 7e-3 apart; 3e-2 to 4e-2 had the optimizer's state not come along
    train_both_and_compare(moved, stay, rtol=0, atol=1.2e-2)


# ---- PyTorch interop ---------------------------------------------------------------------------
def bn_net(nn):
    """A conv net with both batch norms, built from vkgrad.nn or torch.nn: the same layers
    give the same state-dict keys. No bias before a batch norm: its gradient would be rounding
    noise, which Adam amplifies into full steps, so two libraries would part ways."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 8, bias=False),
                         nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def torch_lenet5():
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 128),
                         nn.ReLU(), nn.Linear(128, 84), nn.ReLU(), nn.Linear(84, 10))


ARCHITECTURES = {  # name: (vkgrad model, torch model, image size)
    "lenet5": (vk.models.lenet5, torch_lenet5, 28),
    "bn-net": (lambda: bn_net(vk.nn), lambda: bn_net(torch.nn), 8),
}


def images(size, seed, dtype="float32"):
    x = np.random.default_rng(seed).standard_normal((5, 1, size, size)).astype(np.float32)
    return x.astype(vk.dtype(dtype).np_dtype).astype(np.float32)  # representable in dtype


def train_a_little(model, size, lib, device=None, dtype="float32"):
    """Two SGD steps in training mode: batch norm's running statistics and counters move."""
    optimizer = (torch.optim if lib == "torch" else vk.optim).SGD(model.parameters(), lr=0.1,
                                                                  momentum=0.9)
    model.train()
    for i in range(2):
        optimizer.zero_grad()
        x = images(size, seed=10 + i)
        x = torch.from_numpy(x) if lib == "torch" else vk.tensor(x, device=device, dtype=dtype)
        (model(x) - 0.5).square().mean().backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_a_vkgrad_state_dict_file_loads_into_torch(device, arch, dtype, tmp_path):
    make_vk, make_torch, size = ARCHITECTURES[arch]
    vk.manual_seed(0)
    model = make_vk().to(device, dtype)
    train_a_little(model, size, "vkgrad", device, dtype)
    vk.save(model.state_dict(), tmp_path / "model.safetensors")

    loaded = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert list(loaded) == list(model.state_dict())
    twin = make_torch()
    twin.load_state_dict(loaded)  # strict: every key matches
    twin.eval()
    for name, t in twin.state_dict().items():
        want = model.state_dict()[name].numpy()
        assert (t.float().numpy() == want.astype(np.float32)).all(), name
    x = images(size, seed=99, dtype=dtype)
    got = model(vk.tensor(x, device=device, dtype=dtype)).numpy().astype(np.float32)
    want = twin(torch.from_numpy(x)).detach().numpy()  # float32 from the same values
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=3e-2, atol=3e-2)
    np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_a_torch_state_dict_file_loads_into_vkgrad(device, arch, tmp_path):
    make_vk, make_torch, size = ARCHITECTURES[arch]
    torch.manual_seed(0)
    twin = make_torch()
    train_a_little(twin, size, "torch")
    safetensors.torch.save_file(twin.state_dict(), tmp_path / "torch.safetensors")

    vk.manual_seed(1)
    model = make_vk().to(device)
    model.load_state_dict(vk.load(tmp_path / "torch.safetensors", device=device))
    model.eval()
    for name, t in twin.state_dict().items():
        assert (model.state_dict()[name].numpy() == t.numpy()).all(), name
    x = images(size, seed=99)
    np.testing.assert_allclose(model(vk.tensor(x, device=device)).numpy(),
                               twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


LOCKSTEP = {  # name: (optimizer, its arguments, (scheduler, its arguments))
    "sgd": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
            ("StepLR", dict(step_size=2, gamma=0.5))),
    "adamw": ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True),
              ("CosineAnnealingLR", dict(T_max=4, eta_min=1e-3))),
}


class Run:
    """bn_net with an optimizer and a scheduler, in vkgrad (on `device`) or in torch."""

    def __init__(self, lib, config, device=None):
        optimizer, kwargs, (scheduler, sched_kwargs) = LOCKSTEP[config]
        self.lib, self.device = lib, device
        (torch if lib == "torch" else vk).manual_seed(3)
        if lib == "torch":
            self.model, optim = bn_net(torch.nn), torch.optim
        else:
            self.model, optim = bn_net(vk.nn).to(device), vk.optim
        self.optimizer = getattr(optim, optimizer)(self.model.parameters(), **kwargs)
        self.scheduler = getattr(optim.lr_scheduler, scheduler)(self.optimizer, **sched_kwargs)

    def step(self, i):
        x = images(8, seed=20 + i)
        x = torch.from_numpy(x) if self.lib == "torch" else vk.tensor(x, device=self.device)
        self.optimizer.zero_grad()
        (self.model(x) - 0.5).square().mean().backward()
        self.optimizer.step()
        self.scheduler.step()

    def checkpoint(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def restore(self, checkpoint):
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])

    def values(self):
        return {k: v.detach().numpy().astype(np.float64) if self.lib == "torch" else
                v.numpy().astype(np.float64) for k, v in self.model.state_dict().items()}


def convert(obj, to):
    """A checkpoint with its tensors converted to torch ("torch") or to vkgrad."""
    if isinstance(obj, dict):
        return {k: convert(v, to) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(convert(v, to) for v in obj)
    if isinstance(obj, vk.Tensor) and to == "torch":
        return torch.from_numpy(obj.numpy().copy())
    if isinstance(obj, torch.Tensor) and to == "vkgrad":
        return vk.tensor(obj.detach().numpy())
    return obj


@pytest.mark.parametrize("direction", ["vkgrad-to-torch", "torch-to-vkgrad"])
@pytest.mark.parametrize("config", list(LOCKSTEP))
def test_optimizer_and_scheduler_continue_in_lockstep_with_torch(device, config, direction,
                                                                  tmp_path):
    """A checkpoint (model, optimizer, scheduler) written by one library's run goes through a
    vk.save file into the other library's, and both runs go on in lockstep."""
    first = Run("vkgrad", config, device) if direction == "vkgrad-to-torch" else \
        Run("torch", config)
    for i in range(N):
        first.step(i)
    vk.save(convert(first.checkpoint(), "vkgrad"), tmp_path / "c.safetensors")
    if first.lib == "vkgrad":
        second = Run("torch", config)
        second.restore(convert(vk.load(tmp_path / "c.safetensors", device=HOST), "torch"))
    else:
        second = Run("vkgrad", config, device)
        second.restore(vk.load(tmp_path / "c.safetensors", device=device))
    lrs = [g["lr"] for g in first.optimizer.param_groups]
    assert [g["lr"] for g in second.optimizer.param_groups] == lrs
    for i in range(N, N + M):
        first.step(i)
        second.step(i)
        a, b = first.values(), second.values()
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} after step {i}")
    assert second.scheduler.get_last_lr() == pytest.approx(first.scheduler.get_last_lr())


# ---- bad checkpoints -----------------------------------------------------------------------------
def _set(key, value):
    return lambda sd: sd.update({key: value(sd)})


BAD_MODEL = {  # the conv job's model: 0.weight, 1.{weight, bias, running_*, ...}, 6.{weight, bias}
    "missing key": (lambda sd: sd.pop("1.running_var"), r'Missing key\(s\).*"1\.running_var"'),
    "extra key": (_set("7.weight", lambda sd: vk.ones(3)), r'Unexpected key\(s\).*"7\.weight"'),
    "shape": (_set("6.weight", lambda sd: sd["6.weight"].T.contiguous()),
              r"size mismatch for 6\.weight: .*\(36, 3\).*\(3, 36\)"),
    "float into an int buffer": (_set("1.num_batches_tracked", lambda sd: vk.tensor(2.0)),
                                 r"dtype mismatch for 1\.num_batches_tracked.*float32"),
    "int into a float parameter": (_set("6.bias", lambda sd: vk.tensor([1, 2, 3])),
                                   r"dtype mismatch for 6\.bias.*int32"),
}


def trained_pair(device, tmp_path, edit):
    """A checkpoint of the conv job edited by `edit` and saved; a job trained otherwise."""
    source = Job("adam", device, "float32")
    source.train(2)
    checkpoint = {"model": dict(source.model.state_dict()),
                  "optimizer": source.optimizer.state_dict()}
    edit(checkpoint)
    vk.save(checkpoint, tmp_path / "bad.safetensors")
    target = Job("adam", device, "float32", seed=1)
    target.train(1)
    return vk.load(tmp_path / "bad.safetensors", device=device), target


@pytest.mark.parametrize("case", list(BAD_MODEL))
def test_a_bad_model_checkpoint_names_the_key_and_changes_nothing(device, case, tmp_path):
    edit, message = BAD_MODEL[case]
    loaded, target = trained_pair(device, tmp_path, lambda c: edit(c["model"]))
    before = snapshot(target.model)
    with pytest.raises(RuntimeError, match=message):
        target.model.load_state_dict(loaded["model"])
    after = snapshot(target.model)  # the keys that fit were not copied either
    assert all(after[k].tobytes() == before[k].tobytes() for k in before)


def _state(index, name, value):
    return lambda sd: sd["state"][index].update({name: value(sd["state"][index][name])})


BAD_OPTIMIZER = {  # Adam over the conv job's 5 parameters; the last one is index 4
    "state shape": (_state(4, "exp_avg", lambda t: vk.zeros((1, 3))), ValueError,
                    r"state 'exp_avg' of parameter 4 has shape \(1, 3\).*\(3,\)"),
    "state dtype": (_state(4, "max_exp_avg_sq", lambda t: vk.zeros((3,), dtype="int32")),
                    TypeError, r"state 'max_exp_avg_sq' of parameter 4 is int32"),
    "unknown parameter": (lambda sd: sd["state"].update({5: sd["state"][4]}), ValueError,
                          r"state for parameter 5, which no parameter group lists"),
    "parameter count": (lambda sd: sd["param_groups"][0]["params"].pop(), ValueError,
                        r"group 0 .* has 4 parameters, the optimizer's has 5"),
    "group count": (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])),
                    ValueError, r"2 parameter groups, the optimizer has 1"),
    "hyper-parameter": (lambda sd: sd["param_groups"][0].update(lr=-1.0), ValueError,
                        r"invalid lr -1\.0"),
    "missing key": (lambda sd: sd.pop("param_groups"), KeyError, "param_groups"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIMIZER))
def test_a_bad_optimizer_checkpoint_names_the_entry_and_changes_nothing(device, case, tmp_path):
    edit, error, message = BAD_OPTIMIZER[case]
    loaded, target = trained_pair(device, tmp_path, lambda c: edit(c["optimizer"]))
    opt = target.optimizer
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    params = [list(g["params"]) for g in opt.param_groups]
    state = {p: dict(s) for p, s in opt.state.items()}
    values = [(p, k, v.numpy().copy()) for p, s in state.items() for k, v in s.items()
              if isinstance(v, vk.Tensor)]
    with pytest.raises(error, match=message):
        opt.load_state_dict(loaded["optimizer"])
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert all(a is b for g, ps in zip(opt.param_groups, params) for a, b in zip(g["params"], ps))
    assert set(opt.state) == set(state)
    for p, s in opt.state.items():
        assert s.keys() == state[p].keys()
        assert all(v is state[p][k] for k, v in s.items())  # the same tensors and counters
    assert all(opt.state[p][k].numpy().tobytes() == v.tobytes() for p, k, v in values)
