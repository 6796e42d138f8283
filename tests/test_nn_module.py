"""Module mechanics: registration, traversal, state_dict names identical to torch's, loading
(all-or-nothing, strict and not), to() in place, modes, zero_grad, repr, containers; and a
LeNet built from the layers matching its torch twin end to end."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as tnn

import vkgrad as vk
from vkgrad import nn

from test_nn_functional import assert_close, rounded, torch_in, vk_in

FLOATS = ("float32", "bfloat16")


def lenet(lib):
    return lib.Sequential(
        lib.Conv2d(1, 6, 5), lib.ReLU(), lib.MaxPool2d(2), lib.Conv2d(6, 16, 5), lib.ReLU(),
        lib.MaxPool2d(2), lib.Flatten(), lib.Linear(256, 128), lib.ReLU(), lib.Linear(128, 84),
        lib.ReLU(), lib.Linear(84, 10))


def build_block(self, lib):
    """The same nested model in vkgrad (Block) and torch (TorchBlock)."""
    self.conv1 = lib.Conv2d(2, 3, 3, padding=1)
    self.bn = lib.BatchNorm2d(3)
    self.heads = lib.ModuleDict({"a": lib.Linear(3, 2), "b": lib.Linear(3, 4, bias=False)})
    self.layers = lib.ModuleList([lib.LayerNorm(3), lib.Embedding(5, 3)])


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        build_block(self, nn)


class TorchBlock(tnn.Module):
    def __init__(self):
        super().__init__()
        build_block(self, tnn)


def numpy_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def values(module):
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}


# ---- registration and traversal ------------------------------------------------------------------
class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(vk.ones((2, 3)))
        self.register_buffer("count", vk.zeros(()))
        self.register_buffer("scratch", vk.zeros(2), persistent=False)
        self.child = nn.Linear(3, 3)
        self.plain = vk.ones(4)  # a plain tensor attribute is neither parameter nor buffer
        self.scale = 2.0

    def forward(self, x):
        return self.child(x @ self.w) * self.scale


def test_attributes_register_themselves():
    m = Custom()
    assert [n for n, _ in m.named_parameters()] == ["w", "child.weight", "child.bias"]
    assert [n for n, _ in m.named_buffers()] == ["count", "scratch"]
    assert list(m.state_dict()) == ["w", "count", "child.weight", "child.bias"]
    assert [n for n, _ in m.named_children()] == ["child"] and list(m.children()) == [m.child]
    assert [n for n, _ in m.named_modules()] == ["", "child"]
    assert m.w is m._parameters["w"] and m.count is m._buffers["count"]
    assert isinstance(m.plain, vk.Tensor) and "plain" not in m._buffers
    assert m(vk.ones((4, 2))).shape == (4, 3)

    m.w = None  # a registered parameter may become None (absent), not a plain tensor
    assert [n for n, _ in m.named_parameters()] == ["child.weight", "child.bias"]
    with pytest.raises(TypeError, match="cannot assign a Tensor to parameter 'w'"):
        m.w = vk.ones(3)
    m.count = vk.ones(())  # buffers are replaced by tensors
    assert m.count.item() == 1.0
    with pytest.raises(TypeError, match="buffer 'count'"):
        m.count = 3
    m.child = nn.Identity()  # replacing a module keeps its place
    assert [n for n, _ in m.named_modules()] == ["", "child"]
    del m.child
    assert not hasattr(m, "child") and list(m.children()) == []
    m.w = nn.Parameter(vk.zeros(2))
    m.count = None
    assert list(m.state_dict()) == ["w"]
    with pytest.raises(AttributeError, match="'Custom' object has no attribute 'nope'"):
        m.nope
    with pytest.raises(TypeError, match="wrap it in nn.Parameter"):
        m.register_parameter("x", vk.ones(2))
    with pytest.raises(KeyError, match="contain no '.'"):
        m.register_buffer("a.b", vk.ones(2))


def test_super_init_is_required():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(vk.ones(2))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Broken()


def test_shared_modules_and_parameters_are_listed_once():
    shared = nn.Linear(2, 2)
    m = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(m.parameters())) == 2
    assert [n for n, _ in m.named_modules()] == ["", "0", "1"]
    assert list(m.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # as torch
    t = tnn.Linear(2, 2)
    assert list(m.state_dict()) == list(tnn.Sequential(t, tnn.ReLU(), t).state_dict())


def test_state_dict_keys_and_shapes_match_torch():
    for ours, theirs in ((lenet(nn), lenet(tnn)), (Block(), TorchBlock())):
        sd, ref = ours.state_dict(), theirs.state_dict()
        assert isinstance(sd, OrderedDict)
        assert list(sd) == list(ref)
        assert [v.shape for v in sd.values()] == [tuple(v.shape) for v in ref.values()]
    assert Block().state_dict()["bn.num_batches_tracked"].dtype is vk.int32
    assert list(lenet(nn).state_dict())[:2] == ["0.weight", "0.bias"]


def test_state_dict_shares_memory_and_keep_vars():
    m = nn.Linear(3, 2)
    sd = m.state_dict()
    assert not sd["weight"].requires_grad
    with vk.no_grad():
        m.weight[0, 0] = 5.0
    assert sd["weight"][0, 0].item() == 5.0
    assert m.state_dict(keep_vars=True)["weight"] is m.weight


# ---- loading -------------------------------------------------------------------------------------
def test_load_state_dict_copies_into_the_same_tensors(device):
    torch.manual_seed(0)
    reference = TorchBlock()
    m = Block().to(device)
    before = {k: v for k, v in m.state_dict(keep_vars=True).items()}
    state = numpy_state(reference)
    state["bn.num_batches_tracked"] = np.array(7)
    result = m.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in m.state_dict(keep_vars=True).items():
        assert v is before[k] and v.device == device  # references stay valid
        np.testing.assert_array_equal(v.numpy(), state[k])
    assert m.bn.num_batches_tracked.dtype is vk.int32

    # float64 arrays and Tensors on another device are cast and moved to each parameter's
    m.to(dtype=vk.bfloat16)
    m.load_state_dict({k: (v.astype(np.float64) if v.dtype.kind == "f" else v)
                       for k, v in state.items()})
    assert m.conv1.weight.dtype is vk.bfloat16 and m.bn.num_batches_tracked.dtype is vk.int32
    np.testing.assert_array_equal(m.conv1.weight.numpy().astype(np.float32),
                                  rounded(state["conv1.weight"], "bfloat16"))
    host = Block()
    host.load_state_dict(m.state_dict())
    assert host.conv1.weight.device == vk.device("host") and host.conv1.weight.dtype is vk.float32


def test_failed_load_changes_nothing_and_names_every_problem(device):
    m = Block().to(device)
    before = values(m)
    state = numpy_state(TorchBlock())
    del state["heads.a.bias"]
    state["extra.weight"] = np.ones(3, np.float32)
    state["layers.1.weight"] = np.ones((6, 3), np.float32)  # late keys: nothing before is copied
    state["bn.num_batches_tracked"] = np.array(1.5)  # a float into the integer buffer
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(state)
    message = str(info.value)
    assert "Error(s) in loading state_dict for Block" in message
    assert 'Missing key(s) in state_dict: "heads.a.bias"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    assert ("size mismatch for layers.1.weight: copying a param with shape (6, 3) from "
            "checkpoint, the shape in current model is (5, 3)") in message
    assert "dtype mismatch for bn.num_batches_tracked" in message
    for k, v in values(m).items():
        np.testing.assert_array_equal(v, before[k])


def test_non_strict_load_reports_and_loads_the_rest():
    m = Block()
    state = numpy_state(TorchBlock())
    del state["heads.a.bias"], state["bn.running_var"]
    state["extra"] = np.ones(2, np.float32)
    result = m.load_state_dict(state, strict=False)
    assert result.missing_keys == ["bn.running_var", "heads.a.bias"]
    assert result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(m.conv1.weight.numpy(), state["conv1.weight"])
    state["conv1.weight"] = np.ones((1, 1), np.float32)
    with pytest.raises(RuntimeError, match="size mismatch for conv1.weight"):  # never skipped
        m.load_state_dict(state, strict=False)


# ---- to(), modes, gradients ----------------------------------------------------------------------
def test_to_moves_parameters_buffers_and_grads_in_place(vulkan):
    m = Block()
    m.layers[0](vk.ones((2, 3))).sum().backward()
    params = list(m.parameters())  # what an optimizer holds
    grad = m.layers[0].weight.grad
    assert m.to(vulkan, vk.bfloat16) is m
    assert [id(p) for p in m.parameters()] == [id(p) for p in params]
    for t in [*m.parameters(), *m.buffers()]:
        assert t.device == vulkan
    assert m.conv1.weight.dtype is vk.bfloat16 and m.bn.running_mean.dtype is vk.bfloat16
    assert m.bn.num_batches_tracked.dtype is vk.int32  # only floating tensors are cast
    assert m.layers[0].weight.grad is grad and grad.device == vulkan and grad.dtype is vk.bfloat16
    assert params[0].requires_grad and params[0].is_leaf
    with vk.no_grad():  # an update through the optimizer's reference reaches the model
        params[0][...] = 3.0
    assert (m.conv1.weight.numpy() == 3).all()
    m.to(vk.float32)  # a dtype alone casts
    assert m.conv1.weight.dtype is vk.float32 and m.conv1.weight.device == vulkan
    m.to("host").float()
    assert m.conv1.weight.device == vk.device("host")
    with pytest.raises(TypeError, match="must be floating"):
        m.to(dtype=vk.int32)


def test_train_eval_zero_grad_requires_grad_apply():
    m = Block()
    assert m.training and m.bn.training
    assert m.eval() is m and not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    m.heads.train(False)
    assert m.training and not m.heads["a"].training

    out = m.heads["a"](vk.ones((2, 3))).sum()
    out.backward()
    w = m.heads["a"].weight
    assert w.grad is not None
    m.zero_grad(set_to_none=False)
    assert w.grad is not None and (w.grad.numpy() == 0).all()
    m.zero_grad()
    assert w.grad is None

    assert m.requires_grad_(False) is m and not any(p.requires_grad for p in m.parameters())
    m.requires_grad_()
    seen = []
    assert m.apply(lambda mod: seen.append(type(mod).__name__)) is m
    assert seen[-1] == "Block" and seen.index("Conv2d") < seen.index("Block")
    assert seen.count("Linear") == 2


def test_repr_matches_torch():
    m, t = Block(), TorchBlock()
    assert repr(m).replace("Block", "X") == repr(t).replace("TorchBlock", "X")
    assert repr(nn.Linear(256, 128)) == "Linear(in_features=256, out_features=128, bias=True)"
    assert repr(lenet(nn)).startswith(
        "Sequential(\n  (0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))\n  (1): ReLU()\n"
        "  (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)\n")
    for args in [(2,), (3, 1, 1), (2, 2, 0, 1, False, True)]:
        assert repr(nn.MaxPool2d(*args)) == repr(torch.nn.MaxPool2d(*args))


# ---- containers ----------------------------------------------------------------------------------
def test_sequential():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and list(s) == [a, b, c] and s[0] is a and s[-1] is c
    assert isinstance(s[1:], nn.Sequential) and list(s[1:]) == [b, c]
    x = vk.ones((4, 2))
    np.testing.assert_array_equal(s(x).numpy(), c(b(a(x))).numpy())
    s.append(nn.Sigmoid())
    assert len(s) == 4 and list(s.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    s[3] = nn.Tanh()
    assert isinstance(s[3], nn.Tanh)
    del s[1]
    assert len(s) == 3 and [n for n, _ in s.named_children()] == ["0", "2", "3"]
    named = nn.Sequential(OrderedDict([("fc", a), ("act", b)]))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"] and named.fc is a
    with pytest.raises(IndexError, match="out of range for Sequential of length 3"):
        s[3]


def test_module_list_and_dict():
    layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(2))
    layers.append(nn.ReLU())
    layers.extend([nn.Tanh()])
    layers.insert(0, nn.Identity())
    assert [type(m).__name__ for m in layers] == ["Identity", "Linear", "Linear", "ReLU", "Tanh"]
    assert list(layers.state_dict()) == ["1.weight", "1.bias", "2.weight", "2.bias"]
    del layers[0]
    assert list(layers.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert isinstance(layers[-1], nn.Tanh) and len(layers[1:3]) == 2
    with pytest.raises(IndexError, match="ModuleList of length 4"):
        layers[4]
    with pytest.raises(NotImplementedError, match="does not define forward"):
        layers(vk.ones(2))

    heads = nn.ModuleDict({"x": nn.Linear(2, 1)})
    heads["y"] = nn.Linear(2, 3)
    assert list(heads) == ["x", "y"] and "y" in heads and len(heads) == 2
    assert [k for k, _ in heads.items()] == list(heads.keys())
    assert list(heads.state_dict()) == ["x.weight", "x.bias", "y.weight", "y.bias"]
    heads.pop("x")
    assert list(heads.keys()) == ["y"]


# ---- a whole model against torch -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", FLOATS)
def test_lenet_matches_torch(device, dtype, rng):
    torch.manual_seed(4)
    reference = lenet(tnn)
    state = {k: rounded(v, dtype) for k, v in numpy_state(reference).items()}
    reference.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    model = lenet(nn).to(device, dtype)
    model.load_state_dict(state)
    x = rng.standard_normal((3, 1, 28, 28))
    labels = rng.integers(0, 10, 3)
    xv, xt = vk_in(x, device, dtype), torch_in(x, dtype)
    loss = nn.CrossEntropyLoss()(model(xv), vk.tensor(labels, device=device))
    expected = tnn.CrossEntropyLoss()(reference(xt), torch.tensor(labels))
    assert_close(loss, expected, dtype, atol=1e-4)
    loss.backward()
    expected.backward()
    grads = {k: p.grad for k, p in reference.named_parameters()}
    for name, p in model.named_parameters():
        if dtype == "float32":
            assert_close(p.grad, grads[name], dtype, atol=1e-4)
        else:  # bf16 roundings after every op of five layers, and ReLU/max-pool switches they
            # cause, add up: compare whole gradients (torch's own bf16 is off by about 3%)
            a, e = p.grad.numpy().astype(np.float64), grads[name].numpy()
            assert np.linalg.norm(a - e) <= 0.08 * np.linalg.norm(e), name
