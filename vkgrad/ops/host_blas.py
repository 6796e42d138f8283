"""Host matrix products shaped for the BLAS behind numpy.

`matmul(a, b)` is numpy's matmul, with two rearrangements of float 2-D products (and batches
of one) that give the same sums, measured with numpy's OpenBLAS (scipy-openblas 0.3.31, 2
threads) on the skinny products a small convnet's training step is made of:

- C = A @ B with fewer rows than columns is computed as C^T = B^T A^T, into C's own memory
  (numpy passes the transposes to BLAS, nothing is copied). OpenBLAS blocks and threads the
  long side of a product better when it is the rows: a LeNet5 forward convolution,
  (6 x 25) @ (25 x 57,600), took 0.31 ms that way against 0.68 ms, a weight gradient
  (16 x 6,400) @ (6,400 x 150) 0.22 against 0.46 ms.
- A long sum into a small result is split into pieces of split_length(m, n) terms, added
  up, each piece within m n k <= SMALL_MNK multiply-adds. Measured here, a skinny product's
  time per term jumps 2.5x past about that size (OpenBLAS's small-matrix path for AVX-512
  sgemm, presumably, which skips packing and threading): (6 x 57,600) @ (57,600 x 25), the
  first convolution's weight gradient, took 0.34 ms in pieces of 6,656 terms against 0.97 ms
  in pieces of 7,200 or in one call. Pieces past the bound were slower than one call: the
  second convolution's (16 x 6,400) @ (6,400 x 150) 0.44 ms in pieces of 4,096 against 0.24
  ms whole, (16 x 57,600) @ (57,600 x 25) 1.20 against 0.77; so a result too large for
  pieces of MIN_SPLIT terms is not split. The terms are then summed in another order (the
  pieces, then their sum), which is as accurate and as deterministic.
Integer and other products go to np.matmul as they are.
"""
import numpy as np

SMALL_MNK = 1_000_000  # m n k of the products OpenBLAS runs in its small-matrix kernel
MIN_SPLIT = 1024       # fewest terms per piece of a split sum


def matmul(a, b):
    """a @ b with numpy's semantics (any batch dims; a and b of one float dtype here)."""
    if a.dtype != b.dtype or a.dtype.kind != "f" or a.ndim != b.ndim or a.ndim not in (2, 3):
        return np.matmul(a, b)
    if a.ndim == 3:
        if a.shape[0] != 1 or b.shape[0] != 1:
            return np.matmul(a, b)
        return _product(a[0], b[0])[None]
    return _product(a, b)


def split_length(m, n):
    """Terms per piece of a long sum into an (m, n) result: the most that keep m n k within
    SMALL_MNK (a multiple of 64), or None where that is under MIN_SPLIT (no split)."""
    length = SMALL_MNK // max(1, m * n) // 64 * 64
    return length if length >= MIN_SPLIT else None


def _product(a, b):
    (m, k), n = a.shape, b.shape[1]
    out = np.empty((m, n), a.dtype)
    length = split_length(m, n)
    if length is None or k <= length:
        _into(a, b, out)
        return out
    part = np.empty_like(out)
    _into(a[:, :length], b[:length], out)
    for start in range(length, k, length):
        _into(a[:, start:start + length], b[start:start + length], part)
        out += part
    return out


def _into(a, b, out):
    if out.shape[0] < out.shape[1]:
        np.matmul(b.T, a.T, out=out.T)
    else:
        np.matmul(a, b, out=out)
