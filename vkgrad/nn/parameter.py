"""Parameter: a tensor that a Module registers as one of its learnable weights.

>>> w = vk.nn.Parameter(vk.randn(3, 4))
>>> w.requires_grad, isinstance(w, vk.Tensor)
(True, True)
"""
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad (unless told otherwise) and shares `data`'s memory.

    Results of ops on parameters are plain Tensors; `Module.to()` and optimizers update a
    parameter in place, so references held elsewhere (an optimizer's) stay valid.
    """
    __slots__ = ()

    def __new__(cls, data, requires_grad=True):
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter needs a Tensor, not {type(data).__name__}")
        p = cls._wrap(data._data, data.device)
        return p.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
