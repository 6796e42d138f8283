"""Where a step's time goes: host time per op and device time per kernel.

>>> with vk.profile() as prof:          # or run a whole program with VKGRAD_PROFILE=1
...     train_step()
>>> print(prof.table())

Host time is measured around every op call (`ops.registry.apply`), as self time: an op that
calls other ops (a backward rule, a composite kernel) is charged only for its own Python work,
which on the host device includes the numpy computation. Backward passes appear as
"<op> backward" rows holding the rule's own overhead; the ops a rule runs appear under their own
names. On Vulkan, each dispatch's device time comes from timestamps written after every
dispatch (Kompute timestamp queries), differences of the counter modulo its valid bits (the
queue family's timestampValidBits: a narrower counter wraps) times timestampPeriod, and is
charged to the kernel and to the op that queued it. Where a device writes no timestamps
(timestampComputeAndGraphics false, timestampValidBits 0), only counts are shown and the table
says why, naming the device; `profile(device_times=True)` raises instead. Profiling costs some
host time per op and adds timestamp writes, so use it to explain a step, not to time one.
"""
import atexit
import os
import threading
import time
from collections import defaultdict

_active = []                  # open Profile objects (usually one)
_state = threading.local()    # per thread: the stack of op frames being timed


def enabled():
    return bool(_active)


class _Frame:
    __slots__ = ("name", "start", "children")

    def __init__(self, name):
        self.name, self.start, self.children = name, time.perf_counter(), 0.0


def current_op():
    """The name of the innermost op being timed in this thread ("-" outside any op)."""
    stack = getattr(_state, "stack", None)
    return stack[-1].name if stack else "-"


class frame:
    """Time a region as op `name` (self time: nested frames are subtracted)."""
    __slots__ = ("name", "_frame")

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        stack = getattr(_state, "stack", None)
        if stack is None:
            stack = _state.stack = []
        self._frame = _Frame(self.name)
        stack.append(self._frame)

    def __exit__(self, *exc):
        f = _state.stack.pop()
        total = time.perf_counter() - f.start
        if _state.stack:
            _state.stack[-1].children += total
        for p in _active:
            row = p.ops[f.name]
            row[0] += 1
            row[1] += total - f.children
        return False


class NoDeviceTimes(RuntimeError):
    """profile(device_times=True) on a device that writes no timestamps."""


def add_kernel_times(records, seconds, missing=None):
    """Record device time for dispatches: records [(kernel, op)], seconds per dispatch (or None
    where the device gives no timestamps, `missing` saying why)."""
    for p in _active:
        if seconds is None and records:
            p.missing.add(missing)
        for (kernel, op), s in zip(records, seconds or [None] * len(records)):
            row = p.kernels[kernel]
            row[0] += 1
            p.ops[op][2] += s or 0.0
            p.ops[op][3] += 1
            row[1] += s or 0.0
            p.timed = p.timed and s is not None


class Profile:
    """Collected times; `table()` formats them. ops: name -> [calls, host s, device s,
    dispatches]; kernels: "family/variant" -> [dispatches, device s]."""

    def __init__(self, report=False, device_times=False):
        self.ops = defaultdict(lambda: [0, 0.0, 0.0, 0])
        self.kernels = defaultdict(lambda: [0, 0.0])
        self.timed = True     # every dispatch had a device time
        self.missing = set()  # why not, per device without timestamps that dispatched
        self.report = report
        self.device_times = device_times
        self.wall = 0.0

    def _refuse_untimed(self, why):
        if self.device_times and why:
            raise NoDeviceTimes("vk.profile(device_times=True): " + "; ".join(sorted(why)))

    def __enter__(self):
        from .stats import synchronize
        from .device import live_backends
        self._refuse_untimed({b.timestamps_missing for b in live_backends()
                              if getattr(b, "timestamps_missing", None)})
        synchronize()
        _active.append(self)
        for backend in live_backends():
            backend.profiling(True)
        self._began = time.perf_counter()
        return self

    def __exit__(self, *exc):
        from .stats import synchronize
        from .device import live_backends
        synchronize()  # collects the last timestamps
        self.wall += time.perf_counter() - self._began
        _active.remove(self)
        if not _active:
            for backend in live_backends():
                backend.profiling(False)
        if self.report:
            print(self.table())
        if exc[0] is None:
            self._refuse_untimed(self.missing)
        return False

    def table(self, top=25):
        """Ops by host + device time, then kernels by device time, as aligned text."""
        lines = [f"vkgrad profile: {self.wall * 1e3:.1f} ms wall"
                 + ("" if self.timed else " (device times missing: no timestamps: "
                    + "; ".join(sorted(self.missing)) + ")"),
                 f"{'op':28s} {'calls':>7s} {'host ms':>9s} {'us/call':>8s} {'device ms':>10s} "
                 f"{'kernels':>8s}"]
        rows = sorted(self.ops.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))
        for name, (calls, host, device, dispatches) in rows[:top]:
            per = host / calls * 1e6 if calls else 0.0
            lines.append(f"{name:28s} {calls:7d} {host * 1e3:9.2f} {per:8.1f} "
                         f"{device * 1e3:10.2f} {dispatches:8d}")
        total_host = sum(r[1] for r in self.ops.values())
        total_device = sum(r[2] for r in self.ops.values())
        lines.append(f"{'total':28s} {sum(r[0] for r in self.ops.values()):7d} "
                     f"{total_host * 1e3:9.2f} {'':8s} {total_device * 1e3:10.2f} "
                     f"{sum(r[3] for r in self.ops.values()):8d}")
        if self.kernels:
            lines.append(f"{'kernel':28s} {'dispatches':>10s} {'device ms':>10s} "
                         f"{'us/dispatch':>12s}")
            for name, (n, s) in sorted(self.kernels.items(), key=lambda kv: -kv[1][1]):
                lines.append(f"{name:28s} {n:10d} {s * 1e3:10.2f} {s / n * 1e6:12.1f}")
        return "\n".join(lines)


def profile(report=False, device_times=False):
    """A context manager that profiles what runs inside it; report=True prints the table.
    device_times=True raises NoDeviceTimes, naming the device and why, where a Vulkan device
    in use cannot time its dispatches (otherwise the table says so and shows counts)."""
    return Profile(report, device_times)


def start_from_environment():
    """VKGRAD_PROFILE=1: profile the whole program and print the table at exit."""
    if os.environ.get("VKGRAD_PROFILE", "") not in ("", "0"):
        whole_program = Profile(report=True)
        whole_program.__enter__()
        atexit.register(whole_program.__exit__, None, None, None)
