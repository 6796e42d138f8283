"""BatchNorm1d, BatchNorm2d, LayerNorm and GroupNorm.

>>> bn = nn.BatchNorm2d(16)          # weight, bias; buffers running_mean, running_var,
>>> y = bn(x)                        # num_batches_tracked; batch statistics in training mode,
>>> bn.eval(); y = bn(x)             # running statistics in eval mode
"""
import operator

from .. import dtypes
from ..autograd import no_grad
from ..creation import empty
from ..tensor import ones, zeros
from . import functional as F, init
from .module import Module
from .parameter import Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm"]


class _BatchNorm(Module):
    """Normalises each channel (axis 1) to zero mean and unit variance, then scales by weight
    and shifts by bias (if affine; bias=False drops the shift). In training mode (or without
    track_running_stats) the batch statistics normalise, and the running ones are updated as
    running = (1 - momentum) * running + momentum * batch (unbiased variance); momentum=None
    gives the plain average over all batches seen. In eval mode the running statistics
    normalise."""
    _dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = dtype or "float32"
        self.register_parameter("weight", Parameter(empty((num_features,), dtype, device))
                                if affine else None)
        self.register_parameter("bias", Parameter(empty((num_features,), dtype, device))
                                if affine and bias else None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros((num_features,), dtype, device))
            self.register_buffer("running_var", ones((num_features,), dtype, device))
            self.register_buffer("num_batches_tracked", zeros((), dtypes.int32, device))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            with no_grad():
                self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        if x.ndim not in self._dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(map(str, self._dims))}"
                             f"-d input, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got an input with "
                             f"{x.shape[1]} channels (shape {x.shape})")
        momentum = self.momentum
        if self.training and self.track_running_stats:
            with no_grad():
                self.num_batches_tracked[...] = self.num_batches_tracked + 1
            if momentum is None:  # the cumulative average: batch n weighs 1 / n
                momentum = 1.0 / self.num_batches_tracked.item()
        # without running statistics (track_running_stats=False) the batch's normalise in eval
        # mode too; they are updated only in training mode
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or self.running_mean is None, momentum or 0.0,
                            self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of [N, C] or [N, C, L] inputs over N (and L)."""
    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of [N, C, H, W] inputs over N, H and W."""
    _dims = (4,)


class LayerNorm(Module):
    """Normalises over the last len(normalized_shape) dims, then scales by weight and shifts by
    bias (elementwise_affine; weight ones, bias zeros, both of normalized_shape)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if not isinstance(normalized_shape, (tuple, list)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(operator.index(n) for n in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        dtype = dtype or "float32"
        self.register_parameter("weight", Parameter(ones(self.normalized_shape, dtype, device))
                                if elementwise_affine else None)
        self.register_parameter("bias", Parameter(zeros(self.normalized_shape, dtype, device))
                                if elementwise_affine and bias else None)

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """F.group_norm: normalises each group of num_channels / num_groups channels of each sample
    over those channels and all positions, then scales by weight and shifts by bias per channel
    (affine; weight ones, bias zeros, both (num_channels,), as PyTorch's state dicts)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None):
        super().__init__()
        if num_groups <= 0 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = (num_groups, num_channels,
                                                                     eps, affine)
        dtype = dtype or "float32"
        for name, make in (("weight", ones), ("bias", zeros)):
            self.register_parameter(name, Parameter(make((num_channels,), dtype, device))
                                    if affine else None)

    def reset_parameters(self):
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
