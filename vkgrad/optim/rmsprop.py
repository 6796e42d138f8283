"""RMSprop, optionally centered and with momentum (PyTorch's algorithm).

>>> opt = vk.optim.RMSprop(model.parameters(), lr=1e-2, alpha=0.99, centered=True)

Per parameter, with g the gradient (negated when maximize):
    g = g + weight_decay * p
    s = alpha * s + (1 - alpha) * g * g
    a = a + (1 - alpha) * (g - a)                  centered
    d = sqrt(s - a * a) + eps if centered else sqrt(s) + eps
    b = momentum * b + g / d;  p = p - lr * b      momentum > 0
    p = p - lr * g / d                             otherwise
"""
from .optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop; state: "step", "square_avg", and "momentum_buffer" (momentum > 0) and
    "grad_avg" (centered)."""
    RULE = "rmsprop"
    BUFFERS = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, maximize=False, master_weights=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize,
                                      master_weights=master_weights))

    def _check(self, group):
        self._check_nonnegative(group, ("lr", "alpha", "eps", "weight_decay", "momentum"))

    def _buffer_names(self, group):
        return tuple(name for name, on in zip(self.BUFFERS, (True, group["momentum"] > 0,
                                                             group["centered"])) if on)

    def _config(self, group):
        flags = {name for name, on in (("MOMENTUM", group["momentum"] > 0),
                                       ("CENTERED", group["centered"]),
                                       ("MAXIMIZE", group["maximize"])) if on}
        return flags, dict(lr=group["lr"], weight_decay=group["weight_decay"],
                           alpha=group["alpha"], one_minus_alpha=1 - group["alpha"],
                           eps=group["eps"], momentum=group["momentum"])
