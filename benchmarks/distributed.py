"""Data-parallel LeNet5 training on the host over MPI: images per second at 1, 2 (and, where there
are the cores, 4) ranks, the scaling efficiency, and the cost of vkgrad's all-reduce.

    .venv/bin/python benchmarks/distributed.py             # launches the mpiexec jobs itself
    .venv/bin/python benchmarks/distributed.py --ranks 1 2 --steps 10

Each job runs `mpiexec -n N` over this script (--worker), one BLAS thread per rank, on this
machine (shared memory). Training: vk.models.lenet5 on the host wrapped in
DistributedDataParallel, SGD with momentum, --batch images per rank and step (weak scaling: the
global batch grows with N), random inputs; after --warmup steps, --steps steps are timed on rank
0 between barriers. images/s = N * batch * steps / time; efficiency = images/s at N over N times
images/s at 1 rank.

All-reduce (at 2 ranks and above): a 25 MB float32 bucket (DistributedDataParallel's default
bucket_cap_mb), vkgrad.distributed.all_reduce on a host tensor, and the non-blocking reduction
a DistributedDataParallel bucket goes through (start_all_reduce(..., "mean").wait()), against
mpi4py's own comm.Allreduce(MPI.IN_PLACE, array, MPI.SUM) on a numpy array of the same size, in
turns, in the same job; the median of --repeats each, on the slowest rank. Prints markdown
tables and writes distributed.json into --out.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

BUCKET_BYTES = 25 << 20


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=None,
                   help="world sizes (default: 1, 2, and 4 if there are 4 cores)")
    p.add_argument("--batch", type=int, default=64, help="images per rank and step")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10, help="all-reduces timed per side")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/benchmarks"))
    p.add_argument("--worker", type=pathlib.Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args):
    """One rank of a job: rank 0 writes the measurements to args.worker."""
    import vkgrad as vk
    import vkgrad.distributed as dist
    import vkgrad.nn.functional as F
    from vkgrad.nn.parallel import DistributedDataParallel
    from mpi4py import MPI

    dist.init()
    r, n = dist.rank(), dist.world_size()
    model = DistributedDataParallel(vk.models.lenet5(device="host"))
    opt = vk.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(r)
    x = vk.tensor(rng.standard_normal((args.batch, 1, 28, 28)).astype(np.float32))
    y = vk.tensor(rng.integers(0, 10, args.batch), dtype=vk.int32)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    for _ in range(args.warmup):
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    dist.barrier()
    seconds = time.perf_counter() - start
    result = {"ranks": n, "images_per_s": n * args.batch * args.steps / seconds}

    if n > 1:
        size = BUCKET_BYTES // 4
        bucket = vk.tensor(np.ones(size, np.float32))
        array = np.ones(size, np.float32)
        comm = MPI.COMM_WORLD
        sides = {"vkgrad": lambda: dist.all_reduce(bucket),
                 "vkgrad_ddp": lambda: dist.start_all_reduce(array, "mean").wait(),
                 "mpi4py": lambda: comm.Allreduce(MPI.IN_PLACE, array, MPI.SUM)}
        times = {k: [] for k in sides}
        for _ in range(args.repeats):
            for name, fn in sides.items():
                comm.Barrier()
                began = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - began)
        times = {k: comm.allreduce(statistics.median(v), MPI.MAX) for k, v in times.items()}
        result["allreduce_ms"] = {k: 1e3 * v for k, v in times.items()}
    if r == 0:
        args.worker.write_text(json.dumps(result))


def launch(args, n):
    mpiexec = pathlib.Path(sys.executable).with_name("mpiexec")
    out = args.out / f"distributed-{n}.json"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [str(mpiexec), "-n", str(n), "--oversubscribe", sys.executable, __file__,
           "--worker", str(out), "--batch", str(args.batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    subprocess.run(cmd, env=env, check=True, timeout=600)
    return json.loads(out.read_text())


def main(argv=None):
    args = parse(argv)
    if args.worker is not None:
        return worker(args)
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from harness import machine
    ranks = args.ranks or ([1, 2, 4] if (os.cpu_count() or 1) >= 4 else [1, 2])
    args.out.mkdir(parents=True, exist_ok=True)
    results = [launch(args, n) for n in ranks]
    print(machine())
    base = next((r["images_per_s"] for r in results if r["ranks"] == 1), None)
    print(f"\nLeNet5 training on the host, batch {args.batch} per rank, {args.steps} steps\n")
    print("| ranks | images/s | scaling efficiency |")
    print("|---:|---:|---:|")
    for r in results:
        eff = f"{r['images_per_s'] / (r['ranks'] * base):.0%}" if base else "-"
        print(f"| {r['ranks']} | {r['images_per_s']:.0f} | {eff} |")
    print("\nAll-reduce of a 25 MB float32 bucket (median, slowest rank)\n")
    print("| ranks | vkgrad all_reduce (ms) | DDP bucket, non-blocking (ms) | "
          "mpi4py Allreduce (ms) | all_reduce / mpi4py | DDP bucket / mpi4py |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "allreduce_ms" in r:
            ms = r["allreduce_ms"]
            print(f"| {r['ranks']} | {ms['vkgrad']:.1f} | {ms['vkgrad_ddp']:.1f} | "
                  f"{ms['mpi4py']:.1f} | {ms['vkgrad'] / ms['mpi4py']:.2f} | "
                  f"{ms['vkgrad_ddp'] / ms['mpi4py']:.2f} |")
    (args.out / "distributed.json").write_text(json.dumps(
        {"machine": machine(), "batch": args.batch, "steps": args.steps, "results": results},
        indent=1))


if __name__ == "__main__":
    main()
