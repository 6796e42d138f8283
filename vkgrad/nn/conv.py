"""Conv1d, Conv2d, ConvTranspose1d and ConvTranspose2d, on the convolution ops of
vkgrad/ops/conv.py.

>>> conv = nn.Conv2d(1, 6, 5, device="vulkan")   # weight [6, 1, 5, 5], bias [6]
>>> conv(vk.randn(8, 1, 28, 28, device="vulkan")).shape
(8, 6, 24, 24)
"""
import operator

from ..creation import empty
from ..ops.conv import conv2d_relu
from . import functional as F
from .activation import ReLU
from .linear import reset_weight_and_bias
from .module import Module
from .parameter import Parameter

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _tuple(layer, value, n, name, minimum):
    """`value` (an int or n ints) as n ints, each at least `minimum` (checked as the layer is
    built: PyTorch builds such a layer and refuses it when called)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) != n:
        raise ValueError(f"{layer}: {name} needs {n} values, got {value!r}")
    values = tuple(operator.index(v) for v in values)
    if any(v < minimum for v in values):
        raise ValueError(f"{layer}: {name} must be {'positive' if minimum else 'non-negative'}, "
                         f"got {value!r}")
    return values


class _ConvNd(Module):
    """Cross-correlation of an input [N, C_in, *spatial] with weight [C_out, C_in / groups,
    *kernel_size], plus bias [C_out]:
    out[n, o, p] = bias[o] + sum_{c, k} weight[o, c, k] * x[n, g(o) * C_in / groups + c,
                                                         p * stride + k * dilation - padding].
    padding may also be "valid" (none) or "same" (output as large as the input; stride 1;
    an odd total padding puts the extra element after, as PyTorch). padding_mode: "zeros", or
    F.pad's "reflect", "replicate" or "circular". Weight and bias are
    initialised to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in / groups * prod(kernel).
    """
    _n = 0

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        n, layer = self._n, type(self).__name__
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{layer}: padding_mode must be one of {_PADDING_MODES}, not "
                             f"{padding_mode!r}")
        self.padding_mode = padding_mode
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{layer}: in_channels ({in_channels}) and "
                             f"out_channels ({out_channels}) must be divisible by groups "
                             f"({groups})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = _tuple(layer, kernel_size, n, "kernel_size", 1)
        self.stride = _tuple(layer, stride, n, "stride", 1)
        self.dilation = _tuple(layer, dilation, n, "dilation", 1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"{layer}: padding must be 'valid', 'same' or "
                                 f"numbers, not {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{layer}: padding='same' needs stride 1")
            self.padding = padding
        else:
            self.padding = _tuple(layer, padding, n, "padding", 0)
        self.weight = Parameter(empty((out_channels, in_channels // groups, *self.kernel_size),
                                      dtype or "float32", device))
        self.register_parameter("bias", Parameter(empty((out_channels,), dtype or "float32",
                                                        device)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def _padded(self, x):
        """x padded as padding_mode says (F.pad; "zeros" leaves it to the op), and the padding
        left for the op."""
        if self.padding_mode == "zeros":
            return x, self.padding
        if self.padding == "valid":
            return x, (0,) * self._n
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            pairs = [(t // 2, t - t // 2) for t in totals]
        else:
            pairs = [(p, p) for p in self.padding]
        flat = tuple(v for pair in reversed(pairs) for v in pair)  # F.pad's order: last dim first
        return F.pad(x, flat, self.padding_mode), (0,) * self._n

    def extra_repr(self):
        return _conv_repr(self, (("padding", 0), ("dilation", 1)))


class Conv1d(_ConvNd):
    """1-d convolution of [N, C_in, L] inputs (see _ConvNd for the math)."""
    _n = 1

    def forward(self, x):
        x, padding = self._padded(x)
        return F.conv1d(x, self.weight, self.bias, self.stride[0],
                        padding if isinstance(padding, str) else padding[0], self.dilation[0],
                        self.groups)


class Conv2d(_ConvNd):
    """2-d convolution of [N, C_in, H, W] inputs (see _ConvNd for the math)."""
    _n = 2

    def forward(self, x):
        x, padding = self._padded(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation,
                        self.groups)

    def _fuse_with(self, following):
        """A ReLU right after: relu(conv2d(x)) as one op (ops.conv.conv2d_relu)."""
        if type(following) is not ReLU:
            return None

        def forward(x):
            x, padding = self._padded(x)
            return conv2d_relu(x, self.weight, self.bias, self.stride, padding, self.dilation,
                               self.groups)
        return forward


def _conv_repr(m, optional):
    """PyTorch's repr of a conv layer: channels, kernel_size and stride, then each of the
    (name, default) `optional` settings and groups and bias only where they differ."""
    s = f"{m.in_channels}, {m.out_channels}, kernel_size={m.kernel_size}, stride={m.stride}"
    for name, default in optional:
        if getattr(m, name) != (default,) * m._n:
            s += f", {name}={getattr(m, name)}"
    if m.groups != 1:
        s += f", groups={m.groups}"
    if m.bias is None:
        s += ", bias=False"
    return s


class _ConvTransposeNd(Module):
    """Transposed convolution (F.conv_transpose1d / 2d: the gradient of a convolution with
    respect to its input) with weight [C_in, C_out / groups, *kernel_size] (PyTorch's layout,
    so its state dicts load) and bias [C_out], initialised as PyTorch (fan_in from
    weight.shape[1:]). forward(x, output_size=None): output_size (the spatial sizes, or with
    N and C in front) picks the output_padding that reaches it."""
    _n = 0

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        super().__init__()
        n, layer = self._n, type(self).__name__
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(f"{layer}: in_channels ({in_channels}) and "
                             f"out_channels ({out_channels}) must be divisible by groups "
                             f"({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"{layer}: only padding_mode='zeros' is supported, as PyTorch")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = padding_mode
        self.kernel_size = _tuple(layer, kernel_size, n, "kernel_size", 1)
        self.stride = _tuple(layer, stride, n, "stride", 1)
        self.padding = _tuple(layer, padding, n, "padding", 0)
        self.output_padding = _tuple(layer, output_padding, n, "output_padding", 0)
        self.dilation = _tuple(layer, dilation, n, "dilation", 1)
        self.weight = Parameter(empty((in_channels, out_channels // groups, *self.kernel_size),
                                      dtype or "float32", device))
        self.register_parameter("bias", Parameter(empty((out_channels,), dtype or "float32",
                                                        device)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def _output_padding(self, x, output_size):
        if output_size is None:
            return self.output_padding
        size = tuple(output_size)[-self._n:]
        base = [(m - 1) * s - 2 * p + d * (k - 1) + 1 for m, s, p, d, k in zip(
            x.shape[-self._n:], self.stride, self.padding, self.dilation, self.kernel_size)]
        extra = tuple(t - b for t, b in zip(size, base))
        if len(size) != self._n or any(not 0 <= e < max(s, d) for e, s, d in zip(
                extra, self.stride, self.dilation)):
            raise ValueError(f"{type(self).__name__}: output_size {tuple(output_size)} is not "
                             f"reachable from input shape {x.shape}: the sizes from {base} up "
                             f"to less than stride or dilation more")
        return extra

    def extra_repr(self):
        return _conv_repr(self, (("padding", 0), ("output_padding", 0), ("dilation", 1)))


class ConvTranspose1d(_ConvTransposeNd):
    """Transposed 1-d convolution of [N, C_in, L] inputs (see _ConvTransposeNd)."""
    _n = 1

    def forward(self, x, output_size=None):
        return F.conv_transpose1d(x, self.weight, self.bias, self.stride[0], self.padding[0],
                                  self._output_padding(x, output_size)[0], self.groups,
                                  self.dilation[0])


class ConvTranspose2d(_ConvTransposeNd):
    """Transposed 2-d convolution of [N, C_in, H, W] inputs (see _ConvTransposeNd)."""
    _n = 2

    def forward(self, x, output_size=None):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(x, output_size), self.groups,
                                  self.dilation)
