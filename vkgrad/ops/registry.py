"""The op table and the one function that runs an op on tensors.

An `Op` bundles, side by side:
  host(*arrays, **params)            numpy implementation
  vulkan(backend, *arrays, **params) Vulkan implementation (kernel launches)
  vjp(ctx, grad) -> grads            backward rule in Tensor ops, one gradient (or None) per
                                     operand; ctx.inputs, ctx.output, ctx.params (vkgrad.autograd)
  saves                              what vjp reads: "inputs" and/or "output" (the rest is freed);
                                     "stats": host and vulkan return (result, *stats), arrays
                                     of the forward's by-products that vjp reads as ctx.stats
  tests                              OpTests: how tests/test_ops.py and test_autograd_ops.py check
                                     it, for the ops whose entries have not moved to the test
                                     database yet (tests/opdb.py, which holds the others')
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import profiler
from ..autograd import record, wants_grad

OPS = {}


@dataclass
class OpTest:
    """How tests/test_ops.py checks an op, on every device and dtype, against numpy or torch.

    call(*tensors, **params)      the public API under test (e.g. lambda a, b: a @ b)
    reference(*arrays, **params)  the expected result from float64 copies of the (dtype-rounded)
                                  inputs; integer/bool inputs are passed as they are
    cases(rng)                    [(inputs: [np.ndarray | scalar], params: dict), ...]: random
                                  data, never all zeros, awkward shapes (0-d, odd, empty, broadcast)
    dtypes                        dtypes the floating inputs are cast to
    reduction_length(inputs, params) -> int: terms summed per output (scales the tolerance)
    grad                          whether autograd's tests differentiate it (floating outputs)
    """
    call: Callable
    reference: Callable
    cases: Callable
    dtypes: tuple = ("float32", "bfloat16")
    reduction_length: Optional[Callable] = None
    grad: bool = True


@dataclass
class Op:
    name: str
    host: Callable
    vulkan: Callable
    vjp: Optional[Callable] = None
    saves: tuple = ("inputs",)
    tests: list = field(default_factory=list)  # OpTest entries not yet in tests/opdb.py

    def __post_init__(self):
        if self.name in OPS:
            raise ValueError(f"op {self.name!r} is defined twice")
        OPS[self.name] = self


def apply(op, *operands, **params):
    """Run `op` on the backend its tensor operands live on (other operands, such as Python
    scalars, pass through) and wrap the result as a Tensor, recording it for autograd when an
    operand requires grad."""
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
    return out
