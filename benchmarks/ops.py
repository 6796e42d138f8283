"""Op benchmark: NxN elementwise ops, reductions, transpose-copy, matmul and their backward
passes, vkgrad vs torch.

    .venv/bin/python benchmarks/ops.py [--sizes 64 128 ...] [--grad-sizes 64 ...] [--repeats 20]
        [--budget 2] [--ops add matmul ...] [--out build/benchmarks]

For each op and N, every vkgrad device (host, each Vulkan device) and torch (CPU; CUDA when
present) run the same computation on the same data. "<op> fwd+bwd" rows time the forward op and
the gradient of sum(<op>(a[, b])) with respect to its inputs (vk.grad against
torch.autograd.grad) on NxN inputs, N from --grad-sizes. Results (outputs or gradients) are
checked to agree with torch before anything is timed; that first call is also vkgrad's warm-up
(torch gets one more). Then up to --repeats timed runs, each ending when the device has
finished (vkgrad.synchronize / cuda.synchronize), stopping early once --budget seconds have
passed (at least one run): the median is reported. Prints a markdown table (ratio = time /
torch cpu time, so < 1 means faster than torch), matmul GFLOP/s against numpy, and writes
ops.json and ops.png (time against N, one panel per op) into --out.
"""
import argparse
import json
import pathlib
from collections import namedtuple

import numpy as np
import torch

import vkgrad as vk

from harness import describe, device_label, machine, median, timed, torch_devices

Bench = namedtuple("Bench", "vk torch flops numpy grad", defaults=(None, None, False))


def fwd_bwd(f, arity):
    """The gradients of sum(f(a, b)) with respect to its first `arity` inputs, in vkgrad and in
    torch: the forward op, its backward, and the backward of sum."""
    return Bench(lambda a, b: vk.grad(f(a, b).sum(), [a, b][:arity]),
                 lambda a, b: torch.autograd.grad(f(a, b).sum(), [a, b][:arity]), grad=True)


OPS = {
    "add": Bench(lambda a, b: a + b, lambda a, b: a + b),
    "exp": Bench(lambda a, b: a.exp(), lambda a, b: a.exp()),
    "sum(axis=1)": Bench(lambda a, b: a.sum(axis=1), lambda a, b: a.sum(dim=1)),
    "max": Bench(lambda a, b: a.max(), lambda a, b: a.max()),
    "transpose-copy": Bench(lambda a, b: a.T.contiguous(), lambda a, b: a.T.contiguous()),
    "matmul": Bench(lambda a, b: a @ b, lambda a, b: a @ b, lambda n: 2 * n ** 3,
                    lambda a, b: a @ b),
    "exp fwd+bwd": fwd_bwd(lambda a, b: a.exp(), 1),
    "mul fwd+bwd": fwd_bwd(lambda a, b: a * b, 2),
    "sum(axis=1) fwd+bwd": fwd_bwd(lambda a, b: a.sum(1), 1),
    # forward and the two gradient products
    "matmul fwd+bwd": fwd_bwd(lambda a, b: a @ b, 2)._replace(flops=lambda n: 6 * n ** 3),
}


def arrays(result):
    """An op's result (one tensor or a tuple of gradients) as a list of float arrays."""
    items = result if isinstance(result, (tuple, list)) else [result]
    return [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t.numpy()
            for t in items]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--grad-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024],
                        help="N for the fwd+bwd rows (lavapipe takes seconds per 2048 matmul)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds of timed runs after which a cell stops (at least one run)")
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/benchmarks"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(describe(machine()), flush=True)
    devices = vk.devices()
    timing = dict(repeats=args.repeats, budget=args.budget, min_repeats=1)

    rows, results = [], []
    rng = np.random.default_rng(0)
    for name in args.ops:
        bench = OPS[name]
        for n in args.grad_sizes if bench.grad else args.sizes:
            a = rng.standard_normal((n, n)).astype(np.float32)
            b = rng.standard_normal((n, n)).astype(np.float32)

            def torch_inputs(device):
                return [torch.tensor(x, device=device, requires_grad=bench.grad) for x in (a, b)]

            ref = arrays(bench.torch(*torch_inputs("cpu")))
            entry = {"op": name, "n": n, "times": {}}
            for tname, tdev, tsync in torch_devices():
                ta, tb = torch_inputs(tdev)
                entry["times"][tname] = median(timed(lambda: bench.torch(ta, tb), tsync,
                                                     **timing))
            for d in devices:
                va, vb = (vk.tensor(x, device=d, requires_grad=bench.grad) for x in (a, b))
                tol = 1e-4 * (n if "matmul" in name else 1) ** 0.5
                for got, want in zip(arrays(bench.vk(va, vb)), ref, strict=True):
                    np.testing.assert_allclose(got, want, rtol=tol, atol=tol,
                                               err_msg=f"{name} N={n} on {d} disagrees with torch")
                entry["times"][device_label(d)] = median(timed(lambda: bench.vk(va, vb),
                                                               vk.synchronize, warmup=0, **timing))
            if bench.numpy:
                entry["times"]["numpy"] = median(timed(lambda: bench.numpy(a, b), lambda: None,
                                                       **timing))
            if bench.flops:
                entry["gflops"] = {k: bench.flops(n) / t / 1e9 for k, t in entry["times"].items()}
            results.append(entry)
            base = entry["times"]["torch cpu"]
            rows.append((name, n, {k: (t, t / base) for k, t in entry["times"].items()}))
            print(f"  {name} N={n}: " + ", ".join(f"{k} {t * 1e3:.3f} ms"
                                                  for k, t in entry["times"].items()), flush=True)

    columns = list(dict.fromkeys(k for _, _, cells in rows for k in cells))
    print("\n| op | N | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for name, n, cells in rows:
        print(f"| {name} | {n} | " + " | ".join(
            f"{cells[k][0] * 1e3:.3f} ms ({cells[k][1]:.2f}x)" if k in cells else "—"
            for k in columns) + " |")
    print("\n(ratio = time / torch cpu time)")
    for entry in results:
        if "gflops" in entry:
            print(f"{entry['op']} N={entry['n']}: " + ", ".join(
                f"{k} {g:.1f} GFLOP/s" for k, g in entry["gflops"].items()))
    (args.out / "ops.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "ops.png")
    print(f"wrote {args.out / 'ops.json'} and {args.out / 'ops.png'}")


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(e["op"] for e in results))
    cols = min(len(names), 5)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        entries = [e for e in results if e["op"] == name]
        for series in entries[0]["times"]:
            ax.plot([e["n"] for e in entries], [e["times"][series] * 1e3 for e in entries],
                    marker="o", label=series, linestyle="--" if "torch" in series else "-")
        ax.set(title=name, xlabel="N (NxN float32)", ylabel="ms", xscale="log", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)  # panels differ: matmul adds numpy
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
