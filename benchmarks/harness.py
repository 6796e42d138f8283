"""What the benchmarks share: the machine description, timing, and how ratios are worded.

    .venv/bin/python benchmarks/harness.py     # prints the machine the benchmarks run on

The other scripts import it (`from harness import ...`; a script's own folder is on sys.path).
Run alone, as `make bench` does with every benchmarks/*.py, it prints the machine description.
"""
import os
import platform
import re
import shutil
import statistics
import subprocess
import time

import numpy as np
import torch

import vkgrad as vk


def timed(fn, finish, repeats, warmup=1, budget=None, min_repeats=3):
    """Seconds per call of fn(), each run ending when the device is done (finish()): `warmup`
    untimed runs, then up to `repeats` timed ones, stopping early once `budget` seconds of timed
    runs have passed but never before `min_repeats` (slow devices get fewer runs). Returns the
    list of run times; report their median."""
    return timed_in_turns([(fn, finish)], repeats, warmup, budget, min_repeats)[0]


SETTLE_SECONDS = 0.3  # idle time before each block (see timed_in_turns)


def timed_in_turns(runs, repeats, warmup=1, budget=None, min_repeats=3, block=10):
    """`timed` for several (fn, finish) pairs at once, taking turns in blocks: each round times
    every pair `block` times in a row, so a machine whose speed drifts during the measurement
    (other tenants of a virtual machine, clocks) weighs on all of them alike. On the 2-core
    development VM the same LeNet5 step measured 8 ms and, minutes later, 11 ms; timed one side
    after the other, such drift lands on one side of the ratio only.

    Each block starts after SETTLE_SECONDS of idling: OpenBLAS's worker threads keep spinning
    for a while after a call, and torch's step right after a block of vkgrad host steps took
    9.6 ms against 5.3 ms after a block of lavapipe steps in the same run. Blocks rather than
    single alternating runs keep those pauses few. The budget counts every pair's timed runs.
    Returns one list of run times per pair."""
    for fn, finish in runs:
        for _ in range(warmup):
            fn()
            finish()
    times = [[] for _ in runs]
    while len(times[0]) < repeats:
        for (fn, finish), own in zip(runs, times):
            if len(runs) > 1:
                time.sleep(SETTLE_SECONDS)
            for _ in range(min(block, repeats - len(own))):
                start = time.perf_counter()
                fn()
                finish()
                own.append(time.perf_counter() - start)
        if (budget is not None and len(times[0]) >= min_repeats
                and sum(map(sum, times)) >= budget):
            break
    return times


def median(times):
    return statistics.median(times)


def torch_devices():
    """[(label, torch device, synchronize)]: the CPU, and CUDA when torch sees a GPU."""
    out = [("torch cpu", "cpu", lambda: None)]
    if torch.cuda.is_available():
        out.append(("torch cuda", "cuda", torch.cuda.synchronize))
    return out


def speed_words(vkgrad_seconds, torch_seconds):
    """How torch compares with vkgrad, from vkgrad's side (vkgrad = 1.00x):
    "torch 2.3x faster" when torch takes less time, "torch 1.5x slower" when it takes more."""
    ratio = vkgrad_seconds / torch_seconds
    return f"torch {ratio:.2f}x faster" if ratio >= 1 else f"torch {1 / ratio:.2f}x slower"


def _vulkan_drivers():
    """{device name: "driverName driverInfo"} from `vulkaninfo --summary`, where installed."""
    if not shutil.which("vulkaninfo"):
        return {}
    try:
        text = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    drivers = {}
    for block in re.split(r"\nGPU\d+:\n", text)[1:]:
        fields = dict(re.findall(r"^\s*(\w+)\s*=\s*(.*)$", block, re.M))
        if "deviceName" in fields:
            drivers[fields["deviceName"].strip()] = (
                f"{fields.get('driverName', '?').strip()} {fields.get('driverInfo', '').strip()}")
    return drivers


def _cpu_model():
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine()
    field = lambda key: (re.search(rf"^{key}\s*:\s*(.*)$", info, re.M) or [None, "?"])[1]
    return f"{field('model name')} (family {field('cpu family')}, model {field('model')})"


def _vkgrad_revision():
    """The git commit the benchmarked vkgrad comes from, "+ local changes" when the tree differs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(vk.__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no",
                                "vkgrad", "shaders"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" + local changes" if dirty else "")


def machine():
    """The machine as a dict: CPU, cores, load, Python/numpy/torch versions and threads, the
    vkgrad devices with their Vulkan drivers, and CUDA when torch sees it."""
    drivers = _vulkan_drivers()
    devices = []
    for d in vk.devices():
        info = d.info()
        entry = {"device": str(d), "name": info["name"], "type": info["device_type"]}
        if d.kind == "vulkan":
            entry["driver"] = drivers.get(info["name"], f"driver version "
                                          f"{d._properties.get('driver_version', '?')}")
        devices.append(entry)
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": f"{np.__version__} ({blas.get('name', '?')} {blas.get('version', '')})",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "vkgrad": _vkgrad_revision(),
        "vkgrad_devices": devices,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def describe(m):
    """The machine dict as a few lines of text."""
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, load average "
             f"{' '.join(str(x) for x in m['load_average'])} ({m['time']})",
             f"python {m['python']}, numpy {m['numpy']}, torch {m['torch']} "
             f"({m['torch_threads']} threads), CUDA: {m['cuda'] or 'none'}, "
             f"vkgrad {m['vkgrad']}"]
    for d in m["vkgrad_devices"]:
        lines.append(f"vkgrad {d['device']}: {d['name']} ({d['type']}"
                     + (f"; {d['driver']})" if "driver" in d else ")"))
    return "\n".join(lines)


def device_label(d, compiled=False):
    """"vkgrad host", "vkgrad vulkan:0 (llvmpipe)": the device and the start of its name;
    " compiled" after it for steps run through vk.compile."""
    label = "vkgrad host" if d.kind == "host" else \
        f"vkgrad {d} ({d.info()['name'].split(' (')[0]})"
    return label + " compiled" if compiled else label


def select_devices(specs):
    """vkgrad devices named by --devices ("host", "vulkan", "vulkan:1"; None: all of them)."""
    if not specs:
        return vk.devices()
    return list(dict.fromkeys(vk.device(s) for s in specs))


if __name__ == "__main__":
    print(describe(machine()))
