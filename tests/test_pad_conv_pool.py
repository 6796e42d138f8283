"""Padding modes, convolution with "same" and transposed convolution, interpolation, and pooling
with ceil_mode, return_indices and max_unpool2d, against torch on float64 copies: forward and
gradients on every device, float32 (contiguous and transposed views; conftest's tolerance)
and bfloat16 (rounded once from float32, test_bf16_composites' check)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import vkgrad as vk
import vkgrad.nn as nn
import vkgrad.nn.functional as F
from test_bf16_composites import run_case, values
from test_losses_extra import check_f32

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")


def both(device, rng, vk_fn, torch_fn, arrays, n, n_grad=None, bilinear=False):
    check_f32(device, vk_fn, torch_fn, arrays, n, n_grad)
    check_f32(device, vk_fn, torch_fn, arrays, n, n_grad, strided=True)
    run_case(device, rng, vk_fn, torch_fn, arrays, n, n_grad, bilinear=bilinear)


# ---- F.pad ---------------------------------------------------------------------------------------
PADS = [((2, 3, 5), (2, 1)), ((1, 2, 4, 5), (1, 2, 3, 0)), ((2, 1, 3, 4), (-1, 2, 0, -2)),
        ((1, 2, 5), (3, -2)), ((1, 1, 2, 3, 4), (1, 1, 0, 2, 1, 0)), ((2, 3, 4), (0, 0))]


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,pad", PADS)
def test_pad_modes(device, mode, shape, pad, rng):
    x = rng.standard_normal(shape)
    both(device, rng, lambda t: F.pad(t, pad, mode), lambda t: TF.pad(t, pad, mode), [x], 4)


def test_pad_value_and_numpy_modes(device, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = vk.tensor(x, device=device)
    np.testing.assert_array_equal(F.pad(t, (1, 2), value=-2.5).numpy(),
                                  TF.pad(torch.from_numpy(x), (1, 2), value=-2.5).numpy())
    for mode in ("reflect", "edge", "wrap"):  # numpy's rules, also past the size
        np.testing.assert_array_equal(vk.pad(t, ((5, 2), (1, 9)), mode).numpy(),
                                      np.pad(x, ((5, 2), (1, 9)), mode))


@pytest.mark.parametrize("call,match", [
    (lambda t: F.pad(t, (4, 0), "reflect"), "less than the size"),
    (lambda t: F.pad(t, (0, 5), "circular"), "at most the size"),
    (lambda t: F.pad(t, (1,)), "pair"),
    (lambda t: F.pad(t, (1, 1), "symmetric"), "mode must be"),
    (lambda t: F.pad(t, (1, 1), "reflect", 2.0), "value is only"),
    (lambda t: F.pad(t, (-3, -2)), "negative size"),
    (lambda t: vk.pad(t, 1, "symmetric"), "mode must be"),
    (lambda t: vk.pad(t[:, :0], 1, "edge"), "size 0"),
])
def test_pad_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(vk.ones((2, 4)))


# ---- convolution: padding="same", transposed -----------------------------------------------------
@pytest.mark.parametrize("wshape,kwargs", [((3, 2, 4, 3), dict(padding="same")),
                                           ((3, 2, 2, 2), dict(padding="same", dilation=(1, 3))),
                                           ((4, 1, 3, 4), dict(padding="same", groups=2)),
                                           ((3, 2, 3, 3), dict(padding="valid", stride=2))])
def test_conv2d_string_padding(device, wshape, kwargs, rng):
    c = wshape[1] * kwargs.get("groups", 1)
    arrays = [rng.standard_normal((2, c, 5, 6)), rng.standard_normal(wshape),
              rng.standard_normal(wshape[0])]
    both(device, rng, lambda x, w, b: F.conv2d(x, w, b, **kwargs),
         lambda x, w, b: TF.conv2d(x, w, b, **kwargs), arrays, 30, bilinear=True)


def test_conv1d_same_and_padding_modes(device, rng):
    arrays = [rng.standard_normal((1, 2, 9)), rng.standard_normal((3, 2, 4))]
    check_f32(device, lambda x, w: F.conv1d(x, w, padding="same", dilation=2),
              lambda x, w: TF.conv1d(x, w, padding="same", dilation=2), arrays, 8)
    for mode in ("reflect", "replicate", "circular"):
        ref = torch.nn.Conv2d(2, 3, (3, 4), padding="same", padding_mode=mode).double()
        layer = nn.Conv2d(2, 3, (3, 4), padding="same", padding_mode=mode, device=device)
        layer.load_state_dict({k: vk.tensor(v.numpy(), vk.float32, device)
                               for k, v in ref.state_dict().items()})
        x = rng.standard_normal((2, 2, 5, 6))
        got = layer(vk.tensor(x, vk.float32, device)).numpy()
        np.testing.assert_allclose(got, ref(torch.from_numpy(x)).detach().numpy(), rtol=2e-5,
                                   atol=2e-5)


TRANSPOSED = [((2, 4, 5, 6), (4, 3, 3, 2), dict(stride=2, padding=1, output_padding=1)),
              ((1, 6, 4, 3), (6, 2, 3, 3), dict(groups=3, stride=(2, 3), dilation=(1, 2),
                                                output_padding=(1, 2))),
              ((2, 2, 3, 3), (2, 3, 2, 2), dict(dilation=3, output_padding=2)),
              ((1, 3, 1, 7), (3, 2, 1, 1), {})]


@pytest.mark.parametrize("xshape,wshape,kwargs", TRANSPOSED)
def test_conv_transpose2d(device, xshape, wshape, kwargs, rng):
    o = wshape[1] * kwargs.get("groups", 1)
    arrays = [rng.standard_normal(xshape), rng.standard_normal(wshape), rng.standard_normal(o)]
    n = wshape[0] * wshape[2] * wshape[3] + 1
    both(device, rng, lambda x, w, b: F.conv_transpose2d(x, w, b, **kwargs),
         lambda x, w, b: TF.conv_transpose2d(x, w, b, **kwargs), arrays, n, bilinear=True)


def test_conv_transpose1d_and_unbatched(device, rng):
    arrays = [rng.standard_normal((3, 7)), rng.standard_normal((3, 2, 3))]
    check_f32(device, lambda x, w: F.conv_transpose1d(x, w, stride=2, padding=1,
                                                      output_padding=1),
              lambda x, w: TF.conv_transpose1d(x, w, stride=2, padding=1, output_padding=1),
              arrays, 9)
    arrays = [rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 3, 2, 3))]
    check_f32(device, lambda x, w: F.conv_transpose2d(x, w, stride=(1, 2)),
              lambda x, w: TF.conv_transpose2d(x, w, stride=(1, 2)), arrays, 12)


@pytest.mark.parametrize("cls", ["ConvTranspose1d", "ConvTranspose2d"])
def test_conv_transpose_module_loads_torch_state_dict(device, cls, rng):
    dims = 1 if cls.endswith("1d") else 2
    ref = getattr(torch.nn, cls)(4, 6, 3, stride=2, padding=1, groups=2).double()
    layer = getattr(nn, cls)(4, 6, 3, stride=2, padding=1, groups=2, device=device)
    assert layer.weight.shape == tuple(ref.weight.shape)
    layer.load_state_dict({k: vk.tensor(v.numpy(), vk.float32, device)
                           for k, v in ref.state_dict().items()})
    x = rng.standard_normal((2, 4) + (5,) * dims)
    size = (10,) * dims  # output_size picks output_padding 1
    got = layer(vk.tensor(x, vk.float32, device), output_size=size).numpy()
    np.testing.assert_allclose(got, ref(torch.from_numpy(x), output_size=size).detach().numpy(),
                               rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match="not reachable"):
        layer(vk.tensor(x, vk.float32, device), output_size=(12,) * dims)


@pytest.mark.parametrize("call,match", [
    (lambda: F.conv2d(vk.ones((1, 2, 5, 5)), vk.ones((3, 2, 3, 3)), padding="same", stride=2),
     "needs stride 1"),
    (lambda: F.conv2d(vk.ones((1, 2, 5, 5)), vk.ones((3, 2, 3, 3)), padding="full"),
     "'valid', 'same'"),
    (lambda: F.conv_transpose2d(vk.ones((1, 2, 5, 5)), vk.ones((2, 3, 3, 3)), stride=2,
                                output_padding=2), "output_padding"),
    (lambda: F.conv_transpose2d(vk.ones((1, 3, 5, 5)), vk.ones((2, 3, 3, 3))), "in_channels"),
    (lambda: F.conv_transpose2d(vk.ones((1, 2, 2, 2)), vk.ones((2, 3, 3, 3)), padding=3),
     "empty"),
    (lambda: nn.Conv2d(2, 3, 3, padding_mode="mirror"), "padding_mode"),
])
def test_conv_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- interpolate ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,kwargs", [
    ((2, 3, 5, 7), dict(size=(8, 3))), ((1, 2, 4, 5), dict(scale_factor=2)),
    ((1, 2, 5, 7), dict(scale_factor=1.7)), ((2, 1, 6, 5), dict(scale_factor=(0.5, 2.3))),
    ((1, 2, 5, 7), dict(size=(13, 11), mode="nearest-exact")),
    ((2, 3, 9), dict(scale_factor=2.5, recompute_scale_factor=True))])
def test_interpolate_nearest_picks_torchs_sources(device, shape, kwargs, rng):
    """Exactly torch's float32 results: the same index arithmetic."""
    x = rng.standard_normal(shape).astype(np.float32)
    got = F.interpolate(vk.tensor(x, device=device), **kwargs).numpy()
    np.testing.assert_array_equal(got, TF.interpolate(torch.from_numpy(x), **kwargs).numpy())
    check_f32(device, lambda t: F.interpolate(t, **kwargs),
              lambda t: TF.interpolate(t, **kwargs), [x], 8)


@pytest.mark.parametrize("shape,kwargs", [
    ((2, 3, 5, 7), dict(size=(9, 4))), ((1, 2, 5, 7), dict(size=(9, 4), align_corners=True)),
    ((1, 2, 4, 5), dict(scale_factor=1.5)),
    ((2, 1, 5, 6), dict(scale_factor=(0.4, 3), recompute_scale_factor=True)),
    ((1, 1, 3, 3), dict(size=(1, 1), align_corners=True))])
def test_interpolate_bilinear(device, shape, kwargs, rng):
    both(device, rng, lambda t: F.interpolate(t, mode="bilinear", **kwargs),
         lambda t: TF.interpolate(t, mode="bilinear", **kwargs), [rng.standard_normal(shape)],
         16)


def test_interpolate_area_and_upsample(device, rng):
    x = rng.standard_normal((2, 3, 7, 9))
    check_f32(device, lambda t: F.interpolate(t, size=(3, 4), mode="area"),
              lambda t: TF.interpolate(t, size=(3, 4), mode="area"), [x], 12)
    check_f32(device, lambda t: F.interpolate(t, scale_factor=0.5, mode="area"),
              lambda t: TF.interpolate(t, scale_factor=0.5, mode="area"), [x], 12)
    for kwargs in (dict(scale_factor=2), dict(size=(5, 4), mode="bilinear", align_corners=True)):
        xs = x.astype(np.float32)
        got = nn.Upsample(**kwargs)(vk.tensor(xs, device=device)).numpy()
        ref = torch.nn.Upsample(**kwargs)(torch.from_numpy(xs)).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_interpolate_linear(device, rng):
    for align in (False, True):
        check_f32(device, lambda t: F.interpolate(t, size=11, mode="linear", align_corners=align),
                  lambda t: TF.interpolate(t, size=11, mode="linear", align_corners=align),
                  [rng.standard_normal((2, 3, 4))], 8)


@pytest.mark.parametrize("kwargs,match", [
    (dict(size=4, mode="bilinear"), "needs a 4-D"), (dict(size=4, align_corners=True), "only"),
    (dict(), "either"), (dict(size=(4, 0)), "positive"), (dict(size=4, mode="cubic"), "mode")])
def test_interpolate_bad_arguments(kwargs, match):
    x = vk.ones((1, 1, 3)) if kwargs.get("mode") == "bilinear" else vk.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match=match):
        F.interpolate(x, **kwargs)


# ---- pooling: ceil_mode, return_indices, divisor_override, max_unpool2d --------------------------
POOLS = [dict(kernel_size=3, stride=2), dict(kernel_size=2), dict(kernel_size=3, stride=2,
                                                                   padding=1),
         dict(kernel_size=(3, 2), stride=(2, 3), padding=1)]


@pytest.mark.parametrize("kwargs", POOLS)
def test_max_pool2d_ceil_mode_and_indices(device, kwargs, rng):
    x = rng.standard_normal((2, 3, 7, 8))
    both(device, rng, lambda t: F.max_pool2d(t, ceil_mode=True, **kwargs),
         lambda t: TF.max_pool2d(t, ceil_mode=True, **kwargs), [x], 1)
    for ceil in (False, True):
        xs = x.astype(np.float32)
        out, idx = F.max_pool2d(vk.tensor(xs, device=device), ceil_mode=ceil,
                                return_indices=True, dilation=2 if "padding" in kwargs else 1,
                                **kwargs)
        ref, ref_idx = TF.max_pool2d(torch.from_numpy(xs), ceil_mode=ceil, return_indices=True,
                                     dilation=2 if "padding" in kwargs else 1, **kwargs)
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
        assert idx.dtype is vk.int32
        np.testing.assert_array_equal(idx.numpy(), ref_idx.numpy())


def test_asymmetric_padding_through_pad(device, rng):
    """(left, right, top, bottom) padding for conv and pooling is F.pad first, as in torch."""
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((3, 2, 3, 2))
    check_f32(device, lambda t, w: F.conv2d(F.pad(t, (0, 1, 2, 1)), w),
              lambda t, w: TF.conv2d(TF.pad(t, (0, 1, 2, 1)), w), [x, w], 12)
    check_f32(device, lambda t: F.max_pool2d(F.pad(t, (1, 0, 0, 2), value=float("-inf")), 2),
              lambda t: TF.max_pool2d(TF.pad(t, (1, 0, 0, 2), value=float("-inf")), 2), [x], 1)


@pytest.mark.parametrize("kwargs", POOLS[:3])
@pytest.mark.parametrize("count_include_pad,divisor_override", [(True, None), (False, None),
                                                                (True, 5)])
def test_avg_pool2d_ceil_mode_and_divisor(device, kwargs, count_include_pad, divisor_override,
                                          rng):
    both(device, rng, lambda t: F.avg_pool2d(t, ceil_mode=True,
                                             count_include_pad=count_include_pad,
                                             divisor_override=divisor_override, **kwargs),
         lambda t: TF.avg_pool2d(t, ceil_mode=True, count_include_pad=count_include_pad,
                                 divisor_override=divisor_override, **kwargs),
         [rng.standard_normal((2, 3, 7, 8))], 10)


@pytest.mark.parametrize("kernel,stride,output_size", [(2, 2, None), (3, 2, (7, 8)),
                                                       (3, 1, None)])
def test_max_unpool2d(device, kernel, stride, output_size, rng):
    """Overlapping windows (stride < kernel) pick some maxima twice: each is written once, and
    its gradient is the output gradient there, as torch."""
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    _, idx = TF.max_pool2d(torch.from_numpy(x), kernel, stride, return_indices=True)
    v = rng.standard_normal(idx.shape)
    vk_idx = vk.tensor(idx.numpy().astype(np.int32), device=device)
    both(device, rng, lambda t: F.max_unpool2d(t, vk_idx, kernel, stride,
                                               output_size=output_size),
         lambda t: TF.max_unpool2d(t, idx, kernel, stride, output_size=output_size), [v], 1)


def test_pooling_modules(device, rng):
    x = rng.standard_normal((1, 2, 7, 9)).astype(np.float32)
    t, tt = vk.tensor(x, device=device), torch.from_numpy(x)
    pool = nn.MaxPool2d(3, 2, ceil_mode=True, return_indices=True)
    unpool, ref_unpool = nn.MaxUnpool2d(3, 2), torch.nn.MaxUnpool2d(3, 2)
    out, idx = pool(t)
    ref, ref_idx = torch.nn.MaxPool2d(3, 2, ceil_mode=True, return_indices=True)(tt)
    np.testing.assert_array_equal(idx.numpy(), ref_idx.numpy())
    np.testing.assert_array_equal(unpool(out, idx, output_size=x.shape).numpy(),
                                  ref_unpool(ref, ref_idx, output_size=x.shape).numpy())
    avg = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False, divisor_override=3)(t)
    ref = torch.nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False, divisor_override=3)(tt)
    np.testing.assert_allclose(avg.numpy(), ref.numpy(), rtol=1e-6)


def test_unpool_bad_arguments():
    with pytest.raises(ValueError, match="indices must be integers"):
        F.max_unpool2d(vk.ones((1, 1, 2, 2)), vk.ones((1, 1, 2, 2)), 2)
    with pytest.raises(ValueError, match="divisor_override"):
        F.avg_pool2d(vk.ones((1, 1, 4, 4)), 2, divisor_override=0)


@pytest.mark.parametrize("shape,size", [((2, 3, 7, 9), (3, 4)), ((1, 2, 5, 5), 1),
                                        ((1, 2, 3, 3), (5, None)), ((2, 1, 8, 6), (4, 3))])
def test_adaptive_max_pool2d(device, shape, size, rng):
    """Overlapping, uneven and upsampling bins; indices and the gradient at the first maximum."""
    x = rng.standard_normal(shape)
    both(device, rng, lambda t: F.adaptive_max_pool2d(t, size),
         lambda t: TF.adaptive_max_pool2d(t, size), [x], 2)
    xs = x.astype(np.float32)
    out, idx = nn.AdaptiveMaxPool2d(size, return_indices=True)(vk.tensor(xs, device=device))
    ref, ref_idx = TF.adaptive_max_pool2d(torch.from_numpy(xs), size, return_indices=True)
    np.testing.assert_array_equal(out.numpy(), ref.numpy())
    np.testing.assert_array_equal(idx.numpy(), ref_idx.numpy())
