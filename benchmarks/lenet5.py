"""LeNet5 training and inference, vkgrad against torch on this machine (autograph's comparison).

    .venv/bin/python benchmarks/lenet5.py                       # every device, f32 and bf16
    .venv/bin/python benchmarks/lenet5.py --quick --devices host
    .venv/bin/python benchmarks/lenet5.py --devices vulkan --dtypes bf16 --repeats 20 --profile

The model is vk.models.lenet5 (conv 1->6 5x5, relu, maxpool, conv 6->16 5x5, relu, maxpool,
linear 256->128->84->10) and its torch twin, the same torch.nn.Sequential, both starting from
the same weights (one vkgrad state dict, cast to each dtype), fed the same embedded MNIST digits.
- train: one step at batch 100 = forward, cross-entropy, backward, SGD (lr 0.01, momentum 0.9)
  update, and the loss read back to the host with .item(), as a training loop does (reading it
  after the update lets vkgrad queue the whole step before its one wait).
- inference: forward of 1,000 images under no_grad, the logits copied to the host.
Both in f32 and bf16, for vkgrad on each device (--devices: host, each Vulkan device) and torch
on the CPU (always) and CUDA (when torch sees a GPU), in one run. A second vkgrad row per device
("compiled") runs the same step through vk.compile: recorded once, then replayed without Python
ops (on Vulkan the recorded command buffer, on the host the recorded numpy calls). On the host
its inference is compiled too; on Vulkan inference is one forward of large kernels, and its
recording would keep ~90 MB of the 128 MB that lavapipe can bind.

Agreement is checked before timing: the three first training losses from the same weights and
batches, and the inference logits, of every row against torch on the CPU in the same dtype
(bf16 looser). Any disagreement prints FAIL and the script exits with status 1.

Timing: each vkgrad row is timed in turns with every torch device (blocks of 10 runs each per
round, each after a short idle pause so that the other library's threads stop spinning), so
all sides of a ratio see the same machine; each row's torch times are its own.
--warmup untimed runs, then up to --repeats timed ones; a row stops early once --budget seconds
of timed runs have passed (but runs at least 3 times), so slow devices such as lavapipe get
fewer runs. The median is reported. Prints the machine, a markdown table (vkgrad / torch =
vkgrad's time over torch's: above 1, torch is faster), vkgrad's device counters per training
step on Vulkan (vk.stats() over steady-state steps), and writes lenet5.json into --out.
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import torch

import vkgrad as vk
import vkgrad.nn.functional as F
from vkgrad.datasets import MNIST

from harness import (describe, device_label, machine, median, select_devices, speed_words,
                     timed_in_turns, torch_devices)

TRAIN_BATCH, INFER_BATCH, BATCHES = 100, 1000, 5   # training cycles over BATCHES batches
LR, MOMENTUM = 0.01, 0.9
CHECK_STEPS = 4  # a compiled step records twice (the first step, then momentum exists), then replays
DTYPES = {"f32": (vk.float32, torch.float32), "bf16": (vk.bfloat16, torch.bfloat16)}
# Largest relative loss difference (per step) and logits difference (relative to the largest
# logit) allowed against torch on the CPU. bf16 rounds every layer's output to 8 bits, in places
# that differ between the two libraries.
TRAIN_TOL = {"f32": 1e-4, "bf16": 3e-2}
INFER_TOL = {"f32": 1e-4, "bf16": 5e-2}
COUNTED_STEPS = 3


def torch_lenet5(state, device, dtype):
    """The torch.nn.Sequential twin of vk.models.lenet5 holding `state` (numpy f32 arrays)."""
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 84), nn.ReLU(), nn.Linear(84, 10))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model.to(device=device, dtype=dtype)


class VkgradRun:
    """LeNet5 in vkgrad on one device and dtype: train steps, inference, device sync; with
    `compiled`, train steps go through vk.compile."""

    def __init__(self, device, dtype, state, data, compiled=False):
        self.device = device
        self.model = vk.models.lenet5(device=device, dtype=dtype)
        self.model.load_state_dict(state)
        self.optimizer = vk.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.batches = [(vk.tensor(x, device=device, dtype=dtype), vk.tensor(y, device=device))
                        for x, y in data["train"]]
        self.images = vk.tensor(data["infer"], device=device, dtype=dtype)
        self.steps = 0
        self.finish = vk.synchronize
        self._train = vk.compile(self._train_step) if compiled else self._train_step
        # (a recorded Vulkan inference would keep ~90 MB of the 128 MB lavapipe can bind)
        self._infer = vk.compile(self.model) if compiled and device.kind == "host" else self.model

    def _train_step(self, x, y):
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss

    def step(self):
        x, y = self.batches[self.steps % BATCHES]
        self.steps += 1
        return self._train(x, y).item()

    def infer(self):
        with vk.no_grad():
            return self._infer(self.images).numpy()


class TorchRun:
    """The torch twin on one torch device and dtype, with the same interface."""

    def __init__(self, device, sync, dtype, state, data):
        self.model = torch_lenet5(state, device, dtype)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.batches = [(torch.from_numpy(x).to(device=device, dtype=dtype),
                         torch.from_numpy(y).to(device)) for x, y in data["train"]]
        self.images = torch.from_numpy(data["infer"]).to(device=device, dtype=dtype)
        self.steps = 0
        self.finish = sync

    def step(self):
        x, y = self.batches[self.steps % BATCHES]
        self.steps += 1
        self.optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def infer(self):
        with torch.no_grad():
            return self.model(self.images).cpu()


def as_f32(logits):
    return (logits.float().numpy() if isinstance(logits, torch.Tensor)
            else np.asarray(logits, dtype=np.float32))


def load_data():
    """Normalized embedded MNIST digits: BATCHES training batches and one inference batch."""
    mnist = MNIST(train=True)
    mean, std = MNIST.mean_std
    images = ((mnist.images.astype(np.float32) / 255 - mean) / std)[:, None]
    labels = mnist.labels.astype(np.int64)
    train = [(images[i * TRAIN_BATCH:(i + 1) * TRAIN_BATCH],
              labels[i * TRAIN_BATCH:(i + 1) * TRAIN_BATCH]) for i in range(BATCHES)]
    return {"train": train, "infer": np.ascontiguousarray(images[:INFER_BATCH])}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", nargs="+", default=None,
                   help="vkgrad devices: host, vulkan, vulkan:N (default: all)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--repeats", type=int, default=None, help="most timed runs per row (50)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per row (1)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed runs after which a row stops (8)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 3 timed runs, 1 warm-up (explicit options win)")
    p.add_argument("--profile", action="store_true",
                   help="print vk.profile() of one training step per vkgrad device and dtype")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("build/benchmarks"))
    args = p.parse_args(argv)
    defaults = (3, 1, 0.0) if args.quick else (50, 1, 8.0)
    for name, value in zip(("repeats", "warmup", "budget"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv=None):
    args = parse(argv)
    devices = select_devices(args.devices)
    rows = [(d, compiled) for d in devices for compiled in (False, True)]
    about = machine()
    print(describe(about), flush=True)
    vk.manual_seed(0)
    state = {k: v.numpy() for k, v in vk.models.lenet5().state_dict().items()}
    data = load_data()
    timing = dict(repeats=args.repeats, warmup=args.warmup, budget=args.budget)

    torch_makers = [(label, lambda dt, dev=dev, sync=sync: TorchRun(dev, sync, DTYPES[dt][1],
                                                                     state, data))
                    for label, dev, sync in torch_devices()]
    results, counters, failures = [], [], []

    def record(task, dt, label, times, difference, alongside=None):
        tol = (TRAIN_TOL if task == "train" else INFER_TOL)[dt]
        ok = difference <= tol   # False for NaN too
        results.append({"task": task, "dtype": dt, "impl": label, "alongside": alongside,
                        "median_ms": median(times) * 1e3, "runs": len(times),
                        "times_ms": [t * 1e3 for t in times],
                        "check": {"difference": difference, "tolerance": tol, "ok": bool(ok)}})
        if not ok:
            failures.append(f"{task} {dt} {label}: difference {difference:.3g} "
                            f"from torch cpu exceeds {tol:g}")

    for dt in args.dtypes:
        # Each run's first inference and its first CHECK_STEPS training losses, from the same
        # weights and batches, against torch cpu's (the first run).
        reference, torch_runs = None, []
        for label, make in torch_makers:
            run = make(dt)
            checks = check(run, reference)
            reference = reference or (checks["losses"], checks["logits"])
            torch_runs.append((label, run, checks))
        for d, compiled in rows:
            label = device_label(d, compiled)
            run = VkgradRun(d, DTYPES[dt][0], state, data, compiled)
            checks = check(run, reference)
            # vkgrad and every torch device take turns, so all see the same machine.
            line, together = [], [run] + [t for _, t, _ in torch_runs]
            for task, method in (("inference", "infer"), ("train", "step")):
                times = timed_in_turns([(getattr(r, method), r.finish) for r in together],
                                       **timing)
                record(task, dt, label, times[0], checks[task])
                part = f"{task} {median(times[0]) * 1e3:.2f} ms ({len(times[0])} runs)"
                for (tlabel, _, tchecks), ttimes in zip(torch_runs, times[1:]):
                    record(task, dt, tlabel, ttimes, tchecks[task], alongside=label)
                    part += f" vs {tlabel} {median(ttimes) * 1e3:.2f} ms"
                line.append(part)
            print(f"  {dt} {label}: " + "; ".join(line)
                  + "; losses " + " ".join(f"{x:.6f}" for x in checks["losses"])
                  + f"; differences train {checks['train']:.2e}, inference "
                  f"{checks['inference']:.2e}", flush=True)
            if run.device.kind == "vulkan":
                counters.append({"impl": label, "dtype": dt, **step_counters(run)})
            if args.profile:
                with vk.profile() as prof:
                    run.step()
                print(f"profile of one training step, {dt} {label}:\n{prof.table()}")
            del run

    table = format_table(results, [device_label(*row) for row in rows])
    print("\n" + table)
    if counters:
        print("\n" + format_counters(counters))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "lenet5.json"
    path.write_text(json.dumps({"machine": about, "options": {k: v for k, v in vars(args).items()
                                                              if k != "out"},
                                "results": results, "counters_per_step": counters,
                                "failures": failures}, indent=1, default=str))
    print(f"\nwrote {path}")
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        sys.exit(1)
    print("OK: every row agrees with torch cpu")


def check(run, reference):
    """A fresh run's first inference logits and CHECK_STEPS training losses, and their largest
    relative differences from `reference` (None: this run is the reference)."""
    logits = as_f32(run.infer())
    losses = [run.step() for _ in range(CHECK_STEPS)]
    ref_losses, ref_logits = reference or (losses, logits)
    return {"losses": losses, "logits": logits,
            "train": max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses)),
            "inference": float(np.abs(logits - ref_logits).max() / np.abs(ref_logits).max())}


def step_counters(run):
    """vk.stats() per training step, averaged over COUNTED_STEPS steady-state steps."""
    run.finish()
    vk.reset_stats()
    for _ in range(COUNTED_STEPS):
        run.step()
    run.finish()
    return {k: v / COUNTED_STEPS for k, v in vk.stats().items()}


def format_table(results, vkgrad_labels):
    """One row per task, dtype and vkgrad device; each torch device's time and how it compares
    (vkgrad / torch: vkgrad's time over torch's, so above 1 torch is faster)."""
    find = {(r["task"], r["dtype"], r["impl"], r["alongside"]): r for r in results}
    torch_labels = [label for label, _, _ in torch_devices()]
    if "torch cuda" not in torch_labels:
        torch_labels.append("torch cuda")   # shown empty: no CUDA here
    header = ["task", "dtype", "vkgrad on", "vkgrad ms (runs)"]
    for t in torch_labels:
        header += [f"{t} ms", f"vkgrad / {t}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, name in (("train", f"train step, batch {TRAIN_BATCH}"),
                       ("inference", f"inference, batch {INFER_BATCH}")):
        for dt in dict.fromkeys(r["dtype"] for r in results):
            for label in vkgrad_labels:
                ours = find.get((task, dt, label, None))
                if ours is None:
                    continue
                cells = [name, dt, label.removeprefix("vkgrad "),
                         f"{ours['median_ms']:.2f} ({ours['runs']})"]
                for t in torch_labels:
                    theirs = find.get((task, dt, t, label))
                    if theirs is None:
                        cells += ["—", "—"]
                        continue
                    mine, other = ours["median_ms"], theirs["median_ms"]
                    cells += [f"{other:.2f}", f"{mine / other:.2f} ({speed_words(mine, other)})"]
                lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nms: median time; vkgrad / torch: vkgrad's time over torch's "
                 "(above 1: torch is faster).")
    return "\n".join(lines)


def format_counters(counters):
    keys = ["dispatches", "dispatches_recorded", "barriers", "submits", "host_syncs",
            "pipelines_created", "device_bytes_allocated"]
    lines = ["vkgrad device work per training step (steady state, mean of "
             f"{COUNTED_STEPS} steps, vk.stats()):", "",
             "| vkgrad on | dtype | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
             "|" + "---|" * (len(keys) + 2)]
    for c in counters:
        lines.append(f"| {c['impl'].removeprefix('vkgrad ')} | {c['dtype']} | "
                     + " | ".join(f"{c[k]:g}" for k in keys) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
