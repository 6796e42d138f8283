"""vkgrad.compile: a recorded step replays to exactly what eager execution computes, submits its
command buffer again without recording it or waiting, and records again (or refuses) where a
replay would be wrong."""
import gc
import threading
import warnings

import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn.functional as F

from conftest import TRAINERS, classifier_step, lenet_trainer


def _batches(device, dtype, count, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(vk.tensor(rng.standard_normal((batch, 1, 28, 28)), dtype, device),
             vk.tensor(rng.integers(0, 10, batch), "int32", device)) for _ in range(count)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_replayed_training_equals_eager_bit_for_bit(device, dtype):
    eager_model, _, eager_step = lenet_trainer(device, dtype)
    model, _, step = lenet_trainer(device, dtype)
    compiled = vk.compile(step)
    for x, y in _batches(device, dtype, 6):
        assert compiled(x, y).item() == eager_step(x, y).item()
    for (name, p), q in zip(model.named_parameters(), eager_model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy(), err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_replayed_step_is_one_submit_one_wait_no_allocation(vulkan, dtype):
    _, _, step = lenet_trainer(vulkan, dtype)
    compiled = vk.compile(step)
    batches = _batches(vulkan, dtype, 3)
    for x, y in batches:  # records (first step), records again (momentum exists), replays
        compiled(x, y).item()
    recorded = len(compiled._captures[next(iter(compiled._captures))].recording.dispatches)
    in_use = vulkan.backend.pool.in_use
    vk.reset_stats()
    losses = [compiled(x, y).item() for x, y in batches]
    stats = vk.stats()
    # per step: one submission, of the copies into the inputs and the recorded command buffer
    # (submitted again, not recorded again), which ends by copying the loss to staging; one
    # wait, for the read, which submits nothing
    assert stats["submits"] == 3 and stats["host_syncs"] == 3, stats
    assert stats["pipelines_created"] == 0 and stats["device_bytes_allocated"] == 0, stats
    # per step: the recorded kernels, and three vkCmdCopyBuffer: one into each of the two
    # inputs (recorded into a command buffer), the loss to staging (recorded with the step)
    assert stats["dispatches"] == 3 * recorded, (stats, recorded)
    assert stats["copies"] == 3 * 3, stats
    assert stats["dispatches_recorded"] == 0, stats
    assert stats["barriers"] < stats["dispatches"], stats
    assert vulkan.backend.pool.in_use == in_use
    assert all(np.isfinite(losses))


def test_replay_reads_each_calls_arguments(device, rng):
    compiled = vk.compile(lambda a, b, scale: ((a * scale - b) ** 2).sum(axis=0))
    for _ in range(4):
        a, b = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(3).astype(
            np.float32)
        got = compiled(vk.tensor(a, device=device), vk.tensor(b, device=device), 1.5).numpy()
        np.testing.assert_allclose(got, ((a * 1.5 - b) ** 2).sum(axis=0), rtol=1e-5)
    # a non-contiguous view as an argument is copied into the recorded input like any other
    a = rng.standard_normal((3, 5)).astype(np.float32)
    got = compiled(vk.tensor(a, device=device).T, vk.zeros(3, device=device), 1.5).numpy()
    np.testing.assert_allclose(got, ((a.T * 1.5) ** 2).sum(axis=0), rtol=1e-5)
    assert len(compiled._captures) == 1 and compiled._captures.popitem()[1].replays == 4


def test_new_shapes_or_values_record_their_own_step(device, rng):
    calls = []

    def fn(x, power):
        calls.append(x.shape)
        return (x ** power).sum()

    compiled = vk.compile(fn)
    for shape, power in [((4,), 2), ((4,), 2), ((7,), 2), ((4,), 3), ((7,), 2), ((4,), 2)]:
        x = rng.standard_normal(shape).astype(np.float32)
        got = compiled(vk.tensor(x, device=device), power).item()
        np.testing.assert_allclose(got, (x ** power).sum(), rtol=1e-5)
    assert calls == [(4,), (7,), (4,)]  # Python ran once per (shape, power)


def test_learning_rate_change_records_again(device):
    eager_model, eager_opt, eager_step = lenet_trainer(device, "float32")
    model, opt, step = lenet_trainer(device, "float32")
    compiled = vk.compile(step)
    for i, (x, y) in enumerate(_batches(device, "float32", 6)):
        if i == 4:  # as a scheduler would, after the step has replayed
            for o in (opt, eager_opt):
                o.param_groups[0]["lr"] = 0.01
        assert compiled(x, y).item() == eager_step(x, y).item()
    for p, q in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_optimizers_with_step_counters_replay(device, optimizer):
    # the kernel advances the step count on the device (and computes Adam's bias corrections
    # from it): the first step records, the second records again (no longer a first step),
    # later ones replay
    eager_model, eager_opt, eager_step = lenet_trainer(device, "float32", optimizer)
    model, opt, step = lenet_trainer(device, "float32", optimizer)
    compiled = vk.compile(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for x, y in _batches(device, "float32", 5):
            assert compiled(x, y).item() == eager_step(x, y).item()
    assert [c.replays for c in compiled._captures.values()] == [3]
    for p, q in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
        assert opt.state[p]["step"].item() == eager_opt.state[q]["step"].item() == 5


def test_random_draws_are_fresh_every_call(device):
    compiled = vk.compile(lambda x: F.dropout(x, 0.5, training=True))
    x = vk.ones((64,), device=device)
    vk.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        masks = [compiled(x).numpy().copy() for _ in range(4)]
    # the generator's position advances with each replayed draw (on Vulkan the kernel
    # advances it on the device)
    assert [c.replays for c in compiled._captures.values()][0] >= 2
    vk.manual_seed(3)
    expected = [F.dropout(x, 0.5, training=True).numpy() for _ in range(4)]
    for got, want in zip(masks, expected):
        np.testing.assert_array_equal(got, want)
    assert len({m.tobytes() for m in masks}) == 4


def test_gradients_accumulated_across_calls_stay_correct(device, rng):
    w = vk.tensor(rng.standard_normal(6).astype(np.float32), device=device, requires_grad=True)
    w_eager = vk.tensor(w.numpy(), device=device, requires_grad=True)

    def accumulate(weight, x):  # no zero_grad: .grad sums over calls
        (weight * x).sum().backward()

    compiled = vk.compile(lambda x: accumulate(w, x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(4):
            x = vk.tensor(rng.standard_normal(6).astype(np.float32), device=device)
            compiled(x)
            accumulate(w_eager, x)
    np.testing.assert_array_equal(w.grad.numpy(), w_eager.grad.numpy())


@pytest.mark.parametrize("inside", ["item", "upload"])
def test_host_transfers_inside_the_step_raise_and_leave_the_device_usable(device, inside):
    def fn(x):
        if inside == "item":
            return x.sum().item()
        return x + vk.tensor([1.0, 2.0], device=device)

    with pytest.raises(RuntimeError, match="vkgrad.compile"):
        vk.compile(fn)(vk.ones(2, device=device))
    assert device.kind == "host" or device.backend.recording is None
    assert (vk.ones(2, device=device) * 3).tolist() == [3.0, 3.0]


def test_a_dropped_step_gives_its_memory_back(vulkan):
    in_use = vulkan.backend.pool.in_use
    compiled = vk.compile(lambda x: (x @ x.T).relu().sum(axis=1))
    x = vk.ones((64, 64), device=vulkan)
    for _ in range(3):
        compiled(x)
    vk.synchronize()
    assert vulkan.backend.pool.in_use > in_use + 64 * 64  # the recording holds its temporaries
    del compiled, x
    gc.collect()
    assert vulkan.backend.pool.in_use == in_use


def test_nested_compiled_calls_are_part_of_the_outer_recording(device, rng):
    calls = []

    def inner(x):
        calls.append("inner")
        return x * 2

    compiled_inner = vk.compile(inner)
    compiled = vk.compile(lambda x: compiled_inner(x) + 1)
    x = rng.standard_normal(5).astype(np.float32)
    for _ in range(3):
        np.testing.assert_allclose(compiled(vk.tensor(x, device=device)).numpy(), x * 2 + 1,
                                   rtol=1e-6)
    assert len(calls) == 1


def test_other_threads_run_eagerly_while_a_step_records(vulkan, rng):
    # thread A records a step that pauses midway; meanwhile this thread uploads a tensor, reads
    # values and calls another compiled step. Capture is per thread: none of that is refused or
    # recorded, and this thread's tensor never gets memory that A's replays write
    resume, paused = threading.Event(), threading.Event()

    def step(x):
        t = x * 2
        u = t + 1
        del t  # freed during the recording: its memory stays the recording's
        if not resume.is_set():
            paused.set()
            resume.wait(60)
        return u * u

    def expected(x):
        u = x * np.float32(2) + np.float32(1)
        return u * u

    n = 1000
    compiled, outcome = vk.compile(step), []
    x = rng.standard_normal(n).astype(np.float32)

    def record():
        try:
            outcome.append(compiled(vk.tensor(x, device=vulkan)).numpy())
        except Exception as e:  # noqa: BLE001  (reported below, in the test's thread)
            outcome.append(e)

    thread = threading.Thread(target=record)
    thread.start()
    try:
        assert paused.wait(60)
        host = rng.standard_normal(n).astype(np.float32)
        kept = vk.tensor(host, device=vulkan)
        np.testing.assert_array_equal((kept * 3).numpy(), host * np.float32(3))
        np.testing.assert_array_equal(vk.compile(lambda v: v - 1)(kept).numpy(),
                                      host - np.float32(1))
    finally:
        resume.set()
        thread.join(60)
    got, = outcome
    if isinstance(got, Exception):
        raise got
    np.testing.assert_array_equal(got, expected(x))
    alone = vk.compile(step)
    alone(vk.tensor(x, device=vulkan))  # no other thread: what the step itself dispatches
    recorded = len(next(iter(compiled._captures.values())).recording.dispatches)
    assert recorded == len(next(iter(alone._captures.values())).recording.dispatches) == 3
    for _ in range(2):  # replays of the recording made while this thread worked
        x = rng.standard_normal(n).astype(np.float32)
        arg = vk.tensor(x, device=vulkan)
        vk.reset_stats()
        out = compiled(arg)
        # and a copy into its input (its result is too large to copy to staging with it)
        assert vk.stats()["dispatches"] == recorded and vk.stats()["copies"] == 1
        np.testing.assert_array_equal(out.numpy(), expected(x))
    np.testing.assert_array_equal(kept.numpy(), host)


def test_unhashable_arguments_are_refused(device):
    with pytest.raises(TypeError, match="tensors or hashable"):
        vk.compile(lambda x, options: x)(vk.ones(2, device=device), {"a": 1})


def test_switching_train_and_eval_mode_records_again(device, rng):
    norm = vk.nn.BatchNorm1d(3, device=device)
    compiled = vk.compile(lambda x: norm(x))
    x = vk.tensor(rng.standard_normal((6, 3)).astype(np.float32), device=device)
    for _ in range(2):
        compiled(x)  # training mode: batch statistics, running statistics updated
    norm.eval()
    with vk.no_grad():
        expected = norm(x).numpy()  # eval mode: the running statistics
    np.testing.assert_array_equal(compiled(x).numpy(), expected)


def _norm_dropout_trainer(device, optimizer):
    """A seeded conv net with BatchNorm and Dropout, and its training step."""
    vk.manual_seed(1)
    model = vk.nn.Sequential(
        vk.nn.Conv2d(1, 4, 3, device=device), vk.nn.BatchNorm2d(4, device=device),
        vk.nn.ReLU(), vk.nn.MaxPool2d(2), vk.nn.Flatten(), vk.nn.Dropout(0.3),
        vk.nn.Linear(4 * 13 * 13, 10, device=device))
    return model, classifier_step(model, TRAINERS[optimizer](model.parameters()))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batchnorm_dropout_training_and_eval_replay_bit_for_bit(device, optimizer):
    # two identical models and generators: one steps eagerly, one compiled; training steps
    # (batch statistics, running statistics, fresh dropout masks), then eval-mode inference,
    # then training again: losses, parameters, running statistics and outputs agree exactly
    eager_model, eager_step = _norm_dropout_trainer(device, optimizer)
    eager_state = vk.get_rng_state()
    model, step = _norm_dropout_trainer(device, optimizer)
    compiled, infer = vk.compile(step), vk.compile(lambda x: model(x))
    batches = _batches(device, "float32", 7)
    for phase in ("train", "eval", "train"):
        for m in (model, eager_model):
            m.train(phase == "train")
        for x, y in batches[:4] if phase == "train" else batches[4:]:
            if phase == "train":
                compiled_state = vk.get_rng_state()
                vk.default_generator.set_state(eager_state)
                want = eager_step(x, y).item()
                eager_state = vk.get_rng_state()
                vk.default_generator.set_state(compiled_state)
                assert compiled(x, y).item() == want
            else:
                with vk.no_grad():
                    want = eager_model(x).numpy()
                np.testing.assert_array_equal(infer(x).numpy(), want)
    assert max(c.replays for c in compiled._captures.values()) >= 2
    assert max(c.replays for c in infer._captures.values()) >= 1
    for (name, p), q in zip(model.state_dict().items(), eager_model.state_dict().values()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)


def test_a_host_replay_runs_no_op_table_or_autograd_code(monkeypatch):
    from vkgrad.ops import registry
    _, _, step = lenet_trainer(vk.device("host"), "float32", "adam")
    compiled = vk.compile(step)
    batches = _batches(vk.device("host"), "float32", 4)
    for x, y in batches[:2]:  # the first step records, the second records again (Adam's state)
        compiled(x, y)
    applied = []
    real_apply = registry._apply
    monkeypatch.setattr(registry, "_apply", lambda *a: applied.append(a[0].name) or real_apply(*a))
    losses = [compiled(x, y).item() for x, y in batches[2:]]
    assert applied == [] and all(np.isfinite(losses))
    capture, = [c for c in compiled._captures.values() if c.replays]
    assert capture.replays == 2 and len(capture.recording.calls) > 50


def test_a_host_step_that_a_replay_cannot_follow_runs_eagerly():
    # a numpy view of a step's result taken outside vkgrad's ops (here by hand) is invisible
    # to the recording: the step warns and runs eagerly, with correct results every call
    host = vk.device("host")

    def step(x):
        doubled = x * 2
        view = vk.Tensor._wrap(doubled._data[::2], host)
        return view + 1

    compiled = vk.compile(step)
    for k in range(3):
        x = np.arange(6, dtype=np.float32) + k
        with pytest.warns(RuntimeWarning, match="runs eagerly"):
            got = compiled(vk.tensor(x)).numpy()
        np.testing.assert_array_equal(got, x[::2] * 2 + 1)


def test_arguments_off_a_word_boundary_are_copied_by_a_kernel(vulkan, rng):
    # a contiguous word range goes in by vkCmdCopyBuffer; a bf16 view starting mid-word, or a
    # strided one, by the copy kernel; the small result comes back with the replay's submission
    compiled = vk.compile(lambda v: v * 2)
    x = rng.standard_normal(9).astype(np.float32)
    whole = vk.tensor(x, "bfloat16", vulkan)
    expected = (whole * 2).numpy()
    compiled(whole[:8])  # records
    compiled(whole[:8]).numpy()  # first replay
    recorded = len(next(iter(compiled._captures.values())).recording.dispatches)
    for view, kernel in [(whole[:8], 0), (whole[1:], 1), (whole[::2][:8], 1)]:
        vk.synchronize()
        vk.reset_stats()
        got = compiled(view).numpy()
        stats = vk.stats()
        assert stats["dispatches"] == recorded + kernel, stats
        assert stats["copies"] == (1 - kernel) + 1, stats  # the argument (by a copy), the result
        assert stats["submits"] == 1 and stats["host_syncs"] == 1, stats
        np.testing.assert_array_equal(got, (view * 2).numpy())
    np.testing.assert_array_equal(compiled(whole[1:]).numpy(), expected[1:])
