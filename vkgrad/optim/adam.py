"""Adam (optionally AMSGrad) and AdamW (decoupled weight decay), PyTorch's algorithms.

>>> opt = vk.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

Per parameter at step t (counted per parameter, from 1), with g the gradient (negated when
maximize):
    p = p * (1 - lr * weight_decay)            AdamW (decoupled)
    g = g + weight_decay * p                   Adam (L2 penalty)
    m = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    v_max = max(v_max, v), used for v          amsgrad
    p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
The step count t lives beside the parameter's state (a float32 scalar, as PyTorch's) and the
update kernel advances it and computes the bias corrections from it, so a step never reads
device memory back and a recorded step (vkgrad.compile) replays with the right t.
"""
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam; state: "step", "exp_avg", "exp_avg_sq" and, with amsgrad, "max_exp_avg_sq"."""
    RULE = "adam"
    BUFFERS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False,
                 master_weights=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      master_weights=master_weights))

    def _check(self, group):
        self._check_nonnegative(group, ("lr", "eps", "weight_decay"))
        if len(group["betas"]) != 2:
            raise ValueError(f"betas must be 2 numbers (beta1, beta2), got {group['betas']!r}")
        for i, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"invalid beta at index {i}: {beta} is not in [0, 1)")

    def _buffer_names(self, group):
        return self.BUFFERS if group["amsgrad"] else self.BUFFERS[:2]

    def _config(self, group):
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        decoupled = group["decoupled_weight_decay"]
        flags = {name for name, on in (("AMSGRAD", group["amsgrad"]),
                                       ("MAXIMIZE", group["maximize"])) if on}
        return flags, dict(lr=lr, weight_decay=0.0 if decoupled else wd,
                           decay_factor=1 - lr * wd if decoupled else 1.0,
                           one_minus_beta1=1 - beta1, beta1=beta1, beta2=beta2,
                           one_minus_beta2=1 - beta2, eps=group["eps"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the decay shrinks the weights
    directly instead of entering the gradient, so the moments do not see it."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, master_weights=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, master_weights=master_weights)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # an AdamW stays decoupled whatever the dict says
            group["decoupled_weight_decay"] = True
