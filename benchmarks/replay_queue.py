"""Host time to queue a compiled LeNet5 training step on Vulkan (issue 18's "at most 0.1 ms").

The step (forward, cross-entropy, backward, SGD with momentum or Adam, batch 100) is compiled
with vk.compile and warmed up; then ROUNDS times, QUEUED steps are queued back to back (each
call timed alone with perf_counter: copying the arguments in and submitting the recorded
command buffer) and the last loss is read, which waits for all of them. Prints the median and
the 10th and 90th percentiles of the per-call times, and the counters of one queued step.
The device runs the earlier steps on the same cores while the host queues, so the times are
noisy on a CPU driver; `--profile` prints cProfile's top entries for the queued calls instead.

    .venv/bin/python benchmarks/replay_queue.py [--optimizer sgd|adam] [--dtype float32]
"""
import argparse
import cProfile
import pstats
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
import vkgrad as vk  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--queued", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    device = vk.device("vulkan")
    vk.manual_seed(0)
    model = vk.models.lenet5(device=device, dtype=args.dtype)
    opt = (vk.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if args.optimizer == "sgd"
           else vk.optim.Adam(model.parameters(), lr=1e-3))

    @vk.compile
    def step(x, y):
        opt.zero_grad()
        loss = vk.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    rng = np.random.default_rng(0)
    batches = [(vk.tensor(rng.standard_normal((100, 1, 28, 28)), args.dtype, device),
                vk.tensor(rng.integers(0, 10, 100), "int32", device)) for _ in range(args.queued)]
    for x, y in batches[:4]:
        step(x, y).item()
    times, profile = [], cProfile.Profile() if args.profile else None
    vk.reset_stats()
    for _ in range(args.rounds):
        for x, y in batches:
            if profile:
                profile.enable()
            t0 = time.perf_counter()
            loss = step(x, y)
            times.append(time.perf_counter() - t0)
            if profile:
                profile.disable()
        loss.item()
    stats = vk.stats()
    steps = args.rounds * args.queued
    t = np.array(times) * 1e3
    print(f"{args.optimizer} {args.dtype} batch 100: queue a compiled step {np.median(t):.3f} ms "
          f"median (p10 {np.percentile(t, 10):.3f}, p90 {np.percentile(t, 90):.3f}) over {steps}")
    print("per step:", {k: round(v / steps, 2) for k, v in stats.items()
                        if k in ("dispatches", "dispatches_recorded", "copies", "barriers",
                                 "submits", "host_syncs")})
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
