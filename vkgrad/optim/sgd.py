"""SGD with momentum, dampening, Nesterov momentum and weight decay (PyTorch's algorithm).

>>> opt = vk.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)

Per parameter, with g the gradient (negated when maximize):
    g = g + weight_decay * p
    b = g on the first step, else momentum * b + (1 - dampening) * g       (momentum != 0)
    g = g + momentum * b if nesterov else b
    p = p - lr * g
"""
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent; state: "momentum_buffer" when momentum != 0."""
    RULE = "sgd"
    BUFFERS = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, master_weights=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize, master_weights=master_weights))

    def _check(self, group):
        self._check_nonnegative(group, ("lr", "momentum", "weight_decay"))
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _buffer_names(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _config(self, group):
        flags = {name for name, on in (("MOMENTUM", group["momentum"] != 0),
                                       ("NESTEROV", group["nesterov"]),
                                       ("MAXIMIZE", group["maximize"])) if on}
        return flags, dict(lr=group["lr"], weight_decay=group["weight_decay"],
                           momentum=group["momentum"],
                           one_minus_dampening=1 - group["dampening"])
