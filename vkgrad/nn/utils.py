"""Gradient utilities for training loops.

>>> loss.backward()
>>> total = vk.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
>>> opt.step()
"""
import math

from .. import dtypes
from ..autograd import no_grad
from ..tensor import Tensor, elementwise, tensor

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Scale the gradients of `parameters` in place so that their joint norm is at most
    `max_norm`, and return that norm (before clipping) as a 0-d tensor.

        total = (sum over every gradient element of |g|^p)^(1/p)    (p = norm_type; inf: max |g|)
        g = g * min(1, max_norm / (total + 1e-6))

    The norm is accumulated and returned in float32 (float64 for float64 host gradients), and
    the scale is computed and applied on the gradients' device: on Vulkan nothing is read back
    to the host, except with error_if_nonfinite=True, which must look at the norm to raise
    RuntimeError when it is nan or inf. Parameters without a gradient are ignored; `foreach` is
    accepted for PyTorch compatibility and has no effect.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    p = float(norm_type)
    if not (p > 0 or p == math.inf):
        raise ValueError(f"norm_type must be positive or inf, not {norm_type}")
    if not grads:
        return tensor(0.0)
    devices = {g.device for g in grads}
    if len(devices) > 1:
        raise ValueError("clip_grad_norm_: gradients are on different devices: "
                         + ", ".join(sorted(map(str, devices))))
    with no_grad():
        parts = []
        for g in grads:
            if g.size == 0:
                continue
            x = g if g.dtype in (dtypes.float32, dtypes.float64) else g.astype(dtypes.float32)
            if p == math.inf:
                parts.append(x.abs().max())
            else:
                parts.append((x * x if p == 2 else x.abs() ** p).sum())
        if not parts:
            return tensor(0.0, device=grads[0].device)
        total = parts[0]
        for part in parts[1:]:
            total = elementwise("maximum", total, part) if p == math.inf else total + part
        if p != math.inf:
            total = total.sqrt() if p == 2 else total ** (1 / p)
        if error_if_nonfinite and not math.isfinite(total.item()):
            raise RuntimeError(f"the total norm of order {norm_type} of the gradients is "
                               f"{total.item()}, so they cannot be clipped; pass "
                               "error_if_nonfinite=False to clip anyway")
        scale = elementwise("minimum", max_norm / (total + 1e-6), 1.0)
        for g in grads:
            g *= scale
    return total
