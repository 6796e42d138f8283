"""Weight initialisation, in place, as torch.nn.init: the values come from vkgrad's seeded
generator (`generator=`, or the default one that vk.manual_seed restarts), drawn directly on the
tensor's device and in its dtype; the host and Vulkan draw the same numbers.

>>> w = vk.empty((128, 256), device="vulkan")
>>> nn.init.kaiming_uniform_(w, a=5 ** 0.5)   # U(-b, b), b = gain * sqrt(3 / fan_in)
>>> nn.init.zeros_(b)

fan_in = size(1) * receptive field, fan_out = size(0) * receptive field, the receptive field
being the product of the dims after the first two (kernel sizes of a convolution weight).
"""
from math import prod, sqrt

from ..autograd import no_grad
from ..random import normal, uniform

__all__ = ["calculate_gain", "calculate_fan_in_and_fan_out", "uniform_", "normal_", "constant_",
           "ones_", "zeros_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
           "kaiming_normal_"]


def calculate_gain(nonlinearity, param=None):
    """The gain PyTorch recommends for `nonlinearity`: 1 for linear/conv/sigmoid, 5/3 for tanh,
    sqrt(2) for relu, sqrt(2 / (1 + slope^2)) for leaky_relu (slope = param, 0.01 if None),
    3/4 for selu."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"calculate_gain: negative slope {slope!r} is not a number")
        return sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def calculate_fan_in_and_fan_out(t):
    """(fan_in, fan_out) of a weight: size(1) and size(0) times the receptive field."""
    if t.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dims, got shape "
                         f"{t.shape}")
    receptive = prod(t.shape[2:])
    return t.shape[1] * receptive, t.shape[0] * receptive


def _fill(t, values):
    with no_grad():
        t[...] = values
    return t


def uniform_(t, a=0.0, b=1.0, generator=None):
    """Fill `t` with samples of U(a, b)."""
    return _fill(t, uniform(a, b, t.shape, t.dtype, t.device, generator))


def normal_(t, mean=0.0, std=1.0, generator=None):
    """Fill `t` with samples of N(mean, std^2)."""
    return _fill(t, normal(mean, std, t.shape, t.dtype, t.device, generator))


def constant_(t, val):
    """Fill `t` with `val`."""
    return _fill(t, val)


def ones_(t):
    return _fill(t, 1.0)


def zeros_(t):
    return _fill(t, 0.0)


def _bounded(t, bound, generator):
    # U(-0, 0) is not a distribution: a tensor with no inputs (fan 0) gets zeros
    return uniform_(t, -bound, bound, generator) if bound > 0 else zeros_(t)


def xavier_uniform_(t, gain=1.0, generator=None):
    """U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(t)
    return _bounded(t, gain * sqrt(6.0 / (fan_in + fan_out)), generator)


def xavier_normal_(t, gain=1.0, generator=None):
    """N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(t)
    return normal_(t, 0.0, gain * sqrt(2.0 / (fan_in + fan_out)), generator)


def _kaiming_std(t, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', not {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(t)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / sqrt(fan) if fan else 0.0


def kaiming_uniform_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(-b, b) with b = gain * sqrt(3 / fan) (He et al.); gain = calculate_gain(nonlinearity,
    a). With a = sqrt(5) (Linear and Conv) b is 1 / sqrt(fan_in)."""
    return _bounded(t, sqrt(3.0) * _kaiming_std(t, a, mode, nonlinearity), generator)


def kaiming_normal_(t, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, std^2) with std = gain / sqrt(fan)."""
    return normal_(t, 0.0, _kaiming_std(t, a, mode, nonlinearity), generator)
