"""MaxPool2d, AvgPool2d and AdaptiveAvgPool2d, on the pooling ops of vkgrad/ops/conv.py.
A window that the op would refuse (a kernel or stride below 1, padding outside 0 .. kernel / 2)
is refused when the layer is built."""
from ..ops.conv import pool_window
from . import functional as F
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


class MaxPool2d(Module):
    """out[n, c, i, j] = max of x [N, C, H, W] over the kernel_size window (taps `dilation`
    apart) at (i * stride - padding, j * stride - padding), padding counting as -inf; stride
    defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        pool_window(type(self).__name__, kernel_size, stride, padding, dilation)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}")


class AvgPool2d(Module):
    """The mean of x [N, C, H, W] over each kernel_size window at (i * stride - padding,
    j * stride - padding); padded zeros count towards the divisor unless
    count_include_pad=False. stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__()
        pool_window(type(self).__name__, kernel_size, stride, padding)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.count_include_pad = padding, count_include_pad

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            self.count_include_pad)

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
