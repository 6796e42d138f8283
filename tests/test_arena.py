"""The Vulkan arena's sub-allocator: placement that keeps room for large blocks, the invariants
of its free space, and the memory of recordings (pure Python: no device needed, except for the
last test)."""
import gc
import itertools
import threading

import numpy as np
import pytest

import vkgrad as vk
from vkgrad import kernels
from vkgrad.backend.vulkan import (ALIGN_WORDS, CHUNK_SPAN, LARGE_WORDS, ArenaPool, DeviceArray,
                                   Hazards, Start, _chunks, _legacy_start,
                                   _ranges)

MIB = 1 << 18  # words


@pytest.fixture
def no_collection(monkeypatch):
    """A failed request collects garbage before it gives up; these tests leave none, and many
    requests fail on purpose."""
    monkeypatch.setattr(gc, "collect", lambda: 0)


def _run(pool, events, sizes):
    """Apply '+name' (allocate sizes[name]) and '-name' (drop it) events; return the live
    blocks."""
    live = {}
    for event in events:
        if event[0] == "+":
            live[event[1:]] = pool.allocate(sizes[event[1:]])
        else:
            del live[event[1:]]
    return live


def _orders(events, sizes, capacity):
    """Every order of `events` in which each '-x' comes after its '+x' and what is alive at once
    fits in `capacity` words."""
    for order in itertools.permutations(events):
        live, ok = set(), True
        for event in order:
            name = event[1:]
            if event[0] == "+":
                live.add(name)
                ok = sum(sizes[n] for n in live) <= capacity
            else:
                ok = name in live
                live.discard(name)
            if not ok:
                break
        if ok:
            yield order


def test_small_blocks_kept_between_large_ones_leave_room_for_a_large_one(no_collection):
    # lavapipe's 128 MiB arena: 80 and 40 MiB tensors come and go while two 36 KiB tensors are
    # created among them and kept; then an 80 MiB tensor must fit, in every order of events
    # that could run (some need room where an earlier block already sits)
    sizes = {"a": 80 * MIB, "b": 40 * MIB, "c": 40 * MIB, "s": 9216, "t": 9216}
    ran = []
    for order in _orders(["+a", "-a", "+b", "-b", "+c", "-c", "+s", "+t"], sizes, 128 * MIB):
        pool = ArenaPool(128 * MIB)
        try:
            live = _run(pool, order, sizes)
        except MemoryError:
            continue
        assert sorted(live) == ["s", "t"]
        pool.allocate(80 * MIB)  # raises if the small blocks split the free space
        ran.append(" ".join(order))
    assert len(ran) > 2500 and "+a +b -a +c +s +t -b -c" in ran  # the order


def test_small_long_lived_blocks_do_not_split_the_free_space():
    # A training loop's pattern: large temporaries of changing sizes come and go while small
    # tensors (parameters, optimizer state) are created between them and kept. Afterwards one
    # request for all the remaining space must still fit.
    pool = ArenaPool(64 * LARGE_WORDS)
    rng = np.random.default_rng(0)
    kept = []
    for _ in range(40):
        temporaries = [pool.allocate(int(rng.integers(1, 8)) * LARGE_WORDS) for _ in range(3)]
        kept.append(pool.allocate(int(rng.integers(1, 64)) * ALIGN_WORDS))
        del temporaries
    big = pool.allocate(pool.capacity - pool.in_use)
    assert big.words > 60 * LARGE_WORDS and len(kept) == 40


def _check(pool, live):
    """No two blocks overlap, none overlaps free space, every word is in use or free, and no
    block or free run leaves its chunk."""
    pool._apply_releases()
    runs = pool.free.runs
    spans = sorted([(b.word, b.words) for b in live] + runs)
    for word, words in spans:
        chunk, first = divmod(word, CHUNK_SPAN)
        assert first + words <= pool.chunks[chunk]
    for (word, words), (next_word, _) in zip(spans, spans[1:]):
        assert word + words <= next_word
    for (word, words), (next_word, _) in zip(runs, runs[1:]):
        assert word + words < next_word  # coalesced
    assert all(w % ALIGN_WORDS == 0 and n > 0 for w, n in spans)
    assert pool.in_use == sum(b.words for b in live)
    assert pool.in_use + sum(n for _, n in runs) == pool.capacity


@pytest.mark.parametrize("seed", range(4))
def test_random_allocations_keep_the_free_space_exact(seed, no_collection):
    rng = np.random.default_rng(seed)
    pool = ArenaPool(64 * LARGE_WORDS)
    live = []
    for _ in range(1500):
        if live and rng.random() < 0.45:
            live.pop(int(rng.integers(len(live))))
        else:
            limit = rng.choice([4 * ALIGN_WORDS, LARGE_WORDS, 8 * LARGE_WORDS])
            words = int(rng.integers(1, limit))
            try:
                live.append(pool.allocate(words))
            except MemoryError:
                assert max((n for _, n in pool.free.runs), default=0) < words
        _check(pool, live)
    live.clear()
    _check(pool, live)
    assert pool.free.runs == [(0, pool.capacity)]


class _Grower:
    """ArenaPool.grow for tests: chunks of max(request, `size`) words, at most `limit` in all."""

    def __init__(self, size, limit):
        self.size, self.limit, self.sizes, self.pool = size, limit, [], None

    def __call__(self, words):
        words = max(words, self.size)
        if sum(self.pool.chunks) + words > self.limit:
            raise MemoryError("no more chunks")
        self.sizes.append(words)
        return words


def _growing_pool(first, size, limit):
    grow = _Grower(size, limit)
    grow.pool = ArenaPool(first, grow)
    return grow.pool, grow


def test_the_pool_grows_a_chunk_for_what_fits_in_none(no_collection):
    pool, grow = _growing_pool(4 * LARGE_WORDS, 4 * LARGE_WORDS, 64 * LARGE_WORDS)
    a = pool.allocate(3 * LARGE_WORDS)
    b = pool.allocate(3 * LARGE_WORDS)           # not in chunk 0's last LARGE_WORDS: chunk 1
    small = pool.allocate(64)                    # small ones still fill chunk 0 first
    big = pool.allocate(10 * LARGE_WORDS)        # larger than a chunk: a chunk of its size
    assert [x.word // CHUNK_SPAN for x in (a, b, small, big)] == [0, 1, 0, 2]
    assert grow.sizes == [4 * LARGE_WORDS, 10 * LARGE_WORDS]
    assert pool.chunks == [4 * LARGE_WORDS, 4 * LARGE_WORDS, 10 * LARGE_WORDS]
    assert pool.capacity == 18 * LARGE_WORDS
    _check(pool, [a, b, small, big])
    del a, b, small, big
    _check(pool, [])
    assert pool.in_use == 0 and len(pool.free.runs) == 3  # one per chunk: never merged


def test_a_refused_chunk_leaves_the_pool_as_it_was(no_collection):
    pool, grow = _growing_pool(4 * LARGE_WORDS, 4 * LARGE_WORDS, 8 * LARGE_WORDS)
    kept = [pool.allocate(3 * LARGE_WORDS), pool.allocate(3 * LARGE_WORDS)]
    runs, capacity = list(pool.free.runs), pool.capacity
    with pytest.raises(MemoryError, match="no more chunks"):
        pool.allocate(3 * LARGE_WORDS)
    assert pool.free.runs == runs and pool.capacity == capacity and len(pool.chunks) == 2
    _check(pool, kept)


@pytest.mark.parametrize("seed", range(3))
def test_random_allocations_over_growing_chunks_keep_the_free_space_exact(seed, no_collection):
    rng = np.random.default_rng(seed)
    pool, _ = _growing_pool(2 * LARGE_WORDS, 2 * LARGE_WORDS, 40 * LARGE_WORDS)
    live = []
    for _ in range(1000):
        if live and rng.random() < 0.45:
            live.pop(int(rng.integers(len(live))))
        else:
            limit = rng.choice([4 * ALIGN_WORDS, LARGE_WORDS, 3 * LARGE_WORDS])
            try:
                live.append(pool.allocate(int(rng.integers(1, limit))))
            except MemoryError:
                assert sum(pool.chunks) + 3 * LARGE_WORDS > 40 * LARGE_WORDS
        _check(pool, live)
    assert len(pool.chunks) > 3


def _views_in_two_chunks(dtype="float32"):
    """Two 64-word blocks at the same word of chunks 0 and 1, as DeviceArray views."""
    pool, _ = _growing_pool(4 * LARGE_WORDS, 4 * LARGE_WORDS, 64 * LARGE_WORDS)
    filler = pool.allocate(4 * LARGE_WORDS - 64)
    first, second = pool.allocate(64), pool.allocate(64)
    dt = vk.dtype(dtype)
    n = 64 * dt.per_word
    views = [DeviceArray(None, b, (n,), (1,), 0, dt) for b in (first, second)]
    return pool, filler, views


def test_a_start_names_its_chunk_and_its_slot_lands_above_the_word():
    for dtype in ("float32", "bfloat16", "uint8"):
        _, _, (a, b) = _views_in_two_chunks(dtype)
        per = a.dtype.per_word
        view = b.view((3,), (1,), 5)
        start = view.start
        assert isinstance(start, Start) and start.chunk == 1
        assert int(start) == (b.block.word % CHUNK_SPAN) * per + 5  # counted from its chunk
        for slot in range(kernels.ARENA_SLOTS):  # the word address common.glsl's ARENA sees
            pushed = start + (slot << start.shift)
            assert pushed < 1 << 32
            word = (pushed + 2) // per  # an element inside the view
            assert word >> kernels.ARENA_SLOT_SHIFT == slot
            assert word & ((1 << kernels.ARENA_SLOT_SHIFT) - 1) == \
                (b.block.word % CHUNK_SPAN) + (5 + 2) // per
        assert a.start.chunk == 0 and int(a.start) == int(b.start)  # same place, other chunk
        further = 3 + start  # an element further on: the same chunk
        assert isinstance(further, Start) and further.chunk == 1 and further == int(start) + 3
        assert not isinstance(start * 2, Start) and not isinstance(start + a.start, Start)


def test_vk_kernel_starts_past_the_slot_bits_are_refused():
    """vk.Kernel code takes a start with its slot in the top bits (common.glsl's ARENA(w)), so
    an operand beyond a chunk's first 2^ARENA_SLOT_SHIFT words is refused, naming the limit,
    where the family kernels (slots in their own push word) take it."""
    for per, shift in ((1, 0), (2, 1), (4, 2)):
        top = 1 << (kernels.ARENA_SLOT_SHIFT + shift)
        last = Start(top - 1, 0, kernels.ARENA_SLOT_SHIFT + shift)
        assert _legacy_start("k", last, 3) == top - 1 + 3 * top
        with pytest.raises(RuntimeError, match="2\\^27 words"):
            _legacy_start("k", last + 1, 0)


def test_hazards_tell_chunks_apart():
    _, _, (a, b) = _views_in_two_chunks()
    hazards = Hazards()
    assert not hazards.place(_ranges([a]), _ranges([b]))  # reads a, writes b
    assert hazards.conflicts(_ranges([b]), [])   # reads b: written since the last barrier
    assert hazards.conflicts([], _ranges([a]))   # writes a: read since the last barrier
    other = Hazards()
    other.place([], _ranges([a]))
    assert not other.conflicts(_ranges([b]), _ranges([b]))  # same words of another chunk


def test_a_dispatch_binds_the_chunks_its_starts_name():
    _, _, (a, b) = _views_in_two_chunks()
    reads, writes = _ranges([a]), _ranges([b])
    assert _chunks("k", [7, b.start, a.start], reads, writes) == (0, 1)
    assert _chunks("k", [b.start], [], writes) == (1,)
    with pytest.raises(RuntimeError, match="no start among its push constants"):
        _chunks("k", [int(a.start), b.start], reads, writes)  # a's start as a plain int


class _DropsOnFirstChange(list):
    """Free runs whose first change drops the blocks in `doomed` before it is made: what a
    garbage collection does when it starts inside the pool (at the new run's tuple) and finds
    blocks held only by reference cycles."""

    def __init__(self, runs, doomed):
        super().__init__(runs)
        self.doomed = doomed

    def __setitem__(self, i, run):
        self.doomed.clear()
        super().__setitem__(i, run)


def test_blocks_that_die_while_the_pool_cuts_free_space_are_not_lost():
    pool = ArenaPool(64 * LARGE_WORDS)
    live = [pool.allocate(64) for _ in range(4)]
    doomed = [pool.allocate(64) for _ in range(4)]
    live += [pool.allocate(64) for _ in range(4)]
    pool.free.runs = _DropsOnFirstChange(pool.free.runs, doomed)
    live.append(pool.allocate(64))
    _check(pool, live)


def test_a_recording_keeps_the_memory_its_dispatches_address():
    pool = ArenaPool(64 * LARGE_WORDS)
    older = pool.allocate(64)            # addressed by the recording, dies during it
    untouched = pool.allocate(64)        # not addressed: back to the pool when it dies
    recording = pool.begin_recording()
    assert pool.begin_recording() is None  # one at a time
    recording.touch(older)
    kept = pool.allocate(128)
    temporary = pool.allocate(256)
    temporary_word = temporary.word
    del older, temporary, untouched
    in_use = pool.in_use
    assert pool.allocate(256).word == temporary_word  # the step's temporaries reuse each other's
    assert pool.in_use == in_use
    pool.end_recording()
    assert pool.recording is None and recording.blocks == {kept}
    reserved = [(w, n) for w, n in recording.free.runs]
    assert sum(n for _, n in reserved) == 64 + 256
    del kept
    assert pool.in_use == 128 + 64 + 256  # held by the recording
    everything_else = [pool.allocate(n) for _, n in list(pool.free.runs)]
    assert pool.free.runs == [] and pool.in_use == pool.capacity
    assert not any(b.word < w + n and w < b.word + b.words
                   for b in everything_else for w, n in reserved)
    del everything_else
    del recording
    gc.collect()
    pool._apply_releases()
    assert pool.in_use == 0 and pool.free.runs == [(0, pool.capacity)]


def test_other_threads_never_get_the_memory_of_a_recording():
    pool = ArenaPool(64 * LARGE_WORDS)
    recording = pool.begin_recording()
    temporary = pool.allocate(256)
    span = (temporary.word, temporary.words)
    del temporary  # the recording's dispatches still address these words
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(pool.allocate(256)))
    thread.start()
    thread.join()
    block, = elsewhere
    assert block.recording is None and not (block.word < sum(span) and span[0] < block.word + 256)
    refused = []

    def end_elsewhere():
        with pytest.raises(RuntimeError, match="not capturing"):
            pool.end_recording()
        refused.append(True)

    thread = threading.Thread(target=end_elsewhere)
    thread.start()
    thread.join()
    assert refused and pool.end_recording() is recording
    assert recording.free.runs == [span]


def test_a_large_tensor_fits_after_small_ones_were_kept_among_large_ones(vulkan):
    gc.collect()
    pool = vulkan.backend.pool
    pool._apply_releases()
    room = max(n for _, n in pool.free.runs) // ALIGN_WORDS * ALIGN_WORDS
    big, half = room * 5 // 8, room * 5 // 16  # 80 and 40 MiB in lavapipe's empty 128 MiB arena
    a = vk.empty(big, device=vulkan)
    b = vk.empty(half, device=vulkan)
    del a
    c = vk.empty(half, device=vulkan)
    small = [vk.ones(9216, device=vulkan) for _ in range(2)]
    del b, c
    a = vk.full((big,), 2.0, device=vulkan)
    assert a[-1].item() == 2.0 and small[1].sum().item() == 9216
