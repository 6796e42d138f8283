"""Shape and stride arithmetic for strided views (strides count elements, not bytes).

The host backend lets numpy do this; the Vulkan backend's views use these functions, and every
kernel launch coalesces its operands' dimensions here so that kernels see as few as possible.
"""
import operator
from math import prod


def contiguous_strides(shape):
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def is_contiguous(shape, strides):
    return all(n == 1 or s == c for n, s, c in zip(shape, strides, contiguous_strides(shape)))


def normalize_shape(shape):
    if isinstance(shape, int) or hasattr(shape, "__index__"):
        shape = (shape,)
    shape = tuple(operator.index(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return shape


def normalize_axis(axis, ndim):
    """A non-negative axis, or IndexError naming the axis and the number of dimensions."""
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise IndexError(f"axis {axis} is out of bounds for a tensor of dimension {ndim}")
    return axis % ndim


def normalize_axes(axis, ndim):
    """A sorted tuple of distinct non-negative axes from None, an int or a tuple."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    axes = tuple(normalize_axis(a, ndim) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axis in {axis}")
    return tuple(sorted(axes))


def broadcast_shapes(*shapes):
    """numpy's broadcast of several shapes, or ValueError naming them."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for d in range(ndim):
        sizes = {s[len(s) - ndim + d] for s in shapes if len(s) - ndim + d >= 0} - {1}
        if len(sizes) > 1:
            raise ValueError("shapes " + " and ".join(str(tuple(s)) for s in shapes)
                             + " cannot be broadcast together")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def broadcast_strides(shape, strides, target):
    """Strides that read `shape`/`strides` as if broadcast to `target` (0 on repeated axes)."""
    lead = len(target) - len(shape)
    if lead < 0:
        raise ValueError(f"cannot broadcast shape {tuple(shape)} to {tuple(target)}")
    out = [0] * lead
    for n, s, t in zip(shape, strides, target[lead:]):
        if n == t:
            out.append(s if n != 1 else 0)
        elif n == 1:
            out.append(0)
        else:
            raise ValueError(f"cannot broadcast shape {tuple(shape)} to {tuple(target)}")
    return tuple(out)


def reshape_strides(shape, strides, new_shape):
    """Strides that view `shape`/`strides` as `new_shape` without copying, or None if impossible.

    Walks both shapes in chunks whose sizes agree (as numpy's _attempt_nocopy_reshape does): each
    chunk of old dims must be mutually contiguous to be re-split.
    """
    if prod(shape) == 0:
        return contiguous_strides(new_shape)
    old = [(n, s) for n, s in zip(shape, strides) if n != 1]
    new_idx = [i for i, n in enumerate(new_shape) if n != 1]
    out = [0] * len(new_shape)
    oi = ni = 0
    while oi < len(old) and ni < len(new_idx):
        old_size, new_size = old[oi][0], new_shape[new_idx[ni]]
        oj, nj = oi + 1, ni + 1
        while old_size != new_size:
            if new_size < old_size:
                new_size *= new_shape[new_idx[nj]]
                nj += 1
            else:
                old_size *= old[oj][0]
                oj += 1
        if any(old[k][1] != old[k + 1][0] * old[k + 1][1] for k in range(oi, oj - 1)):
            return None
        stride = old[oj - 1][1]
        for k in range(nj - 1, ni - 1, -1):
            out[new_idx[k]] = stride
            stride *= new_shape[new_idx[k]]
        oi, ni = oj, nj
    return tuple(out)


def resolve_reshape(size, new_shape):
    """Fill in one -1 in `new_shape`, or ValueError naming the sizes."""
    new_shape = tuple(operator.index(n) for n in new_shape)
    unknown = [i for i, n in enumerate(new_shape) if n == -1]
    if len(unknown) > 1:
        raise ValueError("can only specify one unknown dimension (-1)")
    known = prod(n for n in new_shape if n != -1)
    if unknown:
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape tensor of size {size} into shape {new_shape}")
        new_shape = tuple(size // known if n == -1 else n for n in new_shape)
    if prod(new_shape) != size or any(n < 0 for n in new_shape):
        raise ValueError(f"cannot reshape tensor of size {size} into shape {new_shape}")
    return new_shape


def coalesce(shape, *stride_sets):
    """Merge adjacent dims that every operand walks contiguously and drop size-1 dims.

    Returns (shape, [strides, ...]) describing the same elements in the same row-major order.
    """
    dims = [(n, [s[d] for s in stride_sets]) for d, n in enumerate(shape) if n != 1]
    if not dims:
        return (1,), [(0,) for _ in stride_sets]
    out = [dims[0]]
    for n, strides in dims[1:]:
        pn, pstrides = out[-1]
        if all(ps == s * n for ps, s in zip(pstrides, strides)):
            out[-1] = (pn * n, strides)
        else:
            out.append((n, strides))
    return tuple(n for n, _ in out), [tuple(st[i] for _, st in out) for i in range(len(stride_sets))]


def basic_index(shape, strides, offset, key):
    """View arithmetic of basic indexing (ints, slices, None, Ellipsis).

    Returns (shape, strides, offset), or raises IndexError naming the bad index and axis.
    """
    if not isinstance(key, tuple):
        key = (key,)
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    if sum(1 for k in key if k is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_real > len(shape):
        raise IndexError(f"too many indices for tensor: tensor is {len(shape)}-dimensional, "
                         f"but {n_real} were indexed")
    expanded = []
    for k in key:
        if k is Ellipsis:
            expanded.extend([slice(None)] * (len(shape) - n_real))
        else:
            expanded.append(k)
    expanded.extend([slice(None)] * (len(shape) - sum(1 for k in expanded if k is not None)))
    out_shape, out_strides, axis = [], [], 0
    for k in expanded:
        if k is None:
            out_shape.append(1)
            out_strides.append(0)
            continue
        n, s = shape[axis], strides[axis]
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            length = len(range(start, stop, step))
            if length:
                offset += start * s
            out_shape.append(length)
            out_strides.append(s * step)
        else:
            i = operator.index(k)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
            offset += (i % n) * s
        axis += 1
    return tuple(out_shape), tuple(out_strides), offset


# ---- division by a dimension without dividing ---------------------------------------------------
DIV_MAGIC_BOUND = 1 << 31  # div_magic is exact for dividends below this


def div_magic(d):
    """(m, s) such that floor(n / d) = floor(2n m / 2^32) >> s for every integer n in
    [0, 2^31) and every divisor d in [1, 2^31]: shaders/common.glsl's div_magic, a multiply-high
    and a shift in place of an integer division (a loop of scalar divisions on CPU drivers, a
    long sequence on GPUs).

    With s = ceil(log2 d) (so 2^(s-1) < d <= 2^s) and m = ceil(2^(31+s) / d), m d = 2^(31+s) + e
    with 0 <= e < d. For n = q d + r, 0 <= r < d:
        n m / 2^(31+s) = q + (r + n e / 2^(31+s)) / d,
    and n e < 2^31 d <= 2^(31+s), so r + n e / 2^(31+s) < r + 1 <= d: the floor is q. The shader
    computes floor(floor(2n m / 2^32) / 2^s) = floor(n m / 2^(31+s)) (2n < 2^32 fits a word).
    m fits a word: m = 2^31 when d = 2^s (d = 1 included, s = 0); otherwise d >= 2^(s-1) + 1, so
    m < 2^(31+s) / d + 1 <= 2^32 / (1 + 2^(1-s)) + 1 < 2^32 for 2 <= s <= 31. s <= 31 fits 5 bits.
    """
    if not 1 <= d <= DIV_MAGIC_BOUND:
        raise ValueError(f"div_magic needs a divisor in [1, 2^31], not {d}")
    s = (d - 1).bit_length()
    return -(-(1 << (31 + s)) // d), s


def div_magic_fields(shape, maxd, what):
    """The push-constant fields with which a kernel splits a row-major linear index below 2^31
    over `shape` (at most maxd dims) into coordinates without dividing (kernels.LAYOUTS' inner,
    magic and shifts, by name): `inner`, the inner dims shape[1:], and `magic`, their div_magic
    multipliers, each padded with 1s (a dim of 1) to maxd - 1 entries; `shifts`, one word
    holding their shifts, 8 bits each, shape[1]'s lowest. The outermost coordinate is the
    quotient left over, so shape[0] is not needed. A shape of more than DIV_MAGIC_BOUND
    elements raises NotImplementedError naming `what` (the launch)."""
    if prod(shape) > DIV_MAGIC_BOUND:
        raise NotImplementedError(f"{what} of {prod(shape)} elements (at most 2^31)")
    inner = [*shape[1:], *[1] * (maxd - max(len(shape), 1))]
    magics = [div_magic(d) for d in inner]
    return {"inner": inner, "magic": [m for m, _ in magics],
            "shifts": sum(s << 8 * k for k, (_, s) in enumerate(magics))}
