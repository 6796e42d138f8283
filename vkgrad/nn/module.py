"""Module: the base of every layer, and the containers Sequential, ModuleList and ModuleDict.

>>> import vkgrad as vk
>>> from vkgrad import nn
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> [name for name, _ in model.named_parameters()]
['0.weight', '0.bias', '2.weight', '2.bias']
>>> model.to("vulkan")                      # parameters move in place: optimizers stay valid
>>> y = model(vk.randn(3, 4, device="vulkan"))
>>> model.load_state_dict(model.state_dict())

As in PyTorch, assigning a Parameter or a Module to an attribute registers it; buffers (running
statistics and other state that is saved but not learned) are registered with register_buffer.
"""
from collections import OrderedDict, namedtuple
import operator
from itertools import islice

import numpy as np

from .. import compiler, dtypes
from ..autograd import no_grad, zero_grads
from ..device import Device, device as as_device
from ..tensor import Tensor, from_numpy
from .parameter import Parameter

__all__ = ["Module", "Sequential", "ModuleList", "ModuleDict"]


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What load_state_dict(strict=False) did not match: keys the module has that the state
    dict lacks, and keys the state dict has that the module lacks."""


def _indent(text, spaces=2):
    lines = text.split("\n")
    return "\n".join(lines[:1] + [" " * spaces + line for line in lines[1:]])


class Module:
    """Base class of layers and models: subclasses set parameters and sub-modules as
    attributes in __init__ (after calling super().__init__()) and define forward().

    training  True in training mode (dropout drops, batch norm uses batch statistics)
    """

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dicts to exist
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def _fuse_with(self, following):
        """A function computing following(self(x)) as one op, or None (nn.Sequential asks: a
        Conv2d followed by a ReLU answers)."""
        return None

    def __call__(self, *args, **kwargs):
        # a recorded step (vkgrad.compile) replays this mode's computation: only in this mode
        compiler.guard(lambda: self.training, self.training)
        return self.forward(*args, **kwargs)

    # ---- registration ---------------------------------------------------------------------------
    def _check_ready(self):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 "assigning parameters, buffers or modules")

    @staticmethod
    def _check_name(name, kind):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a string, not {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{kind} name {name!r} must be non-empty and contain no '.'")

    def _forget(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)

    def register_parameter(self, name, param):
        """Register `param` (a Parameter, or None for an absent one such as bias=False)."""
        self._check_ready()
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register a {type(param).__name__} as parameter {name!r} "
                            "(wrap it in nn.Parameter)")
        self._forget(name)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Register `tensor` (or None) as state that is not learned: it moves with to() and,
        if `persistent`, is saved in state_dict() (running statistics of batch norm)."""
        self._check_ready()
        self._check_name(name, "buffer")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"buffer {name!r} must be a Tensor or None, not "
                            f"{type(tensor).__name__}")
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        """Register `module` (or None) as a child under `name`."""
        self._check_ready()
        self._check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        self._forget(name)
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self.add_module(name, value)
        elif "_parameters" in self.__dict__ and name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} "
                                "(a Parameter or None is expected)")
            self._parameters[name] = None
        elif "_buffers" in self.__dict__ and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign a {type(value).__name__} to buffer {name!r} "
                                "(a Tensor or None is expected)")
            self._buffers[name] = value
        elif "_modules" in self.__dict__ and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to module {name!r} "
                                "(a Module or None is expected)")
            self._modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):  # only called when normal lookup fails
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        if any(name in t for t in (self._parameters, self._buffers, self._modules)):
            self._forget(name)
        else:
            object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ---- traversal ------------------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(name, module) for this module ("") and every descendant, depth first; a module
        reachable twice is listed once unless remove_duplicate=False."""
        memo = set() if memo is None else memo
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name,
                                               remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and child not in seen:
                seen.add(child)
                yield name, child

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, table, prefix, recurse, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) \
            if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, table).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(qualified name, Parameter) pairs, e.g. ("0.weight", ...); a shared parameter once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """Call fn(module) on every descendant, children first, then on self; returns self
        (for custom initialisation: model.apply(init_weights))."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients --------------------------------------------------------------------
    def train(self, mode=True):
        """Set training mode on this module and every descendant; returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode) takes a bool, not {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode: the same as train(False)."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Switch gradient tracking of every parameter on or off (to freeze layers)."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the gradients of every parameter: drop them (set_to_none) or zero them in
        place."""
        zero_grads(self.parameters(), set_to_none)

    # ---- device and dtype -----------------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move parameters, buffers and their gradients to `device` and cast the floating ones
        to `dtype`, in place: each Parameter keeps its identity (an optimizer built on
        model.parameters() stays valid). `model.to(vk.bfloat16)` casts only. Returns self."""
        if dtype is None and _as_dtype(device) is not None:
            device, dtype = None, device
        target = as_device(device) if device is not None else None
        dtype = dtypes.dtype(dtype) if dtype is not None else None
        if dtype is not None and not dtype.is_floating:
            raise TypeError(f"Module.to: dtype must be floating, not {dtype.name}")

        def move(t):
            cast = dtype if dtype is not None and t.dtype.is_floating else None
            new = t.detach().to(target if target is not None else t.device, cast)
            t._data, t.device = new._data, new.device

        for t in {id(t): t for t in [*self.parameters(), *self.buffers()]}.values():
            move(t)
            if t.grad is not None:
                move(t.grad)
        return self

    def float(self):
        """Cast floating parameters and buffers to float32 (in place)."""
        return self.to(dtype=dtypes.float32)

    def bfloat16(self):
        """Cast floating parameters and buffers to bfloat16 (in place)."""
        return self.to(dtype=dtypes.bfloat16)

    # ---- saving and loading ---------------------------------------------------------------------
    def _state_items(self):
        """(qualified name, tensor) of everything state_dict holds, shared tensors under every
        name they are reachable by (as PyTorch)."""
        for prefix, module in self.named_modules(remove_duplicate=False):
            dot = f"{prefix}." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    yield dot + name, p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    yield dot + name, b

    def state_dict(self, keep_vars=False):
        """OrderedDict of qualified name -> Tensor for every parameter and persistent buffer,
        with PyTorch's names ("0.weight", "bn.running_mean"). The tensors share memory with the
        module (detached, unless keep_vars)."""
        return OrderedDict((k, v if keep_vars else v.detach()) for k, v in self._state_items())

    def load_state_dict(self, state_dict, strict=True):
        """Copy `state_dict`'s values (Tensors or numpy arrays) into the existing parameters and
        buffers, cast to each one's dtype and device; the tensor objects stay the same.

        Everything is checked before anything is copied: a failure leaves the module unchanged
        and raises a RuntimeError listing every missing and unexpected key (when strict) and
        every shape or dtype-kind mismatch (floats do not load into integer buffers, nor the
        other way). Returns (missing_keys, unexpected_keys).
        """
        own = OrderedDict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict:
            if missing:
                errors.append("Missing key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in missing) + ".")
            if unexpected:
                errors.append("Unexpected key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in unexpected) + ".")
        sources = {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            if not isinstance(value, Tensor):
                value = np.asarray(value)
            shape, dtype = tuple(value.shape), _kind_dtype(value)
            if shape != target.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape {shape} from "
                              f"checkpoint, the shape in current model is {target.shape}.")
            elif dtype is None or dtype.is_floating != target.dtype.is_floating:
                errors.append(f"dtype mismatch for {key}: copying a param of dtype "
                              f"{getattr(dtype, 'name', value.dtype)} from checkpoint into "
                              f"{target.dtype.name} in the current model.")
            else:
                sources[key] = value
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        with no_grad():
            for key, value in sources.items():
                target = own[key]
                if isinstance(value, Tensor):
                    value = value.to(target.device, target.dtype)
                else:
                    value = from_numpy(value, device=target.device, dtype=target.dtype)
                target[...] = value
        return IncompatibleKeys(missing, unexpected)

    # ---- printing -------------------------------------------------------------------------------
    def extra_repr(self):
        """The constructor arguments shown inside this module's repr (layers override it)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        children = [f"({name}): {_indent(repr(m))}" for name, m in self._modules.items()]
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = (extra.split("\n") if extra else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _as_dtype(spec):
    """The DType `spec` names, or None if it names none (a device: "vulkan", Device)."""
    if spec is None or isinstance(spec, Device):
        return None
    try:
        return dtypes.dtype(spec)
    except TypeError:
        return None


def _kind_dtype(value):
    """The vkgrad dtype of a Tensor or numpy array, or None for one vkgrad has no type for."""
    if isinstance(value, Tensor):
        return value.dtype
    try:
        return dtypes.dtype(value.dtype)
    except TypeError:
        return dtypes.float64 if value.dtype.kind == "f" else (
            dtypes.int32 if value.dtype.kind in "iu" else None)


def _position(idx, n, kind):
    """Non-negative position of list index `idx` in a container of `n` modules."""
    idx = operator.index(idx)
    if not -n <= idx < n:
        raise IndexError(f"index {idx} is out of range for {kind} of length {n}")
    return idx % n


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: positions, length, iteration, append."""

    def _index(self, idx):
        return _position(idx, len(self._modules), type(self).__name__)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add `module` at the end (named by its position); returns self."""
        self.add_module(str(len(self)), module)
        return self


class Sequential(_ModuleSequence):
    """Modules applied one after another: Sequential(a, b, c)(x) = c(b(a(x))). Children are
    named "0", "1", ... (or by the keys of an OrderedDict given instead).

    >>> nn.Sequential(nn.Linear(4, 8), nn.ReLU())[0]
    Linear(in_features=4, out_features=8, bias=True)
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return next(islice(self._modules.values(), self._index(idx), None))

    def __setitem__(self, idx, module):
        key = list(self._modules)[self._index(idx)]
        self.add_module(key, module)

    def __delitem__(self, idx):
        keys = list(self._modules)
        for key in (keys[idx] if isinstance(idx, slice) else [keys[self._index(idx)]]):
            del self._modules[key]

    def forward(self, x):
        """Each module on the output of the one before; a pair that fuses (a Conv2d, then a
        ReLU) runs as one op, with the same values."""
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            fused = modules[i]._fuse_with(modules[i + 1]) if i + 1 < len(modules) else None
            if fused is not None:
                x, i = fused(x), i + 2
            else:
                x, i = modules[i](x), i + 1
        return x


class ModuleList(_ModuleSequence):
    """A list of modules, registered as children "0", "1", ... (it has no forward()).

    >>> layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[str(self._index(idx))]

    def __setitem__(self, idx, module):
        self.add_module(str(self._index(idx)), module)

    def __delitem__(self, idx):
        items = list(self._modules.values())
        del items[idx if isinstance(idx, slice) else self._index(idx)]
        self._modules.clear()
        self.extend(items)  # renumber, as PyTorch does

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        items = list(self._modules.values())
        items.insert(index, module)
        self._modules.clear()
        self.extend(items)


class ModuleDict(Module):
    """A dict of modules registered under their keys (it has no forward()).

    >>> heads = nn.ModuleDict({"cls": nn.Linear(8, 10), "box": nn.Linear(8, 4)})
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def pop(self, key):
        return self._modules.pop(key)

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for key, m in items:
            self[key] = m
