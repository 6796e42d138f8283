"""Indices out of range raise IndexError on every device, and integers too large for their dtype
raise OverflowError.

Host-data indices are checked before anything runs. Index tensors on a Vulkan device are checked
by the kernels that read them: they flag the first bad index in device memory, and the next
host synchronisation (reading a value, vk.synchronize) raises IndexError naming the op. The
device stays usable afterwards.
"""
import numpy as np
import pytest

import vkgrad as vk
import vkgrad.nn as nn
import vkgrad.nn.functional as F

OUT_OF_RANGE = "out of (bounds|range)"


def _expect_index_error(device, fn, match=OUT_OF_RANGE):
    """fn() (or reading its value) raises IndexError, and later work is correct."""
    with pytest.raises(IndexError, match=match):
        out = fn()
        (out if isinstance(out, vk.Tensor) else vk.zeros(1, device=device)).numpy()
    vk.synchronize()  # the error was reported once, not again
    x = vk.tensor([1.0, 2.0, 3.0], device=device)
    got = vk.take_along_axis(x, vk.tensor([2, -3, 1], device=device), 0) * 2
    np.testing.assert_array_equal(got.numpy(), [6.0, 2.0, 4.0])


def _x(device):
    return vk.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device=device)


def _on(device, values):
    return vk.tensor(np.array(values, np.int32), device=device)


def _setitem(x, key, value):
    x[key] = value
    return x


def _add_at(x, key, value):
    vk.add_at(x, key, value)
    return x


BAD = {
    "take_along_axis": lambda d: vk.take_along_axis(_x(d), _on(d, [[0], [3]]), 1),
    "take_along_axis_negative": lambda d: vk.take_along_axis(_x(d), _on(d, [[-4], [0]]), 1),
    "take_along_axis_host_indices": lambda d: vk.take_along_axis(_x(d), np.array([[0], [3]]), 1),
    "getitem_list": lambda d: _x(d)[[0, 5]],
    "getitem_tensor": lambda d: _x(d)[_on(d, [0, 5])],
    "getitem_negative": lambda d: _x(d)[_on(d, [-3])],
    "getitem_uint32": lambda d: _x(d)[vk.tensor([2 ** 32 - 1], dtype="uint32", device=d)],
    "getitem_two_tensors": lambda d: _x(d)[_on(d, [1, 0]), _on(d, [2, 3])],
    "getitem_tensor_and_list": lambda d: _x(d)[_on(d, [1, 0]), [0, -4]],
    "take": lambda d: vk.take(_x(d), _on(d, [6]), None),
    "take_axis": lambda d: vk.take(_x(d), _on(d, [0, 3]), 1),
    "setitem_tensor": lambda d: _setitem(_x(d), _on(d, [0, 2]), 1.0),
    "setitem_list": lambda d: _setitem(_x(d), (slice(None), [0, 3]), 1.0),
    "add_at_tensor": lambda d: _add_at(_x(d), (_on(d, [1]), _on(d, [-4])), 1.0),
    "cross_entropy": lambda d: F.cross_entropy(_x(d), _on(d, [1, 3])),
    "cross_entropy_negative": lambda d: F.cross_entropy(_x(d), _on(d, [-1, 0])),
    "cross_entropy_host_target": lambda d: F.cross_entropy(_x(d), [1, 3]),
    "nll_loss": lambda d: F.nll_loss(_x(d), _on(d, [0, 7])),
    "nll_loss_weighted": lambda d: F.nll_loss(_x(d), _on(d, [-2, 0]),
                                              weight=vk.ones(3, device=d)),
    "multi_margin_loss": lambda d: F.multi_margin_loss(_x(d), _on(d, [0, 3])),
    "embedding_device": lambda d: nn.Embedding(4, 2, device=d)(_on(d, [1, 4])),
    "embedding_list": lambda d: nn.Embedding(4, 2, device=d)([1, 4]),
    "embedding_numpy": lambda d: nn.Embedding(4, 2, device=d)(np.array([[-5, 0]])),
    "embedding_host_tensor": lambda d: nn.Embedding(4, 2, device=d)(vk.tensor([4])),
    "embedding_padding": lambda d: nn.Embedding(4, 2, padding_idx=0, device=d)(_on(d, [0, 9])),
}


@pytest.mark.parametrize("case", BAD)
def test_index_out_of_range_raises_and_the_device_recovers(device, case):
    _expect_index_error(device, lambda: BAD[case](device))


@pytest.mark.parametrize("case, name", [
    ("take_along_axis", "take_along_axis"), ("getitem_two_tensors", "indexing"),
    ("setitem_tensor", "setitem"), ("add_at_tensor", "add_at"),
    ("cross_entropy_negative", "cross_entropy"), ("nll_loss", "nll_loss"),
    ("multi_margin_loss", "multi_margin_loss"), ("embedding_device", "embedding")])
def test_the_device_check_names_the_op(vulkan, case, name):
    _expect_index_error(vulkan, lambda: BAD[case](vulkan), f"{name}: index out of range .*"
                                                            "device-side check")


def test_a_bad_index_is_reported_at_synchronize(vulkan):
    out = _x(vulkan)[_on(vulkan, [0, 2])]
    with pytest.raises(IndexError, match="indexing"):
        vk.synchronize()
    vk.synchronize()  # nothing left pending
    np.testing.assert_array_equal(_x(vulkan)[_on(vulkan, [1])].numpy(), [[3.0, 4.0, 5.0]])


def test_in_range_indices_still_work(device):
    x = _x(device)
    ref = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(vk.take_along_axis(x, _on(device, [[2], [-3]]), 1).numpy(),
                                  [[2.0], [3.0]])
    np.testing.assert_array_equal(x[_on(device, [-1, 0]), _on(device, [-1, 2])].numpy(),
                                  ref[[-1, 0], [-1, 2]])
    np.testing.assert_array_equal(vk.take(x, _on(device, [-6, 5]), None).numpy(), [0.0, 5.0])
    y = _x(device)
    vk.add_at(y, (_on(device, [-2, -2]), _on(device, [-1, -1])), 1.0)
    np.testing.assert_array_equal(y.numpy()[0], [0.0, 1.0, 4.0])
    targets = np.array([2, -100], np.int32)  # ignore_index is not out of range
    got = F.cross_entropy(x, _on(device, targets)).item()
    logp = ref - np.log(np.exp(ref).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(got, -logp[0, 2], rtol=1e-6)
    emb = nn.Embedding(4, 2, padding_idx=-1, device=device)
    w = emb.weight.numpy()
    for indices in ([3, -4], np.array([3, -4]), vk.tensor([3, -4]), _on(device, [3, -4])):
        np.testing.assert_array_equal(emb(indices).numpy(), w[[3, -4]])


def test_a_replayed_step_with_a_bad_index_raises_at_its_wait(vulkan):
    compiled = vk.compile(lambda x, i: vk.take_along_axis(x, i, 1).sum(axis=1))
    x = _x(vulkan)
    for _ in range(2):  # records, then replays
        np.testing.assert_array_equal(compiled(x, _on(vulkan, [[2], [0]])).numpy(), [2.0, 3.0])
    with pytest.raises(IndexError, match="take_along_axis: index out of range"):
        compiled(x, _on(vulkan, [[2], [3]])).numpy()
    np.testing.assert_array_equal(compiled(x, _on(vulkan, [[1], [-1]])).numpy(), [1.0, 5.0])
    assert len(compiled._captures) == 1 and next(iter(compiled._captures.values())).replays == 3


# ---- integer overflow ----------------------------------------------------------------------------
OVERFLOW = {
    "tensor_list": lambda d: vk.tensor([2 ** 40, 5], device=d),
    "tensor_scalar": lambda d: vk.tensor(-2 ** 31 - 1, device=d),
    "tensor_int64_array": lambda d: vk.tensor(np.array([5, 2 ** 40]), device=d),
    "tensor_uint64_array": lambda d: vk.tensor(np.array([2 ** 33], np.uint64), device=d),
    "from_numpy_int64": lambda d: vk.from_numpy(np.array([2 ** 31]), device=d),
    "tensor_uint8": lambda d: vk.tensor([1, 256], dtype="uint8", device=d),
    "tensor_uint32_negative": lambda d: vk.tensor([-1], dtype="uint32", device=d),
    "full_int32": lambda d: vk.full((2,), 2 ** 40, dtype="int32", device=d),
    "full_default_dtype": lambda d: vk.full((2,), 2 ** 31, device=d),
    "full_uint8": lambda d: vk.full((2,), -1, dtype="uint8", device=d),
    "full_like": lambda d: vk.full_like(vk.zeros(2, "uint32", d), 2 ** 32),
    "arange": lambda d: vk.arange(2 ** 31 - 2, 2 ** 31 + 1, device=d),
    "setitem_scalar": lambda d: _setitem(vk.zeros(3, "int32", d), 0, 2 ** 40),
    "setitem_index_scalar": lambda d: _setitem(vk.zeros(3, "uint8", d), [0, 2], 300),
    "setitem_list": lambda d: _setitem(vk.zeros(3, "int32", d), slice(0, 2), [2 ** 40, 1]),
}


@pytest.mark.parametrize("case", OVERFLOW)
def test_integers_out_of_the_dtypes_range_raise(device, case):
    with pytest.raises(OverflowError, match="out of bounds for"):
        OVERFLOW[case](device).numpy()


def test_integers_at_the_dtypes_limits_are_kept(device):
    assert vk.tensor([2 ** 31 - 1, -2 ** 31], device=device).tolist() == [2 ** 31 - 1, -2 ** 31]
    assert vk.tensor(np.array([-2 ** 31]), device=device).dtype == vk.int32
    assert vk.tensor([2 ** 32 - 1], dtype="uint32", device=device).tolist() == [2 ** 32 - 1]
    assert vk.tensor(np.array([2 ** 32 - 1], np.uint64), device=device).tolist() == [2 ** 32 - 1]
    assert vk.full((2,), 255, dtype="uint8", device=device).tolist() == [255, 255]
    assert vk.full((1,), -2 ** 31, dtype="int32", device=device).tolist() == [-2 ** 31]
    assert vk.tensor([2 ** 40], dtype="float32", device=device).tolist() == [2.0 ** 40]
    x = vk.zeros(3, "uint32", device)
    x[1] = 2 ** 32 - 1
    assert x.tolist() == [0, 2 ** 32 - 1, 0]
    # an explicit dtype on a numpy array casts as numpy's astype does
    assert vk.tensor(np.array([257]), dtype="uint8", device=device).tolist() == [1]
