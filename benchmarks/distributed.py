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
bucket_cap_mb), summed in place, by vkgrad and by mpi4py on numpy arrays of the same size:

- vkgrad.distributed.all_reduce(t, "sum") on a host tensor against
  comm.Allreduce(MPI.IN_PLACE, array, MPI.SUM) (both blocking);
- all_reduce(t, "sum", async_op=True).wait() against comm.Iallreduce(MPI.IN_PLACE, array,
  MPI.SUM).Wait() (both non-blocking: Open MPI's libnbc);
- the reduction a DistributedDataParallel bucket that overlaps backward goes through,
  start_all_reduce(array, "mean").wait(): the non-blocking sum plus one division pass.

Every side has its own buffer. In each round every side, in a new seeded random order (the
same on every rank, so that no side always follows the same other one), has its buffer refilled
with the same values and is then called twice, each call after a barrier and timed:
"refilled" is the first call, on data just written (as a DDP bucket is just concatenated);
"again" the second, on the buffer the first call just reduced. Round 0 warms up and checks the
results; the median of the --repeats other rounds per side and condition, on the slowest rank.
A 25 MB all-reduce is 3-5 ms here and depends on the state its buffer was left in (the two
conditions differ by about 30%): an earlier version of this script let the mpi4py side reduce
the array the DDP side had reduced just before, timed vkgrad's tensor only after two other
buffers' collectives, and measured vkgrad at 1.37x mpi4py for that reason alone
(docs/distributed.md). Prints markdown tables and writes distributed.json into --out.
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
CONDITIONS = ("refilled", "again")   # the two timed calls of a side in a round


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=None,
                   help="world sizes (default: 1, 2, and 4 if there are 4 cores)")
    p.add_argument("--batch", type=int, default=64, help="images per rank and step")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20, help="all-reduces timed per side")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/benchmarks"))
    p.add_argument("--worker", type=pathlib.Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args):
    """One rank of a job: rank 0 writes the measurements to args.worker."""
    import vkgrad as vk
    import vkgrad.distributed as dist
    import vkgrad.nn.functional as F
    from vkgrad.nn.parallel import DistributedDataParallel

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
        result["allreduce_ms"] = time_all_reduce(args.repeats)
    if r == 0:
        args.worker.write_text(json.dumps(result))


def time_all_reduce(repeats):
    """{condition: {side: median ms on the slowest rank}} for a 25 MB float32 in-place
    all-reduce (see the module docstring); checks every side's result once."""
    import vkgrad as vk
    import vkgrad.distributed as dist
    from mpi4py import MPI

    comm, n = MPI.COMM_WORLD, dist.world_size()
    rng = np.random.default_rng(dist.rank())
    values = rng.standard_normal(BUCKET_BYTES // 4).astype(np.float32)
    t_sync, t_async = vk.tensor(values.copy()), vk.tensor(values.copy())
    a_sync, a_async, a_ddp = values.copy(), values.copy(), values.copy()
    sides = {   # name: (the buffer to refill, the call, the scale of its result)
        "vkgrad": (t_sync.numpy(), lambda: dist.all_reduce(t_sync, "sum"), 1),
        "mpi4py": (a_sync, lambda: comm.Allreduce(MPI.IN_PLACE, a_sync, MPI.SUM), 1),
        "vkgrad_async": (t_async.numpy(),
                         lambda: dist.all_reduce(t_async, "sum", async_op=True).wait(), 1),
        "mpi4py_async": (a_async,
                         lambda: comm.Iallreduce(MPI.IN_PLACE, a_async, MPI.SUM).Wait(), 1),
        "vkgrad_ddp": (a_ddp, lambda: dist.start_all_reduce(a_ddp, "mean").wait(), 1 / n),
    }
    total = np.empty_like(values)
    comm.Allreduce(values, total, MPI.SUM)
    times = {c: {k: [] for k in sides} for c in CONDITIONS}
    for round_ in range(repeats + 1):    # round 0 warms up and checks
        for name in np.random.default_rng(round_).permutation(list(sides)):   # same everywhere
            buffer, call, scale = sides[name]
            np.copyto(buffer, values)
            for condition in CONDITIONS:
                comm.Barrier()
                began = time.perf_counter()
                call()
                times[condition][name].append(time.perf_counter() - began)
                if round_ == 0 and condition == CONDITIONS[0]:
                    np.testing.assert_allclose(buffer, total * scale, rtol=1e-5, atol=1e-5)
    return {c: {k: 1e3 * comm.allreduce(statistics.median(v[1:]), MPI.MAX)
                for k, v in times[c].items()} for c in CONDITIONS}


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
    print("\nIn-place sum of a 25 MB float32 bucket (median, slowest rank)\n")
    print("| ranks | buffer | vkgrad all_reduce (ms) | mpi4py Allreduce (ms) | ratio | "
          "vkgrad async_op (ms) | mpi4py Iallreduce (ms) | ratio | DDP bucket, mean (ms) | "
          "DDP / Iallreduce |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for condition, ms in r.get("allreduce_ms", {}).items():
            print(f"| {r['ranks']} | {condition} | {ms['vkgrad']:.2f} | {ms['mpi4py']:.2f} | "
                  f"{ms['vkgrad'] / ms['mpi4py']:.2f} | {ms['vkgrad_async']:.2f} | "
                  f"{ms['mpi4py_async']:.2f} | {ms['vkgrad_async'] / ms['mpi4py_async']:.2f} | "
                  f"{ms['vkgrad_ddp']:.2f} | {ms['vkgrad_ddp'] / ms['mpi4py_async']:.2f} |")
    (args.out / "distributed.json").write_text(json.dumps(
        {"machine": machine(), "batch": args.batch, "steps": args.steps, "results": results},
        indent=1))


if __name__ == "__main__":
    main()
