"""The interface every backend implements, the buffer view its kernels take, and its counters.

A backend owns device memory and runs kernels. Arrays are backend-specific objects with `.shape`
and `.dtype`: numpy arrays on the host, `Buffer` views on a device backend (vulkan.py's
DeviceArray). The ops' device implementations (vkgrad/ops) use only what is declared here:
Backend's methods and attributes and Buffer's, so they never import a backend module; only
device.py opens a backend (through vkgrad.backend.open_vulkan), and nothing outside backend/
imports Kompute (tests/test_imports.py checks both).
"""
from dataclasses import dataclass, fields
from math import prod

from .. import layout


@dataclass
class Counters:
    """Work a backend has done since the last reset (see `vkgrad.stats()`)."""
    dispatches: int = 0              # kernels launched
    dispatches_recorded: int = 0     # kernels recorded into a command buffer (a replay: none)
    barriers: int = 0                # pipeline barriers in submitted work
    copies: int = 0                  # buffer copies (vkCmdCopyBuffer) in submitted work
    submits: int = 0                 # command buffers submitted to a queue
    pipelines_created: int = 0       # compute pipelines created (compiled, or from the cache)
    pipeline_cache_hits: int = 0     # of those, the driver took from the pipeline cache
    chunk_bindings_created: int = 0  # descriptor sets made for a kernel's arena chunks
    host_syncs: int = 0              # times the host waited for the device
    device_bytes_allocated: int = 0  # memory allocated from the driver (not sub-allocations)
    transfers: int = 0               # from_numpy / to_numpy calls that moved data host<->device
    transfer_bytes: int = 0          # bytes they moved
    host_widenings: int = 0          # bf16 weights the host widened to float32 to keep them
                                     # (NumpyBackend.widened: at least KEEP_MIN values; a
                                     # kept one used again is not counted)

    def reset(self):
        for f in fields(self):
            setattr(self, f.name, 0)


class Buffer:
    """A strided view of a device backend's memory, as kernels take their operands: `shape`,
    `strides` and `offset` in elements of `dtype` (a vkgrad DType) within the allocation the
    view belongs to, and the `backend` that owns it. Views of one allocation share its memory,
    which lives while any of them does. Element (i0, i1, ...) is at offset + sum(i_k * s_k) of
    the allocation."""
    __slots__ = ("backend", "shape", "strides", "offset", "dtype")

    def __init__(self, backend, shape, strides, offset, dtype):
        self.backend, self.dtype = backend, dtype
        self.shape, self.strides, self.offset = tuple(shape), tuple(strides), offset

    @property
    def start(self):
        """The first element as a kernel addresses it (its index, in elements of its dtype, in
        the backend's address space), to pass among a launch's push constants."""
        raise NotImplementedError

    @property
    def size(self):
        return prod(self.shape)

    @property
    def ndim(self):
        return len(self.shape)

    def is_contiguous(self):
        return layout.is_contiguous(self.shape, self.strides)

    def view(self, shape, strides, offset):
        """Another view of the same allocation (shape, strides, offset in elements of it)."""
        raise NotImplementedError

    def same_memory(self, other):
        """Whether `other` is a view of the same allocation (so writing one may change the
        other)."""
        raise NotImplementedError


class Backend:
    """allocate, free, copy in/out, run a kernel, synchronise.

    Every backend: empty, from_numpy, to_numpy, run, synchronize, capture and replay, profiling,
    memory_stats, `counters`. A device backend, whose arrays are Buffers and whose ops queue
    kernels, also has launch, fits, error_code and register_kernel, and the attributes `info`
    (the device's properties and limits: name, limits such as max_compute_shared_memory_size),
    `is_cpu` (a CPU driver: ops pick CPU-friendly variants), `subgroups` (the subgroup size
    kernels may rely on, or 0) and `staging_range` (what a kernel that may write the error word
    declares among its `writes`: see error_code). The host backend runs numpy and has none of
    them."""

    kind = "abstract"

    def __init__(self):
        self.counters = Counters()

    def empty(self, shape, dtype):
        """Allocate an uninitialised contiguous array (freed when it is garbage-collected)."""
        raise NotImplementedError

    def from_numpy(self, array, dtype):
        """Copy a numpy array in (the host backend may share its memory instead)."""
        raise NotImplementedError

    def to_numpy(self, array):
        """Copy an array out to a numpy array, waiting for pending work that produces it."""
        raise NotImplementedError

    def run(self, op, *args, **params):
        """Run an op's implementation for this backend."""
        raise NotImplementedError

    def synchronize(self):
        """Wait until all queued work has finished (a device backend: and raise the IndexError
        a kernel reported through error_code since the last one)."""

    def launch(self, family, variant, threads, push, spec=(), reads=(), writes=None):
        """Queue one dispatch of kernel `family` (a shaders/<family>.comp, or a registered user
        kernel) in `variant` (a key of kernels.FAMILIES[family]; "" for the one) covering
        `threads` invocations (kernels loop over the rest when the grid is capped). `push`: the
        push constants, a list of at most kernels.PUSH_WORDS 32-bit ints (negative ones as two's
        complement), operands as their Buffer.start; a converted family packs them with its
        kernels.Layout. `spec`: the kernel's specialization constants (constant_id 0, 1, ...).
        `writes`: the Buffers the kernel writes (or reads and writes), `reads`: those it only
        reads (None entries and scalars skipped); without `writes` the kernel may touch
        anything, and is ordered after all earlier work and before all later work."""
        raise NotImplementedError(f"the {self.kind} backend runs no device kernels: "
                                  f"launch({family!r}) needs a device backend (Vulkan)")

    def fits(self, family, variant, spec=()):
        """Whether kernel `family`/`variant` with specialization constants `spec` fits the
        device's limits (shared memory, workgroup size)."""
        raise NotImplementedError(f"the {self.kind} backend runs no device kernels")

    def error_code(self, name):
        """The nonzero code a kernel writes into the error word when it finds an index out of
        range for op `name`; the next to_numpy or synchronize raises IndexError naming it."""
        raise NotImplementedError(f"the {self.kind} backend runs no device kernels")

    def register_kernel(self, family, spirv):
        """Make SPIR-V compiled at run time (vkgrad.Kernel) launchable as `family`."""
        raise NotImplementedError(f"the {self.kind} backend runs no device kernels")

    def begin_capture(self):
        """Start recording the kernels queued from now on (vkgrad.compile); backends with a
        queue to replay implement it."""
        raise NotImplementedError(f"the {self.kind} backend cannot capture a step")

    def end_capture(self):
        """Stop recording; returns the recording, for replay()."""
        raise NotImplementedError

    def replay(self, recording, arguments=(), results=()):
        """Copy `arguments`, (recorded input, value) array pairs of the same shape and dtype,
        into the recorded inputs and queue a recording's kernels again, on the same memory.
        `results`: the arrays the step returns (a backend may fetch small ones early)."""
        raise NotImplementedError

    def profiling(self, on):
        """Start or stop recording device times per dispatch (vkgrad.profile)."""

    def memory_stats(self):
        return {}
