"""Scatter-combine with repeated indices is deterministic on Vulkan and equals the host bit for bit.

add_at, index_add (and so the backward of indexing, embedding and take_along_axis) and
scatter_reduce combine every source hitting a destination in source order (shaders/scatter.comp
after a stable sort of the destinations), as numpy's ufunc.at does on the host: no float atomics,
whose order would change from run to run on a GPU. The values are chosen so that another order
gives another f32 result (1e8 + 1 - 1e8 is 0, 1 + 1e8 - 1e8 is 0, 1e8 - 1e8 + 1 is 1).
"""
import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad.ops.indexing import index_add

SOURCES, DESTINATIONS = 10_000, 7


def _colliding(seed=0, n=SOURCES, shape=()):
    """n indices into DESTINATIONS and values whose f32 sum depends on the order of addition."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, DESTINATIONS, n).astype(np.int32)
    pattern = np.array([1e8, 1.0, -1e8, 0.5, 3.0, -1e8, 1e8, 0.25], np.float32)
    values = pattern[rng.integers(0, len(pattern), (n, *shape))] \
        * rng.choice(np.float32([1, -1, 0.75]), (n, *shape))
    return index, values.astype(np.float32)


def _host_add_at(index, values, shape, dtype=np.float32):
    out = np.zeros(shape, dtype)
    np.add.at(out, index, values)
    return out


def _bits(a):
    a = np.asarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 1: np.uint8}[a.dtype.itemsize])


def _assert_bits(got, want):
    np.testing.assert_array_equal(_bits(got), _bits(np.asarray(want, got.dtype)))


def test_the_order_of_addition_matters_for_these_values():
    """The test data is sensitive: a sorted-by-value or reversed summation gives other sums."""
    index, values = _colliding()
    want = _host_add_at(index, values, DESTINATIONS)
    reversed_ = _host_add_at(index[::-1], values[::-1], DESTINATIONS)
    assert not np.array_equal(want, reversed_)


def test_add_at_equals_numpy_bit_for_bit_and_repeats(vulkan):
    index, values = _colliding()
    want = _host_add_at(index, values, DESTINATIONS)
    runs = []
    for _ in range(3):
        x = vk.zeros(DESTINATIONS, device=vulkan)
        vk.add_at(x, vk.tensor(index, device=vulkan), vk.tensor(values, device=vulkan))
        runs.append(x.numpy())
        _assert_bits(runs[-1], want)
    for host_key in (index, index.tolist()):  # host indices: the same path, the same sums
        x = vk.zeros(DESTINATIONS, device=vulkan)
        vk.add_at(x, host_key, vk.tensor(values, device=vulkan))
        _assert_bits(x.numpy(), want)


def test_add_at_starts_from_the_destination_and_matches_the_host_backend(device):
    index, values = _colliding(1)
    start = np.float32([1e8, -1e8, 1, 0, 7, -3, 1e8])
    want = start.copy()
    np.add.at(want, index, values)
    x = vk.tensor(start, device=device)
    vk.add_at(x, vk.tensor(index, device=device), vk.tensor(values, device=device))
    _assert_bits(x.numpy(), want)


def test_rows_into_a_matrix_with_a_scalar_and_a_strided_view(vulkan):
    index, values = _colliding(2, 3001, (5,))
    want = _host_add_at(index, values, (DESTINATIONS, 5))
    got = index_add(vk.zeros((DESTINATIONS, 5), device=vulkan), vk.tensor(index, device=vulkan),
                    vk.tensor(values, device=vulkan))
    _assert_bits(got.numpy(), want)
    # the values read through a transposed view, the destination a column slice
    vt = vk.tensor(np.ascontiguousarray(values.T), device=vulkan).T
    x = vk.zeros((DESTINATIONS, 9), device=vulkan)
    vk.add_at(x, (vk.tensor(index, device=vulkan), slice(2, 7)), vt)
    _assert_bits(x.numpy()[:, 2:7], want)
    assert not x.numpy()[:, [0, 1, 7, 8]].any()
    x = vk.zeros(DESTINATIONS, device=vulkan)
    vk.add_at(x, vk.tensor(index, device=vulkan), 0.1)  # one value for every source
    _assert_bits(x.numpy(), _host_add_at(index, np.float32(0.1), DESTINATIONS))


def test_index_broadcast_and_many_dims(vulkan):
    """Two broadcast index arrays, and keys over more dims than scatter.comp describes (the
    values are copied with the keyed dims last) and free dims past its limit (split)."""
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 3, (40, 1)), rng.integers(-4, 4, (1, 30))
    values = rng.choice(np.float32([1e8, 1, -1e8, 2.5]), (40, 30))
    want = np.zeros((3, 4), np.float32)
    np.add.at(want, (rows, cols), values)
    x = vk.zeros((3, 4), device=vulkan)
    key = (vk.tensor(rows.astype(np.int32), device=vulkan),
           vk.tensor(cols.astype(np.int32), device=vulkan))
    vk.add_at(x, key, vk.tensor(values, device=vulkan))
    _assert_bits(x.numpy(), want)

    index = rng.integers(0, 3, (3, 2, 3, 2)).astype(np.int32)
    v = rng.choice(np.float32([1e8, 1, -1e8, 0.5]), (3, 2, 3, 2, 4))
    vt = vk.tensor(np.ascontiguousarray(v.transpose(4, 3, 2, 1, 0)), device=vulkan).permute(
        4, 3, 2, 1, 0)  # no two keyed dims coalesce
    want = np.zeros((3, 4), np.float32)
    np.add.at(want, index, v)
    _assert_bits(index_add(vk.zeros((3, 4), device=vulkan), vk.tensor(index, device=vulkan),
                           vt).numpy(), want)

    shape = (2, 3, 2, 3, 2, 3)
    idx = rng.integers(0, 2, 50).astype(np.int32)
    v = rng.choice(np.float32([1e8, 1, -1e8, 0.5]), (2, 3, 2, 3, 2, 3, 50))
    base = vk.zeros((4, 5, 4, 5, 4, 5, 2), device=vulkan)[::2, 1:4, ::2, 1:4, ::2, 1:4]
    key = (slice(None),) * 6 + (vk.tensor(idx, device=vulkan),)
    vk.add_at(base, key, vk.tensor(v, device=vulkan))
    want = np.zeros((*shape, 2), np.float32)
    np.add.at(want, (slice(None),) * 6 + (idx,), v)
    _assert_bits(base.numpy(), want)


def test_bf16_rounds_once(device):
    """bf16 destinations add in f32 in source order and round once at the end."""
    index, values = _colliding(4, 2000)
    small = vk.tensor(values / np.float32(1e6), dtype="bfloat16").numpy()  # ml_dtypes bf16
    exact = _host_add_at(index, small.astype(np.float32), DESTINATIONS)
    got = index_add(vk.zeros(DESTINATIONS, dtype="bfloat16", device=device),
                    vk.tensor(index, device=device), vk.tensor(small, device=device))
    assert got.dtype == vk.bfloat16
    _assert_bits(got.numpy(), exact.astype(small.dtype))
    # per-add rounding would differ: the test can tell
    stepwise = np.zeros(DESTINATIONS, small.dtype)
    for i, v in zip(index, small):
        stepwise[i] = (stepwise[i].astype(np.float32) + v.astype(np.float32)).astype(small.dtype)
    assert not np.array_equal(_bits(stepwise), _bits(got.numpy()))


def test_integer_and_packed_destinations(vulkan):
    rng = np.random.default_rng(5)
    index = rng.integers(0, 10, 3000).astype(np.int32)
    for dtype, values in (("int32", rng.integers(-2 ** 31, 2 ** 31 - 1, 3000)),
                          ("uint8", rng.integers(0, 256, 3000)),
                          ("bool", rng.random(3000) < 0.01)):
        want = np.zeros(10, vk.dtypes.dtype(dtype).np_dtype)
        values = values.astype(want.dtype)
        if dtype == "bool":
            np.logical_or.at(want, index, values)
        else:
            np.add.at(want, index, values)
        x = vk.zeros(10, dtype=dtype, device=vulkan)
        vk.add_at(x, vk.tensor(index, device=vulkan), vk.tensor(values, dtype=dtype, device=vulkan))
        np.testing.assert_array_equal(x.numpy(), want, err_msg=dtype)


@pytest.mark.parametrize("reduce", ["sum", "prod", "amax", "amin"])
def test_scatter_reduce_matches_the_host(vulkan, reduce):
    """The index varies along every dim (torch's scatter): one sorted row of keys per column.
    amax/amin: +0 and -0, and NaN payloads, come out as the host's (the first in order)."""
    rng = np.random.default_rng(6)
    index = rng.integers(0, 4, (500, 6)).astype(np.int32)
    if reduce == "prod":
        src = rng.choice(np.float32([1.5, 1 / 3, 0.7, 3.0, -1.1]), (500, 6))
    elif reduce == "sum":
        src = rng.choice(np.float32([1e8, 1, -1e8, 0.5]), (500, 6))
    else:
        src = rng.choice(np.float32([0.0, -0.0, 1.0, -1.0]), (500, 6))
        src[rng.random(src.shape) < 0.01] = np.uint32(0x7fc00001).view(np.float32)
        src[rng.random(src.shape) < 0.01] = np.uint32(0xffc00002).view(np.float32)
    base = rng.choice(np.float32([0.0, -0.0, 2.0]), (4, 6))
    outs = []
    for dev in ("host", vulkan):
        for include_self in (True, False):
            outs.append(vk.tensor(base, device=dev).scatter_reduce(
                0, vk.tensor(index, device=dev), vk.tensor(src, device=dev), reduce,
                include_self=include_self).numpy())
    _assert_bits(outs[2], outs[0])
    _assert_bits(outs[3], outs[1])
    got = vk.tensor(base, device=vulkan).scatter_add(0, vk.tensor(index, device=vulkan),
                                                     vk.tensor(src, device=vulkan))
    if reduce == "sum":
        _assert_bits(got.numpy(), outs[0])


def test_gradients_through_autograd(device):
    """Embedding, indexing and take_along_axis backward: the host's bits on every device."""
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 5, (40, 30)).astype(np.int32)
    weight = rng.standard_normal((5, 8)).astype(np.float32)
    upstream = rng.choice(np.float32([1e8, 1, -1e8, 0.5]), (40, 30, 8))
    grads = {}
    for dev in ("host", device):
        w = vk.tensor(weight, device=dev, requires_grad=True)
        (F.embedding(vk.tensor(tokens, device=dev), w) * vk.tensor(upstream, device=dev)).sum() \
            .backward()
        a = vk.tensor(weight, device=dev, requires_grad=True)
        picked = vk.take_along_axis(a, vk.tensor(tokens[:, :8] % 5, device=dev), 0)
        (picked * vk.tensor(upstream[:, 0, :], device=dev)).sum().backward()
        b = vk.tensor(weight, device=dev, requires_grad=True)
        (b[vk.tensor(tokens[0], device=dev)] * vk.tensor(upstream[0], device=dev)).sum() \
            .backward()
        grads[dev] = [w.grad.numpy(), a.grad.numpy(), b.grad.numpy()]
    want = np.zeros((5, 8), np.float32)
    np.add.at(want, tokens.reshape(-1), upstream.reshape(-1, 8))
    _assert_bits(grads["host"][0], want)
    for got, host in zip(grads[device], grads["host"]):
        _assert_bits(got, host)


def test_empty(device):
    x = vk.ones(3, device=device)
    vk.add_at(x, vk.tensor(np.zeros(0, np.int32), device=device), vk.zeros(0, device=device))
    vk.add_at(x, [], 1.0)
    np.testing.assert_array_equal(x.numpy(), [1, 1, 1])
    got = index_add(vk.zeros((0, 4), device=device), vk.tensor(np.zeros(0, np.int32),
                                                               device=device),
                    vk.zeros((0, 4), device=device))
    assert got.shape == (0, 4)
    got = index_add(vk.zeros((3, 0), device=device), vk.tensor([0, 0, 1], device=device),
                    vk.zeros((3, 0), device=device))
    assert got.shape == (3, 0)


@pytest.mark.parametrize("case", ["add_at", "index_add", "scatter_add", "embedding"])
def test_out_of_range_device_indices_are_reported(vulkan, case):
    index = vk.tensor(np.array([0, 1, 3, 0, 1, 1], np.int32), device=vulkan)
    values = vk.ones(6, device=vulkan)
    name = "scatter_reduce" if case == "scatter_add" else case  # the op that checks
    with pytest.raises(IndexError, match=f"{name}: index out of range"):
        if case == "add_at":
            vk.add_at(vk.zeros(3, device=vulkan), index, values)
        elif case == "index_add":
            index_add(vk.zeros(3, device=vulkan), index, values).numpy()
        elif case == "scatter_add":
            vk.zeros(3, device=vulkan).scatter_add(0, index, values).numpy()
        else:
            w = vk.zeros((3, 2), device=vulkan, requires_grad=True)
            F.embedding(index, w).sum().backward()
        vk.synchronize()
    x = vk.zeros(3, device=vulkan)
    vk.add_at(x, vk.tensor(np.array([0, 1, 2, 0], np.int32), device=vulkan), 1.0)
    np.testing.assert_array_equal(x.numpy(), [2, 1, 1])


def test_dispatch_counts(vulkan):
    """keys (one gather.comp dispatch), the sort of the m keyed positions (1 + log2(p)(log2(p)
    + 1)/2 for p the next power of two), one scatter.comp dispatch; the free dims cost nothing
    more. 10,000 sources (p = 16,384): 107; embedding backward of 1,024 tokens: 57."""
    index, values = _colliding()
    x = vk.zeros(DESTINATIONS, device=vulkan)
    i, v = vk.tensor(index, device=vulkan), vk.tensor(values, device=vulkan)
    vk.synchronize()
    vk.reset_stats()
    vk.add_at(x, i, v)
    assert vk.stats()["dispatches"] == 1 + (1 + 14 * 15 // 2) + 1
    tokens = vk.tensor(np.arange(1024, dtype=np.int32).reshape(16, 64) % 103, device=vulkan)
    g = vk.ones((16, 64, 96), device=vulkan)
    base = vk.zeros((103, 96), device=vulkan)
    vk.synchronize()
    vk.reset_stats()
    index_add(base, tokens, g)
    assert vk.stats()["dispatches"] - 1 == 1 + (1 + 10 * 11 // 2) + 1  # - 1: the copy of base
