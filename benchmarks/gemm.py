"""Matrix multiply throughput: vkgrad against numpy and torch, f32 and bf16, in GFLOP/s.

    .venv/bin/python benchmarks/gemm.py                         # every device, f32 and bf16
    .venv/bin/python benchmarks/gemm.py --devices vulkan --dtypes f32 --sizes 512 1024
    .venv/bin/python benchmarks/gemm.py --quick

Problems: square N x N @ N x N (--sizes, default 256 512 1024 2048) and the matmuls one
LeNet5 training step at batch 100 performs (convolutions as matmuls over batch-innermost
columns, 57,600 = 100 x 24 x 24 and 6,400 = 100 x 8 x 8 output positions; linear layers), all
with contiguous row-major operands. Each problem runs on vkgrad's devices (the host: numpy; each
Vulkan device), numpy (f32 only: numpy has no bf16 matmul kernel) and torch (CPU; CUDA when
present) on the same inputs (rounded to bf16 first for bf16, so every side multiplies the same
numbers). The result stays on its device; a timed run ends when the device is done.

Agreement: every result is checked against a float64 product of the same inputs, as the largest
|C - C_ref| / (|A| @ |B|) (the error relative to the size of the terms summed); above 1e-4 (f32)
or 1e-2 (bf16: the output is rounded to 8 bits) it prints FAIL and exits with status 1.
Variants: a second table per dtype times every matmul.comp variant each Vulkan device can run
(the GEMM tiles of vkgrad.kernels.MATMUL_TILES that fit it, and DIRECT), forced through the op's
`variant=` hook, on square problems (--variant-sizes, default the two largest --sizes) in three
operand layouts: NN (A @ B), NT (A @ W.T, W stored N x K: a linear layer's forward) and TN
(X.T @ G, X stored K x M: a weight gradient), next to torch on the same layouts (CUDA where
torch has it, else the CPU). Where the
device's peak float32 rate is known (PEAK_F32, or --peak), each cell gives its fraction too;
"picked" names the variant vkgrad chooses for the problem.

Timing: as benchmarks/lenet5.py (--warmup, up to --repeats, a row stops after --budget seconds
but runs at least 3 times); the median gives GFLOP/s = 2 M K N / time. Writes markdown tables
per dtype, gemm.json and gemm.png (GFLOP/s per problem) into --out.
"""
import argparse
import json
import pathlib
import sys

import ml_dtypes
import numpy as np
import torch

import vkgrad as vk
from vkgrad import kernels
from vkgrad.ops.linalg import DIRECT, MATMUL, _gemm_config, _variant
from vkgrad.ops.registry import apply

from harness import describe, device_label, machine, median, select_devices, timed, torch_devices

# (name, M, K, N) of the matmuls in a LeNet5 training step at batch 100
LENET = [("conv1 fwd", 6, 25, 57600), ("conv2 fwd", 16, 150, 6400),
         ("conv1 dW", 6, 57600, 25), ("conv2 dW", 16, 6400, 150),
         ("conv2 dcols", 150, 16, 6400),
         ("fc1 fwd", 100, 256, 128), ("fc2 fwd", 100, 128, 84), ("fc3 fwd", 100, 84, 10),
         ("fc1 dX", 100, 128, 256), ("fc1 dW", 128, 100, 256)]
TOL = {"f32": 1e-4, "bf16": 1e-2}
LAYOUTS = ("NN", "NT", "TN")
# Peak float32 rates in GFLOP/s (an FMA counts 2; CUDA cores, no tensor cores) from the vendors'
# data sheets, by a piece of the device's name. bf16 products compute in float32: the same peak.
PEAK_F32 = {"H200": 66900, "H100 80GB HBM3": 66900, "H100 PCIe": 51200, "A100": 19500,
            "RTX 4090": 82580, "RTX 3090": 35580}
DTYPES = {"f32": (vk.float32, torch.float32), "bf16": (vk.bfloat16, torch.bfloat16)}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", nargs="+", default=None,
                   help="vkgrad devices: host, vulkan, vulkan:N (default: all)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="square sizes N (default 256 512 1024 2048)")
    p.add_argument("--no-lenet", action="store_true", help="only the square problems")
    p.add_argument("--variant-sizes", type=int, nargs="*", default=None,
                   help="square sizes of the variant table (default: the two largest --sizes; "
                        "none: no variant table)")
    p.add_argument("--peak", type=float, default=None,
                   help="the Vulkan devices' peak float32 GFLOP/s, where PEAK_F32 lacks it")
    p.add_argument("--repeats", type=int, default=None, help="most timed runs per cell (20)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed runs after which a cell stops (2)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: sizes 256 512, 3 timed runs (explicit options win)")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/benchmarks"))
    args = p.parse_args(argv)
    defaults = ([256, 512], 3, 0.0) if args.quick else ([256, 512, 1024, 2048], 20, 2.0)
    for name, value in zip(("sizes", "repeats", "budget"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.variant_sizes is None:
        args.variant_sizes = sorted(args.sizes)[-2:]
    return args


def problems(args):
    square = [(f"{n}x{n}x{n}", n, n, n) for n in args.sizes]
    return square + ([] if args.no_lenet else LENET)


def reference(a, b):
    """(a @ b in float64, |a| @ |b|: the size of the terms summed, never 0 here)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return a @ b, np.abs(a) @ np.abs(b)


def error(got, ref, scale):
    """Largest |got - ref| relative to `scale` (reference's second result)."""
    return float(np.max(np.abs(got.astype(np.float64) - ref) / np.maximum(scale, 1e-30)))


def main(argv=None):
    args = parse(argv)
    devices = select_devices(args.devices)
    about = machine()
    print(describe(about), flush=True)
    timing = dict(repeats=args.repeats, warmup=args.warmup, budget=args.budget)
    rng = np.random.default_rng(0)
    results, failures = [], []
    for dt in args.dtypes:
        vk_dtype, torch_dtype = DTYPES[dt]
        for name, m, k, n in problems(args):
            a = rng.standard_normal((m, k)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            if dt == "bf16":   # every side multiplies the same bf16 values
                a, b = (x.astype(ml_dtypes.bfloat16).astype(np.float32) for x in (a, b))
            ref, scale = reference(a, b)
            entry = {"problem": name, "dtype": dt, "m": m, "k": k, "n": n, "gflops": {},
                     "median_ms": {}, "runs": {}, "error": {}}

            def measure(label, fn, finish, to_numpy):
                err = error(to_numpy(fn()), ref, scale)
                times = timed(fn, finish, **timing)
                entry["gflops"][label] = 2 * m * k * n / median(times) / 1e9
                entry["median_ms"][label] = median(times) * 1e3
                entry["runs"][label] = len(times)
                entry["error"][label] = err
                if not err <= TOL[dt]:   # NaN fails too
                    failures.append(f"{dt} {name} {label}: error {err:.3g} > {TOL[dt]:g}")

            if dt == "f32":
                measure("numpy", lambda: a @ b, lambda: None, np.asarray)
            for label, tdev, sync in torch_devices():
                ta, tb = (torch.from_numpy(x).to(device=tdev, dtype=torch_dtype) for x in (a, b))
                measure(label, lambda: ta @ tb, sync, lambda t: t.float().cpu().numpy())
            for d in devices:
                va, vb = (vk.tensor(x, device=d, dtype=vk_dtype) for x in (a, b))
                measure(device_label(d), lambda: va @ vb, vk.synchronize,
                        lambda t: t.numpy().astype(np.float32))
            results.append(entry)
            print(f"  {dt} {name} ({m}x{k} @ {k}x{n}): " + ", ".join(
                f"{label} {g:.2f} GFLOP/s" for label, g in entry["gflops"].items()), flush=True)
    vk_devices = [d for d in devices if d.kind == "vulkan"]
    variants = measure_variants(args, vk_devices, rng, timing, failures) if vk_devices else []

    print()
    for dt in args.dtypes:
        print(format_table([e for e in results if e["dtype"] == dt], dt) + "\n")
        if variants:
            print(format_variants([e for e in variants if e["dtype"] == dt], dt,
                                  peaks(args, vk_devices)) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gemm.json"
    path.write_text(json.dumps({"machine": about, "options": {k: v for k, v in vars(args).items()
                                                              if k != "out"},
                                "results": results, "variants": variants,
                                "peaks": peaks(args, vk_devices), "failures": failures},
                               indent=1, default=str))
    plot(results, args.out / "gemm.png")
    print(f"wrote {path} and {args.out / 'gemm.png'}")
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        sys.exit(1)
    print("OK: every result agrees with the float64 product")


def device_variants(d):
    """The matmul.comp variants device d can run: the GEMM tiles that fit it, then DIRECT."""
    return [t for t in kernels.MATMUL_TILES if _gemm_config(d.backend, t) is not None] + [DIRECT]


def peaks(args, devices):
    """{"vulkan:N": peak float32 GFLOP/s} for the Vulkan devices whose peak is known."""
    out = {}
    for d in devices:
        name = d.info()["name"]
        peak = args.peak or next((v for key, v in PEAK_F32.items() if key in name), None)
        if peak:
            out[str(d)] = peak
    return out


def laid_out(x, transposed, to):
    """x (rows x cols) as `to` makes it from a contiguous array: stored as is, or stored
    transposed (cols x rows, contiguous) and viewed back as rows x cols."""
    return to(x) if not transposed else to(np.ascontiguousarray(x.T)).T


def measure_variants(args, devices, rng, timing, failures):
    """Per dtype, square size and layout: GFLOP/s of torch (on CUDA where torch has it, else on
    the CPU) and of every variant of each device."""
    out = []
    for dt in args.dtypes:
        vk_dtype, torch_dtype = DTYPES[dt]
        for size in args.variant_sizes:
            a = rng.standard_normal((size, size)).astype(np.float32)
            b = rng.standard_normal((size, size)).astype(np.float32)
            if dt == "bf16":
                a, b = (x.astype(ml_dtypes.bfloat16).astype(np.float32) for x in (a, b))
            ref, scale = reference(a, b)
            for lay in LAYOUTS:
                entry = {"problem": f"{size}x{size}x{size}", "dtype": dt, "layout": lay,
                         "size": size, "gflops": {}, "picked": {}}
                ta, tb = lay == "TN", lay == "NT"

                def measure(label, fn, finish, to_numpy):
                    err = error(to_numpy(fn()), ref, scale)
                    seconds = median(timed(fn, finish, **timing))
                    entry["gflops"][label] = 2 * size ** 3 / seconds / 1e9
                    if not err <= TOL[dt]:
                        failures.append(f"{dt} {size}^3 {lay} {label}: error {err:.3g} > "
                                        f"{TOL[dt]:g}")

                for label, tdev, sync in torch_devices()[-1:]:  # CUDA where present
                    to = lambda x: torch.from_numpy(x).to(device=tdev, dtype=torch_dtype)
                    xa, xb = laid_out(a, ta, to), laid_out(b, tb, to)
                    measure(label, lambda: xa @ xb, sync, lambda t: t.float().cpu().numpy())
                for d in devices:
                    to = lambda x: vk.tensor(x, device=d, dtype=vk_dtype)
                    va, vb = laid_out(a, ta, to), laid_out(b, tb, to)
                    entry["picked"][str(d)] = _variant(d.backend, size, size, size)
                    for v in device_variants(d):
                        measure(f"{d} {v}", lambda: apply(MATMUL, va, vb, variant=v),
                                vk.synchronize, lambda t: t.numpy().astype(np.float32))
                out.append(entry)
                print(f"  {dt} {size}^3 {lay}: " + ", ".join(
                    f"{label} {g:.2f}" for label, g in entry["gflops"].items()) + " GFLOP/s",
                    flush=True)
    return out


def format_variants(entries, dt, peak):
    """One row per problem and layout, one column per variant (and torch): GFLOP/s, and the
    fraction of the device's peak where it is known."""
    labels = list(dict.fromkeys(label for e in entries for label in e["gflops"]))
    picked = list(dict.fromkeys(label for e in entries for label in e["picked"]))

    def cell(label, g):
        device = next((p for p in peak if label.startswith(p + " ")), None)
        return f"{g:.2f}" + (f" ({g / peak[device]:.1%})" if device else "")
    known = "; ".join(f"{label}: peak {g:,.0f} GFLOP/s" for label, g in peak.items())
    lines = [f"{dt} matmul by variant and layout, GFLOP/s (median; columns: torch, then vkgrad "
             "on vulkan:N with each variant"
             + (f"; in brackets the fraction of the peak, {known}" if peak else "") + ")", "",
             "| problem | layout | " + " | ".join(labels)
             + "".join(f" | {p} picks" for p in picked) + " |",
             "|---|---|" + "---|" * (len(labels) + len(picked))]
    for e in entries:
        cells = [cell(label, e["gflops"][label]) if label in e["gflops"] else "—"
                 for label in labels]
        lines.append(f"| {e['problem']} | {e['layout']} | " + " | ".join(cells)
                     + "".join(f" | {e['picked'].get(p, '—')}" for p in picked) + " |")
    return "\n".join(lines)


def format_table(entries, dt):
    labels = list(dict.fromkeys(label for e in entries for label in e["gflops"]))
    lines = [f"{dt} matmul, GFLOP/s (median; higher is faster)", "",
             "| problem | M x K @ K x N | " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for e in entries:
        cells = [f"{e['gflops'][label]:.2f}" if label in e["gflops"] else "—" for label in labels]
        lines.append(f"| {e['problem']} | {e['m']}x{e['k']} @ {e['k']}x{e['n']} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dtypes = list(dict.fromkeys(e["dtype"] for e in results))
    every = list(dict.fromkeys(label for e in results for label in e["gflops"]))
    colors = dict(zip(every, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2))
    fig, axes = plt.subplots(len(dtypes), 1, figsize=(12, 3.8 * len(dtypes)), squeeze=False)
    for ax, dt in zip(axes[:, 0], dtypes):
        entries = [e for e in results if e["dtype"] == dt]
        labels = list(dict.fromkeys(label for e in entries for label in e["gflops"]))
        width = 0.8 / len(labels)
        for i, label in enumerate(labels):
            ax.bar([j + i * width for j in range(len(entries))],
                   [e["gflops"].get(label, 0) for e in entries], width, label=label,
                   color=colors[label], hatch="//" if "vkgrad" in label else None)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(entries))],
                      [e["problem"] for e in entries], rotation=30, ha="right", fontsize=8)
        ax.set(title=f"{dt} matmul", ylabel="GFLOP/s", yscale="log")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # clear of the bars
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
