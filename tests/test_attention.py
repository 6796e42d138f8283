"""scaled_dot_product_attention, MultiheadAttention and TransformerEncoderLayer against torch.

The references run in float64 from the same (dtype-rounded) inputs. Bounds, with u = 2^-24 (the
float32 unit roundoff) and the inputs' magnitudes: a score s = q.k * scale carries an error of
at most E u |q| |k| scale (E terms); softmax's relative error is then at most 2 of those plus S u
for the normalising sum, and out = p @ v adds S u max|v|. So |out - ref| <= 4 (E |q||k| scale + S)
u max|v|, and the gradients, one more product each, the same bound times the magnitude of their
reference. bf16 rounds the float32 result once: one more half ulp, at most 2^-8 |ref|.
"""
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad import nn
from vkgrad.ops.transformer_ops import composed_weights, fused_fits

from conftest import bf16_ulp

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


# ---- the fused op (forward and backward) on awkward shapes, against torch and the composed ----
# (batch, heads, L, S, E, Ev, mask): L, S in 1, 7, 17, 65, 130; odd widths (bf16 writes those
# rows in float32 and rounds them once); masks broadcast over batch or heads or both.
FUSED = {
    "1x1": (1, 1, 1, 1, 8, 8, "none"),
    "causal L<S": (2, 3, 7, 17, 8, 6, "causal"),
    "causal L>S": (2, 2, 17, 7, 16, 16, "causal"),
    "causal odd width": (1, 2, 65, 65, 33, 33, "causal"),
    "causal 130": (1, 1, 130, 130, 16, 16, "causal"),
    "bool per batch": (2, 2, 130, 17, 16, 8, "bool (B, 1, L, S)"),
    "bool shared": (1, 3, 17, 130, 8, 16, "bool (L, S)"),
    "key padding": (3, 1, 1, 130, 33, 8, "bool (B, 1, 1, S)"),
    "additive per head": (2, 3, 7, 65, 16, 9, "additive (1, H, 1, S)"),
    "additive -inf rows": (2, 1, 65, 7, 8, 8, "additive (B, H, L, S) with -inf"),
    "plain 130x65": (1, 2, 130, 65, 33, 16, "none"),
}


def _fused_inputs(case, dtype):
    b, h, big_l, s, e, ev, kind = FUSED[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    q, k, v, w = (_rounded(rng.standard_normal(shape), dtype)
                  for shape in ((b, h, big_l, e), (b, h, s, e), (b, h, s, ev), (b, h, big_l, ev)))
    mask = None
    if kind.startswith("bool"):
        shape = {"(B, 1, L, S)": (b, 1, big_l, s), "(L, S)": (big_l, s),
                 "(B, 1, 1, S)": (b, 1, 1, s)}[kind[5:]]
        mask = rng.random(shape) > 0.4
    elif kind.startswith("additive"):
        mask = _rounded(rng.standard_normal((1, h, 1, s) if "(1, H" in kind else (b, h, big_l, s)),
                        dtype)
        if "-inf" in kind:
            mask[rng.random(mask.shape) < 0.3] = -np.inf
            mask[0, 0, 3] = -np.inf  # a query no key takes part for
    return q, k, v, w, mask, kind == "causal"


def _vk_sdpa(q, k, v, w, mask, causal, dtype, device, composed=False):
    """(out, dq, dk, dv) as float64 from the fused op (through F.scaled_dot_product_attention)
    or the composed reference (transformer_ops.composed_weights)."""
    ts = [vk.tensor(x, dtype=dtype, device=device, requires_grad=True) for x in (q, k, v)]
    m = None if mask is None else vk.tensor(mask, dtype=bool if mask.dtype == bool else dtype,
                                            device=device)
    if composed:
        out = composed_weights(ts[0], ts[1], m, q.shape[-1] ** -0.5,
                                                      causal) @ ts[2].astype(vk.float32)
        out = out.astype(dtype)
    else:
        assert fused_fits(*ts, m)
        out = F.scaled_dot_product_attention(*ts, attn_mask=m, is_causal=causal)
    assert out.dtype is vk.dtype(dtype)
    grads = vk.grad(out, ts, vk.tensor(w, dtype=dtype, device=device))
    return [x.numpy().astype(np.float64) for x in (out, *grads)]


def _tolerances(q, k, v, refs, dtype):
    """Per-element bounds of (out, dq, dk, dv): the module docstring's float32 bound times each
    result's largest magnitude, for the gradients plus 4 u per term of the sums they add
    (dP = g v^T: Ev terms, D: S, the products with P or dS: L or S), and for bf16 half a bf16 ulp
    of the result: its one rounding."""
    f32, _ = _bound(q, k, v, None, q.shape[-1] ** -0.5, dtype)
    extra = 4 * (v.shape[-1] + q.shape[-2] + k.shape[-2]) * U32
    out = []
    for i, ref in enumerate(refs):
        tol = (f32 + (extra if i else 0.0)) * np.abs(ref).max(initial=0.0)
        if dtype == "bfloat16":
            tol = tol + 0.5 * bf16_ulp(np.abs(ref) + tol)
        out.append(tol + 1e-30)
    return out


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", list(FUSED))
def test_fused_forward_backward_matches_torch(case, dtype, device):
    q, k, v, w, mask, causal = _fused_inputs(case, dtype)
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    tout = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.tensor(mask), is_causal=causal)
    (tout * torch.tensor(w)).sum().backward()
    refs = [x.detach().numpy() for x in (tout, tq.grad, tk.grad, tv.grad)]
    got = _vk_sdpa(q, k, v, w, mask, causal, dtype, device)
    for g, ref, tol, what in zip(got, refs, _tolerances(q, k, v, refs, dtype),
                                 ["out", "dq", "dk", "dv"]):
        bad = np.abs(g - ref) > tol
        assert not bad.any(), (what, np.abs(g - ref).max(), np.argwhere(bad)[:3])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["causal L<S", "causal odd width", "bool per batch",
                                  "additive -inf rows", "key padding"])
def test_fused_matches_composed(case, dtype, device):
    """The fused op against the composed reference on the same device: both compute in float32
    (each within the float32 bound of the exact result) and round once, so they differ by twice
    the bounds of test_fused_forward_backward_matches_torch."""
    q, k, v, w, mask, causal = _fused_inputs(case, dtype)
    fused = _vk_sdpa(q, k, v, w, mask, causal, dtype, device)
    composed = _vk_sdpa(q, k, v, w, mask, causal, dtype, device, composed=True)
    for a, b, tol, what in zip(fused, composed, _tolerances(q, k, v, composed, dtype),
                               ["out", "dq", "dk", "dv"]):
        assert (np.abs(a - b) <= 2 * tol).all(), (what, np.abs(a - b).max())


def test_fused_double_backward_matches_torch(device):
    """Under create_graph the fused op's backward is the composed reference's, which
    differentiates again: d/dq of |dL/dq|^2 against torch."""
    q, k, v, w, mask, causal = _fused_inputs("causal L<S", "float32")
    tq = torch.tensor(q, requires_grad=True)
    tout = torch.nn.functional.scaled_dot_product_attention(tq, torch.tensor(k), torch.tensor(v),
                                                            is_causal=True)
    (tg,) = torch.autograd.grad((tout * torch.tensor(w)).sum(), tq, create_graph=True)
    (tg * tg).sum().backward()
    vq, vk_, vv, vw = (vk.tensor(x, dtype="float32", device=device) for x in (q, k, v, w))
    vq.requires_grad_()
    out = F.scaled_dot_product_attention(vq, vk_, vv, is_causal=True)
    (g,) = vk.grad((out * vw).sum(), vq, create_graph=True)
    np.testing.assert_allclose(g.numpy(), tg.detach().numpy(), atol=1e-5)
    (g * g).sum().backward()
    np.testing.assert_allclose(vq.grad.numpy(), tq.grad.numpy(), atol=1e-4)


def test_fused_nan_reaches_the_rows_that_see_it(device):
    """A NaN in query row 1 and in key 3 (causal): the outputs of rows 1, 3 and 4 are NaN (row 1
    through its query, rows 3 and 4 through the key they see), rows 0 and 2 stay finite, since a
    key that takes no part contributes nothing (torch's math path, which adds -inf to q k^T,
    makes every row NaN); so do dq's rows 1, 3, 4 and the gradient rows of k and v that a NaN
    row reaches."""
    rng = np.random.default_rng(8)
    q, k, v, w = (rng.standard_normal((1, 5, 4)).astype(np.float32) for _ in range(4))
    q[0, 1, 2] = k[0, 3, 0] = np.nan
    ts = [vk.tensor(x, device=device, requires_grad=True) for x in (q, k, v)]
    out = F.scaled_dot_product_attention(*ts, is_causal=True)
    (out * vk.tensor(w, device=device)).sum().backward()
    np.testing.assert_array_equal(np.isnan(out.numpy()).any(-1)[0], [False, True, False, True,
                                                                     True])
    assert np.isnan(ts[0].grad.numpy()[0, [1, 3, 4]]).all()
    for t in ts[1:]:  # every key j is seen by a NaN row i >= j (1, 1, 3, 3, 4)
        assert np.isnan(t.grad.numpy()).any(-1).all()
    assert np.isfinite(out.numpy()[0, [0, 2]]).all()


def test_fused_replayed_by_compile(device):
    """vk.compile replays the fused forward and backward on new values: the log-sum-exp the
    backward reads is one of the step's results, not a constant of the first call."""
    def step(q, k, v):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return vk.grad((out * out).sum(), [q, k, v])

    compiled = vk.compile(step)
    rng = np.random.default_rng(4)
    for _ in range(3):
        qkv = [vk.tensor(rng.standard_normal((2, 9, 8)), "float32", device).requires_grad_()
               for _ in range(3)]
        for got, expected in zip(compiled(*qkv), step(*qkv)):
            np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_fused_dispatches(vulkan):
    """On Vulkan causal attention is one attention.comp dispatch forward (no L x S scores, no
    matmul) and two backward (dq, then dk and dv); one when only dq is wanted."""
    q, k, v = (vk.randn(2, 4, 16, 8, device=vulkan).requires_grad_() for _ in range(3))
    g = vk.randn(2, 4, 16, 8, device=vulkan)
    vk.synchronize()
    vk.reset_stats()
    with vk.no_grad():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert vk.stats()["dispatches_recorded"] == 1
    assert out.shape == (2, 4, 16, 8)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    vk.synchronize()
    vk.reset_stats()
    vk.grad(out, [q, k, v], g)
    assert vk.stats()["dispatches_recorded"] == 2
    out = F.scaled_dot_product_attention(q, k.detach(), v.detach(), is_causal=True)
    vk.synchronize()
    vk.reset_stats()
    vk.grad(out, [q], g)
    assert vk.stats()["dispatches_recorded"] == 1


MEMORY_CHILD = """
import sys
import numpy as np
import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad.ops.transformer_ops import composed_weights
device, big_l = vk.device(sys.argv[1]), int(sys.argv[2])
x = [vk.randn(1, 2, big_l, 8, device=device).requires_grad_() for _ in range(3)]
g = vk.randn(1, 2, big_l, 8, device=device)
growth = []
for fused in (True, False):
    vk.synchronize()
    start = vk.memory_stats(device)["in_use_bytes"]
    if fused:
        out = F.scaled_dot_product_attention(*x, is_causal=True)
    else:
        out = composed_weights(x[0], x[1], None, 8 ** -0.5, True) @ x[2]
    grads = vk.grad(out, x, g)
    vk.synchronize()
    growth.append(vk.memory_stats(device)["peak_bytes"] - start)
    del out, grads
print(*growth)
"""


def test_fused_backward_stores_no_scores(vulkan):
    """The arena's peak, in a fresh process, above what the inputs hold: forward and backward
    of causal attention over 2 heads of L = S = 1024 allocate less than one L x S float32 matrix
    (4 MiB) fused (out, dq, dk, dv, lse and D are 2 x 1024 x (4 x 8 + 2) floats), while the
    composed reference allocates several."""
    big_l = 1024
    child = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(vulkan), str(big_l)],
                           capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert child.returncode == 0, child.stderr
    fused, composed = map(int, child.stdout.split())
    scores = big_l * big_l * 4
    assert fused < scores / 8, (fused, scores)
    assert composed > 2 * scores, (composed, scores)


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
