"""Gradients at edge values (+-0, +-inf, NaN, ties, bounds, values whose squares underflow or
whose quotients overflow) against torch's autograd in float32 on the same float32 inputs and
upstream gradient, on every device.

Each case is one of the conventions in docs/numerics.md ("Gradients at edge values"): where the
formula is 0 * inf or inf / inf, torch picks a value (0, the linear piece's, a share), and so do
we. NaN must be where torch's is; other values within 2^-21 relatively (4 float32 ulps: ours and
torch's each round a product or quotient of 2 or 3 terms, at most 3 * 2^-24 apiece), +-inf equal.
tests/test_activations.py::test_backward_at_nan_against_torch holds the activations' kinks at NaN.
"""
import numpy as np
import pytest
import torch

import vkgrad as vk
import vkgrad.nn.functional as F

TF = torch.nn.functional
NAN, INF = np.nan, np.inf


def _f32(*rows):
    return np.array(rows, np.float32)


# Pairs whose x^2 + y^2 is 0 (at the origin, or underflowing) beside ordinary ones.
ATAN2_Y = _f32(0.0, -0.0, 0.0, 1e-30, 0.0, 1e-30, -1e-25, 1e-45, 1.0, 0.0, 3.0, NAN, 0.0)
ATAN2_X = _f32(0.0, 0.0, -0.0, 0.0, -1e-30, 1e-30, 1e-26, 0.0, 0.0, -2.0, 4.0, 0.0, NAN)
# Divisors whose square underflows (the quotient stays in range, or overflows in both formulas).
DIV_A = _f32(1.0, -1e-20, 0.0, -0.0, 1e-30, 1e-45, 3.0, NAN, 2.0, 1.0, 0.0, INF)
DIV_B = _f32(1e-20, 1e-25, 1e-30, -1e-30, 1e-30, -1e-40, 1e-10, 1e-30, 1e-45, 0.0, 0.0, 1e-30)
# clip(x, lo, hi) with tensor bounds: lo == hi (torch gives lo nothing there), lo > hi, NaN.
CLIP_X = _f32(-3.0, 0.5, 1.0, 2.0, -3.0, 0.5, 2.0, NAN, 0.5, -INF)
CLIP_LO = _f32(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0)
CLIP_HI = _f32(1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, NAN, 1.0)
# Rows for the reductions: NaN (one, two), ties, signed zeros, infinities, constant rows.
ROWS = _f32([NAN, 1.0, 2.0, 3.0], [1.0, NAN, 2.0, NAN], [3.0, 1.0, 3.0, 2.0],
            [-0.0, 0.0, -1.0, -1.0], [INF, 1.0, INF, -INF], [NAN, INF, -INF, 0.0],
            [1.0, 2.0, 3.0, 4.0])
CONSTANT_ROWS = _f32([3.0, 3.0, 3.0, 3.0], [0.0, -0.0, 0.0, 0.0], [1e-30, 1e-30, 1e-30, 1e-30],
                     [-2.0, -2.0, -2.0, -2.0], [1.0, 2.0, 4.0, 8.0], [NAN, 1.0, 1.0, 1.0])
# prod: one infinite or NaN element per row, beside zeros or not (a zero anywhere in the tensor
# sends torch through its exact product of the others; without one it divides, inf / inf)
PROD_ROWS = _f32([INF, 1.0, 2.0, 3.0], [0.0, 2.0, INF, 1.0], [NAN, 2.0, 0.0, 1.0],
                 [0.0, 0.0, NAN, 1.0], [-INF, 2.0, 1.0, 0.5], [1.0, 2.0, 3.0, 4.0])
# input, target of the losses: |input - target| infinite or NaN beside finite differences.
LOSS_X = _f32(INF, -INF, 0.0, 2.0, INF, NAN, 0.25, -3.0, 1e30, 0.0)
LOSS_Y = _f32(0.0, 1.0, INF, -INF, INF, 0.0, 0.0, -3.0, -1e30, NAN)

CE_LABELS = np.array([1, 2, 0], np.int64)
MARGIN_LABELS = np.array([0, 1, 0, 2], np.int64)
# scatter_reduce: infinite and NaN src beside finite ones, several to one place
SCATTER_T = _f32([1.0, 5.0, NAN, 2.0], [3.0, 3.0, 0.0, -0.0])
SCATTER_SRC = _f32([5.0, 1.0, 2.0, NAN, 5.0, 3.0], [3.0, 3.0, -0.0, 0.0, 1.0, INF])
SCATTER_INDEX = np.array([[1, 0, 3, 2, 1, 1], [0, 1, 2, 3, 0, 0]], np.int64)


def _scatter_mean(include_self):
    return (lambda t, s: vk.scatter_reduce(
                t, 1, vk.tensor(SCATTER_INDEX.astype(np.int32), device=t.device), s, "mean",
                include_self=include_self),
            lambda t, s: t.scatter_reduce(1, torch.from_numpy(SCATTER_INDEX), s, "mean",
                                          include_self=include_self),
            [SCATTER_T, SCATTER_SRC])


def _rowwise(fn):
    """torch's full-reduction rule of `fn` (max, min) on each row: torch.max(x) shares the
    gradient among the ties, the NaNs where the result is NaN, while amax(dim) gives a NaN row."""
    return lambda x: torch.stack([fn(r) for r in x.unbind(0)])


# name: (vkgrad function, torch function, inputs)
CASES = {
    "atan2": (lambda y, x: y.atan2(x), torch.atan2, [ATAN2_Y, ATAN2_X]),
    "div": (lambda a, b: a / b, torch.div, [DIV_A, DIV_B]),
    "clip_tensor_bounds": (vk.clip, torch.clamp, [CLIP_X, CLIP_LO, CLIP_HI]),
    "max": (lambda x: x.max(), torch.max, [ROWS]),
    "min": (lambda x: x.min(), torch.min, [ROWS]),
    "max_nan_only": (lambda x: x.max(), torch.max, [ROWS[1]]),
    "max_axis_1": (lambda x: x.max(axis=1), _rowwise(torch.max), [ROWS]),
    "min_axis_1": (lambda x: x.min(axis=1), _rowwise(torch.min), [ROWS]),
    "max_axis_0": (lambda x: x.max(axis=0), lambda x: _rowwise(torch.max)(x.T), [ROWS.T.copy()]),
    "prod_axis_1": (lambda x: x.prod(axis=1), lambda x: x.prod(1), [PROD_ROWS]),
    "prod_axis_0": (lambda x: x.prod(axis=0), lambda x: x.prod(0), [PROD_ROWS.T.copy()]),
    "std_axis_1": (lambda x: x.std(axis=1), lambda x: x.std(1, correction=0), [CONSTANT_ROWS]),
    "std_axis_1_ddof_1": (lambda x: x.std(axis=1, ddof=1), lambda x: x.std(1), [CONSTANT_ROWS]),
    "std_axis_0": (lambda x: x.std(axis=0, keepdims=True),
                   lambda x: x.std(0, correction=0, keepdim=True), [CONSTANT_ROWS.T.copy()]),
    "std_constant": (lambda x: x.std(), lambda x: x.std(correction=0), [CONSTANT_ROWS[0]]),
    "smooth_l1": (lambda x, y: F.smooth_l1_loss(x, y, "none"),
                  lambda x, y: TF.smooth_l1_loss(x, y, reduction="none"), [LOSS_X, LOSS_Y]),
    "smooth_l1_beta_0.5_mean": (lambda x, y: F.smooth_l1_loss(x, y, beta=0.5),
                                lambda x, y: TF.smooth_l1_loss(x, y, beta=0.5),
                                [LOSS_X, LOSS_Y]),
    "huber": (lambda x, y: F.huber_loss(x, y, "none"),
              lambda x, y: TF.huber_loss(x, y, reduction="none"), [LOSS_X, LOSS_Y]),
    "huber_delta_2_sum": (lambda x, y: F.huber_loss(x, y, "sum", 2.0),
                          lambda x, y: TF.huber_loss(x, y, reduction="sum", delta=2.0),
                          [LOSS_X, LOSS_Y]),
    # logits so large that lse = m + log(sum exp(x - m)) rounds to m: softmax is still 1/3, 1/2
    "cross_entropy_large_logits": (
        lambda x: F.cross_entropy(x, vk.tensor(CE_LABELS.astype(np.int32), device=x.device)),
        lambda x: TF.cross_entropy(x, torch.from_numpy(CE_LABELS)),
        [_f32([1e30, 1e30, 1e30], [1e8, 1e8, 0.0], [1.0, 2.0, 3.0])]),
    # each src counts once in the mean's divisor, also an infinite or NaN one
    "scatter_reduce_mean": _scatter_mean(True),
    "scatter_reduce_mean_without_self": _scatter_mean(False),
    # an infinite score at the label (its own term, i == y, is inf - inf), hinges at their kink
    "multi_margin_p2": (
        lambda x: F.multi_margin_loss(x, vk.tensor(MARGIN_LABELS.astype(np.int32),
                                                   device=x.device), p=2, reduction="none"),
        lambda x: TF.multi_margin_loss(x, torch.from_numpy(MARGIN_LABELS), p=2,
                                       reduction="none"),
        [_f32([INF, 0.0, 1.0], [1.0, 2.0, 0.0], [2.0, 1.0, 1.0], [0.0, -INF, 3.0])]),
    # a NaN makes the whole row's gradient NaN; a zero row (beside a finite one) gets 0
    "cosine_similarity": (F.cosine_similarity, TF.cosine_similarity,
                          [_f32([NAN, 1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]),
                           _f32([1.0, 2.0, 3.0], [1.0, -1.0, 2.0], [0.0, 0.0, 0.0])]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_at_edges_against_torch(name, device):
    fn, torch_fn, inputs = CASES[name]
    tin = [torch.from_numpy(x.copy()).requires_grad_() for x in inputs]
    tout = torch_fn(*tin)
    g = np.random.default_rng(sum(map(ord, name))).uniform(0.5, 2.0, tout.shape).astype(
        np.float32)
    expected = torch.autograd.grad(tout, tin, torch.from_numpy(g))
    vin = [vk.tensor(x, device=device, requires_grad=True) for x in inputs]
    got = vk.grad(fn(*vin), vin, vk.tensor(g, device=device))
    for i, (a, b) in enumerate(zip(got, expected)):
        a, b = a.numpy().astype(np.float64), b.numpy().astype(np.float64)
        where = f"{name}, gradient {i} on {device}: got {a.ravel()}, torch {b.ravel()}"
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=where)
        finite = np.isfinite(b)
        np.testing.assert_array_equal(a[~finite & ~np.isnan(b)], b[~finite & ~np.isnan(b)],
                                      err_msg=where)
        np.testing.assert_allclose(a[finite], b[finite], rtol=2 ** -21, atol=2.0 ** -149,
                                   err_msg=where)


@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_scatter_extreme_gradient_at_nan(reduce, device):
    """scatter_reduce amax/amin: a NaN wins, and a NaN result's gradient is shared among the NaNs
    there (of t and src), as the full max()/min() reductions do; torch's is NaN for all of them
    (its share is g / 0 where nothing equals the NaN). Elsewhere torch's rule: to the winner."""
    t = vk.tensor(_f32(1.0, NAN, 2.0), device=device, requires_grad=True)
    src = vk.tensor(_f32(NAN, 3.0, 5.0, 0.0), device=device, requires_grad=True)
    index = vk.tensor(np.array([1, 1, 2, 0], np.int32), device=device)
    out = vk.scatter_reduce(t, 0, index, src, reduce)
    g0, g1, g2 = 0.5, 1.5, 2.0
    gt, gsrc = vk.grad(out, [t, src], vk.tensor(_f32(g0, g1, g2), device=device))
    if reduce == "amax":  # max(1, 0) = 1, max(NaN, NaN, 3) = NaN, max(2, 5) = 5
        expected_out, expected_t, expected_src = [1.0, NAN, 5.0], [g0, g1 / 2, 0], [
            g1 / 2, 0, g2, 0]
    else:  # min(1, 0) = 0, NaN, min(2, 5) = 2
        expected_out, expected_t, expected_src = [0.0, NAN, 2.0], [0, g1 / 2, g2], [
            g1 / 2, 0, 0, g0]
    np.testing.assert_array_equal(out.numpy(), _f32(*expected_out))
    np.testing.assert_array_equal(gt.numpy(), _f32(*expected_t))
    np.testing.assert_array_equal(gsrc.numpy(), _f32(*expected_src))
