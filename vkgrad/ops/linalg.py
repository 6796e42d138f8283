"""Linear algebra: matmul (numpy's rules), dot, outer and two-operand einsum.

>>> import vkgrad as vk
>>> a = vk.ones((2, 3), device="vulkan")
>>> (a @ a.T).numpy()                       # C[i, k] = sum_j A[i, j] B[j, k]
array([[3., 3.],
       [3., 3.]], dtype=float32)
>>> vk.einsum("bhqd,bhkd->bhqk", q, k)       # any two-operand contraction becomes a batched matmul

One kernel does the work: shaders/matmul.comp, a batched C[b] = A[b] @ B[b] that reads both
operands through their strides (transposes and broadcast batch dims are not copied), of any dtype,
accumulating in float32 and rounding once to the result dtype. dot and einsum permute and reshape
their operands (views where strides allow) into that one batched product.

Integer and bool operands: the host computes them exactly with numpy; the Vulkan device computes
them in float32, which is exact while every partial sum stays below 2**24 in magnitude.
"""
from math import prod

import numpy as np

from .. import dtypes, kernels, layout
from ..tensor import Tensor, tensor_method
from .registry import Op, OpTest, apply

MAXB = 3    # batch dims matmul.comp describes (after coalescing); more are looped on the host
PARALLEL_GROUPS = 64  # fewer workgroups than this leave a device idle: split K (see _splits)
DIRECT = "direct"      # the matmul.comp variant CPU devices use
MIN_SPLIT_K = 256     # ... into chunks of at least this many terms


# ---- the op ------------------------------------------------------------------------------------
def _matmul_host(a, b):
    out = dtypes.result_type(dtypes.dtype(a.dtype), dtypes.dtype(b.dtype))
    # bf16 products accumulate in float32 and round once, as on the device.
    compute = np.float32 if out is dtypes.bfloat16 else out.np_dtype
    r = np.matmul(a.astype(compute, copy=False), b.astype(compute, copy=False))
    return np.asarray(r).astype(out.np_dtype, copy=False)


def _matmul_vulkan(backend, a, b):
    out_dtype = dtypes.result_type(a.dtype, b.dtype)
    # numpy's 1-D promotion: a vector is a 1 x K row on the left, a K x 1 column on the right.
    a2 = a.view((1, *a.shape), (0, *a.strides), a.offset) if a.ndim == 1 else a
    b2 = b.view((*b.shape, 1), (*b.strides, 0), b.offset) if b.ndim == 1 else b
    batch = layout.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    (m, k), n = a2.shape[-2:], b2.shape[-1]
    out = backend.empty((*batch, m, n), out_dtype)
    if out.size:
        a3 = a2.view((*batch, m, k), layout.broadcast_strides(a2.shape, a2.strides, (*batch, m, k)),
                     a2.offset)
        b3 = b2.view((*batch, k, n), layout.broadcast_strides(b2.shape, b2.strides, (*batch, k, n)),
                     b2.offset)
        splits = _splits(backend, m, n, k, prod(batch))
        if splits == 1:
            _launch(backend, out, a3, b3)
        else:
            _split_k(backend, out, a3, b3, splits)
    shape = batch + ((m,) if a.ndim > 1 else ()) + ((n,) if b.ndim > 1 else ())
    return out.view(shape, layout.contiguous_strides(shape), 0)


def _variant(backend, m, n):
    """The matmul.comp variant for an m x n output: DIRECT on CPU devices; elsewhere the tile
    shape that wastes least work on padding (ties: the larger tile, which reuses each loaded
    value more)."""
    if backend.is_cpu:
        return DIRECT
    return min(kernels.MATMUL_TILES, key=lambda v: (
        -(-m // kernels.MATMUL_TILES[v][0]) * kernels.MATMUL_TILES[v][0]
        * -(-n // kernels.MATMUL_TILES[v][1]) * kernels.MATMUL_TILES[v][1],
        -kernels.MATMUL_TILES[v][0] * kernels.MATMUL_TILES[v][1]))


def _threads(backend, m, n, batch):
    """Invocations that cover `batch` m x n outputs: one per block (DIRECT), or one workgroup
    per tile."""
    variant = _variant(backend, m, n)
    if variant in kernels.MATMUL_DIRECT:
        tm, tn = kernels.MATMUL_DIRECT[variant]
        return -(-m // tm) * -(-n // tn) * batch
    bm, bn, _ = kernels.MATMUL_TILES[variant]
    return -(-m // bm) * -(-n // bn) * batch * kernels.WORKGROUP


def _splits(backend, m, n, k, batch):
    """How many chunks to cut K into: a product with few outputs but a long K (a convolution's
    weight gradient: 6 x 25 outputs, K = batch x pixels) would otherwise run on a handful of
    workgroups. The largest divisor of K up to what fills PARALLEL_GROUPS."""
    groups = -(-_threads(backend, m, n, batch) // kernels.WORKGROUP)
    want = min(-(-PARALLEL_GROUPS // groups), k // MIN_SPLIT_K)
    return max((s for s in range(1, want + 1) if k % s == 0), default=1)


def _split_k(backend, out, a, b, splits):
    """out = sum over s of a[..., s-th K chunk] @ b[..., s-th K chunk]: the chunks as one more
    batch dim of float32 partial products, then one reduction into `out`."""
    from .reduce import launch as reduce_launch
    *batch, m, k = a.shape
    n, kc = b.shape[-1], k // splits
    a4 = a.view((*batch, splits, m, kc), (*a.strides[:-2], kc * a.strides[-1], *a.strides[-2:]),
                a.offset)
    b4 = b.view((*batch, splits, kc, n), (*b.strides[:-2], kc * b.strides[-2], *b.strides[-2:]),
                b.offset)
    partial = backend.empty((*batch, splits, m, n), dtypes.float32)
    _launch(backend, partial, a4, b4)
    lead = len(batch)
    reduce_launch(backend, "sum", partial, [*range(lead), lead + 1, lead + 2], [lead], out, 1.0)


def _launch(backend, out, a, b):
    """Queue matmul.comp for out[...] = a[...] @ b[...]: equal batch dims, out contiguous."""
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch, (a_sb, b_sb) = layout.coalesce(out.shape[:-2], a.strides[:-2], b.strides[:-2])
    if len(batch) > MAXB:
        # Batch dims that do not merge (broadcast in turn by a and b): one launch per leading index.
        for i in range(out.shape[0]):
            _launch(backend, *(x.view(x.shape[1:], x.strides[1:], x.offset + i * x.strides[0])
                               for x in (out, a, b)))
        return
    pad = MAXB - len(batch)
    push = [out.start, a.start, b.start, m, n, k,
            a.strides[-2], a.strides[-1], b.strides[-2], b.strides[-1],
            *[1] * pad, *batch, *[0] * pad, *a_sb, *[0] * pad, *b_sb]
    backend.launch("matmul", _variant(backend, m, n), _threads(backend, m, n, prod(batch)), push,
                   (out.dtype.code, a.dtype.code, b.dtype.code))


# ---- public functions --------------------------------------------------------------------------
def _check_tensors(name, *operands):
    for o in operands:
        if not isinstance(o, Tensor):
            raise TypeError(f"{name}: operands must be tensors, not {type(o).__name__}; "
                            "wrap arrays with vkgrad.tensor(...)")


def _check_aligned(name, a_shape, b_shape):
    """ValueError naming both shapes unless a's last dim meets b's contracted dim."""
    if not a_shape or not b_shape:
        raise ValueError(f"{name}: operands need at least one dimension, got shapes {a_shape} and "
                         f"{b_shape} (multiply by a scalar with *)")
    kb = b_shape[-2] if len(b_shape) > 1 else b_shape[0]
    if a_shape[-1] != kb:
        raise ValueError(f"{name}: shapes {a_shape} and {b_shape} are not aligned: "
                         f"{a_shape[-1]} (last dim of the first) != {kb} (dim "
                         f"{max(len(b_shape) - 2, 0)} of the second)")


@tensor_method("matmul", "__matmul__")
def matmul(a, b):
    """Matrix product with numpy's rules: C[..., i, k] = sum_j A[..., i, j] B[..., j, k].

    2-D operands multiply as matrices; leading (batch) dims broadcast against each other; a 1-D
    left operand is a row vector and a 1-D right operand a column vector, and the added dim is
    removed from the result (so 1-D @ 1-D is a 0-d inner product). Accumulates in float32; the
    result dtype is the promoted input dtype. On Vulkan integer and bool products are computed
    in float32 (exact while every partial sum stays below 2**24 in magnitude).

    >>> (vk.ones((4, 2, 3)) @ vk.ones(3)).shape
    (4, 2)
    """
    _check_tensors("matmul", a, b)
    _check_aligned("matmul", a.shape, b.shape)
    try:
        layout.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: the batch dims of shapes {a.shape} and {b.shape} cannot be "
                         "broadcast together") from None
    return apply(MATMUL, a, b)


tensor_method("__rmatmul__")(lambda self, other: matmul(other, self))


@tensor_method("dot")
def dot(a, b):
    """numpy's dot: a * b when either is 0-d; sum(a[..., :] * b[:]) when b is 1-D; otherwise
    dot(a, b)[i..., j..., k] = sum_m a[i..., m] b[j..., m, k] (the last axis of a against the
    second-to-last of b, every other axis kept)."""
    _check_tensors("dot", a, b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    _check_aligned("dot", a.shape, b.shape)
    if b.ndim == 1:
        return matmul(a, b)
    k, n = b.shape[-2:]
    lhs = a.reshape((prod(a.shape[:-1]), k))
    rhs = b.moveaxis(-2, 0).reshape((k, prod(b.shape[:-2]) * n))
    return matmul(lhs, rhs).reshape((*a.shape[:-1], *b.shape[:-2], n))


def outer(a, b):
    """numpy's outer: outer(a, b)[i, j] = a.ravel()[i] * b.ravel()[j]."""
    _check_tensors("outer", a, b)
    return a.reshape((-1, 1)) * b.reshape((1, -1))


_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _parse_einsum(subscripts, a_shape, b_shape):
    """(a letters, b letters, output letters, {letter: size}) of a two-operand einsum, or
    ValueError saying what is wrong and which forms are supported."""
    spec = subscripts.replace(" ", "")
    inputs, arrow, out = spec.partition("->")
    parts = inputs.split(",")
    if len(parts) != 2:
        raise ValueError(f"einsum: {subscripts!r} names {len(parts)} operand(s); only two-operand "
                         "contractions such as 'ij,jk->ik' are supported")
    sa, sb = parts
    if not arrow:  # numpy's implicit output: the letters used once, in alphabetical order
        out = "".join(sorted(c for c in set(sa + sb) if (sa + sb).count(c) == 1))
    if not set(spec) - set("->,") <= _LETTERS:
        raise ValueError(f"einsum: {subscripts!r} has characters other than letters, ',' and '->' "
                         "(ellipsis is not supported)")
    for which, s, shape in (("first", sa, a_shape), ("second", sb, b_shape)):
        if len(s) != len(shape):
            raise ValueError(f"einsum: {s!r} has {len(s)} subscripts but the {which} operand has "
                             f"shape {shape}")
        if len(set(s)) != len(s):
            raise ValueError(f"einsum: repeated subscript in {s!r} (diagonals and traces are not "
                             "supported)")
    if len(set(out)) != len(out) or not set(out) <= set(sa + sb):
        raise ValueError(f"einsum: output subscripts {out!r} must be distinct letters of the "
                         "inputs")
    sizes = {}
    for s, shape in ((sa, a_shape), (sb, b_shape)):
        for c, n in zip(s, shape):
            if sizes.setdefault(c, n) != n:
                raise ValueError(f"einsum: subscript {c!r} is {sizes[c]} and {n} long in shapes "
                                 f"{a_shape} and {b_shape} ({subscripts!r})")
    return sa, sb, out, sizes


def einsum(subscripts, *operands):
    """Two-operand Einstein summation, as numpy.einsum: out[out letters] = sum over the other
    letters of a[a letters] * b[b letters].

    Letters in both operands and the output are batch dims, in both but not the output are
    contracted, in one operand and the output are kept; letters in one operand only are summed
    out first. Both operands are then permuted and reshaped into one batched matmul.
    Supported: explicit ('bij,bjk->bik') and implicit ('ij,jk') forms with two operands. Not
    supported (ValueError): one or three+ operands, repeated letters in one operand ('ii,i'),
    ellipsis.

    >>> vk.einsum("bhqd,bhkd->bhqk", q, k)    # attention scores
    """
    if len(operands) != 2:
        raise ValueError(f"einsum: got {len(operands)} operand(s) for {subscripts!r}; only "
                         "two-operand contractions are supported")
    a, b = operands
    _check_tensors("einsum", a, b)
    sa, sb, out, sizes = _parse_einsum(subscripts, a.shape, b.shape)
    a, sa = _sum_out(a, sa, sb + out)
    b, sb = _sum_out(b, sb, sa + out)
    batch = [c for c in out if c in sa and c in sb]
    contract = [c for c in sa if c in sb and c not in out]
    a_free = [c for c in out if c in sa and c not in sb]
    b_free = [c for c in out if c in sb and c not in sa]
    dims = tuple(sizes[c] for c in batch)
    lhs = a.transpose([sa.index(c) for c in batch + a_free + contract]).reshape(
        (*dims, _size(sizes, a_free), _size(sizes, contract)))
    rhs = b.transpose([sb.index(c) for c in batch + contract + b_free]).reshape(
        (*dims, _size(sizes, contract), _size(sizes, b_free)))
    order = batch + a_free + b_free
    r = matmul(lhs, rhs).reshape(tuple(sizes[c] for c in order))
    return r.transpose([order.index(c) for c in out])


def _size(sizes, letters):
    return prod(sizes[c] for c in letters)


def _sum_out(t, letters, keep):
    """Sum `t` over the axes whose letters are not in `keep`; (tensor, remaining letters)."""
    axes = tuple(i for i, c in enumerate(letters) if c not in keep)
    if not axes:
        return t, letters
    return t.sum(axis=axes), "".join(c for c in letters if c in keep)


# ---- the op and its tests (tests/test_ops.py runs them on every device, f32 and bf16) ----------
def _pairs(*shape_pairs):
    def cases(rng):
        return [([rng.standard_normal(sa), rng.standard_normal(sb)], {}) for sa, sb in shape_pairs]
    return cases


def _int_pairs(rng):
    return [([rng.integers(-9, 10, sa), rng.integers(-9, 10, sb)], {})
            for sa, sb in (((7, 5), (5, 3)), ((2, 3, 4), (4, 5)), ((6,), (6,)),
                           ((33, 40), (40, 9)))]


def _inner_length(inputs, params):
    a, b = inputs
    return a.shape[-1] if np.ndim(a) and np.ndim(b) else 1


def _einsum_cases(rng):
    specs = [("ij,jk->ik", (7, 5), (5, 3)), ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)),
             ("ij,kj->ik", (6, 5), (4, 5)), ("i,i->", (9,), (9,)), ("ij,j->i", (4, 6), (6,)),
             ("bhqd,bhkd->bhqk", (2, 3, 5, 4), (2, 3, 6, 4)), ("i,j->ij", (3,), (4,)),
             ("ij,jk", (3, 4), (4, 2)), ("ijk,kl->lij", (2, 3, 4), (4, 5)),
             ("bij,bjk->bki", (3, 2, 5), (3, 5, 4)), ("ij,jk->k", (3, 4), (4, 2)),
             ("ij,ij->i", (5, 7), (5, 7))]
    return [([rng.standard_normal(sa), rng.standard_normal(sb)], {"subscripts": s})
            for s, sa, sb in specs]


def _einsum_length(inputs, params):
    _, _, out, sizes = _parse_einsum(params["subscripts"], *map(np.shape, inputs))
    return _size(sizes, [c for c in sizes if c not in out])


def _swap(x):
    return x.swapaxes(-1, -2)


def _matmul_vjp(ctx, g):
    """dA = G B^T and dB = A^T G over the broadcast batch; 1-D operands act as a row (A) or a
    column (B) whose added dim is dropped again. Autograd sums the batch dims away."""
    a, b = ctx.inputs
    a2 = a if a.ndim > 1 else a.reshape(1, -1)
    b2 = b if b.ndim > 1 else b.reshape(-1, 1)
    batch = layout.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    g2 = g.reshape((*batch, a2.shape[-2], b2.shape[-1]))
    da = db = None
    if ctx.needs_input_grad[0]:
        da = matmul(g2, _swap(b2))
        da = da if a.ndim > 1 else da.reshape((*batch, a.shape[0]))
    if ctx.needs_input_grad[1]:
        db = matmul(_swap(a2), g2)
        db = db if b.ndim > 1 else db.reshape((*batch, b.shape[0]))
    return da, db


MATMUL = Op("matmul", _matmul_host, _matmul_vulkan, vjp=_matmul_vjp, tests=[
    OpTest(lambda a, b: a @ b, np.matmul, _pairs(
        ((1, 1), (1, 1)), ((7, 5), (5, 3)), ((65, 33), (33, 70)), ((129, 17), (17, 131)),
        ((2, 3, 4), (4, 5)), ((3, 4, 5), (3, 5, 2)), ((3, 1, 4, 5), (2, 5, 6)),
        ((5,), (5,)), ((5,), (5, 3)), ((4, 5), (5,)), ((2, 4, 5), (5,)), ((6, 1), (1, 7)),
        ((0, 5), (5, 3)), ((4, 0), (0, 3)), ((4, 5), (5, 0)),
        ((2, 1, 3, 1, 2, 3), (1, 4, 1, 5, 3, 2)),   # batch dims that cannot merge: > MAXB
        ((6, 25), (25, 600)), ((600, 25), (25, 6)),  # flat and tall tiles
        ((6, 3000), (3000, 25)), ((2, 5, 1024), (1024, 3))),  # K split in chunks
        reduction_length=_inner_length),
    OpTest(lambda a, b: _swap(a).matmul(_swap(b)), lambda a, b: _swap(a) @ _swap(b),
           _pairs(((5, 7), (3, 5)), ((2, 33, 65), (70, 33))),
           reduction_length=lambda inputs, params: inputs[0].shape[-2]),
    OpTest(lambda a, b: a @ b, np.matmul, _int_pairs, dtypes=("int32",), grad=False),
    OpTest(lambda a, b: a.dot(b), np.dot, _pairs(
        ((5,), (5,)), ((4, 5), (5, 3)), ((4, 5), (5,)), ((5,), (5, 3)), ((2, 3, 4), (5, 4, 2)),
        ((2, 3, 4), (4,)), ((), (3, 4)), ((3,), ())), reduction_length=_inner_length),
    OpTest(lambda a, b: outer(a, b), np.outer, _pairs(
        ((5,), (7,)), ((2, 3), (4,)), ((0,), (3,)), ((1,), (1,)))),
    OpTest(lambda a, b, subscripts: einsum(subscripts, a, b),
           lambda a, b, subscripts: np.einsum(subscripts, a, b), _einsum_cases,
           reduction_length=_einsum_length),
])
