"""Long reductions need no more memory than their output and a small workspace: in a 4 MiB
Vulkan arena, reductions over a 3 MiB tensor (float32 and bfloat16, over all of it, along its rows
and down its strided columns) succeed, match numpy within their error bounds, and raise the
arena's peak use above the input by at most WORKSPACE bytes. The host runs the same cases.

The reductions run in a child process, which sets the arena's size (VKGRAD_ARENA_MB) before
vkgrad opens the device."""
import os
import subprocess
import sys
from math import isqrt
from pathlib import Path

import numpy as np

import vkgrad as vk

TESTS = Path(__file__).resolve().parent
ARENA_MB = 4
INPUT_BYTES = 3 << 20
WORKSPACE = 64 << 10  # the partials of a two-pass reduction are rows * ~sqrt(n) words
U = 2.0 ** -24        # float32's unit roundoff
FACTORS = 120         # values other than 1 in prod's input
SHAPES = [lambda n: ((n,), None, False), lambda n: ((2, n // 2), 1, True),
          lambda n: ((n // 2, 2), 0, False)]  # the last one reduces elements 2 apart
CASES = {"normal": [(op, s) for op in ("sum", "mean", "max", "argmax") for s in SHAPES],
         "scattered": [("prod", s) for s in SHAPES],
         "nan": [(op, s) for op in ("max", "argmax") for s in SHAPES[:2]],
         "bool": [(op, s) for op in ("all", "any") for s in SHAPES]}

CHILD = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import numpy as np
from test_reduce_memory import reduce_all
results, excess = reduce_all(sys.argv[1])
np.savez(sys.argv[2], excess=excess, **results)
"""


def inputs(dtype):
    """{data: array} of INPUT_BYTES each, seeded: standard normal with the maximum 8 thrice (ties
    across rows, columns and the two passes' pieces), for prod FACTORS values in [0.5, 2)
    scattered among ones (so that no partial product, in any order, leaves float32's normal
    range), the normal data with two NaNs, and for "bool" all True but one."""
    rng = np.random.default_rng(7)
    n = INPUT_BYTES // vk.dtype(dtype).itemsize
    if dtype == "bool":
        x = np.ones(n, bool)
        x[n - 7] = False
        return {"bool": x}
    np_dtype = vk.dtype(dtype).np_dtype
    normal = rng.standard_normal(n).astype(np_dtype)
    normal[[n // 3, 2 * n // 3, n - 5]] = 8
    nan = normal.copy()
    nan[[n // 4, 3 * n // 4]] = np.nan
    scattered = np.ones(n, np_dtype)
    scattered[rng.choice(n, FACTORS, replace=False)] = rng.uniform(0.5, 2, FACTORS)
    return {"normal": normal, "scattered": scattered, "nan": nan}


def cases(dtype):
    for data, x in inputs(dtype).items():
        for op, shape in CASES[data]:
            yield f"{dtype} {data} {op} {shape(x.size)}", x, op, *shape(x.size)


def reduce_all(device):
    """{case: result as float64} on `device`, and how far the arena's peak use went above the
    input (0 on the host). Each input is freed before the next is made."""
    results = {}
    for dtype in ("float32", "bfloat16", "bool"):
        for key, x, op, shape, axis, keepdims in cases(dtype):
            t = vk.tensor(x, device=device).reshape(shape)
            results[key] = getattr(t, op)(axis=axis, keepdims=keepdims).numpy().astype(np.float64)
            del t
    stats = vk.memory_stats(device)
    return results, stats["peak_bytes"] - INPUT_BYTES if stats else 0


def sum_error_bound(x, axis, keepdims):
    """|computed - exact| for a float32 sum: the depth of the device's summation (two passes, each
    ~sqrt(n) / 64 sequential additions per thread and a 64-thread tree) times U times sum |x|.
    (The host's numpy sums are pairwise along rows; down columns they are sequential, and keep
    within this bound on these seeded inputs.)"""
    n = x.size if axis is None else x.shape[axis]
    depth = 2 * ((isqrt(n) + 2) // 64 + 7)
    return depth * U * np.abs(x).sum(axis=axis, keepdims=keepdims)


def output_rounding(dtype, value):
    """Half an ulp of the result dtype at |value| (float32's is in the accumulation bound)."""
    return np.abs(value) * 2.0 ** -8 if dtype == "bfloat16" else 0.0


def test_long_reductions_fit_beside_their_input(device, tmp_path):
    out = tmp_path / "results.npz"
    env = {**os.environ, "VKGRAD_ARENA_MB": str(ARENA_MB)}
    child = subprocess.run([sys.executable, "-c", CHILD, str(device), str(out)], env=env,
                           capture_output=True, text=True, cwd=TESTS.parent)
    assert child.returncode == 0, child.stderr[-3000:]
    results = np.load(out)
    assert results["excess"] <= WORKSPACE
    for dtype in ("float32", "bfloat16", "bool"):
        for key, x, op, shape, axis, keepdims in cases(dtype):
            got, x64 = results[key], x.astype(np.float64).reshape(shape)
            if op in ("sum", "mean"):
                n = x64.size if axis is None else x64.shape[axis]
                want = x64.sum(axis=axis, keepdims=keepdims) / (n if op == "mean" else 1)
                error = sum_error_bound(x64, axis, keepdims) / (n if op == "mean" else 1)
                error += 2 * U * np.abs(want) if op == "mean" else 0  # 1/n, and the product
                error += output_rounding(dtype, np.abs(want) + error)
                assert (np.abs(got - want) <= error).all(), key
            elif op == "prod":  # products by 1 are exact: k factors round k - 1 times at most
                want = x64.prod(axis=axis, keepdims=keepdims)
                k = (x64 != 1).sum(axis=axis, keepdims=keepdims)
                error = np.abs(want) * np.expm1(k * np.log1p(U))
                error += output_rounding(dtype, np.abs(want) + error)
                assert (np.abs(got - want) <= error).all(), key
            else:  # max, argmax (the first maximum, or the first NaN), all, any: exact
                want = getattr(np, op)(x64, axis=axis, keepdims=keepdims)
                np.testing.assert_array_equal(got, want, err_msg=key)
