"""Op benchmark: NxN elementwise ops, reductions, transpose-copy and matmul, vkgrad vs torch.

    .venv/bin/python benchmarks/ops.py [--sizes 64 128 ...] [--repeats 5] [--out build/benchmarks]

For each op and N, every vkgrad device (host, each Vulkan device) and torch (CPU; CUDA when
present) run the same computation on the same data: one warm-up, then the median of --repeats
timed runs, each ending when the device has finished (vkgrad.synchronize / cuda.synchronize).
Results are checked to agree before anything is timed. Prints a markdown table (ratio = vkgrad
time / torch CPU time, so < 1 means vkgrad is faster), matmul GFLOP/s against numpy, and writes
ops.json and ops.png (time against N, one panel per op) into --out.
"""
import argparse
import json
import pathlib
import platform
import statistics
import time

import numpy as np
import torch

import vkgrad as vk

OPS = {
    # name: (vkgrad fn, torch fn, flops(N) or None)
    "add": (lambda a, b: a + b, lambda a, b: a + b, None),
    "exp": (lambda a, b: a.exp(), lambda a, b: a.exp(), None),
    "sum(axis=1)": (lambda a, b: a.sum(axis=1), lambda a, b: a.sum(dim=1), None),
    "max": (lambda a, b: a.max(), lambda a, b: a.max(), None),
    "transpose-copy": (lambda a, b: a.T.contiguous(), lambda a, b: a.T.contiguous(), None),
    "matmul": (lambda a, b: a @ b, lambda a, b: a @ b, lambda n: 2 * n ** 3),
}


def timed(fn, finish, repeats):
    fn()
    finish()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        finish()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_devices():
    out = [("torch cpu", "cpu", lambda: None)]
    if torch.cuda.is_available():
        out.append((f"torch cuda ({torch.cuda.get_device_name()})", "cuda", torch.cuda.synchronize))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/benchmarks"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    devices = vk.devices()
    for d in devices:
        print(f"vkgrad device {d}: {d.info()['name']}")

    rows, results = [], []
    rng = np.random.default_rng(0)
    for name in args.ops:
        vk_fn, torch_fn, flops = OPS[name]
        for n in args.sizes:
            a = rng.standard_normal((n, n)).astype(np.float32)
            b = rng.standard_normal((n, n)).astype(np.float32)
            ref = torch_fn(torch.from_numpy(a), torch.from_numpy(b)).numpy()
            entry = {"op": name, "n": n, "times": {}}
            for tname, tdev, tsync in torch_devices():
                ta, tb = torch.from_numpy(a).to(tdev), torch.from_numpy(b).to(tdev)
                entry["times"][tname] = timed(lambda: torch_fn(ta, tb), tsync, args.repeats)
            for d in devices:
                va, vb = vk.tensor(a, device=d), vk.tensor(b, device=d)
                got = vk_fn(va, vb).numpy()
                tol = 1e-4 * (n if name == "matmul" else 1) ** 0.5
                np.testing.assert_allclose(got, ref, rtol=tol, atol=tol,
                                           err_msg=f"{name} N={n} on {d} disagrees with torch")
                entry["times"][f"vkgrad {d}"] = timed(lambda: vk_fn(va, vb), vk.synchronize,
                                                      args.repeats)
            if flops:
                entry["times"]["numpy"] = timed(lambda: a @ b, lambda: None, args.repeats)
                entry["gflops"] = {k: flops(n) / t / 1e9 for k, t in entry["times"].items()}
            results.append(entry)
            base = entry["times"]["torch cpu"]
            rows.append((name, n, {k: (t, t / base) for k, t in entry["times"].items()}))
            print(f"  {name} N={n}: " + ", ".join(f"{k} {t * 1e3:.3f} ms"
                                                  for k, t in entry["times"].items()), flush=True)

    columns = list(rows[0][2])
    print("\n| op | N | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for name, n, cells in rows:
        print(f"| {name} | {n} | " + " | ".join(
            f"{t * 1e3:.3f} ms ({r:.2f}x)" for t, r in cells.values()) + " |")
    print("\n(ratio = time / torch cpu time)")
    for entry in results:
        if "gflops" in entry:
            print(f"matmul N={entry['n']}: " + ", ".join(f"{k} {g:.1f} GFLOP/s"
                                                       for k, g in entry["gflops"].items()))
    (args.out / "ops.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "ops.png")
    print(f"wrote {args.out / 'ops.json'} and {args.out / 'ops.png'}")


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(dict.fromkeys(e["op"] for e in results))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        entries = [e for e in results if e["op"] == name]
        for series in entries[0]["times"]:
            ax.plot([e["n"] for e in entries], [e["times"][series] * 1e3 for e in entries],
                    marker="o", label=series, linestyle="--" if "torch" in series else "-")
        ax.set(title=name, xlabel="N (NxN float32)", ylabel="ms", xscale="log", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)  # panels differ: matmul adds numpy
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
