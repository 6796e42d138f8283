"""vkgrad.ops.host_blas: the host products rearranged for BLAS give numpy's matmul results
within float32 rounding of the sums, on every path (transposed, split K, batches)."""
import numpy as np
import pytest

from vkgrad.ops import host_blas


@pytest.mark.parametrize("shapes", [
    ((6, 25), (25, 577)),            # fewer rows than columns: computed transposed
    ((577, 25), (25, 6)),            # more rows: as it is
    ((6, 9000), (9000, 25)),         # long sum into a small result: split in two pieces
    ((3, 66625), (66625, 5)),        # one term past a piece (split_length(3, 5) = 66,624)
    ((16, 6400), (6400, 150)),       # a result too large for the split: one call
    ((300, 5000), (5000, 300)),      # long sum into a large result: one call
    ((1, 7, 3), (1, 3, 11)),         # a batch of one
    ((2, 7, 3), (2, 3, 11)),         # a batch: numpy's own
    ((5, 0), (0, 4)),                # no terms: zeros
    ((0, 3), (3, 4)),                # no rows
])
@pytest.mark.parametrize("layout", ["NN", "NT", "TN"])
def test_products_match_float64(shapes, layout):
    rng = np.random.default_rng(7)
    sa, sb = shapes
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    if layout[0] == "T":  # the same values, stored transposed
        a = np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2)
    if layout[1] == "T":
        b = np.ascontiguousarray(b.swapaxes(-1, -2)).swapaxes(-1, -2)
    got = host_blas.matmul(a, b)
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
    k = sa[-1]
    # |sum - fl(sum)| <= k * eps * sum |a||b| (any summation order), plus the final rounding
    bound = (k + 1) * np.finfo(np.float32).eps * np.matmul(np.abs(a).astype(np.float64),
                                                           np.abs(b).astype(np.float64))
    assert np.all(np.abs(got - want) <= bound)


def test_split_lengths_keep_pieces_within_the_bound():
    assert host_blas.split_length(6, 25) == 6656 and host_blas.split_length(3, 5) == 66624
    assert host_blas.split_length(16, 150) is None  # pieces of 416 terms: not split
    for m, n in [(1, 1), (6, 25), (16, 25), (30, 32), (31, 32)]:
        length = host_blas.split_length(m, n)
        assert length is None or (length >= host_blas.MIN_SPLIT and length % 64 == 0
                                  and m * n * length <= host_blas.SMALL_MNK)


def test_split_sums_are_deterministic_and_exact_for_integers_in_floats():
    rng = np.random.default_rng(3)
    a = rng.integers(-3, 4, (4, 3 * host_blas.split_length(4, 6) + 17)).astype(np.float32)
    b = rng.integers(-3, 4, (a.shape[1], 6)).astype(np.float32)
    got = host_blas.matmul(a, b)
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64))
    np.testing.assert_array_equal(got, host_blas.matmul(a, b))


def test_other_dtypes_go_to_numpy():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    np.testing.assert_array_equal(host_blas.matmul(a, a.T), a @ a.T)
    f = np.ones((2, 3), np.float64)
    assert host_blas.matmul(f, f.T).dtype == np.float64
