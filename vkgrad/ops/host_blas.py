"""Host matrix products shaped for the BLAS behind numpy.

`matmul(a, b)` is numpy's matmul, with two rearrangements of float 2-D products (and batches
of one) that give the same sums, measured with numpy's OpenBLAS (scipy-openblas 0.3.31, 2
threads) on the skinny products a small convnet's training step is made of:

- C = A @ B with fewer rows than columns is computed as C^T = B^T A^T, into C's own memory
  (numpy passes the transposes to BLAS, nothing is copied). OpenBLAS blocks and threads the
  long side of a product better when it is the rows: a LeNet5 forward convolution,
  (6 x 25) @ (25 x 57,600), took 0.31 ms that way against 0.68 ms, a weight gradient
  (16 x 6,400) @ (6,400 x 150) 0.22 against 0.46 ms.
- A long sum (K > K_CHUNK) into a small result is split into K_CHUNK-long products added up:
  (6 x 57,600) @ (57,600 x 25), the first convolution's weight gradient, took 0.31 ms in
  chunks of 4,096 against 0.87 ms in one call. The terms are then summed in another order
  (blocks of 4,096, then the blocks), which is as accurate and as deterministic.
Integer and other products go to np.matmul as they are.
"""
import numpy as np

K_CHUNK = 4096          # terms per product when a long sum is split
SMALL_RESULT = 1 << 16  # elements of a result small enough for the split to pay


def matmul(a, b):
    """a @ b with numpy's semantics (any batch dims; a and b of one float dtype here)."""
    if a.dtype != b.dtype or a.dtype.kind != "f" or a.ndim != b.ndim or a.ndim not in (2, 3):
        return np.matmul(a, b)
    if a.ndim == 3:
        if a.shape[0] != 1 or b.shape[0] != 1:
            return np.matmul(a, b)
        return _product(a[0], b[0])[None]
    return _product(a, b)


def _product(a, b):
    (m, k), n = a.shape, b.shape[1]
    out = np.empty((m, n), a.dtype)
    if k <= K_CHUNK or m * n > SMALL_RESULT:
        _into(a, b, out)
        return out
    part = np.empty_like(out)
    _into(a[:, :K_CHUNK], b[:K_CHUNK], out)
    for start in range(K_CHUNK, k, K_CHUNK):
        _into(a[:, start:start + K_CHUNK], b[start:start + K_CHUNK], part)
        out += part
    return out


def _into(a, b, out):
    if out.shape[0] < out.shape[1]:
        np.matmul(b.T, a.T, out=out.T)
    else:
        np.matmul(a, b, out=out)
