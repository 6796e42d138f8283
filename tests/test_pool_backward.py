"""max_pool2d's gradient where windows tie, hold NaN or -inf, take an infinite gradient, or
leave rows and columns unpooled: the first maximum of each window gets it, as in torch."""
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
