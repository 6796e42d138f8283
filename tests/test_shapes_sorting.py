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
