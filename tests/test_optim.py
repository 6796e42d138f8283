"""vkgrad.optim against torch.optim: SGD, Adam, AdamW and RMSprop in lockstep with PyTorch on a
small MLP (every device, f32 and bf16, master weights), parameter groups and every lr scheduler;
the fused step's counters on Vulkan; state_dict round trips and PyTorch interop; the schedulers'
values; clip_grad_norm_. The single-tensor update rules over awkward shapes, strides and dtypes
are the optimizer_update op's OpTests (tests/opdb.py)."""
import copy
import math
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch

import vkgrad as vk
from vkgrad import optim
from vkgrad.nn.utils import clip_grad_norm_

SHAPES = [(8, 5), (8,), (3, 8), (3,)]  # w1, b1, w2, b2 of a 5 -> 8 -> 3 MLP
STEPS = 20


def initial_values(seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in SHAPES]


def batches(n=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((6, 5)).astype(np.float32),
             rng.standard_normal((6, 3)).astype(np.float32)) for _ in range(n)]


def mlp_loss(params, x, y):
    """Mean squared error of relu(x w1^T + b1) w2^T + b2: the same code for vkgrad and torch."""
    w1, b1, w2, b2 = params
    h = (x @ w1.T + b1).relu()
    d = h @ w2.T + b2 - y
    return (d * d).mean()


def as_bf16(a):
    return a.astype(ml_dtypes.bfloat16).astype(np.float32)


class Run:
    """The MLP's parameters and an optimizer (and optionally a scheduler), vkgrad or torch."""

    def __init__(self, lib, name, kwargs, values, device=None, dtype=vk.float32, groups=None,
                 scheduler=None):
        self.lib, self.device, self.dtype = lib, device, dtype
        if lib == "torch":
            self.dtype = torch.bfloat16 if dtype is vk.bfloat16 else torch.float32
            self.params = [torch.tensor(v, dtype=self.dtype, requires_grad=True) for v in values]
            kwargs = {k: v for k, v in kwargs.items() if k != "master_weights"}
            module = torch.optim
        else:
            self.params = [vk.nn.Parameter(vk.tensor(v, dtype=dtype, device=device))
                           for v in values]
            module = optim
        spec = self.params
        if groups is not None:  # the first layer in one group, the second in another
            spec = [{"params": self.params[:2]}, {"params": self.params[2:], **groups}]
        self.opt = getattr(module, name)(spec, **kwargs)
        self.sched = None
        if scheduler is not None:
            sched_name, sched_kwargs = scheduler
            self.sched = getattr(module.lr_scheduler, sched_name)(self.opt, **sched_kwargs)

    def train_step(self, x, y):
        self.opt.zero_grad()
        if self.lib == "torch":
            mlp_loss(self.params, torch.tensor(x, dtype=self.dtype),
                     torch.tensor(y, dtype=self.dtype)).backward()
        else:
            mlp_loss(self.params, vk.tensor(x, dtype=self.dtype, device=self.device),
                     vk.tensor(y, dtype=self.dtype, device=self.device)).backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()

    def values(self):
        if self.lib == "torch":
            return [p.detach().float().numpy() for p in self.params]
        return [p.numpy().astype(np.float32) for p in self.params]


def assert_params_close(got, expected, where, **tol):
    for i, (a, b) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(a, b, err_msg=f"{where}, parameter {i}", **tol)


# ---- lockstep with torch.optim on the MLP ------------------------------------------------------
CONFIGS = {
    "sgd": ("SGD", dict(lr=0.1), None, None),
    "sgd-momentum": ("SGD", dict(lr=0.1, momentum=0.9), None, None),
    "sgd-dampening": ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5), None, None),
    "sgd-nesterov-wd": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
                        None, None),
    "sgd-high-lr": ("SGD", dict(lr=0.8), None, None),
    "sgd-maximize": ("SGD", dict(lr=0.01, momentum=0.5, weight_decay=0.5, maximize=True), None,
                     None),
    "adam": ("Adam", dict(lr=0.01), None, None),
    "adam-wd": ("Adam", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99)), None, None),
    "adam-amsgrad": ("Adam", dict(lr=0.01, amsgrad=True), None, None),
    "adam-high-lr": ("Adam", dict(lr=0.3), None, None),
    "adamw": ("AdamW", dict(lr=0.01, weight_decay=0.1), None, None),
    "adamw-amsgrad": ("AdamW", dict(lr=0.02, amsgrad=True), None, None),
    "rmsprop": ("RMSprop", dict(lr=0.01), None, None),
    "rmsprop-centered": ("RMSprop", dict(lr=0.01, centered=True, alpha=0.9), None, None),
    "rmsprop-momentum-centered-wd": ("RMSprop", dict(lr=0.005, momentum=0.9, centered=True,
                                                     weight_decay=0.01), None, None),
    "groups-sgd": ("SGD", dict(lr=0.01, momentum=0.9), dict(lr=0.1, nesterov=True), None),
    "groups-adam": ("Adam", dict(lr=0.01), dict(lr=0.003, betas=(0.5, 0.9), amsgrad=True), None),
    "steplr": ("SGD", dict(lr=0.1, momentum=0.9), None, ("StepLR", dict(step_size=5, gamma=0.5))),
    "multisteplr": ("SGD", dict(lr=0.1), dict(lr=0.2),
                    ("MultiStepLR", dict(milestones=[4, 9, 9, 15], gamma=0.5))),
    "exponentiallr": ("RMSprop", dict(lr=0.01), None, ("ExponentialLR", dict(gamma=0.9))),
    "cosine": ("Adam", dict(lr=0.02), None, ("CosineAnnealingLR", dict(T_max=8, eta_min=1e-3))),
    "linear-warmup": ("AdamW", dict(lr=0.02), dict(lr=0.01),
                      ("LinearLR", dict(start_factor=0.1, total_iters=6))),
    "lambdalr": ("SGD", dict(lr=0.1, momentum=0.5), None,
                 ("LambdaLR", dict(lr_lambda=lambda e: 1 / (1 + e)))),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_f32_lockstep_with_torch(device, config):
    name, kwargs, groups, scheduler = CONFIGS[config]
    values = initial_values()
    ours = Run("vkgrad", name, kwargs, values, device, groups=groups, scheduler=scheduler)
    ref = Run("torch", name, kwargs, values, groups=groups, scheduler=scheduler)
    for step, (x, y) in enumerate(batches()):
        ours.train_step(x, y)
        ref.train_step(x, y)
        assert_params_close(ours.values(), ref.values(), f"{config} step {step}",
                            rtol=1e-5, atol=1e-6)
        assert [g["lr"] for g in ours.opt.param_groups] == pytest.approx(
            [g["lr"] for g in ref.opt.param_groups], rel=1e-12)


BF16_CONFIGS = ["sgd-momentum", "adam", "adamw", "rmsprop-momentum-centered-wd"]


def relative_error(got, expected):
    """|got - expected| / |expected| over all parameters together."""
    got, expected = np.concatenate([a.ravel() for a in got]), np.concatenate(
        [b.ravel() for b in expected])
    return np.linalg.norm(got - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("master", [False, True], ids=["bf16", "bf16-master"])
@pytest.mark.parametrize("config", BF16_CONFIGS)
def test_bf16_parameters_follow_an_f32_run(device, config, master):
    """bf16 parameters (and data), 20 steps, against torch in f32 from the same rounded start:
    without master weights about as far from the f32 trajectory as torch's own bf16 run (whose
    moments are bf16 too; ours are f32), with them within about a percent."""
    name, kwargs, _, _ = CONFIGS[config]
    values = [as_bf16(v) for v in initial_values()]
    ours = Run("vkgrad", name, dict(kwargs, master_weights=master), values, device,
               dtype=vk.bfloat16)
    f32 = Run("torch", name, kwargs, values)
    bf16 = Run("torch", name, kwargs, values, dtype=vk.bfloat16)
    for x, y in batches():
        for run in (ours, f32, bf16):
            run.train_step(x, y)
    assert all(p.dtype is vk.bfloat16 for p in ours.params)
    assert all(("master_weight" in s) == master for s in ours.opt.state.values())
    error = relative_error(ours.values(), f32.values())
    if master:
        assert error < 0.01
    else:
        assert error < 1.5 * relative_error(bf16.values(), f32.values()) + 0.005


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_master_weights_keep_updates_smaller_than_a_bf16_ulp(device, name):
    """At 1.0 a bf16 ulp is 2^-8 below: updates of 1e-3 round away on their own, but accumulate
    in the f32 master copy, whose rounded value the parameter receives."""
    plain = vk.nn.Parameter(vk.ones(5, dtype=vk.bfloat16, device=device))
    kept = vk.nn.Parameter(vk.ones(5, dtype=vk.bfloat16, device=device))
    opts = [getattr(optim, name)([plain], lr=1e-3),
            getattr(optim, name)([kept], lr=1e-3, master_weights=True)]
    for _ in range(20):
        for p, opt in zip((plain, kept), opts):
            p.grad = vk.ones(5, dtype=vk.bfloat16, device=device)
            opt.step()
    np.testing.assert_array_equal(plain.numpy().astype(np.float32), 1.0)
    master = opts[1].state[kept]["master_weight"]
    assert master.dtype is vk.float32
    np.testing.assert_allclose(master.numpy(), 0.98, rtol=1e-5)
    np.testing.assert_array_equal(kept.numpy(), master.numpy().astype(ml_dtypes.bfloat16))


def test_misaligned_and_strided_bf16_parameters_leave_their_neighbours_alone(device):
    rng = np.random.default_rng(5)
    base_values = rng.standard_normal(11).astype(ml_dtypes.bfloat16)
    base = vk.tensor(base_values.copy(), device=device)  # host tensors share numpy's memory
    odd = vk.nn.Parameter(base[1:6])    # starts in the middle of a 32-bit word
    every_other = vk.nn.Parameter(base[7::2])
    grads = [rng.standard_normal(n).astype(ml_dtypes.bfloat16) for n in (5, 2)]
    odd.grad = vk.tensor(grads[0], device=device)
    every_other.grad = vk.tensor(grads[1], device=device)
    optim.SGD([odd, every_other], lr=0.5).step()
    expected = base_values.astype(np.float32)
    expected[1:6] -= 0.5 * grads[0].astype(np.float32)
    expected[7::2] -= 0.5 * grads[1].astype(np.float32)
    np.testing.assert_array_equal(base.numpy(), expected.astype(ml_dtypes.bfloat16))


# ---- the step on Vulkan: one dispatch per parameter, nothing read back ------------------------
STEP_COUNTER_CASES = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), vk.float32),
                      ("Adam", dict(amsgrad=True, weight_decay=0.1), vk.float32),
                      ("AdamW", dict(), vk.float32),
                      ("RMSprop", dict(centered=True, momentum=0.5), vk.float32),
                      ("Adam", dict(master_weights=True), vk.bfloat16)]


@pytest.mark.parametrize("name,kwargs,dtype", STEP_COUNTER_CASES,
                         ids=[f"{n}-{d.name}" for n, _, d in STEP_COUNTER_CASES])
def test_step_is_one_fused_dispatch_per_parameter(vulkan, name, kwargs, dtype):
    params = [vk.nn.Parameter(vk.tensor(v, dtype=dtype, device=vulkan))
              for v in initial_values()]
    frozen = vk.nn.Parameter(vk.ones(4, device=vulkan))  # never gets a gradient
    opt = getattr(optim, name)(params + [frozen], **kwargs)
    x, y = batches(1)[0]
    xt, yt = vk.tensor(x, dtype=dtype, device=vulkan), vk.tensor(y, dtype=dtype, device=vulkan)
    for _ in range(2):  # warm-up: creates the state, and the pipelines of a first and a later step
        mlp_loss(params, xt, yt).backward()
        opt.step()
    for change_lr in (False, True):
        if change_lr:
            for group in opt.param_groups:
                group["lr"] *= 0.37
        mlp_loss(params, xt, yt).backward()
        vk.synchronize()
        in_use = vk.memory_stats(vulkan)["in_use_bytes"]
        vk.reset_stats()
        opt.step()
        expected = {"dispatches": len(params), "submits": 0, "pipelines_created": 0,
                    "host_syncs": 0, "device_bytes_allocated": 0}
        stats = vk.stats()
        assert {k: stats[k] for k in expected} == expected, stats
        assert vk.memory_stats(vulkan)["in_use_bytes"] <= in_use  # no arena allocations
    assert frozen.grad is None and frozen not in opt.state


# ---- state_dict ----------------------------------------------------------------------------------
ROUND_TRIP = ["sgd-nesterov-wd", "adam-amsgrad", "adamw", "rmsprop-momentum-centered-wd",
              "groups-adam"]


@pytest.mark.parametrize("config", ROUND_TRIP)
def test_state_dict_round_trip_continues_like_uninterrupted(device, config):
    name, kwargs, groups, _ = CONFIGS[config]
    data = batches()
    a = Run("vkgrad", name, kwargs, initial_values(), device, groups=groups)
    for x, y in data[:5]:
        a.train_step(x, y)
    saved = a.opt.state_dict()
    # a second optimizer with other hyper-parameters: loading restores a's
    b = Run("vkgrad", name, dict(kwargs, lr=123.0), a.values(), device, groups=groups)
    b.opt.load_state_dict(saved)
    assert [g["lr"] for g in b.opt.param_groups] == [g["lr"] for g in a.opt.param_groups]
    for x, y in data[5:10]:
        a.train_step(x, y)
        b.train_step(x, y)
        for pa, pb in zip(a.values(), b.values()):
            np.testing.assert_array_equal(pa, pb)


def test_state_dict_layout(device):
    params = [vk.nn.Parameter(vk.tensor(v, device=device)) for v in initial_values()]
    opt = optim.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}], lr=0.01,
                     amsgrad=True)
    for p in params[1:]:  # params[0] has no gradient, so no state
        p.grad = vk.ones(p.shape, device=device)
    opt.step()
    opt.step()
    sd = opt.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert sd["param_groups"][1]["lr"] == 0.1 and sd["param_groups"][0]["lr"] == 0.01
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert sorted(sd["state"]) == [1, 2, 3]
    for i in (1, 2, 3):
        entry = sd["state"][i]
        assert sorted(entry) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
        assert entry["step"].device == vk.device("host") and entry["step"].dtype is vk.float32
        assert entry["step"].item() == 2.0
        assert entry["exp_avg"] is opt.state[params[i]]["exp_avg"]  # live state, as torch
        assert entry["exp_avg"].device == device and entry["exp_avg"].shape == params[i].shape
    sgd = optim.SGD(params, lr=0.1)
    params[1].grad = vk.ones(params[1].shape, device=device)
    sgd.step()
    assert sgd.state_dict()["state"] == {}  # no momentum: no state, as torch


def _torch_to_vk(sd):
    out = copy.deepcopy({"param_groups": sd["param_groups"]})
    out["state"] = {i: {k: vk.tensor(v.numpy()) for k, v in s.items()}
                    for i, s in sd["state"].items()}
    return out


def _vk_to_torch(sd):
    out = copy.deepcopy({"param_groups": sd["param_groups"]})
    out["state"] = {i: {k: torch.tensor(v.numpy()) for k, v in s.items()}
                    for i, s in sd["state"].items()}
    return out


@pytest.mark.parametrize("direction", ["torch-to-vkgrad", "vkgrad-to-torch"])
@pytest.mark.parametrize("config", ["sgd-dampening", "adam-amsgrad", "adamw",
                                    "rmsprop-momentum-centered-wd", "groups-sgd"])
def test_state_dict_interop_with_torch(device, config, direction):
    """A torch optimizer's state_dict (tensors converted) loads into vkgrad's and training
    continues in lockstep; and the other way round."""
    name, kwargs, groups, _ = CONFIGS[config]
    data = batches(15)
    first = Run("torch" if direction == "torch-to-vkgrad" else "vkgrad", name, kwargs,
                initial_values(), device, groups=groups)
    for x, y in data[:5]:
        first.train_step(x, y)
    other = "vkgrad" if first.lib == "torch" else "torch"
    second = Run(other, name, dict(kwargs, lr=7.0), first.values(), device, groups=groups)
    sd = first.opt.state_dict()
    second.opt.load_state_dict(_torch_to_vk(sd) if other == "vkgrad" else _vk_to_torch(sd))
    for step, (x, y) in enumerate(data[5:]):
        first.train_step(x, y)
        second.train_step(x, y)
        assert_params_close(second.values(), first.values(), f"{config} step {step}",
                            rtol=1e-5, atol=1e-6)


def test_load_state_dict_validates_and_leaves_the_optimizer_unchanged(device):
    params = [vk.nn.Parameter(vk.tensor(v, device=device)) for v in initial_values()]
    opt = optim.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.01)
    for p in params:
        p.grad = vk.ones(p.shape, device=device)
    opt.step()
    good = opt.state_dict()
    groups_before = [dict(g) for g in opt.param_groups]
    state_before = {id(p): dict(s) for p, s in opt.state.items()}

    def changed(**edits):
        sd = {"state": {i: dict(s) for i, s in good["state"].items()},
              "param_groups": [dict(g, lr=0.5, params=list(g["params"]))
                               for g in good["param_groups"]]}
        for key, fn in edits.items():
            fn(sd)
        return sd

    bad = [
        (changed(groups=lambda sd: sd["param_groups"].pop()), "1 parameter groups"),
        (changed(params=lambda sd: sd["param_groups"][1]["params"].pop()), "has 1 parameters"),
        (changed(shape=lambda sd: sd["state"][3].update(exp_avg=vk.zeros((4,)))), r"shape \(4,\)"),
        (changed(index=lambda sd: sd["state"].update({9: {"step": 1}})), "parameter 9"),
        (changed(step=lambda sd: sd["state"][1].update(step=float("nan"))),
         "'step' of parameter 1"),
    ]
    for sd, message in bad:
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(sd)
        assert opt.param_groups == groups_before
        assert {id(p): s for p, s in opt.state.items()} == state_before
        for p, s in opt.state.items():
            assert all(v is state_before[id(p)][k] for k, v in s.items())


# ---- optimizer behaviour ---------------------------------------------------------------------
def test_zero_grad_closure_and_skipped_parameters(device):
    p = vk.nn.Parameter(vk.tensor([1.0, 2.0, 3.0], device=device))
    idle = vk.nn.Parameter(vk.tensor([5.0], device=device))
    opt = optim.SGD([p, idle], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with vk.no_grad():  # the closure still records: step enables grad for it
        loss = opt.step(closure)
    assert loss.item() == 14.0
    np.testing.assert_allclose(p.numpy(), [0.8, 1.6, 2.4], rtol=1e-6)
    assert idle.numpy().tolist() == [5.0] and idle not in opt.state
    opt.zero_grad(set_to_none=False)
    assert p.grad.numpy().tolist() == [0.0, 0.0, 0.0]
    opt.zero_grad()
    assert p.grad is None


def test_add_param_group_takes_defaults(device):
    a = vk.nn.Parameter(vk.ones(2, device=device))
    b = vk.nn.Parameter(vk.ones(3, device=device))
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.5})
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.5
    assert "Parameter Group 1" in repr(opt) and "lr: 0.5" in repr(opt)
    for p in (a, b):
        p.grad = vk.ones(p.shape, device=device)
    opt.step()
    np.testing.assert_allclose(a.numpy(), 0.9, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), 0.5, rtol=1e-6)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})


def test_options_switched_on_mid_run_match_torch(device):
    """SGD's momentum switched on later starts its buffer at the gradient (as torch); Adam's
    amsgrad switched on later starts its maximum at zero."""
    values = initial_values()
    ours = Run("vkgrad", "SGD", dict(lr=0.1), values, device)
    ref = Run("torch", "SGD", dict(lr=0.1), values)
    for step, (x, y) in enumerate(batches(8)):
        if step == 3:
            for run in (ours, ref):
                run.opt.param_groups[0]["momentum"] = 0.9
        ours.train_step(x, y)
        ref.train_step(x, y)
    assert_params_close(ours.values(), ref.values(), "momentum on at step 3", rtol=1e-5,
                        atol=1e-6)
    adam = Run("vkgrad", "Adam", dict(lr=0.01), values, device)
    adam.train_step(*batches(1)[0])
    adam.opt.param_groups[0]["amsgrad"] = True
    adam.train_step(*batches(1)[0])
    for s in adam.opt.state.values():
        np.testing.assert_array_equal(s["max_exp_avg_sq"].numpy(), s["exp_avg_sq"].numpy())


def test_state_follows_a_parameter_moved_to_another_device(vulkan):
    class Model(vk.nn.Module):
        def __init__(self, values):
            super().__init__()
            self.w = vk.nn.Parameter(vk.tensor(values))

    values = initial_values()[0]
    moved, stay = Model(values), Model(values)
    opts = [optim.Adam(m.parameters(), lr=0.01) for m in (moved, stay)]
    grads = [np.random.default_rng(k).standard_normal(values.shape).astype(np.float32)
             for k in range(4)]
    for k, g in enumerate(grads):
        if k == 2:
            moved.to(vulkan)
        for m, opt in zip((moved, stay), opts):
            m.w.grad = vk.tensor(g, device=m.w.device)
            opt.step()
    assert opts[0].state[moved.w]["exp_avg"].device == vulkan
    np.testing.assert_allclose(moved.w.numpy(), stay.w.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                         ("Adam", dict(lr=0.1, amsgrad=True)),
                                         ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5))])
def test_float64_host_parameters_keep_float64(name, kwargs, rng):
    values, grads = rng.standard_normal(7), rng.standard_normal((5, 7))
    p = vk.nn.Parameter(vk.tensor(values.copy(), dtype=vk.float64))
    tp = torch.tensor(values, requires_grad=True)
    opt, topt = getattr(optim, name)([p], **kwargs), getattr(torch.optim, name)([tp], **kwargs)
    for g in grads:
        p.grad, tp.grad = vk.tensor(g, dtype=vk.float64), torch.tensor(g)
        opt.step()
        topt.step()
    assert p.dtype is vk.float64
    state = opt.state[p]
    assert all(state[k].dtype is vk.float64 for k in state if k != "step")
    if "step" in state:  # a float32 count, as torch's
        assert state["step"].dtype is vk.float32 and state["step"].item() == 5.0
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-13, atol=1e-15)
    norm = np.linalg.norm(grads[-1])  # before clipping: the host gradient shares its memory
    total = clip_grad_norm_(p, 0.5)
    assert total.dtype is vk.float64 and total.item() == pytest.approx(norm, rel=1e-14)


def test_invalid_arguments():
    p = vk.nn.Parameter(vk.ones(3))
    with pytest.raises(ValueError, match="invalid lr"):
        optim.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta at index 1"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="invalid alpha"):
        optim.RMSprop([p], alpha=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="not a Tensor"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="ordered iterable"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(TypeError, match="only floating"):
        optim.SGD([vk.ones(2, dtype=vk.int32)], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([p, p], lr=0.1)
    opt = optim.SGD([p], lr=0.1)
    with pytest.raises(TypeError, match="not an Optimizer"):
        optim.lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(KeyError, match="initial_lr"):
        optim.lr_scheduler.StepLR(opt, step_size=2, last_epoch=3)
    with pytest.raises(ValueError, match="start_factor"):
        optim.lr_scheduler.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="lr_lambdas"):
        optim.lr_scheduler.LambdaLR(opt, [lambda e: 1.0, lambda e: 2.0])


# ---- schedulers --------------------------------------------------------------------------------
class Halving:
    """A callable object: LambdaLR's state_dict saves its attributes."""

    def __init__(self):
        self.base = 0.5

    def __call__(self, epoch):
        return self.base ** (epoch // 4)


SCHEDULERS = {
    "StepLR": dict(step_size=7, gamma=0.5),
    "MultiStepLR": dict(milestones=[3, 10, 10, 22], gamma=0.3),
    "ExponentialLR": dict(gamma=0.9),
    "CosineAnnealingLR": dict(T_max=8, eta_min=0.01),
    "LinearLR": dict(start_factor=0.2, end_factor=0.9, total_iters=6),
    "LambdaLR": dict(lr_lambda=lambda e: 0.95 ** e + e % 3),
}


def _scheduler_pair(name, kwargs, last_epoch=-1):
    tp = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    vp = [vk.nn.Parameter(vk.zeros(1)), vk.nn.Parameter(vk.zeros(1))]
    topt = torch.optim.SGD([{"params": tp[:1]}, {"params": tp[1:], "lr": 0.03}], lr=0.1)
    vopt = optim.SGD([{"params": vp[:1]}, {"params": vp[1:], "lr": 0.03}], lr=0.1)
    return (getattr(optim.lr_scheduler, name)(vopt, **kwargs),
            getattr(torch.optim.lr_scheduler, name)(topt, **kwargs))


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_values_match_torch(name):
    ours, ref = _scheduler_pair(name, SCHEDULERS[name])
    for epoch in range(30):
        assert ours.last_epoch == ref.last_epoch == epoch
        assert ours.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-12, abs=1e-15)
        assert [g["lr"] for g in ours.optimizer.param_groups] == pytest.approx(
            [g["lr"] for g in ref.optimizer.param_groups], rel=1e-12, abs=1e-15)
        ours.optimizer.step()
        ref.optimizer.step()
        ours.step()
        ref.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates step(epoch); its closed forms stay
        for epoch in (0, 5, 13, 29, 3):
            ours.step(epoch)
            ref.step(epoch)
            assert ours.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_state_dict_resumes(name):
    kwargs = dict(SCHEDULERS[name], lr_lambda=Halving()) if name == "LambdaLR" \
        else SCHEDULERS[name]
    ours, ref = _scheduler_pair(name, kwargs)
    for _ in range(10):
        for s in (ours, ref):
            s.optimizer.step()
            s.step()
    if name == "LambdaLR":
        ours.lr_lambdas[0].base = 0.25  # saved with the state (a callable object's attributes)
        ref.lr_lambdas[0].base = 0.25
    saved_opt, saved = ours.optimizer.state_dict(), ours.state_dict()
    torch_saved = ref.state_dict()
    fresh_kwargs = dict(kwargs, lr_lambda=Halving()) if name == "LambdaLR" else kwargs
    resumed, from_torch = _scheduler_pair(name, fresh_kwargs)[0], _scheduler_pair(
        name, fresh_kwargs)[0]
    for sched, state in ((resumed, saved), (from_torch, torch_saved)):
        sched.optimizer.load_state_dict(saved_opt)
        sched.load_state_dict(state)
    for _ in range(20):
        for s in (ours, ref, resumed, from_torch):
            s.optimizer.step()
            s.step()
        assert resumed.get_last_lr() == ours.get_last_lr()
        assert from_torch.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-12)


# ---- clip_grad_norm_ ---------------------------------------------------------------------------
GRAD_SHAPES = [(3, 4), (5,), (), (300,)]


def _grads(rng, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in GRAD_SHAPES]


@pytest.mark.parametrize("max_norm", [0.5, 1e4])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(device, norm_type, max_norm, rng):
    grads = _grads(rng)
    params = [vk.nn.Parameter(vk.zeros(g.shape, device=device)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = vk.tensor(g.copy(), device=device)
    idle = vk.nn.Parameter(vk.zeros(2, device=device))
    total = clip_grad_norm_(params + [idle], max_norm, norm_type)
    tparams = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for p, g in zip(tparams, grads):
        p.grad = torch.tensor(g)
    expected = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type)
    assert total.device == device and total.dtype is vk.float32 and total.shape == ()
    np.testing.assert_allclose(total.item(), expected.item(), rtol=1e-5)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert idle.grad is None


def test_clip_grad_norm_bf16_gradients(device, rng):
    grads = [as_bf16(g) for g in _grads(rng, 3.0)]
    params = [vk.nn.Parameter(vk.zeros(g.shape, dtype=vk.bfloat16, device=device))
              for g in grads]
    for p, g in zip(params, grads):
        p.grad = vk.tensor(g, dtype=vk.bfloat16, device=device)
    total = clip_grad_norm_(params, 1.0)
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    np.testing.assert_allclose(total.item(), norm, rtol=1e-5)
    for p, g in zip(params, grads):
        assert p.grad.dtype is vk.bfloat16
        np.testing.assert_allclose(p.grad.numpy().astype(np.float32), g / norm, rtol=1e-2,
                                   atol=1e-3)


def test_clip_grad_norm_reads_nothing_back(vulkan, rng):
    params = [vk.nn.Parameter(vk.zeros(g.shape, device=vulkan)) for g in _grads(rng)]
    for p, g in zip(params, _grads(rng)):
        p.grad = vk.tensor(g, device=vulkan)
    clip_grad_norm_(params, 1.0)  # warm-up: pipelines
    vk.synchronize()
    vk.reset_stats()
    total = clip_grad_norm_(params, 0.5)
    stats = vk.stats()
    assert stats["host_syncs"] == 0 and stats["submits"] == 0 and stats["pipelines_created"] == 0
    assert total.item() == pytest.approx(1.0, rel=1e-5)  # the first call clipped to norm 1


def test_clip_grad_norm_edge_cases(device):
    assert clip_grad_norm_([vk.nn.Parameter(vk.ones(2, device=device))], 1.0).item() == 0.0
    p = vk.nn.Parameter(vk.zeros(3, device=device))
    p.grad = vk.tensor([1.0, float("inf"), 2.0], device=device)
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    assert clip_grad_norm_(p, 1.0).item() == math.inf
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm_(p, 1.0, norm_type=0)


def test_master_weights_follow_a_weight_load(device):
    # A parameter set outside the optimizer (load_state_dict, "restore the best weights") must
    # not be reverted to the stale f32 master copy at the next step.
    p = vk.nn.Parameter(vk.tensor(np.ones(5), "bfloat16", device))
    opt = vk.optim.SGD([p], lr=0.1, master_weights=True)
    for _ in range(2):
        p.grad = vk.ones(5, dtype="bfloat16", device=device)
        opt.step()
    with vk.no_grad():
        p[...] = 3.0
    p.grad = vk.ones(5, dtype="bfloat16", device=device)
    opt.step()
    np.testing.assert_array_equal(p.numpy().astype(np.float32), np.full(5, 2.90625, np.float32))
    p.grad = vk.ones(5, dtype="bfloat16", device=device)
    opt.step()  # and the master copy continues from there: 2.8 rounds to 2.796875 in bf16
    np.testing.assert_array_equal(p.numpy().astype(np.float32), np.full(5, 2.796875, np.float32))
