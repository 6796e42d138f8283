"""The bf16 rule for composite ops: every public op built from several ops (conv and linear with a
bias, the losses, the normalisations, softmax, logsumexp, var, std, ...) computes internally in
float32 and rounds its result once, forward and backward, on every device.

Each is checked against "round the inputs to bf16, compute in float64 (torch)": within half a
bf16 ulp of that, plus the float32 error bound of the sums involved, n * 2^-24 * M (n the terms
summed per result, M their magnitude: for conv and linear the same function of the absolute
values, otherwise the largest result). That is what one rounding of a float32 result gives (so
within 1 ulp of the rounded float64 result). A composite that rounds at an internal step is
off by more, by far more wherever a later step cancels (conv + bias was 22 ulps off here).
Inputs mix magnitudes from 1e-6 to 3. Gradients get a bf16 upstream gradient and are checked
the same way. Also here: prod's gradient at zeros, against torch."""
import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import vkgrad as vk
import vkgrad.nn.functional as F

from conftest import bf16_ulp

U32 = 2.0 ** -24  # float32's unit roundoff


def bf16(a):
    """float64 `a` rounded to bf16 (kept as float64)."""
    return np.asarray(a, np.float64).astype(ml_dtypes.bfloat16).astype(np.float64)


class Round(torch.autograd.Function):
    """A public op's boundary in a float64 reference chain: the result rounds to bf16, and so
    does the gradient that flows back through it (vkgrad's gradients of bf16 tensors are bf16)."""

    @staticmethod
    def forward(ctx, x):
        return x.to(torch.bfloat16).to(torch.float64)

    @staticmethod
    def backward(ctx, g):
        return g.to(torch.bfloat16).to(torch.float64)


def values(rng, shape, low=-6.0, high=0.5):
    """Normal values times 10^u, u uniform in [low, high]: magnitudes from 10^low upwards."""
    return rng.standard_normal(shape) * 10.0 ** rng.uniform(low, high, shape)


def assert_rounded_once(actual, expected, n, magnitude, what):
    """bf16 tensor `actual` within half an ulp of float64 `expected`, plus n * U32 * magnitude:
    one rounding of a float32 result (so at most 1 ulp from round(expected)). A second
    rounding adds up to another half ulp of the intermediate, which cancellation magnifies."""
    assert actual.dtype is vk.bfloat16, (what, actual.dtype)
    a, r = actual.numpy().astype(np.float64), np.asarray(expected, np.float64)
    assert a.shape == r.shape, (what, a.shape, r.shape)
    nan = np.isnan(r)
    assert bool((np.isnan(a) == nan).all()), what
    a, r, magnitude = a[~nan], r[~nan], np.broadcast_to(magnitude, nan.shape)[~nan]
    err, tol = np.abs(a - r), 0.5 * bf16_ulp(r) + n * U32 * magnitude
    i = np.argmax(err / tol) if err.size else 0
    assert bool((err <= tol).all()), (f"{what}: {a[i]!r} is {err[i] / bf16_ulp(r[i]):.2f} ulps "
                                      f"from {r[i]!r}")


def run_case(device, rng, vk_fn, torch_fn, arrays, n, n_grad=None, bilinear=False):
    """vk_fn on bf16 tensors of `arrays` against torch_fn on float64 copies: the result and the
    gradients of the first `n_grad` inputs (all by default), for a random bf16 upstream
    gradient. bilinear: the magnitude M is torch_fn of |inputs| (and its gradients with |g|),
    the error bound of sums of products; otherwise the largest |result|."""
    n_grad = len(arrays) if n_grad is None else n_grad
    arrays = [bf16(a) for a in arrays]
    xs = [vk.tensor(a, vk.bfloat16, device, requires_grad=i < n_grad)
          for i, a in enumerate(arrays)]
    ts = [torch.from_numpy(a).requires_grad_(i < n_grad) for i, a in enumerate(arrays)]
    out, ref = vk_fn(*xs), torch_fn(*ts)
    g = bf16(rng.standard_normal(ref.shape))
    grads = vk.grad(out, xs[:n_grad], vk.tensor(g, vk.bfloat16, device))
    ref_grads = torch.autograd.grad(ref, ts[:n_grad], torch.from_numpy(g))
    if bilinear:
        abs_ts = [torch.from_numpy(np.abs(a)).requires_grad_(i < n_grad)
                  for i, a in enumerate(arrays)]
        m_out = torch_fn(*abs_ts)
        m_grads = torch.autograd.grad(m_out, abs_ts[:n_grad], torch.from_numpy(np.abs(g)))
        magnitudes = [m.detach().numpy() for m in (m_out, *m_grads)]
    else:
        magnitudes = [np.abs(r.detach().numpy()).max(initial=0.0) for r in (ref, *ref_grads)]
    assert_rounded_once(out, ref.detach().numpy(), n, magnitudes[0], "forward")
    for i, (d, r, m) in enumerate(zip(grads, ref_grads, magnitudes[1:])):
        assert_rounded_once(d, r.numpy(), n, m, f"gradient of input {i}")


# ---- conv and linear with a bias -----------------------------------------------------------------
def _conv_relu_conv(conv, relu, round_):
    def fn(x, w1, b1, w2, b2):
        return conv(round_(relu(round_(conv(x, w1, b1, padding=1)))), w2, b2, stride=2)
    return fn


BILINEAR = {
    "conv2d": (lambda f: lambda x, w, b: f.conv2d(x, w, b, padding=1),
               [(2, 3, 6, 5), (4, 3, 3, 3), (4,)], 28),
    "conv2d_1x1": (lambda f: lambda x, w, b: f.conv2d(x, w, b),
                   [(2, 5, 4, 3), (3, 5, 1, 1), (3,)], 6),
    "conv2d_groups": (lambda f: lambda x, w, b: f.conv2d(x, w, b, stride=(2, 1), groups=2),
                      [(2, 4, 7, 6), (6, 2, 3, 2), (6,)], 13),
    "conv1d": (lambda f: lambda x, w, b: f.conv1d(x, w, b, stride=2, padding=1),
               [(2, 3, 11), (4, 3, 3), (4,)], 10),
    "linear": (lambda f: lambda x, w, b: f.linear(x, w, b), [(3, 4, 20), (6, 20), (6,)], 21),
}


@pytest.mark.parametrize("name", BILINEAR)
def test_conv_and_linear_with_bias(device, name, rng):
    make, shapes, n = BILINEAR[name]
    # large enough terms that the bias cancels part of the sum somewhere
    run_case(device, rng, make(F), make(TF), [values(rng, s) for s in shapes], n,
             bilinear=True)


def test_conv_relu_conv(device, rng):
    """Two public convs: each result, and each gradient through it, rounds once."""
    shapes = [(2, 2, 8, 8), (3, 2, 3, 3), (3,), (2, 3, 3, 3), (2,)]
    run_case(device, rng, _conv_relu_conv(F.conv2d, F.relu, lambda t: t),
             _conv_relu_conv(TF.conv2d, TF.relu, Round.apply),
             [values(rng, s) for s in shapes], 28, bilinear=True)


# ---- losses --------------------------------------------------------------------------------------
REDUCTIONS = ("none", "mean", "sum")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_with_logits(device, reduction, rng):
    x, y = values(rng, (4, 6), high=1.0), rng.uniform(0, 1, (4, 6))
    w, pw = rng.uniform(0.5, 2, (4, 6)), rng.uniform(0.5, 3, 6)
    run_case(device, rng, lambda x, y: F.binary_cross_entropy_with_logits(x, y,
                                                                          reduction=reduction),
             lambda x, y: TF.binary_cross_entropy_with_logits(x, y, reduction=reduction),
             [x, y], 24)
    run_case(device, rng, lambda x, y, w, pw: F.binary_cross_entropy_with_logits(
                 x, y, w, reduction, pw),
             lambda x, y, w, pw: TF.binary_cross_entropy_with_logits(
                 x, y, w, reduction=reduction, pos_weight=pw), [x, y, w, pw], 24, n_grad=2)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_regression_losses(device, name, reduction, rng):
    a, b = values(rng, (5, 7)), values(rng, (5, 7))
    run_case(device, rng, lambda x, y: getattr(F, name)(x, y, reduction),
             lambda x, y: getattr(TF, name)(x, y, reduction=reduction), [a, b], 35)


def _labels(rng, shape, c):
    labels = rng.integers(0, c, shape)
    labels.flat[::4] = -100
    return labels


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy(device, reduction, smoothing, rng):
    labels, w = _labels(rng, (6,), 5), rng.uniform(0.5, 2, 5)
    kwargs = dict(reduction=reduction, label_smoothing=smoothing)
    run_case(device, rng,
             lambda x, w: F.cross_entropy(x, vk.tensor(labels, device=device), w, **kwargs),
             lambda x, w: TF.cross_entropy(x, torch.from_numpy(labels), w, **kwargs),
             [values(rng, (6, 5), high=1.0), w], 30, n_grad=1)
    p = rng.dirichlet(np.ones(5), 6)
    run_case(device, rng, lambda x, p: F.cross_entropy(x, p, **kwargs),
             lambda x, p: TF.cross_entropy(x, p, **kwargs), [values(rng, (6, 5)), p], 30)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(device, reduction, rng):
    labels, w = _labels(rng, (2, 3), 4), rng.uniform(0.5, 2, 4)
    run_case(device, rng,
             lambda x, w: F.nll_loss(x, vk.tensor(labels, device=device), w,
                                     reduction=reduction),
             lambda x, w: TF.nll_loss(x, torch.from_numpy(labels), w, reduction=reduction),
             [values(rng, (2, 4, 3)), w], 6, n_grad=1)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_loss(device, p, reduction, rng):
    labels, w = rng.integers(0, 5, 6), rng.uniform(0.5, 2, 5)
    run_case(device, rng,
             lambda x, w: F.multi_margin_loss(x, vk.tensor(labels, device=device), p, 0.7, w,
                                              reduction),
             lambda x, w: TF.multi_margin_loss(x, torch.from_numpy(labels), p, 0.7, w,
                                               reduction=reduction),
             [values(rng, (6, 5)) * 0.3, w], 30, n_grad=1)


# ---- normalisations, softmax and reductions built from several ops -------------------------------
def test_layer_norm(device, rng):
    run_case(device, rng, lambda x, w, b: F.layer_norm(x, (16,), w, b, 1e-5),
             lambda x, w, b: TF.layer_norm(x, (16,), w, b, 1e-5),
             [values(rng, (3, 16)), values(rng, 16, -1), values(rng, 16)], 16)


def test_batch_norm_and_its_running_statistics(device, rng):
    x, w, b = values(rng, (6, 3, 4)), values(rng, 3, -1), values(rng, 3)
    mean, var = values(rng, 3), rng.uniform(0.5, 2, 3)
    stats = [vk.tensor(bf16(a), vk.bfloat16, device) for a in (mean, var)]
    ref_stats = [torch.from_numpy(bf16(a)) for a in (mean, var)]
    run_case(device, rng, lambda x, w, b: F.batch_norm(x, *stats, w, b, True, 0.3),
             lambda x, w, b: TF.batch_norm(x, *ref_stats, w, b, True, 0.3), [x, w, b], 24)
    for got, expected in zip(stats, ref_stats):
        assert_rounded_once(got, expected.numpy(), 24, np.abs(expected.numpy()).max(),
                            "running stats")
    # eval mode: the (bf16) running statistics normalise
    wide = [torch.from_numpy(s.numpy().astype(np.float64)) for s in stats]
    run_case(device, rng, lambda x, w, b: F.batch_norm(x, *stats, w, b),
             lambda x, w, b: TF.batch_norm(x, *wide, w, b), [x, w, b], 4)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax(device, name, rng):
    run_case(device, rng, lambda x: getattr(F, name)(x, 1),
             lambda x: getattr(TF, name)(x, 1), [values(rng, (4, 9), high=1.0)], 9)


@pytest.mark.parametrize("axis,keepdims", [(-1, False), (0, True), (None, False)])
def test_logsumexp(device, axis, keepdims, rng):
    """Its gradient is softmax(x): with many terms of similar size, the maximum's share is
    small, and a gradient through the shift by the maximum (1 - sum(softmax), rounded) would
    swamp it."""
    x = values(rng, (3, 64), high=-0.5)
    dims = tuple(range(x.ndim)) if axis is None else axis
    run_case(device, rng, lambda x: x.logsumexp(axis=axis, keepdims=keepdims),
             lambda x: torch.logsumexp(x, dims, keepdim=keepdims), [x], 192)


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("axis,ddof", [(1, 0), (0, 1), (None, 1)])
def test_var_and_std(device, name, axis, ddof, rng):
    x = values(rng, (5, 8)) + 0.1
    dims = tuple(range(x.ndim)) if axis is None else axis
    run_case(device, rng, lambda x: getattr(x, name)(axis=axis, ddof=ddof),
             lambda x: getattr(torch, name)(x, dims, correction=ddof), [x], 40)


def test_adaptive_avg_pool2d(device, rng):
    run_case(device, rng, lambda x: F.adaptive_avg_pool2d(x, (3, 4)),
             lambda x: TF.adaptive_avg_pool2d(x, (3, 4)), [values(rng, (2, 2, 7, 9))], 12)


# ---- gradients at edge values --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_prod_gradient_with_zeros(device, dtype):
    """The gradient of prod is the product of the other elements, also where some are zero
    (torch: [0, 2, 3] gives [6, 0, 0]; two zeros give zeros), and so is its second order."""
    x = np.array([[0.0, 2, 3, -1.5], [0, 0, 3, 2], [1, 0.5, -2, 4], [0, 0, 0, 2]])
    v = np.array([[1.0, -2, 0.5, 3], [2, 1, -1, 0.5], [1, 1, 2, -1], [1, 2, 3, 4]])
    for axis in (1, None):
        t = vk.tensor(x, dtype, device, requires_grad=True)
        r = torch.from_numpy(x).requires_grad_()
        (gt,) = vk.grad(t.prod(axis=axis).sum(), t, create_graph=True)
        (gr,) = torch.autograd.grad(r.prod(dim=axis).sum() if axis is not None
                                    else r.prod().sum(), r, create_graph=True)
        np.testing.assert_array_equal(gt.numpy().astype(np.float64), gr.detach().numpy())
        (ht,) = vk.grad((gt * vk.tensor(v, dtype, device)).sum(), t)
        (hr,) = torch.autograd.grad((gr * torch.from_numpy(v)).sum(), r)
        np.testing.assert_array_equal(ht.numpy().astype(np.float64), hr.numpy())
