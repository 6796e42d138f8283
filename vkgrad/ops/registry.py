"""The op table and the one function that runs an op on tensors.

An `Op` bundles, side by side:
  host(*arrays, **params)            numpy implementation
  vulkan(backend, *arrays, **params) Vulkan implementation (kernel launches)
  vjp(ctx, grad)                     backward rule in Tensor ops (filled in by autograd)
  sample(rng) / reference(...)       how tests/test_ops.py exercises it against numpy/torch
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

OPS = {}


@dataclass
class Op:
    name: str
    host: Callable
    vulkan: Callable
    vjp: Optional[Callable] = None
    test: dict = field(default_factory=dict)   # op-family-specific test description

    def __post_init__(self):
        if self.name in OPS:
            raise ValueError(f"op {self.name!r} is defined twice")
        OPS[self.name] = self


def apply(op, *operands, **params):
    """Run `op` on the backend its tensor operands live on (other operands, such as Python
    scalars, pass through) and wrap the result as a Tensor."""
    from ..tensor import Tensor
    tensors = [t for t in operands if isinstance(t, Tensor)]
    device = tensors[0].device
    for t in tensors[1:]:
        if t.device != device:
            raise ValueError(f"{op.name}: tensors are on different devices: "
                             + ", ".join(str(t.device) for t in tensors)
                             + "; move them with .to(device) first")
    args = [t._data if isinstance(t, Tensor) else t for t in operands]
    return Tensor._wrap(device.backend.run(op, *args, **params), device)
