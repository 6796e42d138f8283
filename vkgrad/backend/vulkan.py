"""The Vulkan backend, through Kompute (`kp`, built with the patch in third_party/kompute).

Memory model: one device-local *arena* buffer holds every tensor, sub-allocated by `ArenaPool`, and
one host-visible *staging* buffer carries bytes in and out (Kompute cannot copy sub-ranges, so a
small transfer kernel moves words between the two). Every kernel binds the same two buffers;
operands are addressed by element offsets in push constants. What selects code paths (op codes,
modes, operand dtypes) is given as specialization constants instead, so the driver compiles each
combination into straight-line code: one pipeline per (kernel variant, constants), created on
first use. CPU drivers such as lavapipe run every arm of a branch under a mask, so a run-time
switch over 49 ops cost 7x the op itself there. Dispatches are recorded into one command buffer and submitted
when the host needs data (or the queue grows long), with a memory barrier between dispatches
(from the patch) so that dependent kernels are ordered on real GPUs.
"""
import gc
import os
import pathlib
import struct
import threading
import weakref
from math import prod

import numpy as np

from .. import kernels, layout, profiler
from .base import Backend

SPIRV_DIR = pathlib.Path(__file__).resolve().parent.parent / "_spirv"
ALIGN_WORDS = 16                  # 64-byte sub-allocation granularity
LARGE_WORDS = 1 << 18             # blocks of 1 MiB and more are cut from the top of free space
MAX_GROUPS = 65535                # Vulkan's guaranteed maxComputeWorkGroupCount[0]
MAX_PENDING = 4096                # dispatches queued before a submit is forced
MAX_BUFFER_BYTES = (1 << 32) - (1 << 16)  # Kompute sizes buffers with 32-bit integers


def f32_bits(x):
    """The bits of `x` as an IEEE float32, for a push constant."""
    return struct.unpack("<I", struct.pack("<f", x))[0]


class Block:
    """A run of arena words owned by one or more views; back to the pool when collected.
    `recorded`: already noted by the recording in progress (allocated or addressed during it)."""
    __slots__ = ("pool", "word", "words", "recorded", "__weakref__")

    def __init__(self, pool, word, words):
        self.pool, self.word, self.words, self.recorded = pool, word, words, False

    def __del__(self):
        try:
            self.pool.release(self)
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass


class ArenaPool:
    """Sub-allocator over the arena: exact-size caches for reuse in steady loops, fresh space cut
    from a free *middle* region (blocks under LARGE_WORDS from its bottom, larger ones from its
    top, so that long-lived small tensors such as parameters do not end up scattered between
    the large temporaries of a step), and first-fit holes once the middle runs out; free space
    is coalesced (the largest run becoming the new middle) when a request finds none.

    Reusing a block while earlier queued kernels still read it is safe: all work runs in one queue
    with a full barrier between dispatches, so a later writer waits for every earlier reader.
    """

    def __init__(self, capacity_words):
        self.capacity = capacity_words
        self.bottom, self.ceiling = 0, capacity_words  # the middle: [bottom, ceiling) is free
        self.cached = {}             # size -> [word offsets] of freed blocks
        self.holes = []              # [(word, size)] coalesced free space outside the middle
        self.in_use = 0
        self.peak = 0
        self.lock = threading.RLock()
        self.recording = None        # the Recording in progress, if any

    def allocate(self, words):
        words = max(ALIGN_WORDS, -(-words // ALIGN_WORDS) * ALIGN_WORDS)
        with self.lock:
            word = self._take(words)
            for free_more in (lambda: None, gc.collect):  # cycles may hold dead tensors' blocks
                if word is None:
                    free_more()
                    self._coalesce()
                    word = self._take(words)
            if word is None:
                raise MemoryError(
                    f"Vulkan arena exhausted: {words * 4} bytes requested, {self.in_use * 4} of "
                    f"{self.capacity * 4} in use; set VKGRAD_ARENA_MB to a larger size")
            self.in_use += words
            self.peak = max(self.peak, self.in_use)
            block = Block(self, word, words)
            if self.recording is not None:  # its words may be addressed by recorded dispatches
                self.recording.touch(block)
        return block

    def _take(self, words):
        bucket = self.cached.get(words)
        if bucket:
            return bucket.pop()
        if self.ceiling - self.bottom >= words:
            if words >= LARGE_WORDS:
                self.ceiling -= words
                return self.ceiling
            self.bottom += words
            return self.bottom - words
        for i, (word, size) in enumerate(self.holes):
            if size >= words:
                if size == words:
                    del self.holes[i]
                else:
                    self.holes[i] = (word + words, size - words)
                return word
        return None

    def _free_runs(self):
        """Every free word as sorted, merged (word, size) runs; the caches are emptied."""
        free = sorted(self.holes + [(w, s) for s, ws in self.cached.items() for w in ws]
                      + [(self.bottom, self.ceiling - self.bottom)])
        self.cached = {}
        merged = []
        for word, size in free:
            if merged and merged[-1][0] + merged[-1][1] == word:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            elif size:
                merged.append((word, size))
        return merged

    def _set_free(self, runs):
        """Make `runs` the free space: the largest the middle, the others holes."""
        middle = max(range(len(runs)), key=lambda i: runs[i][1], default=None)
        word, size = runs.pop(middle) if middle is not None else (0, 0)
        self.bottom, self.ceiling = word, word + size
        self.holes = runs

    def _coalesce(self):
        self._set_free(self._free_runs())

    def release(self, block):
        self.release_words(block.word, block.words)

    def release_words(self, word, words):
        with self.lock:
            self.cached.setdefault(words, []).append(word)
            self.in_use -= words

    def reserve(self, ranges):
        """Take the free parts of `ranges` ([(word, words)]) out of the free space and return
        them, as [(word, words)], counted in use until they are released."""
        with self.lock:
            taken = sorted(ranges)
            left, reserved = [], []
            for start, size in self._free_runs():
                end = start + size
                for t_start, t_size in taken:
                    lo, hi = max(start, t_start), min(end, t_start + t_size)
                    if lo >= hi:
                        continue
                    if lo > start:
                        left.append((start, lo - start))
                    reserved.append((lo, hi - lo))
                    start = hi
                if start < end:
                    left.append((start, end - start))
            self._set_free(left)
            self.in_use += sum(size for _, size in reserved)
            self.peak = max(self.peak, self.in_use)
            return reserved


class DeviceArray:
    """A strided view of arena memory: a Block plus shape, strides and offset in elements."""
    __slots__ = ("backend", "block", "shape", "strides", "offset", "dtype")

    def __init__(self, backend, block, shape, strides, offset, dtype):
        self.backend, self.block, self.dtype = backend, block, dtype
        self.shape, self.strides, self.offset = tuple(shape), tuple(strides), offset

    @property
    def start(self):
        """Index of this view's first element, in elements of its dtype from the arena's start.
        Every kernel finds its operands by these indices, so while a capture records, reading
        one marks the block as used by the recorded work."""
        block = self.block
        if not block.recorded and block.pool.recording is not None:
            block.pool.recording.touch(block)
        return self.block.word * self.dtype.per_word + self.offset

    @property
    def size(self):
        return prod(self.shape)

    @property
    def ndim(self):
        return len(self.shape)

    def is_contiguous(self):
        return layout.is_contiguous(self.shape, self.strides)

    def view(self, shape, strides, offset):
        return DeviceArray(self.backend, self.block, shape, strides, offset, self.dtype)


class Recording:
    """What a capture keeps (see vkgrad.compile): the dispatches queued while it recorded, with
    their profiler labels, and the arena memory they may address (every block allocated while
    recording, and every older block a dispatch addressed), reserved for as long as the
    recording lives. While recording, memory is freed and reused as in eager execution, so a
    step's temporaries take the room they take eagerly; at the end, the blocks still alive are
    held and the free parts of the rest are reserved from the pool."""
    __slots__ = ("pool", "dispatches", "touched", "ranges", "blocks", "reserved")

    def __init__(self, pool):
        self.pool = pool
        self.dispatches = []              # (kp.OpAlgoDispatch, kernel label, op name)
        self.touched = weakref.WeakSet()  # blocks allocated or addressed so far, while alive
        self.ranges = []                  # (word, words) of every one of them
        self.blocks, self.reserved = (), []

    def touch(self, block):
        block.recorded = True
        self.touched.add(block)
        self.ranges.append((block.word, block.words))

    def finish(self):
        """Hold the blocks still alive and reserve the free memory the others had."""
        self.blocks = set(self.touched)
        for block in self.blocks:
            block.recorded = False  # the flag only saves work while recording
        self.touched = None
        self.reserved = self.pool.reserve(self.ranges)

    def __del__(self):
        try:
            for word, words in self.reserved:
                self.pool.release_words(word, words)
        except Exception:  # interpreter shutdown
            pass


class VulkanBackend(Backend):
    kind = "vulkan"

    def __init__(self, manager, info):
        super().__init__()
        import kp
        self._kp = kp
        self.manager = manager
        self.info = info
        # VK_PHYSICAL_DEVICE_TYPE_CPU (lavapipe, SwiftShader): kernels pick CPU-friendly variants
        self.is_cpu = info.get("device_type") == 4
        self._lock = threading.RLock()
        arena_bytes = int(os.environ.get("VKGRAD_ARENA_MB", "1024")) << 20
        arena_bytes = min(arena_bytes, info["max_storage_buffer_range"], MAX_BUFFER_BYTES)
        staging_bytes = min(int(os.environ.get("VKGRAD_STAGING_MB", "32")) << 20, arena_bytes)
        self._arena = manager.tensor_t(np.zeros(arena_bytes // 4, np.uint32),
                                       tensor_type=kp.TensorTypes.storage)
        self._staging = manager.tensor_t(np.zeros(staging_bytes // 4, np.uint32),
                                         tensor_type=kp.TensorTypes.host)
        self._staging_words = self._staging.data()  # the mapped memory itself, not a copy
        self.counters.device_bytes_allocated += arena_bytes + staging_bytes
        self.pool = ArenaPool(arena_bytes // 4)
        self._staging_used = 0      # words of staging handed out since the last wait
        self._algorithms = {}
        self._user_spirv = {}       # (family, variant) -> SPIR-V of kernels registered at run time
        self._sequence = manager.sequence()
        self._pending = 0
        self._profiled = None       # while profiling: [(kernel, op)] per queued dispatch

    # ---- memory ---------------------------------------------------------------------------------
    def empty(self, shape, dtype):
        shape = tuple(shape)
        words = -(-prod(shape) // dtype.per_word)
        return DeviceArray(self, self.pool.allocate(words), shape,
                           layout.contiguous_strides(shape), 0, dtype)

    def from_numpy(self, array, dtype):
        self._refuse_transfer_while_recording("copies host data to the device (vkgrad.tensor "
                                              "or .to() inside the step)")
        host = np.asarray(array, dtype=dtype.np_dtype, order="C")
        out = self.empty(host.shape, dtype)
        raw = host.reshape(-1).view(np.uint8)
        with self._lock:
            done = 0
            while done < raw.size:
                chunk_words = min(-(-(raw.size - done) // 4), self._staging_room())
                chunk = raw[done:done + chunk_words * 4]
                word = self._staging_alloc(chunk_words)
                self._staging_words[word:word + chunk_words].view(np.uint8)[:chunk.size] = chunk
                self._transfer(True, chunk_words, out.block.word + done // 4, word)
                done += chunk.size
        return out

    def to_numpy(self, array):
        from ..ops.elementwise import contiguous
        self._refuse_transfer_while_recording("reads a tensor's value on the host (.item(), "
                                              ".numpy(), print)")
        if not array.is_contiguous():
            array = contiguous(array)
        dtype, n = array.dtype, array.size
        first_word, skip = divmod(array.start, dtype.per_word)
        total_words = -(-(skip + n) // dtype.per_word)
        out = np.empty(total_words * 4, np.uint8)
        with self._lock:
            done = 0
            while done < total_words:
                chunk = min(total_words - done, self._staging_room())
                word = self._staging_alloc(chunk)
                self._transfer(False, chunk, first_word + done, word)
                self._submit()
                out[done * 4:(done + chunk) * 4] = self._staging_words[word:word + chunk].view(np.uint8)
                done += chunk
        return out.view(dtype.np_dtype)[skip:skip + n].reshape(array.shape)

    @property
    def recording(self):
        """The Recording being captured, if any."""
        return self.pool.recording

    def _refuse_transfer_while_recording(self, what):
        if self.recording is not None:
            raise RuntimeError(f"a step being captured by vkgrad.compile {what}: a replay would "
                               "not repeat that. Pass inputs as arguments and return what you "
                               "need to read, then read it after the call")

    def _staging_room(self):
        room = self._staging_words.size - self._staging_used
        if room < ALIGN_WORDS:
            self._submit()  # staging space is reclaimed only once the device has consumed it
            room = self._staging_words.size
        return room

    def _staging_alloc(self, words):
        word = self._staging_used
        self._staging_used += -(-words // ALIGN_WORDS) * ALIGN_WORDS
        return word

    def _transfer(self, to_arena, words, arena_word, staging_word):
        self.launch("transfer", "", words, [words, arena_word, staging_word], (int(to_arena),))

    def memory_stats(self):
        return {"arena_bytes": self.pool.capacity * 4, "in_use_bytes": self.pool.in_use * 4,
                "peak_bytes": self.pool.peak * 4}

    # ---- kernels --------------------------------------------------------------------------------
    def register_kernel(self, family, spirv):
        """Make SPIR-V compiled at run time (vkgrad.Kernel) launchable as `family`."""
        self._user_spirv[(family, "")] = spirv

    def _algorithm(self, family, variant, spec):
        key = (family, variant, spec)
        algo = self._algorithms.get(key)
        if algo is None:
            spirv = self._user_spirv.get((family, variant))
            if spirv is None:
                path = SPIRV_DIR / kernels.spirv_name(family, variant)
                if not path.exists():
                    raise RuntimeError(f"compiled shader {path} is missing: run `make shaders`")
                spirv = path.read_bytes()
            algo = self.manager.algorithm(
                [self._arena, self._staging], spirv, (1, 1, 1),
                np.array(spec, np.uint32), np.zeros(kernels.PUSH_WORDS, np.uint32))
            self._algorithms[key] = algo
            self.counters.pipelines_created += 1
        return algo

    def launch(self, family, variant, threads, push, spec=()):
        """Queue one dispatch of `family`/`variant` covering `threads` invocations (kernels loop
        over the rest when the grid is capped). `push` is a list of ints, at most PUSH_WORDS;
        `spec` a tuple of ints, the kernel's specialization constants (constant_id 0, 1, ...)."""
        groups = max(1, min(MAX_GROUPS, -(-threads // kernels.WORKGROUP)))
        constants = np.zeros(kernels.PUSH_WORDS, np.int64)
        constants[:len(push)] = push
        with self._lock:
            op = self._kp.OpAlgoDispatch(self._algorithm(family, variant, tuple(spec)),
                                         constants.astype(np.uint32), (groups, 1, 1))
            label = f"{family}/{variant}" if variant else family
            op_name = profiler.current_op()
            if self.recording is not None:
                self.recording.dispatches.append((op, label, op_name))
            self._queue(op, label, op_name)

    def _queue(self, op, label, op_name):
        self._sequence.record(op)
        if self._profiled is not None:
            self._profiled.append((label, op_name))
        self.counters.dispatches += 1
        self._pending += 1
        if self._pending >= MAX_PENDING:
            self._submit()

    # ---- capture and replay (vkgrad.compile) ---------------------------------------------------
    def begin_capture(self):
        """Start recording: every dispatch queued from now on is also kept, with the blocks it
        addresses, until end_capture() returns them as a Recording."""
        with self._lock:
            if self.pool.recording is not None:
                raise RuntimeError("this device is already capturing a step")
            self.pool.recording = Recording(self.pool)

    def end_capture(self):
        with self._lock, self.pool.lock:
            recording, self.pool.recording = self.pool.recording, None
            recording.finish()
            return recording

    def replay(self, recording):
        """Queue a Recording's dispatches again, in their order: the same kernels, on the same
        memory, with the same push constants. No op runs, nothing is allocated."""
        with self._lock:
            for op, label, op_name in recording.dispatches:
                self._queue(op, label, op_name)

    def _submit(self):
        """Submit everything queued and wait for it."""
        with self._lock:
            if self._pending:
                self._sequence.eval()
                if self._profiled is not None:
                    self._collect_times()
                self._sequence.clear()
                self.counters.submits += 1
                self.counters.host_syncs += 1
                self._pending = 0
            self._staging_used = 0

    def synchronize(self):
        self._submit()

    def profiling(self, on):
        """While on, dispatches are recorded into a sequence that writes a timestamp after each
        one (where the device supports timestamps), and their times go to vkgrad.profiler."""
        with self._lock:
            self._submit()
            if on == (self._profiled is not None):
                return
            self._profiled = [] if on else None
            stamps = MAX_PENDING + 1 if on and self.info.get("timestamps_supported") else 0
            self._sequence = self.manager.sequence(0, stamps)

    def _collect_times(self):
        seconds = None
        if self.info.get("timestamps_supported"):
            ticks = self._sequence.get_timestamps()
            scale = self.info.get("timestamp_period", 1.0) * 1e-9
            seconds = [(b - a) * scale for a, b in zip(ticks, ticks[1:])]
        profiler.add_kernel_times(self._profiled, seconds)
        self._profiled = []

    def run(self, op, *args, **params):
        return op.vulkan(self, *args, **params)
