"""Reverse-mode automatic differentiation over a graph recorded as the code runs.

Every op run through `ops.registry.apply` on a tensor that requires grad records a `Node`: the
op's backward rule (`Op.vjp`, written in Tensor ops so that gradients are differentiable too),
what the rule needs saved, and edges to the nodes that produced its inputs. Leaves that require
grad get an `AccumulateGrad` node that adds into `.grad`. `backward()` walks the nodes in reverse
topological order; broadcasting is undone and dtypes restored in one place (`_fit`).

>>> import vkgrad as vk
>>> x = vk.tensor([1.0, 2.0, 3.0], requires_grad=True)
>>> (x * x).sum().backward()
>>> x.grad.tolist()
[2.0, 4.0, 6.0]

Nothing here reads device memory: a backward pass on Vulkan queues its kernels like any other work,
so it costs no extra submit.
"""
import contextlib
import threading
import weakref

from . import compiler, profiler

__all__ = ["Function", "backward", "enable_grad", "grad", "is_grad_enabled", "no_grad",
           "queue_callback", "register_post_accumulate_grad_hook", "set_grad_enabled"]

# ---- grad mode: per thread, so graphs built in different threads do not interfere -------------
_mode = threading.local()


def is_grad_enabled():
    """Whether ops on tensors that require grad are recorded (True unless under no_grad)."""
    return getattr(_mode, "enabled", True)


def wants_grad(tensors):
    """Whether an op on `tensors` (Tensors, or None for an absent operand) is recorded for
    autograd: grad mode is on and one of them requires grad."""
    return is_grad_enabled() and any(t is not None and t._requires_grad for t in tensors)


class set_grad_enabled(contextlib.ContextDecorator):
    """Switch recording on or off inside a `with` block or a decorated function (per thread)."""

    def __init__(self, mode=True):
        self.mode = bool(mode)
        self._saved = []

    def __enter__(self):
        self._saved.append(is_grad_enabled())
        _mode.enabled = self.mode

    def __exit__(self, *exc):
        _mode.enabled = self._saved.pop()
        return False


class no_grad(set_grad_enabled):
    """Run without recording a graph: `with vk.no_grad(): ...` or `@vk.no_grad()`."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Record again inside a `no_grad` region: `with vk.enable_grad(): ...`."""

    def __init__(self):
        super().__init__(True)


# ---- the graph ----------------------------------------------------------------------------------
class Node:
    """One recorded op application.

    vjp(ctx, *output_grads) -> one gradient (or None) per input
    parents: per input, the (node, output index) its gradient flows to, or None
    inputs:  per input, (shape, dtype) to fit its gradient to
    outputs: per output, (shape, dtype, device), to make zeros for an output without a gradient
    """
    __slots__ = ("name", "vjp", "ctx", "parents", "inputs", "outputs", "retained", "freed",
                 "__weakref__")
    is_leaf = False

    def __init__(self, name, vjp, ctx, parents, inputs, outputs):
        self.name, self.vjp, self.ctx = name, vjp, ctx
        self.parents, self.inputs, self.outputs = parents, inputs, outputs
        self.retained = None   # {output index: weakref to a tensor that called retain_grad()}
        self.freed = False

    def release(self):
        """Drop what was saved for backward (after use, unless retain_graph)."""
        self.ctx, self.freed = None, True

    def __repr__(self):
        return f"<{self.name}Backward>"


class AccumulateGrad(Node):
    """The node of a leaf that requires grad: gradients arriving here add into `tensor.grad`;
    `hooks` run after each such addition (register_post_accumulate_grad_hook)."""
    __slots__ = ("tensor", "hooks")
    is_leaf = True

    def __init__(self, tensor):
        super().__init__("AccumulateGrad", None, None, (), (), ((tensor.shape, tensor.dtype,
                                                                  tensor.device),))
        self.tensor = weakref.ref(tensor)  # a dropped leaf needs no gradient
        self.hooks = []

    def release(self):
        pass  # a leaf outlives every graph built on it


def edge(t):
    """The (node, output index) that gradients for tensor `t` flow to, or None."""
    if not t._requires_grad:
        return None
    if t._grad_node is None:  # a leaf: its accumulator is made on first use and kept
        t._grad_node = AccumulateGrad(t)
    return t._grad_node, t._out_index


class OpContext:
    """What an op's backward rule sees: its saved inputs and output, and the call's parameters.

    inputs  the operands (tensors and scalars); tensors the op does not save are None
    shapes  the operands' shapes (None for scalars)
    params  the keyword parameters the op was called with
    output  the result, with its graph (recreated on access, so a node never holds its own output)
    stats   the forward's by-products an op with "stats" in its saves returned (Tensors)
    needs_input_grad  per operand, whether its gradient is wanted (rules skip the others)
    """
    __slots__ = ("inputs", "shapes", "params", "needs_input_grad", "stats", "_output", "_node",
                 "_device")

    @property
    def output(self):
        from .tensor import Tensor
        out = Tensor._wrap(self._output, self._device)
        out._requires_grad, out._grad_node = True, self._node()
        return out


def record(op, operands, params, out, stats=()):
    """Attach a node for `op` to its result `out` (called by `apply` when an operand requires
    grad and grad mode is on); `stats` are the arrays of the op's by-products its vjp reads."""
    from .tensor import Tensor
    if not out.dtype.is_floating:
        return out
    ctx = OpContext()
    save_inputs = "inputs" in op.saves
    ctx.inputs = tuple(o if save_inputs or not isinstance(o, Tensor) else None for o in operands)
    ctx.params = params
    ctx._output = out._data if "output" in op.saves else None
    ctx._device = out.device
    ctx.stats = tuple(Tensor._wrap(a, out.device) for a in stats)
    parents = tuple(edge(o) if isinstance(o, Tensor) else None for o in operands)
    inputs = tuple((o.shape, o.dtype) if isinstance(o, Tensor) else None for o in operands)
    ctx.shapes = tuple(i and i[0] for i in inputs)
    ctx.needs_input_grad = tuple(p is not None for p in parents)
    node = Node(op.name, op.vjp, ctx, parents, inputs, ((out.shape, out.dtype, out.device),))
    ctx._node = weakref.ref(node)  # not the node itself: node -> ctx -> node would be a cycle
    out._requires_grad, out._grad_node = True, node
    return out


def check_inplace(target, value=None):
    """In-place writes are not recorded: refuse them where they would corrupt a gradient."""
    from .tensor import Tensor
    if is_grad_enabled() and (target._requires_grad or isinstance(value, Tensor)
                              and value._requires_grad):
        raise RuntimeError(
            "in-place writes into or from a tensor that requires grad are not recorded by "
            "autograd; build the result out of place (where, concatenate, stack, pad) or do "
            "the update under vkgrad.no_grad()")


# ---- running backward ---------------------------------------------------------------------------
def _fit(g, shape, dtype):
    """`g` summed over the axes that broadcasting added or stretched, as `dtype`: the one place
    where broadcasting is undone."""
    if g.shape != shape:
        if g.ndim < len(shape):  # a value broadcast into an indexed shape may have leading 1s
            g = g.reshape((1,) * (len(shape) - g.ndim) + g.shape)
        lead = g.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                          if n == 1 and g.shape[lead + i] != 1)
        if axes:
            g = g.sum(axis=axes, keepdims=True)
        g = g.reshape(shape)
    return g if g.dtype is dtype else g.astype(dtype)


def _topological(roots):
    """Nodes reachable from `roots`, each after every node that feeds gradients into it."""
    order, seen = [], set()
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(root.parents))]
        while stack:  # iterative: graphs thousands of ops deep must not hit the recursion limit
            node, parents = stack[-1]
            for parent in parents:
                if parent is not None and parent[0] not in seen:
                    seen.add(parent[0])
                    stack.append((parent[0], iter(parent[0].parents)))
                    break
            else:
                stack.pop()
                order.append(node)
    order.reverse()
    return order


def _add(a, b):
    return b if a is None else a + b


def _zeros(shape, dtype, device):
    from .tensor import full
    return full(shape, 0, dtype, device)


def _run(outputs, output_grads, retain_graph, create_graph, capture=None):
    """Propagate `output_grads` from `outputs` back through the graph. Leaves accumulate into
    `.grad`, unless `capture` ({(node, index): None}) asks for some gradients to be returned."""
    grads = {}
    for t, g in zip(outputs, output_grads):
        node, index = edge(t)
        slots = grads.setdefault(node, [None] * len(node.outputs))
        slots[index] = _add(slots[index], g)
    with set_grad_enabled(create_graph):
        for node in _topological(list(grads)):
            slots = grads.pop(node, None)
            if slots is None:
                continue
            if capture is not None:
                for i, g in enumerate(slots):
                    if (node, i) in capture:
                        capture[(node, i)] = g
            if node.retained and capture is None:
                for i, ref in node.retained.items():
                    t = ref()
                    if t is not None and slots[i] is not None:
                        _accumulate(t, slots[i], create_graph)
            if node.is_leaf:
                t = node.tensor()
                if capture is None and t is not None and slots[0] is not None:
                    _accumulate(t, slots[0], create_graph)
                    for hook in node.hooks:
                        hook(t)
                continue
            if node.freed:
                raise RuntimeError(
                    f"trying to backward through the graph a second time ({node!r} was already "
                    "used and its saved tensors freed); pass retain_graph=True to the first "
                    "backward() or grad() call if you need to go through it again")
            slots = [g if g is not None else _zeros(*meta) for g, meta in zip(slots, node.outputs)]
            if profiler.enabled():
                with profiler.frame(f"{node.name} backward"):
                    in_grads = node.vjp(node.ctx, *slots)
            else:
                in_grads = node.vjp(node.ctx, *slots)
            if not isinstance(in_grads, (tuple, list)):
                in_grads = (in_grads,)
            if len(in_grads) != len(node.parents):
                raise RuntimeError(f"{node!r} returned {len(in_grads)} gradients for "
                                   f"{len(node.parents)} inputs")
            if not retain_graph:
                node.release()
            for parent, g, meta in zip(node.parents, in_grads, node.inputs):
                if parent is None or g is None:
                    continue
                g = _fit(g, *meta)
                slots = grads.setdefault(parent[0], [None] * len(parent[0].outputs))
                slots[parent[1]] = _add(slots[parent[1]], g)


def register_post_accumulate_grad_hook(t, hook):
    """Call `hook(t)` each time a backward pass has added the last of its gradient into leaf
    `t`'s `.grad` (as torch's Tensor.register_post_accumulate_grad_hook): `t.grad` is then final
    for that pass, so the hook may read or replace it. Returns a handle whose remove() unhooks.

    Leaves are visited in reverse topological order, so hooks run while the rest of the backward
    pass is still to come (DistributedDataParallel starts its all-reduces from here)."""
    if not t._requires_grad or not t.is_leaf:
        raise RuntimeError("register_post_accumulate_grad_hook: only a leaf tensor that "
                           "requires grad accumulates a gradient")
    hooks = edge(t)[0].hooks
    hooks.append(hook)
    return _HookHandle(hooks, hook)


class _HookHandle:
    __slots__ = ("_hooks", "_hook")

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def queue_callback(fn):
    """Call `fn()` once when the backward pass now running has finished (as torch's
    Variable._execution_engine.queue_callback); for hooks that start work to be completed
    before the pass returns. Outside a backward pass it is an error."""
    if getattr(_mode, "callbacks", None) is None:
        raise RuntimeError("queue_callback: no backward pass is running")
    _mode.callbacks.append(fn)


def _accumulate(t, g, create_graph):
    """t.grad += g. A fresh, contiguous copy the first time: `g` may be a broadcast view or
    shared with another input's gradient, and users update .grad in place."""
    compiler.guard_gradient(t)
    if t.grad is not None:
        t.grad = t.grad + g
    else:
        t.grad = g if create_graph else g.astype(g.dtype)


def zero_grads(tensors, set_to_none=True):
    """Forget the gradients of `tensors` (zero_grad of modules and optimizers): set them to
    None, or fill them with zeros in place."""
    for t in tensors:
        compiler.gradient_cleared(t)
        if t.grad is None:
            continue
        if set_to_none:
            t.grad = None
        else:
            t.grad = t.grad.detach()
            with no_grad():
                t.grad[...] = 0


def _check_outputs(outputs, grad_outputs, what):
    from .tensor import Tensor, ones
    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif not isinstance(grad_outputs, (tuple, list)):
        grad_outputs = [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"{what}: {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    grads = []
    for t, g in zip(outputs, grad_outputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: outputs must be tensors, not {type(t).__name__}")
        if not t._requires_grad:
            raise RuntimeError(f"{what}: a tensor of shape {t.shape} does not require grad and "
                               "has no graph (was it computed under no_grad, or from tensors "
                               "without requires_grad=True?)")
        if g is None:
            if t.size != 1:
                raise RuntimeError(f"{what}: the gradient can only be implied for an output with "
                                   f"one element, not shape {t.shape}; pass the gradient of "
                                   "the output explicitly")
            g = ones(t.shape, t.dtype, t.device)
        elif not isinstance(g, Tensor):
            raise TypeError(f"{what}: a gradient must be a Tensor, not {type(g).__name__}")
        elif g.shape != t.shape or g.device != t.device:
            raise ValueError(f"{what}: gradient of shape {g.shape} on {g.device} for an output "
                             f"of shape {t.shape} on {t.device}")
        grads.append(g)
    return outputs, grads


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Add the gradients of `tensors` (weighted by `grad_tensors`) into the `.grad` of every leaf
    they depend on; see `Tensor.backward`."""
    outputs, grads = _check_outputs(tensors, grad_tensors, "backward")
    outer, _mode.callbacks = getattr(_mode, "callbacks", None), []
    try:
        _run(outputs, grads, create_graph if retain_graph is None else retain_graph, create_graph)
        while _mode.callbacks:
            _mode.callbacks.pop(0)()
    finally:
        _mode.callbacks = outer


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """The gradients of `outputs` with respect to `inputs`, returned as a tuple and not added to
    any `.grad`. With create_graph=True the result is itself differentiable.

    >>> x = vk.tensor(3.0, requires_grad=True)
    >>> (dx,) = vk.grad(x ** 3, x, create_graph=True)    # 3x^2 = 27
    >>> vk.grad(dx, x)[0].item()                         # 6x = 18
    18.0
    """
    from .tensor import Tensor
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    outputs, grads = _check_outputs(outputs, grad_outputs, "grad")
    keys = []
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or not t._requires_grad:
            raise RuntimeError(f"grad: input {i} does not require grad")
        keys.append(edge(t))
    capture = dict.fromkeys(keys)
    _run(outputs, grads, create_graph if retain_graph is None else retain_graph, create_graph,
         capture)
    result = []
    for i, (key, t) in enumerate(zip(keys, inputs)):
        g = capture[key]
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: input {i} (shape {t.shape}) was not used to compute the "
                               "outputs; pass allow_unused=True to get None for it")
        result.append(g)
    return tuple(result)


# ---- custom differentiable functions ------------------------------------------------------------
class FunctionCtx:
    """The `ctx` of a custom Function: save tensors in forward, read them in backward."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self._saved = ()

    def save_for_backward(self, *tensors):
        self._saved = tensors

    @property
    def saved_tensors(self):
        if self._saved is None:
            raise RuntimeError("saved tensors were freed after backward; pass retain_graph=True "
                               "to backward more than once")
        return self._saved


class Function:
    """A differentiable op defined by its forward and backward, as in PyTorch.

    >>> class Cube(vk.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x * x
    ...     @staticmethod
    ...     def backward(ctx, grad):
    ...         (x,) = ctx.saved_tensors
    ...         return grad * 3 * x * x
    >>> y = Cube.apply(vk.tensor(2.0, requires_grad=True))

    `forward` runs without recording; `backward` returns one gradient (or None) per argument of
    `forward`, and is recorded itself when create_graph=True, so it can be differentiated again
    if it is written in Tensor ops. See examples/custom_op.py for an op with its own GLSL kernel.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        from .tensor import Tensor
        needs = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
        ctx = FunctionCtx(needs)
        with no_grad():
            result = cls.forward(ctx, *args, **kwargs)
        single = isinstance(result, Tensor)
        outputs = [result] if single else list(result)
        if not (is_grad_enabled() and any(needs)):
            return result
        outputs = [Tensor._wrap(o._data, o.device) if any(o is a for a in args) else o
                   for o in outputs]  # an input returned as is becomes a new tensor
        differentiable = [o for o in outputs if isinstance(o, Tensor) and o.dtype.is_floating]

        node = Node(cls.__name__, _function_vjp(cls, len(args)), ctx,
                    tuple(edge(a) if isinstance(a, Tensor) else None for a in args),
                    tuple((a.shape, a.dtype) if isinstance(a, Tensor) else None for a in args),
                    tuple((o.shape, o.dtype, o.device) for o in differentiable))
        for i, o in enumerate(differentiable):
            o._requires_grad, o._grad_node, o._out_index = True, node, i
        return outputs[0] if single else type(result)(outputs)


def _function_vjp(cls, n_inputs):
    def vjp(ctx, *grads):
        g = cls.backward(ctx, *grads)
        g = tuple(g) if isinstance(g, (tuple, list)) else (g,)
        if len(g) > n_inputs and all(extra is None for extra in g[n_inputs:]):
            g = g[:n_inputs]  # Nones for defaulted arguments that were not passed
        return g
    return vjp
