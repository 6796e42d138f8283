"""Linear, Identity and Flatten.

>>> fc = nn.Linear(256, 128, device="vulkan")    # weight [128, 256], bias [128]
>>> fc(vk.randn(32, 256, device="vulkan")).shape
(32, 128)
"""
from math import sqrt

from ..creation import empty
from . import functional as F, init
from .module import Module
from .parameter import Parameter

__all__ = ["Linear", "Identity", "Flatten"]


def reset_weight_and_bias(weight, bias):
    """PyTorch's default for Linear and Conv: weight ~ kaiming_uniform_(a=sqrt(5)), that is
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and bias ~ the same U."""
    init.kaiming_uniform_(weight, a=sqrt(5))
    if bias is not None:
        fan_in = init.calculate_fan_in_and_fan_out(weight)[0]
        init._bounded(bias, 1 / sqrt(fan_in) if fan_in else 0.0, None)


class Linear(Module):
    """y = x @ weight.T + bias for x of shape [..., in_features].

    weight [out_features, in_features], bias [out_features] (or None), both initialised to
    U(-1/sqrt(in_features), 1/sqrt(in_features)) from vkgrad's seeded generator.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(empty((out_features, in_features), dtype or "float32", device))
        if bias:
            self.bias = Parameter(empty((out_features,), dtype or "float32", device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Identity(Module):
    """Returns its input (a placeholder where a layer is optional)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Merges dims start_dim..end_dim into one: [N, C, H, W] -> [N, C*H*W] by default."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        start, end = (d + x.ndim if d < 0 else d for d in (self.start_dim, self.end_dim))
        if not 0 <= start <= end < max(x.ndim, 1):
            raise ValueError(f"Flatten: dims {self.start_dim}..{self.end_dim} are not a range "
                             f"of an input of shape {x.shape}")
        return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1:])

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
