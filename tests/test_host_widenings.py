"""The host's widenings of bf16 weights (NumpyBackend.widened, Op.widens): each weight of at
least KEEP_MIN elements is widened to float32 once per training step and by the first of
repeated inference calls, kept until its memory is written (through any of vkgrad's in-place
paths) or dies, used inside a recording only if made there, and the results are bit for bit
those of widening on every use.

NET keeps two widenings per forward: its convolution's weight (18,432 values) and its first
linear layer's (20,480); the conv's bias and the last layer (100 values) are widened where used."""
import copy
import gc
import weakref

import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad import nn
from vkgrad.backend.host import KEEP_MIN
from vkgrad.ops.elementwise import WIDEN_WEIGHT
from vkgrad.ops.registry import apply

from conftest import TRAINERS, classifier_step

KEPT = 2


def widenings():
    return vk.stats()["host_widenings"]


def trainer(optimizer="sgd", dtype=vk.bfloat16):
    """(model, optimizer, step(x, y) -> loss): a seeded NET and its training step."""
    vk.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 128, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2048, 10),
                          nn.ReLU(), nn.Linear(10, 10)).to(dtype)
    assert [p.size >= KEEP_MIN for p in model.parameters()] == [True, False, True] + [False] * 3
    opt = TRAINERS[optimizer](model.parameters())
    return model, opt, classifier_step(model, opt)


def batch(seed=1, n=4, dtype=vk.bfloat16):
    rng = np.random.default_rng(seed)
    return (vk.tensor(rng.standard_normal((n, 16, 6, 6)), dtype=dtype),
            vk.tensor(rng.integers(0, 10, n)))


def fresh_logits(model, x):
    """model(x) computed by a copy of the model: new arrays, so nothing kept is used."""
    with vk.no_grad():
        return copy.deepcopy(model)(x).numpy()


def grads(model):
    return [p.grad.numpy().copy() for p in model.parameters()]


def test_a_training_step_widens_each_weight_once():
    model, opt, step = trainer()
    x, y = batch()
    vk.reset_stats()
    F.cross_entropy(model(x), y).backward()
    assert widenings() == KEPT                   # the backward found the forward's widenings
    first = grads(model)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()      # unchanged weights: nothing widened again
    assert widenings() == KEPT
    assert all(np.array_equal(a, b) for a, b in zip(first, grads(model)))
    opt.step()                                   # writes every weight
    vk.reset_stats()
    for _ in range(3):
        step(x, y)
    assert widenings() == 3 * KEPT


def test_repeated_inference_widens_once_and_matches_widening_every_time():
    model, _, _ = trainer()
    x, _ = batch(n=5)
    vk.reset_stats()
    with vk.no_grad():
        a, b = model(x).numpy(), model(x).numpy()
    assert widenings() == KEPT
    assert np.array_equal(a, b) and np.array_equal(a, fresh_logits(model, x))


@pytest.mark.parametrize("write", ["optimizer", "setitem", "row", "iadd", "load_state_dict",
                                   "init", "module_to"])
def test_every_write_to_a_weight_is_seen(write):
    model, opt, _ = trainer()
    x, y = batch(n=4)
    with vk.no_grad():
        before = model(x).numpy()
    fc1, conv1 = model[3].weight, model[0].weight
    vk.reset_stats()
    if write == "optimizer":
        F.cross_entropy(model(x), y).backward()   # (widens nothing: all kept)
        opt.step()
    with vk.no_grad():
        if write == "setitem":
            conv1[...] = conv1 * 2
        elif write == "row":
            fc1[3] = 0.5
        elif write == "iadd":
            fc1 += 0.125
        elif write == "load_state_dict":
            model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
        elif write == "init":
            nn.init.normal_(conv1)
        elif write == "module_to":   # new arrays, not a write: widened as any new weight
            model.to(vk.float32)
            fc1 += 0.125
            model.to(vk.bfloat16)
        after = model(x).numpy()
    # the weights written (both kept ones, or the one named) are widened again, the other not
    assert widenings() == (1 if write in ("setitem", "row", "iadd", "init") else KEPT)
    assert not np.array_equal(after, before)
    assert np.array_equal(after, fresh_logits(model, x))


def test_a_write_anywhere_in_a_weights_memory_is_seen_by_each_view():
    # two weights of equal shape in one array: kept apart, and both forgotten on a write
    n = KEEP_MIN
    flat = vk.tensor(np.random.default_rng(2).standard_normal(2 * n), dtype=vk.bfloat16)
    w1, w2 = flat[:n].reshape(128, -1), flat[n:].reshape(128, -1)
    b = vk.zeros(128, dtype=vk.bfloat16)
    x = vk.tensor(np.random.default_rng(3).standard_normal((2, n // 128)), dtype=vk.bfloat16)
    want = [F.linear(x, w.astype(vk.float32), b.astype(vk.float32)).astype(vk.bfloat16).numpy()
            for w in (w1, w2)]
    vk.reset_stats()
    got = [F.linear(x, w, b).numpy() for w in (w1, w2, w1, w2)]
    assert widenings() == 2
    assert all(np.array_equal(g, want[i % 2]) for i, g in enumerate(got))
    flat[0] = 4.0                              # w1's memory, and so the array both views share
    assert F.linear(x, w2, b).numpy().tolist() == want[1].tolist() and widenings() == 3
    assert not np.array_equal(F.linear(x, w1, b).numpy(), want[0]) and widenings() == 4


def test_conv_training_and_inference_match_widening_every_time():
    rng = np.random.default_rng(4)
    x = vk.tensor(rng.standard_normal((3, 32, 9, 7)), dtype=vk.bfloat16)
    w = vk.tensor(rng.standard_normal((64, 32, 3, 3)), dtype=vk.bfloat16, requires_grad=True)
    b = vk.tensor(rng.standard_normal(64), dtype=vk.bfloat16, requires_grad=True)
    g = vk.tensor(rng.standard_normal((3, 64, 9, 5)), dtype=vk.bfloat16)
    vk.reset_stats()
    results = []
    for _ in range(2):
        w.grad = b.grad = None
        out = F.conv2d(x, w, b, padding=(1, 0))
        out.backward(g)
        results.append([out.numpy(), w.grad.numpy(), b.grad.numpy()])
    assert widenings() == 1                      # w (b is small), by the first forward
    with vk.no_grad():
        results.append([F.conv2d(x, w, b, padding=(1, 0)).numpy()])
    assert widenings() == 1
    # the same convolution with weights never seen before (copies): widened afresh
    wc, bc = (t.detach().astype(t.dtype).requires_grad_() for t in (w, b))
    out = F.conv2d(x, wc, bc, padding=(1, 0))
    out.backward(g)
    assert widenings() == 2
    want = [out.numpy(), wc.grad.numpy(), bc.grad.numpy()]
    for got in results:
        assert all(np.array_equal(a, e) for a, e in zip(got, want))


def test_small_weights_are_widened_where_used():
    rng = np.random.default_rng(5)
    w = vk.tensor(rng.standard_normal((10, KEEP_MIN // 10 - 1)), dtype=vk.bfloat16)
    b = vk.tensor(rng.standard_normal(10), dtype=vk.bfloat16)
    x = vk.tensor(rng.standard_normal((3, w.shape[1])), dtype=vk.bfloat16)
    vk.reset_stats()
    first = F.linear(x, w, b).numpy()
    w[0, 0] = 2.0
    assert widenings() == 0
    assert apply(WIDEN_WEIGHT, w)._data is not apply(WIDEN_WEIGHT, w)._data
    want = F.linear(*(t.astype(vk.float32) for t in (x, w, b))).astype(vk.bfloat16).numpy()
    assert np.array_equal(F.linear(x, w, b).numpy(), want)
    assert not np.array_equal(first, want)


def test_float32_widens_nothing():
    model, _, step = trainer(dtype=vk.float32)
    x, y = batch(dtype=vk.float32)
    vk.reset_stats()
    step(x, y)
    with vk.no_grad():
        model(x)
    assert widenings() == 0


def test_a_dead_weight_leaves_no_widening_behind():
    w = vk.tensor(np.ones((128, 128)), dtype=vk.bfloat16)
    wide = apply(WIDEN_WEIGHT, w)                # the kept widening itself
    assert apply(WIDEN_WEIGHT, w)._data is wide._data
    kept = weakref.ref(wide._data)
    del w, wide
    gc.collect()
    assert kept() is None


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_compiled_training_step_equals_eager_and_widens_in_each_replay(optimizer):
    x, y = batch(n=6)
    runs = []
    for compiled in (False, True):
        model, _, step = trainer(optimizer)
        step = vk.compile(step) if compiled else step
        vk.reset_stats()
        losses, logits = [], []
        for _ in range(5):
            losses.append(step(x, y).numpy().copy())   # recorded, then replayed
            with vk.no_grad():            # eager between replays: kept until the next replay
                logits.append(model(x).numpy().copy())
        # eager, each forward after a step widens and the next step's finds those; a recorded
        # step cannot use them, and each replay widens again
        assert widenings() == (10 if compiled else 6) * KEPT
        runs.append((losses, [p.numpy().copy() for p in model.parameters()], logits))
    (eager_losses, eager_params, eager_logits), (losses, params, logits) = runs
    assert all(np.array_equal(a, b) for a, b in zip(losses, eager_losses))
    assert all(np.array_equal(a, b) for a, b in zip(params, eager_params))
    assert all(np.array_equal(a, b) for a, b in zip(logits, eager_logits))


def test_compiled_inference_follows_weights_changed_outside_it():
    model, opt, _ = trainer()
    x, y = batch(n=4)
    with vk.no_grad():
        model(x)                                 # kept before the recording: not used in it
    infer = vk.compile(model)
    with vk.no_grad():
        outs = [infer(x).numpy().copy()]         # records
        outs.append(infer(x).numpy().copy())     # replays
    F.cross_entropy(model(x), y).backward()
    opt.step()
    with vk.no_grad():
        outs.append(infer(x).numpy().copy())
        fc2 = model[3].weight
        fc2 *= 0.5
        outs.append(infer(x).numpy().copy())
        model[0].bias[...] = 1.0
        outs.append(infer(x).numpy().copy())
        assert np.array_equal(outs[-1], fresh_logits(model, x))
    assert np.array_equal(outs[0], outs[1])
    assert all(not np.array_equal(a, b) for a, b in zip(outs[1:], outs[2:]))
    fresh = trainer()[0]  # the same changes, eagerly, from the seed
    F.cross_entropy(fresh(x), y).backward()
    vk.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9).step()
    with vk.no_grad():
        assert np.array_equal(outs[2], fresh(x).numpy())
        fc2 = fresh[3].weight
        fc2 *= 0.5
        assert np.array_equal(outs[3], fresh(x).numpy())
