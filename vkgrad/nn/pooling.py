"""MaxPool2d, AvgPool2d, MaxUnpool2d, AdaptiveAvgPool2d, AdaptiveMaxPool2d and Upsample, on
the pooling ops of vkgrad/ops/conv.py (Upsample: F.interpolate). A window that the op would
refuse (a kernel or stride below 1, padding outside 0 .. kernel / 2) is refused when the layer
is built."""
from ..ops.conv import pool_window
from . import functional as F
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "MaxUnpool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
           "Upsample"]


class MaxPool2d(Module):
    """out[n, c, i, j] = max of x [N, C, H, W] over the kernel_size window (taps `dilation`
    apart) at (i * stride - padding, j * stride - padding), padding counting as -inf; stride
    defaults to kernel_size. ceil_mode: a last, partial window where one is left;
    return_indices: also each maximum's position in its plane (for MaxUnpool2d)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        pool_window(type(self).__name__, kernel_size, stride, padding, dilation)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """The mean of x [N, C, H, W] over each kernel_size window at (i * stride - padding,
    j * stride - padding); padded zeros count towards the divisor unless
    count_include_pad=False, and divisor_override replaces it. stride defaults to kernel_size;
    ceil_mode: a last, partial window where one is left."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        pool_window(type(self).__name__, kernel_size, stride, padding)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool2d(Module):
    """F.max_unpool2d: the maxima of MaxPool2d(return_indices=True) put back at their indices,
    zeros elsewhere; forward(x, indices, output_size=None)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        pool_window(type(self).__name__, kernel_size, stride, padding)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def forward(self, x, indices, output_size=None):
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding,
                              output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Averages [N, C, H, W] down to [N, C, *output_size]: output cell i covers input rows
    floor(i H / out) .. ceil((i + 1) H / out) - 1 (likewise columns), as PyTorch."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """The maximum of [N, C, H, W] over the same bins as AdaptiveAvgPool2d, [N, C, *output_size];
    return_indices: also each maximum's position in its plane."""

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, x):
        return F.adaptive_max_pool2d(x, self.output_size, self.return_indices)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Upsample(Module):
    """F.interpolate of the input to `size` or by `scale_factor`, in `mode` ("nearest",
    "nearest-exact", "area", "linear", "bilinear", "trilinear"), as torch.nn.Upsample."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else \
            f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"
