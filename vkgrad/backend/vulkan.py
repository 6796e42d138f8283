"""The Vulkan backend, through Kompute (`kp`, built with the patch in third_party/kompute).

Memory model: device-local *arena* buffers (chunks) hold every tensor, sub-allocated by
`ArenaPool`, and one host-visible *staging* buffer (host-cached where the device offers it)
carries bytes in and out, by vkCmdCopyBuffer of word ranges (the patched Kompute's
OpBufferCopy), as do a compiled step's contiguous argument copies. The arena starts as one
chunk and grows on demand: a request that fits in no chunk gets a new one of max(request, chunk
size) bytes, within the device-local heap (or
VKGRAD_ARENA_MB); a tensor larger than one chunk may be (maxStorageBufferRange,
maxMemoryAllocationSize, Kompute's 32-bit sizes) is refused (TensorTooLargeError). A block
never spans two chunks. Operands are addressed by element offsets within their chunk in push
constants (DeviceArray.start, a `Start` that knows its chunk); a dispatch binds the chunks its
operands live in as an array of ARENA_SLOTS storage buffers, and launch() writes each operand's
slot into the kernel's push word `slots` (kernels.Layout; vk.Kernel code, which has none, gets
the slot added to its start: common.glsl's ARENA(w)). While the arena has at most ARENA_SLOTS chunks every
kernel binds them all, slot = chunk, so the combination changes only when the arena grows; past
that a kernel binds its own operands' chunks. Each combination met is one descriptor set, made
on first use, running the kernel's one pipeline (the patched Kompute's algorithm_sharing).
What selects code paths (op codes,
modes, operand dtypes) is given as specialization constants instead, so the driver compiles each
combination into straight-line code: one pipeline per (kernel variant, constants), created on
first use through the Manager's pipeline cache, which is kept on disk across runs
(pipeline_cache.py). CPU drivers such as lavapipe run every arm of a branch under a mask, so a
run-time switch over 49 ops cost 7x the op itself there.

Submission: dispatches are recorded into a command buffer and submitted when the host needs data
(or the queue grows long) without waiting; the host waits only when it reads a value (to_numpy,
synchronize) or needs staging room, and then for everything it submitted. All work goes to one
queue. Ordering is by barriers, which the backend places itself (the patched Kompute records
none): each launch declares the operands it reads and writes (`reads=`, `writes=`), `Hazards`
tracks the arena and staging words read and written since the last barrier, and a dispatch gets
one global barrier before it only if it reads a word still being written or writes a word still
being read or written (a copy: or follows a dispatch, or a dispatch a copy; see Hazards); a
launch that declares nothing gets one unless nothing is pending, and counts as touching
everything. Barriers cover the compute and transfer stages. Every submission ends with one
barrier (compute and copy writes before later compute and copy accesses, and before host
reads), so work submitted later, or read by the
host after its fence, is ordered after it without tracking across submissions. Reused arena words
are covered by the same rule: a new owner's first write waits for the old owner's queued readers.
A compiled step (vkgrad.compile) is recorded once into a command buffer of its own, with its
barriers placed the same way, and every replay submits it again (see _record_replay, replay);
it ends by copying its small results to staging, so that reading its loss submits nothing.
vk.stats() counts the barriers recorded into submitted work (`barriers`) and the dispatches
recorded into command buffers (`dispatches_recorded`: a replay records none).

Device-side errors: index tensors on the device are checked by the kernels that read them, since
the host never sees their values. The staging buffer's last word is the *error word*: a kernel
that finds an index out of range writes its op's code there (see error_code) unless an earlier
error's code is there already, so the first in queue order wins, and goes on with the index
clamped, touching no memory outside its operands. The host reads the word, mapped memory, after
each wait it makes anyway and clears it; the next read of a value (to_numpy) or synchronize()
raises IndexError naming the op. No submit or wait is added, and the device stays usable.
"""
import bisect
import gc
import os
import pathlib
import threading
import weakref
from math import inf, prod

import numpy as np

from .. import kernels, layout, profiler
from . import loader
from .base import Backend, Buffer
from .pipeline_cache import PipelineCache

SPIRV_DIR = pathlib.Path(__file__).resolve().parent.parent / "_spirv"
ALIGN_WORDS = 16                  # 64-byte sub-allocation granularity
LARGE_WORDS = 1 << 18             # blocks of 1 MiB and more are cut from the top of free space
MAX_GROUPS = kernels.MAX_GROUPS   # the grid's cap (a module global: tests lower it)
MAX_PENDING = 256                 # dispatches queued before they are submitted (the device starts)
MAX_BUFFER_BYTES = (1 << 32) - (1 << 16)  # Kompute sizes buffers with 32-bit integers
# A chunk is at most one buffer; the pool numbers words so that chunk c's are [c * CHUNK_SPAN,
# c * CHUNK_SPAN + its size): no free run, and so no block, ever spans two chunks.
DEFAULT_CHUNK_BYTES = 512 << 20   # a new chunk's size unless VKGRAD_ARENA_CHUNK_MB says
CHUNK_SPAN = 1 << 30              # words: more than MAX_BUFFER_BYTES holds
ERROR_WORDS = ALIGN_WORDS         # staging's top words, kept from transfers; the last: errors
MAX_IN_FLIGHT = 64                # submissions queued before the host waits for them
ARENA, STAGING = 0, 1             # the arena's chunks (by pool word) and staging, for Hazards
MAX_ARGUMENT_COPIES = 1024        # compiled steps' argument copies kept (see _argument_copy)
MAX_TRACKED = 64                  # ranges Hazards tracks before it asks for a barrier anyway
PREFETCH_WORDS = 1024            # staging words (below ERROR_WORDS) for compiled steps' results
PREFETCH_MAX = 16                 # words of one result read back within its replay's submission
# Vulkan flags for the barriers (VkAccessFlagBits, VkPipelineStageFlagBits)
SHADER_READ, SHADER_WRITE, TRANSFER_READ, TRANSFER_WRITE, HOST_READ = \
    0x20, 0x40, 0x800, 0x1000, 0x2000
COMPUTE_STAGE, TRANSFER_STAGE, HOST_STAGE = 0x800, 0x1000, 0x4000


MIN_TIMESTAMP_BITS = 36  # what timestampComputeAndGraphics promises every compute queue


def timestamp_support(info, details):
    """(bits, None) where profiling can time dispatches on the device that Kompute's `info`
    describes, else (0, why), naming it. `details` is the loader's entry for the device (its
    compute queue family's timestamp_valid_bits), or None where the loader cannot tell, which
    leaves the MIN_TIMESTAMP_BITS that timestampComputeAndGraphics guarantees. Kompute makes a
    query pool only where timestampComputeAndGraphics holds; a family with 0 valid bits writes
    no timestamps, and a timestampPeriod of 0 gives no time."""
    name = info.get("device_name", "this device")
    if not info.get("timestamps_supported"):
        return 0, (f"{name} does not write timestamps on every compute queue "
                   "(timestampComputeAndGraphics is false)")
    bits = MIN_TIMESTAMP_BITS if details is None else details.get("timestamp_valid_bits", 0)
    if not bits:
        return 0, (f"{name}: its compute queue family "
                   f"{details.get('compute_queue_family')} has timestampValidBits 0")
    if not info.get("timestamp_period", 0) > 0:
        return 0, f"{name}: timestampPeriod is {info.get('timestamp_period')}"
    return min(bits, 64), None


def timestamp_seconds(ticks, bits, period_ns):
    """Seconds between consecutive timestamps `ticks` of a counter with `bits` valid bits that
    advances once every `period_ns` nanoseconds (timestampPeriod): each difference modulo
    2^bits, so a counter narrower than 64 bits that wraps between two stamps still counts the
    time between them (anything above the valid bits is ignored)."""
    mask = (1 << bits) - 1
    return [((b - a) & mask) * period_ns * 1e-9 for a, b in zip(ticks, ticks[1:])]


# OpSpecConstantOp's integer operations that sizes are written with: opcode -> (a, b) -> value
_SPEC_OPS = {128: lambda a, b: a + b, 130: lambda a, b: a - b, 132: lambda a, b: a * b,
             134: lambda a, b: a // b if b else inf, 137: lambda a, b: a % b if b else inf}


def spirv_needs(spirv, spec=()):
    """(bytes of shared memory, (x, y, z) workgroup size) a SPIR-V compute module declares:
    the sizes of its Workgroup-storage variables (arrays, vectors and structs of 32- and 16-bit
    scalars, packed; lengths from constants and from specialization constants, which take their
    value from `spec` (constant_id i is spec[i], as launch passes them) or else their default,
    and unsigned sums, differences, products, quotients and remainders of those: inf where a
    length cannot be read) and its LocalSize (or the WorkgroupSize built-in constant that
    overrides it)."""
    words = np.frombuffer(spirv, np.uint32)
    sizes, constants, pointers, composites, spec_ids = {}, {}, {}, {}, {}
    shared, local, builtin = 0, (1, 1, 1), None
    i = 5  # after the header
    while i < len(words):
        count, op = int(words[i]) >> 16, int(words[i]) & 0xFFFF
        w = [int(v) for v in words[i + 1:i + count]]
        if op in (20, 21, 22):       # OpTypeBool, OpTypeInt, OpTypeFloat
            sizes[w[0]] = 4 if op == 20 else w[1] // 8
        elif op in (23, 24):         # OpTypeVector, OpTypeMatrix
            sizes[w[0]] = sizes[w[1]] * w[2]
        elif op == 28:               # OpTypeArray (element, length id); other types stay unsized
            sizes[w[0]] = sizes.get(w[1], inf) * constants.get(w[2], inf)
        elif op == 30:               # OpTypeStruct
            sizes[w[0]] = sum(sizes.get(m, inf) for m in w[1:])
        elif op == 32:               # OpTypePointer (storage class, type)
            pointers[w[0]] = (w[1], w[2])
        elif op == 43:               # OpConstant (type, id, value)
            constants[w[1]] = w[2]
        elif op == 50:               # OpSpecConstant (type, id, default)
            sid = spec_ids.get(w[1])
            constants[w[1]] = spec[sid] if sid is not None and sid < len(spec) else w[2]
        elif op == 52 and w[2] in _SPEC_OPS:  # OpSpecConstantOp (type, id, opcode, a, b)
            a, b = constants.get(w[3], inf), constants.get(w[4], inf)
            value = _SPEC_OPS[w[2]](a, b) if inf not in (a, b) else inf
            if value != inf:
                constants[w[1]] = value % (1 << 32)
        elif op in (44, 51):         # OpConstantComposite, OpSpecConstantComposite
            composites[w[1]] = w[2:]
        elif op == 59 and pointers[w[0]][0] == 4:  # OpVariable in Workgroup storage
            shared += sizes.get(pointers[w[0]][1], inf)
        elif op == 16 and w[1] == 17:  # OpExecutionMode LocalSize x y z
            local = tuple(w[2:5])
        elif op == 71 and w[1:3] == [11, 25]:  # OpDecorate BuiltIn WorkgroupSize
            builtin = w[0]
        elif op == 71 and w[1] == 1:  # OpDecorate SpecId
            spec_ids[w[0]] = w[2]
        i += count
    if builtin in composites:
        local = tuple(constants[c] for c in composites[builtin])
    return shared, local


def spirv_addresses_one_chunk(spirv):
    """Whether a SPIR-V module addresses memory as one buffer: it reads or writes `arena`
    (binding 2, through an access chain or an array length), or declares binding 0 as one
    buffer rather than common.glsl's array of chunks."""
    words = np.frombuffer(spirv, np.uint32)
    bound, used, pointers, arrays, variables, i = {}, set(), {}, set(), {}, 5
    while i < len(words):
        count, op = int(words[i]) >> 16, int(words[i]) & 0xFFFF
        w = [int(v) for v in words[i + 1:i + count]]
        if op == 71 and w[1] == 33:  # OpDecorate Binding
            bound[w[0]] = w[2]
        elif op in (65, 66, 67, 68):  # OpAccessChain, InBounds, Ptr, OpArrayLength: base
            used.add(w[2])
        elif op == 32:  # OpTypePointer (id, storage class, type)
            pointers[w[0]] = w[2]
        elif op in (28, 29):  # OpTypeArray, OpTypeRuntimeArray
            arrays.add(w[0])
        elif op == 59:  # OpVariable (pointer type, id, storage class)
            variables[w[1]] = w[0]
        i += count
    return any(b == 2 and v in used or b == 0 and pointers.get(variables.get(v)) not in arrays
               for v, b in bound.items())


def spirv_reads_chunks_readonly(spirv):
    """Whether a SPIR-V module declares a read-only view of binding 0 (common.glsl's array of
    chunks), as matmul.comp's tiled kernel does to read vectors of words: the validation layer
    counts every read through such a view as a read of each bound chunk whole (see Hazards)."""
    words = np.frombuffer(spirv, np.uint32)
    binding0, readonly, pointers, elements, variables, i = set(), set(), {}, {}, {}, 5
    while i < len(words):
        count, op = int(words[i]) >> 16, int(words[i]) & 0xFFFF
        w = [int(v) for v in words[i + 1:i + count]]
        if op == 71 and w[1:] == [33, 0]:  # OpDecorate (id) Binding 0
            binding0.add(w[0])
        elif op == 71 and w[1] == 24 or op == 72 and w[2] == 24:  # (Member) NonWritable
            readonly.add(w[0])
        elif op == 32:  # OpTypePointer (id, storage class, type)
            pointers[w[0]] = w[2]
        elif op in (28, 29):  # OpTypeArray, OpTypeRuntimeArray (id, element type, ...)
            elements[w[0]] = w[1]
        elif op == 59:  # OpVariable (pointer type, id, storage class)
            variables[w[1]] = w[0]
        i += count
    for v in binding0:
        block = pointers.get(variables.get(v))
        if v in readonly or block in readonly or elements.get(block) in readonly:
            return True
    return False


class TensorTooLargeError(MemoryError):
    """A tensor larger than one chunk of the arena, so than one storage-buffer binding, may
    be: no kernel could address it whole."""


class Block:
    """A run of arena words owned by one or more views; back to the pool when collected.
    `recording`: the Recording in progress that allocated or addressed it, if any (its words then
    go back to that recording's own free space when it dies)."""
    __slots__ = ("pool", "word", "words", "recording", "__weakref__")

    def __init__(self, pool, word, words):
        self.pool, self.word, self.words, self.recording = pool, word, words, None

    def __del__(self):
        try:
            self.pool.release(self)
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass


class FreeSpace:
    """Free words as sorted, coalesced (word, size) runs (no two touch). A request under
    LARGE_WORDS is cut from the bottom of the lowest run that holds it, a larger one from the top
    of the highest: long-lived small tensors (parameters, optimizer state) gather at the bottom of
    the arena and the large temporaries of a step come and go above them, so the small ones never
    split the room the large ones need. Both cost O(runs)."""
    __slots__ = ("runs",)

    def __init__(self, runs=()):
        self.runs = list(runs)

    def take(self, words):
        """The first word of `words` free words, now taken, or None if no run holds them."""
        runs, small = self.runs, words < LARGE_WORDS
        for i in range(len(runs)) if small else reversed(range(len(runs))):
            word, size = runs[i]
            if size < words:
                continue
            if size == words:
                del runs[i]
            elif small:
                runs[i] = (word + words, size - words)
            else:
                runs[i] = (word, size - words)
                word += size - words
            return word
        return None

    def put(self, word, words):
        """Make [word, word + words) free, merged with the runs it touches."""
        runs = self.runs
        i = bisect.bisect(runs, (word,))
        end = word + words
        if i < len(runs) and runs[i][0] == end:
            end += runs.pop(i)[1]
        if i and runs[i - 1][0] + runs[i - 1][1] == word:
            runs[i - 1] = (runs[i - 1][0], end - runs[i - 1][0])
        else:
            runs.insert(i, (word, end - word))


class ArenaPool:
    """Sub-allocator over the arena (see FreeSpace for where blocks go): its chunks, one of
    `capacity_words` to start with, and more from `grow(words)` (which creates a chunk of at
    least `words` and returns its size, or raises MemoryError) when a request fits in none.
    Chunk c's words are numbered from c * CHUNK_SPAN (`chunks` holds their sizes).

    While a step is captured (vkgrad.compile), the words of every block the recording touched
    that dies go to the recording's own free space, not back to the pool: its recorded
    dispatches address them, and replays will again. The capturing thread allocates from there
    first, so its temporaries reuse each other's room as in eager execution; other threads never
    get those words. They stay counted in use until the recording is dropped.

    Releases are queued and applied at the next allocation: a Block can die in a garbage
    collection that starts inside the allocator itself.

    Reusing a block while earlier queued kernels still read it is safe: all work runs in one queue,
    and a dispatch that writes words an earlier one in its submission read (and has not been
    barriered from) gets a barrier first (see Hazards); earlier submissions each ended with a
    barrier. So a later writer waits for every earlier reader, whether or not the host waited.
    """

    def __init__(self, capacity_words, grow=None):
        self.capacity, self.chunks, self.grow = capacity_words, [capacity_words], grow
        self.free = FreeSpace([(0, capacity_words)])
        self.released = []           # [(FreeSpace, word, words)] to return there
        self.in_use = 0
        self.peak = 0
        self.lock = threading.RLock()
        self.recording = None        # the Recording in progress on this device, if any

    def capture(self):
        """The Recording the calling thread is capturing, if any."""
        recording = self.recording
        return recording if recording is not None and recording.owner == threading.get_ident() \
            else None

    def allocate(self, words):
        words = max(ALIGN_WORDS, -(-words // ALIGN_WORDS) * ALIGN_WORDS)
        with self.lock:
            recording = self.capture()
            word = self._take(words, recording)
            if word is None:
                gc.collect()  # cycles may hold dead tensors' blocks
                word = self._take(words, recording)
            if word is None and self.grow is not None:
                self._add_chunk(self.grow(words))
                word = self._take(words, recording)
            if word is None:
                raise MemoryError(
                    f"Vulkan arena exhausted: {words * 4} bytes requested, {self.in_use * 4} of "
                    f"{self.capacity * 4} in use; set VKGRAD_ARENA_MB to a larger size")
            self.peak = max(self.peak, self.in_use)
            block = Block(self, word, words)
            if recording is not None:  # its words may be addressed by recorded dispatches
                recording.touch(block)
        return block

    def _add_chunk(self, words):
        self.free.put(len(self.chunks) * CHUNK_SPAN, words)
        self.chunks.append(words)
        self.capacity += words

    def _take(self, words, recording):
        """Words from the capturing thread's recording (counted in use already), else the pool."""
        self._apply_releases()
        if recording is not None:
            word = recording.free.take(words)
            if word is not None:
                return word
        word = self.free.take(words)
        if word is not None:
            self.in_use += words
        return word

    def release(self, block):
        with self.lock:
            if block.recording is not None:
                self.released.append((block.recording.free, block.word, block.words))
            else:
                self.release_words(block.word, block.words)

    def release_words(self, word, words):
        with self.lock:
            self.released.append((self.free, word, words))
            self.in_use -= words

    def _apply_releases(self):
        while self.released:
            space, word, words = self.released.pop()
            space.put(word, words)

    def begin_recording(self):
        """Start a Recording for the calling thread; None if another one is in progress."""
        with self.lock:
            if self.recording is not None:
                return None
            self.recording = Recording(self)
            return self.recording

    def end_recording(self):
        """Finish the calling thread's Recording and return it."""
        with self.lock:
            recording = self.capture()
            if recording is None:
                raise RuntimeError("this thread is not capturing a step on this device")
            recording.finish()
            self._apply_releases()  # the words of blocks that died while it recorded
            self.recording = None
            return recording


class Start(int):
    """An operand's first element as kernels get it (DeviceArray.start): its index in elements
    of its dtype from the start of its chunk, the int's value, and the chunk it lives in.
    launch() binds the chunks of a dispatch's operands at slots and writes each operand's slot
    into the kernel's `slots` word (kernels.Push); for vk.Kernel code it adds `slot << shift`
    to each Start it finds instead (common.glsl: the slot bits sit at bit ARENA_SLOT_SHIFT of a
    word address, log2(elements per word) higher in an element index). Adding an int keeps
    the chunk (an element further on in the same tensor); other arithmetic gives a plain int,
    which launch takes as being in slot 0."""

    def __new__(cls, value, chunk, shift):
        self = super().__new__(cls, value)
        self.chunk, self.shift = chunk, shift
        return self

    def __add__(self, other):
        if isinstance(other, Start):
            return int(self) + int(other)
        if not isinstance(other, int):
            return int(self) + other
        return Start(int(self) + other, self.chunk, self.shift)

    __radd__ = __add__


_LOG2 = {1: 0, 2: 1, 4: 2}  # elements per word -> their bits in an index


class DeviceArray(Buffer):
    """A strided view of arena memory (a Buffer): a Block plus shape, strides and offset in
    elements."""
    __slots__ = ("block",)

    def __init__(self, backend, block, shape, strides, offset, dtype):
        super().__init__(backend, shape, strides, offset, dtype)
        self.block = block

    @property
    def start(self):
        """Index of this view's first element in elements of its dtype from its chunk's start,
        as a Start (which says the chunk). Every kernel finds its operands by these indices, so
        while a capture records, reading one in the capturing thread marks the block as used by
        the recorded work."""
        block = self.block
        if block.pool.recording is not None and block.recording is None:
            recording = block.pool.capture()
            if recording is not None:
                recording.touch(block)
        chunk, word = divmod(block.word, CHUNK_SPAN)
        per = self.dtype.per_word
        return Start(word * per + self.offset, chunk, kernels.ARENA_SLOT_SHIFT + _LOG2[per])

    def view(self, shape, strides, offset):
        return DeviceArray(self.backend, self.block, shape, strides, offset, self.dtype)

    def same_memory(self, other):
        return isinstance(other, DeviceArray) and other.block is self.block


class Hazards:
    """The words that dispatches and copies queued since the last barrier read and write, as
    (buffer, first, end) ranges (buffer ARENA, in pool words, which number every chunk's words
    apart, or STAGING), or `everything` after a dispatch that declared nothing.
    `conflicts` says whether a dispatch must wait for them (read after write, write after read,
    write after write); `place` takes a dispatch in and says whether to record a barrier first.
    A copy (vkCmdCopyBuffer) also waits for every pending dispatch and a dispatch for every
    pending copy, whatever their ranges: the validation layer counts a dispatch as writing all
    of every arena chunk it binds, while it tracks copies by their regions. Past MAX_TRACKED
    ranges it says so anyway, which bounds the cost of the check (a long run of independent
    kernels, an optimizer's updates of many parameters, then shares one barrier per run).
    A kernel with a read-only view of the chunks (spirv_reads_chunks_readonly: matmul.comp's
    tiled GEMMs) counts as reading every chunk it binds whole, as the layer counts it: it
    reported the next dispatch's writes, of words the GEMM never read, as writes after reads
    (a view it never writes counts as read whether or not declared readonly; a view a kernel
    also writes through, as elementwise.comp's vectors, is reported as nothing of the kind).
    So the next writer waits for such a kernel."""
    __slots__ = ("reads", "writes", "everything", "kernels", "copies")

    def __init__(self):
        self.clear()

    def clear(self):
        self.reads, self.writes, self.everything = [], [], False
        self.kernels = self.copies = False

    def conflicts(self, reads, writes, copy=False):
        """Whether ranges `reads`, `writes` (None: unknown, so anything) of a dispatch (or of a
        copy, `copy`) touch pending work."""
        if writes is None:
            return self.everything or bool(self.reads or self.writes)
        if self.everything or len(self.reads) + len(self.writes) >= MAX_TRACKED \
                or (self.kernels if copy else self.copies):
            return True
        return any(_overlaps(r, self.writes) for r in reads) or \
            any(_overlaps(w, self.writes) or _overlaps(w, self.reads) for w in writes)

    def add(self, reads, writes, copy=False):
        if writes is None:
            self.everything = True
        else:
            self.reads += reads
            self.writes += writes
        if copy:
            self.copies = True
        else:
            self.kernels = True

    def place(self, reads, writes, copy=False):
        """Take in a dispatch's (or a copy's) ranges; returns whether a barrier must be
        recorded before it (and if so, forgets what came before that barrier)."""
        barrier = self.conflicts(reads, writes, copy)
        if barrier:
            self.clear()
        self.add(reads, writes, copy)
        return barrier


def _overlaps(range_, ranges):
    buffer, first, end = range_
    return any(b == buffer and f < end and first < e for b, f, e in ranges)


def _ranges(arrays):
    """The arena words of `arrays` (DeviceArrays, whole blocks; ranges pass through; None and
    scalars are skipped)."""
    out = []
    for a in arrays:
        if isinstance(a, DeviceArray):
            out.append((ARENA, a.block.word, a.block.word + a.block.words))
        elif isinstance(a, tuple):
            out.append(a)
    return out


def _word_span(array):
    """(first pool word, words) of a contiguous DeviceArray's elements, or None."""
    if not array.is_contiguous():
        return None
    per = array.dtype.per_word
    first, skip = divmod(array.offset, per)
    return array.block.word + first, -(-(skip + array.size) // per)


def _legacy_start(family, start, slot):
    """A start with its slot in its top bits, as vk.Kernel code (common.glsl's ARENA(w)) takes
    it: such code reaches only a chunk's first 2^ARENA_SLOT_SHIFT words."""
    if start >> start.shift:
        raise RuntimeError(
            f"kernel {family}: an operand starts {int(start)} elements into its arena chunk, "
            f"beyond the 2^{kernels.ARENA_SLOT_SHIFT} words that vk.Kernel code (ARENA(w), "
            "slot in the top bits) addresses; give it a smaller tensor, or set "
            "VKGRAD_ARENA_CHUNK_MB to 512 or less")
    return start + (slot << start.shift)


def _chunks(family, push, reads, writes):
    """The arena chunks a dispatch binds, in slot order: those of the Starts among its push
    constants (the declared operands' must be among them when it spans several chunks)."""
    chunks = sorted({v.chunk for v in push if isinstance(v, Start)})
    declared = {r[1] // CHUNK_SPAN for r in [*(reads or ()), *(writes or ())]
                if r[0] == ARENA}
    if len(declared | set(chunks)) > 1 and not declared <= set(chunks):
        raise RuntimeError(f"kernel {family}: an operand it declares lives in an arena chunk "
                           "that no start among its push constants names (pass DeviceArray.start "
                           "itself, not a value computed from it)")
    if len(chunks) > kernels.ARENA_SLOTS:
        raise RuntimeError(f"kernel {family}: its operands live in {len(chunks)} arena chunks; "
                           f"a dispatch binds at most {kernels.ARENA_SLOTS}")
    return tuple(chunks) or tuple(sorted(declared)) or (0,)


class Recording:
    """What a capture keeps (see vkgrad.compile): the dispatches queued while it recorded, with
    their profiler labels and the ranges they read and write, and the arena memory they may
    address, for as long as the recording lives: every block allocated while recording, and every
    older block a dispatch addressed. Those still alive at the end are held; the words of those
    that died form `free` (see ArenaPool), reused while recording and reserved afterwards.
    `owner`: the capturing thread. `sequence`: the dispatches recorded once into a command buffer
    of their own (with their barriers, `barriers` of them), which every replay submits again,
    made at the first replay; it ends with copies of the step's small results into staging
    words of its own (`prefetch`: (first, end, staging word) per result's arena words;
    `staging`: those words, (word, words)), so that reading one costs no submission."""
    __slots__ = ("pool", "owner", "dispatches", "touched", "blocks", "free", "sequence",
                 "barriers", "prefetch", "staging")

    def __init__(self, pool):
        self.pool, self.owner = pool, threading.get_ident()
        self.dispatches = []              # (kp.OpAlgoDispatch, label, op name, reads, writes)
        self.touched = weakref.WeakSet()  # blocks allocated or addressed so far, while alive
        self.blocks, self.free = (), FreeSpace()
        self.sequence, self.barriers, self.prefetch, self.staging = None, 0, (), []

    def touch(self, block):
        block.recording = self
        self.touched.add(block)

    def finish(self):
        """Hold the blocks still alive; from now on `free` changes no more."""
        self.blocks = set(self.touched)
        for block in self.blocks:
            block.recording = None  # their words are the pool's again once the recording dies
        self.touched = None

    def __del__(self):
        try:
            for word, words in self.free.runs:
                self.pool.release_words(word, words)
            for space, word, words in self.staging:
                self.pool.released.append((space, word, words))
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
        self._set_arena_limits(info)
        first = min(self.chunk_bytes, self.arena_limit)
        staging_bytes = min(int(os.environ.get("VKGRAD_STAGING_MB", "32")) << 20, first)
        self._chunks = []           # the arena's chunks (kp tensors), in the pool's order
        manager.set_algorithm_array_binding(kernels.ARENA_SLOTS)
        self._staging = manager.tensor_t(np.zeros(staging_bytes // 4, np.uint32),
                                         tensor_type=kp.TensorTypes.host)
        mapped = self._staging.data()  # the mapped memory itself, not a copy
        self._staging_words = mapped[:-ERROR_WORDS]
        self._error_word = mapped[-1:]
        # the top PREFETCH_WORDS words of _staging_words are kept for compiled steps' results
        reserved = min(PREFETCH_WORDS, self._staging_words.size // 4 // ALIGN_WORDS * ALIGN_WORDS)
        self._staging_size = self._staging_words.size - reserved  # handed out between waits
        self._prefetch_space = FreeSpace([(self._staging_size, reserved)] if reserved else [])
        self._prefetched = ()       # the latest replay's results in staging, while nothing since
        # staging as launch(reads=, writes=) name it: whole, as the validation layer counts a
        # kernel that may touch one word of a binding (the error word, say) as touching it all
        self.staging_range = (STAGING, 0, mapped.size)
        self._error_names = []      # error code - 1 -> the op named in the IndexError
        self._error = 0             # the code found by the last waits, not yet raised
        self.counters.device_bytes_allocated += staging_bytes
        self.pool = ArenaPool(self._new_chunk(first // 4), self._grow)
        self._staging_used = 0      # words of staging handed out since the last wait
        self._algorithms = {}
        self._argument_copies = {}  # (src word, offset, strides, dst word) -> a _queue entry
        self.pipeline_cache = PipelineCache(manager, info)  # on disk across runs
        self._user_spirv = {}       # (family, variant) -> SPIR-V of kernels registered at run time
        self._arena_users = {}      # (family, variant) -> whether it addresses `arena`
        self._readonly_views = {}   # (family, variant) -> whether it views the chunks read-only
        self._pipelines = {}        # (family, variant, spec) -> the Algorithm with its pipeline
        self._limit_errors = {}     # (family, variant, spec) -> why it exceeds the device, or None
        self._profiled = None       # while profiling: [(kernel, op)] per queued dispatch
        self._timestamps = None     # (bits, why not) once asked (see `timestamp_bits`)
        self._subgroups = None      # whether kernels use subgroup arithmetic (see `subgroups`)
        self._sequence = manager.sequence()  # where eager dispatches are recorded
        self._spare = []            # eager sequences done with, to record into again
        self._in_flight = []        # sequences submitted since the last wait (eager, replays)
        self._submitted = 0         # submissions since the last wait
        self._pending = 0           # dispatches recorded into _sequence, not yet submitted
        self._hazards = Hazards()   # what _sequence's dispatches since its last barrier touch
        # kernels and copies (vkCmdCopyBuffer) before later kernels and copies
        stages, written = COMPUTE_STAGE | TRANSFER_STAGE, SHADER_WRITE | TRANSFER_WRITE
        accessed = SHADER_READ | SHADER_WRITE | TRANSFER_READ | TRANSFER_WRITE
        self._barrier = kp.OpMemoryBarrier([], written, accessed, stages, stages)
        # the end of every submission: also before host reads of staging after the fence
        self._end_barrier = kp.OpMemoryBarrier([], written, accessed | HOST_READ, stages,
                                               stages | HOST_STAGE)

    @property
    def subgroups(self):
        """The subgroup size kernels may rely on, or 0: kernels with a subgroup variant (reduce,
        rownorm: subgroupAdd/Max/Min, subgroupAny, gl_SubgroupID) use it where the device offers
        basic, vote and arithmetic subgroup operations in compute shaders (read through the
        loader on first use) with a power-of-two size of at most 128, and their shared-memory
        variants elsewhere. Assign False (or set VKGRAD_SUBGROUPS=0 before the device opens) to
        force the shared-memory variants, True for the device's default; tests run both."""
        if self._subgroups is None:
            self.subgroups = os.environ.get("VKGRAD_SUBGROUPS", "1") != "0"
        return self._subgroups

    @subgroups.setter
    def subgroups(self, on):
        size = 0
        if on:
            mine = self._loader_entry() or {}
            size = mine.get("subgroup_size") or 0
            if not {"basic", "vote", "arithmetic"} <= set(mine.get("subgroup_operations", ())) \
                    or size & (size - 1) or size > 128:
                size = 0
        self._subgroups = size

    @property
    def timestamp_bits(self):
        """The valid bits of the device's timestamps on the queue vkgrad uses, or 0 where
        profiling cannot time dispatches there (`timestamps_missing` says why, naming the
        device); read through the loader on first use (timestamp_support)."""
        if self._timestamps is None:
            self._timestamps = timestamp_support(self.info, self._loader_entry())
        return self._timestamps[0]

    def _loader_entry(self):
        """What the Vulkan loader reports of this device (loader.physical_devices' entry: its
        subgroups, queue families, extensions), or None where the loader cannot tell or lists
        devices differently from Kompute (the entry at this index names another device)."""
        try:
            found = loader.physical_devices()
        except loader.LoaderError:
            return None
        index = getattr(getattr(self, "device", None), "index", 0)
        mine = found[index] if index < len(found) else None
        return mine if mine is not None and mine["name"] == self.info.get("device_name") else None

    @property
    def timestamps_missing(self):
        """Why dispatches cannot be timed on this device (None where they can)."""
        return None if self.timestamp_bits else self._timestamps[1]

    # ---- memory ---------------------------------------------------------------------------------
    def _set_arena_limits(self, info):
        """The arena's sizes: `max_chunk_bytes`, the most one chunk (so one tensor) may hold:
        what one storage-buffer binding addresses (maxStorageBufferRange), one allocation may
        be (maxMemoryAllocationSize) and Kompute sizes (MAX_BUFFER_BYTES); `chunk_bytes`,
        the size of a new chunk (VKGRAD_ARENA_CHUNK_MB, default DEFAULT_CHUNK_BYTES, at most
        the most one may hold; a larger tensor gets a chunk of its size);
        `arena_limit`, the most all chunks may hold together (VKGRAD_ARENA_MB, default the
        device-local heap's size). One chunk only where kernels cannot index chunks."""
        most = min(info["max_storage_buffer_range"], MAX_BUFFER_BYTES,
                   info.get("max_memory_allocation_size") or MAX_BUFFER_BYTES)
        self.max_chunk_bytes = most // (ALIGN_WORDS * 4) * (ALIGN_WORDS * 4)
        chunk_mb = os.environ.get("VKGRAD_ARENA_CHUNK_MB")
        self.chunk_bytes = min(self.max_chunk_bytes,
                               int(chunk_mb) << 20 if chunk_mb else DEFAULT_CHUNK_BYTES)
        limit = os.environ.get("VKGRAD_ARENA_MB")
        self.arena_limit = int(limit) << 20 if limit else \
            info.get("device_local_heap_size") or self.chunk_bytes
        if not info.get("storage_buffer_array_dynamic_indexing"):
            self.arena_limit = min(self.arena_limit, self.chunk_bytes)

    def _new_chunk(self, words):
        """Allocate a chunk of `words` from the driver; returns `words`."""
        self._chunks.append(self.manager.tensor_t(np.zeros(words, np.uint32),
                                                  tensor_type=self._kp.TensorTypes.storage))
        self.counters.device_bytes_allocated += words * 4
        return words

    def _grow(self, words):
        """A new chunk for a request of `words` that fits in none (ArenaPool.grow): of
        max(request, chunk size) words, within what the arena may still take."""
        room = self.arena_limit - self.pool.capacity * 4
        size = min(max(words * 4, self.chunk_bytes), self.max_chunk_bytes, room)
        if size < words * 4:
            raise MemoryError(
                f"Vulkan arena exhausted: {words * 4} bytes requested, {self.pool.in_use * 4} "
                f"of {self.pool.capacity * 4} in use in {len(self._chunks)} chunks, and a new "
                f"chunk would pass the arena's limit of {self.arena_limit} bytes; set "
                "VKGRAD_ARENA_MB to a larger size")
        return self._new_chunk(size // 4)

    def empty(self, shape, dtype):
        shape = tuple(shape)
        words = -(-prod(shape) // dtype.per_word)
        if words * 4 > self.max_chunk_bytes:
            raise TensorTooLargeError(
                f"a tensor of shape {shape} ({dtype.name}) needs {words * 4} bytes, more than "
                f"one storage-buffer binding addresses on {self.info['device_name']}: at most "
                f"{self.max_chunk_bytes} bytes (maxStorageBufferRange "
                f"{self.info['max_storage_buffer_range']}, maxMemoryAllocationSize "
                f"{self.info.get('max_memory_allocation_size')}, and Kompute's 32-bit sizes)")
        return DeviceArray(self, self.pool.allocate(words), shape,
                           layout.contiguous_strides(shape), 0, dtype)

    def from_numpy(self, array, dtype):
        self._refuse_transfer_while_recording("copies host data to the device (vkgrad.tensor "
                                              "or .to() inside the step)")
        host = np.asarray(array, dtype=dtype.np_dtype, order="C")
        out = self.empty(host.shape, dtype)
        raw = host.reshape(-1).view(np.uint8)
        self.counters.transfers += 1
        self.counters.transfer_bytes += raw.size
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
        first_word, skip = divmod(array.block.word * dtype.per_word + array.offset, dtype.per_word)
        total_words = -(-(skip + n) // dtype.per_word)
        out = np.empty(total_words * 4, np.uint8)
        self.counters.transfers += 1
        self.counters.transfer_bytes += out.size
        with self._lock:
            done = 0
            word = self._prefetch_hit(first_word, total_words)
            if word is not None:  # copied to staging by the replay that wrote it
                self._wait()
                out[:] = self._staging_words[word:word + total_words].view(np.uint8)
                done = total_words
            while done < total_words:
                chunk = min(total_words - done, self._staging_room())
                word = self._staging_alloc(chunk)
                self._transfer(False, chunk, first_word + done, word)
                self._wait()
                out[done * 4:(done + chunk) * 4] = self._staging_words[word:word + chunk].view(np.uint8)
                done += chunk
            self._raise_device_error()
        return out.view(dtype.np_dtype)[skip:skip + n].reshape(array.shape)

    @property
    def recording(self):
        """The Recording the calling thread is capturing, if any."""
        return self.pool.capture()

    def _refuse_transfer_while_recording(self, what):
        if self.recording is not None:
            raise RuntimeError(f"a step being captured by vkgrad.compile {what}: a replay would "
                               "not repeat that. Pass inputs as arguments and return what you "
                               "need to read, then read it after the call")

    def _staging_room(self):
        room = self._staging_size - self._staging_used
        if room < ALIGN_WORDS:
            self._wait()  # staging space is reclaimed only once the device has consumed it
            room = self._staging_size
        return room

    def _prefetch_hit(self, first_word, words):
        """The staging word holding arena words [first_word, + words) as the latest replay
        left them, if it copied them there and nothing was queued since; else None."""
        for first, end, word in self._prefetched:
            if first <= first_word and first_word + words <= end:
                return word + first_word - first
        return None

    def _staging_alloc(self, words):
        word = self._staging_used
        self._staging_used += -(-words // ALIGN_WORDS) * ALIGN_WORDS
        return word

    def _transfer(self, to_arena, words, arena_word, staging_word):
        """Copy `words` words between staging and the arena at pool word `arena_word`."""
        arena = (ARENA, arena_word, arena_word + words)
        staging = (STAGING, staging_word, staging_word + words)  # a copy touches only these
        chunk = self._chunks[arena_word // CHUNK_SPAN]
        if to_arena:
            self._copy(self._staging, staging_word, chunk, arena_word % CHUNK_SPAN, words,
                       [staging], [arena])
        else:
            self._copy(chunk, arena_word % CHUNK_SPAN, self._staging, staging_word, words,
                       [arena], [staging])

    def _copy(self, src, src_word, dst, dst_word, words, reads, writes):
        """Queue a vkCmdCopyBuffer of `words` words from kp tensor `src` at word `src_word` to
        `dst` at `dst_word`, which reads and writes ranges `reads` and `writes` (Hazards)."""
        op = self._kp.OpBufferCopy(src, dst, src_word * 4, dst_word * 4, words * 4)
        with self._lock:
            self._queue(op, None, None, reads, writes, copy=True)

    def _argument_copy(self, dst, src):
        """The copy of DeviceArray `src` into a compiled step's input `dst` (a tensor of its own,
        of the same shape and dtype) as one vkCmdCopyBuffer, a _queue entry, where `src` is
        contiguous and starts on a word (a trailing partial word is copied whole, into `dst`'s
        own block); () where there is nothing to copy, None where a kernel must copy it. Kept
        by addresses, which a training loop's batches reuse, so a replay makes no new op."""
        key = (src.block.word, src.offset, src.strides, dst.block.word)
        entry = self._argument_copies.get(key, False)
        if entry is False:
            per, entry = src.dtype.per_word, None
            if not src.offset % per and src.is_contiguous():
                words = -(-src.size // per)
                first, into = src.block.word + src.offset // per, dst.block.word
                entry = () if not words or first == into else (
                    self._kp.OpBufferCopy(self._chunks[first // CHUNK_SPAN], self._chunks[
                        into // CHUNK_SPAN], first % CHUNK_SPAN * 4, into % CHUNK_SPAN * 4,
                        words * 4), None, None, [(ARENA, first, first + words)],
                    [(ARENA, into, into + words)], True)
            if len(self._argument_copies) >= MAX_ARGUMENT_COPIES:
                self._argument_copies.clear()
            self._argument_copies[key] = entry
        return entry

    def memory_stats(self):
        return {"arena_bytes": self.pool.capacity * 4, "in_use_bytes": self.pool.in_use * 4,
                "peak_bytes": self.pool.peak * 4, "arena_chunks": len(self.pool.chunks)}

    # ---- kernels --------------------------------------------------------------------------------
    def register_kernel(self, family, spirv):
        """Make SPIR-V compiled at run time (vkgrad.Kernel) launchable as `family`."""
        self._user_spirv[(family, "")] = spirv

    def _spirv(self, family, variant):
        spirv = self._user_spirv.get((family, variant))
        if spirv is None:
            path = SPIRV_DIR / kernels.spirv_name(family, variant)
            if not path.exists():
                raise RuntimeError(f"compiled shader {path} is missing: run `make shaders`")
            spirv = path.read_bytes()
        return spirv

    def fits(self, family, variant, spec=()):
        """Whether kernel `family`/`variant` with specialization constants `spec` fits this
        device's limits: its shared memory within maxComputeSharedMemorySize, its workgroup
        within maxComputeWorkGroupSize and maxComputeWorkGroupInvocations (variants choosers
        skip those that do not)."""
        return self._limit_error(family, variant, spec) is None

    def _limit_error(self, family, variant, spec=()):
        """Why `family`/`variant` cannot run here with `spec`, or None (read from its SPIR-V,
        once per spec)."""
        key = (family, variant, tuple(spec))
        if key not in self._limit_errors:
            shared, size = spirv_needs(self._spirv(family, variant), spec)
            limits = [(shared, self.info["max_compute_shared_memory_size"],
                       "bytes of shared memory")]
            limits += [(n, m, f"invocations along {axis}") for n, m, axis
                       in zip(size, self.info["max_work_group_size"], "xyz")]
            limits.append((prod(size), self.info["max_work_group_invocations"],
                           "invocations per workgroup"))
            self._limit_errors[key] = next(
                (f"kernel {family}{'/' + variant if variant else ''} needs {need} {what}; "
                 f"{self.info['device_name']} allows {most}"
                 for need, most, what in limits if need > most), None)
        return self._limit_errors[key]

    def _uses_arena(self, family, variant):
        """Whether the kernel addresses one buffer (`arena`: the chunk at slot 0 alone)."""
        key = (family, variant)
        if key not in self._arena_users:
            self._arena_users[key] = spirv_addresses_one_chunk(self._spirv(family, variant))
        return self._arena_users[key]

    def _views_chunks_readonly(self, family, variant):
        """Whether the kernel reads through a read-only view of the chunks (Hazards)."""
        key = (family, variant)
        if key not in self._readonly_views:
            self._readonly_views[key] = spirv_reads_chunks_readonly(self._spirv(family, variant))
        return self._readonly_views[key]

    def _algorithm(self, family, variant, spec, chunks):
        """The kernel with `spec`, binding arena chunks `chunks` at slots 0, 1, ... (the rest
        of arena_chunks repeat slot 0's), staging, and slot 0's chunk as `arena`. One pipeline
        per kernel and `spec`, made with its first combination of chunks; every other
        combination gets a descriptor set of its own that runs that pipeline (the patched
        Kompute's algorithm_sharing), made on first use."""
        key = (family, variant, spec, chunks)
        algo = self._algorithms.get(key)
        if algo is None:
            if len(chunks) > 1 and self._uses_arena(family, variant):
                raise RuntimeError(
                    f"kernel {family}{'/' + variant if variant else ''} addresses `arena`, which "
                    f"is one arena chunk, but its operands live in {len(chunks)} chunks: address "
                    "words with ARENA(w) (common.glsl)")
            bound = [self._chunks[c] for c in chunks]
            bound += bound[:1] * (kernels.ARENA_SLOTS - len(bound))
            bound += [self._staging, bound[0]]
            pipeline = self._pipelines.get(key[:3])
            if pipeline is None:
                error = self._limit_error(family, variant, spec)
                if error is not None:
                    raise RuntimeError(error)
                algo = pipeline = self._pipelines[key[:3]] = self.manager.algorithm(
                    bound, self._spirv(family, variant), (1, 1, 1),
                    np.array(spec, np.uint32), np.zeros(kernels.PUSH_WORDS, np.uint32))
                self.counters.pipelines_created += 1
                self.counters.pipeline_cache_hits += algo.pipeline_cache_hit()
                self.pipeline_cache.created += 1
            else:
                algo = self.manager.algorithm_sharing(pipeline, bound)
            self._algorithms[key] = algo
            self.counters.chunk_bindings_created += 1
        return algo

    def launch(self, family, variant, threads, push, spec=(), reads=(), writes=None):
        """Queue one dispatch of `family`/`variant` covering `threads` invocations (kernels loop
        over the rest when the grid is capped). `push` is a kernels.Push (Layout.pack), or a
        list of ints for vk.Kernel code, at most PUSH_WORDS (operands' DeviceArray.start as
        they are: launch binds their chunks and says their slots);
        `spec` a tuple of ints, the kernel's specialization constants (constant_id 0, 1, ...).
        `writes`: the DeviceArrays the kernel writes (or reads and writes), `reads`: those it
        only reads (None entries and scalars skipped; whole blocks count). Without `writes`
        the kernel may touch anything, so it is ordered after all earlier work and before all
        later work (see Hazards): correct, but it runs alone."""
        groups = max(1, min(MAX_GROUPS, -(-threads // kernels.workgroup(family))))
        reads, writes = (None, None) if writes is None else (_ranges(reads), _ranges(writes))
        constants = np.zeros(kernels.PUSH_WORDS, np.int64)
        if len(self._chunks) == 1:  # every operand at slot 0, where pack leaves `slots`
            chunks, slot = (0,), {0: 0}
        else:
            chunks = _chunks(family, push, reads, writes)
            if len(self._chunks) <= kernels.ARENA_SLOTS and not self._uses_arena(family, variant):
                chunks = tuple(range(len(self._chunks)))  # bind them all: no new combination
            slot = {c: i for i, c in enumerate(chunks)}
        if not isinstance(push, kernels.Push):  # vk.Kernel code: slots in the starts' top bits
            push = [_legacy_start(family, v, slot[v.chunk]) if isinstance(v, Start) else v
                    for v in push]
        constants[:len(push)] = push
        if isinstance(push, kernels.Push) and len(self._chunks) > 1:
            constants[push.slots_at] = sum(
                slot[v.chunk] << (kernels.ARENA_SLOT_BITS * k)
                for k, v in enumerate(push[at] for at in push.operands) if isinstance(v, Start))
        if reads is not None and self._views_chunks_readonly(family, variant):
            reads = reads + [(ARENA, c * CHUNK_SPAN, (c + 1) * CHUNK_SPAN) for c in chunks]
        with self._lock:
            op = self._kp.OpAlgoDispatch(self._algorithm(family, variant, tuple(spec), chunks),
                                         constants.astype(np.uint32), (groups, 1, 1))
            entry = (op, f"{family}/{variant}" if variant else family, profiler.current_op(),
                     reads, writes)
            recording = self.recording
            if recording is not None:
                recording.dispatches.append(entry)
            self._queue(*entry)

    def _queue(self, op, label, op_name, reads, writes, copy=False):
        """Record a dispatch (or, `copy`, a vkCmdCopyBuffer) into the eager sequence, after a
        barrier where it depends on what is queued since the last one."""
        if self._hazards.place(reads, writes, copy):
            self._record_barrier(self._barrier)
        self._sequence.record(op)
        self._prefetched = ()  # it may write what the latest replay copied to staging
        if copy:
            self.counters.copies += 1
        else:
            self.counters.dispatches_recorded += 1
            self.counters.dispatches += 1
        if self._profiled is not None:  # a copy's timestamp is no kernel's
            self._profiled.append(None if copy else (label, op_name))
        self._pending += 1
        if self._pending >= MAX_PENDING:
            self._flush()

    # ---- capture and replay (vkgrad.compile) ---------------------------------------------------
    def begin_capture(self):
        """Start recording in the calling thread: every dispatch it queues from now on is also
        kept, with the blocks it addresses, until end_capture() returns them as a Recording.
        Other threads' work runs eagerly and stays out of it. One capture at a time per device:
        returns False, starting nothing, while another thread is capturing."""
        return self.pool.begin_recording() is not None

    def end_capture(self):
        """Finish the capture; its dispatches are recorded into a command buffer at the first
        replay (see _record_replay)."""
        return self.pool.end_recording()

    def _record_replay(self, recording, results):
        """Record a Recording's dispatches once into a command buffer of their own, with barriers
        where one depends on another (the submission before ends with one), then copies of the
        small contiguous DeviceArrays among `results` (a step's loss) into staging words of the
        recording's own, and the end-of-submission barrier."""
        entries = [(op, reads, writes, False) for op, _, _, reads, writes in recording.dispatches]
        for array in results:
            span = _word_span(array)
            if span is None or not 0 < span[1] <= PREFETCH_MAX:
                continue
            first, words = span
            with self.pool.lock:
                self.pool._apply_releases()  # staging words of recordings that died
                word = self._prefetch_space.take(-(-words // ALIGN_WORDS) * ALIGN_WORDS)
            if word is None:
                continue
            recording.staging.append((self._prefetch_space, word,
                                      -(-words // ALIGN_WORDS) * ALIGN_WORDS))
            entries.append((self._kp.OpBufferCopy(
                self._chunks[first // CHUNK_SPAN], self._staging, first % CHUNK_SPAN * 4,
                word * 4, words * 4), [(ARENA, first, first + words)],
                [(STAGING, word, word + words)], True))
            recording.prefetch += ((first, first + words, word),)
        sequence, hazards = self.manager.sequence(), Hazards()
        for op, reads, writes, copy in entries:
            if hazards.place(reads, writes, copy):
                sequence.record(self._barrier)
                recording.barriers += 1
            sequence.record(op)
        sequence.record(self._end_barrier)
        recording.barriers += 1
        recording.sequence = sequence
        self.counters.dispatches_recorded += len(recording.dispatches)

    def replay(self, recording, arguments=(), results=()):
        """Copy `arguments`, (recorded input, value) DeviceArray pairs, into the recorded inputs
        (vkCmdCopyBuffer where both are contiguous words, else a kernel) and submit a Recording's
        command buffer again after them, in one submission: the same kernels, on the same
        memory, with the same push constants. No op runs, nothing is allocated or recorded, and
        the host does not wait; the small ones among `results` (what the step returns) are copied
        to staging in that submission too, so reading one (.item()) waits but submits nothing.
        While profiling, its dispatches are queued one by one instead, for their timestamps."""
        with self._lock:
            for slot, value in arguments:
                copy = self._argument_copy(slot, value)
                if copy:
                    self._queue(*copy)
                elif copy is None:
                    from ..ops.elementwise import assign
                    assign(slot, value)
            if self._profiled is not None:
                for entry in recording.dispatches:
                    self._queue(*entry)
                return
            if recording.sequence is None:
                self._record_replay(recording, results)
            # the argument copies go first, in the same submission
            self._submit(recording.sequence, after=self._close() if self._pending else None)
            self.counters.dispatches += len(recording.dispatches)
            self.counters.copies += len(recording.prefetch)
            self.counters.barriers += recording.barriers
            self._prefetched = recording.prefetch

    def _record_barrier(self, barrier):
        self._sequence.record(barrier)
        self.counters.barriers += 1
        if self._profiled is not None:
            self._profiled.append(None)  # its timestamp is no kernel's

    def _submit(self, sequence, eager=False, after=None):
        """Submit `sequence` without waiting (after waiting for all earlier submissions, when
        MAX_IN_FLIGHT are queued). `eager`: it goes back to the spares once waited for.
        `after`: an eager sequence (from _close) submitted just before it, in one submission."""
        if self._submitted >= MAX_IN_FLIGHT:
            self._wait()
        if after is None:
            sequence.eval_async()
        else:
            sequence.eval_async_after(after)
            self._in_flight.append((after, True))
        self.counters.submits += 1
        self._submitted += 1
        if not any(s is sequence for s, _ in self._in_flight):
            self._in_flight.append((sequence, eager))

    def _end_sequence(self):
        self._record_barrier(self._end_barrier)
        self._hazards.clear()
        self._pending = 0

    def _close(self):
        """End the eager dispatches queued so far with a barrier; their sequence, to submit
        (a fresh one takes their place)."""
        self._end_sequence()
        closed = self._sequence
        self._sequence = self._spare.pop() if self._spare else self.manager.sequence()
        return closed

    def _flush(self):
        """Submit the eager dispatches queued so far, ended by a barrier, without waiting."""
        with self._lock:
            if not self._pending:
                return
            if self._profiled is not None:  # one timestamped sequence, waited for at once
                self._end_sequence()
                self._submit(self._sequence)
                self._wait()
                self._collect_times()
                self._sequence.clear()
                return
            self._submit(self._close(), eager=True)

    def _wait(self):
        """Submit what is queued and wait for everything submitted; keep the error word's code
        for the next _raise_device_error(). Staging is free again afterwards."""
        with self._lock:
            self._flush()
            if self._in_flight:
                for sequence, _ in self._in_flight:
                    sequence.eval_await()  # (one submitted with a later one: nothing to wait)
                for sequence, eager in self._in_flight:  # all done: eager ones record again
                    if eager:
                        sequence.clear()
                        self._spare.append(sequence)
                self._in_flight, self._submitted = [], 0
                self.counters.host_syncs += 1
                if self._error_word[0]:
                    self._error = self._error or int(self._error_word[0])
                    self._error_word[0] = 0
            self._staging_used = 0

    def synchronize(self):
        with self._lock:
            self._wait()
            self._raise_device_error()

    def error_code(self, name):
        """The code (nonzero, 31 bits) that a kernel writes into the error word when it finds an
        index out of range for op `name`: IndexError("<name>: index out of range ...")."""
        with self._lock:
            if name not in self._error_names:
                self._error_names.append(name)
            return self._error_names.index(name) + 1

    def _raise_device_error(self):
        code, self._error = self._error, 0
        if code:
            raise IndexError(f"{self._error_names[code - 1]}: index out of range (device-side "
                             "check of an index tensor, found at this synchronisation; values "
                             "computed from that op's result are unspecified)")

    def profiling(self, on):
        """While on, dispatches are recorded into a sequence that writes a timestamp after each
        one (where the device can: `timestamp_bits`), and their times go to vkgrad.profiler."""
        with self._lock:
            self._wait()
            if on == (self._profiled is not None):
                return
            self._profiled = [] if on else None
            # a timestamp after each recorded command: dispatches and barriers
            stamps = 2 * MAX_PENDING + 2 if on and self.timestamp_bits else 0
            self._sequence = self.manager.sequence(0, stamps)

    def _collect_times(self):
        seconds = None
        if self.timestamp_bits:
            between = timestamp_seconds(self._sequence.get_timestamps(), self.timestamp_bits,
                                        self.info["timestamp_period"])
            seconds = [s for s, entry in zip(between, self._profiled) if entry is not None]
        profiler.add_kernel_times([e for e in self._profiled if e is not None], seconds,
                                  self.timestamps_missing)
        self._profiled = []

    def run(self, op, *args, **params):
        return op.vulkan(self, *args, **params)


_managers = {}  # device index -> its kp.Manager (device 0's opened by probe())


def probe():
    """(the properties of every Vulkan device, as kp.Manager.list_devices gives them, None), or
    ([], why there are none)."""
    try:
        import kp
    except ImportError as e:
        return [], f"the Kompute module `kp` is not installed ({e})"
    # Kompute aborts the process, rather than raising, when it finds no device: ask first.
    try:
        found = loader.count_physical_devices()
    except loader.LoaderError as e:
        return [], str(e)
    if found == 0:
        return [], "the Vulkan loader found no device"
    try:
        manager = kp.Manager()
        listed = manager.list_devices()
    except Exception as e:  # no loader, no ICD, or no device
        return [], f"no Vulkan device could be opened ({e})"
    _managers[0] = manager
    return listed, None


def open_backend(index, properties):
    """A VulkanBackend for device `index` (one kp.Manager per device, kept)."""
    import kp
    manager = _managers.get(index) or kp.Manager(index)
    _managers[index] = manager
    return VulkanBackend(manager, properties)
