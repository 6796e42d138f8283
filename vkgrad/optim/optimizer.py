"""Optimizer: the base of vkgrad's optimizers, in PyTorch's shape.

>>> import vkgrad as vk
>>> w = vk.nn.Parameter(vk.randn(3, 4))
>>> b = vk.nn.Parameter(vk.zeros(3))
>>> opt = vk.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.1}], lr=0.01, momentum=0.9)
>>> loss = (w.sum(axis=1) + b).square().sum()
>>> opt.zero_grad(); loss.backward(); opt.step()
>>> sorted(opt.state_dict()["state"][0])
['momentum_buffer']

Parameter groups carry their own hyper-parameters (defaults fill in the rest). An optimizer step
runs one fused update of each group's parameters that have a gradient (vkgrad/ops/optimizers.py:
on the host one kernel call per group, on Vulkan one dispatch per parameter), on the device
where each parameter lives; parameters whose grad is None are skipped. A step first checks every
gradient against its parameter (shape, dtype, device) and, if one does not fit, raises having
changed nothing. Hyper-parameters are checked as groups are added. State tensors are float32
(float64 for float64 host parameters) and shaped like their parameter. Adam's and RMSprop's
`step` is a float32 scalar Tensor on the parameter's device, as PyTorch's, which the update
advances there (on Vulkan, in the kernel: nothing is read back, and a recorded step replays
with the right count); state_dict() exports it as a float32 tensor on the host.

bf16 parameters are updated in f32 and rounded once per step. `master_weights=True` keeps an f32
copy of each bf16 parameter in the state ("master_weight"), updates that copy and writes its
rounded value into the parameter, so that updates smaller than a bf16 ulp are not lost.
"""
from collections import defaultdict

import numpy as np

from .. import compiler, dtypes
from ..autograd import enable_grad, no_grad, zero_grads
from ..creation import empty
from ..ops import optimizers
from ..tensor import Tensor, tensor, zeros

__all__ = ["Optimizer"]

MASTER = "master_weight"  # the state key of an f32 master copy of a bf16 parameter


class Optimizer:
    """Base class. Subclasses set RULE (the fused update rule) and BUFFERS (the state names of
    the rule's buffer slots, at most three) and implement `_buffer_names`, `_config`, `_check`.

    params: an iterable of Tensors, or of dicts with "params" and per-group hyper-parameters.
    """
    RULE = None
    BUFFERS = ()

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)   # parameter -> its state (Tensor hashes by identity)
        self._arrivals = {}              # parameter -> the kernel's step-count arrival word
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of Tensors or of dicts, not a Tensor "
                            "(wrap a single tensor in a list)")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])

    def add_param_group(self, param_group):
        """Add a group of parameters (a dict with "params"; missing hyper-parameters take the
        optimizer's defaults), e.g. layers unfrozen during fine-tuning."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, not {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)) or params is None:
            raise TypeError("a group's params must be an ordered iterable of Tensors (a set's "
                            "order changes from run to run)")
        group["params"] = params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizers can only optimize Tensors, not {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor (one computed by recorded "
                                 "ops); optimize the leaves it was computed from")
            if not p.dtype.is_floating:
                raise TypeError(f"only floating tensors can be optimized, not {p.dtype.name}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group contains the same tensor more than once")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self._check(group)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: set them to None (default), or fill them with zeros in place."""
        zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient; `closure` (optional) re-evaluates the
        model with grad enabled and returns the loss, which step returns."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._check_gradients()
        with no_grad():
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    self._update(params, group)
        return loss

    def _check_gradients(self):
        """Raise before anything moves if a gradient no longer fits its parameter (shape, dtype
        or device), so that a refused step updates no parameter and changes no state."""
        for g, group in enumerate(self.param_groups):
            for i, p in enumerate(group["params"]):
                mismatch = p.grad is not None and p._grad_mismatch(p.grad)
                if mismatch:
                    raise RuntimeError(f"{type(self).__name__}.step: parameter {i} of group {g} "
                                       f"has a {mismatch}; nothing was updated")

    # ---- one group ------------------------------------------------------------------------------
    def _update(self, params, group):
        """One step of `params`, the parameters of `group` that have a gradient."""
        config = self._config(group)
        prepared = [self._prepare(p, group, config) for p in params]
        flags, buffers, masters, steps, arrivals = zip(*prepared)
        optimizers.update(self.RULE, params, [p.grad for p in params], buffers, masters, steps,
                          arrivals, flags, **config[1])
        # a recorded step (vkgrad.compile) repeats these constants on these state tensors:
        # replay only while the next step would bake the same ones (not past a scheduler's
        # change, a first step or a load_state_dict); the guard keeps the state tensors alive,
        # so that their ids stay theirs
        kept = [(*self.state[p].values(), a) for p, a in zip(params, arrivals)]
        compiler.guard(lambda: self._recorded(params, group, kept),
                       (config[1], tuple((f, tuple(map(id, k))) for f, k in zip(flags, kept))))

    def _prepare(self, p, group, config):
        """Make `p`'s state ready for its step: (flags, the rule's three buffer slots, master,
        step, arrivals), the arguments of its update."""
        state = self.state[p]
        for key, value in state.items():  # the parameter moved (Module.to): its state follows
            if isinstance(value, Tensor) and value.device != p.device:
                state[key] = value.to(p.device)
        flags = self._flags(p, group, state, config)
        step = arrivals = None
        if self.RULE in optimizers.COUNTED:
            if "step" not in state:
                state["step"] = zeros((), dtypes.float32, p.device)
            step = state["step"]
            arrivals = self._arrivals.get(p)
            if p.device.kind == "vulkan" and (arrivals is None or arrivals.device != p.device):
                arrivals = self._arrivals[p] = zeros((), dtypes.uint32, p.device)
        names = self._buffer_names(group)
        for name in names:
            if name not in state:  # a buffer appears when its option is switched on mid-run
                state[name] = (empty if "FRESH" in flags else zeros)(
                    p.shape, optimizers.state_dtype(p.dtype), p.device)
        if "FRESH_MASTER" in flags:
            state[MASTER] = empty(p.shape, dtypes.float32, p.device)
        master = state[MASTER] if "MASTER" in flags else None
        buffers = [state[name] if name in names else None for name in self.BUFFERS]
        buffers += [None] * (3 - len(buffers))
        return flags, buffers, master, step, arrivals

    def _recorded(self, params, group, kept):
        """What a recorded step of `params` depends on now: (hyper-parameters, (flags, ids of
        its state) of each parameter)."""
        config = self._config(group)
        flags = []
        for p in params:
            state = self.state.get(p, {})
            flags.append((self._flags(p, group, state, config),
                          tuple(map(id, (*state.values(), self._arrivals.get(p))))))
        return config[1], tuple(flags)

    def _flags(self, p, group, state, config):
        """The flags of `p`'s next step: the group's (`config`, from _config) and its own."""
        flags = set(config[0])
        names = self._buffer_names(group)
        if names and not any(name in state for name in names):
            flags.add("FRESH")
        if group.get("master_weights") and p.dtype is dtypes.bfloat16:
            flags.add("MASTER")
            if MASTER not in state:
                flags.add("FRESH_MASTER")
        return flags

    def _buffer_names(self, group):
        """The BUFFERS that `group`'s configuration uses."""
        raise NotImplementedError

    def _config(self, group):
        """(flags: set of kernels.OPTIM_FLAGS names, hyper: dict of HYPER values) for the step
        of `group`'s parameters (each adds its own flags: _flags)."""
        raise NotImplementedError

    def _check(self, group):
        """Raise ValueError for invalid hyper-parameters in `group`."""

    @staticmethod
    def _check_nonnegative(group, keys):
        """Raise ValueError unless each of `group[key]` is a number >= 0 (NaN is not)."""
        for key in keys:
            if not group[key] >= 0:
                raise ValueError(f"invalid {key} {group[key]!r}: it must be a number >= 0")

    # ---- state_dict ----------------------------------------------------------------------------
    def state_dict(self):
        """{"state": {index: {name: Tensor}}, "param_groups": [{hyper-parameters, "params":
        [indices]}]}: PyTorch's layout, indices numbering parameters across groups in order.
        State tensors are the live ones (not copies), as in PyTorch; `step` is a float32
        tensor on the host (a copy: reading a device's count waits for the device)."""
        index, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if self.state.get(p):
                    state[index[id(p)]] = {
                        k: tensor(np.float32(v.item()), device="host") if k == "step" else v
                        for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Take the hyper-parameters and state (copied to each parameter's device and state
        dtype) from a state_dict() of this optimizer or of the matching torch.optim one (tensors
        converted to vkgrad). Checks group and parameter counts and state shapes first, and
        leaves the optimizer unchanged if they do not match."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"the optimizer has {len(self.param_groups)}")
        by_index = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"parameter group {i} of the loaded state dict has "
                                 f"{len(saved['params'])} parameters, the optimizer's has "
                                 f"{len(group['params'])}")
            by_index.update(zip(saved["params"], group["params"]))
        state = defaultdict(dict)
        for key, values in state_dict["state"].items():
            if key not in by_index:
                raise ValueError(f"loaded state dict has state for parameter {key!r}, which no "
                                 "parameter group lists")
            p = by_index[key]
            state[p] = {name: _load_value(name, value, p, key) for name, value in values.items()
                        if value is not None}
        groups = [{**group, **{k: v for k, v in saved.items() if k != "params"},
                   "params": group["params"]} for group, saved in zip(self.param_groups,
                                                                      saved_groups)]
        for group in groups:
            self._check(group)
        for group, new in zip(self.param_groups, groups):
            group.clear()
            group.update(new)
        self.state = state


def _load_value(name, value, p, index):
    if name == "step":  # a number or a scalar tensor, as torch versions save it
        step = float(value)
        if not 0 <= step < float("inf"):
            raise ValueError(f"state 'step' of parameter {index} is {step}: a step count is a "
                             "finite number >= 0")
        return tensor(np.float32(step), device=p.device)
    t = value if isinstance(value, Tensor) else tensor(np.asarray(value))
    if t.shape != p.shape:
        raise ValueError(f"state {name!r} of parameter {index} has shape {t.shape}, the "
                         f"parameter has shape {p.shape}")
    if not t.dtype.is_floating:
        raise TypeError(f"state {name!r} of parameter {index} is {t.dtype.name}, not floating")
    # always a copy: the loaded dict stays apart
    return t.astype(optimizers.state_dtype(p.dtype)).to(p.device)

