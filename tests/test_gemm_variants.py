"""Every matmul.comp variant on every operand layout, whatever the device would pick.

The variant is forced through the op's documented hook, `apply(MATMUL, a, b, variant=name)`
(vkgrad/ops/linalg.py), so lavapipe runs each GPU tile too. Layouts: NN, NT (x @ W.T), TN
(weight gradients: X.T @ G), TT, and operands with no unit stride; each read as aligned vectors
(start and other strides multiples of 4 elements) and unaligned (a word at a time). Sizes are
awkward (1, 15, 17, 127, 129, 1000; odd bf16 lengths; empty K and M). Results are compared with
numpy in float64 within the float32 accumulation bound: |C - C64| <= K 2^-24 (|A| @ |B|) for
float32 (each of the K products and K - 1 additions rounds once), plus the one rounding of the
result for bf16 (tests/conftest.py assert_op_close); integers exactly.
"""
import ml_dtypes
import numpy as np
import pytest

import vkgrad as vk
from vkgrad import kernels
from vkgrad.backend import vulkan as vulkan_backend
from vkgrad.backend.vulkan import SPIRV_DIR, spirv_needs
from vkgrad.ops import linalg
from vkgrad.ops.linalg import DIRECT, MATMUL, _gemm_config, _operand_layout, _variant
from vkgrad.ops.registry import apply

from conftest import assert_op_close

pytestmark = pytest.mark.vulkan
VARIANTS = [*kernels.MATMUL_TILES, DIRECT]
CODES = kernels.MATMUL_LAYOUT
BF16 = ml_dtypes.bfloat16

# layout -> (how A is stored, how B is stored): "row" = read along its rows' unit stride (A: K,
# B: N), "col" = stored transposed (A: M, B: K contiguous), "strided" = no unit stride
LAYOUTS = {"NN": ("row", "row"), "NT": ("row", "col"), "TN": ("col", "row"),
           "TT": ("col", "col"), "strided": ("strided", "strided")}
SHAPES = [(1, 1, 1), (15, 17, 129), (127, 15, 17), (129, 129, 127), (1000, 17, 15),
          (17, 1000, 1), (1, 127, 1000), (5, 0, 7), (0, 5, 7)]


@pytest.fixture
def backend(vulkan):
    return vulkan.backend


def _stored(rng, device, rows, cols, how, aligned, dtype):
    """(values, tensor view) of a rows x cols operand whose contiguous axis is cols ("row"), or
    rows ("col": a transposed view), or none ("strided": every other element of a row). Aligned:
    starts at element 0 and rows of whole 4-element vectors; else starts at element 1. The
    storage around the view holds NaN (floats) or 2^20 (ints): a read outside it shows."""
    values = rng.standard_normal((rows, cols)) if dtype != "int32" else \
        rng.integers(-20, 21, (rows, cols))
    values = values.astype(BF16 if dtype == "bfloat16" else np.dtype(dtype))
    off, fill = (0 if aligned else 1), (2 ** 20 if dtype == "int32" else np.nan)
    if how == "strided":
        store = np.full((rows, 2 * cols + off), fill, values.dtype)
        store[:, off::2][:, :cols] = values
        return values, vk.tensor(store, device=device)[:, off::2][:, :cols]
    inner, outer = (cols, rows) if how == "row" else (rows, cols)
    width = -(-inner // 4) * 4 + off
    store = np.full((outer, width), fill, values.dtype)
    store[:, off:off + inner] = values if how == "row" else values.T
    view = vk.tensor(store, device=device)[:, off:off + inner]
    return values, view if how == "row" else view.T


def _check(got, a, b, dtype):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expected, scale = a64 @ b64, np.abs(a64) @ np.abs(b64)
    k = a.shape[-1]
    if dtype == "int32":
        np.testing.assert_array_equal(got, expected.astype(np.int64))
    elif dtype == "bfloat16":
        assert_op_close(got, expected, "bfloat16", k, scale, "bf16 gemm")
    else:
        bad = ~(np.abs(got.astype(np.float64) - expected) <= k * 2.0 ** -24 * scale)  # NaN too
        assert not bad.any(), f"{bad.sum()} of {bad.size} outside the f32 accumulation bound"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
def test_every_variant_layout_and_size(vulkan, rng, variant, layout, aligned):
    how_a, how_b = LAYOUTS[layout]
    for m, k, n in SHAPES:
        a, ta = _stored(rng, vulkan, m, k, how_a, aligned, "float32")
        b, tb = _stored(rng, vulkan, k, n, how_b, aligned, "float32")
        got = apply(MATMUL, ta, tb, variant=variant)
        assert got.shape == (m, n)
        _check(got.numpy(), a, b, "float32")


def _layout_codes(how, aligned, first):
    axis = {"row": "AXIS_K" if first else "AXIS_MN", "col": "AXIS_MN" if first else "AXIS_K",
            "strided": "AXIS_K" if first else "AXIS_MN"}[how]
    load = "LOAD_STRIDED" if how == "strided" else "LOAD_ALIGNED" if aligned else "LOAD_CONTIG"
    return CODES[axis], CODES[load]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
def test_each_layout_is_read_along_its_contiguous_axis(rng, vulkan, layout, aligned):
    """The operands built above get the layout codes the tests mean them to exercise."""
    how_a, how_b = LAYOUTS[layout]
    m, k, n = 15, 17, 129
    _, ta = _stored(rng, vulkan, m, k, how_a, aligned, "float32")
    _, tb = _stored(rng, vulkan, k, n, how_b, aligned, "float32")
    da, db = ta._data, tb._data
    assert _operand_layout(m, k, *da.strides, da.start, ()) == _layout_codes(how_a, aligned, True)
    assert _operand_layout(n, k, db.strides[1], db.strides[0], db.start, ()) == \
        _layout_codes(how_b, aligned, False)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", ["NN", "NT", "TN"])
def test_bf16_packed_operands_with_odd_lengths(vulkan, rng, variant, layout):
    """bf16 pairs share words: odd K, M and N, aligned (uvec2 of 4 elements) and not."""
    how_a, how_b = LAYOUTS[layout]
    for (m, k, n), aligned in [((15, 17, 129), True), ((15, 17, 129), False),
                               ((127, 33, 3), True), ((1, 129, 17), False)]:
        a, ta = _stored(rng, vulkan, m, k, how_a, aligned, "bfloat16")
        b, tb = _stored(rng, vulkan, k, n, how_b, aligned, "bfloat16")
        got = apply(MATMUL, ta, tb, variant=variant)
        assert got.dtype is vk.bfloat16
        _check(got.numpy(), a, b, "bfloat16")


@pytest.mark.parametrize("variant", VARIANTS)
def test_int32_mixed_and_narrow_dtypes(vulkan, rng, variant):
    """int32 exactly (within 2^24); f32 @ bf16; uint8 and bool (four to a word, wrapping as
    numpy does)."""
    for aligned in (True, False):
        a, ta = _stored(rng, vulkan, 33, 40, "row", aligned, "int32")
        b, tb = _stored(rng, vulkan, 40, 9, "row", aligned, "int32")
        got = apply(MATMUL, ta, tb, variant=variant)
        assert got.dtype is vk.int32
        _check(got.numpy(), a, b, "int32")
    a, ta = _stored(rng, vulkan, 17, 33, "row", True, "float32")
    b, tb = _stored(rng, vulkan, 33, 15, "col", True, "bfloat16")
    _check(apply(MATMUL, ta, tb, variant=variant).numpy(), a, b.astype(np.float32), "float32")
    u = rng.integers(0, 255, (9, 36)).astype(np.uint8)
    v = rng.integers(0, 255, (36, 8)).astype(np.uint8)
    for x, y in [(u, v), (u[:, 1:], v[1:])]:  # aligned words of four, and not
        got = apply(MATMUL, vk.tensor(x, device=vulkan), vk.tensor(y, device=vulkan),
                    variant=variant)
        np.testing.assert_array_equal(got.numpy(), x @ y)
    p, q = rng.random((5, 12)) > 0.7, rng.random((12, 4)) > 0.7
    got = apply(MATMUL, vk.tensor(p, device=vulkan), vk.tensor(q, device=vulkan),
                variant=variant)
    np.testing.assert_array_equal(got.numpy(), p @ q)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_and_broadcast(vulkan, backend, rng, variant):
    """Batch dims (broadcast ones with stride 0; more than MAXB that cannot merge), W.T."""
    a = rng.standard_normal((3, 1, 17, 20)).astype(np.float32)
    w = rng.standard_normal((2, 15, 20)).astype(np.float32)
    ta, tw = vk.tensor(a, device=vulkan), vk.tensor(w, device=vulkan)
    got = apply(MATMUL, ta, tw.swapaxes(-1, -2), variant=variant)
    _check(got.numpy(), a, w.swapaxes(-1, -2), "float32")
    x = rng.standard_normal((2, 1, 3, 1, 5, 8)).astype(np.float32)
    y = rng.standard_normal((1, 4, 1, 2, 8, 6)).astype(np.float32)
    got = apply(MATMUL, vk.tensor(x, device=vulkan), vk.tensor(y, device=vulkan),
                variant=variant)
    _check(got.numpy(), x, y, "float32")


@pytest.mark.parametrize("variant", VARIANTS)
def test_nan_and_inf_propagate(vulkan, backend, rng, variant):
    """A NaN or inf term makes its row's results NaN or inf as in numpy; padding beyond the
    edges (zeros) adds none."""
    a = rng.standard_normal((19, 21)).astype(np.float32)
    b = rng.standard_normal((21, 23)).astype(np.float32)
    a[3, 5], a[7, 20], b[0, 22] = np.nan, np.inf, -np.inf
    got = apply(MATMUL, vk.tensor(a, device=vulkan), vk.tensor(b, device=vulkan),
                variant=variant).numpy()
    with np.errstate(invalid="ignore"):
        expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(expected)],
                                  expected[~finite & ~np.isnan(expected)])
    assert np.allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("variant", [*kernels.MATMUL_TILES])
def test_more_tiles_than_workgroups(vulkan, backend, rng, monkeypatch, variant):
    """With the grid capped below the tile count, each workgroup loops over several tiles."""
    monkeypatch.setattr(vulkan_backend, "MAX_GROUPS", 3)
    a = rng.standard_normal((2, 300, 20)).astype(np.float32)
    b = rng.standard_normal((2, 20, 140)).astype(np.float32)
    got = apply(MATMUL, vk.tensor(a, device=vulkan), vk.tensor(b, device=vulkan),
                variant=variant)
    _check(got.numpy(), a, b, "float32")


# ---- sizes chosen from the device's limits ---------------------------------------------------
def _limits(monkeypatch, backend, **info):
    monkeypatch.setattr(backend, "_limit_errors", {})  # fits() caches per spec, not per limit
    for key, value in info.items():
        monkeypatch.setitem(backend.info, key, value)


def test_shared_memory_of_each_tile_read_from_its_spirv(backend):
    """Every tile's sizes as the SPIR-V declares them: BK rows of BM + PAD and BN + PAD floats,
    WG threads, within the device's limits."""
    spirv = (SPIRV_DIR / kernels.spirv_name("matmul", "")).read_bytes()
    for tile, (bm, bn, _, _) in kernels.MATMUL_TILES.items():
        c = _gemm_config(backend, tile)
        wg, bk, tm, tn, warp, warp_n = (c[k] for k in ("WG", "BK", "TM", "TN", "WARP", "WARP_N"))
        assert (c["BM"], c["BN"]) == (bm, bn) and wg == (bm // tm) * (bn // tn)
        shared = 4 * bk * (bm + bn + 2 * kernels.MATMUL_PAD)
        spec = kernels.LAYOUTS["matmul"].spec(OUT_DT=0, A_DT=0, B_DT=0, WG=wg, BM=bm, BN=bn, BK=bk)
        assert spirv_needs(spirv, spec) == (shared, (wg, 1, 1))
        assert shared <= backend.info["max_compute_shared_memory_size"]
        assert wg <= backend.info["max_work_group_invocations"]
        assert warp <= backend.info["subgroup_size"] and warp % warp_n == 0


def test_vulkans_least_limits_fit_16_kib_and_128_invocations(vulkan, backend, monkeypatch, rng):
    """On a device with only what Vulkan guarantees every tile is sized within it (128 x 128
    with 8-deep K slices, or not at all), and the chosen ones still compute right."""
    _limits(monkeypatch, backend, max_compute_shared_memory_size=16384)
    config = {t: _gemm_config(backend, t) for t in kernels.MATMUL_TILES}
    assert config["128x128"]["BK"] == 8 and config["64x64"]["BK"] == 16  # 8,448, 8,704 bytes
    assert all(4 * c["BK"] * (c["BM"] + c["BN"] + 2 * kernels.MATMUL_PAD) <= 16384
               for c in config.values())
    _limits(monkeypatch, backend, max_work_group_invocations=128)
    config = {t: _gemm_config(backend, t) for t in kernels.MATMUL_TILES}
    assert config["128x128"] is None  # 8 x 8 per thread is the most: 256 threads
    assert [config["64x64"][k] for k in ("WG", "TM", "TN")] == [128, 8, 4]
    assert config["32x64"]["WG"] == 128 and config["flat"]["WG"] == 128
    a = rng.standard_normal((70, 45)).astype(np.float32)
    b = rng.standard_normal((45, 33)).astype(np.float32)
    for tile, c in config.items():
        if c is not None:
            got = apply(MATMUL, vk.tensor(a, device=vulkan), vk.tensor(b, device=vulkan),
                        variant=tile)
            _check(got.numpy(), a, b, "float32")
    with pytest.raises(RuntimeError, match="tile 128x128 does not fit"):
        apply(MATMUL, vk.tensor(a, device=vulkan), vk.tensor(b, device=vulkan),
              variant="128x128")


@pytest.mark.parametrize("subgroup", [1, 8, 16, 32, 64])
def test_warp_tiles_for_other_subgroup_sizes(vulkan, backend, monkeypatch, rng, subgroup):
    """Warp tiles laid out for a device's subgroup size (NVIDIA 32, AMD 64, Intel 8-32) give
    the same products on any device: only barriers order the lanes."""
    _limits(monkeypatch, backend, subgroup_size=subgroup)
    a = rng.standard_normal((130, 37)).astype(np.float32)
    b = rng.standard_normal((37, 140)).astype(np.float32)
    for tile in kernels.MATMUL_TILES:
        config = _gemm_config(backend, tile)
        assert config["WARP"] == min(subgroup, config["WG"])
        got = apply(MATMUL, vk.tensor(a, device=vulkan), vk.tensor(b, device=vulkan),
                    variant=tile)
        _check(got.numpy(), a, b, "float32")


def test_chooser_picks_tiles_that_fit_and_fails_clearly(vulkan, backend, monkeypatch):
    monkeypatch.setattr(backend, "is_cpu", False)  # as a GPU would choose
    _limits(monkeypatch, backend)
    assert _variant(backend, 16, 256, 64) == "flat"     # no padding at all
    assert _variant(backend, 256, 16, 64) == "tall"
    assert _variant(backend, 512, 512, 512) == "64x64"  # 64 workgroups rather than 16
    assert _variant(backend, 4096, 4096, 64) == "128x128"
    _limits(monkeypatch, backend, max_compute_shared_memory_size=4096)
    assert _gemm_config(backend, "64x64") is None       # 4,352 bytes at its shallowest
    assert _variant(backend, 16, 256, 64) == "32x64"    # 3,328 bytes
    _limits(monkeypatch, backend, max_compute_shared_memory_size=2048)
    with pytest.raises(RuntimeError, match=r"no GEMM tile .* fits .* 2048 bytes of shared"):
        _variant(backend, 16, 256, 64)
    with pytest.raises(ValueError, match="no variant 'huge'"):
        apply(MATMUL, vk.ones((2, 2), device=vulkan), vk.ones((2, 2), device=vulkan),
              variant="huge")


def test_cpu_devices_keep_direct_below_the_measured_size(backend, monkeypatch):
    monkeypatch.setattr(backend, "is_cpu", True)
    n = linalg.CPU_TILED_MIN
    assert _variant(backend, 6, 25, 57600) == DIRECT  # LeNet5's first convolution
    assert _variant(backend, n, n, n - 1) == DIRECT
    assert _variant(backend, n, n, n) != DIRECT


# ---- operands in different arena chunks ---------------------------------------------------------
CHUNKS_CHILD = f"""
import sys
sys.path.insert(0, {str(__import__("pathlib").Path(__file__).resolve().parent)!r})
import numpy as np
import vkgrad as vk
from test_gemm_variants import VARIANTS, _check
from vkgrad.ops.linalg import MATMUL
from vkgrad.ops.registry import apply
rng = np.random.default_rng(5)
device = vk.device(sys.argv[1])
for dtype in ("float32", "bfloat16"):
    a = rng.standard_normal((300, 460)).astype(np.float32)
    b = rng.standard_normal((460, 300)).astype(np.float32)
    ta, tb = (vk.tensor(x, dtype, device) for x in (a, b))  # each in a 1 MiB chunk of its own
    assert ta._data.start.chunk != tb._data.start.chunk
    a, b = ta.numpy().astype(np.float32), tb.numpy().astype(np.float32)
    for variant in VARIANTS:
        for x, y, ra, rb in [(ta, tb, a, b), (ta[:, 1:], tb[1:], a[:, 1:], b[1:]),
                             (tb.T, ta.T, b.T, a.T)]:  # aligned, a word at a time, TT
            _check(apply(MATMUL, x, y, variant=variant).numpy(), ra, rb, dtype)
print("ok")
"""


def test_every_variant_with_operands_in_different_chunks(vulkan):
    """Vector loads pick each operand's chunk from the slot bits of its start: A, B and C in
    three 1 MiB chunks (a child process, VKGRAD_ARENA_CHUNK_MB read when the device opens)."""
    import os
    import subprocess
    import sys
    child = subprocess.run([sys.executable, "-c", CHUNKS_CHILD, str(vulkan)], text=True,
                           capture_output=True, env={**os.environ, "VKGRAD_ARENA_CHUNK_MB": "1"})
    assert child.returncode == 0 and child.stdout.strip() == "ok", child.stderr[-3000:]
