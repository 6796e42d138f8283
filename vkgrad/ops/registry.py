"""The op table and the one function that runs an op on tensors.

An `Op` bundles, side by side:
  host(*arrays, **params)            numpy implementation
  vulkan(backend, *arrays, **params) Vulkan implementation (kernel launches)
  vjp(ctx, grad) -> grads            backward rule in Tensor ops, one gradient (or None) per
                                     operand; ctx.inputs, ctx.output, ctx.params (vkgrad.autograd)
  saves                              what vjp reads: "inputs" and/or "output" (the rest is freed);
                                     "stats": host and vulkan return (result, *stats), arrays
                                     of the forward's by-products that vjp reads as ctx.stats
  widens                             positions of the operands that are weights which the host
                                     implementation computes with in float32: the host backend
                                     passes a large bf16 one widened, from the widenings it
                                     keeps (NumpyBackend.widened), so the implementation's own
                                     astype(float32, copy=False) of it is a no-op
  writes                             positions of the operands the op writes in place (arrays,
                                     or lists of them): the host backend forgets the widenings
                                     of their memory (NumpyBackend.wrote)
How each op is tested (its cases and references) is the tests' own: tests/opdb.py.
"""
from dataclasses import dataclass
from typing import Callable, Optional

from .. import profiler
from ..autograd import record, wants_grad

OPS = {}


@dataclass
class Op:
    name: str
    host: Callable
    vulkan: Callable
    vjp: Optional[Callable] = None
    saves: tuple = ("inputs",)
    widens: tuple = ()
    writes: tuple = ()

    def __post_init__(self):
        if self.name in OPS:
            raise ValueError(f"op {self.name!r} is defined twice")
        OPS[self.name] = self


def apply(op, *operands, **params):
    """Run `op` on the backend its tensor operands live on (other operands, such as Python
    scalars, pass through) and wrap the result as a Tensor, recording it for autograd when an
    operand requires grad."""
    return _profiled(op, operands, params)[0]


def apply_with_stats(op, *operands, **params):
    """`apply` for an op with "stats" in its saves: (result, *stats), the forward's by-products
    as Tensors too (max_pool2d's return_indices reads the argmax its backward keeps)."""
    from ..tensor import Tensor
    out, stats = _profiled(op, operands, params)
    return (out, *(Tensor._wrap(a, out.device) for a in stats))


def _profiled(op, operands, params):
    if profiler.enabled():
        with profiler.frame(op.name):
            return _apply(op, operands, params)
    return _apply(op, operands, params)


def _apply(op, operands, params):
    from ..tensor import Tensor  # (tensor.py imports this module)
    tensors = [t for t in operands if isinstance(t, Tensor)]
    device = tensors[0].device
    for t in tensors[1:]:
        if t.device != device:
            raise ValueError(f"{op.name}: tensors are on different devices: "
                             + ", ".join(str(t.device) for t in tensors)
                             + "; move them with .to(device) first")
    args = [t._data if isinstance(t, Tensor) else t for t in operands]
    result, stats = device.backend.run(op, *args, **params), ()
    if "stats" in op.saves:
        result, *stats = result
    out = Tensor._wrap(result, device)
    if op.vjp is not None and wants_grad(tensors):
        record(op, operands, params, out, stats)
    return out, stats
