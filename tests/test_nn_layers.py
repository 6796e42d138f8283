"""Every layer against its torch twin: the torch layer's state dict loaded into the vkgrad layer,
then outputs and the gradients of inputs and parameters compared on random data, on every device
in float32 and bfloat16 (bf16 against torch in float32 on the same bf16-rounded values), over
awkward shapes. Also: default initialisation, batch norm's running statistics over several
steps, dropout by mode."""
from math import sqrt

import numpy as np
import pytest
import torch
import torch.nn as tnn

import vkgrad as vk
from vkgrad import nn

from test_nn_functional import assert_close, rounded, torch_in, vk_in

FLOATS = ("float32", "bfloat16")


def twin(layer, reference, device, dtype):
    """`layer` on `device` in `dtype` holding `reference`'s state (floats rounded to dtype, and
    the torch layer given the same rounded values)."""
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    state = {k: rounded(v, dtype) if v.dtype.kind == "f" else v for k, v in state.items()}
    reference.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    layer.to(device, dtype).load_state_dict(state)
    return layer


def check_layer(layer, reference, x, device, dtype, rng, grads=True, atol=1e-5):
    """Compare outputs, then the input's and every parameter's gradient."""
    layer = twin(layer, reference, device, dtype)
    xv = vk_in(x, device, dtype, grad=grads)
    xt = torch_in(x, dtype, grad=grads)
    out, expected = layer(xv), reference(xt)
    assert_close(out, expected, dtype, atol=atol)
    if not grads:
        return layer
    g = rng.standard_normal(expected.shape).astype(np.float32)
    out.backward(vk.tensor(g, dtype=out.dtype, device=device))
    expected.backward(torch.tensor(rounded(g, dtype)))
    assert_close(xv.grad, xt.grad, dtype, atol=atol)
    params = dict(reference.named_parameters())
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.dtype is p.dtype and p.grad.device == device, name
        assert_close(p.grad, params[name].grad, dtype, atol=atol)
    return layer


# ---- linear, conv, pooling ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
def test_linear(device, dtype, rng):
    for (i, o, bias), shape in (((5, 3, True), (4, 5)), ((7, 1, False), (1, 7)),
                                ((3, 9, True), (2, 3, 3)), ((4, 2, True), (4,))):
        torch.manual_seed(i)
        check_layer(nn.Linear(i, o, bias), tnn.Linear(i, o, bias), rng.standard_normal(shape),
                    device, dtype, rng)


CONV2D = [  # (in, out, kernel, options), input shape
    ((3, 4, 3, {}), (2, 3, 7, 6)),
    ((2, 3, (3, 2), dict(stride=2, padding=1)), (1, 2, 9, 8)),
    ((4, 6, (2, 3), dict(dilation=(2, 1), padding=(1, 2), groups=2)), (2, 4, 6, 7)),
    ((3, 2, 1, dict(bias=False)), (3, 3, 4, 5)),
    ((2, 3, 4, dict(padding="same", dilation=1)), (1, 2, 5, 6)),    # uneven "same": pad after
    ((2, 2, 3, dict(padding="same", dilation=2, groups=2)), (2, 2, 5, 4)),
    ((1, 2, (3, 5), dict(padding="valid", stride=(2, 1))), (2, 1, 7, 9)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on its own padding
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("args,shape", CONV2D, ids=[str(c[0][:3]) for c in CONV2D])
def test_conv2d(device, dtype, args, shape, rng):
    i, o, k, options = args
    torch.manual_seed(0)
    check_layer(nn.Conv2d(i, o, k, **options), tnn.Conv2d(i, o, k, **options),
                rng.standard_normal(shape), device, dtype, rng, atol=1e-4)


@pytest.mark.parametrize("dtype", FLOATS)
def test_conv1d(device, dtype, rng):
    for (i, o, k, options), shape in (((3, 4, 3, {}), (2, 3, 9)),
                                      ((2, 4, 2, dict(stride=2, padding=1, groups=2)), (1, 2, 8)),
                                      ((2, 3, 4, dict(padding="same", dilation=2)), (2, 2, 11))):
        torch.manual_seed(1)
        check_layer(nn.Conv1d(i, o, k, **options), tnn.Conv1d(i, o, k, **options),
                    rng.standard_normal(shape), device, dtype, rng, atol=1e-4)


def test_conv_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="needs stride 1"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="'valid', 'same'"):
        nn.Conv1d(3, 4, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size needs 2 values"):
        nn.Conv2d(3, 4, (3, 3, 3))


POOLS = [
    (lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2), (2, 3, 6, 5)),
    (lambda: nn.MaxPool2d((3, 2), stride=(2, 1), padding=1), lambda: tnn.MaxPool2d(
        (3, 2), stride=(2, 1), padding=1), (1, 2, 7, 6)),
    (lambda: nn.MaxPool2d(2, dilation=2), lambda: tnn.MaxPool2d(2, dilation=2), (1, 1, 7, 7)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1), lambda: tnn.AvgPool2d(3, 2, 1), (2, 2, 7, 6)),
    (lambda: nn.AvgPool2d(2, padding=1, count_include_pad=False),
     lambda: tnn.AvgPool2d(2, padding=1, count_include_pad=False), (1, 3, 5, 5)),
    (lambda: nn.AdaptiveAvgPool2d((3, 2)), lambda: tnn.AdaptiveAvgPool2d((3, 2)), (2, 2, 7, 5)),
    (lambda: nn.AdaptiveAvgPool2d(1), lambda: tnn.AdaptiveAvgPool2d(1), (2, 3, 4, 4)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("make,make_ref,shape", POOLS, ids=range(len(POOLS)))
def test_pooling(device, dtype, make, make_ref, shape, rng):
    check_layer(make(), make_ref(), rng.standard_normal(shape), device, dtype, rng)


# ---- normalisation -------------------------------------------------------------------------------
BATCH_NORMS = [
    (lambda **o: nn.BatchNorm1d(3, **o), lambda **o: tnn.BatchNorm1d(3, **o), (5, 3)),
    (lambda **o: nn.BatchNorm1d(3, **o), lambda **o: tnn.BatchNorm1d(3, **o), (2, 3, 4)),
    (lambda **o: nn.BatchNorm2d(3, **o), lambda **o: tnn.BatchNorm2d(3, **o), (2, 3, 3, 5)),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("make,make_ref,shape", BATCH_NORMS, ids=["1d", "1d-3", "2d"])
def test_batch_norm_steps_then_eval(device, dtype, make, make_ref, shape, rng):
    for options in (dict(momentum=0.3), dict(momentum=None, eps=1e-3), dict(affine=False),
                    dict(bias=False)):
        torch.manual_seed(2)
        reference = make_ref(**options)
        with torch.no_grad():
            for p in reference.parameters():
                p.copy_(torch.randn(p.shape))
        layer = twin(make(**options), reference, device, dtype)
        for _ in range(3):  # running statistics follow torch's over several training steps
            x = rng.standard_normal(shape) * 2 + 0.5
            check_layer(layer, reference, x, device, dtype, rng, atol=1e-4)
            layer.zero_grad()
            reference.zero_grad()
            for name, buf in reference.named_buffers():
                ours = getattr(layer, name)
                if name == "num_batches_tracked":
                    assert ours.dtype is vk.int32 and ours.item() == buf.item()
                else:
                    assert_close(ours, buf, dtype)
        layer.eval(), reference.eval()
        check_layer(layer, reference, rng.standard_normal(shape), device, dtype, rng, atol=1e-4)


def test_batch_norm_without_running_stats_uses_the_batch_in_eval(device, rng):
    reference = tnn.BatchNorm2d(2, track_running_stats=False).eval()
    layer = nn.BatchNorm2d(2, track_running_stats=False).eval()
    assert [k for k, _ in layer.named_buffers()] == []
    assert list(layer.state_dict()) == list(reference.state_dict())
    check_layer(layer, reference, rng.standard_normal((3, 2, 2, 2)), device, "float32", rng,
                atol=1e-4)


def test_batch_norm_checks_its_input():
    with pytest.raises(ValueError, match=r"2 or 3-d input, got shape \(2, 3, 4, 5\)"):
        nn.BatchNorm1d(3)(vk.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\) got an input with 4 channels"):
        nn.BatchNorm2d(3)(vk.ones((2, 4, 2, 2)))


@pytest.mark.parametrize("dtype", FLOATS)
def test_layer_norm(device, dtype, rng):
    for shape, options, x_shape in ((5, {}, (2, 3, 5)), ((3, 4), dict(eps=1e-3), (2, 3, 4)),
                                    (7, dict(elementwise_affine=False), (1, 7)),
                                    (6, dict(bias=False), (3, 6))):
        reference = tnn.LayerNorm(shape, **options)
        with torch.no_grad():
            for p in reference.parameters():
                p.copy_(torch.randn(p.shape))
        layer = nn.LayerNorm(shape, **options)
        assert list(layer.state_dict()) == list(reference.state_dict())
        check_layer(layer, reference, rng.standard_normal(x_shape) * 3, device, dtype, rng,
                    atol=1e-4)


# ---- embedding, dropout, activations, containers of them -----------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
def test_embedding(device, dtype, rng):
    for padding_idx in (None, 2):
        torch.manual_seed(3)
        reference = tnn.Embedding(9, 4, padding_idx=padding_idx)
        layer = twin(nn.Embedding(9, 4, padding_idx=padding_idx), reference, device, dtype)
        idx = rng.integers(0, 9, (3, 5)).astype(np.int32)
        idx[0, :3] = 2
        out = layer(vk.tensor(idx, device=device))
        expected = reference(torch.tensor(idx, dtype=torch.long))
        assert_close(out, expected, dtype)
        g = rng.standard_normal(expected.shape).astype(np.float32)
        out.backward(vk.tensor(g, dtype=out.dtype, device=device))
        expected.backward(torch.tensor(rounded(g, dtype)))
        assert_close(layer.weight.grad, reference.weight.grad, dtype)


def test_dropout_by_mode(device):
    layer = nn.Dropout(0.4)
    x = vk.ones((50, 40), device=device)
    vk.manual_seed(5)
    y = layer(x).numpy()
    assert abs((y == 0).mean() - 0.4) < 0.05
    vk.manual_seed(5)
    np.testing.assert_array_equal(layer(x).numpy(), y)
    assert layer.eval()(x) is x
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        nn.Dropout(1.2)


ACTIVATIONS = [(nn.ReLU(), tnn.ReLU()), (nn.GELU(), tnn.GELU()),
               (nn.GELU("tanh"), tnn.GELU("tanh")), (nn.SiLU(), tnn.SiLU()),
               (nn.Sigmoid(), tnn.Sigmoid()), (nn.Tanh(), tnn.Tanh()),
               (nn.Softmax(1), tnn.Softmax(1)), (nn.LogSoftmax(-1), tnn.LogSoftmax(-1)),
               (nn.Identity(3, x=1), tnn.Identity(3, x=1)), (nn.Flatten(), tnn.Flatten()),
               (nn.Flatten(0, 1), tnn.Flatten(0, 1))]


@pytest.mark.parametrize("dtype", FLOATS)
def test_activation_and_shape_modules(device, dtype, rng):
    x = rng.standard_normal((2, 3, 4)) * 3
    for layer, reference in ACTIVATIONS:
        assert repr(layer) == repr(reference)
        check_layer(layer, reference, x, device, dtype, rng)


# ---- loss modules -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
def test_loss_modules(device, dtype, rng):
    x = rng.standard_normal((6, 4)) * 2
    labels = rng.integers(0, 4, 6).astype(np.int32)
    labels[1] = 3  # also the ignored class below
    y = rng.uniform(0, 1, (6, 4))
    w = rng.uniform(0.5, 2, 4)
    cases = [
        (nn.CrossEntropyLoss(), tnn.CrossEntropyLoss(), labels),
        (nn.CrossEntropyLoss(vk.tensor(w, dtype=dtype), ignore_index=3, reduction="sum",
                             label_smoothing=0.1),
         tnn.CrossEntropyLoss(torch_in(w, dtype), ignore_index=3, reduction="sum",
                              label_smoothing=0.1), labels),
        (nn.NLLLoss(reduction="none"), tnn.NLLLoss(reduction="none"), labels),
        (nn.MSELoss(), tnn.MSELoss(), y),
        (nn.L1Loss(reduction="sum"), tnn.L1Loss(reduction="sum"), y),
        (nn.BCEWithLogitsLoss(pos_weight=vk.tensor(w, dtype=dtype)),
         tnn.BCEWithLogitsLoss(pos_weight=torch_in(w, dtype)), y),
        (nn.MultiMarginLoss(p=2, margin=0.5), tnn.MultiMarginLoss(p=2, margin=0.5), labels),
    ]
    for layer, reference, target in cases:
        assert repr(layer) == repr(reference)
        assert list(layer.state_dict()) == list(reference.state_dict())
        layer.to(device)
        xv, xt = vk_in(x, device, dtype, grad=True), torch_in(x, dtype, grad=True)
        if target.dtype.kind == "f":
            tv, tt = vk_in(target, device, dtype), torch_in(target, dtype)
        else:
            tv, tt = vk.tensor(target, device=device), torch.tensor(target, dtype=torch.long)
        out, expected = layer(xv, tv), reference(xt, tt)
        assert_close(out, expected, dtype)
        g = rng.standard_normal(expected.shape).astype(np.float32)
        out.backward(vk.tensor(g, dtype=out.dtype, device=device))
        expected.backward(torch.tensor(rounded(g, dtype)))
        assert_close(xv.grad, xt.grad, dtype)
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="max")


# ---- default initialisation ----------------------------------------------------------------------
def test_default_initialisation_follows_torch_and_is_seeded(device):
    vk.manual_seed(0)
    fc = nn.Linear(50, 200, device=device)
    conv = nn.Conv2d(4, 64, (3, 5), groups=2, device=device)
    emb = nn.Embedding(100, 80, device=device)
    bn = nn.BatchNorm2d(7, device=device)
    for layer, fan_in in ((fc, 50), (conv, 2 * 3 * 5)):
        bound = 1 / sqrt(fan_in)
        for p in (layer.weight, layer.bias):
            v = p.numpy()
            assert p.device == device and p.dtype is vk.float32 and p.requires_grad
            assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound
        w = layer.weight.numpy()
        assert abs(w.std() - bound / sqrt(3)) < 0.05 * bound and abs(w.mean()) < 0.05 * bound
    e = emb.weight.numpy()
    assert abs(e.mean()) < 0.03 and abs(e.std() - 1) < 0.03
    np.testing.assert_array_equal(bn.weight.numpy(), np.ones(7, np.float32))
    np.testing.assert_array_equal(bn.bias.numpy(), np.zeros(7, np.float32))
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(7, np.float32))
    assert bn.num_batches_tracked.dtype is vk.int32 and bn.num_batches_tracked.shape == ()
    vk.manual_seed(0)  # the same seed draws the same weights, on any device
    again = nn.Linear(50, 200)
    np.testing.assert_array_equal(again.weight.numpy(), fc.weight.numpy())
    np.testing.assert_array_equal(again.bias.numpy(), fc.bias.numpy())
    padded = nn.Embedding(5, 3, padding_idx=-1, device=device, dtype=vk.bfloat16)
    assert padded.padding_idx == 4 and padded.weight.dtype is vk.bfloat16
    assert (padded.weight.numpy()[4] == 0).all() and (padded.weight.numpy()[:4] != 0).all()


def test_layer_parameter_layouts_match_torch():
    pairs = [(nn.Linear(5, 3), tnn.Linear(5, 3)), (nn.Linear(5, 3, bias=False),
                                                   tnn.Linear(5, 3, bias=False)),
             (nn.Conv2d(4, 6, (3, 2), groups=2), tnn.Conv2d(4, 6, (3, 2), groups=2)),
             (nn.Conv1d(2, 4, 3, bias=False), tnn.Conv1d(2, 4, 3, bias=False)),
             (nn.BatchNorm1d(5), tnn.BatchNorm1d(5)), (nn.BatchNorm2d(5, affine=False),
                                                       tnn.BatchNorm2d(5, affine=False)),
             (nn.BatchNorm1d(3, bias=False), tnn.BatchNorm1d(3, bias=False)),
             (nn.LayerNorm((2, 3)), tnn.LayerNorm((2, 3))),
             (nn.LayerNorm(4, elementwise_affine=False),
              tnn.LayerNorm(4, elementwise_affine=False)),
             (nn.LayerNorm(4, bias=False), tnn.LayerNorm(4, bias=False)),
             (nn.Embedding(7, 2), tnn.Embedding(7, 2)),
             (nn.Embedding(7, 2, padding_idx=3), tnn.Embedding(7, 2, padding_idx=3)),
             (nn.AvgPool2d(3, 1, 1), tnn.AvgPool2d(3, 1, 1)),
             (nn.AdaptiveAvgPool2d((2, 3)), tnn.AdaptiveAvgPool2d((2, 3)))]
    for layer, reference in pairs:
        ours = {k: v.shape for k, v in layer.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        assert list(ours.items()) == list(theirs.items())
        assert repr(layer) == repr(reference)
