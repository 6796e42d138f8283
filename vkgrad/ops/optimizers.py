"""Fused optimizer updates: one step of SGD, Adam(W) or RMSprop applied in place to the
parameters of a group.

`update(rule, params, grads, buffers, masters, steps, arrivals, flags, **hyper)` runs where the
parameters live:
  host    ONE kernel call for all of a device's parameters (so a compiled step replays one call
          per group, not one per parameter): numpy, vectorised, in place on each parameter's
          array and its state arrays, in turn
  Vulkan  ONE dispatch of shaders/optim.comp per parameter, which reads the parameter (any float
          dtype, any strides), its gradient and the state buffers and writes them back; nothing
          is read back to the host, and hyper-parameters travel as float bits in push
          constants, so changing the learning rate never creates a pipeline.
Adam and RMSprop count steps in `step`, a float32 scalar (as PyTorch's) beside the parameter's
state, which the update itself advances: on the host in numpy, on Vulkan in the kernel (with
`arrivals`, a uint32 scalar word it needs for that, 0 between dispatches). The kernel also
computes Adam's bias corrections from it, so a recorded step (vkgrad.compile) replays with the
right count; the host computes them as Python floats. The formulas are PyTorch's (per element,
f32):

  SGD      g += wd p;  b = g (first step) or momentum b + (1 - dampening) g;
           g = g + momentum b (nesterov) or b;  p -= lr g
  Adam     p *= 1 - lr wd (AdamW: decay_factor);  g += wd p (Adam);  m += (1 - beta1)(g - m);
           v = beta2 v + (1 - beta2) g^2;  v = max(v_max, v) (amsgrad);
           p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),  bc_k = 1 - beta_k^t
           (t: the step count after this step; lr / bc1 and sqrt(bc2) in float64, then f32)
  RMSprop  g += wd p;  s = alpha s + (1 - alpha) g^2;  a = alpha a + (1 - alpha) g (centered);
           d = sqrt(s - a^2 (centered)) + eps;  b = momentum b + g / d, p -= lr b (momentum)
           or p -= lr g / d
(g is negated first when maximizing.) State buffers are float32 arrays shaped like the parameter
whatever its dtype (float64 for float64 host parameters): bf16 moments would lose the small
increments Adam relies on. With FRESH they hold
nothing yet and are read as zeros (SGD's buffer starts at g). A bf16 parameter is computed in f32
and rounded once; with MASTER its f32 copy (`master`, filled from the parameter when
FRESH_MASTER) is what is updated, and the parameter receives the rounded copy.
"""
import numpy as np

from .. import dtypes, kernels, layout, profiler
from .registry import Op

OPTIM = kernels.LAYOUTS["optim"]
MAXD = OPTIM.MAXD  # dims optim.comp's push constants describe (after coalescing)

# rule -> names of optim.comp's hyper-parameter slots h[0], h[1], ... (unnamed slots are 0);
# NAME_lo is the low part of NAME: NAME - float32(NAME), rounded to float32
HYPER = {
    "sgd": ("lr", "weight_decay", "momentum", "one_minus_dampening"),
    "adam": ("lr", "weight_decay", "decay_factor", "one_minus_beta1", "beta2",
             "one_minus_beta2", "eps", "lr_lo", "beta1", "beta1_lo", "beta2_lo"),
    "rmsprop": ("lr", "weight_decay", "alpha", "one_minus_alpha", "eps", "momentum"),
}
COUNTED = ("adam", "rmsprop")  # rules that count their steps


def state_dtype(param_dtype):
    """The dtype of the state buffers of a parameter: float32, or float64 for float64 ones."""
    return param_dtype if param_dtype is dtypes.float64 else dtypes.float32


def update(rule, params, grads, buffers, masters, steps, arrivals, flags, **hyper):
    """Apply one step of `rule` in place to each Tensor of `params`, on its device.

    Lists with one entry per parameter: grads, Tensors of their parameter's shape and device
    (any float dtype, any strides); buffers, the rule's three state slots (contiguous Tensors of
    state_dtype shaped like the parameter, or None where the configuration needs none); masters,
    float32 Tensors or None; steps (COUNTED rules), the float32 scalar Tensors of steps taken,
    advanced by one here; arrivals (COUNTED rules, Vulkan), uint32 scalar Tensors holding 0, the
    kernel's own; flags, sets of names from kernels.OPTIM_FLAGS. hyper: the rule's HYPER values
    as Python floats (Adam: lr, beta1 and beta2 themselves, without the _lo parts), shared by
    all of them. Profiled (vkgrad.profile) as the op optimizer_update.
    """
    if profiler.enabled():
        with profiler.frame(OPS_UPDATE.name):
            return _update(rule, params, grads, buffers, masters, steps, arrivals, flags, hyper)
    return _update(rule, params, grads, buffers, masters, steps, arrivals, flags, hyper)


def _update(rule, params, grads, buffers, masters, steps, arrivals, flags, hyper):
    by_device = {}
    for i, p in enumerate(params):
        by_device.setdefault(p.device, []).append(i)
    for device, items in by_device.items():
        def arrays(ts):
            return [None if ts[i] is None else ts[i]._data for i in items]
        device.backend.run(OPS_UPDATE, arrays(params), arrays(grads),
                           *[arrays([b[k] for b in buffers]) for k in range(3)],
                           arrays(masters), arrays(steps), arrays(arrivals),
                           rule=rule, flags=tuple(frozenset(flags[i]) for i in items),
                           hyper=hyper)


# ---- host: numpy in place ---------------------------------------------------------------------
def _sgd(w, g, buffers, flags, lr, weight_decay, momentum, one_minus_dampening):
    if weight_decay != 0:
        g = g + weight_decay * w
    if "MOMENTUM" in flags:
        b = buffers[0]
        if "FRESH" in flags:
            b[...] = g
        else:
            b *= momentum
            b += g if one_minus_dampening == 1 else one_minus_dampening * g  # (1 * g is g)
        g = g + momentum * b if "NESTEROV" in flags else b
    w -= lr * g


def _bias_corrected(hyper, t):
    """Adam's hyper-parameters for step `t`: lr and beta1 become lr / bc1 and sqrt(bc2)."""
    hyper = dict(hyper)
    lr, beta1 = hyper.pop("lr"), hyper.pop("beta1")
    return dict(hyper, step_size=lr / (1 - beta1 ** t),
                bias_correction2_sqrt=(1 - hyper["beta2"] ** t) ** 0.5)


def _adam(w, g, buffers, flags, step_size, weight_decay, decay_factor, one_minus_beta1, beta2,
          one_minus_beta2, eps, bias_correction2_sqrt):
    m, v, v_max = buffers
    if decay_factor != 1:  # (w * 1 is w)
        w *= decay_factor
    if weight_decay != 0:
        g = g + weight_decay * w
    m += one_minus_beta1 * (g - m)
    v *= beta2
    v += one_minus_beta2 * g * g
    if "AMSGRAD" in flags:
        np.maximum(v_max, v, out=v_max)
        v = v_max
    w -= step_size * (m / (np.sqrt(v) / bias_correction2_sqrt + eps))


def _rmsprop(w, g, buffers, flags, lr, weight_decay, alpha, one_minus_alpha, eps, momentum):
    square_avg, b, grad_avg = buffers
    if weight_decay != 0:
        g = g + weight_decay * w
    square_avg *= alpha
    square_avg += one_minus_alpha * g * g
    if "CENTERED" in flags:
        grad_avg += one_minus_alpha * (g - grad_avg)
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if "MOMENTUM" in flags:
        b *= momentum
        b += g / avg
        w -= lr * b
    else:
        w -= lr * (g / avg)


_HOST_RULES = {"sgd": _sgd, "adam": _adam, "rmsprop": _rmsprop}


def _host(params, grads, b0s, b1s, b2s, masters, steps, arrivals, rule, flags, hyper):
    """Each parameter's update in turn (lists, one entry per parameter), in one call."""
    scalars = {}  # (parameter dtype, Adam's step count) -> (compute dtype, rule's arguments)
    with np.errstate(all="ignore"):
        for param, grad, *buffers, master, step, f in zip(params, grads, b0s, b1s, b2s, masters,
                                                          steps, flags):
            _host_one(param, grad, buffers, master, step, rule, f, hyper, scalars)


def _host_one(param, grad, buffers, master, step, rule, flags, hyper, scalars):
    t = None
    if step is not None:
        step += np.float32(1)
        if rule == "adam":
            t = float(step)
    known = scalars.get((param.dtype, t))
    if known is None:
        compute = state_dtype(dtypes.dtype(param.dtype)).np_dtype
        values = hyper if t is None else _bias_corrected(hyper, t)
        known = scalars[param.dtype, t] = compute, {k: compute.type(v) for k, v in values.items()}
    compute, args = known
    if "MASTER" in flags:
        if "FRESH_MASTER" in flags:
            master[...] = param
        else:  # a parameter set outside the optimizer (load_state_dict) wins over its master
            stale = master.astype(param.dtype) != param
            master[stale] = param[stale]
        w = master
    else:
        w = param if param.dtype == compute else param.astype(compute)
    if "FRESH" in flags and rule != "sgd":  # SGD's buffer starts at the gradient instead
        for b in buffers:
            if b is not None:
                b.fill(0)
    g = grad.astype(compute, copy=False)
    if "MAXIMIZE" in flags:
        g = -g
    _HOST_RULES[rule](w, g, buffers, flags, **args)
    if w is not param:
        np.copyto(param, w, casting="unsafe")  # rounds to nearest even into bf16


# ---- Vulkan: one optim.comp dispatch per parameter -------------------------------------------
def _vulkan(backend, params, grads, b0s, b1s, b2s, masters, steps, arrivals, rule, flags, hyper):
    for args in zip(params, grads, b0s, b1s, b2s, masters, steps, arrivals, flags):
        _dispatch(backend, *args[:-1], rule=rule, flags=args[-1], hyper=hyper)


def _dispatch(backend, param, grad, b0, b1, b2, master, step, arrivals, rule, flags, hyper,
              advance=True):
    if param.size == 0 and rule not in COUNTED:
        return param
    shape, (p_strides, g_strides) = layout.coalesce(param.shape, param.strides, grad.strides)
    if len(shape) > MAXD:
        # Too many dims survive coalescing: one dispatch per leading index; the last advances
        # the step count that all of them read.
        for i in range(param.shape[0]):
            _dispatch(backend, *[None if a is None else _index0(a, i)
                                 for a in (param, grad, b0, b1, b2, master)], step, arrivals,
                      rule=rule, flags=flags, hyper=hyper, advance=i == param.shape[0] - 1)
        return param
    counted = step is not None
    push = OPTIM.pack(n=param.size, ndim=len(shape), p_start=param.start, g_start=grad.start,
                      s_start=[0 if a is None else a.start for a in (b0, b1, b2, master)],
                      step_start=step.start if counted else 0,
                      arrive_start=arrivals.start if counted else 0,
                      advance=int(advance) if counted else 0,
                      h=[_slot(hyper, name) for name in HYPER[rule]], shape=shape,
                      p_strides=p_strides, g_strides=g_strides)
    backend.launch("optim", "", param.size, push,
                   OPTIM.spec(RULE=kernels.OPTIM_RULES.index(rule),
                              FLAGS=sum(kernels.OPTIM_FLAGS[f] for f in flags),
                              P_DT=param.dtype.code, G_DT=grad.dtype.code),
                   reads=[grad], writes=[param, b0, b1, b2, master, step, arrivals])
    return param


def _slot(hyper, name):
    """The value of a HYPER slot: NAME_lo is what float32 rounding leaves of NAME."""
    if name.endswith("_lo"):
        value = hyper[name[:-3]]
        return value - float(np.float32(value))
    return hyper.get(name, 0.0)


def _index0(a, i):
    return a.view(a.shape[1:], a.strides[1:], a.offset + i * a.strides[0])


# ---- the op ------------------------------------------------------------------------------------
# (of what it writes, only the parameters can be widened weights: its state is float32)
OPS_UPDATE = Op("optimizer_update", _host, _vulkan, saves=(), writes=(0,))
