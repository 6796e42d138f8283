"""scaled_dot_product_attention, MultiheadAttention and TransformerEncoderLayer against torch.

The references run in float64 from the same (dtype-rounded) inputs. Bounds, with u = 2^-24 (the
float32 unit roundoff) and the inputs' magnitudes: a score s = q.k * scale carries an error of
at most E u |q| |k| scale (E terms); softmax's relative error is then at most 2 of those plus S u
for the normalising sum, and out = p @ v adds S u max|v|. So |out - ref| <= 4 (E |q||k| scale + S)
u max|v|, and the gradients, one more product each, the same bound times the magnitude of their
reference. bf16 rounds the float32 result once: one more half ulp, at most 2^-8 |ref|.
"""
import ml_dtypes
import numpy as np
import pytest
import torch

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad import nn

U32 = 2.0 ** -24


def _rounded(x, dtype):
    """x rounded to `dtype`'s values, as float64 (what both sides start from)."""
    return x.astype(ml_dtypes.bfloat16).astype(np.float64) if dtype == "bfloat16" else \
        x.astype(np.float32).astype(np.float64)


def _bound(q, k, v, ref, scale, dtype):
    e, s = q.shape[-1], k.shape[-2]
    f32 = 4 * (e * np.abs(q).max() * np.abs(k).max() * scale + s) * U32
    return f32, (2.0 ** -8 if dtype == "bfloat16" else 0.0)


def _torch_sdpa(q, k, v, w, **kw):
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    mask = kw.pop("attn_mask", None)
    if mask is not None:
        mask = torch.tensor(mask)
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask, **kw)
    (out * torch.tensor(w)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in (tq, tk, tv)]


def _check(got, ref, f32, half_ulp, magnitude, what):
    tol = f32 * magnitude + half_ulp * np.abs(ref) + 1e-30
    bad = np.abs(got.astype(np.float64) - ref) > tol
    assert not bad.any(), (what, np.abs(got - ref).max(), tol.max())


# (q shape, k shape, v shape, kwargs maker(rng) -> kwargs)
CASES = {
    "plain": ((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6), lambda r: {}),
    "causal": ((2, 2, 9, 4), (2, 2, 9, 4), (2, 2, 9, 4), lambda r: {"is_causal": True}),
    "causal-L<S": ((1, 2, 3, 4), (1, 2, 6, 4), (1, 2, 6, 5), lambda r: {"is_causal": True}),
    "bool-broadcast": ((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 4),
                       lambda r: {"attn_mask": r.random((5, 7)) > 0.4}),
    "bool-empty-row": ((2, 2, 4, 4), (2, 2, 6, 4), (2, 2, 6, 3),
                       lambda r: {"attn_mask": np.array([[True] * 6, [False] * 6, [True] * 3
                                                          + [False] * 3, [False] + [True] * 5])
                                  .reshape(1, 1, 4, 6)}),
    "additive": ((2, 3, 5, 4), (2, 3, 7, 4), (2, 3, 7, 4),
                 lambda r: {"attn_mask": r.standard_normal((3, 1, 7)).astype(np.float32)}),
    "scale": ((3, 6, 16), (3, 6, 16), (3, 6, 16), lambda r: {"scale": 0.7}),
    "3-d batch broadcast": ((2, 3, 5, 4), (1, 3, 7, 4), (1, 3, 7, 4), lambda r: {}),
    "dropout-p0": ((2, 2, 5, 4), (2, 2, 5, 4), (2, 2, 5, 4), lambda r: {"dropout_p": 0.0}),
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", list(CASES))
def test_sdpa_matches_torch(case, dtype, device):
    qs, ks, vs, make = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    q, k, v = (_rounded(rng.standard_normal(s), dtype) for s in (qs, ks, vs))
    kw = make(rng)
    if "attn_mask" in kw and kw["attn_mask"].dtype != bool:
        kw["attn_mask"] = _rounded(kw["attn_mask"], dtype)
    out_shape = np.broadcast_shapes(qs[:-1], ks[:-2] + (1,))[:-1] + (qs[-2], vs[-1])
    w = _rounded(rng.standard_normal(out_shape), dtype)  # the upstream gradient
    ref, ref_grads = _torch_sdpa(q, k, v, w, **kw)
    tensors = [vk.tensor(x, dtype=dtype, device=device, requires_grad=True) for x in (q, k, v)]
    mask = kw.get("attn_mask")
    if mask is not None:
        kw["attn_mask"] = vk.tensor(mask, dtype=bool if mask.dtype == bool else dtype,
                                    device=device)
    out = F.scaled_dot_product_attention(*tensors, **kw)
    assert out.dtype is vk.dtype(dtype) and out.shape == ref.shape
    (out.astype(vk.float32) * vk.tensor(w, dtype="float32", device=device)).sum().backward()
    scale = kw.get("scale") or qs[-1] ** -0.5
    f32, half_ulp = _bound(q, k, v, ref, scale, dtype)
    _check(out.numpy(), ref, f32, half_ulp, np.abs(v).max(), f"{case} output")
    for t, g, name in zip(tensors, ref_grads, "qkv"):
        assert t.grad.dtype is vk.dtype(dtype)
        _check(t.grad.numpy(), g, 4 * f32, half_ulp, np.abs(g).max() * max(qs[-1], ks[-2]),
               f"{case} d{name}")


def test_sdpa_fully_masked_row_is_zero(device):
    # torch's rule: a query no key takes part for gets 0, and no NaN reaches the gradients
    q = vk.randn(1, 3, 4, device=device).requires_grad_()
    mask = vk.tensor([[True] * 5, [False] * 5, [True] * 5], device=device)
    out = F.scaled_dot_product_attention(q, vk.randn(1, 5, 4, device=device),
                                         vk.randn(1, 5, 2, device=device), attn_mask=mask)
    out.sum().backward()
    assert (out.numpy()[0, 1] == 0).all() and np.isfinite(q.grad.numpy()).all()
    assert (q.grad.numpy()[0, 1] == 0).all()


def test_sdpa_dropout_statistics(device):
    """q = k = 0 makes every weight 1/S; with value = I the output is the dropped weights:
    each 0 with probability p, else 1 / (S (1 - p)). Over n = 16 * 64 * 64 weights the number
    dropped is binomial: within 5 standard deviations of n p."""
    vk.manual_seed(3)
    s, p = 64, 0.3
    q = vk.zeros((16, s, 8), device=device)
    eye = vk.eye(s, device=device).expand_dims(0)
    got = F.scaled_dot_product_attention(q, q, eye, dropout_p=p).numpy().ravel()
    kept = got != 0
    np.testing.assert_allclose(got[kept], 1 / (s * (1 - p)), rtol=16 * U32)
    n = got.size
    assert abs((~kept).sum() - n * p) < 5 * np.sqrt(n * p * (1 - p)), (~kept).sum() / n
    again = F.scaled_dot_product_attention(q, q, eye, dropout_p=p).numpy().ravel()
    assert not np.array_equal(again, got)  # each call draws a new mask


def test_sdpa_bad_input(device):
    q = vk.ones((2, 3, 4), device=device)
    mask = vk.ones((3, 3), dtype=vk.bool_, device=device)
    with pytest.raises(ValueError, match="not both"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=mask, is_causal=True)
    with pytest.raises(ValueError, match=r"do not fit"):
        F.scaled_dot_product_attention(q, vk.ones((2, 3, 5), device=device), q)
    with pytest.raises(ValueError, match="does not broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=vk.ones((2, 3), dtype=vk.bool_,
                                                                  device=device))
    with pytest.raises(ValueError, match="does not broadcast"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=vk.ones((4, 1, 3, 3), device=device))
    with pytest.raises(ValueError, match="dropout_p"):
        F.scaled_dot_product_attention(q, q, q, dropout_p=1.5)


# ---- modules from torch's state dicts ------------------------------------------------------------
def _load(ours, theirs, device, dtype="float32"):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours.to(device, dtype)


def _grads_close(ours, theirs, tol):
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        ref = tp[name].grad.double().numpy()
        np.testing.assert_allclose(p.grad.numpy(), ref, atol=tol * (np.abs(ref).max() + 1),
                                   err_msg=name)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("masks", ["none", "bool+padding", "float"])
def test_multihead_attention_matches_torch(batch_first, masks, device):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    theirs = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first).double()
    ours = _load(nn.MultiheadAttention(16, 4, batch_first=batch_first), theirs, device)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    n, big_l, s = 2, 5, 7
    shape = (lambda t: (n, t, 16)) if batch_first else (lambda t: (t, n, 16))
    q, kv = rng.standard_normal(shape(big_l)), rng.standard_normal(shape(s))
    kw, tkw = {}, {}
    if masks == "bool+padding":
        am, kpm = rng.random((big_l, s)) > 0.7, np.zeros((n, s), bool)
        kpm[0, 2] = kpm[1, 5] = True
        kw = {"attn_mask": vk.tensor(am, device=device),
              "key_padding_mask": vk.tensor(kpm, device=device)}
        tkw = {"attn_mask": torch.tensor(am), "key_padding_mask": torch.tensor(kpm)}
    elif masks == "float":
        am = rng.standard_normal((n * 4, big_l, s))
        kw, tkw = {"attn_mask": vk.tensor(am, dtype="float32", device=device)}, {
            "attn_mask": torch.tensor(am)}
    for average in (True, False):
        tq, tkv = torch.tensor(q, requires_grad=True), torch.tensor(kv, requires_grad=True)
        tout, tw = theirs(tq, tkv, tkv, average_attn_weights=average, **tkw)
        tout.sum().backward()
        vq = vk.tensor(q, dtype="float32", device=device, requires_grad=True)
        vkv = vk.tensor(kv, dtype="float32", device=device, requires_grad=True)
        out, weights = ours(vq, vkv, vkv, average_attn_weights=average, **kw)
        out.sum().backward()
        tol = 64 * U32 * 16  # a few float32 products of 16 terms, relative to the magnitudes
        np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), atol=tol * 4)
        np.testing.assert_allclose(weights.numpy(), tw.detach().numpy(), atol=tol)
        np.testing.assert_allclose(vq.grad.numpy(), tq.grad.numpy(), atol=tol * 16)
        np.testing.assert_allclose(vkv.grad.numpy(), tkv.grad.numpy(), atol=tol * 16)
        _grads_close(ours, theirs, tol * 16)
        ours.zero_grad()
        theirs.zero_grad()
    # need_weights=False takes SDPA's direct path: the same output, no weights
    out, weights = ours(vq, vkv, vkv, need_weights=False, **kw)
    assert weights is None
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), atol=tol * 4)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation, device):
    torch.manual_seed(1)
    theirs = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, activation=activation,
                                              batch_first=True, norm_first=norm_first).double()
    ours = _load(nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, activation=activation,
                                            batch_first=True, norm_first=norm_first),
                 theirs, device)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.eval()
    ours.eval()  # dropout off: the same function
    x = np.random.default_rng(2).standard_normal((3, 6, 16))
    mask = np.triu(np.ones((6, 6), bool), 1)
    tx = torch.tensor(x, requires_grad=True)
    tout = theirs(tx, src_mask=torch.tensor(mask))
    (tout * tout).sum().backward()
    vx = vk.tensor(x, dtype="float32", device=device, requires_grad=True)
    out = ours(vx, src_mask=vk.tensor(mask, device=device))
    (out * out).sum().backward()
    tol = 256 * U32 * 32  # two layer norms and three products of up to 32 terms
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), atol=tol)
    np.testing.assert_allclose(vx.grad.numpy(), tx.grad.numpy(), atol=tol * 16)
    _grads_close(ours, theirs, tol * 16)
    causal = ours(vx, is_causal=True)  # the hint without a mask: the same causal triangle
    np.testing.assert_allclose(causal.numpy(), out.numpy(), atol=tol)


def test_encoder_layer_bf16(device):
    """bf16 weights and input: every op computes in float32 and rounds once, so each of the
    layer's roughly 12 rounding steps adds at most 2^-8 relative: 12 * 2^-8 of the output's
    scale (layer norm makes it about 1) against torch in float64 from the same bf16 values."""
    torch.manual_seed(2)
    theirs = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation="gelu",
                                              batch_first=True, norm_first=False).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(p.to(torch.bfloat16).double())
    ours = _load(nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation="gelu",
                                            batch_first=True), theirs, device, "bfloat16")
    x = _rounded(np.random.default_rng(3).standard_normal((2, 5, 16)), "bfloat16")
    out = ours(vk.tensor(x, dtype="bfloat16", device=device))
    assert out.dtype is vk.bfloat16
    ref = theirs(torch.tensor(x)).detach().numpy()
    assert np.abs(out.numpy().astype(np.float64) - ref).max() <= 12 * 2.0 ** -8 * np.abs(ref).max()


def test_multihead_attention_bad_input():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        nn.MultiheadAttention(10, 4)
    with pytest.raises(NotImplementedError, match="kdim"):
        nn.MultiheadAttention(8, 2, kdim=4)
    with pytest.raises(ValueError, match="activation"):
        nn.TransformerEncoderLayer(8, 2, activation="tanh")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("causal", [False, True])
def test_fused_matches_composed(causal, dtype, device):
    """Without a mask SDPA takes the fused op (one attention.comp dispatch on Vulkan); an
    all-True bool mask forces the composed reference. Both compute in float32 and round once, so
    they differ by the float32 bound of the module docstring plus one bf16 rounding each."""
    rng = np.random.default_rng(5)
    b, big_l, e = (2, 2), 33, 128                      # the longest rows the kernel holds
    q, k, v = (_rounded(rng.standard_normal((*b, big_l, e)), dtype) for _ in range(3))
    w = _rounded(rng.standard_normal((*b, big_l, e)), dtype)
    keep = np.tril(np.ones((big_l, big_l), bool)) if causal else np.ones((big_l, big_l), bool)
    results = []
    for mask in (None, vk.tensor(keep, device=device)):
        ts = [vk.tensor(x, dtype=dtype, device=device, requires_grad=True) for x in (q, k, v)]
        out = F.scaled_dot_product_attention(*ts, attn_mask=mask,
                                             is_causal=causal and mask is None)
        (out.astype(vk.float32) * vk.tensor(w, dtype="float32", device=device)).sum().backward()
        results.append([out.numpy().astype(np.float64)]
                       + [t.grad.numpy().astype(np.float64) for t in ts])
    f32, half_ulp = _bound(q, k, v, None, e ** -0.5, dtype)
    for fused, composed, what in zip(*results, ["out", "dq", "dk", "dv"]):
        scale = np.abs(composed).max()
        tol = 8 * f32 * scale * (1 if what == "out" else big_l) + 2 * half_ulp * np.abs(composed)
        diff = np.abs(fused - composed)
        assert (diff <= tol + 1e-30).all(), (what, diff.max())


def test_causal_forward_is_one_dispatch(vulkan):
    """On Vulkan causal attention is one attention.comp dispatch: no L x S scores, no matmul."""
    q = vk.randn(2, 4, 16, 8, device=vulkan)
    vk.synchronize()
    vk.reset_stats()
    with vk.no_grad():
        out = F.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert vk.stats()["dispatches_recorded"] == 1
    assert out.shape == (2, 4, 16, 8)


def test_tri_and_masked_fill_bad_input(device):
    x = vk.ones((3, 4), device=device)
    with pytest.raises(ValueError, match="at least 2 dims"):
        vk.tril(vk.ones(3, device=device))
    with pytest.raises(TypeError, match="must be a bool Tensor"):
        x.masked_fill(x, 0.0)
    with pytest.raises(ValueError, match="does not broadcast to the input's shape"):
        x.masked_fill(vk.ones((2, 3, 4), dtype=vk.bool_, device=device), 0.0)
    with pytest.raises(ValueError, match="scalar or 0-d"):
        x.masked_fill(x > 0, vk.ones(2, device=device))
    np.testing.assert_array_equal(x.triu(1).numpy(), np.triu(np.ones((3, 4)), 1))
