"""Convolution and pooling over NCHW tensors (PyTorch's layouts and semantics), differentiable.

>>> import vkgrad as vk
>>> from vkgrad.ops.conv import conv2d, max_pool2d
>>> x = vk.randn((8, 3, 32, 32), device="vulkan")
>>> w = vk.randn((16, 3, 5, 5), device="vulkan")     # (out, in / groups, kH, kW)
>>> max_pool2d(conv2d(x, w, padding=2).relu(), 2).shape
(8, 16, 16, 16)

conv2d is im2col followed by one matmul per group:
    cols[(c, i, j), (oh, ow, n)] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]   (0 in padding)
    out[(g, o), (oh, ow, n)]    = sum_k W[(g, o), k] cols[(g, k), (oh, ow, n)]
with k = (c, i, j) over the channels of group g: W viewed as (G, O/G, K) times the columns viewed
as (G, K, OH*OW*N), one large product per group (the batch is innermost in the columns, which
also makes every host tap loop run over long contiguous memory). The NCHW result is a permuted
view of (O, OH, OW, N). The backward of im2col is col2im, which sums the columns back into the
input's shape; each is the other's backward. `unfold`/`fold` are the same ops in torch's
(N, C*kH*kW, L) layout.

With one group in float32 or bf16, conv2d is one op (CONV: the columns, the product, the bias
and an optional ReLU; with no gradient wanted CONV_INFERENCE, which never stores the columns),
whose backward is one op too (CONV_BACKWARD: the ReLU's mask, dW = G cols^T, db = the rows' sums
of G, dx = col2im(W^T G), which the implicit path computes as one transposed-convolution
GEMM instead). Other convolutions are composed in Tensor ops (_conv_composed); a
gradient taken with create_graph is the composed one, so autograd differentiates every
convolution to any order.

Average pooling's forward and backward ops are each other's backward. Max pooling's forward
keeps each window's tap of its maximum (the op's stats, uint8 for up to 256 taps); its backward
scatters the gradient to those taps, and the scatter's backward gathers at them (_at_taps).

Device: shaders/conv.comp, one pipeline whose run-time modes do im2col, col2im and the pooling
passes. Every backward pass is a gather (each input pixel sums what reaches it from the windows
that contain it): deterministic, no atomics. bf16 sums accumulate in float32 and round once, on
the host as on the device. A bf16 conv computes its columns, product and bias in float32 and
rounds the result once; its gradients, too, are float32 until they round once. The one-op
convolution's implicit GEMMs are matmul.comp's conv variants (the columns read straight from
the image, the bias and ReLU in the epilogue; see _conv_vulkan for which path a device takes).
"""
from math import prod

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import dtypes, kernels
from . import host_blas
from .registry import OPS, Op, apply, apply_with_stats

_CODES = kernels.CONV_CODES
CONV_LAYOUT = kernels.LAYOUTS["conv"]
_GEMM_LAYOUT, _GEMM_FLAGS = kernels.LAYOUTS["matmul_conv"], kernels.CONV_GEMM_FLAGS
CHUNK = 16  # output elements per conv.comp invocation: whole words, one index decomposition
# Floats of columns per block of a blocked host convolution (512 KiB, in the cache): LeNet5's
# first at batch 100 takes two output rows a block (paired A/Bs at load 2-3: the compiled step
# 0.12-0.48 ms faster than with one row, half this size).
COLUMN_BLOCK = 1 << 17


# ---- geometry ---------------------------------------------------------------------------------
def _out_len(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _out_hw(size, kernel, stride, padding, dilation):
    return tuple(_out_len(*v) for v in zip(size, kernel, stride, padding, dilation))


def _compute(a):
    """The numpy type a host op sums in: float32 for bf16, the array's own type otherwise."""
    return np.dtype(np.float32) if a.dtype.itemsize < 4 else a.dtype


def _batch_last(a, padding, fill, dtype):
    """(N, C, H, W) array `a` as a (C, H + 2*ph, W + 2*pw, N) array of `dtype`, padded with
    `fill`. The host works with the batch innermost: every kernel tap then reads and writes long
    contiguous runs (with NCHW they would be runs of one output row)."""
    ph, pw = padding
    t = a.transpose(1, 2, 3, 0)
    if not ph and not pw:
        return np.ascontiguousarray(t, dtype=dtype)  # `a` itself if it is batch-last already
    n, c, h, w = a.shape
    out = np.full((c, h + 2 * ph, w + 2 * pw, n), fill, dtype)
    out[:, ph:ph + h, pw:pw + w] = t
    return out


def _nchw(a, size, padding, dtype):
    """The inverse of _batch_last: the padding cropped, an (N, C, H, W) view, as `dtype`."""
    (h, w), (ph, pw) = size, padding
    return a[:, ph:ph + h, pw:pw + w].transpose(3, 0, 1, 2).astype(dtype, copy=False)


def _taps(kernel, stride, dilation, out_hw):
    """Per kernel tap (i, j): the slices of a padded batch-last array that it reads for all
    windows, giving (C, OH, OW, N)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    return [((i, j), (slice(None), slice(i * dh, i * dh + (oh - 1) * sh + 1, sh),
                      slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)))
            for i in range(kh) for j in range(kw)]


# ---- host implementations ---------------------------------------------------------------------
def _windows(x, kernel, stride, padding, dilation, dtype):
    """x's columns as a read-only (C, kH, kW, OH, OW, N) view of x batch-last, zero-padded, as
    `dtype`: the column matrix, not yet copied out."""
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh, ow = _out_hw(x.shape[2:], kernel, stride, padding, dilation)
    xp = _batch_last(x, padding, 0, dtype)
    s = xp.strides
    return as_strided(xp, (c, kh, kw, oh, ow, n),
                      (s[0], s[1] * dh, s[2] * dw, s[1] * sh, s[2] * sw, s[3]), writeable=False)


def _im2col_host(x, kernel, stride, padding, dilation):
    windows = _windows(x, kernel, stride, padding, dilation, x.dtype)
    c, kh, kw, oh, ow, n = windows.shape
    return np.ascontiguousarray(windows).reshape(c * kh * kw, oh * ow * n)


def _col2im_host(cols, size, kernel, stride, padding, dilation):
    """The input-shaped sum of the columns (K, OH*OW*N) at their taps. With a kernel of more
    than one row and column the taps of each kernel column are summed first, a kernel row at a
    time, into a (C, kW, H + 2ph, OW, N) array of rows, and those then a kernel column at a
    time: kH + kW adds, each over long runs, instead of kH kW adds (LeNet5's second
    convolution, 25 taps over 6 x 8 x 8 x 100: 0.30 ms against 0.41)."""
    (kh, kw), out_hw = kernel, _out_hw(size, kernel, stride, padding, dilation)
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    c, n = cols.shape[0] // (kh * kw), cols.shape[1] // prod(out_hw)
    taps = cols.astype(_compute(cols), copy=False).reshape(c, kh, kw, *out_hw, n)
    hp, wp = size[0] + 2 * padding[0], size[1] + 2 * padding[1]
    xp = np.zeros((c, hp, wp, n), taps.dtype)
    if kh == 1 or kw == 1:
        for (i, j), window in _taps(kernel, stride, dilation, out_hw):
            xp[window] += taps[:, i, j]
        return _nchw(xp, size, padding, cols.dtype)
    rows = np.zeros((c, kw, hp, ow, n), taps.dtype)
    for i in range(kh):
        rows[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh] += taps[:, i]
    for j in range(kw):
        xp[:, :, j * dw:j * dw + (ow - 1) * sw + 1:sw] += rows[:, j]
    return _nchw(xp, size, padding, cols.dtype)


def _block_rows(windows):
    """Output rows per block of a blocked host convolution: about COLUMN_BLOCK floats of
    columns (at least one row)."""
    c, kh, kw, _, ow, n = windows.shape
    return max(1, COLUMN_BLOCK // max(1, c * kh * kw * ow * n))


def _column_blocks(windows, rows, ones=False):
    """(span of output columns, their columns (K, span)) of each block of `rows` output rows of
    the columns `windows` (_windows' view), copied into one float32 buffer that the blocks
    reuse; with `ones`, a row of ones under the columns (K + 1, span)."""
    c, kh, kw, oh, ow, n = windows.shape
    k, row = c * kh * kw, ow * n
    buffer = np.empty((k + ones, rows * row), np.float32)
    if ones:
        buffer[k] = 1
    for r0 in range(0, oh, rows):
        r1 = min(oh, r0 + rows)
        cols = buffer[:, :(r1 - r0) * row]
        np.copyto(cols[:k].reshape(c, kh, kw, r1 - r0, ow, n), windows[:, :, :, r0:r1])
        yield slice(r0 * row, r1 * row), cols


def _with_bias(w, bias):
    """[w | bias] (O, K + 1) in float32, the weights of columns with a row of ones under them,
    whose product adds the bias as it multiplies; w alone (as float32) without a bias."""
    if bias is None:
        return w.astype(np.float32, copy=False)
    wb = np.empty((w.shape[0], w.shape[1] + 1), np.float32)
    wb[:, :-1], wb[:, -1] = w, bias
    return wb


def _conv_blocks(windows, w, bias, relu, out_dtype):
    """max(w @ cols + bias, 0) (relu) as an (O, OH*OW*N) array of out_dtype for the columns
    `windows` (_windows' view), made a block of output rows at a time: each block's columns
    (_block_rows; with a bias, a row of ones under them) are built and multiplied by
    [w | bias] (_with_bias), and the ReLU applied in place, in float32, and the block rounded
    to out_dtype once, while it is in the cache, so the column matrix (25 x 576,000 floats for
    LeNet5's first convolution at batch 1,000) never reaches memory. (The bias in the product
    measured 0.04-0.09 ms faster than its add to each block, at LeNet5's batch 100.)"""
    c, kh, kw, oh, ow, n = windows.shape
    w = _with_bias(w, bias)
    out = np.empty((w.shape[0], oh * ow * n), out_dtype.np_dtype)
    rows = _block_rows(windows)
    wide = out if out.dtype == np.float32 else np.empty((w.shape[0], rows * ow * n), np.float32)
    for span, cols in _column_blocks(windows, rows, ones=bias is not None):
        block = out[:, span] if wide is out else wide[:, :span.stop - span.start]
        np.matmul(w, cols, out=block)
        if relu:
            np.maximum(block, 0, out=block)
        if wide is not out:
            out[:, span] = block  # rounds to nearest even, once
    return out


def _conv_inference_host(x, w, bias, kernel, stride, padding, dilation, relu, out_dtype):
    """max(w @ cols(x) + bias, 0) (relu) as an (O, OH*OW*N) array of out_dtype, in blocks
    (_conv_blocks)."""
    return _conv_blocks(_windows(x, kernel, stride, padding, dilation, np.float32), w, bias,
                        relu, out_dtype)


def _blocked_training(windows, o):
    """Whether a training convolution with O outputs keeps no columns: it is computed in blocks
    (_conv_blocks) and its backward builds each block's columns again, when each block's
    products stay within host_blas.SMALL_MNK multiply-adds. Measured at LeNet5's batch 100 (A/B
    of the compiled step in one process): the first convolution (O 6, K 25, 2,400 columns a
    row) blocked saved 0.27-0.34 ms of 4.7; the second (O 16, K 150, 800 columns a row, blocks
    of 1.9 M multiply-adds) blocked cost 0.3-0.5 ms, in blocks of one to four rows."""
    c, kh, kw, _, ow, n = windows.shape
    return o * c * kh * kw * ow * n * _block_rows(windows) <= host_blas.SMALL_MNK


def _conv_host(x, w, bias, kernel, stride, padding, dilation, relu, out_dtype):
    """(max(w @ cols + bias, 0) (relu) as an (O, OH*OW*N) array of out_dtype, cols1), the
    training convolution, or (that result,) alone where _blocked_training says so. cols1 is x's
    columns (K, OH*OW*N) with a row of ones under them, built in one copy (widening a bf16 x)
    and kept for the backward: the product [w | bias] cols1 adds the bias as it multiplies (no
    pass of its own), and the backward's G cols1^T is [dW | db]. Then one in-place max, in
    float32, and the result rounded once."""
    windows = _windows(x, kernel, stride, padding, dilation, np.float32)
    o, k, m = w.shape[0], prod(windows.shape[:3]), prod(windows.shape[3:])
    if _blocked_training(windows, o):
        return (_conv_blocks(windows, w, bias, relu, out_dtype),)
    cols = np.empty((k + 1, m), np.float32)
    np.copyto(cols[:k].reshape(windows.shape), windows)
    cols[k] = 1
    out = host_blas.matmul(_with_bias(w, bias), cols if bias is not None else cols[:k])
    if relu:
        np.maximum(out, 0, out=out)
    return out.astype(out_dtype.np_dtype, copy=False), cols


def _relu_passes(out):
    """Where the gradient of a ReLU with output `out` passes, by torch's rule: where out is not
    <= 0. out = max(z, 0) is +-0, positive or a NaN of either sign, so that is where out != 0:
    a float comparison in float32, and for bf16 (whose comparison costs 20 times one of int16s)
    where its bits are nonzero once the sign bit is shifted out."""
    if out.dtype.itemsize == 4:
        return out != 0
    return np.left_shift(out.view(np.int16), 1) != 0


def _row_sums(a):
    """Each row's sum of 2-D float `a`, as a BLAS product with a vector of ones (LeNet5's 6 x
    57,600 gradient: 0.04 ms against 0.07-0.12 for numpy's sum)."""
    return a @ np.ones(a.shape[1], a.dtype)


def _weight_blocks(windows, grad):
    """[grad cols^T | grad's row sums] (O, K + 1) for the columns `windows` (_windows' view),
    each block's columns (_block_rows, with a row of ones under them) built again in the cache
    and multiplied, and the blocks' products summed."""
    total = None
    for span, cols in _column_blocks(windows, _block_rows(windows), ones=True):
        part = host_blas.matmul(grad[:, span], cols.T)
        total = part if total is None else np.add(total, part, out=total)
    return total


def _conv_backward_host(x, w, cols, out, g, kernel, stride, padding, dilation, relu,
                        grad_dtypes):
    """(dx, dW, db) of _conv_host's result for its upstream gradient g (O, OH*OW*N) (x giving
    dx's shape, the saved cols1 (K + 1, OH*OW*N) the rest; cols None after a blocked forward,
    whose columns _weight_blocks builds again from x), each None where grad_dtypes (the
    operands' dtypes, None where no gradient is wanted) says so. With relu, G = g where the
    ReLU passes it (_relu_passes of the saved result out), else 0; then [dW | db] = G cols1^T
    (db: the sums of G's rows, by the row of ones) and dx = col2im(W^T G): in float32, each
    rounded once.

    G is g * mask, the branch-free select, exact unless g holds an infinity or NaN where the
    mask is 0 (0 * inf is NaN where G must be 0): the row sums of G are then not finite, and
    only then is G made again by np.where (a branch per element; the sums of a finite G that
    overflow send it there too, harmlessly)."""
    g = g.astype(np.float32, copy=False)
    passes = _relu_passes(out) if relu else None
    x_dtype, w_dtype, b_dtype = grad_dtypes
    k = w.shape[1]

    def weight_and_sums(masked):
        if w_dtype is not None:
            both = host_blas.matmul(masked, cols.T) if cols is not None else _weight_blocks(
                _windows(x, kernel, stride, padding, dilation, np.float32), masked)
            return both[:, :k], both[:, k]
        wanted = b_dtype is not None or passes is not None
        return None, _row_sums(masked) if wanted else None
    if passes is None:
        grad = g
    else:
        with np.errstate(invalid="ignore"):  # (0 * inf: handled below)
            grad = np.multiply(g, passes)
    dw, sums = weight_and_sums(grad)
    if passes is not None and not np.isfinite(sums).all():
        grad = np.where(passes, g, np.zeros((), g.dtype))
        dw, sums = weight_and_sums(grad)
    dx = None if x_dtype is None else _col2im_host(
        host_blas.matmul(w.astype(np.float32, copy=False).T, grad), x.shape[2:], kernel, stride,
        padding, dilation).astype(x_dtype.np_dtype, copy=False)
    return (dx, None if w_dtype is None else dw.astype(w_dtype.np_dtype),
            None if b_dtype is None else sums.astype(b_dtype.np_dtype))


def _tap_dtype(kernel):
    """The type of max pooling's saved argmax, the tap i*kW + j of each window's maximum: uint8
    for up to 256 taps (a quarter of int32's bytes for every pass over it), else int32."""
    return dtypes.uint8 if prod(kernel) <= 256 else dtypes.int32


def _first_taps(size, kernel, stride, padding, dilation, out_hw):
    """(OH, OW, 1): each window's first tap inside the input in row-major order (0 if none)."""
    first = []
    for n, o, k, s, p, d in zip(size, out_hw, kernel, stride, padding, dilation):
        at = np.arange(o)[:, None] * s - p + np.arange(k) * d
        first.append(((at >= 0) & (at < n)).argmax(axis=1))
    return (first[0][:, None] * kernel[1] + first[1])[:, :, None]


def _bf16_bits(x, widen):
    """bf16 `x` as the float32 of the same value (widen), or float32 `x` holding bf16 values as
    bf16, exactly, by shifting the bits, for what needs no rounding (a maximum is one of its
    inputs): narrowing takes a fifth of ml_dtypes' rounding time, widening two thirds."""
    if widen:
        return np.left_shift(x.view(np.uint16), 16, dtype=np.uint32).view(np.float32)
    out = np.empty(x.shape, np.uint16)
    np.right_shift(x.view(np.uint32), 16, out=out, casting="unsafe")
    return out.view(dtypes.bfloat16.np_dtype)


def _max_pool_host(x, kernel, stride, padding, dilation, argmax):
    """(out,) or with argmax (out, tap): out = each window's maximum (NaN if it holds one), tap
    (N, C, OH, OW), of _tap_dtype, = its first maximum's tap in row-major order (the first NaN;
    never the padding), a view of a batch-last array as the backward reads it. One pass per
    tap: tap t is taken where it exceeds the maximum of the taps before it, so the last such t,
    the largest, is the first maximum; the rare windows where that misses (a NaN; padding
    before an all -inf window) are fixed after."""
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, dilation)
    taps = _taps(kernel, stride, dilation, out_hw)
    bf16 = x.dtype == dtypes.bfloat16.np_dtype
    xp = _batch_last(_bf16_bits(x, True) if bf16 else x, padding, -np.inf, _compute(x))
    best = xp[taps[0][1]].copy()

    def result():
        return (_bf16_bits(best, False) if bf16 else best).transpose(3, 0, 1, 2)

    if not argmax:
        for _, window in taps[1:]:
            np.maximum(best, xp[window], out=best)
        return (result(),)
    tap = np.zeros(best.shape, _tap_dtype(kernel).np_dtype)
    above = np.empty(best.shape, bool)
    step = above.view(np.uint8)  # above's bytes times t: no bool-to-int casting pass
    for t, (_, window) in enumerate(taps[1:], 1):
        v = xp[window]
        np.greater(v, best, out=above)
        np.maximum(best, v, out=best)
        taken = np.multiply(step, tap.dtype.type(t), out=step if tap.itemsize == 1 else None)
        np.maximum(tap, taken, out=tap)
    if any(padding):  # -inf windows: tap 0 may be padding, their first real tap is the maximum
        low = best == -np.inf
        if low.any():
            first = _first_taps(x.shape[2:], kernel, stride, padding, dilation, out_hw)
            np.copyto(tap, np.broadcast_to(first.astype(tap.dtype), tap.shape), where=low)
    if np.isnan(best.max(initial=0)):  # (max propagates NaN)
        nan = np.isnan(best)
        for t, (_, window) in reversed(list(enumerate(taps))):  # the first NaN, last written
            np.copyto(tap, t, where=nan & np.isnan(xp[window]))
    return result(), tap.transpose(3, 0, 1, 2)


def _disjoint(kernel, stride, dilation):
    """Whether no input element lies in two windows (each dim's stride spans its window)."""
    return all(s >= (k - 1) * d + 1 for k, s, d in zip(kernel, stride, dilation))


def _max_pool_back_host(tap, g, size, kernel, stride, padding, dilation):
    """dx: g scattered to the taps `tap` (max pooling's forward argmax) of its windows. Per
    tap t, g where tap == t, selected on the bits (g's bits times 0 or 1: exact for infinities
    and NaN, where g * mask is not). Disjoint windows place g as it is, in its own dtype (a -0
    stays -0); overlapping ones sum their shares in float32 and round once."""
    tap = np.ascontiguousarray(tap.transpose(1, 2, 3, 0))  # (the forward's own array)
    (c, oh, ow, n), (ph, pw) = tap.shape, padding
    disjoint = _disjoint(kernel, stride, dilation)
    gt = np.ascontiguousarray(g.transpose(1, 2, 3, 0), dtype=g.dtype if disjoint else _compute(g))
    bits = np.dtype(f"u{gt.itemsize}")
    covered = disjoint and dilation == (1, 1) and stride == kernel and (
        oh * kernel[0], ow * kernel[1]) == (size[0] + 2 * ph, size[1] + 2 * pw)
    dxp = (np.empty if covered else np.zeros)((c, size[0] + 2 * ph, size[1] + 2 * pw, n),
                                              gt.dtype)
    hit = np.empty(tap.shape, bool)
    share = None if disjoint else np.empty(gt.shape, bits)
    for t, (_, window) in enumerate(_taps(kernel, stride, dilation, (oh, ow))):
        np.equal(tap, t, out=hit)
        if disjoint:
            np.multiply(gt.view(bits), hit, out=dxp.view(bits)[window])
        else:
            dxp[window] += np.multiply(gt.view(bits), hit, out=share).view(gt.dtype)
    return _nchw(dxp, size, padding, g.dtype)


def _window_counts(size, out_hw, kernel, stride, padding, include_pad):
    """(OH, OW): the taps of each window inside the input, or with include_pad inside the
    padded input (kH*kW except for ceil_mode's last windows): PyTorch's avg pooling divisors."""
    counts = []
    for n, o, k, s, p in zip(size, out_hw, kernel, stride, padding):
        lo = np.arange(o) * s - p
        counts.append(np.minimum(lo + k, n + p) - lo if include_pad
                      else np.minimum(lo + k, n) - np.maximum(lo, 0))
    return np.outer(*counts)


def _avg_divisor(size, out_hw, kernel, stride, padding, include_pad):
    """What avg pooling divides each window by, as (OH, OW, 1): kH*kW, or only the taps inside
    the input."""
    if include_pad:
        return kernel[0] * kernel[1]
    return _window_counts(size, out_hw, kernel, stride, padding, False)[:, :, None]


def _avg_pool_host(x, kernel, stride, padding, include_pad):
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, (1, 1))
    xp = _batch_last(x, padding, 0, _compute(x))
    taps = _taps(kernel, stride, (1, 1), out_hw)
    acc = xp[taps[0][1]].copy()
    for _, window in taps[1:]:
        acc += xp[window]
    acc /= _avg_divisor(x.shape[2:], out_hw, kernel, stride, padding, include_pad)
    return acc.transpose(3, 0, 1, 2).astype(x.dtype, copy=False)


def _avg_pool_back_host(g, size, kernel, stride, padding, include_pad):
    (n, c), out_hw = g.shape[:2], g.shape[2:]
    share = np.empty((c, *out_hw, n), _compute(g))  # batch-last, whatever g's layout
    np.divide(g.transpose(1, 2, 3, 0), _avg_divisor(size, out_hw, kernel, stride, padding,
                                                     include_pad), out=share, dtype=share.dtype)
    dxp = np.zeros((c, size[0] + 2 * padding[0], size[1] + 2 * padding[1], n), share.dtype)
    for _, window in _taps(kernel, stride, (1, 1), out_hw):
        dxp[window] += share
    return _nchw(dxp, size, padding, g.dtype)


# ---- Vulkan: shaders/conv.comp ----------------------------------------------------------------
def _launch(mode, out_shape, dtype, a, b, batch, channels, size, out_hw, kernel, stride, padding,
            dilation=(1, 1), include_pad=False, writes_b=False):
    backend = a.backend
    out = backend.empty(out_shape, dtype)
    if out.size == 0:
        return out
    push = CONV_LAYOUT.pack(
        n=out.size, out_start=out.start, a_start=a.start, b_start=0 if b is None else b.start,
        N=batch, C=channels, H=size[0], W=size[1], OH=out_hw[0], OW=out_hw[1], kh=kernel[0],
        kw=kernel[1], sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1], dh=dilation[0],
        dw=dilation[1], include_pad=int(include_pad), chunk=CHUNK, a_strides=a.strides,
        b_strides=() if b is None else b.strides)
    backend.launch("conv", "", -(-out.size // CHUNK), push,
                   CONV_LAYOUT.spec(MODE=_CODES[mode], OUT_DT=out.dtype.code, A_DT=a.dtype.code,
                                    B_DT=kernels.DTYPE_CODES["imm"] if b is None else
                                    b.dtype.code),
                   reads=[a] if writes_b else [a, b], writes=[out, b] if writes_b else [out])
    return out


def _im2col_vulkan(backend, x, kernel, stride, padding, dilation):
    n, c = x.shape[:2]
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, dilation)
    return _launch("MODE_IM2COL", (c * prod(kernel), prod(out_hw) * n), x.dtype, x, None, n, c,
                   x.shape[2:], out_hw, kernel, stride, padding, dilation)


IMPLICIT, EXPLICIT = "implicit", "explicit"  # the paths of a Vulkan training convolution


def _training_path(backend):
    """The path a training convolution takes on this device (see _conv_vulkan)."""
    return EXPLICIT if backend.is_cpu else IMPLICIT


def _conv_vulkan(backend, x, w, bias, kernel, stride, padding, dilation, relu, out_dtype,
                 path=None, variant=None):
    """The host's _conv_host on a Vulkan device, by one of two paths (`path`, for tests; by
    default _training_path's: EXPLICIT on CPU devices, IMPLICIT elsewhere):
    - IMPLICIT: (result,), one implicit GEMM (_conv_gemm_vulkan) that never stores the columns;
      the backward's weight and input gradients are implicit GEMMs too.
    - EXPLICIT: (result, float32 columns): im2col (a bf16 x widened first), the product, the
      bias added and the ReLU applied as launches of their own, in float32, the columns saved
      for the weight gradient's plain GEMM. On lavapipe this measured faster in training (for
      LeNet5's step at batch 100 the implicit path was 6% slower): the implicit forward saves
      less than the backward's im2col then costs, its weight gradient was 1.0-1.4x slower than
      im2col and the GEMM, and the conv kernels' address arithmetic made their GEMM 1.6-2.2x
      slower than matmul.comp's on the same columns.
    `variant`: the implicit GEMM's tile or DIRECT, as _conv_gemm_vulkan's."""
    if (path or _training_path(backend)) == IMPLICIT:
        return (_conv_gemm_vulkan(backend, x, w, bias, kernel, stride, padding, dilation, relu,
                                  out_dtype, variant),)
    from .elementwise import launch
    from .linalg import _matmul_vulkan
    if x.dtype is not dtypes.float32:
        x = launch(backend, "identity", dtypes.float32, x.shape, [x], "float")
    cols = _im2col_vulkan(backend, x, kernel, stride, padding, dilation)
    out = _matmul_vulkan(backend, w, cols)
    if bias is not None:
        column = bias.view((bias.shape[0], 1), (bias.strides[0], 1), bias.offset)
        out = launch(backend, "add", dtypes.float32, out.shape, [out, column], "float")
    if relu or out_dtype is not dtypes.float32:  # (relu's result rounded to out_dtype)
        out = launch(backend, "relu" if relu else "identity", out_dtype, out.shape, [out],
                     "float")
    return out, cols


def _conv_gemm_vulkan(backend, x, w, bias, kernel, stride, padding, dilation, relu, out_dtype,
                      variant=None):
    """max(w @ cols(x) + bias, 0) (relu) as an (O, OH*OW*N) array of out_dtype in one launch of
    matmul.comp's conv variant, which reads the columns straight from x, in float32 (x and w of
    any float dtype) and rounds once. `variant`: the tile (or DIRECT) to run instead of the one
    linalg._variant picks for the product, for tests and benchmarks:
    `registry.apply(CONV_INFERENCE, x, w, b, ..., variant="32x64")` (CONV with
    path="implicit")."""
    from .linalg import _variant
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, dilation)
    (m, k), cols = w.shape, prod(out_hw) * x.shape[0]
    out = backend.empty((m, cols), out_dtype)
    if out.size:
        flags = (_GEMM_FLAGS["RELU"] if relu else 0) | (0 if bias is None else _GEMM_FLAGS["BIAS"])
        _conv_gemm(backend, out, w, x, bias, (kernel, stride, padding, dilation, out_hw),
                   flags, k, 1, variant or _variant(backend, m, cols, k))
    return out


def _conv_weight_grad_vulkan(backend, g, x, kernel, stride, padding, dilation, out_dtype,
                             variant=None):
    """dW = g @ cols(x)^T, (O, C*kH*kW) of out_dtype for g (O, OH*OW*N), as the implicit GEMM
    (FLAG_COLS_T: the columns read from x), its long sum over the windows split in chunks as
    linalg._splits says, the partial products then summed by one reduction."""
    from .linalg import _splits, _variant
    from .reduce import launch as reduce_launch
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, dilation)
    (m, k), n = g.shape, x.shape[1] * prod(kernel)
    variant = variant or _variant(backend, m, n, k)
    splits = _splits(backend, m, n, k, 1, variant)
    out = backend.empty((m, n), out_dtype)
    if out.size:
        partial = out if splits == 1 else backend.empty((splits, m, n), dtypes.float32)
        _conv_gemm(backend, partial, g, x, None, (kernel, stride, padding, dilation, out_hw),
                   _GEMM_FLAGS["COLS_T"], k // splits, splits, variant)
        if splits > 1:
            reduce_launch(backend, "sum", partial, [1, 2], [0], out, 1.0)
    return out


def _conv_input_grad_vulkan(backend, g, w, x_shape, kernel, stride, padding, dilation,
                            out_dtype, variant=None):
    """dx = col2im(W^T g), (N, C, H, W) of out_dtype (a batch-last view of a (C, H*W*N) array)
    for g (O, OH*OW*N) and w (O, C*kH*kW), as one implicit GEMM (FLAG_GRAD_X: the transposed
    convolution's columns read from g, the column gradient W^T g never stored):
        dx[n, c, h, w] = sum over (o, i, j) of W[o, c, i, j] g[o, (oh, ow, n)]
    for the (i, j) with h + ph - i*dh = oh*sh, w + pw - j*dw = ow*sw inside the output. W is
    copied first as the C x (O kH kW) matrix W'[c, (o, i, j)] the GEMM's rows read (O*C*kH*kW
    elements, a kernel's size)."""
    from .elementwise import launch
    from .linalg import _variant
    (n, c, h, wd), (kh, kw) = x_shape, kernel
    o, taps = w.shape[0], kh * kw
    out_hw = _out_hw((h, wd), kernel, stride, padding, dilation)
    wt = launch(backend, "identity", w.dtype, (c, o, taps),
                [w.view((c, o, taps), (taps * w.strides[1], w.strides[0], w.strides[1]),
                        w.offset)], "float")
    wt = wt.view((c, o * taps), (o * taps, 1), wt.offset)
    m, cols, k = c, h * wd * n, o * taps
    out = backend.empty((m, cols), out_dtype)
    if out.size:
        s0, s1 = g.strides
        image = g.view((n, o, *out_hw), (s1, s0, out_hw[1] * n * s1, n * s1), g.offset)
        _conv_gemm(backend, out, wt, image, None, (kernel, stride, padding, dilation, (h, wd)),
                   _GEMM_FLAGS["GRAD_X"], k, 1, variant or _variant(backend, m, cols, k))
    return out.view((n, c, h, wd), (1, h * wd * n, wd * n, n), out.offset)


def _conv_gemm(backend, out, a, x, bias, geometry, flags, k, splits, variant):
    """Queue matmul.comp's conv `variant` (a tile or DIRECT): out[s] = a[:, s-th chunk of k]
    @ B[s-th chunk] (+ bias, ReLU as `flags` say) for s < splits, B = cols(x) or (FLAG_COLS_T)
    cols(x)^T, read from x, or (FLAG_GRAD_X) the transposed convolution's columns of the
    gradient image x (see _conv_input_grad_vulkan; geometry's out_hw is then dx's size)."""
    from .linalg import DIRECT, _gemm_config, _operand_layout, _threads
    kernel, stride, padding, dilation, out_hw = geometry
    m, n = out.shape[-2:]
    push = _GEMM_LAYOUT.pack(
        out_start=out.start, a_start=a.start, b_start=x.start,
        bias_start=0 if bias is None else bias.start, M=m, N=n, K=k, a_sm=a.strides[0],
        a_sk=a.strides[1], bias_s=0 if bias is None else bias.strides[0], NB=x.shape[0],
        C=x.shape[1], H=x.shape[2], W=x.shape[3], OH=out_hw[0], OW=out_hw[1], kh=kernel[0],
        kw=kernel[1], sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1], dh=dilation[0],
        dw=dilation[1], xs=x.strides, flags=flags, bias_dt=0 if bias is None else bias.dtype.code,
        splits=splits)
    spec = dict(OUT_DT=out.dtype.code, A_DT=a.dtype.code, B_DT=x.dtype.code)
    if variant != DIRECT:
        codes = kernels.MATMUL_LAYOUT
        a_axis, a_load = _operand_layout(m, k, a.strides[0], a.strides[1], a.start,
                                         (k * a.strides[1],) if splits > 1 else ())
        spec.update(_gemm_config(backend, variant), A_AXIS=a_axis, A_LOAD=a_load,
                    B_AXIS=codes["AXIS_MN"], B_LOAD=codes["LOAD_STRIDED"])
    backend.launch("matmul", f"conv_{DIRECT}" if variant == DIRECT else "conv",
                   _threads(backend, m, n, splits, variant), push, _GEMM_LAYOUT.spec(**spec),
                   reads=[x, a, bias], writes=[out])


def _conv_backward_vulkan(backend, x, w, cols, out, g, kernel, stride, padding, dilation,
                          relu, grad_dtypes, variant=None):
    """_conv_backward_host on a Vulkan device: the mask, dW, dx, db a row sum, in float32, each
    result rounded once. After the EXPLICIT forward, dW is G cols^T from the columns it saved
    and dx col2im(W^T G); after the IMPLICIT one (cols None) each is one implicit GEMM that
    stores no column matrix (_conv_weight_grad_vulkan, _conv_input_grad_vulkan).
    `variant`: the implicit GEMM's (see _conv_gemm_vulkan), forced for tests."""
    from .elementwise import launch
    from .linalg import _matmul_vulkan

    def rounded(a, dtype):
        return a if a.dtype is dtype else launch(backend, "identity", dtype, a.shape, [a],
                                                 "float")
    if relu:  # torch's rule (the host's _relu_passes): where out = max(z, 0) is not +-0
        kept = launch(backend, "ne", dtypes.bool_, out.shape, [out, 0.0], "float")
        g = launch(backend, "where", dtypes.float32, g.shape, [kept, g, 0.0], "float")
    g = rounded(g, dtypes.float32)  # (a bf16 g widened: W^T G must not round before col2im)
    x_dtype, w_dtype, b_dtype = grad_dtypes
    dx = dw = db = None
    if x_dtype is not None and cols is None:
        dx = _conv_input_grad_vulkan(backend, g, w, x.shape, kernel, stride, padding, dilation,
                                     x_dtype, variant)
    elif x_dtype is not None:
        wt = w.view(w.shape[::-1], w.strides[::-1], w.offset)
        dx = rounded(_col2im_vulkan(backend, _matmul_vulkan(backend, wt, g), x.shape[2:], kernel,
                                    stride, padding, dilation), x_dtype)
    if w_dtype is not None and cols is None:
        dw = _conv_weight_grad_vulkan(backend, g, x, kernel, stride, padding, dilation, w_dtype,
                                      variant)
    elif w_dtype is not None:
        colst = cols.view(cols.shape[::-1], cols.strides[::-1], cols.offset)
        dw = rounded(_matmul_vulkan(backend, g, colst), w_dtype)
    if b_dtype is not None:
        db = rounded(OPS["sum"].vulkan(backend, g, (1,), False), b_dtype)
    return dx, dw, db


def _col2im_vulkan(backend, cols, size, kernel, stride, padding, dilation):
    out_hw = _out_hw(size, kernel, stride, padding, dilation)
    c, n = cols.shape[0] // prod(kernel), cols.shape[1] // prod(out_hw)
    return _launch("MODE_COL2IM", (n, c, *size), cols.dtype, cols, None, n, c, size, out_hw,
                   kernel, stride, padding, dilation)


def _max_pool_vulkan(backend, x, kernel, stride, padding, dilation, argmax):
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, dilation)
    shape = x.shape[:2] + out_hw
    tap = backend.empty(shape, _tap_dtype(kernel)) if argmax else None
    out = _launch("MODE_MAXPOOL", shape, x.dtype, x, tap, *x.shape[:2], x.shape[2:], out_hw,
                  kernel, stride, padding, dilation, writes_b=argmax)
    return (out, tap) if argmax else (out,)


def _max_pool_back_vulkan(backend, tap, g, size, kernel, stride, padding, dilation):
    return _launch("MODE_MAXPOOL_BACK", (*g.shape[:2], *size), g.dtype, tap, g, *g.shape[:2],
                   size, g.shape[2:], kernel, stride, padding, dilation)


def _avg_pool_vulkan(backend, x, kernel, stride, padding, include_pad):
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, (1, 1))
    return _launch("MODE_AVGPOOL", x.shape[:2] + out_hw, x.dtype, x, None, *x.shape[:2],
                   x.shape[2:], out_hw, kernel, stride, padding, include_pad=include_pad)


def _avg_pool_back_vulkan(backend, g, size, kernel, stride, padding, include_pad):
    return _launch("MODE_AVGPOOL_BACK", (*g.shape[:2], *size), g.dtype, g, None, *g.shape[:2],
                   size, g.shape[2:], kernel, stride, padding, include_pad=include_pad)


# ---- backward rules: each op of a pair is the other's backward --------------------------------
def _without_size(params):
    return {k: v for k, v in params.items() if k != "size"}


def _im2col_vjp(ctx, g):
    return (apply(COL2IM, g, size=ctx.shapes[0][2:], **ctx.params),)


def _col2im_vjp(ctx, g):
    return (apply(IM2COL, g, **_without_size(ctx.params)),)


def _max_pool_vjp(ctx, g):
    window = {k: v for k, v in ctx.params.items() if k != "argmax"}
    return (apply(MAX_POOL_BACKWARD, ctx.stats[0], g, size=ctx.shapes[0][2:], **window),)


def _max_pool_back_vjp(ctx, g):
    # the scatter's backward gathers g at the taps (the argmax itself has no gradient)
    return None, _at_taps(g, ctx.inputs[0], **_without_size(ctx.params))


def _avg_pool_vjp(ctx, g):
    return (apply(AVG_POOL_BACKWARD, g, size=ctx.shapes[0][2:], **ctx.params),)


def _avg_pool_back_vjp(ctx, g):
    return (apply(AVG_POOL, g, **_without_size(ctx.params)),)


def _conv_vjp(ctx, g):
    """The training convolution's (dx, dW, db): one CONV_BACKWARD (with create_graph, the
    gradients of the composed convolution, which differentiate further)."""
    from ..autograd import grad as autograd_grad
    from ..autograd import is_grad_enabled
    from ..tensor import Tensor
    x, w, bias = ctx.inputs
    params, needs = ctx.params, ctx.needs_input_grad
    if is_grad_enabled():
        geometry = {k: params[k] for k in ("kernel", "stride", "padding", "dilation")}
        weight = w.reshape(w.shape[0], x.shape[1], *params["kernel"])
        out = _conv_composed(x, weight, bias, 1, geometry, params["out_dtype"])
        out = out.relu() if params["relu"] else out
        grads = iter(autograd_grad(out, [t for t, need in zip(ctx.inputs, needs) if need], g,
                                   create_graph=True))
        return tuple(next(grads) if need else None for need in needs)
    arrays = g.device.backend.run(
        CONV_BACKWARD, x._data, w._data, ctx.stats[0]._data if ctx.stats else None,
        ctx.output._data, g._data, kernel=params["kernel"], stride=params["stride"],
        padding=params["padding"], dilation=params["dilation"], relu=params["relu"],
        grad_dtypes=tuple(t.dtype if need else None for t, need in zip(ctx.inputs, needs)),
        **{k: v for k, v in params.items() if k == "variant"})  # (a test's forced tile)
    return tuple(None if a is None else Tensor._wrap(a, g.device) for a in arrays)


# ---- argument checks ----------------------------------------------------------------------------
def _check_tensor(name, what, t):
    from ..tensor import Tensor
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: {what} must be a tensor, not {type(t).__name__}; wrap arrays "
                        "with vkgrad.tensor(...)")


def _tuple(name, arg, value, dims, minimum):
    """`value` (an int or a sequence of `dims` ints) as a tuple, each at least `minimum`."""
    v = (value,) * dims if isinstance(value, (int, np.integer)) else tuple(value) \
        if isinstance(value, (tuple, list)) else None
    if v is None or len(v) != dims or not all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        raise ValueError(f"{name}: {arg} must be an int or {dims} ints, got {value!r}")
    if any(e < minimum for e in v):
        raise ValueError(f"{name}: {arg} must be {'positive' if minimum else 'non-negative'}, "
                         f"got {value!r}")
    return tuple(int(e) for e in v)


def _batched(name, x, dims):
    """`x` with a batch dim (PyTorch also takes one unbatched sample), and how to undo it."""
    _check_tensor(name, "input", x)
    if x.ndim == dims + 2:
        return x, lambda out: out
    if x.ndim == dims + 1:
        return x.reshape(1, *x.shape), lambda out: out.reshape(out.shape[1:])
    layout = "(N, C, L)" if dims == 1 else "(N, C, H, W)"
    raise ValueError(f"{name}: expected a {dims + 2}-D input {layout} or a {dims + 1}-D one "
                     f"without the batch dim, got shape {x.shape}")


def _check_window(name, shape, kernel, stride, padding, dilation):
    out_hw = _out_hw(shape[2:], kernel, stride, padding, dilation)
    if min(out_hw) < 1:
        raise ValueError(f"{name}: the kernel {kernel} (dilation {dilation}) is larger than the "
                         f"padded input: input shape {shape}, padding {padding}")
    return out_hw


def _window_args(name, stride, padding, dilation):
    return (_tuple(name, "stride", stride, 2, 1), _tuple(name, "padding", padding, 2, 0),
            _tuple(name, "dilation", dilation, 2, 1))


def pool_window(name, kernel_size, stride=None, padding=0, dilation=1):
    """(kernel, stride, padding, dilation) of a pooling window as pairs, checked as PyTorch:
    kernel, stride and dilation positive, padding from 0 to half the kernel."""
    kernel = _tuple(name, "kernel_size", kernel_size, 2, 1)
    stride, padding, dilation = _window_args(name, kernel if stride is None else stride, padding,
                                             dilation)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel size "
                         f"{kernel}")
    return kernel, stride, padding, dilation


def _pool_args(name, shape, kernel_size, stride=None, padding=0, dilation=1):
    window = pool_window(name, kernel_size, stride, padding, dilation)
    _check_window(name, shape, *window)
    return window


# ---- public functions ---------------------------------------------------------------------------
def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """im2col, as torch.nn.functional.unfold: (N, C, H, W) -> (N, C*kH*kW, OH*OW) with
    out[n, (c, i, j), (oh, ow)] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] (0 in the
    padding), OH = (H + 2*ph - dh*(kH - 1) - 1) // sh + 1 and likewise OW.

    >>> unfold(vk.ones((1, 2, 4, 4)), 3).shape
    (1, 18, 4)
    """
    x, unbatch = _batched("unfold", input, 2)
    geometry = dict(zip(("kernel", "stride", "padding", "dilation"), (
        _tuple("unfold", "kernel_size", kernel_size, 2, 1),
        *_window_args("unfold", stride, padding, dilation))))
    out_hw = _check_window("unfold", x.shape, *geometry.values())
    cols = apply(IM2COL, x, **geometry).reshape(x.shape[1] * prod(geometry["kernel"]),
                                                 prod(out_hw), x.shape[0])
    return unbatch(cols.transpose(2, 0, 1))


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """col2im, as torch.nn.functional.fold: the adjoint of unfold, (N, C*kH*kW, L) ->
    (N, C, H, W) with (H, W) = output_size; every column entry is added to the input pixel that
    unfold read it from (pixels read by several windows receive several terms)."""
    _check_tensor("fold", "input", input)
    size = _tuple("fold", "output_size", output_size, 2, 1)
    geometry = dict(zip(("kernel", "stride", "padding", "dilation"), (
        _tuple("fold", "kernel_size", kernel_size, 2, 1),
        *_window_args("fold", stride, padding, dilation))))
    kk = prod(geometry["kernel"])
    out_hw = _check_window("fold", (1, 1, *size), *geometry.values())
    if input.ndim not in (2, 3) or input.shape[-2] % kk or input.shape[-1] != prod(out_hw):
        raise ValueError(f"fold: input shape {input.shape} is not (N, C*{kk}, {prod(out_hw)}) "
                         f"or (C*{kk}, {prod(out_hw)}) for output_size {size}, kernel "
                         f"{geometry['kernel']}")
    cols = input if input.ndim == 3 else input.reshape(1, *input.shape)
    cols = cols.transpose(1, 2, 0).reshape(cols.shape[1], cols.shape[2] * cols.shape[0])
    out = apply(COL2IM, cols, size=size, **geometry)
    return out if input.ndim == 3 else out.reshape(out.shape[1:])


def _string_padding(name, x, padding, kernel, stride, dilation):
    """(x, padding pairs) for padding "valid" (none) or "same" (stride 1 only: d*(k - 1) in
    total per dim, so the output is as large as the input; an odd total puts the extra element
    after, padded explicitly, as PyTorch)."""
    if padding not in ("valid", "same"):
        raise ValueError(f"{name}: padding must be 'valid', 'same', an int or a pair, not "
                         f"{padding!r}")
    if padding == "valid":
        return x, (0, 0)
    if any(s != 1 for s in stride):
        raise ValueError(f"{name}: padding='same' needs stride 1, got stride {stride}")
    totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
    if any(t % 2 for t in totals):
        from .movement import pad
        x = pad(x, ((0, 0), (0, 0)) + tuple((0, t % 2) for t in totals))
    return x, tuple(t // 2 for t in totals)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation), as torch.nn.functional.conv2d:

        out[n, o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j]
                          * input[n, g*C/G + c, y*sh - ph + i*dh, x*sw - pw + j*dw]

    for output channel o of group g = o // (O/G); input (N, C, H, W) (or (C, H, W)), weight
    (O, C/G, kH, kW), bias (O,) or None; zero padding. stride, padding and dilation are ints or
    pairs; padding may also be "valid" (0) or "same" (see _string_padding); other asymmetric
    padding is F.pad's. Output (N, O, OH, OW), OH = (H + 2*ph - dh*(kH - 1) - 1) // sh + 1.
    """
    return _conv2d(input, weight, bias, stride, padding, dilation, groups)


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """relu(conv2d(...)) as one op (nn.Sequential uses it for a Conv2d followed by a ReLU), in
    training as in inference: the ReLU is applied in place to the product plus bias (where no
    gradient is wanted, on the host, a block of output rows at a time, in the cache), and the
    backward masks the upstream gradient by the saved output. The same values as the two ops."""
    return _conv2d(input, weight, bias, stride, padding, dilation, groups, relu=True)


def _conv2d(input, weight, bias, stride, padding, dilation, groups, relu=False):
    x, unbatch = _batched("conv2d", input, 2)
    _check_tensor("conv2d", "weight", weight)
    if weight.ndim != 4:
        raise ValueError(f"conv2d: expected a 4-D weight (out_channels, in_channels / groups, kH, "
                         f"kW), got shape {weight.shape}")
    if min(weight.shape[2:]) < 1:
        raise ValueError(f"conv2d: the kernel must be at least 1x1, got weight shape "
                         f"{weight.shape}")
    if isinstance(padding, str):
        stride, _, dilation = _window_args("conv2d", stride, 0, dilation)
        x, padding = _string_padding("conv2d", x, padding, weight.shape[2:], stride, dilation)
    stride, padding, dilation = _window_args("conv2d", stride, padding, dilation)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if c % groups or o % groups:
        raise ValueError(f"conv2d: groups={groups} must divide both in_channels and "
                         f"out_channels: input shape {x.shape}, weight shape {weight.shape}")
    if c != cg * groups:
        raise ValueError(f"conv2d: input shape {x.shape} has {c} channels but weight shape "
                         f"{weight.shape} with groups={groups} expects {cg * groups}")
    if bias is not None:
        _check_tensor("conv2d", "bias", bias)
        if bias.shape != (o,):
            raise ValueError(f"conv2d: bias shape {bias.shape} does not match weight shape "
                             f"{weight.shape}: expected ({o},)")
    oh, ow = _check_window("conv2d", x.shape, (kh, kw), stride, padding, dilation)
    from ..autograd import wants_grad
    dtype = dtypes.result_type(x.dtype, weight.dtype)
    if bias is not None:
        dtype = dtypes.result_type(dtype, bias.dtype)
    geometry = dict(kernel=(kh, kw), stride=stride, padding=padding, dilation=dilation)
    if groups == 1 and dtype in (dtypes.float32, dtypes.bfloat16):
        op = CONV if wants_grad((x, weight, bias)) else CONV_INFERENCE
        out = apply(op, x, weight.reshape(o, cg * kh * kw), bias, **geometry, relu=relu,
                    out_dtype=dtype)
        return unbatch(out.reshape(o, oh, ow, n).transpose(3, 0, 1, 2))
    out = _conv_composed(x, weight, bias, groups, geometry, dtype)
    out = unbatch(out.reshape(o, oh, ow, n).transpose(3, 0, 1, 2))
    return out.relu() if relu else out


def _conv_composed(x, weight, bias, groups, geometry, dtype):
    """conv2d's (O, OH*OW*N) result before any ReLU, as `dtype`, composed of Tensor ops (which
    autograd differentiates to any order): im2col, one product per group, the bias."""
    from ..tensor import _add_narrow, _narrow, _widen
    from .linalg import matmul
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    k = cg * kh * kw
    oh, ow = _out_hw((h, w), **geometry)
    if dtype is dtypes.bfloat16:
        x = _widen(x)  # columns, product and dx's col2im in float32, each result rounded once
    if (kh, kw, *geometry["stride"], *geometry["padding"]) == (1, 1, 1, 1, 0, 0):
        cols = x.transpose(1, 2, 3, 0).reshape(c, h * w * n)  # the columns of a 1x1 conv
    else:
        cols = apply(IM2COL, x, **geometry)
    out = matmul(weight.reshape(groups, o // groups, k), cols.reshape(groups, k, oh * ow * n))
    out = out.reshape(o, oh * ow * n)
    return _narrow(out, dtype) if bias is None else _add_narrow(out, bias.reshape(o, 1), dtype)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution, as torch.nn.functional.conv1d: input (N, C, L) (or (C, L)), weight
    (O, C/G, k), bias (O,) or None; out[n, o, t] = bias[o] + sum_{c, i} weight[o, c, i]
    * input[n, g*C/G + c, t*s - p + i*d]; padding an int, "valid" or "same". Computed as conv2d
    with a height of 1."""
    x, unbatch = _batched("conv1d", input, 1)
    _check_tensor("conv1d", "weight", weight)
    if weight.ndim != 3:
        raise ValueError(f"conv1d: expected a 3-D weight (out_channels, in_channels / groups, "
                         f"k), got shape {weight.shape}")
    if weight.shape[2] < 1:
        raise ValueError(f"conv1d: the kernel must be at least 1 long, got weight shape "
                         f"{weight.shape}")
    (s,), (d,) = (_tuple("conv1d", arg, value, 1, 1) for arg, value in
                  (("stride", stride), ("dilation", dilation)))
    p = padding if isinstance(padding, str) else (0, *_tuple("conv1d", "padding", padding, 1, 0))
    out = conv2d(x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]),
                 weight.reshape(weight.shape[0], weight.shape[1], 1, weight.shape[2]),
                 bias, (1, s), p, (1, d), groups)
    return unbatch(out.reshape(out.shape[0], out.shape[1], out.shape[3]))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-D convolution, as torch.nn.functional.conv_transpose2d: conv2d's gradient
    with respect to its input (for the same stride, padding, dilation and groups),

        out[n, g*O/G + o, h*sh - ph + i*dh, w*sw - pw + j*dw] += weight[c, o, i, j]
                                                                   * input[n, c, h, w]

    summed over the channels c of group g and the taps (i, j), plus bias[g*O/G + o]; input
    (N, C, H, W) (or (C, H, W)), weight (C, O/G, kH, kW) (PyTorch's layout, in_channels first),
    bias (O,) or None. Output (N, O, OH, OW), OH = (H - 1)*sh - 2*ph + dh*(kH - 1) + oph + 1:
    output_padding (each less than the stride or the dilation) adds rows and columns at the end.
    Computed as conv2d computes that gradient: W^T @ x per group into columns, which col2im sums
    into the output (bf16: all in float32, rounded once)."""
    x, unbatch = _batched("conv_transpose2d", input, 2)
    _check_tensor("conv_transpose2d", "weight", weight)
    if weight.ndim != 4 or min(weight.shape[2:]) < 1:
        raise ValueError(f"conv_transpose2d: expected a 4-D weight (in_channels, out_channels / "
                         f"groups, kH, kW) with kH, kW >= 1, got shape {weight.shape}")
    stride, padding, dilation = _window_args("conv_transpose2d", stride, padding, dilation)
    extra = _tuple("conv_transpose2d", "output_padding", output_padding, 2, 0)
    if any(e >= max(s, d) for e, s, d in zip(extra, stride, dilation)):
        raise ValueError(f"conv_transpose2d: output_padding {extra} must be smaller than the "
                         f"stride {stride} or the dilation {dilation}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"conv_transpose2d: groups must be a positive int, got {groups!r}")
    n, c, h, w = x.shape
    if weight.shape[0] != c or c % groups:
        raise ValueError(f"conv_transpose2d: weight shape {weight.shape} needs in_channels "
                         f"{weight.shape[0]} divisible by groups={groups}, but the input shape "
                         f"{x.shape} has {c} channels")
    kernel, o = weight.shape[2:], weight.shape[1] * groups
    if bias is not None:
        _check_tensor("conv_transpose2d", "bias", bias)
        if bias.shape != (o,):
            raise ValueError(f"conv_transpose2d: bias shape {bias.shape} does not match weight "
                             f"shape {weight.shape} with groups={groups}: expected ({o},)")
    # col2im fills what the windows reach, plus output_padding up to stride - 1 rows; the rest
    # (output_padding >= stride, which a larger dilation allows) is zero padding after it
    rest = tuple(max(e - s + 1, 0) for e, s in zip(extra, stride))
    size = tuple((m - 1) * s - 2 * p + d * (k - 1) + e + 1 - r for m, s, p, d, k, e, r in zip(
        (h, w), stride, padding, dilation, kernel, extra, rest))
    if min(size) < 1:
        raise ValueError(f"conv_transpose2d: the output would be empty: input shape {x.shape}, "
                         f"kernel {tuple(kernel)}, stride {stride}, padding {padding}")
    from ..tensor import _add_narrow, _narrow, _widen
    from .linalg import matmul
    dtype = dtypes.result_type(x.dtype, weight.dtype)
    if bias is not None:
        dtype = dtypes.result_type(dtype, bias.dtype)
    if dtype is dtypes.bfloat16:
        x = _widen(x)
    cg, k = c // groups, weight.shape[1] * prod(kernel)
    cols = matmul(weight.reshape(groups, cg, k).transpose(0, 2, 1),
                  x.transpose(1, 2, 3, 0).reshape(groups, cg, h * w * n))
    out = apply(COL2IM, cols.reshape(o * prod(kernel), h * w * n), size=size,
                kernel=tuple(kernel), stride=stride, padding=padding, dilation=dilation)
    if any(rest):
        from .movement import pad
        out = pad(out, ((0, 0), (0, 0), (0, rest[0]), (0, rest[1])))
    out = _narrow(out, dtype) if bias is None else _add_narrow(out, bias.reshape(1, o, 1, 1),
                                                               dtype)
    return unbatch(out)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 1-D convolution, as torch.nn.functional.conv_transpose1d: input (N, C, L) (or
    (C, L)), weight (C, O/G, k), bias (O,) or None; conv_transpose2d with a height of 1."""
    x, unbatch = _batched("conv_transpose1d", input, 1)
    _check_tensor("conv_transpose1d", "weight", weight)
    if weight.ndim != 3:
        raise ValueError(f"conv_transpose1d: expected a 3-D weight (in_channels, out_channels / "
                         f"groups, k), got shape {weight.shape}")
    (s,), (p,), (e,), (d,) = (_tuple("conv_transpose1d", arg, value, 1, minimum)
                              for arg, value, minimum in (
                                  ("stride", stride, 1), ("padding", padding, 0),
                                  ("output_padding", output_padding, 0),
                                  ("dilation", dilation, 1)))
    out = conv_transpose2d(x.reshape(x.shape[0], x.shape[1], 1, x.shape[2]),
                           weight.reshape(*weight.shape[:2], 1, weight.shape[2]), bias, (1, s),
                           (0, p), (0, e), groups, (1, d))
    return unbatch(out.reshape(out.shape[0], out.shape[1], out.shape[3]))


def _ceil_extra(shape, kernel, stride, padding, dilation):
    """Per spatial dim, how far ceil_mode's last window reaches past the padded input: PyTorch's
    output size ceil((n + 2p - d(k - 1) - 1) / s) + 1, less one if that last window would start
    past the input and its left padding."""
    extra = []
    for n, k, s, p, d in zip(shape[2:], kernel, stride, padding, dilation):
        out = -(-(n + 2 * p - d * (k - 1) - 1) // s) + 1
        if (out - 1) * s >= n + p:
            out -= 1
        extra.append(max((out - 1) * s + d * (k - 1) + 1 - (n + 2 * p), 0))
    return tuple(extra)


def _pad_end(x, extra, value):
    """x padded with `value` after its last rows and columns (ceil_mode's partial windows)."""
    from .movement import pad
    return pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])), constant_values=value)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling, as torch.nn.functional.max_pool2d: out[n, c, y, x] = max over i < kH,
    j < kW of input[n, c, y*sh - ph + i*dh, x*sw - pw + j*dw], the padding counting as -inf
    (it must be at most half the kernel). stride defaults to kernel_size. ceil_mode: a last,
    partial window where one is left (PyTorch's rule, see _ceil_extra). The gradient goes to
    the first maximum of each window (a NaN counts as the maximum): the forward keeps each
    window's tap of it, and the backward scatters the gradient there. return_indices: also the
    position h*W + w in its input plane of each window's maximum (int32), which max_unpool2d
    takes, from the same taps. Without either (inference) the maxima alone are found."""
    from ..autograd import wants_grad
    x, unbatch = _batched("max_pool2d", input, 2)
    h, w = x.shape[2:]
    kernel, stride, padding, dilation = _pool_args("max_pool2d", x.shape, kernel_size, stride,
                                                   padding, dilation)
    extra = _ceil_extra(x.shape, kernel, stride, padding, dilation) if ceil_mode else (0, 0)
    if any(extra):
        x = _pad_end(x, extra, float("-inf"))
    window = dict(kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    if not return_indices:
        return unbatch(apply(MAX_POOL, x, **window, argmax=wants_grad((x,))))
    out, tap = apply_with_stats(MAX_POOL, x, **window, argmax=True)
    from ..tensor import tensor
    from .indexing import take
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh, ow = out.shape[2:]
    corner = (np.arange(oh)[:, None] * sh - ph) * w + np.arange(ow) * sw - pw  # (0, 0) taps
    offset = (np.arange(kh)[:, None] * dh * w + np.arange(kw) * dw).reshape(-1)
    indices = (take(tensor(offset.astype(np.int32), device=x.device), tap)
               + tensor(corner.astype(np.int32), device=x.device))
    return unbatch(out), unbatch(indices)


def _at_taps(v, tap, kernel, stride, padding, dilation):
    """v (N, C, H, W) at the taps `tap` (N, C, OH, OW) of its windows: what max pooling's
    backward scatters, gathered (its backward), composed of unfold and take_along_axis so that
    it is differentiable in turn."""
    from .indexing import take_along_axis
    (n, c, oh, ow), k = tap.shape, prod(kernel)
    cols = unfold(v, kernel, dilation, padding, stride).reshape(n, c, k, oh * ow)
    picked = take_along_axis(cols, tap.astype(dtypes.int32).reshape(n, c, 1, oh * ow), 2)
    return picked.reshape(n, c, oh, ow)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Average pooling, as torch.nn.functional.avg_pool2d (its argument order): out[n, c, y, x]
    = sum over the window of input (zero padding) / (kH*kW if count_include_pad else the taps
    inside the input). stride defaults to kernel_size; padding must be at most half the kernel.
    ceil_mode: a last, partial window where one is left (see max_pool2d); it divides by its
    taps inside the padded input (count_include_pad) or the input, as PyTorch.
    divisor_override: divide every window's sum by this instead. Those two are the average with
    padding counted, times kH*kW / divisor (bf16: in float32, rounded once)."""
    x, unbatch = _batched("avg_pool2d", input, 2)
    kernel, stride, padding, _ = _pool_args("avg_pool2d", x.shape, kernel_size, stride, padding)
    extra = _ceil_extra(x.shape, kernel, stride, padding, (1, 1)) if ceil_mode else (0, 0)
    if not any(extra) and divisor_override is None:
        return unbatch(apply(AVG_POOL, x, kernel=kernel, stride=stride, padding=padding,
                             include_pad=bool(count_include_pad)))
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(
            divisor_override, (int, np.integer)) or divisor_override < 1):
        raise ValueError(f"avg_pool2d: divisor_override must be a positive int, got "
                         f"{divisor_override!r}")
    from ..tensor import _narrow, _widen, tensor
    z = _widen(x)
    if any(extra):
        z = _pad_end(z, extra, 0)
    mean = apply(AVG_POOL, z, kernel=kernel, stride=stride, padding=padding, include_pad=True)
    divisor = divisor_override or _window_counts(x.shape[2:], mean.shape[2:], kernel, stride,
                                                 padding, bool(count_include_pad))
    scale = tensor(np.broadcast_to(prod(kernel) / np.asarray(divisor, np.float64),
                                   mean.shape[2:]), mean.dtype, x.device)
    return unbatch(_narrow(mean * scale, x.dtype))


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """The inverse of max_pool2d with return_indices, as torch.nn.functional.max_unpool2d:
    zeros of shape (N, C, OH, OW), OH = (H - 1)*sh - 2*ph + kH (or output_size's last two),
    with input[n, c, y, x] at position indices[n, c, y, x] (h*OW + w) of its plane. Its
    gradient is the output gradient at those positions. Windows that overlap (stride < kernel)
    can hold one maximum twice: it is written once, as PyTorch. Indices outside the plane make
    the next synchronisation raise IndexError."""
    x, unbatch = _batched("max_unpool2d", input, 2)
    _check_tensor("max_unpool2d", "indices", indices)
    kernel, stride, padding, _ = pool_window("max_unpool2d", kernel_size, stride, padding)
    if indices.shape != input.shape or indices.dtype.is_floating:
        raise ValueError(f"max_unpool2d: indices must be integers of the input's shape "
                         f"{input.shape}, got {indices.dtype.name} of shape {indices.shape}")
    n, c, h, w = x.shape
    size = tuple((m - 1) * s - 2 * p + k for m, s, p, k in zip((h, w), stride, padding, kernel))
    if output_size is not None:
        size = _tuple("max_unpool2d", "output_size", tuple(output_size)[-2:], 2, 1)
    from ..autograd import no_grad
    from ..tensor import _narrow, _widen, zeros
    from .indexing import _along_axis_key, index_add
    z = _widen(x)
    key = _along_axis_key(indices.reshape(n, c, h * w), (n, c, prod(size)), 2)
    out = index_add(zeros((n, c, prod(size)), z.dtype, x.device), key, z.reshape(n, c, h * w))
    if any(s < k for s, k in zip(stride, kernel)):
        # a maximum picked by two windows was added twice: the value is the written one, the
        # gradient stays the sum's (the gather at `indices`)
        written = zeros(out.shape, z.dtype, x.device)
        with no_grad():
            written[key] = z.reshape(n, c, h * w)
        out = written + (out - out.detach())  # exactly `written`: out - out is 0
    return unbatch(_narrow(out.reshape(n, c, *size), x.dtype))


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed output size, as torch.nn.functional.adaptive_avg_pool2d:
    output row y averages input rows floor(y*H/OH) to ceil((y+1)*H/OH) - 1, and likewise for
    columns. output_size is an int or a pair (None keeps that input size).

    Sizes that divide evenly are plain avg_pool2d; otherwise the bins are separable, so the
    result is Ah @ x @ Aw^T with Ah[y, h] = 1 / (rows in bin y) for the rows of bin y."""
    x, unbatch = _batched("adaptive_avg_pool2d", input, 2)
    oh, ow = _adaptive_size("adaptive_avg_pool2d", x, output_size)
    h, w = x.shape[2:]
    if h % oh == 0 and w % ow == 0:
        return unbatch(avg_pool2d(x, (h // oh, w // ow)))
    from ..tensor import tensor
    from .linalg import matmul
    acc = np.float32 if x.dtype.itemsize < 4 else x.dtype.np_dtype
    ah = tensor(_bins(h, oh), dtype=acc, device=x.device)
    aw = tensor(_bins(w, ow).T, dtype=acc, device=x.device)
    out = matmul(matmul(ah, x), aw)
    return unbatch(out if out.dtype is x.dtype else out.astype(x.dtype))


def _adaptive_size(name, x, output_size):
    """output_size (an int or a pair, None keeping that input size) as a pair."""
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    if len(sizes) == 2:
        sizes = tuple(n if s is None else s for s, n in zip(sizes, x.shape[2:]))
    return _tuple(name, "output_size", sizes, 2, 1)


def _bin_bounds(n, m):
    """[(lo, hi)] of adaptive pooling's m bins over n positions: floor(i n / m) to
    ceil((i + 1) n / m)."""
    return [(i * n // m, -(-(i + 1) * n // m)) for i in range(m)]


def _bins(n, m):
    """(m, n) averaging matrix of adaptive pooling's m bins over n positions."""
    a = np.zeros((m, n))
    for i, (lo, hi) in enumerate(_bin_bounds(n, m)):
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def _bin_taps(n, m):
    """(m, K) source positions of each bin, K the largest bin, a shorter bin repeating its last
    position (after its first occurrences, so the first maximum is a real one)."""
    bounds = _bin_bounds(n, m)
    k = max(hi - lo for lo, hi in bounds)
    return np.array([np.minimum(np.arange(lo, lo + k), hi - 1) for lo, hi in bounds])


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max pooling to a fixed output size, as torch.nn.functional.adaptive_max_pool2d: output
    cell (y, x) is the maximum of the input rows floor(y*H/OH) to ceil((y+1)*H/OH) - 1 and
    likewise columns. The gradient goes to each bin's first maximum (row-major), as PyTorch;
    return_indices: also its position h*W + w in the plane (int32).

    Composed: two gathers lay each bin's taps out along a last axis (shorter bins repeating
    their last tap), whose argmax picks the maximum (take_along_axis)."""
    x, unbatch = _batched("adaptive_max_pool2d", input, 2)
    (oh, ow), (n, c, h, w) = _adaptive_size("adaptive_max_pool2d", x, output_size), x.shape
    rows, cols = _bin_taps(h, oh), _bin_taps(w, ow)
    kh, kw = rows.shape[1], cols.shape[1]
    from ..tensor import _narrow, _widen, tensor
    from .indexing import take, take_along_axis
    # bf16: the gradient sums overlapping bins' shares in float32 and rounds once
    taps = take(take(_widen(x), rows.reshape(-1), 2), cols.reshape(-1), 3)
    taps = taps.reshape(n, c, oh, kh, ow, kw).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, oh, ow, kh * kw)
    best = taps.argmax(axis=4, keepdims=True)
    out = unbatch(_narrow(take_along_axis(taps, best, 4).reshape(n, c, oh, ow), x.dtype))
    if not return_indices:
        return out
    positions = (rows[:, None, :, None] * w + cols[None, :, None, :]).reshape(oh, ow, kh * kw)
    positions = tensor(positions.astype(np.int32), device=x.device).broadcast_to(taps.shape)
    return out, unbatch(take_along_axis(positions, best, 4).reshape(n, c, oh, ow))


# ---- the ops ------------------------------------------------------------------------------------
# The host gives the one-op convolutions a bf16 weight and bias already widened to float32, from
# its cache (Op.widens): the training step's forward and backward widen the weight once, and
# inference calls with unchanged weights not at all.
# conv2d without autograd (inference): no vjp, so conv2d takes it only when no gradient is wanted
CONV_INFERENCE = Op("conv2d_inference", _conv_inference_host, _conv_gemm_vulkan, saves=(),
                    widens=(1, 2))
# conv2d where a gradient is wanted (groups 1, f32 and bf16; the rest is _conv_composed)
CONV = Op("conv2d", _conv_host, _conv_vulkan, vjp=_conv_vjp, saves=("inputs", "output", "stats"),
          widens=(1, 2))
CONV_BACKWARD = Op("conv2d_backward", _conv_backward_host, _conv_backward_vulkan, saves=(),
                   widens=(1,))
IM2COL = Op("im2col", _im2col_host, _im2col_vulkan, vjp=_im2col_vjp, saves=())
COL2IM = Op("col2im", _col2im_host, _col2im_vulkan, vjp=_col2im_vjp, saves=())
MAX_POOL = Op("max_pool2d", _max_pool_host, _max_pool_vulkan, vjp=_max_pool_vjp,
              saves=("stats",))
MAX_POOL_BACKWARD = Op(
    "max_pool2d_backward", _max_pool_back_host, _max_pool_back_vulkan, vjp=_max_pool_back_vjp)
AVG_POOL = Op("avg_pool2d", _avg_pool_host, _avg_pool_vulkan, vjp=_avg_pool_vjp, saves=())
AVG_POOL_BACKWARD = Op(
    "avg_pool2d_backward", _avg_pool_back_host, _avg_pool_back_vulkan, vjp=_avg_pool_back_vjp,
    saves=())
