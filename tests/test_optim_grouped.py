"""The host optimizer step updates a whole parameter group in one kernel call: its results are
those of updating each parameter on its own, bit for bit (every optimizer and option, f32, bf16
with and without master weights, float64, mixed dtypes in one group, strided gradients, skipped
parameters and so step counts that differ within a group), eagerly and replayed by
vkgrad.compile, and a state_dict taken mid-run resumes to the same bits."""
import numpy as np
import pytest

import vkgrad as vk
from vkgrad.ops import optimizers

CONFIGS = {
    "sgd": ("SGD", dict(lr=0.1)),
    "sgd-momentum-dampening-wd-maximize": ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3,
                                                       weight_decay=0.01, maximize=True)),
    "sgd-nesterov-wd": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "adam": ("Adam", dict(lr=0.01)),
    "adam-amsgrad-wd-maximize": ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1,
                                              maximize=True)),
    "adamw": ("AdamW", dict(lr=0.01, betas=(0.5, 0.8))),
    "adamw-amsgrad": ("AdamW", dict(lr=0.01, amsgrad=True)),
    "rmsprop": ("RMSprop", dict(lr=0.01)),
    "rmsprop-centered-momentum-wd-maximize": ("RMSprop", dict(lr=0.01, centered=True,
                                                              momentum=0.5, weight_decay=0.1,
                                                              maximize=True)),
}
SHAPES = [(7, 3), (3,), (), (0, 4), (2, 5, 4), (300,)]
DTYPES = {
    "f32": (["float32"] * len(SHAPES), False),
    "bf16": (["bfloat16"] * len(SHAPES), False),
    "bf16-master": (["bfloat16"] * len(SHAPES), True),
    "mixed-master": (["float32", "bfloat16", "float64", "bfloat16", "float32", "float64"], True),
}
STEPS = 6


def _params(dtypes, seed=0):
    rng = np.random.default_rng(seed)
    return [vk.nn.Parameter(vk.tensor((rng.standard_normal(s) * 2).astype(np.float32), d))
            for s, d in zip(SHAPES, dtypes)]


def _grads(params, step, seed):
    """Gradients of step `step`: strided (transposed) views, None for some parameters (whose
    step counts then fall behind the others')."""
    rng = np.random.default_rng([seed, step])
    grads = []
    for i, p in enumerate(params):
        g = vk.tensor(rng.standard_normal(p.shape[::-1]).astype(np.float32), p.dtype)
        grads.append(None if (step + i) % 4 == 3 else g.permute(*range(p.ndim)[::-1]))
    return grads


def _bits(params, opt):
    """Every parameter's and state tensor's bytes (state_dict's view of the state)."""
    out = [p.numpy().tobytes() for p in params]
    for index, state in sorted(opt.state_dict()["state"].items()):
        out += [(index, k, v.dtype.name, v.numpy().tobytes()) for k, v in sorted(state.items())]
    return out


def _run(name, kwargs, dtypes, master, grouped, steps=STEPS, seed=1, checkpoint=None):
    """`steps` steps of one optimizer over _params; with `checkpoint` (a path), halfway a
    fresh optimizer takes over from the vk.save / vk.load file of the first one's state."""
    params = _params(dtypes)
    spec = params if grouped else [{"params": [p]} for p in params]
    opt = getattr(vk.optim, name)(spec, master_weights=master, **kwargs)
    for k in range(steps):
        if checkpoint is not None and k == steps // 2:
            vk.save(opt.state_dict(), checkpoint)
            opt = getattr(vk.optim, name)(spec, master_weights=master, **kwargs)
            opt.load_state_dict(vk.load(checkpoint))
        for p, g in zip(params, _grads(params, k, seed)):
            p.grad = g
        opt.step()
    return params, opt


@pytest.fixture
def host_calls(monkeypatch):
    """The number of host optimizer kernel calls made (a list, appended to per call)."""
    calls = []
    host = optimizers.OPS_UPDATE.host

    def counted(params, *args, **kwargs):
        calls.append(len(params))
        return host(params, *args, **kwargs)

    monkeypatch.setattr(optimizers.OPS_UPDATE, "host", counted)
    return calls


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_group_steps_as_its_parameters_one_at_a_time(config, dtype, host_calls):
    name, kwargs = CONFIGS[config]
    dtypes, master = DTYPES[dtype]
    alone = _bits(*_run(name, kwargs, dtypes, master, grouped=False))
    singles = list(host_calls)
    host_calls.clear()
    together = _bits(*_run(name, kwargs, dtypes, master, grouped=True))
    assert together == alone
    # one call per step for the group, of the parameters with a gradient; one per parameter
    # when each is a group of its own
    assert host_calls == [sum((k + i) % 4 != 3 for i in range(len(SHAPES)))
                          for k in range(STEPS)]
    assert set(singles) == {1} and len(singles) == sum(host_calls)


@pytest.mark.parametrize("config", ["sgd-nesterov-wd", "adam-amsgrad-wd-maximize", "adamw",
                                    "rmsprop-centered-momentum-wd-maximize"])
@pytest.mark.parametrize("dtype", ["f32", "mixed-master"])
def test_a_checkpoint_saved_mid_run_resumes_to_the_same_bits(config, dtype, tmp_path):
    name, kwargs = CONFIGS[config]
    dtypes, master = DTYPES[dtype]
    straight = _bits(*_run(name, kwargs, dtypes, master, grouped=True))
    resumed = _bits(*_run(name, kwargs, dtypes, master, grouped=True,
                          checkpoint=tmp_path / "optimizer.vkgrad"))
    assert resumed == straight


def _trainer(name, kwargs, dtype, master):
    """A two-layer MLP on the host in `dtype`, its optimizer (one group) and a training step."""
    rng = np.random.default_rng(0)
    params = [vk.nn.Parameter(vk.tensor(rng.standard_normal(s).astype(np.float32) * 0.5, dtype))
              for s in ((6, 5), (5,), (5, 3), (3,))]
    opt = getattr(vk.optim, name)(params, master_weights=master, **kwargs)

    def step(x, y):
        opt.zero_grad()
        loss = ((((x @ params[0] + params[1]).relu() @ params[2] + params[3]) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return params, opt, step


@pytest.mark.parametrize("dtype", ["float32", "bf16", "bf16-master"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_replayed_host_step_equals_eager_bit_for_bit(config, dtype):
    name, kwargs = CONFIGS[config]
    vk_dtype = "float32" if dtype == "float32" else "bfloat16"
    master = dtype == "bf16-master"
    eager_params, eager_opt, eager_step = _trainer(name, kwargs, vk_dtype, master)
    params, opt, step = _trainer(name, kwargs, vk_dtype, master)
    compiled = vk.compile(step)
    rng = np.random.default_rng(1)
    for _ in range(STEPS):
        x = vk.tensor(rng.standard_normal((4, 6)).astype(np.float32), vk_dtype)
        y = vk.tensor(rng.standard_normal((4, 3)).astype(np.float32), vk_dtype)
        assert compiled(x, y).item() == eager_step(x, y).item()
    # the first step records, the second again if the first made state, the rest replay,
    # with the group's update as one recorded call
    capture, = compiled._captures.values()
    assert capture.replays == STEPS - (2 if opt.state[params[0]] else 1)
    assert [fn for fn, *_ in capture.recording.calls].count(optimizers.OPS_UPDATE.host) == 1
    assert _bits(params, opt) == _bits(eager_params, eager_opt)


def test_the_update_is_profiled_as_one_op_per_group():
    params = _params(DTYPES["f32"][0])
    opt = vk.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1, momentum=0.9)
    for p, g in zip(params, _grads(params, 0, seed=1)):
        p.grad = g
    with vk.profile() as prof:
        opt.step()
    assert prof.ops["optimizer_update"][0] == 2


@pytest.mark.parametrize("config", ["sgd-nesterov-wd", "adam-amsgrad-wd-maximize",
                                    "rmsprop-centered-momentum-wd-maximize"])
def test_a_group_across_devices_updates_each_parameter_on_its_own(vulkan, config):
    """A group whose parameters live on the host and on Vulkan: one host call for the host's,
    one dispatch each for the others, the results of each parameter's own update."""
    name, kwargs = CONFIGS[config]

    def run(grouped):
        params = _params(DTYPES["f32"][0])
        for i in (0, 2, 5):
            params[i] = vk.nn.Parameter(params[i].to(vulkan))
        spec = params if grouped else [{"params": [p]} for p in params]
        opt = getattr(vk.optim, name)(spec, **kwargs)
        for k in range(3):
            for p, g in zip(params, _grads(params, k, seed=1)):
                p.grad = None if g is None else g.to(p.device)
            opt.step()
        return _bits(params, opt)

    assert run(grouped=True) == run(grouped=False)


@pytest.mark.parametrize("config", ["sgd-nesterov-wd", "adamw-amsgrad", "rmsprop"])
@pytest.mark.parametrize("master", [False, True], ids=["", "master"])
def test_parameters_recast_or_reloaded_mid_run_are_followed(config, master):
    """Module.to(bfloat16) replaces each parameter's array, load_state_dict of the model writes
    new values into them: the grouped step updates what the parameters hold then, as each
    parameter's own step does."""
    name, kwargs = CONFIGS[config]

    def run(grouped):
        model = vk.nn.Sequential(vk.nn.Linear(5, 4), vk.nn.Linear(4, 3))
        model.load_state_dict({k: vk.tensor(np.full(v.shape, 0.25, np.float32))
                               for k, v in model.state_dict().items()})
        params = list(model.parameters())
        spec = params if grouped else [{"params": [p]} for p in params]
        opt = getattr(vk.optim, name)(spec, master_weights=master, **kwargs)
        rng = np.random.default_rng(3)
        for k in range(5):
            if k == 2:
                model.to(vk.bfloat16)
            if k == 3:
                model.load_state_dict({key: vk.tensor(rng.standard_normal(v.shape), v.dtype)
                                       for key, v in model.state_dict().items()})
            opt.zero_grad()
            x = vk.tensor(rng.standard_normal((6, 5)), params[0].dtype)
            (model(x) ** 2).mean().backward()
            opt.step()
        return _bits(params, opt)

    assert run(grouped=True) == run(grouped=False)
