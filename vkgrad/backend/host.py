"""The host backend: arrays are numpy arrays and ops run their numpy implementation."""
import ctypes
import os
import platform

import numpy as np

from .base import Backend

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20     # blocks below this come from the heap and are reused
TRIM_THRESHOLD = 256 << 20    # free heap kept by the process before it is given back


def keep_freed_memory():
    """Have glibc keep freed blocks for reuse instead of returning them to the OS.

    A training step frees tens of MB of numpy temporaries, and the next step allocates them again.
    By default glibc serves blocks over 128 KiB (a threshold that adapts up to 32 MiB) with fresh
    mmaps and trims the heap's free top beyond 128 KiB, so each step page-faults its temporaries
    in again: a host LeNet5 step at batch 100 took 19 ms that way and 8 ms with these settings,
    and which of the two a process got depended on its allocation history. Set
    VKGRAD_KEEP_FREED_MEMORY=0 to leave glibc's defaults; other C libraries are left alone.
    """
    if os.environ.get("VKGRAD_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class NumpyBackend(Backend):
    kind = "host"

    def __init__(self):
        super().__init__()
        self.keeps_freed_memory = keep_freed_memory()

    def empty(self, shape, dtype):
        return np.empty(shape, dtype.np_dtype)

    def from_numpy(self, array, dtype):
        return np.asarray(array, dtype=dtype.np_dtype)

    def to_numpy(self, array):
        return array

    def run(self, op, *args, **params):
        return op.host(*args, **params)
