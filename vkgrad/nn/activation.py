"""Activation modules, as torch's (see functional for the math): ReLU, GELU, SiLU, Sigmoid,
Tanh, Softmax, LogSoftmax, LeakyReLU, PReLU, ELU, CELU, SELU, Hardtanh, ReLU6, Hardsigmoid,
Hardswish, Mish, Softsign, LogSigmoid, Softmin, Softplus."""
from ..tensor import full
from . import functional as F
from .module import Module
from .parameter import Parameter

__all__ = ["ReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "LeakyReLU",
           "PReLU", "ELU", "CELU", "SELU", "Hardtanh", "ReLU6", "Hardsigmoid", "Hardswish",
           "Mish", "Softsign", "LogSigmoid", "Softmin", "Softplus"]


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        return F.relu(x)


class GELU(Module):
    """x * Phi(x); approximate="tanh" for the tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', not {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """x * sigmoid(x)."""

    def forward(self, x):
        return F.silu(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Softmax(Module):
    """softmax along `dim` (PyTorch's implicit choice of dim is deprecated: it must be given)."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """log_softmax along `dim`."""

    def forward(self, x):
        return F.log_softmax(x, self.dim)


class LeakyReLU(Module):
    """x for x > 0, else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class PReLU(Module):
    """leaky_relu with a learned slope: `weight` of num_parameters elements (1: shared, or one
    per channel of axis 1), initialised to `init`, as torch (so state dicts load)."""

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = num_parameters
        self.weight = Parameter(full((num_parameters,), init, dtype or "float32", device))

    def forward(self, x):
        return F.prelu(x, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class ELU(Module):
    """x for x > 0, else alpha * (exp(x) - 1)."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class CELU(ELU):
    """x for x > 0, else alpha * (exp(x / alpha) - 1)."""

    def forward(self, x):
        return F.celu(x, self.alpha)


class SELU(Module):
    """scale * elu(x, alpha) with torch's constants."""

    def forward(self, x):
        return F.selu(x)


class Hardtanh(Module):
    """x clipped to [min_val, max_val] (gradient 0 at the bounds, as torch)."""

    def __init__(self, min_val=-1.0, max_val=1.0):
        super().__init__()
        if min_val > max_val:
            raise ValueError(f"Hardtanh: min_val {min_val} is greater than max_val {max_val}")
        self.min_val, self.max_val = min_val, max_val

    def forward(self, x):
        return F.hardtanh(x, self.min_val, self.max_val)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    """min(max(x, 0), 6)."""

    def __init__(self):
        super().__init__(0.0, 6.0)


class Hardsigmoid(Module):
    """min(max(x + 3, 0), 6) / 6."""

    def forward(self, x):
        return F.hardsigmoid(x)


class Hardswish(Module):
    """x * min(max(x + 3, 0), 6) / 6."""

    def forward(self, x):
        return F.hardswish(x)


class Mish(Module):
    """x * tanh(softplus(x))."""

    def forward(self, x):
        return F.mish(x)


class Softsign(Module):
    """x / (1 + |x|)."""

    def forward(self, x):
        return F.softsign(x)


class LogSigmoid(Module):
    """log(sigmoid(x))."""

    def forward(self, x):
        return F.logsigmoid(x)


class Softmin(Softmax):
    """softmax(-x) along `dim`."""

    def forward(self, x):
        return F.softmin(x, self.dim)


class Softplus(Module):
    """log(1 + exp(beta x)) / beta, x where beta x > threshold."""

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"
