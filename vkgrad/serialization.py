"""Checkpoints: `save(obj, path)` and `load(path)`, one safetensors file, no pickle.

>>> import vkgrad as vk
>>> w = vk.randn(4, 3, device="vulkan")
>>> checkpoint = {"model": {"fc.weight": w, "fc.bias": vk.zeros(4)},
...               "optim": {"state": {0: {"step": vk.tensor(10), "exp_avg": w * 0.1}},
...                         "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
...               "epoch": 3, "best": float("inf"), "rng": vk.get_rng_state()}
>>> vk.save(checkpoint, "run.safetensors")
>>> back = vk.load("run.safetensors", device="vulkan")
>>> back["optim"]["param_groups"][0]["betas"], back["epoch"]
((0.9, 0.999), 3)
>>> half = vk.load("run.safetensors", dtype=vk.bfloat16)   # floating tensors cast, ints kept

What can be saved: a Tensor, or any nesting of dicts (str or int keys: optimizer state is keyed
by parameter index), lists and tuples, whose leaves are Tensors, ints, floats (inf and nan
included), strs, bools and None. `load` gives back the same structure with the same types: a
tuple stays a tuple, an int key stays an int. Anything else raises TypeError naming where it sits
("obj['optim']['state'][0]['foo']"). Deliberate limits:
  - numpy arrays are refused (wrap them with vkgrad.tensor): a checkpoint holds one array type,
    which `load` places with device= and casts with dtype=.
  - dict subclasses (OrderedDict) load as dict, and float, int and str subclasses (numpy.float64,
    IntEnum) as the plain type; list and tuple subclasses (namedtuple) are refused rather than
    silently losing their type, as are numpy scalars that are no Python number (numpy.float32).
  - tensors are saved by value: views and strided tensors save their values only, a tensor that
    appears twice is stored twice, and requires_grad and .grad are not saved.

The file: every tensor is a safetensors tensor (BF16, F32, F64, I32, U32, U8, BOOL), named by its
path of keys joined with "." ("model.fc.weight", "optim.state.0.exp_avg"; a clash gets a "#2"
suffix), so a plain state dict {name: tensor} is stored under exactly its keys and
`safetensors.torch.load_file` reads it as a torch state dict. The structure is JSON in the header's
`__metadata__["vkgrad"]`: {"version": 1, "tree": node}, where a node is null, a bool, a number, a
string, {"tensor": name}, {"list": [node...]}, {"tuple": [node...]}, {"dict": [[key, node]...]}
or {"float": "inf" | "-inf" | "nan"}. A file without that entry (written by
`safetensors.torch.save_file`, say) loads as {name: Tensor}; its float16 becomes float32 and its
8/16/64-bit integers int32 (uint64 uint32), an out-of-range value being an error.

Saving is atomic: the data goes to a temporary `.<name>.<host>.<pid>.<random>.tmp` beside the
target, is fsynced, and replaces the target with os.replace (then the directory is fsynced). An
exception (a full disk, Ctrl-C) removes the temporary file and leaves the previous checkpoint
untouched. A process killed outright (SIGKILL, power loss) cannot clean up: the previous
checkpoint is still intact, and its temporary file remains until the next save of the same
target, which removes the temporaries of that target whose writer is gone: those named with this
host's name and the pid of no live process. A live writer's temporary (that pid exists, if
perhaps reused by another process) is never touched, nor another host's on a shared filesystem,
nor any other file. (Writers on one host in different pid namespaces, such as containers that
share a hostname and a directory, would see each other as dead: give them distinct hostnames.)
"""
import contextlib
import errno
import json
import os
import re
import secrets
import socket
import struct
from math import isfinite

import numpy as np
from safetensors import SafetensorError, safe_open

from . import dtypes
from .device import device as as_device
from .tensor import Tensor, from_numpy

FORMAT_VERSION = 1
_SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float64": "F64", "int32": "I32",
                       "uint32": "U32", "uint8": "U8", "bool": "BOOL"}
_RESERVED_NAMES = ("", "__metadata__")  # not usable as safetensors tensor names


def save(obj, path):
    """Write `obj` (a Tensor, or dicts, lists and tuples of Tensors and Python scalars) to the
    safetensors file `path`, atomically: the previous file stays whole until the new one is."""
    path = os.fspath(path)
    tensors = {}  # name -> Tensor, in file order
    tree = _encode(obj, "obj", (), tensors, set())
    _write_atomically(path, _chunks(tree, tensors))


def load(path, device=None, dtype=None):
    """The object that `save` wrote to `path`, its tensors on `device` (default: the default
    device, vkgrad.default_device(), as for new tensors) and, where floating, cast to `dtype`
    (rounding to nearest even into bf16); integer and bool tensors keep their dtype. Nothing is
    returned unless the whole file is valid: a bad file raises ValueError naming it, and the
    tensor or place in the structure where relevant.

    `dtype=` casts *every* floating tensor, optimizer state included (Adam's step counter and
    f32 moments would lose precision in bf16). To move a training checkpoint to another dtype,
    load without `dtype=` and let `model.load_state_dict` cast the weights: optimizer state
    then stays float32 as the optimizers keep it."""
    path = os.fspath(path)
    device = as_device(device)
    if dtype is not None:
        dtype = dtypes.dtype(dtype)
        if not dtype.is_floating:
            raise TypeError(f"load casts floating tensors only; dtype must be floating, "
                            f"not {dtype.name}")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    try:
        file = safe_open(path, framework="numpy")
    except SafetensorError as e:
        raise ValueError(f"cannot load {path}: not a valid safetensors file ({e})") from None
    with file:
        return _Loader(path, file, device, dtype).load()


# ---- saving --------------------------------------------------------------------------------------
def _encode(value, where, keys, tensors, open_containers):
    """The JSON node for `value` (at `where`, reached by `keys`); records tensors by name."""
    if isinstance(value, Tensor):
        name = _tensor_name(keys, tensors)
        tensors[name] = value
        return {"tensor": name}
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        value = float(value)
        return value if isfinite(value) else {"float": repr(value)}  # "inf", "-inf", "nan"
    if isinstance(value, dict) or type(value) in (list, tuple):
        if id(value) in open_containers:
            raise ValueError(f"cannot save {where}: it contains itself")
        open_containers.add(id(value))
        if isinstance(value, dict):
            node = {"dict": [[_key(k, where), _encode(v, f"{where}[{k!r}]", keys + (k,), tensors,
                                                      open_containers)]
                             for k, v in value.items()]}
        else:
            node = {type(value).__name__: [_encode(v, f"{where}[{i}]", keys + (i,), tensors,
                                                   open_containers)
                                           for i, v in enumerate(value)]}
        open_containers.discard(id(value))
        return node
    if isinstance(value, np.ndarray):
        raise TypeError(f"cannot save {where}: a numpy array; checkpoints hold vkgrad Tensors, "
                        "wrap it with vkgrad.tensor(...)")
    if isinstance(value, np.generic):
        raise TypeError(f"cannot save {where}: a numpy {type(value).__name__}; use .item() for "
                        "the Python scalar")
    raise TypeError(f"cannot save {where}: {type(value).__name__} is not a Tensor, dict, list, "
                    "tuple, int, float, str, bool or None")


def _key(key, where):
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"cannot save {where}: its key {key!r} is a {type(key).__name__}; "
                        "checkpoint dict keys are str or int")
    return str(key) if isinstance(key, str) else int(key)


def _tensor_name(keys, taken):
    base = ".".join(str(k) for k in keys) or "tensor"
    base = base.encode("utf-8", "backslashreplace").decode()  # lone surrogates are not UTF-8
    name, n = base, 1
    while name in taken or name in _RESERVED_NAMES:
        n += 1
        name = f"{base}#{n}"
    return name


def _chunks(tree, tensors):
    """The file's bytes in pieces: the header, then each tensor's values as they are read back
    (one tensor at a time, so a device checkpoint never sits whole in host memory)."""
    entries, offset = {}, 0
    for name, t in tensors.items():
        nbytes = t.size * t.dtype.itemsize
        entries[name] = {"dtype": _SAFETENSORS_DTYPES[t.dtype.name], "shape": list(t.shape),
                         "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    structure = json.dumps({"version": FORMAT_VERSION, "tree": tree}, allow_nan=False,
                           separators=(",", ":"))
    header = json.dumps({"__metadata__": {"vkgrad": structure}, **entries},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the tensor data starts 8-byte aligned
    yield struct.pack("<Q", len(header)) + header
    for t in tensors.values():
        yield np.ascontiguousarray(t.numpy()).reshape(-1).view(np.uint8)


def _write_atomically(path, chunks):
    target = os.path.realpath(path)  # through a symlink, replace the file it points to
    directory, name = os.path.split(target)
    host = socket.gethostname()
    temporary = os.path.join(directory,
                             f".{name}.{host}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:  # mode 0o666 less the umask, as open() gives
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"cannot save: directory {directory} does not "
                                "exist", path) from None
    try:
        _remove_dead_writers_temporaries(directory, name, host)
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(e, OSError):
            e.add_note(f"while saving {path}: the previous file there, if any, is unchanged")
        raise
    # Make the rename itself durable. Some systems cannot sync a directory; the file is in place.
    with contextlib.suppress(OSError):
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)


def _remove_dead_writers_temporaries(directory, name, host):
    """Delete the temporaries `_write_atomically` made for `directory/name` on `host` whose
    writer's pid is of no live process (a killed save's leftovers), as far as the directory lets
    us: cleaning up never fails a save. The file name fixes the target, host and pid exactly, as
    the pid and random parts hold no dot."""
    own = re.compile(rf"\.{re.escape(name)}\.{re.escape(host)}\.([0-9]{{1,9}})"
                     r"\.[0-9a-f]{12}\.tmp")
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            match = own.fullmatch(entry.name)
            if match and not _process_exists(int(match[1])):
                with contextlib.suppress(OSError):  # gone already, or not ours to remove
                    os.unlink(entry.path)


def _process_exists(pid):
    """Whether a process `pid` exists on this host (a zombie counts); outside POSIX, where
    os.kill would signal it, every pid is taken to exist."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)  # signal 0 checks only that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


def _write_all(fd, data):
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


# ---- loading -------------------------------------------------------------------------------------
class _Loader:
    """Rebuilds the saved structure from an open safetensors file, checking it as it goes."""

    def __init__(self, path, file, device, dtype):
        self.path, self.file, self.device, self.dtype = path, file, device, dtype
        self.names, self.used = set(file.keys()), set()

    def error(self, message):
        return ValueError(f"cannot load {self.path}: {message}")

    def load(self):
        tree = self.tree()
        try:
            obj = self.decode(tree, "obj")
        except RecursionError:
            raise self.error("its structure is nested too deeply") from None
        unused = sorted(self.names - self.used)
        if unused:
            raise self.error(f"tensors {unused} are in the file but not in its vkgrad metadata")
        return obj

    def tree(self):
        """The saved structure, or {name: tensor} for a file that has no vkgrad metadata."""
        text = (self.file.metadata() or {}).get("vkgrad")
        if text is None:
            return {"dict": [[name, {"tensor": name}] for name in self.file.keys()]}
        try:
            saved = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise self.error(f"its __metadata__['vkgrad'] is not valid JSON ({e})") from None
        if not isinstance(saved, dict) or "tree" not in saved:
            raise self.error("its __metadata__['vkgrad'] has no structure tree")
        if saved.get("version") != FORMAT_VERSION:
            raise self.error(f"vkgrad checkpoint format version {saved.get('version')!r}; this "
                             f"vkgrad reads version {FORMAT_VERSION}")
        return saved["tree"]

    def decode(self, node, where):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        tag, value = next(iter(node.items())) if isinstance(node, dict) and len(node) == 1 \
            else (None, None)
        if tag == "tensor" and isinstance(value, str):
            return self.tensor(value, where)
        if tag in ("list", "tuple") and isinstance(value, list):
            items = [self.decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return items if tag == "list" else tuple(items)
        if tag == "dict" and isinstance(value, list) and all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], (str, int))
                and not isinstance(p[0], bool) for p in value):
            if len({k for k, _ in value}) != len(value):
                raise self.error(f"the dict at {where} repeats a key")
            return {k: self.decode(v, f"{where}[{k!r}]") for k, v in value}
        if tag == "float" and value in ("inf", "-inf", "nan"):
            return float(value)
        raise self.error(f"malformed vkgrad metadata at {where}: {json.dumps(node)[:100]}")

    def tensor(self, name, where):
        if name not in self.names:
            raise self.error(f"its metadata puts tensor {name!r} at {where}, but the file has "
                             "no such tensor")
        if name in self.used:
            raise self.error(f"its metadata uses tensor {name!r} twice (again at {where})")
        self.used.add(name)
        try:
            array = self.file.get_tensor(name)
        except (SafetensorError, TypeError, ValueError) as e:
            raise self.error(f"cannot read tensor {name!r} ({e})") from None
        try:
            stored = dtypes.dtype(array.dtype)  # float16 -> float32, int64 -> int32, ...
        except TypeError:
            raise self.error(f"tensor {name!r} has dtype {array.dtype}, which vkgrad does not "
                             "hold") from None
        if stored.kind in "iu" and array.size and array.dtype.itemsize > stored.itemsize:
            info = np.iinfo(stored.np_dtype)
            if array.min() < info.min or array.max() > info.max:
                raise self.error(f"tensor {name!r} ({array.dtype}) has values outside "
                                 f"{stored.name}'s range [{info.min}, {info.max}]")
        target = self.dtype if self.dtype is not None and stored.is_floating else stored
        try:
            return from_numpy(array, device=self.device, dtype=target)
        except TypeError as e:
            raise TypeError(f"cannot load tensor {name!r} of {self.path}: {e}") from None
