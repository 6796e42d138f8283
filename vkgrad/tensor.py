"""Tensor: an ndarray-like array on the host (numpy) or a Vulkan device.

>>> import vkgrad as vk
>>> x = vk.tensor([[1.0, 2.0], [3.0, 4.0]], device="vulkan")
>>> (x * 2 + 1).sum(axis=0).numpy()
array([ 8., 14.], dtype=float32)
>>> x.astype(vk.bfloat16).dtype
vkgrad.bfloat16
"""
import operator
import weakref
from math import prod

import numpy as np

from . import dtypes, layout

from .autograd import check_inplace, is_grad_enabled
from .device import HOST, device as as_device
from .ops import OPS, apply
from .ops.elementwise import TABLE as ELEMENTWISE, result_dtypes
from .ops.reduce import REDUCTIONS


class Tensor:
    """An n-dimensional array of one dtype on one device. Build one with `vkgrad.tensor`."""

    # _grad_node: the autograd node that made this tensor (an AccumulateGrad for a leaf that
    # requires grad, once used); _out_index: which of that node's outputs it is.
    __slots__ = ("_data", "device", "_grad", "_requires_grad", "_grad_node", "_out_index",
                 "__weakref__")
    __array_priority__ = 1000  # numpy defers `ndarray op Tensor` to Tensor's reflected methods

    @classmethod
    def _wrap(cls, data, device):
        t = object.__new__(cls)
        if device.kind == "host" and not isinstance(data, np.ndarray):
            data = np.asarray(data)
        t._data, t.device = data, device
        t._grad, t._requires_grad, t._grad_node, t._out_index = None, False, None, 0
        return t

    # ---- basic properties ----------------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self._data.shape)

    @property
    def dtype(self):
        d = self._data.dtype
        return d if isinstance(d, dtypes.DType) else dtypes.dtype(d)

    @property
    def ndim(self):
        return len(self._data.shape)

    @property
    def size(self):
        return prod(self._data.shape)

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    # ---- conversion -----------------------------------------------------------------------------
    def numpy(self):
        """The values as a numpy array (bf16 as ml_dtypes.bfloat16). Host tensors share memory."""
        return self.device.backend.to_numpy(self._data)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        if copy is False and (self.device.kind != "host"
                              or (dtype is not None and np.dtype(dtype) != a.dtype)):
            raise ValueError("a copy is needed to make a numpy array from this tensor")
        if dtype is not None:
            a = a.astype(dtype, copy=bool(copy))
        elif copy and self.device.kind == "host":
            a = a.copy()
        return a

    def item(self):
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, not shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        a = self.numpy()
        return (a.astype(np.float32) if self.dtype is dtypes.bfloat16 else a).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def __index__(self):
        if self.dtype.is_floating or self.dtype.kind == "b":
            raise TypeError(f"only integer tensors can be used as an index, not {self.dtype.name}")
        return int(self.item())

    def astype(self, dtype):
        """A copy converted to `dtype` (floats to ints truncate; to bf16 rounds to nearest even)."""
        dtype = dtypes.dtype(dtype)
        compute = dtype if dtype.is_floating else self.dtype
        return elementwise("identity", self, out=(compute, dtype))

    def to(self, device=None, dtype=None):
        """This tensor on `device` (and/or cast to `dtype`); itself when nothing changes."""
        t = self
        if dtype is not None and dtypes.dtype(dtype) is not t.dtype:
            t = t.astype(dtype)
        target = as_device(device) if device is not None else t.device
        if target == t.device:
            return t
        host = t.numpy() if t.device.kind != "host" else t._data
        return from_numpy(host, device=target, dtype=t.dtype)

    def __repr__(self):
        values = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        grad = f", grad_fn={self.grad_fn!r}" if self.grad_fn is not None else (
            ", requires_grad=True" if self._requires_grad else "")
        return f"tensor({values}, dtype={self.dtype.name}, device={self.device}{grad})"

    # ---- autograd (vkgrad/autograd.py) -----------------------------------------------------------
    @property
    def requires_grad(self):
        """Whether gradients flow to this tensor (set on leaves; results of ops inherit it)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        self.requires_grad_(flag)

    def requires_grad_(self, flag=True):
        """Make this leaf require grad (in place); returns self."""
        if self._grad_node is not None and not self.is_leaf:
            raise RuntimeError("requires_grad can only be changed on leaf tensors; use "
                               "detach() to get a leaf from this result")
        if flag and not self.dtype.is_floating:
            raise TypeError(f"only floating tensors can require grad, not {self.dtype.name}")
        self._requires_grad = bool(flag)
        if not flag:
            self._grad_node = None
        return self

    @property
    def grad(self):
        """The gradient backward accumulated here (None until then). Assigning checks, as
        PyTorch: None, or a Tensor of this tensor's shape, dtype and device."""
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"a grad must be a Tensor or None, not {type(value).__name__}")
            if value is self:
                raise RuntimeError("a tensor can't be its own grad")
            mismatch = self._grad_mismatch(value)
            if mismatch:
                raise RuntimeError(f"can't assign a {mismatch}")
        self._grad = value

    def _grad_mismatch(self, grad):
        """How the Tensor `grad` fails to fit as this tensor's gradient ("grad of shape (4,)
        for a tensor of shape (3,)"), or "" if its shape, dtype and device are this one's."""
        if grad.shape != self.shape:
            return f"grad of shape {grad.shape} for a tensor of shape {self.shape}"
        if grad.dtype is not self.dtype:
            return f"grad of dtype {grad.dtype.name} for a tensor of dtype {self.dtype.name}"
        if grad.device != self.device:
            return f"grad on {grad.device} for a tensor on {self.device}"
        return ""

    @property
    def is_leaf(self):
        """True unless this tensor is the result of a recorded op."""
        return self._grad_node is None or self._grad_node.is_leaf

    @property
    def grad_fn(self):
        """The node that computed this tensor (None for leaves)."""
        return None if self.is_leaf else self._grad_node

    def retain_grad(self):
        """Keep the gradient of this non-leaf in `.grad` during backward."""
        if self.is_leaf:
            return
        node = self._grad_node
        node.retained = node.retained or {}
        node.retained[self._out_index] = weakref.ref(self)

    def detach(self):
        """The same memory, cut from the graph (no grad)."""
        return Tensor._wrap(self._data, self.device)

    def __deepcopy__(self, memo):
        """A copy with its own memory on the same device (copy.deepcopy(model) copies weights);
        a Parameter stays a Parameter, requires_grad and .grad are copied too."""
        if not self.is_leaf:
            raise RuntimeError("only leaf tensors can be deep-copied; detach() the result first")
        from .autograd import no_grad
        with no_grad():
            data = self.astype(self.dtype)
        result = data if type(self) is Tensor else type(self)(data, False)
        memo[id(self)] = result.requires_grad_(self._requires_grad)
        if self.grad is not None:
            result.grad = self.grad.__deepcopy__(memo)
        return result

    def backward(self, grad=None, retain_graph=None, create_graph=False):
        """Add d(self)/d(leaf), weighted by `grad` (implied 1 for a one-element tensor), into
        every leaf's `.grad`. The graph is freed afterwards unless retain_graph=True;
        create_graph=True records the backward pass too, for higher-order gradients."""
        from . import autograd
        autograd.backward(self, grad, retain_graph, create_graph)

    # ---- arithmetic: the Python operators map onto elementwise ops ------------------------------
    def __add__(self, other): return elementwise("add", self, other)
    def __radd__(self, other): return elementwise("add", other, self)
    def __sub__(self, other): return elementwise("sub", self, other)
    def __rsub__(self, other): return elementwise("sub", other, self)
    def __mul__(self, other): return elementwise("mul", self, other)
    def __rmul__(self, other): return elementwise("mul", other, self)
    def __truediv__(self, other): return elementwise("div", self, other)
    def __rtruediv__(self, other): return elementwise("div", other, self)
    def __floordiv__(self, other): return elementwise("floordiv", self, other)
    def __rfloordiv__(self, other): return elementwise("floordiv", other, self)
    def __mod__(self, other): return elementwise("mod", self, other)
    def __rmod__(self, other): return elementwise("mod", other, self)
    def __pow__(self, other): return elementwise("pow", self, other)
    def __rpow__(self, other): return elementwise("pow", other, self)
    def __neg__(self): return elementwise("neg", self)
    def __pos__(self): return self
    def __abs__(self): return elementwise("abs", self)
    def __invert__(self): return elementwise("bitnot", self)  # not, for bools
    def __lshift__(self, other): return elementwise("lshift", self, other)
    def __rlshift__(self, other): return elementwise("lshift", other, self)
    def __rshift__(self, other): return elementwise("rshift", self, other)
    def __rrshift__(self, other): return elementwise("rshift", other, self)
    def __and__(self, other): return elementwise("bitand", self, other)
    def __rand__(self, other): return elementwise("bitand", other, self)
    def __or__(self, other): return elementwise("bitor", self, other)
    def __ror__(self, other): return elementwise("bitor", other, self)
    def __xor__(self, other): return elementwise("bitxor", self, other)
    def __rxor__(self, other): return elementwise("bitxor", other, self)
    def __eq__(self, other): return elementwise("eq", self, other)
    def __ne__(self, other): return elementwise("ne", self, other)
    def __lt__(self, other): return elementwise("lt", self, other)
    def __le__(self, other): return elementwise("le", self, other)
    def __gt__(self, other): return elementwise("gt", self, other)
    def __ge__(self, other): return elementwise("ge", self, other)
    __hash__ = object.__hash__

    # ---- reductions: sum, mean, prod, max, min, argmax, argmin, any, all (attached below) -----
    def _reduce(self, name, axis=None, keepdims=False):
        axes = _axes(axis, self.ndim)
        return apply(OPS[name], self, axes=axes, keepdims=keepdims)

    def _variance(self, axis, ddof, keepdims):
        """mean((x - mean(x))**2) * n / (n - ddof) in float32 at least, not yet rounded."""
        x = self if self.dtype in (dtypes.float32, dtypes.float64) else self.astype(dtypes.float32)
        n = prod(self.shape[a] for a in _axes(axis, self.ndim))
        d = x - x.mean(axis=axis, keepdims=True)
        return (d * d).sum(axis=axis, keepdims=keepdims) / max(n - ddof, 0)

    def var(self, axis=None, ddof=0, keepdims=False):
        """Variance: mean((x - mean(x))**2) * n / (n - ddof), computed in float32 at least (a
        bf16 result is rounded once)."""
        return _narrow(self._variance(axis, ddof, keepdims), self.dtype)

    def std(self, axis=None, ddof=0, keepdims=False):
        """Standard deviation: sqrt(var(x, ddof)), computed as var is; its gradient is 0 where
        the variance is 0 (a constant slice), as torch's."""
        return _narrow(_sqrt_flat_at_zero(self._variance(axis, ddof, keepdims)), self.dtype)

    def logsumexp(self, axis=None, keepdims=False):
        """log(sum(exp(x))) over `axis` as m + log(sum(exp(x - m))), m the maximum, so that exp
        cannot overflow. m is a constant to autograd (the result does not depend on it), so the
        gradient is softmax(x). bf16: computed in float32, rounded once."""
        x = _widen(self)
        m = x.max(axis=axis, keepdims=True).detach()
        m = where(m.isfinite(), m, 0.0)
        r = (x - m).exp().sum(axis=axis, keepdims=True).log() + m
        return _narrow(r if keepdims else r.squeeze(axis), self.dtype)

    # ---- in-place arithmetic (tensors that do not require grad) --------------------------------
    def _assign(self, value):
        """Write `value` (a Tensor broadcastable to self) into this tensor's memory."""
        check_inplace(self, value)
        if value.dtype.is_floating and not self.dtype.is_floating:
            raise TypeError(f"cannot write {value.dtype.name} results into a {self.dtype.name} "
                            "tensor in place")
        if self.device.kind == "host":
            self.device.backend.call(np.copyto, self._data, value._data, casting="unsafe")
            self.device.backend.wrote(self._data)
        elif self.dtype.per_word == 1 or (self._data.is_contiguous()
                                           and self._data.start % self.dtype.per_word == 0):
            from .ops.elementwise import assign
            assign(self._data, value._data)
        else:
            self[...] = value
        return self

    def _inplace(self, name, other):
        """`self op= other`: written into self's memory, except while autograd records it
        (self or other requires grad): then the result is a new tensor that the name is rebound
        to, so the graph stays correct (other references to the old tensor do not change)."""
        result = elementwise(name, self, other)
        if is_grad_enabled() and (self._requires_grad or isinstance(other, Tensor)
                                  and other._requires_grad):
            if self._requires_grad and self.is_leaf:
                raise RuntimeError("a leaf tensor that requires grad cannot be updated in place "
                                   "while grad is recorded; update it under vkgrad.no_grad()")
            return result
        return self._assign(result)

    def __iadd__(self, other): return self._inplace("add", other)
    def __isub__(self, other): return self._inplace("sub", other)
    def __imul__(self, other): return self._inplace("mul", other)
    def __itruediv__(self, other): return self._inplace("div", other)

    # ---- shape and views (no copies: strided views on both backends) ----------------------------
    def reshape(self, *shape):
        """A view with `shape` (one entry may be -1); copies only when strides cannot express it."""
        shape = shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        shape = layout.resolve_reshape(self.size, shape)
        return self if shape == self.shape else apply(OPS["reshape"], self, shape=shape)

    def transpose(self, *axes):
        """Axes reversed, or permuted as given (numpy's transpose)."""
        axes = axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else axes
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        axes = tuple(layout.normalize_axis(a, self.ndim) for a in axes)
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(f"axes {axes} are not a permutation of {self.ndim} dimensions")
        return apply(OPS["permute"], self, axes=axes)

    permute = transpose

    @property
    def T(self):
        return self.transpose()

    def swapaxes(self, axis1, axis2):
        axes = list(range(self.ndim))
        a1, a2 = layout.normalize_axis(axis1, self.ndim), layout.normalize_axis(axis2, self.ndim)
        axes[a1], axes[a2] = axes[a2], axes[a1]
        return self.transpose(axes)

    def moveaxis(self, source, destination):
        src = layout.normalize_axis(source, self.ndim)
        dst = layout.normalize_axis(destination, self.ndim)
        axes = [a for a in range(self.ndim) if a != src]
        axes.insert(dst, src)
        return self.transpose(axes)

    def expand_dims(self, axis):
        axes = layout.normalize_axes(axis, self.ndim + (len(axis) if isinstance(axis, (tuple, list)) else 1))
        shape = list(self.shape)
        for a in axes:
            shape.insert(a, 1)
        return self.reshape(shape)

    def squeeze(self, axis=None, *, strict=False):
        """A view without the size-1 dims among `axis` (None: all of them). As torch's
        Tensor.squeeze(dim), a named dim whose size is not 1 is left as it is; with `strict`
        (numpy's np.squeeze, which vk.squeeze calls) it raises ValueError instead. A 0-d tensor
        accepts axis 0 and -1, as in torch and numpy."""
        if axis is None:
            return self.reshape([n for n in self.shape if n != 1])
        axes = _axes(axis, self.ndim)
        for a in axes:
            if strict and self.shape[a] != 1:
                raise ValueError(f"cannot squeeze axis {a} of size {self.shape[a]} "
                                 f"(shape {self.shape})")
        return self.reshape([n for i, n in enumerate(self.shape) if i not in axes
                             or n != 1])

    def broadcast_to(self, shape):
        shape = layout.normalize_shape(shape)
        layout.broadcast_strides(self.shape, (0,) * self.ndim, shape)  # the error names both shapes
        return self if shape == self.shape else apply(OPS["broadcast_to"], self, shape=shape)

    def flatten(self, start_dim=0, end_dim=-1):
        """Dims start_dim..end_dim (inclusive) merged into one, as torch's flatten: a view where
        strides allow, else a contiguous copy. A 0-d tensor becomes shape (1,)."""
        if self.ndim == 0:
            for d in (start_dim, end_dim):
                _axes(d, 0)
            return self.reshape(1)
        lo, hi = (layout.normalize_axis(d, self.ndim) for d in (start_dim, end_dim))
        if lo > hi:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for "
                             f"a tensor of shape {self.shape}")
        return self.reshape((*self.shape[:lo], prod(self.shape[lo:hi + 1]), *self.shape[hi + 1:]))

    def unflatten(self, dim, sizes):
        """Dim `dim` split into `sizes` (one entry may be -1), as torch's unflatten: a view."""
        dim = layout.normalize_axis(dim, self.ndim)
        sizes = layout.resolve_reshape(self.shape[dim], tuple(sizes))
        return self.reshape((*self.shape[:dim], *sizes, *self.shape[dim + 1:]))

    def ravel(self):
        return self.reshape(-1)

    def contiguous(self):
        """This tensor with row-major contiguous memory (itself if it already is)."""
        return apply(OPS["contiguous"], self)

    def __getitem__(self, key):
        if _is_basic_index(key):
            return apply(OPS["getitem"], self, key=key)
        return _ADVANCED["getitem"](self, key)

    def __setitem__(self, key, value):
        _ADVANCED["setitem"](self, key, value)


# Indexing with tensors, lists or masks lives with the gather/scatter ops (vkgrad/ops/indexing.py),
# which register themselves here.
_ADVANCED = {}


def _is_basic_index(key):
    keys = key if isinstance(key, tuple) else (key,)
    return all(k is None or k is Ellipsis or isinstance(k, slice)
               or (isinstance(k, (int, np.integer)) and not isinstance(k, bool)) for k in keys)


def _axes(axis, ndim):
    """layout.normalize_axes, except that a 0-d tensor also accepts axis 0 and -1 (torch's and
    numpy's rule: its one element stands on a dim of size 1), which reduce over nothing."""
    if ndim == 0 and axis is not None:
        items = axis if isinstance(axis, (tuple, list)) else (axis,)
        if len(items) <= 1 and all(operator.index(a) in (0, -1) for a in items):
            return ()
    return layout.normalize_axes(axis, ndim)


def tensor_method(*names):
    """Decorator: also make a function available as Tensor methods `names` (op modules use it)."""
    def register(fn):
        for name in names:
            setattr(Tensor, name, fn)
        return fn
    return register


def _attach_reduction_methods():
    # t.sum(axis=None, keepdims=False) and its siblings, one per reduction op.
    for name in REDUCTIONS:
        def method(self, axis=None, keepdims=False, _n=name):
            return self._reduce(_n, axis, keepdims)
        method.__name__ = name
        method.__doc__ = (f"{name} over `axis` (None: all axes; an int or a tuple; negative "
                          "counts from the end), keeping reduced axes as size 1 if `keepdims`.")
        setattr(Tensor, name, method)


_attach_reduction_methods()


def _attach_unary_methods():
    # Every one-operand elementwise op is also a method: t.exp(), t.sigmoid(), ...
    for name, (_fn, _result, arity, _domain) in ELEMENTWISE.items():
        if arity == 1 and name != "identity":
            setattr(Tensor, name, lambda self, _n=name: elementwise(_n, self))


_attach_unary_methods()
# numpy's names of the inverse trigonometric and hyperbolic functions, beside torch's
_ARC_NAMES = {f"arc{name[1:]}": name for name in ("asin", "acos", "atan", "asinh", "acosh",
                                                   "atanh")}
for _alias, _name in _ARC_NAMES.items():
    setattr(Tensor, _alias, getattr(Tensor, _name))
for _name in ("fmod", "copysign", "logaddexp", "atan2", "lerp"):
    setattr(Tensor, _name, lambda self, *others, _n=_name: elementwise(_n, self, *others))
Tensor.remainder = lambda self, other: elementwise("mod", self, other)
Tensor.arctan2 = Tensor.atan2
Tensor.bitwise_not = Tensor.__invert__


def elementwise(name, *operands, out=None):
    """Run elementwise op `name` on tensors and Python scalars with numpy promotion."""
    tensors = [o for o in operands if isinstance(o, Tensor)]
    if not tensors:
        raise TypeError(f"{name} needs at least one tensor operand")
    for o in operands:
        if not isinstance(o, (Tensor, int, float, bool, np.number, np.bool_)):
            raise TypeError(f"{name}: unsupported operand of type {type(o).__name__}; "
                            "wrap arrays with vkgrad.tensor(...)")
    if len(tensors) > 1:
        layout.broadcast_shapes(*[t.shape for t in tensors])  # the same error on every backend
    compute, out_dtype = out if out is not None else result_dtypes(name, operands)
    _check_device_dtype(tensors[0].device, out_dtype)
    return apply(OPS[name], *operands, compute=compute, out_dtype=out_dtype)


# ---- the bf16 rule of composite ops (built from several ops): compute in float32, round once ---
def _widen(x):
    """x in float32 if it is a bf16 Tensor, else x itself (also a scalar or None)."""
    return x.astype(dtypes.float32) if isinstance(x, Tensor) and x.dtype is dtypes.bfloat16 else x


def _narrow(y, dtype):
    """y rounded once to `dtype` if that is bf16 (what _widen widened), else y itself."""
    return y.astype(dtype) if dtype is dtypes.bfloat16 and y.dtype is not dtype else y


def _add_narrow(y, bias, dtype):
    """_narrow(y + bias, dtype) as one op: the sum computed in the wider dtype of y and bias
    (a float32 product plus a bf16 bias: in float32) and rounded once."""
    compute = dtypes.result_type(y.dtype, bias.dtype)
    return elementwise("add", y, bias,
                       out=(compute, dtype if dtype is dtypes.bfloat16 else compute))


def _check_device_dtype(device, dtype):
    if device.kind != "host" and not dtype.on_device:
        raise TypeError(f"{dtype.name} is not supported on {device} (it is host-only); "
                        "use float32 or bfloat16")


# ---- creation ----------------------------------------------------------------------------------
def from_numpy(array, device=None, dtype=None, requires_grad=False):
    """A tensor holding `array`'s values; on the host it shares memory when no cast is needed.
    An explicit `dtype` casts as numpy's astype; int64 data narrowed to int32 must fit it."""
    device = as_device(device)
    if dtype is None:
        dtype = dtypes.dtype(array.dtype)
        dtypes.check_int_range(array, dtype)
    dtype = dtypes.dtype(dtype)
    _check_device_dtype(device, dtype)
    return Tensor._wrap(device.backend.from_numpy(array, dtype), device).requires_grad_(
        requires_grad)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A tensor from nested lists, scalars, numpy arrays or another Tensor (values are copied
    to the device; host tensors share numpy's memory where numpy would).

    Python floats give float32 and ints give int32 unless `dtype` says otherwise; an int out of
    the dtype's range raises OverflowError, as numpy.
    """
    if isinstance(data, Tensor):
        t = data.to(device if device is not None else data.device, dtype)
        return (t.detach() if t is data else t).requires_grad_(requires_grad)
    if isinstance(data, np.ndarray):
        array = data
    else:
        array = np.asarray(data)
        if array.dtype.kind in "iu":
            dtypes.check_int_range(array, dtypes.dtype(dtype if dtype is not None else
                                                       array.dtype))
        if dtype is None:
            if array.dtype == np.float64:
                array = array.astype(np.float32)
            elif array.dtype == np.int64:
                array = array.astype(np.int32)
    if array.dtype == object:
        raise TypeError("tensor() needs numbers, nested lists of numbers or arrays")
    return from_numpy(array, device=device, dtype=dtype, requires_grad=requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    shape = layout.normalize_shape(shape)
    if dtype is None:
        dtype = dtypes.scalar_result_type(dtypes.bool_, fill_value)
    dtype = dtypes.dtype(dtype)
    if isinstance(fill_value, int):
        dtypes.check_int_range(fill_value, dtype)  # numpy's OverflowError, on every device
    device = as_device(device)
    _check_device_dtype(device, dtype)
    if device.kind == "host":
        data = device.backend.call(np.full, shape, fill_value, dtype.np_dtype)
    else:
        from .ops.elementwise import launch, compute_domain
        compute = dtype if dtype.is_floating or not isinstance(fill_value, float) \
            else dtypes.float32
        data = launch(device.backend, "identity", dtype, shape, [fill_value],
                      compute_domain(compute))
    return Tensor._wrap(data, device).requires_grad_(requires_grad)


def zeros(shape, dtype=dtypes.float32, device=None, requires_grad=False):
    return full(shape, 0, dtype, device, requires_grad)


def ones(shape, dtype=dtypes.float32, device=None, requires_grad=False):
    return full(shape, 1, dtype, device, requires_grad)


# ---- numpy-style functions: vkgrad.exp(x), vkgrad.maximum(a, b), vkgrad.where(c, a, b), ... ----
_NUMPY_NAMES = {"sub": "subtract", "mul": "multiply", "div": "divide", "floordiv": "floor_divide",
                "mod": "remainder", "pow": "power", "neg": "negative", "eq": "equal",
                "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
                "ge": "greater_equal", "bitand": "bitwise_and", "bitor": "bitwise_or",
                "bitxor": "bitwise_xor", "bitnot": "bitwise_not", "lshift": "left_shift",
                "rshift": "right_shift"}


def _function(name):
    def fn(*operands):
        return elementwise(name, *operands)
    fn.__name__ = _NUMPY_NAMES.get(name, name)
    fn.__doc__ = f"Elementwise {fn.__name__} with numpy broadcasting and promotion."
    return fn


FUNCTIONS = {_NUMPY_NAMES.get(n, n): _function(n) for n in ELEMENTWISE if n != "identity"}
FUNCTIONS["mod"] = FUNCTIONS["remainder"]
FUNCTIONS["invert"] = FUNCTIONS["bitwise_not"]
FUNCTIONS.update({alias: FUNCTIONS[name] for alias, name in {**_ARC_NAMES,
                                                             "arctan2": "atan2"}.items()})


@tensor_method("div")
def div(a, b, rounding_mode=None):
    """a / b (torch.div): true division, or rounded toward zero (rounding_mode="trunc",
    trunc(a / b) as torch, C's division for integers) or toward -inf ("floor", a // b). Integer
    division by zero gives 0, as numpy (torch raises)."""
    if rounding_mode is None:
        return elementwise("div", a, b)
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError(f"div: rounding_mode must be None, 'trunc' or 'floor', not "
                         f"{rounding_mode!r}")
    return elementwise("truncdiv" if rounding_mode == "trunc" else "floordiv", a, b)


@tensor_method("isclose")
def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|a - b| <= atol + rtol |b| elementwise, as torch and numpy (not symmetric in a and b);
    infinities are close only to themselves, NaN only to NaN with equal_nan. Computed in
    float32 at least (bf16 and integers widened, so the difference is not rounded to bf16)."""
    if rtol < 0 or atol < 0:
        raise ValueError(f"isclose: rtol and atol must be non-negative, not {rtol} and {atol}")
    a, b = (x.astype(dtypes.float32) if isinstance(x, Tensor) and x.dtype in (
        dtypes.bfloat16, dtypes.int32, dtypes.uint32, dtypes.uint8, dtypes.bool_) else x
        for x in (a, b))
    both_finite = elementwise("isfinite", a) & elementwise("isfinite", b)
    near = elementwise("abs", a - b) <= elementwise("abs", b) * rtol + atol
    close = (a == b) | (both_finite & near)
    if equal_nan:
        close = close | (elementwise("isnan", a) & elementwise("isnan", b))
    return close


@tensor_method("allclose")
def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether isclose(a, b) holds everywhere, as a Python bool (reads the result back: on a
    device this waits for it)."""
    return bool(isclose(a, b, rtol, atol, equal_nan).all())
tensor_method("clip")(lambda self, a_min=None, a_max=None: clip(self, a_min, a_max))


def clip(a, a_min=None, a_max=None):
    """Limit values to [a_min, a_max] (either may be None); NaN stays NaN."""
    if a_min is None and a_max is None:
        raise ValueError("clip needs a_min or a_max")
    if a_min is None:
        return elementwise("minimum", a, a_max)
    if a_max is None:
        return elementwise("maximum", a, a_min)
    return elementwise("clip", a, a_min, a_max)


def where(condition, x, y):
    """Elements of x where condition is true, else of y (all three broadcast together)."""
    if isinstance(condition, Tensor) and condition.dtype is not dtypes.bool_:
        condition = condition != 0
    return elementwise("where", condition, x, y)


def _sqrt_flat_at_zero(v):
    """sqrt(v), with the gradient 0 instead of inf * 0 = NaN where v == 0 (torch's rule for
    std and for norms at 0); NaN stays NaN."""
    zero = v == 0
    return where(zero, 0.0, where(zero, 1.0, v).sqrt())
