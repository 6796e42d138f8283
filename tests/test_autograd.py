"""Autograd semantics: the API, control flow, higher-order gradients against torch, memory,
threads and the device work a backward pass costs. (Per-op rules: test_autograd_ops.py.)"""
import gc
import threading

import numpy as np
import pytest
import torch

import vkgrad as vk


def _pair(rng, shape, device, dtype="float32"):
    """The same random values as a vkgrad leaf and a float64 torch leaf."""
    values = rng.standard_normal(shape)
    t = vk.tensor(values, dtype=dtype, device=device, requires_grad=True)
    return t, torch.tensor(t.numpy().astype(np.float64), requires_grad=True)


def _close(t, expected, tol=1e-5):
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    np.testing.assert_allclose(t.numpy().astype(np.float64), expected, rtol=tol, atol=tol)


# ---- API ------------------------------------------------------------------------------------------
def test_flags_and_leaves(device):
    x = vk.tensor([1.0, 2.0], device=device, requires_grad=True)
    c = vk.tensor([3.0, 4.0], device=device)
    y = x * c
    assert x.requires_grad and x.is_leaf and x.grad_fn is None
    assert y.requires_grad and not y.is_leaf and "mul" in repr(y.grad_fn)
    assert not c.requires_grad and c.is_leaf and not (c * 2).requires_grad
    d = y.detach()
    assert not d.requires_grad and d.is_leaf and np.array_equal(d.numpy(), y.numpy())
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
    with pytest.raises(TypeError, match="floating"):
        vk.tensor([1, 2], device=device).requires_grad_()
    assert (x > 1).requires_grad is False and x.argmax().requires_grad is False
    assert "requires_grad=True" in repr(x) and "grad_fn" in repr(y)


def test_backward_accumulates_and_frees(device):
    x = vk.tensor([1.0, -2.0, 3.0], device=device, requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()  # accumulates
    _close(x.grad, 2 * np.array([1.0, -2.0, 3.0]) + 3)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()              # the retained graph can be used once more, then it is freed
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    with pytest.raises(RuntimeError, match="one element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(vk.ones(2, device=device))
    with pytest.raises(RuntimeError, match="does not require grad"):
        vk.ones(3, device=device).sum().backward()


def test_grad_function(device):
    x = vk.tensor([0.5, 1.5], device=device, requires_grad=True)
    w = vk.tensor([2.0, -1.0], device=device, requires_grad=True)
    unused = vk.tensor(1.0, device=device, requires_grad=True)
    y = (x * w).sum()
    gx, gw = vk.grad(y, [x, w], retain_graph=True)
    _close(gx, [2.0, -1.0])
    _close(gw, [0.5, 1.5])
    assert x.grad is None and w.grad is None  # grad() does not touch .grad
    with pytest.raises(RuntimeError, match="not used"):
        vk.grad(y, [x, unused], retain_graph=True)
    assert vk.grad(y, [unused], allow_unused=True) == (None,)
    # the gradient of a non-leaf, and a weighted non-scalar output
    h = x * 3
    z = h * h
    (gh,) = vk.grad(z, h, vk.tensor([1.0, 2.0], device=device))
    _close(gh, 2 * np.array([1.5, 4.5]) * [1.0, 2.0])


def test_retain_grad(device):
    x = vk.tensor([1.0, 2.0], device=device, requires_grad=True)
    h = x * x
    h.retain_grad()
    (h * 3).sum().backward()
    _close(h.grad, [3.0, 3.0])
    _close(x.grad, [6.0, 12.0])


def test_no_grad_and_enable_grad(device):
    x = vk.tensor([1.0], device=device, requires_grad=True)
    with vk.no_grad():
        assert not (x * 2).requires_grad
        with vk.enable_grad():
            assert (x * 2).requires_grad
        assert not vk.is_grad_enabled()
    assert vk.is_grad_enabled()

    @vk.no_grad()
    def frozen(t):
        return t * 2

    assert not frozen(x).requires_grad and vk.is_grad_enabled()
    with vk.set_grad_enabled(False):
        assert not (x + 1).requires_grad


def test_inplace_rules(device):
    x = vk.tensor([1.0, 2.0], device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="in place"):
        x += 1
    with pytest.raises(RuntimeError, match="in-place"):
        x[0] = 5.0
    with vk.no_grad():  # how optimizers update parameters
        x -= 0.5
        x[1] = 7.0
    _close(x, [0.5, 7.0])
    acc = vk.zeros(2, device=device)
    acc += x * x  # recorded: a new tensor, the name rebound
    assert acc.requires_grad
    acc.sum().backward()
    _close(x.grad, [1.0, 14.0])


def test_gradient_dtypes(device):
    x = vk.tensor([1.0, 2.0], dtype="bfloat16", device=device, requires_grad=True)
    w = vk.tensor([0.5, 0.25], device=device, requires_grad=True)  # float32
    (x * w).sum().backward()  # bf16 * f32 computes in f32
    assert x.grad.dtype is vk.bfloat16 and w.grad.dtype is vk.float32
    _close(x.grad, [0.5, 0.25])
    _close(w.grad, [1.0, 2.0])


def test_broadcast_gradients_sum_back(device, rng):
    a, ta = _pair(rng, (3, 1, 5), device)
    b, tb = _pair(rng, (4, 5), device)
    c, tc = _pair(rng, (), device)
    ((a * b + c) ** 2).mean().backward()
    ((ta * tb + tc) ** 2).mean().backward()
    for t, r in ((a, ta), (b, tb), (c, tc)):
        assert t.grad.shape == t.shape
        _close(t.grad, r.grad)


# ---- control flow ------------------------------------------------------------------------------
def test_unrolled_recurrent_cell(device, rng):
    wx, twx = _pair(rng, (3, 4), device)
    wh, twh = _pair(rng, (4, 4), device)
    xs = rng.standard_normal((6, 2, 3))
    h, th = vk.zeros((2, 4), device=device), torch.zeros(2, 4, dtype=torch.float64)
    for step in xs:  # a Python loop: the graph is as long as the sequence
        h = (vk.tensor(step, dtype="float32", device=device) @ wx + h @ wh).tanh()
        th = (torch.from_numpy(step) @ twx + th @ twh).tanh()
    (h * h).sum().backward()
    (th * th).sum().backward()
    _close(h, th)
    _close(wx.grad, twx.grad, 1e-4)
    _close(wh.grad, twh.grad, 1e-4)


def test_data_dependent_branch_and_detach(device):
    for value in (2.0, -2.0):
        x = vk.tensor(value, device=device, requires_grad=True)
        y = x * x * x if x.item() > 0 else -x  # the branch taken is the one differentiated
        y.backward()
        assert x.grad.item() == pytest.approx(12.0 if value > 0 else -1.0)
    x = vk.tensor(3.0, device=device, requires_grad=True)
    (x * x.detach()).backward()  # detach: a constant for autograd
    assert x.grad.item() == pytest.approx(3.0)


def test_shared_subexpression_and_deep_chain(device):
    x = vk.tensor(0.3, device=device, requires_grad=True)
    y = x
    for _ in range(2000):  # deeper than Python's recursion limit would allow a recursive walk
        y = y * 1.0001
    z = y + y.sin()  # y feeds two uses: both contributions add up
    z.backward()
    scale = 1.0001 ** 2000
    assert x.grad.item() == pytest.approx(scale * (1 + np.cos(0.3 * scale)), rel=1e-4)


# ---- higher order -------------------------------------------------------------------------------
def _softmax(t, axis):
    e = (t - t.max(axis=axis, keepdims=True)).exp()
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(t, axis):
    return t - t.logsumexp(axis=axis, keepdims=True)


def _t_log_softmax(t, axis):
    return t - torch.logsumexp(t, dim=axis, keepdim=True)


SECOND_ORDER = {
    "elementwise chain": (lambda x, w: ((x * w).tanh() * x.exp() + (x * x + 1).sqrt()).sum(),
                          lambda x, w: ((x * w).tanh() * x.exp() + (x * x + 1).sqrt()).sum()),
    "matmul": (lambda x, w: ((x @ w).sigmoid() ** 2).sum(),
               lambda x, w: ((x @ w).sigmoid() ** 2).sum()),
    "reductions": (lambda x, w: (x * w).var(axis=1).sum() + (x * w).max(axis=0).sum(),
                   lambda x, w: (x * w).var(dim=1, unbiased=False).sum()
                   + (x * w).amax(dim=0).sum()),
    "softmax": (lambda x, w: (_softmax(x * w, 1) * w).sum(),
                lambda x, w: (torch.softmax(x * w, 1) * w).sum()),
    "log_softmax": (lambda x, w: (_log_softmax(x * w, 1) ** 2).sum(),
                    lambda x, w: (_t_log_softmax(x * w, 1) ** 2).sum()),
}


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order_against_torch(device, name):
    rng = np.random.default_rng(11)
    f, tf = SECOND_ORDER[name]
    x, tx = _pair(rng, (4, 4), device)
    w, tw = _pair(rng, (4, 4), device)
    v = rng.standard_normal((4, 4))
    # Hessian-vector product d/dx <df/dx, v>, and a gradient penalty's d/dw |df/dx|^2
    (gx,) = vk.grad(f(x, w), x, create_graph=True)
    hvp, = vk.grad((gx * vk.tensor(v, dtype="float32", device=device)).sum(), x, retain_graph=True)
    (penalty_w,) = vk.grad((gx * gx).sum(), w)
    (tgx,) = torch.autograd.grad(tf(tx, tw), tx, create_graph=True)
    (thvp,) = torch.autograd.grad((tgx * torch.from_numpy(v)).sum(), tx, retain_graph=True)
    (tpenalty_w,) = torch.autograd.grad((tgx * tgx).sum(), tw)
    _close(gx, tgx, 1e-4)
    _close(hvp, thvp, 1e-3)
    _close(penalty_w, tpenalty_w, 1e-3)


def test_third_derivative(device):
    x = vk.tensor(0.7, device=device, requires_grad=True)
    y = x.sin() * x
    d1, = vk.grad(y, x, create_graph=True)
    d2, = vk.grad(d1, x, create_graph=True)
    d3, = vk.grad(d2, x)
    assert d3.item() == pytest.approx(-3 * np.sin(0.7) - 0.7 * np.cos(0.7), rel=1e-5)


# ---- custom functions --------------------------------------------------------------------------
class MulAdd(vk.autograd.Function):
    """(x * y + 1, x - y): two outputs, one saved tensor pair."""

    @staticmethod
    def forward(ctx, x, y, unused_scale=1.0):
        ctx.save_for_backward(x, y)
        assert not vk.is_grad_enabled()  # forward runs unrecorded
        return x * y + 1, x - y

    @staticmethod
    def backward(ctx, g_prod, g_diff):
        x, y = ctx.saved_tensors
        return g_prod * y + g_diff, g_prod * x - g_diff, None


def test_custom_function(device, rng):
    x, tx = _pair(rng, (3,), device)
    y, ty = _pair(rng, (3,), device)
    p, d = MulAdd.apply(x, y)
    assert p.requires_grad and not p.is_leaf
    (p * p + d * 3).sum().backward()
    ((tx * ty + 1) ** 2 + (tx - ty) * 3).sum().backward()
    _close(x.grad, tx.grad)
    _close(y.grad, ty.grad)
    with vk.no_grad():
        assert not MulAdd.apply(x, y)[0].requires_grad
    # backward is recorded under create_graph, so the custom op differentiates twice
    x.grad = None
    p, _ = MulAdd.apply(x, y)
    (gx,) = vk.grad((p * p).sum(), x, create_graph=True)
    (gy,) = vk.grad(gx.sum(), y)
    (tgx,) = torch.autograd.grad(((tx * ty + 1) ** 2).sum(), tx, create_graph=True)
    (tgy,) = torch.autograd.grad(tgx.sum(), ty)
    _close(gy, tgy)


# ---- memory, threads, device work ---------------------------------------------------------------
def test_saved_tensors_are_released(vulkan):
    gc.collect()
    pool = vulkan.backend.pool
    x = vk.tensor(np.random.default_rng(0).standard_normal(1 << 16), "float32", vulkan,
                  requires_grad=True)
    base = pool.in_use
    y = x
    for _ in range(20):
        y = (y * 1.01).tanh()  # tanh saves its output, mul its inputs: 20+ saved tensors
    loss = y.sum()
    held = (pool.in_use - base) * 4  # the pool counts 32-bit words
    assert held >= 20 * x.size * 4
    loss.backward()
    del y
    gc.collect()
    # after backward only x.grad and the loss remain (the graph's saved tensors are freed)
    assert (pool.in_use - base) * 4 <= x.size * 4 + 4096
    # dropping the outputs of a graph that is never differentiated frees it too
    base = pool.in_use
    z = x
    for _ in range(20):
        z = (z * 1.01).tanh()
    del z
    assert (pool.in_use - base) * 4 <= 4096
    assert vulkan.backend.memory_stats()["in_use_bytes"] == pool.in_use * 4


def test_fifty_op_backward_is_one_submit(vulkan):
    x = vk.tensor(np.linspace(-1, 1, 1000), "float32", vulkan, requires_grad=True)
    w = vk.tensor(np.linspace(0.5, 1.5, 1000), "float32", vulkan, requires_grad=True)
    ops = [lambda t: t * w, lambda t: t.tanh(), lambda t: t + x, lambda t: t.sigmoid(),
           lambda t: t - w * 0.5]

    def chain():
        y = x
        for i in range(50):
            y = ops[i % len(ops)](y)
        y.sum().backward()

    chain()  # first use: the kernels' pipelines are created
    x.grad = w.grad = None
    vk.synchronize()
    vk.reset_stats()
    chain()
    assert vk.stats()["submits"] == 0  # forward and backward only queue work
    vk.synchronize()
    stats = vk.stats()
    assert stats["submits"] == 1 and stats["host_syncs"] == 1, stats
    assert stats["pipelines_created"] == 0 and stats["device_bytes_allocated"] == 0, stats
    grads = x.grad.numpy(), w.grad.numpy()
    tx = torch.tensor(np.linspace(-1, 1, 1000), dtype=torch.float32, requires_grad=True)
    tw = torch.tensor(np.linspace(0.5, 1.5, 1000), dtype=torch.float32, requires_grad=True)
    ty = tx
    tops = [lambda t: t * tw, torch.tanh, lambda t: t + tx, torch.sigmoid, lambda t: t - tw * 0.5]
    for i in range(50):
        ty = tops[i % len(tops)](ty)
    ty.sum().backward()
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[1], tw.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_independent_graphs_in_threads(device):
    results, errors = {}, []

    def work(k):
        try:
            rng = np.random.default_rng(k)
            a, ta = _pair(rng, (16, 8), device)
            b, tb = _pair(rng, (8, 4), device)
            for _ in range(5):
                with vk.no_grad():  # grad mode is per thread: this must not leak to the others
                    (a * 2).sum()
                ((a @ b).relu() ** 2).mean().backward()
            ((ta @ tb).relu() ** 2).mean().backward()
            results[k] = (a.grad.numpy(), ta.grad.numpy() * 5, b.grad.numpy(),
                          tb.grad.numpy() * 5)
        except Exception as e:  # reported below: an assertion in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 4
    for ga, ta, gb, tb in results.values():
        np.testing.assert_allclose(ga, ta, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(gb, tb, rtol=1e-4, atol=1e-6)


def test_deepcopy(device):
    import copy
    w = vk.nn.Parameter(vk.tensor([1.0, 2.0], device=device))
    w.grad = vk.tensor([0.5, 0.5], device=device)
    c = copy.deepcopy(w)
    assert type(c) is vk.nn.Parameter and c.requires_grad and c.device == device
    with vk.no_grad():
        w += 1
        w.grad += 1
    _close(c, [1.0, 2.0])      # its own memory
    _close(c.grad, [0.5, 0.5])
    with pytest.raises(RuntimeError, match="leaf"):
        copy.deepcopy(w * 2)
