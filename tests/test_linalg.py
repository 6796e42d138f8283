"""matmul, dot, outer, einsum beyond tests/test_ops.py: accuracy against float64 as K grows,
views read in place, packed outputs, the tile loop, dtype rules and the errors a user sees."""
import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk
from vkgrad.backend import vulkan as vulkan_backend

BF16 = ml_dtypes.bfloat16

# matmul.comp has a DIRECT path (CPU devices) and a tiled one (GPUs); each Vulkan device runs
# both here, whichever it would pick, so lavapipe checks the GPU path too.
_VULKAN_PATHS = [pytest.param((d, path), id=f"{d}-{path}", marks=pytest.mark.vulkan)
                 for d in vk.devices() if d.kind == "vulkan" for path in ("direct", "tiled")]
_HOST = [pytest.param((d, None), id=str(d)) for d in vk.devices() if d.kind != "vulkan"]


def _on_path(request, monkeypatch):
    device, path = request.param
    if path:
        monkeypatch.setattr(device.backend, "is_cpu", path == "direct")
    return device


@pytest.fixture(params=_HOST + _VULKAN_PATHS)
def matmul_device(request, monkeypatch):
    return _on_path(request, monkeypatch)


@pytest.fixture(params=_VULKAN_PATHS)
def matmul_vulkan(request, monkeypatch):
    return _on_path(request, monkeypatch)


def _inputs(rng, shape, dtype):
    return rng.standard_normal(shape).astype(np.dtype(dtype) if dtype != "bfloat16" else BF16)


def _check_against_float64(got, a, b, k, dtype):
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    # f32 accumulation error grows like sqrt(K); bf16 adds one rounding of the result.
    tol = (2e-6 if dtype == "float32" else 8e-3) * max(1.0, np.sqrt(k))
    scale = np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))
    assert np.all(np.abs(got.astype(np.float64) - expected) <= tol * scale + 1e-30)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("m,k,n", [(130, 300, 257), (3, 1000, 5), (1, 17, 1), (129, 1, 2),
                                   (6, 4608, 25)])
def test_accuracy_scales_with_k(matmul_device, rng, dtype, m, k, n):
    """Long K on few outputs (the last two: split into chunks summed by a reduction)."""
    a, b = _inputs(rng, (m, k), dtype), _inputs(rng, (k, n), dtype)
    got = vk.tensor(a, device=matmul_device) @ vk.tensor(b, device=matmul_device)
    assert got.dtype is vk.dtype(dtype) and got.shape == (m, n)
    _check_against_float64(got.numpy(), a, b, k, dtype)


def test_host_and_vulkan_agree(vulkan, rng):
    for dtype in ("float32", "bfloat16"):
        a, b = _inputs(rng, (2, 37, 45), dtype), _inputs(rng, (45, 19), dtype)
        host = vk.matmul(vk.tensor(a), vk.tensor(b)).numpy().astype(np.float64)
        dev = vk.matmul(vk.tensor(a, device=vulkan), vk.tensor(b, device=vulkan)).numpy()
        np.testing.assert_allclose(dev.astype(np.float64), host, rtol=1e-5 if dtype == "float32"
                                   else 8e-3, atol=1e-5 if dtype == "float32" else 8e-3)


def test_views_are_read_in_place(matmul_vulkan, rng):
    """Transposed, sliced and broadcast operands cost one dispatch: no copies."""
    vulkan = matmul_vulkan
    a = rng.standard_normal((6, 40, 30)).astype(np.float32)
    b = rng.standard_normal((50, 45)).astype(np.float32)
    ta, tb = vk.tensor(a, device=vulkan), vk.tensor(b, device=vulkan)
    vk.synchronize()
    vk.reset_stats()
    got = ta[::2, ::-1, 1:].swapaxes(-1, -2) @ tb.T[3:43, ::2]
    assert vk.stats()["dispatches"] == 1
    expected = a[::2, ::-1, 1:].swapaxes(-1, -2) @ b.T[3:43, ::2]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape_a,shape_b", [((3, 7, 5), (5, 9)), ((5, 3), (3, 1)),
                                             ((2, 3, 6), (6, 6))])
def test_packed_bf16_output_with_odd_rows(matmul_device, rng, shape_a, shape_b):
    """Odd N puts two output rows in one word: neither half may be lost."""
    a, b = _inputs(rng, shape_a, "bfloat16"), _inputs(rng, shape_b, "bfloat16")
    got = (vk.tensor(a, device=matmul_device) @ vk.tensor(b, device=matmul_device)).numpy()
    expected = np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(BF16)
    np.testing.assert_array_equal(got.astype(np.float32), expected.astype(np.float32))


def test_more_tiles_than_workgroups(matmul_vulkan, rng, monkeypatch):
    """With the grid capped below the tile count, each workgroup loops over several tiles."""
    monkeypatch.setattr(vulkan_backend, "MAX_GROUPS", 3)
    a = rng.standard_normal((2, 300, 20)).astype(np.float32)
    b = rng.standard_normal((2, 20, 140)).astype(np.float32)
    got = vk.tensor(a, device=matmul_vulkan) @ vk.tensor(b, device=matmul_vulkan)
    np.testing.assert_allclose(got.numpy(), a @ b, rtol=1e-5, atol=1e-5)


def test_result_dtypes(device, rng):
    f = vk.tensor(rng.standard_normal((3, 4)).astype(np.float32), device=device)
    h = f.astype(vk.bfloat16)
    i = vk.tensor(rng.integers(-50, 50, (4, 2)).astype(np.int32), device=device)
    assert (f @ h.T).dtype is vk.float32
    assert (h @ h.T).dtype is vk.bfloat16
    mixed = f @ i
    assert mixed.dtype is vk.float32
    np.testing.assert_allclose(mixed.numpy(), f.numpy() @ i.numpy(), rtol=1e-5, atol=1e-4)


def test_integer_and_bool_matmul_are_exact(matmul_device, rng):
    device = matmul_device
    a = rng.integers(-1000, 1000, (9, 31)).astype(np.int32)
    b = rng.integers(-100, 100, (31, 7)).astype(np.int32)
    got = vk.tensor(a, device=device) @ vk.tensor(b, device=device)
    assert got.dtype is vk.int32
    np.testing.assert_array_equal(got.numpy(), a @ b)
    p, q = rng.random((5, 6)) > 0.7, rng.random((6, 3)) > 0.7
    got = vk.tensor(p, device=device) @ vk.tensor(q, device=device)
    assert got.dtype is vk.bool
    np.testing.assert_array_equal(got.numpy(), p @ q)
    u = rng.integers(0, 255, (4, 9)).astype(np.uint8)
    v = rng.integers(0, 255, (9, 6)).astype(np.uint8)
    got = vk.tensor(u, device=device) @ vk.tensor(v, device=device)  # wraps mod 256, as numpy
    assert got.dtype is vk.uint8
    np.testing.assert_array_equal(got.numpy(), u @ v)


def test_methods_and_functions(device, rng):
    a = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((5, 3)).astype(np.float32)
    ta, tb = vk.tensor(a, device=device), vk.tensor(b, device=device)
    for got in (ta @ tb, ta.matmul(tb), vk.matmul(ta, tb), ta.dot(tb), vk.dot(ta, tb),
                vk.einsum("ij,jk->ik", ta, tb), vk.einsum("ij,jk", ta, tb)):
        np.testing.assert_allclose(got.numpy(), a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vk.outer(ta, tb).numpy(), np.outer(a, b), rtol=1e-6)
    assert (ta[0] @ ta[1]).shape == ()


@pytest.mark.parametrize("subscripts,sa,sb", [
    ("bhqd,bhkd->bhqk", (2, 3, 5, 8), (2, 3, 7, 8)),
    ("bhqk,bhkd->bhqd", (2, 3, 5, 7), (2, 3, 7, 8)),
    ("ik,jk", (4, 6), (5, 6)), ("abc,cd->dba", (2, 3, 4), (4, 5)), ("ij,kl->ijkl", (2, 3), (4, 5)),
    ("ij,ij->", (3, 4), (3, 4)), ("bi,bi->b", (6, 5), (6, 5)), ("ij,jk->", (3, 4), (4, 5))])
def test_einsum_contractions(device, rng, subscripts, sa, sb):
    a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    got = vk.einsum(subscripts, vk.tensor(a, device=device), vk.tensor(b, device=device))
    expected = np.einsum(subscripts, a.astype(np.float64), b.astype(np.float64))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_shape_errors_name_both_shapes(device):
    a, b = vk.ones((3, 4), device=device), vk.ones((5, 6), device=device)
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 6\)"):
        a @ b
    with pytest.raises(ValueError, match=r"\(2, 3, 4\) and \(3, 4, 2\)"):
        vk.ones((2, 3, 4), device=device) @ vk.ones((3, 4, 2), device=device)
    with pytest.raises(ValueError, match=r"\(\) and \(3, 4\)"):
        vk.ones((), device=device) @ a
    with pytest.raises(ValueError, match=r"dot: shapes \(3, 4\) and \(5, 6\)"):
        vk.dot(a, b)
    with pytest.raises(ValueError, match=r"\(5,\) and \(3, 4\)"):
        vk.ones(5, device=device) @ a


def test_operand_type_and_device_errors(device, vulkan):
    t = vk.ones((2, 2), device=device)
    with pytest.raises(TypeError, match="ndarray"):
        t @ np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match="ndarray"):
        np.ones((2, 2), np.float32) @ t
    with pytest.raises(TypeError, match="list"):
        vk.einsum("ij,jk", t, [[1.0]])
    other = vk.ones((2, 2), device="host" if device.kind != "host" else vulkan)
    with pytest.raises(ValueError, match="different devices"):
        t @ other


@pytest.mark.parametrize("subscripts,operands,message", [
    ("ij,jk,kl->il", 2, "3 operand.*2 were given"), ("ij->ji", 2, "1 operand"),
    ("ij", 0, "at least one operand"), ("i.j,jk", 2, "characters other than"),
    ("...i...j,jk", 2, "more than one ellipsis"), ("ij,jk->ki.", 2, "characters other than"),
    ("jj,jk->k", 2, "'j' is 3 and 4 long"), ("ij,jk", 3, "2 operand.*3 were given"),
    ("ijk,jk->ik", 2, "3 subscripts"), ("ij,jk->iz", 2, "output subscripts"),
    ("ij,jk->ii", 2, "output subscripts"), ("ij,ik->jk", 2, "'i' is 3 and 4 long")])
def test_einsum_errors(device, subscripts, operands, message):
    a, b = vk.ones((3, 4), device=device), vk.ones((4, 5), device=device)
    with pytest.raises(ValueError, match=message):
        vk.einsum(subscripts, *[a, b, b][:operands])
