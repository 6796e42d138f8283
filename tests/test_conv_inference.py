"""conv2d where no gradient is wanted (inference) is one op, CONV_INFERENCE, which on the host
builds and multiplies the column matrix a block of output rows at a time; nn.Sequential runs a
Conv2d followed by a ReLU as one such op. Both agree with torch, and with the training path."""
import numpy as np
import pytest
import torch

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad.ops import conv as conv_ops

CASES = [((2, 3, 9, 11), (4, 3, 3, 3), dict()),
         ((1, 2, 8, 8), (5, 2, 3, 2), dict(stride=2, padding=1)),
         ((3, 1, 28, 28), (6, 1, 5, 5), dict(dilation=2)),
         ((2, 4, 5, 5), (3, 4, 1, 1), dict()),
         ((0, 2, 6, 6), (3, 2, 3, 3), dict())]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shapes", CASES)
def test_inference_conv_and_relu_match_torch_and_the_training_path(device, dtype, bias, shapes,
                                                                    monkeypatch):
    xs, ws, params = shapes
    rng = np.random.default_rng(2)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in (xs, ws, ws[:1]))
    tx, tw, tb = (vk.tensor(a, dtype, device) for a in (x, w, b))
    tb = tb if bias else None
    calls = []
    real = conv_ops.CONV_INFERENCE.host if device.kind == "host" else \
        conv_ops.CONV_INFERENCE.vulkan
    monkeypatch.setattr(conv_ops.CONV_INFERENCE, device.kind if device.kind == "host"
                        else "vulkan", lambda *a, **k: calls.append(1) or real(*a, **k))
    with vk.no_grad():
        plain, fused = F.conv2d(tx, tw, tb, **params), conv_ops.conv2d_relu(tx, tw, tb, **params)
    assert len(calls) == 2
    # the training path: the same inputs wanting a gradient
    trained = F.conv2d(tx.detach().requires_grad_(), tw, tb, **params)
    round_ = (lambda a: a.astype(np.float32)) if dtype == "float32" else \
        (lambda a: torch.tensor(a).bfloat16().float().numpy())
    ref = torch.nn.functional.conv2d(*(torch.tensor(round_(a), dtype=torch.float64)
                                       for a in (x, w)),
                                     torch.tensor(round_(b), dtype=torch.float64) if bias
                                     else None, **params).numpy()
    k = ws[1] * ws[2] * ws[3] + 1
    tol = k * np.finfo(np.float32).eps * (np.abs(ref).max(initial=0) + 1)
    if dtype == "bfloat16":
        tol += 2.0 ** -8 * np.abs(ref)  # the result rounded once to bf16
    for got, want in ((plain, ref), (fused, np.maximum(ref, 0)), (trained, ref)):
        assert got.shape == ref.shape and got.dtype.name == dtype
        assert np.all(np.abs(got.numpy().astype(np.float64) - want) <= tol)
    np.testing.assert_array_equal(fused.numpy(), np.maximum(plain.numpy(), 0))
    np.testing.assert_array_equal(fused.numpy(), plain.relu().numpy())


def test_sequential_fuses_conv_and_relu_only_without_gradients(device):
    vk.manual_seed(4)
    net = vk.nn.Sequential(vk.nn.Conv2d(2, 3, 3, device=device), vk.nn.ReLU(),
                           vk.nn.Conv2d(3, 2, 3, device=device), vk.nn.Tanh())
    x = vk.randn(2, 2, 9, 9, device=device)
    with vk.no_grad():
        fused = net(x).numpy()
        unfused = x
        for m in net:
            unfused = m(unfused)
    np.testing.assert_array_equal(fused, unfused.numpy())
    y = net(x)  # with gradients: the ordinary ops, and they differentiate
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    np.testing.assert_allclose(y.detach().numpy(), fused, rtol=1e-5, atol=1e-6)
