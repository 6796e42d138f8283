"""Linear algebra: matmul (numpy's rules), dot, outer and einsum.

>>> import vkgrad as vk
>>> a = vk.ones((2, 3), device="vulkan")
>>> (a @ a.T).numpy()                       # C[i, k] = sum_j A[i, j] B[j, k]
array([[3., 3.],
       [3., 3.]], dtype=float32)
>>> vk.einsum("bhqd,bhkd->bhqk", q, k)       # each pairwise contraction is one batched matmul

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
from . import host_blas
from .registry import Op, apply

MATMUL_PUSH = kernels.LAYOUTS["matmul"]
MAXB = MATMUL_PUSH.MAXB  # batch dims matmul.comp describes (coalesced); more loop on the host
PARALLEL_GROUPS = 64  # fewer workgroups than this leave a device idle: split K (see _splits)
DIRECT = "direct"      # the matmul.comp variant CPU devices use
MIN_SPLIT_K = 256     # ... into chunks of at least this many terms
MAX_THREAD_TILE = 8   # the most rows (columns) of outputs one thread of the tiled GEMM holds
CPU_TILED_MIN = 256   # CPU devices run the tiled GEMM on products this large along M, N and K


# ---- the op ------------------------------------------------------------------------------------
def _matmul_host(a, b):
    out = dtypes.result_type(dtypes.dtype(a.dtype), dtypes.dtype(b.dtype))
    # bf16 products accumulate in float32 and round once, as on the device.
    compute = np.float32 if out is dtypes.bfloat16 else out.np_dtype
    r = host_blas.matmul(a.astype(compute, copy=False), b.astype(compute, copy=False))
    return np.asarray(r).astype(out.np_dtype, copy=False)


def _matmul_vulkan(backend, a, b, variant=None):
    """a @ b on a Vulkan device. `variant`: the matmul.comp variant to run (a tile name of
    kernels.MATMUL_TILES, or DIRECT) instead of the one _variant picks for the device, for
    tests and benchmarks: `registry.apply(MATMUL, a, b, variant="64x64")`."""
    if variant is not None and variant != DIRECT:
        if variant not in kernels.MATMUL_TILES:
            raise ValueError(f"matmul: no variant {variant!r}; there are "
                             f"{', '.join([*kernels.MATMUL_TILES, DIRECT])}")
        if _gemm_config(backend, variant) is None:
            raise RuntimeError(f"matmul: tile {variant} does not fit "
                               f"{backend.info['device_name']}")
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
        variant = variant or _variant(backend, m, n, k, prod(batch))
        splits = _splits(backend, m, n, k, prod(batch), variant)
        if splits == 1:
            _launch(backend, out, a3, b3, variant)
        else:
            _split_k(backend, out, a3, b3, splits, variant)
    shape = batch + ((m,) if a.ndim > 1 else ()) + ((n,) if b.ndim > 1 else ())
    return out.view(shape, layout.contiguous_strides(shape), 0)


def _gemm_config(backend, tile):
    """The sizes the tiled GEMM runs kernels.MATMUL_TILES[tile] with on this device, its
    specialization constants WG to WARP_N by name, or None where the tile cannot fit.

    The thread tile TM x TN is the tile's own, doubled (the smaller side first, up to
    MAX_THREAD_TILE) while the workgroup, (BM / TM) (BN / TN) threads, exceeds the device's
    invocations per workgroup; the warp is the device's subgroup size (at most the workgroup),
    laid as wide along N as the tile allows; the K slice the deepest of kernels.MATMUL_BK whose
    shared memory (read from the SPIR-V by backend.fits, as every limit) the device has."""
    bm, bn, tm, tn = kernels.MATMUL_TILES[tile]
    info = backend.info
    most = min(info["max_work_group_invocations"], info["max_work_group_size"][0])
    while (bm // tm) * (bn // tn) > most and min(tm, tn) < MAX_THREAD_TILE:
        if tm <= tn and tm < bm:
            tm *= 2
        elif tn < bn:
            tn *= 2
        else:
            break
    threads = (bm // tm) * (bn // tn)
    warp = 1 << max(0, min(info.get("subgroup_size") or 32, threads).bit_length() - 1)
    warp_n = min(warp, bn // tn)
    warp = min(warp, warp_n * (bm // tm))
    for bk in kernels.MATMUL_BK:
        sizes = dict(WG=threads, BM=bm, BN=bn, BK=bk, TM=tm, TN=tn, WARP=warp, WARP_N=warp_n)
        if backend.fits("matmul", "", MATMUL_PUSH.spec(OUT_DT=0, A_DT=0, B_DT=0, **sizes)):
            return sizes
    return None


def _variant(backend, m, n, k, batch=1):
    """The matmul.comp variant for `batch` m x n outputs of k terms each. On CPU devices DIRECT,
    unless m, n and k are all at least CPU_TILED_MIN: there the tiled GEMM measured faster on
    lavapipe (6-8 GFLOP/s against 2-5 at 256 and 512), below it slower (0.3-2 against 2-4 on
    the skinny products of LeNet5's step), its barriers costing a CPU driver more than they
    save. Elsewhere (and on CPU devices for the large products), among the tiles that fit the
    device, the one that wastes least work on padding, then (not on CPU devices) gives the most
    workgroups up to PARALLEL_GROUPS (a GPU with fewer sits partly idle), then the largest
    (which reuses each loaded value most). RuntimeError where no tile fits."""
    if backend.is_cpu and min(m, n, k) < CPU_TILED_MIN:
        return DIRECT
    tiles = [t for t in kernels.MATMUL_TILES if _gemm_config(backend, t) is not None]
    if not tiles:
        info = backend.info
        raise RuntimeError(
            f"matmul: no GEMM tile ({', '.join(kernels.MATMUL_TILES)}) fits "
            f"{info['device_name']}, which offers {info['max_compute_shared_memory_size']} "
            f"bytes of shared memory and {info['max_work_group_invocations']} invocations per "
            "workgroup (Vulkan guarantees 16384 and 128, which the 32x64 tile needs at most)")

    def cost(t):
        bm, bn = kernels.MATMUL_TILES[t][:2]
        groups = -(-m // bm) * -(-n // bn) * batch
        return (-(-m // bm) * bm * -(-n // bn) * bn,
                0 if backend.is_cpu else -min(groups, PARALLEL_GROUPS), -bm * bn)
    return min(tiles, key=cost)


def _threads(backend, m, n, batch, variant):
    """Invocations that cover `batch` m x n outputs, as backend.launch counts them: one per
    DIRECT block, or a kernels.WORKGROUP for each tile of the tiled GEMM (one workgroup per
    tile, whatever its own size)."""
    if variant == DIRECT:
        tm, tn = kernels.MATMUL_DIRECT[variant]
        return -(-m // tm) * -(-n // tn) * batch
    bm, bn = kernels.MATMUL_TILES[variant][:2]
    return -(-m // bm) * -(-n // bn) * batch * kernels.WORKGROUP


def _splits(backend, m, n, k, batch, variant):
    """How many chunks to cut K into: a product with few outputs but a long K (a convolution's
    weight gradient: 6 x 25 outputs, K = batch x pixels) would otherwise run on a handful of
    workgroups. The largest divisor of K up to what fills PARALLEL_GROUPS."""
    groups = -(-_threads(backend, m, n, batch, variant) // kernels.WORKGROUP)
    want = min(-(-PARALLEL_GROUPS // groups), k // MIN_SPLIT_K)
    return max((s for s in range(1, want + 1) if k % s == 0), default=1)


def _split_k(backend, out, a, b, splits, variant):
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
    _launch(backend, partial, a4, b4, variant)
    lead = len(batch)
    reduce_launch(backend, "sum", partial, [*range(lead), lead + 1, lead + 2], [lead], out, 1.0)


def _operand_layout(x_len, k_len, x_stride, k_stride, start, batch_strides):
    """(axis, load) codes (kernels.MATMUL_LAYOUT) by which the tiled GEMM reads an operand with
    x_len rows (M for A, N for B) and k_len columns: along a unit-stride axis (K first) of more
    than one element, as aligned vectors where the start and every other stride are multiples
    of 4 elements, else a word at a time; without one, element by element along the axis of
    smaller stride."""
    codes = kernels.MATMUL_LAYOUT
    along_k = k_stride == 1 and k_len > 1
    if along_k or (x_stride == 1 and x_len > 1):
        other = (x_stride if x_len > 1 else 0) if along_k else (k_stride if k_len > 1 else 0)
        aligned = start % 4 == 0 and other % 4 == 0 and all(s % 4 == 0 for s in batch_strides)
        return (codes["AXIS_K"] if along_k else codes["AXIS_MN"],
                codes["LOAD_ALIGNED"] if aligned else codes["LOAD_CONTIG"])
    by_k = k_len > 1 and (x_len == 1 or abs(k_stride) <= abs(x_stride))
    return codes["AXIS_K"] if by_k else codes["AXIS_MN"], codes["LOAD_STRIDED"]


def _launch(backend, out, a, b, variant):
    """Queue matmul.comp `variant` for out[...] = a[...] @ b[...]: equal batch dims, out
    contiguous."""
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch, (a_sb, b_sb) = layout.coalesce(out.shape[:-2], a.strides[:-2], b.strides[:-2])
    if len(batch) > MAXB:
        # Batch dims that do not merge (broadcast in turn by a and b): one launch per leading index.
        for i in range(out.shape[0]):
            _launch(backend, *(x.view(x.shape[1:], x.strides[1:], x.offset + i * x.strides[0])
                               for x in (out, a, b)), variant)
        return
    pad = MAXB - len(batch)
    push = MATMUL_PUSH.pack(
        out_start=out.start, a_start=a.start, b_start=b.start, M=m, N=n, K=k,
        a_sm=a.strides[-2], a_sk=a.strides[-1], b_sk=b.strides[-2], b_sn=b.strides[-1],
        batch=[1] * pad + list(batch), a_sb=[0] * pad + list(a_sb), b_sb=[0] * pad + list(b_sb))
    spec = dict(OUT_DT=out.dtype.code, A_DT=a.dtype.code, B_DT=b.dtype.code)
    if variant != DIRECT:
        a_axis, a_load = _operand_layout(m, k, a.strides[-2], a.strides[-1], a.start, a_sb)
        b_axis, b_load = _operand_layout(n, k, b.strides[-1], b.strides[-2], b.start, b_sb)
        spec.update(_gemm_config(backend, variant), A_AXIS=a_axis, A_LOAD=a_load, B_AXIS=b_axis,
                    B_LOAD=b_load)
    backend.launch("matmul", variant if variant == DIRECT else "",
                   _threads(backend, m, n, prod(batch), variant), push, MATMUL_PUSH.spec(**spec),
                   reads=[a, b], writes=[out])


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


def _parse_einsum(subscripts, shapes):
    """([letters per operand], output letters, {letter: size}) of an einsum, or ValueError
    saying what is wrong. An ellipsis stands for the same broadcast dims in every operand and
    becomes letters beyond the alphabet ("0", "1", ...), leading the implicit output."""
    spec = subscripts.replace(" ", "")
    inputs, arrow, out = spec.partition("->")
    parts = inputs.split(",")
    if len(parts) != len(shapes):
        raise ValueError(f"einsum: {subscripts!r} names {len(parts)} operand(s) but "
                         f"{len(shapes)} were given")
    if not set(spec.replace("...", "")) - set("->,") <= _LETTERS or "." in out.replace("...", ""):
        raise ValueError(f"einsum: {subscripts!r} has characters other than letters, ',', '->' "
                         "and '...'")
    ell = max((len(shape) - len(s.replace("...", "")) for s, shape in zip(parts, shapes)
               if "..." in s), default=0)
    broadcast = "".join(str(d) for d in range(ell))
    letters, sizes = [], {}
    for i, (s, shape) in enumerate(zip(parts, shapes)):
        if s.count("...") > 1:
            raise ValueError(f"einsum: {s!r} has more than one ellipsis")
        n = len(shape) - len(s.replace("...", ""))
        if n < 0 or (n and "..." not in s):
            raise ValueError(f"einsum: {s!r} has {len(s.replace('...', ''))} subscripts but "
                             f"operand {i} has shape {shape}")
        s = s.replace("...", broadcast[ell - n:])
        letters.append(s)
        for c, m in zip(s, shape):
            if c in broadcast and m == 1:
                continue  # broadcast dims of size 1 stretch to the others
            if sizes.setdefault(c, m) != m and not (c in broadcast and sizes[c] == 1):
                raise ValueError(f"einsum: subscript {c!r} is {sizes[c]} and {m} long in shapes "
                                 f"{tuple(shapes)} ({subscripts!r})")
            sizes[c] = max(sizes[c], m)
        for c in s:
            sizes.setdefault(c, 1)
    every = "".join(letters)
    if not arrow:  # numpy's implicit output: the broadcast dims, then letters used once, sorted
        out = broadcast + "".join(sorted(c for c in set(every) - set(broadcast)
                                         if every.count(c) == 1))
    elif "..." in out:
        out = out.replace("...", broadcast)
    elif broadcast and any(sizes[c] != 1 for c in broadcast):
        raise ValueError(f"einsum: {subscripts!r} needs '...' in its output for the broadcast dims")
    if len(set(out)) != len(out) or not set(out) <= set(every):
        raise ValueError(f"einsum: output subscripts {out!r} must be distinct letters of the "
                         "inputs")
    return letters, out, sizes


def einsum(subscripts, *operands):
    """Einstein summation, as numpy.einsum and torch.einsum: out[out letters] = sum over the
    other letters of the product of the operands, each indexed by its letters.

    Any number of operands; explicit ('bij,bjk->bik') and implicit ('ij,jk') outputs; an
    ellipsis for broadcast dims ('...ij,...jk->...ik'); a letter repeated in one operand takes
    its diagonal ('ii->' is the trace, 'ii->i' the diagonal, as views).

    How: each operand first loses its repeated letters (diagonal views) and sums out the
    letters no other operand and not the output uses; then operands are contracted left to
    right, two at a time, each pair permuted and reshaped into one batched matmul (letters in
    both and needed later are batch dims, in both and not needed later contracted). bf16 with
    more than one rounding step on the way is computed in float32 and rounded once.

    >>> vk.einsum("bhqd,bhkd->bhqk", q, k)    # attention scores
    """
    if not operands:
        raise ValueError(f"einsum: {subscripts!r} needs at least one operand")
    _check_tensors("einsum", *operands)
    from ..tensor import _narrow, _widen
    letters, out, sizes = _parse_einsum(subscripts, [t.shape for t in operands])
    dtype = operands[0].dtype
    for t in operands[1:]:
        dtype = dtypes.result_type(dtype, t.dtype)
    keeps = [out + "".join(letters[:i] + letters[i + 1:]) for i in range(len(letters))]
    rounds = len(operands) - 1 + sum(not set(s) <= set(k) for s, k in zip(letters, keeps))
    terms = [_sum_out(*_distinct(_widen(t) if rounds > 1 else t, s), k)
             for t, s, k in zip(operands, letters, keeps)]
    t, s = terms[0]
    for i, (u, su) in enumerate(terms[1:], 1):
        t, s = _contract(t, s, u, su, out + "".join(x for _, x in terms[i + 1:]), sizes)
    r = t.transpose([s.index(c) for c in out]).broadcast_to([sizes[c] for c in out])
    return _narrow(r, dtype) if rounds > 1 else r


def _distinct(t, letters):
    """t with each letter repeated in `letters` reduced to one dim by taking the diagonal."""
    from .movement import diagonal
    for c in dict.fromkeys(letters):
        while letters.count(c) > 1:
            a1, a2 = letters.index(c), letters.index(c, letters.index(c) + 1)
            t = diagonal(t, 0, a1, a2)
            letters = "".join(x for k, x in enumerate(letters) if k not in (a1, a2)) + c
    return t, letters


def _contract(a, sa, b, sb, keep, sizes):
    """(a * b summed over the letters both have and `keep` lacks, its letters): one batched
    matmul. Size-1 broadcast dims stretch where a contracted or free letter needs it."""
    batch = [c for c in sa if c in sb and c in keep]
    contract = [c for c in sa if c in sb and c not in keep]
    a_free = [c for c in sa if c not in sb]
    b_free = [c for c in sb if c not in sa]
    a = a.broadcast_to([sizes[c] if c in contract else n for c, n in zip(sa, a.shape)])
    b = b.broadcast_to([sizes[c] if c in contract else n for c, n in zip(sb, b.shape)])
    lhs = a.transpose([sa.index(c) for c in batch + a_free + contract])
    rhs = b.transpose([sb.index(c) for c in batch + contract + b_free])
    na = lhs.shape[len(batch):len(batch) + len(a_free)]
    nb = rhs.shape[len(batch) + len(contract):]
    lhs = lhs.reshape((*lhs.shape[:len(batch)], prod(na), _size(sizes, contract)))
    rhs = rhs.reshape((*rhs.shape[:len(batch)], _size(sizes, contract), prod(nb)))
    r = matmul(lhs, rhs)
    return r.reshape((*r.shape[:-2], *na, *nb)), "".join(batch + a_free + b_free)


def _size(sizes, letters):
    return prod(sizes[c] for c in letters)


def _sum_out(t, letters, keep):
    """Sum `t` over the axes whose letters are not in `keep`; (tensor, remaining letters)."""
    axes = tuple(i for i, c in enumerate(letters) if c not in keep)
    if not axes:
        return t, letters
    return t.sum(axis=axes), "".join(c for c in letters if c in keep)


# ---- the backward rule and the op table ----------------------------------------------------------
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


MATMUL = Op("matmul", _matmul_host, _matmul_vulkan, vjp=_matmul_vjp)
