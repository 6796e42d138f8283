"""Fused optimizer updates: one step of SGD, Adam(W) or RMSprop applied to one parameter in place.

`update(rule, param, grad, buffers, master, step, arrivals, flags, **hyper)` runs where the
parameter lives:
  host    numpy, vectorised, in place on the parameter's array and the state arrays
  Vulkan  ONE dispatch of shaders/optim.comp, which reads the parameter (any float dtype, any
          strides), its gradient and the state buffers and writes them back; nothing is read back
          to the host, and hyper-parameters travel as float bits in push constants, so changing
          the learning rate never creates a pipeline.
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

from .. import dtypes, kernels, layout
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


def update(rule, param, grad, buffers, master=None, step=None, arrivals=None, flags=(), **hyper):
    """Apply one step of `rule` to `param` (a Tensor) in place, on its device.

    grad: a Tensor of param's shape and device (any float dtype, any strides);
    buffers: the rule's three state slots (contiguous Tensors of state_dtype shaped like param,
    or None where the configuration needs none); master: float32 Tensor or None;
    step (COUNTED rules): the float32 scalar Tensor of steps taken, advanced by one here;
    arrivals (COUNTED rules, Vulkan): a uint32 scalar Tensor holding 0, the kernel's own;
    flags: names from kernels.OPTIM_FLAGS; hyper: the rule's HYPER values as Python floats
    (Adam: lr, beta1 and beta2 themselves, without the _lo parts).
    """
    arrays = [None if t is None else t._data for t in (*buffers, master, step, arrivals)]
    param.device.backend.run(OPS_UPDATE, param._data, grad._data, *arrays, rule=rule,
                             flags=frozenset(flags), hyper=hyper)


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
            b += one_minus_dampening * g
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


def _host(param, grad, b0, b1, b2, master, step, arrivals, rule, flags, hyper):
    compute = state_dtype(dtypes.dtype(param.dtype)).np_dtype
    if step is not None:
        step += np.float32(1)
        if rule == "adam":
            hyper = _bias_corrected(hyper, float(step))
    if "MASTER" in flags:
        if "FRESH_MASTER" in flags:
            master[...] = param
        else:  # a parameter set outside the optimizer (load_state_dict) wins over its master
            stale = master.astype(param.dtype) != param
            master[stale] = param[stale]
        w = master
    else:
        w = param if param.dtype == compute else param.astype(compute)
    buffers = (b0, b1, b2)
    if "FRESH" in flags and rule != "sgd":  # SGD's buffer starts at the gradient instead
        for b in buffers:
            if b is not None:
                b.fill(0)
    g = grad.astype(compute, copy=False)
    if "MAXIMIZE" in flags:
        g = -g
    with np.errstate(all="ignore"):
        _HOST_RULES[rule](w, g, buffers, flags, **{k: compute.type(v) for k, v in hyper.items()})
    if w is not param:
        np.copyto(param, w, casting="unsafe")  # rounds to nearest even into bf16
    return param


# ---- Vulkan: one optim.comp dispatch ----------------------------------------------------------
def _vulkan(backend, param, grad, b0, b1, b2, master, step, arrivals, rule, flags, hyper,
            advance=True):
    if param.size == 0 and rule not in COUNTED:
        return param
    shape, (p_strides, g_strides) = layout.coalesce(param.shape, param.strides, grad.strides)
    if len(shape) > MAXD:
        # Too many dims survive coalescing: one dispatch per leading index; the last advances
        # the step count that all of them read.
        for i in range(param.shape[0]):
            _vulkan(backend, *[None if a is None else _index0(a, i)
                               for a in (param, grad, b0, b1, b2, master)], step, arrivals,
                    rule=rule, flags=flags, hyper=hyper, advance=i == param.shape[0] - 1)
        return param
    counted = step is not None
    push = OPTIM.pack(n=param.size, ndim=len(shape), p_start=param.start, g_start=grad.start,
                      s=[0 if a is None else a.start for a in (b0, b1, b2, master)],
                      step_at=step.start if counted else 0,
                      arrive_at=arrivals.start if counted else 0,
                      advance=int(advance) if counted else 0,
                      h=[_slot(hyper, name) for name in HYPER[rule]], shape=shape,
                      p_strides=p_strides, g_strides=g_strides)
    backend.launch("optim", "", param.size, push,
                   (kernels.OPTIM_RULES.index(rule), sum(kernels.OPTIM_FLAGS[f] for f in flags),
                    param.dtype.code, grad.dtype.code),
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
OPS_UPDATE = Op("optimizer_update", _host, _vulkan, saves=())
