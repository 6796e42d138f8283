"""The interface every backend implements, and the counters they keep.

A backend owns device memory and runs kernels. Arrays are backend-specific objects with `.shape`
and `.dtype` (numpy arrays on the host, `DeviceArray` views on Vulkan); nothing above this layer
looks inside them except through these methods and the op implementations for that backend.
"""
from dataclasses import dataclass, fields


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

    def reset(self):
        for f in fields(self):
            setattr(self, f.name, 0)


class Backend:
    """allocate, free, copy in/out, run a kernel, synchronise."""

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
        """Wait until all queued work has finished."""

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
