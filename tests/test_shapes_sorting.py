"""Shapes, sorting and selection, and einsum, against torch (forward and backward) on every device.

The op-table tests (tests/test_ops.py, tests/test_autograd_ops.py) cover these ops on random data;
here are the cases that random data misses: 0-d tensors with axis 0 / -1, squeeze's two
semantics, ties and NaN in sorts, stability, and einsum's forms.
"""
import numpy as np
import pytest
import torch

import vkgrad as vk
import vkgrad.nn.functional as F


def _t(x, device, requires_grad=False):
    return vk.tensor(np.asarray(x, np.float32), device=device, requires_grad=requires_grad)


# ---- shapes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, -1])
def test_zero_dim_axis(device, axis):
    x = _t(1.5, device, requires_grad=True)
    tx = torch.tensor(1.5, requires_grad=True)
    pairs = [(x.sum(axis), tx.sum(axis)), (x.sum(axis, keepdims=True), tx.sum(axis, True)),
             (x.mean(axis), tx.mean(axis)), (x.max(axis), tx.amax(axis)),
             (F.softmax(x, axis), torch.softmax(tx, axis)),
             (F.log_softmax(x, axis), torch.log_softmax(tx, axis)),
             (x.logsumexp(axis), tx.logsumexp(axis)), (x.cumsum(axis), tx.cumsum(axis)),
             (x.squeeze(axis), tx.squeeze(axis)), (vk.squeeze(x, axis), tx.squeeze(axis)),
             (x.flatten(), tx.flatten())]
    for got, want in pairs:
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6)
    total = sum(got for got, _ in pairs)
    total.backward()
    sum(want for _, want in pairs).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-6)
    with pytest.raises(IndexError, match="axis 1 is out of bounds"):
        x.sum(1)


def test_squeeze_semantics(device):
    x = _t(np.ones((2, 1, 3)), device)
    assert x.squeeze(0).shape == (2, 1, 3) == tuple(torch.ones(2, 1, 3).squeeze(0).shape)
    assert x.squeeze((0, 1)).shape == (2, 3)
    assert vk.squeeze(x, 1).shape == (2, 3) == np.squeeze(np.ones((2, 1, 3)), 1).shape
    with pytest.raises(ValueError, match="cannot squeeze axis 0 of size 2"):
        vk.squeeze(x, 0)


def test_flatten_unflatten_chunk_meshgrid(device):
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    x, tx = _t(a, device), torch.tensor(a)
    for start, end in [(0, -1), (1, 2), (0, 1), (2, 2), (-2, -1)]:
        np.testing.assert_array_equal(x.flatten(start, end).numpy(), tx.flatten(start, end))
    with pytest.raises(ValueError, match="start_dim 2 comes after end_dim 1"):
        x.flatten(2, 1)
    np.testing.assert_array_equal(x.unflatten(1, (2, -1)).numpy(), tx.unflatten(1, (2, -1)))
    for chunks, dim in [(2, 0), (3, 1), (4, 1), (7, 2), (1, -1)]:
        got, want = x.chunk(chunks, dim), tx.chunk(chunks, dim)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.numpy(), w)
    vs = [np.arange(n, dtype=np.float32) for n in (2, 3, 4)]
    for indexing in ("xy", "ij"):
        got = vk.meshgrid(*[_t(v, device) for v in vs], indexing=indexing)
        for g, w in zip(got, np.meshgrid(*vs, indexing=indexing)):
            np.testing.assert_array_equal(g.numpy(), w)
    for g, w in zip(vk.meshgrid(*[_t(v, device) for v in vs[:2]], indexing="ij"),
                    torch.meshgrid(*[torch.tensor(v) for v in vs[:2]], indexing="ij")):
        np.testing.assert_array_equal(g.numpy(), w)


def test_diagonal_is_a_view_and_diag_grad(device):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = _t(a.copy(), device)                             # (host tensors share memory)
    d = x.diagonal(1)
    d += 100.0                                           # writes through the view, as torch's
    np.testing.assert_array_equal(x.numpy(), a + 100 * np.eye(3, 4, 1, dtype=np.float32))
    v = _t([1.0, 2.0, 3.0], device, requires_grad=True)
    tv = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = np.arange(25, dtype=np.float32).reshape(5, 5)
    (vk.diag(v, -2) * _t(w, device)).sum().backward()
    (torch.diag(tv, -2) * torch.tensor(w)).sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), tv.grad)


# ---- sorting -----------------------------------------------------------------------------------
def _grad_pair(device, a):
    return _t(a, device, requires_grad=True), torch.tensor(np.asarray(a, np.float32),
                                                          requires_grad=True)


@pytest.mark.parametrize("descending", [False, True])
def test_sort_ties_nan_and_gradient(device, descending):
    a = np.array([[2.0, np.nan, -1.0, 2.0, 0.0, -0.0, np.inf, -np.inf, 2.0, np.nan],
                  [1.0, 1.0, 1.0, 0.5, 0.5, 3.0, -3.0, 1.0, 0.5, 1.0]], np.float32)
    x, tx = _grad_pair(device, a)
    got, want = x.sort(1, descending), torch.sort(tx, dim=1, descending=descending, stable=True)
    np.testing.assert_array_equal(got.values.numpy(), want.values.detach().numpy())
    np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    np.testing.assert_array_equal(
        x.argsort(axis=1, descending=descending).numpy(),
        torch.argsort(tx, dim=1, descending=descending, stable=True).numpy())
    g = np.arange(20, dtype=np.float32).reshape(2, 10)
    got.values.backward(_t(g, device))
    want.values.backward(torch.tensor(g))
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())


def test_sort_dtypes_and_long_rows(device, rng):
    for dtype, a in [("int32", rng.integers(-5, 5, (3, 700))), ("bfloat16", rng.standard_normal(
            (2, 1025))), ("float32", rng.standard_normal((4, 3, 17)))]:
        x = vk.tensor(a, dtype=dtype, device=device)
        order = np.argsort(x.numpy().astype(np.float64), axis=1, kind="stable")
        np.testing.assert_array_equal(x.argsort(axis=1).numpy(), order)
        np.testing.assert_array_equal(vk.sort(x, axis=1).numpy(), np.sort(x.numpy(), axis=1))
    s = _t(3.0, device)
    assert s.sort().values.shape == () and s.argsort(0).item() == 0


def test_topk(device, rng):
    a = np.round(rng.standard_normal((4, 12)), 1).astype(np.float32)
    x, tx = _grad_pair(device, a)
    for k, largest in [(3, True), (5, False), (12, True), (0, False)]:
        got, want = x.topk(k, 1, largest), torch.topk(tx, k, 1, largest)
        np.testing.assert_array_equal(got.values.numpy(), want.values.detach().numpy())
        # torch's tie order is unspecified: the indices must pick the same values
        np.testing.assert_array_equal(np.take_along_axis(a, got.indices.numpy(), 1),
                                      want.values.detach().numpy())
    x.topk(3, 1).values.sum().backward()
    torch.topk(tx, 3, 1).values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy().sum(1), tx.grad.numpy().sum(1))
    with pytest.raises(ValueError, match="k=13 is out of range"):
        x.topk(13)


# ---- running ops ---------------------------------------------------------------------------------
def test_cumprod_gradient_with_zeros(device):
    a = np.array([[2.0, 0.0, 3.0, -1.0, 0.5], [0.0, 0.0, 2.0, 1.0, 3.0],
                  [1.5, -2.0, 0.5, 3.0, 0.0], [1.0, 2.0, 3.0, 4.0, 5.0]], np.float32)
    x, tx = _grad_pair(device, a)
    got, want = x.cumprod(axis=1), torch.cumprod(tx, 1)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6)
    g = np.linspace(-1, 2, 20, dtype=np.float32).reshape(4, 5)
    got.backward(_t(g, device))
    want.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["cummax", "cummin"])
def test_cummax_cummin_ties_nan_and_gradient(device, name):
    a = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 5.0, 5.0], [2.0, np.nan, 1.0, 9.0, np.nan, 0.0, 1.0],
                  [-1.0, -1.0, -2.0, -2.0, 0.0, -3.0, -3.0]], np.float32)
    x, tx = _grad_pair(device, a)
    got, want = getattr(x, name)(dim=1), getattr(torch, name)(tx, 1)
    np.testing.assert_array_equal(got.values.numpy(), want.values.detach().numpy())
    np.testing.assert_array_equal(got.indices.numpy(), want.indices.numpy())
    g = np.arange(21, dtype=np.float32).reshape(3, 7)
    got.values.backward(_t(g, device))
    want.values.backward(torch.tensor(g))
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())
    ints = vk.tensor([[3, 1, 4, 1, 5, 9, 2, 6]], device=device)
    np.testing.assert_array_equal(getattr(ints, name)(1).indices.numpy(), getattr(torch, name)(
        torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]]), 1).indices.numpy())


def test_logcumsumexp_stable(device):
    a = np.array([[-1e4, 0.0, 1e4, -np.inf, 3.0], [-np.inf, -np.inf, 0.0, 1.0, 80.0],
                  [100.0, 100.0, -100.0, 100.0, 89.0]], np.float32)
    x, tx = _grad_pair(device, a)
    got, want = x.logcumsumexp(dim=1), torch.logcumsumexp(tx, 1)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6)
    g = np.linspace(-2, 2, 15, dtype=np.float32).reshape(3, 5)
    got.backward(_t(g, device))
    want.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


# ---- scatter and selection ----------------------------------------------------------------------
@pytest.mark.parametrize("reduce", ["sum", "prod", "amax", "amin", "mean"])
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_against_torch(device, reduce, include_self):
    a = np.array([[1.0, 2.0, 0.0, 4.0], [2.0, -1.0, 3.0, 3.0], [0.5, 2.0, 2.0, -2.0]], np.float32)
    src = np.array([[2.0, 2.0, 0.0, 5.0, 1.0], [1.0, 3.0, 3.0, -1.0, 0.0],
                    [2.0, 0.5, 0.0, 2.0, 2.0]], np.float32)
    index = np.array([[0, 0, 2, 0, 1], [3, 1, 2, 2, 2], [1, 1, 1, 3, 0]])
    x, tx = _grad_pair(device, a)
    s, ts = _grad_pair(device, src)
    got = x.scatter_reduce(1, vk.tensor(index, device=device), s, reduce,
                           include_self=include_self)
    want = tx.scatter_reduce(1, torch.tensor(index), ts, reduce, include_self=include_self)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-6)
    g = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    got.backward(_t(g, device))
    want.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.grad.numpy(), ts.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_scatter_and_index_errors(device):
    a = np.zeros((3, 5), np.float32)
    index = np.array([[4, 0], [1, 3]])
    src = np.arange(4, dtype=np.float32).reshape(2, 2)  # (torch's backward fails on a larger src)
    x, tx = _grad_pair(device, a)
    s, ts = _grad_pair(device, src)
    got = x.scatter(1, vk.tensor(index, device=device), s)
    want = tx.scatter(1, torch.tensor(index), ts)
    np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
    np.testing.assert_array_equal(vk.scatter(x, 0, index % 3, 7.0).numpy(),
                                  tx.detach().scatter(0, torch.tensor(index % 3), 7.0))
    g = np.arange(15, dtype=np.float32).reshape(3, 5)
    got.backward(_t(g, device))
    want.backward(torch.tensor(g))
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())
    np.testing.assert_array_equal(s.grad.numpy(), ts.grad.numpy())
    with pytest.raises(IndexError, match="scatter: index 5 is out of bounds for dim 1"):
        x.scatter(1, [[5]], 1.0)
    with pytest.raises(ValueError, match="needs as many dims"):
        x.scatter(1, [1], 1.0)
    with pytest.raises(ValueError, match="reduce must be one of"):
        x.scatter_reduce(1, index, s, "max")
    if device.kind == "vulkan":  # device indices: checked by the kernel, raised at the next sync
        bad = vk.tensor([[1, 5]], device=device)
        with pytest.raises(IndexError, match="scatter_reduce: index out of range"):
            x.scatter_reduce(1, bad, s, "sum").numpy()


def test_nonzero_and_masked_select(device):
    a = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]], np.float32)
    x, tx = _grad_pair(device, a)
    np.testing.assert_array_equal(x.nonzero().numpy(), tx.nonzero().numpy())
    for got, want in zip(vk.nonzero(x), np.nonzero(a)):
        np.testing.assert_array_equal(got.numpy(), want)
    mask = np.array([True, False, True])
    got = x.masked_select(vk.tensor(mask, device=device))
    want = tx.masked_select(torch.tensor(mask))
    np.testing.assert_array_equal(got.numpy(), want.detach().numpy())
    got.sum().backward()
    want.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), tx.grad.numpy())
    assert vk.zeros((2, 3), device=device).nonzero().shape == (0, 2)


# ---- einsum ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,shapes", [
    ("ii->", [(4, 4)]), ("ii->i", [(5, 5)]), ("ij->", [(3, 4)]), ("ijk->kji", [(2, 3, 4)]),
    ("iij->j", [(3, 3, 2)]), ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]), ("...i,...i", [(3, 4), (4,)]),
    ("bii,bij,k->bjk", [(2, 3, 3), (2, 3, 4), (2,)]), ("a,b,c,d->abcd", [(2,), (3,), (1,), (2,)]),
    ("ij,ij,ij->", [(3, 4)] * 3), ("i...j->j...i", [(2, 3, 4, 5)])])
def test_einsum_against_torch(device, rng, spec, shapes):
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours = [_t(a, device, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    got, want = vk.einsum(spec, *ours), torch.einsum(spec, *theirs)
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.numpy(), np.einsum(spec, *arrays), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(want.shape).astype(np.float32)
    got.backward(_t(g, device))
    want.backward(torch.tensor(g))
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-5)
