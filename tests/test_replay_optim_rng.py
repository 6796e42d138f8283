"""Steps that count on the device: Adam's and RMSprop's step counts and random generators'
positions live in device memory and the kernels advance them, so a step recorded by
vkgrad.compile replays (no recording again) with the results of eager execution, bit for bit,
and checkpoints still resume exactly."""
import warnings

import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn.functional as F

OPTIMIZERS = {
    "sgd": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    "adam": ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    "adamw": ("AdamW", dict(lr=0.01, betas=(0.5, 0.9))),
    "rmsprop": ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
}
STEPS = 6


def _trainer(device, optimizer, dropout=0.0, seed=0):
    """A two-layer MLP on `device`, its optimizer and an uncompiled training step."""
    rng = np.random.default_rng(seed)
    params = [vk.nn.Parameter(vk.tensor(rng.standard_normal(s).astype(np.float32) * 0.5,
                                        device=device)) for s in ((6, 5), (5,), (5, 3), (3,))]
    name, kwargs = OPTIMIZERS[optimizer]
    opt = getattr(vk.optim, name)(params, **kwargs)

    def step(x, y):
        opt.zero_grad()
        h = (x @ params[0] + params[1]).relu()
        if dropout:
            h = F.dropout(h, dropout, training=True)
        loss = ((h @ params[2] + params[3] - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    return params, opt, step


def _batches(device, count, seed=1):
    rng = np.random.default_rng(seed)
    return [(vk.tensor(rng.standard_normal((4, 6)).astype(np.float32), device=device),
             vk.tensor(rng.standard_normal((4, 3)).astype(np.float32), device=device))
            for _ in range(count)]


def _replays(compiled):
    return sum(c.replays for c in compiled._captures.values())


def _state(opt, params):
    return [{k: v.numpy() for k, v in opt.state[p].items()} for p in params]


def _assert_same(params_a, params_b, opt_a, opt_b):
    for i, (p, q) in enumerate(zip(params_a, params_b)):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=f"parameter {i}")
    for i, (a, b) in enumerate(zip(_state(opt_a, params_a), _state(opt_b, params_b))):
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"state {k} of parameter {i}")


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_compiled_optimizer_steps_replay_bit_for_bit(vulkan, optimizer):
    eager_params, eager_opt, eager_step = _trainer(vulkan, optimizer)
    params, opt, step = _trainer(vulkan, optimizer)
    compiled = vk.compile(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "records every call"
        for i, (x, y) in enumerate(_batches(vulkan, STEPS)):
            if i == STEPS - 1:
                vk.reset_stats()
            assert compiled(x, y).item() == eager_step(x, y).item()
    # the first step records, the second again (the state exists now), the rest replay
    assert _replays(compiled) == STEPS - 2
    assert vk.stats()["pipelines_created"] == 0
    _assert_same(params, eager_params, opt, eager_opt)
    if "step" in opt.state[params[0]]:
        assert opt.state[params[0]]["step"].item() == STEPS
        assert opt.state_dict()["state"][0]["step"].item() == STEPS


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop"])
def test_device_step_count_equals_the_host_run(vulkan, optimizer):
    # the kernel's bias corrections (double-float from the f32 step count) round to the host's
    # float64 values: given the same gradients, the two devices agree bit for bit
    rng = np.random.default_rng(3)
    values, grads = rng.standard_normal(300).astype(np.float32), rng.standard_normal((40, 300))
    name, kwargs = OPTIMIZERS[optimizer]
    results = []
    for device in ("host", vulkan):
        p = vk.nn.Parameter(vk.tensor(values.copy(), device=device))
        opt = getattr(vk.optim, name)([p], **kwargs)
        for g in grads:
            p.grad = vk.tensor(g.astype(np.float32), device=device)
            opt.step()
        results.append((p.numpy(), _state(opt, [p])[0]))
    (host_p, host_state), (p, state) = results
    np.testing.assert_array_equal(p, host_p)
    for k in host_state:
        np.testing.assert_array_equal(state[k], host_state[k], err_msg=k)
    assert state["step"] == len(grads)


def test_a_split_parameter_advances_its_step_once(vulkan):
    # four dims that do not coalesce: one dispatch per leading index, one step advance
    rng = np.random.default_rng(2)
    values = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    grads = rng.standard_normal((3, 2, 3, 6)).astype(np.float32)
    params = []
    for device in ("host", vulkan):
        base = vk.tensor(values.copy(), device=device)
        p = vk.nn.Parameter(base[:, ::2, 1:4])
        opt = vk.optim.Adam([p], lr=0.1)
        for k in range(3):
            p.grad = vk.tensor(grads * (k + 1), device=device)
            opt.step()
        assert opt.state[p]["step"].item() == 3
        params.append(base.numpy())
    np.testing.assert_array_equal(params[1], params[0])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_checkpoint_mid_run_resumes_bit_for_bit(vulkan, tmp_path, compiled):
    batches = _batches(vulkan, 7)
    whole_params, whole_opt, whole_step = _trainer(vulkan, "adam", dropout=0.3)
    vk.manual_seed(11)
    for x, y in batches:
        whole_step(x, y)
    expected_rng = vk.get_rng_state()

    params, opt, step = _trainer(vulkan, "adam", dropout=0.3)
    run = vk.compile(step) if compiled else step
    vk.manual_seed(11)
    for x, y in batches[:4]:
        run(x, y)
    vk.save({"params": params, "optim": opt.state_dict(), "rng": list(vk.get_rng_state())},
            tmp_path / "ckpt.safetensors")
    vk.manual_seed(0)  # the resumed job starts elsewhere
    checkpoint = vk.load(tmp_path / "ckpt.safetensors", device=vulkan)
    resumed_params, resumed_opt, resumed_step = _trainer(vulkan, "adam", dropout=0.3, seed=9)
    with vk.no_grad():
        for p, saved in zip(resumed_params, checkpoint["params"]):
            p[...] = saved
    resumed_opt.load_state_dict(checkpoint["optim"])
    vk.set_rng_state(checkpoint["rng"])
    run = vk.compile(resumed_step) if compiled else resumed_step
    for x, y in batches[4:]:
        run(x, y)
    _assert_same(resumed_params, whole_params, resumed_opt, whole_opt)
    assert vk.get_rng_state() == expected_rng


def test_compiled_dropout_replays_the_eager_stream(vulkan):
    params, opt, step = _trainer(vulkan, "adam", dropout=0.5)
    compiled = vk.compile(lambda x, y: (step(x, y), F.dropout(x, 0.5, training=True)))
    batches = _batches(vulkan, STEPS)
    vk.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = [tuple(t.numpy().copy() for t in compiled(x, y)) for x, y in batches]
    state = vk.get_rng_state()
    assert _replays(compiled) == STEPS - 2
    assert len({masked.tobytes() for _, masked in got}) == STEPS  # fresh masks every call

    eager_params, eager_opt, eager_step = _trainer(vulkan, "adam", dropout=0.5)
    vk.manual_seed(7)
    for (loss, masked), (x, y) in zip(got, batches):
        assert loss == eager_step(x, y).numpy()
        np.testing.assert_array_equal(masked, F.dropout(x, 0.5, training=True).numpy())
    assert vk.get_rng_state() == state
    _assert_same(params, eager_params, opt, eager_opt)


def test_rng_state_set_between_replays_is_followed(vulkan):
    compiled = vk.compile(lambda x: F.dropout(x, 0.5, training=True))
    x = vk.ones((1000,), device=vulkan)
    vk.manual_seed(1)
    compiled(x), compiled(x), compiled(x)
    replays = _replays(compiled)
    saved = vk.get_rng_state()
    first = compiled(x).numpy().copy()
    vk.set_rng_state(saved)  # rewinds the device's position: the replay draws the same again
    np.testing.assert_array_equal(compiled(x).numpy(), first)
    vk.manual_seed(123)
    reseeded = compiled(x).numpy().copy()
    assert _replays(compiled) == replays + 3  # none of these recorded again
    vk.manual_seed(123)
    np.testing.assert_array_equal(reseeded, F.dropout(x, 0.5, training=True).numpy())
    # host draws continue the stream the device advanced (a counter gives 4 numbers)
    vk.manual_seed(5)
    on_device = vk.rand(8, device=vulkan).numpy()
    on_host = vk.rand(8).numpy()
    vk.manual_seed(5)
    np.testing.assert_array_equal(vk.rand(16).numpy(), np.concatenate([on_device, on_host]))
