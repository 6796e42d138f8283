"""Bad input is refused with an error that names the problem, and changes nothing: convolution
and pooling geometry, gradients assigned to `.grad`, optimizer hyper-parameters, and an
optimizer step that meets a gradient which does not fit its parameter (no parameter moves and no
state appears or advances). The rules are PyTorch's (torch 2.13) unless a case says otherwise."""
import math

import numpy as np
import pytest

import vkgrad as vk
from vkgrad import nn, optim
from vkgrad.nn import functional as F

from conftest import DEVICES

NAN = math.nan


# ---- convolution and pooling geometry -----------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda d: nn.Conv2d(1, 3, 0, device=d), r"Conv2d: kernel_size must be positive, got 0"),
    (lambda d: nn.Conv2d(1, 3, (0, 3), device=d), r"kernel_size must be positive, got \(0, 3\)"),
    (lambda d: nn.Conv1d(1, 3, 0, device=d), r"Conv1d: kernel_size must be positive, got 0"),
    (lambda d: nn.Conv2d(1, 3, 3, stride=0, device=d), r"Conv2d: stride must be positive, got 0"),
    (lambda d: nn.Conv1d(1, 3, 3, stride=-1, device=d), r"stride must be positive, got -1"),
    (lambda d: nn.Conv2d(1, 3, 3, padding=(1, -1), device=d),
     r"Conv2d: padding must be non-negative, got \(1, -1\)"),
    (lambda d: nn.Conv1d(1, 3, 3, dilation=0, device=d), r"dilation must be positive, got 0"),
    # torch builds these and refuses them when called; refused as soon as they are built here
    (lambda d: nn.MaxPool2d(0), r"MaxPool2d: kernel_size must be positive, got 0"),
    (lambda d: nn.MaxPool2d(2, stride=0), r"MaxPool2d: stride must be positive, got 0"),
    (lambda d: nn.MaxPool2d(2, padding=-1), r"padding must be non-negative, got -1"),
    (lambda d: nn.MaxPool2d(3, padding=2), r"padding \(2, 2\) must be at most half the kernel"),
    (lambda d: nn.MaxPool2d(2, dilation=0), r"dilation must be positive, got 0"),
    (lambda d: nn.AvgPool2d(0), r"AvgPool2d: kernel_size must be positive, got 0"),
    (lambda d: nn.AvgPool2d((2, 2), stride=(1, 0)), r"stride must be positive, got \(1, 0\)"),
    (lambda d: nn.AvgPool2d(1, padding=1), r"padding \(1, 1\) must be at most half the kernel"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_layers_refuse_a_bad_window(device, make, match):
    with pytest.raises(ValueError, match=match):
        make(device)


@pytest.mark.parametrize("call,match", [
    (lambda x, d: F.conv2d(x, vk.ones((3, 1, 0, 0), device=d)),
     r"conv2d: the kernel must be at least 1x1, got weight shape \(3, 1, 0, 0\)"),
    (lambda x, d: F.conv2d(x, vk.ones((3, 1, 2, 0), device=d), vk.ones(3, device=d)),
     r"conv2d: the kernel .* \(3, 1, 2, 0\)"),
    (lambda x, d: F.conv1d(x[:, :, 0], vk.ones((3, 1, 0), device=d)),
     r"conv1d: the kernel must be at least 1 long, got weight shape \(3, 1, 0\)"),
])
def test_functional_convolutions_refuse_an_empty_kernel(device, call, match):
    # torch: "kernel size should be greater than zero"; it was computed as a bias-only output
    with pytest.raises(ValueError, match=match):
        call(vk.ones((1, 1, 4, 4), device=device), device)


# ---- Tensor.grad --------------------------------------------------------------------------------
def _other_device(device):
    others = [d for d in DEVICES if d.kind != device.kind]
    return others[0] if others else None


@pytest.mark.parametrize("bad,error,match", [
    (lambda p, d: [1.0, 2.0, 3.0], TypeError, r"grad must be a Tensor or None, not list"),
    (lambda p, d: 1.0, TypeError, r"not float"),
    (lambda p, d: np.ones(3, np.float32), TypeError, r"not ndarray"),
    (lambda p, d: vk.ones(4, device=d), RuntimeError, r"grad of shape \(4,\) .* shape \(3,\)"),
    (lambda p, d: vk.ones((1, 3), device=d), RuntimeError, r"shape \(1, 3\) .* shape \(3,\)"),
    (lambda p, d: vk.ones(3, dtype="bfloat16", device=d), RuntimeError,
     r"grad of dtype bfloat16 .* dtype float32"),
    (lambda p, d: vk.ones(3, dtype="int32", device=d), RuntimeError, r"dtype int32"),
    (lambda p, d: p, RuntimeError, r"can't be its own grad"),
    (lambda p, d: vk.ones(3, device=_other_device(d)), RuntimeError,
     r"grad on (host|vulkan:0) for a tensor on (host|vulkan:0)"),
])
def test_assigning_a_grad_that_does_not_fit_is_refused(device, bad, error, match):
    if match.startswith("grad on") and _other_device(device) is None:
        pytest.skip("needs a second kind of device")
    p = nn.Parameter(vk.zeros(3, device=device))
    kept = vk.full((3,), 2.0, device=device)
    p.grad = kept
    value = bad(p, device)
    with pytest.raises(error, match=match):
        p.grad = value
    assert p.grad is kept  # the gradient it had stays
    p.grad = None
    assert p.grad is None


# ---- optimizer hyper-parameters -----------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda ps: optim.Adam(ps, lr=NAN), r"invalid lr nan"),
    (lambda ps: optim.Adam(ps, eps=NAN), r"invalid eps nan"),
    (lambda ps: optim.Adam(ps, weight_decay=NAN), r"invalid weight_decay nan"),
    (lambda ps: optim.Adam(ps, betas=(0.9, 0.99, 0.9)), r"betas must be 2 numbers"),
    (lambda ps: optim.AdamW(ps, lr=NAN), r"invalid lr nan"),
    (lambda ps: optim.RMSprop(ps, alpha=NAN), r"invalid alpha nan"),
    (lambda ps: optim.RMSprop(ps, lr=NAN), r"invalid lr nan"),
    (lambda ps: optim.RMSprop(ps, eps=NAN), r"invalid eps nan"),
    (lambda ps: optim.RMSprop(ps, momentum=NAN), r"invalid momentum nan"),
    (lambda ps: optim.RMSprop(ps, weight_decay=NAN), r"invalid weight_decay nan"),
    # torch's SGD tests `lr < 0` and so lets NaN through; a NaN rate only destroys the weights
    (lambda ps: optim.SGD(ps, lr=NAN), r"invalid lr nan"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=NAN), r"invalid momentum nan"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=NAN), r"invalid weight_decay nan"),
])
def test_optimizers_refuse_nan_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make([nn.Parameter(vk.ones(3))])


@pytest.mark.parametrize("name,bad", [("SGD", dict(lr=NAN)), ("Adam", dict(eps=NAN)),
                                      ("AdamW", dict(weight_decay=NAN)),
                                      ("RMSprop", dict(alpha=NAN))])
def test_a_refused_param_group_is_not_added(name, bad):
    opt = getattr(optim, name)([nn.Parameter(vk.ones(3))], lr=0.1)
    late = nn.Parameter(vk.ones(2))
    key, = bad
    with pytest.raises(ValueError, match=f"invalid {key} nan"):
        opt.add_param_group({"params": [late], **bad})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": [late]})  # the same parameters are still free to add
    assert opt.param_groups[1]["params"][0] is late


# ---- an optimizer step that meets a gradient which does not fit ---------------------------------
OPTIMIZERS = [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.1, amsgrad=True)),
              ("AdamW", dict(lr=0.1, weight_decay=0.1)),
              ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True))]


def _snapshot(params, opt):
    state = {i: {k: v.numpy().copy() if isinstance(v, vk.Tensor) else v
                 for k, v in opt.state[p].items()} for i, p in enumerate(params) if p in opt.state}
    return [p.numpy().copy() for p in params], state


def _assert_same(before, after):
    for a, b in zip(before[0], after[0]):
        np.testing.assert_array_equal(a, b)
    assert sorted(before[1]) == sorted(after[1])
    for i, state in before[1].items():
        assert sorted(state) == sorted(after[1][i])
        for k, v in state.items():
            np.testing.assert_array_equal(v, after[1][i][k])


@pytest.mark.parametrize("stepped", [False, True], ids=["fresh", "stepped"])
@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_a_failing_step_changes_nothing(device, name, kwargs, stepped, rng):
    """Two groups; the last parameter's gradient no longer fits it: it shared its gradient
    tensor with a parameter of a module that was then cast to bfloat16 (Module.to casts the
    gradients of its parameters too). The step refuses before it updates anyone."""
    params = [nn.Parameter(vk.tensor(rng.standard_normal(s).astype(np.float32), device=device))
              for s in ((3, 2), (4,), (4,))]
    opt = getattr(optim, name)([{"params": params[:2]}, {"params": params[2:], "lr": 0.05}],
                               **kwargs)
    if stepped:
        for p in params:
            p.grad = vk.tensor(rng.standard_normal(p.shape).astype(np.float32), device=device)
        opt.step()
    for p in params[:2]:
        p.grad = vk.tensor(rng.standard_normal(p.shape).astype(np.float32), device=device)
    module = nn.Module()
    module.twin = nn.Parameter(vk.zeros(4, device=device))
    params[2].grad = module.twin.grad = vk.ones(4, device=device)
    module.to(vk.bfloat16)
    before = _snapshot(params, opt)
    with pytest.raises(RuntimeError, match=r"parameter 0 of group 1 has a grad of dtype bfloat16 "
                                           r"for a tensor of dtype float32; nothing was updated"):
        opt.step()
    _assert_same(before, _snapshot(params, opt))
    params[2].grad = None  # and the optimizer goes on with the gradients that fit
    opt.step()
    assert not np.array_equal(params[0].numpy(), before[0][0])
    np.testing.assert_array_equal(params[2].numpy(), before[0][2])


def test_a_failing_step_on_the_wrong_device_changes_nothing(vulkan, rng):
    """A parameter left on the host while the gradient it shares moves to Vulkan."""
    params = [nn.Parameter(vk.tensor(rng.standard_normal(4).astype(np.float32)))
              for _ in range(2)]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    module = nn.Module()
    module.twin = nn.Parameter(vk.zeros(4))
    params[0].grad = vk.ones(4)
    params[1].grad = module.twin.grad = vk.ones(4)
    module.to(vulkan)
    before = _snapshot(params, opt)
    with pytest.raises(RuntimeError, match=r"parameter 1 of group 0 has a grad on vulkan:0 for "
                                           r"a tensor on host"):
        opt.step()
    _assert_same(before, _snapshot(params, opt))
    assert not opt.state
