"""The losses ported code reaches for, and GroupNorm: binary_cross_entropy, smooth_l1_loss,
huber_loss, kl_div, cosine_similarity, group_norm and their modules, against torch on float64
copies: forward and gradients, on every device, in float32 (conftest's assert_op_close: rtol
and atol 2e-5 sqrt(n), n the terms summed) and bfloat16 (test_bf16_composites' check that the
result and gradients are rounded once from float32)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import vkgrad as vk
import vkgrad.nn as nn
import vkgrad.nn.functional as F
from conftest import assert_op_close
from test_bf16_composites import run_case, values

REDUCTIONS = ("none", "mean", "sum")


def check_f32(device, vk_fn, torch_fn, arrays, n, n_grad=None, strided=False):
    """vk_fn on float32 tensors (transposed views when `strided`) against torch_fn on float64
    copies: the result and the gradients of the first n_grad inputs for a random upstream
    gradient."""
    n_grad = len(arrays) if n_grad is None else n_grad
    arrays = [np.asarray(a, np.float32).astype(np.float64) for a in arrays]
    xs = []
    for i, a in enumerate(arrays):
        if strided and a.ndim >= 2:
            t = vk.tensor(np.ascontiguousarray(a.swapaxes(0, 1)), vk.float32, device).swapaxes(0, 1)
            t = t.detach().requires_grad_(i < n_grad)
        else:
            t = vk.tensor(a, vk.float32, device, requires_grad=i < n_grad)
        xs.append(t)
    ts = [torch.from_numpy(a).requires_grad_(i < n_grad) for i, a in enumerate(arrays)]
    out, ref = vk_fn(*xs), torch_fn(*ts)
    assert out.shape == tuple(ref.shape)
    assert_op_close(out.numpy(), ref.detach().numpy(), "float32", n, 0, "forward")
    if n_grad:
        g = np.random.default_rng(7).standard_normal(ref.shape).astype(np.float32)
        grads = vk.grad(out, xs[:n_grad], vk.tensor(g, device=device))
        refs = torch.autograd.grad(ref, ts[:n_grad], torch.from_numpy(g.astype(np.float64)))
        for i, (a, r) in enumerate(zip(grads, refs)):
            assert_op_close(a.numpy(), r.numpy(), "float32", n, 0, f"gradient of input {i}")


def both(device, rng, vk_fn, torch_fn, arrays, n, n_grad=None):
    check_f32(device, vk_fn, torch_fn, arrays, n, n_grad)
    check_f32(device, vk_fn, torch_fn, arrays, n, n_grad, strided=True)
    run_case(device, rng, vk_fn, torch_fn, arrays, n, n_grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(device, reduction, rng):
    x, y, w = rng.uniform(0.02, 0.98, (5, 7)), rng.uniform(0, 1, (5, 7)), rng.uniform(0.5, 2, 7)
    both(device, rng, lambda x, y: F.binary_cross_entropy(x, y, reduction=reduction),
         lambda x, y: TF.binary_cross_entropy(x, y, reduction=reduction), [x, y], 35)
    both(device, rng, lambda x, y, w: F.binary_cross_entropy(x, y, w, reduction),
         lambda x, y, w: TF.binary_cross_entropy(x, y, w, reduction=reduction), [x, y, w], 35,
         n_grad=1)


def test_binary_cross_entropy_clamps_the_logs_at_minus_100(device):
    """x = 0 or 1 gives -100 for the log (torch's clamp), not inf, and no NaN gradient."""
    x = np.array([0.0, 1.0, 0.0, 1.0, 1e-30, 0.5], np.float32)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.25], np.float32)
    ref = TF.binary_cross_entropy(torch.from_numpy(x), torch.from_numpy(y), reduction="none")
    xt = vk.tensor(x, device=device, requires_grad=True)
    out = F.binary_cross_entropy(xt, vk.tensor(y, device=device), reduction="none")
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=2e-6)
    out.sum().backward()
    assert np.isfinite(xt.grad.numpy()).all()
    assert nn.BCELoss(reduction="sum")(xt, vk.tensor(y, device=device)).item() == \
        pytest.approx(ref.sum().item(), rel=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,param,value", [("smooth_l1_loss", "beta", 1.0),
                                              ("smooth_l1_loss", "beta", 0.3),
                                              ("smooth_l1_loss", "beta", 0.0),
                                              ("huber_loss", "delta", 1.0),
                                              ("huber_loss", "delta", 0.4)])
def test_smooth_l1_and_huber(device, name, param, value, reduction, rng):
    a, b = rng.standard_normal((3, 9)), rng.standard_normal((3, 9))
    both(device, rng, lambda x, y: getattr(F, name)(x, y, reduction, value),
         lambda x, y: getattr(TF, name)(x, y, reduction=reduction, **{param: value}), [a, b],
         27)
    module = {"smooth_l1_loss": nn.SmoothL1Loss, "huber_loss": nn.HuberLoss}[name]
    got = module(reduction, value)(vk.tensor(a, vk.float32, device),
                                   vk.tensor(b, vk.float32, device))
    ref = getattr(TF, name)(torch.from_numpy(a), torch.from_numpy(b), reduction=reduction,
                            **{param: value})
    assert_op_close(got.numpy(), ref.numpy(), "float32", 27, 0, "module")


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
@pytest.mark.parametrize("reduction", REDUCTIONS + ("batchmean",))
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(device, reduction, log_target, rng):
    logp = torch.log_softmax(torch.from_numpy(rng.standard_normal((4, 6))), 1).numpy()
    q = rng.dirichlet(np.ones(6), 4)
    target = np.log(q) if log_target else q
    both(device, rng, lambda x, t: F.kl_div(x, t, reduction, log_target),
         lambda x, t: TF.kl_div(x, t, reduction=reduction, log_target=log_target),
         [logp, target], 24)
    got = nn.KLDivLoss(reduction, log_target)(vk.tensor(logp, vk.float32, device),
                                              vk.tensor(target, vk.float32, device))
    ref = TF.kl_div(torch.from_numpy(logp), torch.from_numpy(target), reduction=reduction,
                    log_target=log_target)
    assert_op_close(got.numpy(), ref.numpy(), "float32", 24, 0, "module")


def test_kl_div_zero_target(device):
    """A zero target contributes 0 (xlogy), and its input gradient is 0, not NaN."""
    x = np.log(np.array([[0.2, 0.3, 0.5]], np.float32))
    t = np.array([[0.0, 0.4, 0.6]], np.float32)
    xt = vk.tensor(x, device=device, requires_grad=True)
    out = F.kl_div(xt, vk.tensor(t, device=device), "sum")
    ref = TF.kl_div(torch.from_numpy(x), torch.from_numpy(t), reduction="sum")
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    out.backward()
    np.testing.assert_array_equal(xt.grad.numpy(), -t)


@pytest.mark.parametrize("shapes,dim", [(((4, 5), (4, 5)), 1), (((3, 1, 6), (2, 6)), -1),
                                        (((5, 1), (5, 4)), 0)])
def test_cosine_similarity(device, shapes, dim, rng):
    arrays = [rng.standard_normal(s) for s in shapes]
    n = max(s[dim] for s in shapes)
    both(device, rng, lambda a, b: F.cosine_similarity(a, b, dim),
         lambda a, b: TF.cosine_similarity(a, b, dim), arrays, 3 * n)
    got = nn.CosineSimilarity(dim)(*[vk.tensor(a, vk.float32, device) for a in arrays])
    assert got.shape == tuple(TF.cosine_similarity(*map(torch.from_numpy, arrays), dim).shape)


def test_cosine_similarity_below_eps(device):
    """Norms below eps are clamped in the value only (torch 2's rule): gradients still flow
    through the norm, and a zero vector gives 0 with a zero gradient."""
    a = np.array([[3e-9, 4e-9, 0.0], [0.0, 0.0, 0.0]])
    b = np.array([[1.0, 2.0, 2.0], [1.0, -1.0, 0.5]])
    check_f32(device, lambda x, y: F.cosine_similarity(x, y, 1, 1e-8),
              lambda x, y: TF.cosine_similarity(x, y, 1, 1e-8), [a, b], 9)


@pytest.mark.parametrize("shape,groups", [((2, 6, 5, 3), 3), ((1, 4, 7), 4), ((3, 5), 1),
                                          ((1, 6, 2, 2, 3), 2)])
def test_group_norm(device, shape, groups, rng):
    c = shape[1]
    x, w, b = rng.standard_normal(shape) + 0.5, rng.standard_normal(c), rng.standard_normal(c)
    n = int(np.prod(shape[1:])) // groups
    both(device, rng, lambda x, w, b: F.group_norm(x, groups, w, b, 1e-5),
         lambda x, w, b: TF.group_norm(x, groups, w, b, 1e-5), [x, w, b], n)
    check_f32(device, lambda x: F.group_norm(x, groups), lambda x: TF.group_norm(x, groups),
              [x], n)


def test_group_norm_module_loads_torch_state_dict(device, rng):
    ref = torch.nn.GroupNorm(2, 6, eps=1e-4)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(rng.standard_normal(6)))
        ref.bias.copy_(torch.from_numpy(rng.standard_normal(6)))
    layer = nn.GroupNorm(2, 6, eps=1e-4, device=device)
    layer.load_state_dict({k: vk.tensor(v.numpy(), device=device)
                           for k, v in ref.state_dict().items()})
    x = rng.standard_normal((2, 6, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(layer(vk.tensor(x, device=device)).numpy(),
                               ref(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert nn.GroupNorm(3, 6, affine=False).weight is None


def test_bad_arguments():
    x = vk.ones((2, 6, 3))
    with pytest.raises(ValueError, match="num_groups"):
        F.group_norm(x, 4)
    with pytest.raises(ValueError, match="num_channels"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="batchmean"):
        F.kl_div(x, x, "average")
    with pytest.raises(ValueError, match="beta"):
        F.smooth_l1_loss(x, x, beta=-1.0)
    with pytest.raises(ValueError, match="delta"):
        F.huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="target of shape"):
        F.binary_cross_entropy(x, vk.ones((2, 6)))
