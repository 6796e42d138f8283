"""The Vulkan arena's sub-allocator (pure Python: no device needed)."""
import numpy as np

from vkgrad.backend.vulkan import ALIGN_WORDS, LARGE_WORDS, ArenaPool


def test_small_long_lived_blocks_do_not_split_the_free_space():
    # A training loop's pattern: large temporaries of changing sizes come and go while small
    # tensors (parameters, optimizer state) are created between them and kept. Afterwards one
    # large request for almost all the remaining space must still fit.
    pool = ArenaPool(64 * LARGE_WORDS)
    rng = np.random.default_rng(0)
    kept = []
    for _ in range(40):
        temporaries = [pool.allocate(int(rng.integers(1, 8)) * LARGE_WORDS) for _ in range(3)]
        kept.append(pool.allocate(int(rng.integers(1, 64)) * ALIGN_WORDS))
        del temporaries
    free = pool.capacity - pool.in_use
    big = pool.allocate(free - free % LARGE_WORDS)
    assert big.words >= 60 * LARGE_WORDS and len(kept) == 40


def test_reserve_takes_only_free_words_and_counts_them_until_released():
    pool = ArenaPool(1024)
    live = pool.allocate(64)
    dead = pool.allocate(128)
    dead_range = (dead.word, dead.words)
    del dead
    in_use = pool.in_use
    reserved = pool.reserve([(live.word, live.words), dead_range])
    assert reserved == [dead_range]  # the live block is its owner's, not free
    assert pool.in_use == in_use + 128
    rest = pool.allocate(pool.capacity - pool.in_use)  # everything else is still usable
    assert not any(rest.word < w + n and w < rest.word + rest.words for w, n in reserved)
    for word, words in reserved:
        pool.release_words(word, words)
    assert pool.in_use == live.words + rest.words
