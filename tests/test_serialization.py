"""Checkpoints: vkgrad.save / vkgrad.load round trips, device and dtype on load, torch interop
through safetensors, atomic saves (SIGKILL mid-save, a full disk), and every kind of bad file."""
import collections
import errno
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

import vkgrad as vk
from conftest import DEVICES, _device_params

REPO = Path(__file__).resolve().parent.parent
DEVICE_DTYPES = ["float32", "bfloat16", "int32", "uint32", "uint8", "bool"]


def random_array(rng, shape, dtype):
    dtype = vk.dtype(dtype)
    if dtype.is_floating:
        return rng.standard_normal(shape).astype(dtype.np_dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype.np_dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype.np_dtype)


def assert_same(got, want, where="obj"):
    """Equal structure, types (tuple is not list, int is not float) and bit-equal tensors."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, vk.Tensor):
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        a, b = got.numpy(), want.numpy()
        assert a.tobytes() == np.ascontiguousarray(b).tobytes(), where
    elif isinstance(want, dict):
        assert [(type(k), k) for k in got] == [(type(k), k) for k in want], where
        for k in want:
            assert_same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), where
    else:
        assert got == want and repr(got) == repr(want), where  # repr tells 0.0 from -0.0


def checkpoint(device, rng):
    """A training checkpoint in the shape the issue names, plus every dtype and awkward case."""
    w = vk.tensor(random_array(rng, (5, 3), "float32"), device=device)
    tensors = {d: vk.tensor(random_array(rng, (7,), d), device=device) for d in DEVICE_DTYPES}
    if device.kind == "host":
        tensors["float64"] = vk.tensor(random_array(rng, (2, 2), "float64"))
    special = vk.tensor(np.float32([np.inf, -np.inf, np.nan, -0.0, 1e-40]), device=device)
    return {
        "model": {"fc.weight": w, "fc.bias": vk.tensor(random_array(rng, (5,), "bfloat16"),
                                                      device=device)},
        "optim": {"state": {0: {"step": vk.tensor(7, device=device), "exp_avg": w * 0.5},
                            1: {"step": vk.tensor(7, device=device), "exp_avg": w.T}},
                  "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1],
                                    "nesterov": False, "name": None}]},
        "epoch": 3,
        "rng": vk.get_rng_state(),
        "dtypes": tensors,
        "views": [w.T, w[::2, 1:], w[1], tensors["uint8"][1::3], tensors["bfloat16"][1:],
                  vk.tensor(random_array(rng, (), "float32"), device=device),
                  vk.zeros((0, 4), device=device)],
        "special": special,
        "scalars": (float("inf"), float("-inf"), float("nan"), -0.0, 1e300, 2 ** 64 - 1, -5,
                    "ünïcode ✓", "", True, None, [], {}, ()),
        "keys": {0: "int", "0": "str", -1: "negative", "": "empty", "__metadata__": "reserved"},
        "clash": {0: w[0], "0": w[1], "__metadata__": w[2], "": w[3], "ü✓": w[4],
                  "\ud800": w[0]},  # a lone surrogate: not UTF-8, so not a tensor name
    }


def test_round_trip_every_type(device, rng, tmp_path):
    obj = checkpoint(device, rng)
    vk.save(obj, tmp_path / "ckpt.safetensors")
    back = vk.load(tmp_path / "ckpt.safetensors", device=device)
    assert_same(back, obj)
    assert all(t.device == device for t in back["dtypes"].values())
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]


def test_a_single_tensor_and_nested_names(device, rng, tmp_path):
    x = vk.tensor(random_array(rng, (3, 4), "bfloat16"), device=device)
    vk.save(x, tmp_path / "x.safetensors")
    assert_same(vk.load(tmp_path / "x.safetensors", device=device), x)
    vk.save({"a": {"b": [x, (x,)]}, "a.b.0": x}, tmp_path / "n.safetensors")
    names = safetensors.numpy.load_file(tmp_path / "n.safetensors").keys()
    assert sorted(names) == ["a.b.0", "a.b.0#2", "a.b.1.0"]


@pytest.mark.parametrize("target", _device_params(DEVICES))
def test_load_places_tensors_on_device(device, target, rng, tmp_path):
    """Saved on one device, loaded on another, values bit-equal; default: the default device."""
    obj = {d: vk.tensor(random_array(rng, (3, 5), d), device=device) for d in DEVICE_DTYPES}
    vk.save(obj, tmp_path / "c.safetensors")
    back = vk.load(tmp_path / "c.safetensors", device=target)
    assert all(t.device == target for t in back.values())
    assert_same(back, obj)
    assert all(t.device == vk.default_device()
               for t in vk.load(tmp_path / "c.safetensors").values())


def test_load_casts_floating_tensors(device, rng, tmp_path):
    a32 = random_array(rng, (4, 33), "float32")
    a16 = random_array(rng, (9,), "bfloat16")
    ints = random_array(rng, (6,), "int32")
    vk.save({"f32": vk.tensor(a32, device=device), "bf16": vk.tensor(a16, device=device),
             "i": vk.tensor(ints, device=device), "n": 2}, tmp_path / "c.safetensors")
    down = vk.load(tmp_path / "c.safetensors", device=device, dtype=vk.bfloat16)
    assert down["f32"].dtype is vk.bfloat16 and down["f32"].device == device
    assert down["f32"].numpy().tobytes() == a32.astype(ml_dtypes.bfloat16).tobytes()  # RNE
    assert down["bf16"].numpy().tobytes() == a16.tobytes()
    assert down["i"].dtype is vk.int32 and (down["i"].numpy() == ints).all()
    up = vk.load(tmp_path / "c.safetensors", device=device, dtype="float32")
    assert up["bf16"].dtype is vk.float32 and (up["bf16"].numpy() == a16.astype(np.float32)).all()
    assert up["f32"].numpy().tobytes() == a32.tobytes() and up["n"] == 2
    with pytest.raises(TypeError, match="int32"):
        vk.load(tmp_path / "c.safetensors", dtype=vk.int32)


def test_float64_cannot_be_loaded_onto_vulkan(vulkan, tmp_path):
    vk.save({"x": vk.tensor(np.arange(3.0), dtype=vk.float64)}, tmp_path / "c.safetensors")
    with pytest.raises(TypeError, match=r"'x'.*c\.safetensors.*float64"):
        vk.load(tmp_path / "c.safetensors", device=vulkan)
    assert vk.load(tmp_path / "c.safetensors", device=vulkan, dtype="float32")["x"].tolist() == \
        [0.0, 1.0, 2.0]


def test_rng_state_restores_in_a_new_process(device, tmp_path):
    before = vk.get_rng_state()
    try:
        vk.manual_seed(2 ** 63 + 12345)  # a seed that does not fit 32 or 63 bits
        vk.rand(5, device=device)
        vk.save({"rng": vk.get_rng_state()}, tmp_path / "rng.safetensors")
        expected = vk.rand(7, device=device).numpy()
    finally:
        vk.set_rng_state(before)
    code = ("import sys, vkgrad as vk; vk.set_rng_state(vk.load(sys.argv[1])['rng']); "
            "sys.stdout.write(vk.rand(7, device=sys.argv[2]).numpy().tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "rng.safetensors"),
                          str(device)], capture_output=True, text=True, check=True, cwd=REPO)
    assert bytes.fromhex(out.stdout) == expected.tobytes()


# ---- torch interop through safetensors -----------------------------------------------------------
def test_a_state_dict_loads_into_torch(device, rng, tmp_path):
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(),
                                      torch.nn.Linear(4, 2))
    state = collections.OrderedDict(
        (name, vk.tensor(random_array(rng, tuple(p.shape), "float32"), device=device))
        for name, p in torch_model.state_dict().items())
    vk.save(state, tmp_path / "model.safetensors")
    loaded = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert sorted(loaded) == sorted(state)  # tensor names are exactly the state dict keys
    torch_model.load_state_dict(loaded)
    for name, p in torch_model.state_dict().items():
        assert (p.numpy() == state[name].numpy()).all()
    assert type(vk.load(tmp_path / "model.safetensors")) is dict  # OrderedDict loads as dict

    vk.save({"w": state["0.weight"].astype(vk.bfloat16)}, tmp_path / "bf16.safetensors")
    w = safetensors.torch.load_file(tmp_path / "bf16.safetensors")["w"]
    assert w.dtype == torch.bfloat16
    assert (w.float().numpy() == state["0.weight"].astype(vk.bfloat16).numpy()).all()


def test_a_torch_safetensors_file_loads(device, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model(torch.randn(8, 3))  # BatchNorm's running stats and num_batches_tracked (int64) move
    state = dict(model.state_dict())
    state.update(half=torch.randn(3).half(), bf=torch.randn(5).bfloat16(),
                 mask=torch.tensor([True, False]), bytes=torch.arange(4, dtype=torch.uint8))
    safetensors.torch.save_file(state, tmp_path / "torch.safetensors")
    back = vk.load(tmp_path / "torch.safetensors", device=device)
    assert sorted(back) == sorted(state)
    expected = {"half": vk.float32, "bf": vk.bfloat16, "mask": vk.bool, "bytes": vk.uint8,
                "1.num_batches_tracked": vk.int32}
    for name, t in state.items():
        assert back[name].dtype is expected.get(name, vk.float32), name
        assert back[name].device == device
        want = t.float().numpy() if t.is_floating_point() else t.numpy()
        assert (back[name].numpy().astype(want.dtype) == want).all(), name

    safetensors.torch.save_file({"big": torch.tensor([2 ** 40])}, tmp_path / "i64.safetensors")
    with pytest.raises(ValueError, match=r"i64\.safetensors.*'big'.*int32"):
        vk.load(tmp_path / "i64.safetensors")


# ---- atomic saves --------------------------------------------------------------------------------
KILLED_WRITER = """
import sys, numpy as np, vkgrad as vk
big = {"w": vk.tensor(np.full(8_000_000, 2.0, np.float32)), "step": 2}  # 32 MB
while True:
    vk.save(big, sys.argv[1])
"""


def test_sigkill_during_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    vk.save({"w": vk.tensor(np.full(8_000_000, 1.0, np.float32)), "step": 1}, path)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in tmp_path.glob(".ckpt.safetensors.*.tmp")
                      if p.exists()):
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.0005)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    back = vk.load(path)
    assert back["step"] in (1, 2)  # the old file, or a later one that was complete
    assert (back["w"].numpy() == back["step"]).all()
    # What a killed save leaves behind is at most its own hidden temporary file.
    assert all(p == path or p.name.startswith(".ckpt.safetensors.") and p.suffix == ".tmp"
               for p in tmp_path.iterdir())
    vk.save({"step": 3}, path)  # and removes the killed writer's temporary
    assert vk.load(path) == {"step": 3} and os.listdir(tmp_path) == ["ckpt.safetensors"]


BLOCKED_WRITER = """
import sys, time, numpy as np, vkgrad as vk
from vkgrad import serialization
write_all = serialization._write_all

def write_then_block(fd, data):  # a save that stops mid-write, where the test kills it
    write_all(fd, data)
    print("writing", flush=True)
    time.sleep(600)

serialization._write_all = write_then_block
vk.save({"w": vk.tensor(np.ones(1000, np.float32), device="host")}, sys.argv[1])
"""


def test_a_save_removes_what_killed_saves_of_its_target_left(tmp_path):
    path, other = tmp_path / "ckpt.safetensors", tmp_path / "ckpt.safetensors.old"
    targets = {"killed": path, "killed too": path, "live": path, "other target": other}
    writers = {role: subprocess.Popen([sys.executable, "-c", BLOCKED_WRITER, str(target)],
                                      cwd=REPO, stdout=subprocess.PIPE, text=True)
               for role, target in targets.items()}
    try:
        for writer in writers.values():
            assert writer.stdout.readline() == "writing\n", "the writer never wrote"
        for role in ("killed", "killed too", "other target"):
            writers[role].kill()
            writers[role].wait()  # reaped: its pid is of no process now
        host = socket.gethostname()
        temporary = {role: next(tmp_path.glob(f".{targets[role].name}.{host}.{w.pid}.*.tmp"))
                     for role, w in writers.items()}
        dead_pid = writers["killed"].pid
        elsewhere = tmp_path / f".ckpt.safetensors.not-{host}.{dead_pid}.0123456789ab.tmp"
        elsewhere.write_bytes(b"another host's writer, maybe alive")

        vk.save({"step": 1}, path)
        assert vk.load(path) == {"step": 1}
        kept = {path, temporary["live"], temporary["other target"], elsewhere}
        assert set(tmp_path.iterdir()) == kept  # the dead writers' temporaries are gone
        writers["live"].kill()
        writers["live"].wait()
        vk.save({"step": 2}, path)
        assert set(tmp_path.iterdir()) == kept - {temporary["live"]}
        assert vk.load(path) == {"step": 2}
    finally:
        for writer in writers.values():
            writer.kill()
            writer.wait()
            writer.stdout.close()


def test_full_disk_keeps_the_previous_checkpoint(monkeypatch, rng, tmp_path):
    path = tmp_path / "ckpt.safetensors"
    old = {"w": vk.tensor(random_array(rng, (100,), "float32")), "epoch": 1}
    vk.save(old, path)
    real_write, written = os.write, []

    def write_until_full(fd, data):
        if sum(written) > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(real_write(fd, data[:600]))  # short writes, as a nearly full disk gives
        return written[-1]

    monkeypatch.setattr(os, "write", write_until_full)
    with pytest.raises(OSError) as failure:
        vk.save({"w": vk.tensor(random_array(rng, (1000,), "float32")), "epoch": 2}, path)
    monkeypatch.undo()
    assert failure.value.errno == errno.ENOSPC and str(path) in failure.value.__notes__[0]
    assert_same(vk.load(path), old)
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # the temporary file is gone


def test_save_through_a_symlink_and_file_mode(tmp_path):
    (tmp_path / "real").mkdir()
    link = tmp_path / "latest.safetensors"
    link.symlink_to(tmp_path / "real" / "c.safetensors")
    vk.save({"epoch": 1}, link)
    assert link.is_symlink() and vk.load(tmp_path / "real" / "c.safetensors") == {"epoch": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "real" / "c.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_into_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        vk.save({"a": 1}, tmp_path / "nowhere" / "c.safetensors")


# ---- what cannot be saved ------------------------------------------------------------------------
class Opaque:
    pass


@pytest.mark.parametrize("value,message", [
    ({1, 2}, "set"),
    (np.zeros(3), "numpy array"),
    (np.float32(1.0), "numpy float32"),
    (Opaque(), "Opaque"),
    (vk.Generator(1), "Generator"),
    (collections.namedtuple("Pair", "a b")(1, 2), "Pair"),
    (b"bytes", "bytes"),
])
def test_unsupported_values_name_their_place(value, message, tmp_path):
    path = tmp_path / "c.safetensors"
    vk.save({"epoch": 1}, path)
    obj = {"optim": {"state": {0: {"step": vk.tensor(1), "foo": value}}}}
    with pytest.raises(TypeError, match=r"obj\['optim'\]\['state'\]\[0\]\['foo'\].*" + message):
        vk.save(obj, path)
    assert vk.load(path) == {"epoch": 1} and os.listdir(tmp_path) == ["c.safetensors"]


def test_unsupported_keys_and_cycles(tmp_path):
    with pytest.raises(TypeError, match=r"obj\['a'\].*\(1, 2\).*str or int"):
        vk.save({"a": {(1, 2): 3}}, tmp_path / "c.safetensors")
    with pytest.raises(TypeError, match=r"obj\[0\].*True"):
        vk.save([{True: 1}], tmp_path / "c.safetensors")
    loop = [1]
    loop.append({"x": loop})
    with pytest.raises(ValueError, match=r"obj\[1\]\['x'\].*contains itself"):
        vk.save(loop, tmp_path / "c.safetensors")
    assert os.listdir(tmp_path) == []


# ---- bad files -----------------------------------------------------------------------------------
def write_safetensors(path, tensors, vkgrad_metadata=None):
    """A safetensors file with hand-made vkgrad metadata (a str is used as it is)."""
    metadata = None
    if vkgrad_metadata is not None:
        metadata = {"vkgrad": vkgrad_metadata if isinstance(vkgrad_metadata, str)
                    else json.dumps(vkgrad_metadata)}
    safetensors.numpy.save_file(tensors, path, metadata=metadata)
    return path


def good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    vk.save({"w": vk.tensor(np.arange(64, dtype=np.float32)), "epoch": 1}, path)
    return path


@pytest.mark.parametrize("corrupt", [
    lambda raw: raw[:len(raw) - 5],                                   # truncated data
    lambda raw: raw[:20],                                             # truncated header
    lambda raw: b"",                                                  # empty
    lambda raw: np.random.default_rng(0).bytes(4096),                 # random bytes
    lambda raw: b'{"epoch": 1, "w": [0, 1, 2]}',                      # JSON, not safetensors
    lambda raw: struct.pack("<Q", 10) + b"not json!!",                # a header that is not JSON
    lambda raw: raw + b"\0" * 16,                                     # trailing bytes
], ids=["truncated", "truncated-header", "empty", "random", "json", "bad-header", "trailing"])
def test_corrupt_files(corrupt, tmp_path):
    path = good_file(tmp_path)
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ValueError, match=r"good\.safetensors"):
        vk.load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        vk.load(tmp_path / "absent.safetensors")
    with pytest.raises(IsADirectoryError):
        vk.load(tmp_path)


W = {"w": np.arange(3, dtype=np.float32)}


@pytest.mark.parametrize("tensors,metadata,message", [
    (W, {"version": 1, "tree": {"dict": [["w", {"tensor": "v"}]]}},
     r"'v' at obj\['w'\].*no such tensor"),
    ({**W, "extra": np.ones(2, np.float32)}, {"version": 1, "tree": {"tensor": "w"}},
     r"\['extra'\].*not in its vkgrad metadata"),
    (W, {"version": 1, "tree": {"list": [{"tensor": "w"}, {"tensor": "w"}]}},
     r"'w' twice.*obj\[1\]"),
    (W, {"version": 1, "tree": {"list": [{"tensor": "w"}, {"set": [1]}]}},
     r"malformed.*obj\[1\]"),
    (W, {"version": 1, "tree": {"dict": [["w", {"tensor": "w"}], [["k"], 1]]}}, "malformed"),
    (W, {"version": 1, "tree": {"dict": [["w", {"tensor": "w"}], ["w", 1]]}}, "repeats a key"),
    (W, {"version": 1, "tree": {"list": [{"tensor": "w"}, {"float": "big"}]}}, r"obj\[1\]"),
    (W, {"version": 2, "tree": {"tensor": "w"}}, "version 2"),
    (W, {"tree_missing": 1}, "no structure tree"),
    (W, '{"version": 1, "tree": ', r"__metadata__\['vkgrad'\] is not valid JSON"),
    (W, "[" * 100000, r"__metadata__\['vkgrad'\]"),
])
def test_metadata_that_does_not_match(tensors, metadata, message, tmp_path):
    path = write_safetensors(tmp_path / "bad.safetensors", tensors, metadata)
    with pytest.raises(ValueError, match=r"bad\.safetensors.*" + message):
        vk.load(path)


def test_unsupported_foreign_dtype(tmp_path):
    path = tmp_path / "c64.safetensors"
    safetensors.torch.save_file({"z": torch.zeros(2, dtype=torch.complex64)}, path)
    with pytest.raises(ValueError, match=r"c64\.safetensors.*'z'"):
        vk.load(path)
