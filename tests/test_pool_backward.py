"""max_pool2d's gradient where windows tie, hold NaN or -inf, take an infinite gradient, or
leave rows and columns unpooled: the first maximum of each window gets it, as in torch. The
forward keeps each window's tap of it, which return_indices, the backward's scatter and a
compiled host step's replay read."""
import numpy as np
import pytest
import torch

import vkgrad as vk
import vkgrad.nn.functional as F


def _torch_grad(x, g, **window):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, **window).backward(torch.tensor(g, dtype=torch.float64))
    return xt.grad.numpy()


@pytest.mark.parametrize("window", [dict(kernel_size=2), dict(kernel_size=(2, 3)),
                                    dict(kernel_size=3, stride=2, padding=1)])
@pytest.mark.parametrize("shape", [(2, 3, 8, 9), (1, 2, 7, 7), (3, 1, 5, 4)])
def test_ties_nan_inf_and_remainders(device, window, shape):
    rng = np.random.default_rng(11)
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)  # a ReLU's: many ties at 0
    x.flat[rng.choice(x.size, 3, replace=False)] = [np.nan, -np.inf, np.inf]
    x[0, 0, :2, :3] = -np.inf  # a window of -inf only
    xt = vk.tensor(x, device=device, requires_grad=True)
    out = F.max_pool2d(xt, **window)
    g = rng.standard_normal(out.shape).astype(np.float32)
    g.flat[0] = np.inf
    out.backward(vk.tensor(g, device=device))
    want = _torch_grad(x, g, **window)
    if window.get("stride", window["kernel_size"]) == window["kernel_size"]:  # disjoint: exact
        np.testing.assert_array_equal(xt.grad.numpy(), want.astype(np.float32))
    else:  # an element shared by up to 4 windows sums their gradients in float32
        np.testing.assert_allclose(xt.grad.numpy(), want, rtol=4 * np.finfo(np.float32).eps)


# The forward keeps each window's tap of its maximum and the backward scatters by it: disjoint
# windows with and without remainders or gaps, overlapping, padded, dilated, ceil_mode, an empty
# batch, and a kernel of more than 256 taps (int32 taps instead of uint8).
GEOMETRIES = [((2, 3, 8, 8), dict(kernel_size=2)),
              ((2, 3, 9, 7), dict(kernel_size=2)),
              ((1, 2, 9, 10), dict(kernel_size=2, stride=3)),
              ((2, 2, 9, 9), dict(kernel_size=2, stride=3, dilation=2)),
              ((2, 2, 7, 8), dict(kernel_size=3, stride=2, padding=1)),
              ((1, 3, 7, 9), dict(kernel_size=(2, 3), stride=1)),
              ((2, 2, 9, 8), dict(kernel_size=3, stride=(2, 1), padding=1, dilation=2)),
              ((2, 3, 7, 8), dict(kernel_size=3, stride=2, ceil_mode=True)),
              ((1, 2, 8, 7), dict(kernel_size=2, padding=1, ceil_mode=True)),
              ((0, 2, 6, 6), dict(kernel_size=2)),
              ((2, 1, 17, 18), dict(kernel_size=17, stride=1))]


def _edge_values(rng, shape):
    """A ReLU's output (ties at 0) with one NaN, +-inf, and an all -inf first window."""
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    if x.size:
        x.flat[rng.choice(x.size, 3, replace=False)] = [np.nan, -np.inf, np.inf]
        x[0, 0, :2, :2] = -np.inf
    return x


def _torch_pool(x, g, **window):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out, idx = torch.nn.functional.max_pool2d(xt, return_indices=True, **window)
    out.backward(torch.tensor(g, dtype=torch.float64))
    return out.detach().numpy(), idx.numpy(), xt.grad.numpy()


@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape,window", GEOMETRIES, ids=[f"{s}-{w}" for s, w in GEOMETRIES])
def test_forward_indices_and_gradient_from_the_kept_argmax(device, shape, window, dtype,
                                                           strided):
    rng = np.random.default_rng(5)
    x = vk.tensor(_edge_values(rng, shape), dtype, device)
    if strided:  # a non-contiguous view (channels and rows swapped back)
        x = vk.tensor(np.ascontiguousarray(x.numpy().swapaxes(1, 2)), dtype, device).swapaxes(1, 2)
    xs = x.numpy().astype(np.float64)  # the dtype-rounded input
    with vk.no_grad():  # inference: the maxima alone
        plain = F.max_pool2d(x, **window)
    xt = x.detach().requires_grad_()
    out, idx = F.max_pool2d(xt, return_indices=True, **window)
    g = vk.tensor(rng.standard_normal(out.shape), dtype, device)
    out.backward(g)
    g64 = g.numpy().astype(np.float64)
    want, want_idx, want_grad = _torch_pool(xs, g64, **window)
    for got in (plain, out):  # a maximum is one of the (rounded) inputs: exact
        assert got.dtype is vk.dtype(dtype) and got.shape == want.shape
        np.testing.assert_array_equal(got.numpy().astype(np.float64), want)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    # An element in several windows sums their gradients in float32 (at most 8 here, each
    # addition off by half an ulp of the partial sum, bounded by the sum of magnitudes) and
    # rounds once: bf16 is then within one ulp (2^-7 relative) of the exact sum.
    magnitude = _torch_pool(xs, np.abs(g64), **window)[2]
    got = xt.grad.numpy().astype(np.float64)
    bound = 8 * np.finfo(np.float32).eps * magnitude + (
        2 ** -7 * np.abs(want_grad) if dtype == "bfloat16" else 0)
    assert got.shape == want_grad.shape and (np.abs(got - want_grad) <= bound).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("window", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)])
def test_the_first_nan_and_the_first_tie_take_the_gradient(device, dtype, window):
    # torch sends a window's gradient to its last NaN; vkgrad to its first, as to its first tie
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan  # window (0, 0): two NaNs, the first at (0, 1)
    x[0, 0, 2:, 2:] = 5.0                   # window (1, 1) of the 2x2 pooling: four ties
    xt = vk.tensor(x, dtype, device, requires_grad=True)
    out, idx = F.max_pool2d(xt, return_indices=True, **window)
    out.backward(vk.ones(out.shape, dtype, device))
    idx = idx.numpy()
    assert idx[0, 0, 0, 0] == 1
    if window["kernel_size"] == 2:
        assert idx[0, 0, 1, 1] == 2 * 4 + 2
    want = np.zeros(16, np.float32)
    np.add.at(want, idx.reshape(-1), 1)  # each window's gradient at its index
    np.testing.assert_array_equal(xt.grad.numpy().astype(np.float32).reshape(-1), want)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("window", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)])
def test_a_compiled_host_step_replays_pooling_bit_for_bit(dtype, window):
    rng = np.random.default_rng(8)
    w = vk.tensor(rng.standard_normal((2, 3, 9, 8)), dtype, requires_grad=True)

    def step(x, g):
        out = F.max_pool2d((w * x).relu(), **window)
        return out, vk.grad((out * g).sum(), [w])[0]

    compiled = vk.compile(step)
    for _ in range(4):
        x = vk.tensor(_edge_values(rng, (2, 3, 9, 8)), dtype)
        out = F.max_pool2d(x, **window)
        g = vk.tensor(rng.standard_normal(out.shape), dtype)
        for got, want in zip(compiled(x, g), step(x, g)):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
