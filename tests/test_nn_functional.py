"""nn.functional against torch.nn.functional: activations, softmax (to second order), linear,
dropout, normalisations, embedding and every loss, outputs and gradients, on every device in
float32 and bfloat16 (bf16 against torch in float32 on the same bf16-rounded values)."""
import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import vkgrad as vk
import vkgrad.nn.functional as F

FLOATS = ("float32", "bfloat16")


# ---- helpers (test_nn_layers.py uses them too) ---------------------------------------------------
def rounded(a, dtype):
    """`a` as float32 holding values representable in `dtype` (what both libraries compute on)."""
    a = np.asarray(a, np.float32)
    return a.astype(ml_dtypes.bfloat16).astype(np.float32) if dtype == "bfloat16" else a


def vk_in(a, device, dtype="float32", grad=False):
    return vk.tensor(rounded(a, dtype), dtype=dtype, device=device, requires_grad=grad)


def torch_in(a, dtype="float32", grad=False):
    return torch.tensor(rounded(a, dtype), requires_grad=grad)


def assert_close(actual, expected, dtype, rtol=1e-4, atol=1e-5):
    """vkgrad `actual` against torch (float32) `expected`. bf16: within 3e-2 of the largest
    expected magnitude (the output scale)."""
    assert isinstance(actual, vk.Tensor), type(actual)
    assert actual.dtype is vk.dtype(dtype), (actual.dtype, dtype)
    a = actual.numpy().astype(np.float64)
    e = expected.detach().numpy().astype(np.float64) if isinstance(expected, torch.Tensor) \
        else np.asarray(expected, np.float64)
    assert a.shape == e.shape, (a.shape, e.shape)
    if dtype == "bfloat16":
        scale = float(np.abs(e).max()) if e.size else 1.0
        np.testing.assert_allclose(a, e, rtol=0, atol=3e-2 * max(scale, 1e-3))
    else:
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * max(1.0, float(np.abs(e).max())
                                                                    if e.size else 1.0))


def backward_both(vk_out, torch_out, rng, device):
    """Backpropagate the same random upstream gradient through both results."""
    g = rng.standard_normal(torch_out.shape).astype(np.float32)
    vk_out.backward(vk.tensor(g, dtype=vk_out.dtype, device=device))
    torch_out.backward(torch.tensor(rounded(g, vk_out.dtype.name)))


def compare(fn_vk, fn_torch, arrays, device, dtype, rng, rtol=1e-4, atol=1e-5, n_grad=None):
    """Run both functions on the same inputs, compare the outputs and the gradients of the first
    `n_grad` inputs (all by default)."""
    n_grad = len(arrays) if n_grad is None else n_grad
    xs = [vk_in(a, device, dtype, grad=i < n_grad) for i, a in enumerate(arrays)]
    ts = [torch_in(a, dtype, grad=i < n_grad) for i, a in enumerate(arrays)]
    out, expected = fn_vk(*xs), fn_torch(*ts)
    assert_close(out, expected, dtype, rtol, atol)
    backward_both(out, expected, rng, device)
    for x, t in zip(xs[:n_grad], ts):
        assert x.grad is not None and x.grad.device == device
        assert_close(x.grad, t.grad, dtype, rtol, atol)


# ---- activations, softmax, linear ---------------------------------------------------------------
ACTIVATIONS = [
    ("relu", F.relu, TF.relu), ("gelu", F.gelu, TF.gelu),
    ("gelu_tanh", lambda x: F.gelu(x, "tanh"), lambda x: TF.gelu(x, approximate="tanh")),
    ("silu", F.silu, TF.silu), ("sigmoid", F.sigmoid, torch.sigmoid), ("tanh", F.tanh, torch.tanh),
    ("softmax", F.softmax, lambda x: TF.softmax(x, -1)),
    ("softmax_dim0", lambda x: F.softmax(x, dim=0), lambda x: TF.softmax(x, 0)),
    ("log_softmax", lambda x: F.log_softmax(x, 1), lambda x: TF.log_softmax(x, 1)),
    ("log_softmax_dim0", lambda x: F.log_softmax(x, dim=0), lambda x: TF.log_softmax(x, 0)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name,fn,ref", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activations(device, dtype, name, fn, ref, rng):
    compare(fn, ref, [rng.standard_normal((3, 7)) * 3], device, dtype, rng)


def test_softmax_is_stable_and_3d(device, rng):
    x = rng.standard_normal((2, 5, 3)) * 3
    x[0, 0, 0] = 1000.0
    x[1, 2, :] = -1000.0
    for axis in (0, 1, 2):
        for vf, tf in ((F.softmax, TF.softmax), (F.log_softmax, TF.log_softmax)):
            out = vf(vk_in(x, device), axis)
            assert np.isfinite(out.numpy()).all()
            assert_close(out, tf(torch_in(x), axis), "float32")


def test_softmax_second_order_against_torch(device, rng):
    """d/dx of <v, d/dx sum(w * softmax(x))> through create_graph, as torch computes it."""
    x_np, w_np, v_np = (rng.standard_normal((3, 5)) for _ in range(3))
    for vf, tf in ((F.softmax, TF.softmax), (F.log_softmax, TF.log_softmax)):
        x, t = vk_in(x_np, device, grad=True), torch_in(x_np, grad=True)
        (gx,) = vk.grad((vf(x, 1) * vk_in(w_np, device)).sum(), x, create_graph=True)
        (gt,) = torch.autograd.grad((tf(t, 1) * torch_in(w_np)).sum(), t, create_graph=True)
        assert_close(gx, gt, "float32")
        (hx,) = vk.grad((gx * vk_in(v_np, device)).sum(), x)
        (ht,) = torch.autograd.grad((gt * torch_in(v_np)).sum(), t)
        assert_close(hx, ht, "float32")


@pytest.mark.parametrize("dtype", FLOATS)
def test_linear(device, dtype, rng):
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    compare(F.linear, TF.linear, [x, w, b], device, dtype, rng)
    compare(F.linear, TF.linear, [x[0, 0], w], device, dtype, rng)  # 1-d input, no bias
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(4, 6\)"):
        F.linear(vk_in(x, device), vk_in(rng.standard_normal((4, 6)), device))


# ---- dropout -------------------------------------------------------------------------------------
def test_dropout_is_seeded_and_the_same_on_every_device(device):
    x = vk.ones((40, 50), device=device)
    vk.manual_seed(7)
    a = F.dropout(x, 0.3).numpy()
    vk.manual_seed(7)
    b = F.dropout(x, 0.3).numpy()
    np.testing.assert_array_equal(a, b)
    vk.manual_seed(7)
    host = F.dropout(vk.ones((40, 50)), 0.3).numpy()
    np.testing.assert_array_equal(a, host)  # the same mask on the host and the device
    c = F.dropout(x, 0.3, generator=vk.Generator(3)).numpy()
    np.testing.assert_array_equal(c, F.dropout(x, 0.3, generator=vk.Generator(3)).numpy())
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("dtype", FLOATS)
def test_dropout_scales_keeps_the_mean_and_its_gradient_is_the_mask(device, dtype):
    p = 0.25
    x = vk.ones((100, 201), dtype=dtype, device=device, requires_grad=True)
    y = F.dropout(x, p, generator=vk.Generator(11))
    values = y.numpy().astype(np.float32)
    assert set(np.unique(values)) <= {0.0, float(rounded(1 / (1 - p), dtype))}
    assert abs((values == 0).mean() - p) < 0.02
    assert abs(values.mean() - 1.0) < 0.03
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy().astype(np.float32), values)


def test_dropout_identity_in_eval_and_edge_probabilities(device, rng):
    x = vk_in(rng.standard_normal((4, 5)), device)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert (F.dropout(x, 1.0).numpy() == 0).all()
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="probability"):
            F.dropout(x, p)


# ---- normalisation and embedding -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 7), (1, 3, 4, 5)], ids=str)
def test_batch_norm(device, dtype, shape, rng):
    x_np, w_np, b_np = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(3), \
        rng.standard_normal(3)
    stats = [rng.standard_normal(3), rng.uniform(0.5, 2, 3)]
    for training in (True, False):
        x, w, b = (vk_in(a, device, dtype, grad=True) for a in (x_np, w_np, b_np))
        xt, wt, bt = (torch_in(a, dtype, grad=True) for a in (x_np, w_np, b_np))
        rm, rv = (vk_in(a, device, dtype) for a in stats)
        rmt, rvt = (torch_in(a, dtype) for a in stats)
        out = F.batch_norm(x, rm, rv, w, b, training, 0.2, 1e-3)
        expected = TF.batch_norm(xt, rmt, rvt, wt, bt, training, 0.2, 1e-3)
        assert_close(out, expected, dtype, atol=1e-4)
        assert_close(rm, rmt, dtype)
        assert_close(rv, rvt, dtype)
        backward_both(out, expected, rng, device)
        for v, t in ((x, xt), (w, wt), (b, bt)):
            assert_close(v.grad, t.grad, dtype, atol=1e-4)


def test_batch_norm_errors(device, rng):
    x = vk_in(rng.standard_normal((1, 3)), device)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(x, None, None, training=True)
    with pytest.raises(ValueError, match="running_mean"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match=r"\[N, C, \.\.\.\]"):
        F.batch_norm(vk_in(rng.standard_normal(3), device), None, None, training=True)


@pytest.mark.parametrize("dtype", FLOATS)
def test_layer_norm(device, dtype, rng):
    x = rng.standard_normal((2, 3, 5)) * 3 + 2
    for shape in ((5,), (3, 5)):
        w, b = rng.standard_normal(shape), rng.standard_normal(shape)
        compare(lambda x, w, b: F.layer_norm(x, shape, w, b, 1e-4),
                lambda x, w, b: TF.layer_norm(x, shape, w, b, 1e-4), [x, w, b], device, dtype,
                rng, atol=1e-4)
    compare(lambda x: F.layer_norm(x, 5), lambda x: TF.layer_norm(x, (5,)), [x], device, dtype,
            rng, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(3,\)"):
        F.layer_norm(vk_in(x, device), (3,))


@pytest.mark.parametrize("dtype", FLOATS)
def test_embedding(device, dtype, rng):
    w_np = rng.standard_normal((7, 3))
    idx = np.array([[1, 6, 1], [0, 2, 1]], np.int32)  # repeats: their gradients add up
    for padding_idx in (None, 1, -1):
        w, wt = vk_in(w_np, device, dtype, grad=True), torch_in(w_np, dtype, grad=True)
        out = F.embedding(vk.tensor(idx, device=device), w, padding_idx)
        expected = TF.embedding(torch.tensor(idx, dtype=torch.long), wt, padding_idx)
        assert_close(out, expected, dtype)
        backward_both(out, expected, rng, device)
        assert_close(w.grad, wt.grad, dtype)
    assert F.embedding([[1, 2]], w).shape == (1, 2, 3)  # lists and host indices are accepted
    with pytest.raises(TypeError, match="integer indices"):
        F.embedding(vk.tensor([1.0], device=device), w)


# ---- losses --------------------------------------------------------------------------------------
def _labels(rng, shape, classes, ignore=False):
    labels = rng.integers(0, classes, shape).astype(np.int32)
    if ignore:
        labels.flat[::3] = -100
    return labels


@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy(device, dtype, rng):
    cases = [((6, 5), (6,)), ((2, 4, 3, 2), (2, 3, 2)), ((5,), ())]
    for shape, target_shape in cases:
        c = shape[1] if len(shape) > 1 else shape[0]
        for reduction in ("mean", "sum", "none"):
            for smoothing in (0.0, 0.2):
                for weighted, ignore in ((False, False), (True, True)):
                    x = rng.standard_normal(shape) * 3
                    labels = _labels(rng, target_shape, c, ignore and target_shape != ())
                    w = rng.uniform(0.5, 2, c) if weighted else None
                    kwargs = dict(reduction=reduction, label_smoothing=smoothing)
                    compare(lambda x: F.cross_entropy(
                                x, vk.tensor(labels, device=device),
                                None if w is None else vk_in(w, device), **kwargs),
                            lambda x: TF.cross_entropy(
                                x, torch.tensor(labels, dtype=torch.long),
                                None if w is None else torch_in(w), **kwargs),
                            [x], device, dtype, rng)


@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_probability_targets(device, dtype, rng):
    x, p = rng.standard_normal((4, 5, 3)), rng.dirichlet(np.ones(5), (4, 3)).transpose(0, 2, 1)
    w = rng.uniform(0.5, 2, 5)
    for reduction in ("mean", "sum", "none"):
        compare(lambda x, p: F.cross_entropy(x, p, vk_in(w, device), reduction=reduction,
                                             label_smoothing=0.1),
                lambda x, p: TF.cross_entropy(x, p, torch_in(w), reduction=reduction,
                                              label_smoothing=0.1),
                [x, p], device, dtype, rng)


@pytest.mark.parametrize("dtype", FLOATS)
def test_nll_loss(device, dtype, rng):
    for shape, target_shape in (((6, 5), (6,)), ((2, 4, 3), (2, 3))):
        labels = _labels(rng, target_shape, shape[1], ignore=True)
        w = rng.uniform(0.5, 2, shape[1])
        for reduction in ("mean", "sum", "none"):
            compare(lambda x: F.nll_loss(x, vk.tensor(labels, device=device), vk_in(w, device),
                                         reduction=reduction),
                    lambda x: TF.nll_loss(x, torch.tensor(labels, dtype=torch.long),
                                          torch_in(w), reduction=reduction),
                    [rng.standard_normal(shape)], device, dtype, rng)


@pytest.mark.parametrize("dtype", FLOATS)
def test_regression_losses(device, dtype, rng):
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    for reduction in ("mean", "sum", "none"):
        compare(lambda x, y: F.mse_loss(x, y, reduction),
                lambda x, y: TF.mse_loss(x, y, reduction=reduction), [a, b], device, dtype, rng)
        compare(lambda x, y: F.l1_loss(x, y, reduction),
                lambda x, y: TF.l1_loss(x, y, reduction=reduction), [a, b], device, dtype, rng)


@pytest.mark.parametrize("dtype", FLOATS)
def test_binary_cross_entropy_with_logits(device, dtype, rng):
    x = rng.standard_normal((4, 3)) * 4
    x[0] = [80.0, -80.0, 0.0]  # large logits: the softplus form does not overflow
    y = rng.uniform(0, 1, (4, 3))
    w, pw = rng.uniform(0.5, 2, (4, 3)), rng.uniform(0.5, 3, 3)
    for reduction in ("mean", "sum", "none"):
        compare(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction=reduction),
                lambda x, y: TF.binary_cross_entropy_with_logits(x, y, reduction=reduction),
                [x, y], device, dtype, rng)
        compare(lambda x, y, w, pw: F.binary_cross_entropy_with_logits(x, y, w, reduction, pw),
                lambda x, y, w, pw: TF.binary_cross_entropy_with_logits(
                    x, y, w, reduction=reduction, pos_weight=pw), [x, y, w, pw], device, dtype,
                rng, n_grad=2)


@pytest.mark.parametrize("dtype", FLOATS)
def test_multi_margin_loss(device, dtype, rng):
    for shape in ((6, 4), (5,)):
        c = shape[-1]
        labels = _labels(rng, shape[:-1], c)
        w = rng.uniform(0.5, 2, c)
        for p, margin, weighted in ((1, 1.0, False), (2, 0.7, True)):
            for reduction in ("mean", "sum", "none"):
                def run(x, lib):
                    fn = F.multi_margin_loss if lib == "vk" else TF.multi_margin_loss
                    target = vk.tensor(labels, device=device) if lib == "vk" else \
                        torch.tensor(labels, dtype=torch.long)
                    weight = None if not weighted else (
                        vk_in(w, device) if lib == "vk" else torch_in(w))
                    return fn(x, target, p=p, margin=margin, weight=weight, reduction=reduction)
                compare(lambda x: run(x, "vk"), lambda x: run(x, "torch"),
                        [rng.standard_normal(shape)], device, dtype, rng)


def test_loss_errors(device, rng):
    x = vk_in(rng.standard_normal((3, 4)), device)
    labels = vk.tensor([0, 1, 2], device=device)
    for fn in (F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.multi_margin_loss,
               F.binary_cross_entropy_with_logits):
        target = x if fn in (F.mse_loss, F.l1_loss, F.binary_cross_entropy_with_logits) \
            else labels
        with pytest.raises(ValueError, match="reduction must be one of"):
            fn(x, target, reduction="avg")
    with pytest.raises(ValueError, match=r"\(3, 4\).*targets of shape \(3,\), got \(2,\)"):
        F.cross_entropy(x, vk.tensor([0, 1], device=device))
    with pytest.raises(TypeError, match="integer class labels"):
        F.nll_loss(x, vk.tensor([0.0, 1.0, 2.0], device=device).reshape(3, 1)[:, 0] > 0)
    with pytest.raises(IndexError, match="target 4 is out of bounds for 4 classes"):
        F.cross_entropy(x, vk.tensor([0, 4, 1]))
    with pytest.raises(IndexError, match="target -1"):
        F.multi_margin_loss(x, vk.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        F.multi_margin_loss(x, labels, p=3)
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, labels, label_smoothing=1.5)
    # host labels work with a device input
    assert np.isfinite(F.cross_entropy(x, vk.tensor([0, 1, 2])).item())


@pytest.mark.parametrize("dtype", FLOATS)
def test_class_losses_with_every_target_ignored(device, dtype, rng):
    """torch 2.13: "mean" is 0/0, NaN, but the gradient is 0 (ignored elements take no part),
    with label smoothing too. Where the class weights of the targets sum to 0 instead, the
    gradient of those rows is NaN."""
    x_np = rng.standard_normal((3, 4))
    cases = [([-100] * 3, None, (0.0, 0.2)), ([2, 2, -100], [1.0, 2.0, 0.0, 1.0], (0.0,))]
    for labels, w, smoothings in cases:
        for fn, tfn, smoothing in ([(F.cross_entropy, TF.cross_entropy, s) for s in smoothings]
                                   + [(F.nll_loss, TF.nll_loss, None)]):
            for reduction in ("mean", "sum", "none"):
                kwargs = dict(reduction=reduction)
                if smoothing is not None:
                    kwargs["label_smoothing"] = smoothing
                x, t = vk_in(x_np, device, dtype, grad=True), torch_in(x_np, dtype, grad=True)
                out = fn(x, vk.tensor(labels, device=device),
                         None if w is None else vk_in(w, device, dtype), **kwargs)
                ref = tfn(t, torch.tensor(labels), None if w is None else torch_in(w, dtype),
                          **kwargs)
                what = f"{fn.__name__} {labels} {w} {kwargs}"
                np.testing.assert_array_equal(np.isnan(out.numpy().astype(np.float32)),
                                              np.isnan(ref.detach().numpy()), what)
                out.sum().backward()
                ref.sum().backward()
                got, expected = x.grad.numpy().astype(np.float32), t.grad.numpy()
                np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), what)
                np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)],
                                           rtol=1e-2 if dtype == "bfloat16" else 1e-5,
                                           atol=1e-6, err_msg=what)
