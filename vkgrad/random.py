"""Random tensors from a counter-based generator that gives the same numbers on every device.

>>> import vkgrad as vk
>>> vk.manual_seed(0)                             # the default generator, restarted
vkgrad.Generator(seed=0, offset=0)
>>> x = vk.rand(2, 3, device="vulkan")           # uniform in [0, 1)
>>> vk.set_rng_state((0, 0))
>>> bool((vk.rand(2, 3).numpy() == x.numpy()).all())   # the host draws the same bits
True
>>> g = vk.Generator(42)                         # an independent, reproducible stream
>>> z = vk.normal(0.0, 2.0, (1000,), generator=g)
>>> state = g.get_state()                        # (seed, offset): plain ints, for checkpoints

The generator is Philox4x32-10: draw j of counter c is word j of philox(key=seed, counter=c),
a pure function, so every element is computed independently (by a numpy vectorised twin on the
host, by shaders/random.comp on Vulkan) and the two agree bit for bit. A call producing n
elements uses counters offset .. offset + ceil(n / 4) - 1, element i taking word i % 4 of counter
offset + i // 4, and then advances the offset past them: a generator's whole state is
(seed, offset), and consecutive calls never reuse a counter.

Once a generator has drawn on a Vulkan device, its state lives there, in a cursor of five words
(offset lo, offset hi, seed lo, seed hi, and an arrival count the kernel uses): random.comp reads
its key and first counter from the cursor and advances the offset itself, so a step recorded by
vkgrad.compile replays with fresh numbers, the same stream as eager execution. get_state(),
set_state(), manual_seed() and host draws from such a generator read or write the cursor (a
read waits for the device).

Distributions, from 32-bit words x:
  uniform   low + (high - low) * u, u = (x >> 8) / 2^24 in [0, 1) (bf16: (x >> 24) / 2^8, so
            that rounding cannot reach 1); computed in float32, then rounded to the dtype
  normal    mean + std * z, Box-Muller on word pairs: z = sqrt(-2 ln u1) * (cos, sin)(2 pi u2),
            u1 = ((x1 >> 8) + 1) / 2^24 in (0, 1]; |z| < 5.8 (24-bit uniforms). ln, cos and
            sin are series in float32 +, -, *, / (Vulkan's own may err by 2^-11), so devices
            agree with the host to a few ulps (division and sqrt need not round correctly)
  randint   low + floor(x * (high - low) / 2^32) (multiply-high: bias below range / 2^32)
"""
import operator
import threading
from math import factorial, isfinite, log, pi, prod, sqrt

import numpy as np

from . import compiler, dtypes, kernels, layout
from .device import device as as_device

MASK32 = 0xFFFFFFFF
DEFAULT_SEED = 0
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)   # Philox round multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85                         # key schedule increments
# Series coefficients of random.comp's ln (atanh) and cos_sin_turn (sin and cos of (pi/2) f).
_LN2, _SQRT_HALF = np.float32(log(2)), np.float32(sqrt(0.5))
_ATANH = np.float32([1, 1 / 3, 1 / 5, 1 / 7, 1 / 9])
_SIN = np.float32([(-1) ** n * (pi / 2) ** (2 * n + 1) / factorial(2 * n + 1) for n in range(5)])
_COS = np.float32([(-1) ** n * (pi / 2) ** (2 * n) / factorial(2 * n) for n in range(1, 6)])


def philox4x32_10(counters, key):
    """Philox4x32-10 of uint32 `counters` (shape (..., 4)) under `key` (two 32-bit ints):
    the numpy twin of shaders/philox.glsl. Returns uint32 words of the same shape."""
    mask = np.uint64(MASK32)
    c0, c1, c2, c3 = (counters[..., j].astype(np.uint64) for j in range(4))
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + _W0) & MASK32, (k1 + _W1) & MASK32
        p0, p1 = c0 * _M0, c2 * _M1  # 32 x 32 -> 64-bit products: (hi, lo) = (p >> 32, p & mask)
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ np.uint64(k0), p1 & mask,
                          (p0 >> 32) ^ c3 ^ np.uint64(k1), p0 & mask)
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def _key(seed):
    return seed & MASK32, seed >> 32


def _words(seed, offset, count):
    """The draws of `count` counters from `offset` on, four per counter, in element order."""
    index = np.uint64(offset) + np.arange(count, dtype=np.uint64)  # wraps modulo 2^64
    counters = np.zeros(index.shape + (4,), np.uint32)
    counters[:, 0], counters[:, 1] = index & np.uint64(MASK32), index >> np.uint64(32)
    return philox4x32_10(counters, _key(seed)).reshape(-1)


class Generator:
    """An independent, reproducible stream of random numbers: Philox4x32-10 keyed by `seed`
    (any int, taken modulo 2^64), at counter `offset`. Pass it as `generator=` to the sampling
    functions; they share `default_generator` otherwise."""

    def __init__(self, seed=DEFAULT_SEED):
        self._lock = threading.RLock()
        self._cursors = {}   # backend -> its cursor, a DeviceArray of 5 uint32 words
        self._home = None    # the backend whose cursor holds the state; None: _seed, _offset do
        self.manual_seed(seed)

    def manual_seed(self, seed):
        """Restart the stream of `seed` from its first counter."""
        self.set_state((operator.index(seed) % (1 << 64), 0))
        return self

    def get_state(self):
        """(seed, offset) as plain ints: the offset counts Philox counters used so far."""
        with self._lock:
            self._pull()
            return self._seed, self._offset

    def set_state(self, state):
        """Resume from a (seed, offset) pair that get_state() returned."""
        try:
            seed, offset = (operator.index(v) for v in state)
        except (TypeError, ValueError):
            raise TypeError(f"a generator state is a (seed, offset) pair of ints, "
                            f"not {state!r}") from None
        for name, v in (("seed", seed), ("offset", offset)):
            if not 0 <= v < 1 << 64:
                raise ValueError(f"generator state {name} {v} is outside [0, 2^64)")
        with self._lock:
            self._seed, self._offset = seed, offset
            self._push()

    def _take(self, counters):
        """Reserve `counters` consecutive counters for a host draw: returns (seed, first
        offset). The state comes back to the host from the device cursor holding it, if any,
        and stays here until a device draws again."""
        with self._lock:
            self._pull()
            self._home = None
            offset = self._offset
            self._offset = (offset + counters) % (1 << 64)
        return self._seed, offset

    def _cursor(self, backend):
        """The cursor on `backend` that its draws read and advance, holding the state from now
        on (moved there from the host or another device)."""
        with self._lock:
            if self._home is not backend:
                self._pull()
                if backend not in self._cursors:
                    self._cursors[backend] = backend.empty((5,), dtypes.uint32)
                self._home = backend
                self._push()
        # a recorded draw reads this cursor: replay only while it holds the state
        compiler.guard(lambda: self._home is backend, True)
        return self._cursors[backend]

    def _pull(self):
        """Take the state back from the device cursor holding it, if any (waits for it)."""
        if self._home is not None:
            lo, hi, key_lo, key_hi, _ = (int(w) for w in self._home.to_numpy(
                self._cursors[self._home]))
            self._seed, self._offset = key_lo | key_hi << 32, lo | hi << 32

    def _push(self):
        """Write the state into the device cursor holding it, if any. A step being recorded
        cannot repeat that write: it records again on its next call."""
        if self._home is not None:
            seed, offset = self._seed, self._offset
            launch(self._home, (5,), dtypes.uint32, "words", offset & MASK32, offset >> 32,
                   *_key(seed), out=self._cursors[self._home])
            compiler.guard(lambda: False, True)

    def __repr__(self):
        seed, offset = self.get_state()
        return f"vkgrad.Generator(seed={seed}, offset={offset})"


default_generator = Generator()


def manual_seed(seed):
    """Reseed the default generator (offset back to 0); returns it."""
    return default_generator.manual_seed(seed)


def get_rng_state():
    """The default generator's (seed, offset)."""
    return default_generator.get_state()


def set_rng_state(state):
    """Restore the default generator to a (seed, offset) from get_rng_state()."""
    default_generator.set_state(state)


def launch(backend, shape, dtype, op, a=0, b=0, c=0, d=0, cursor=None, out=None):
    """Queue shaders/random.comp filling a fresh contiguous DeviceArray (or `out`) with pattern
    `op` (kernels.RANDOM_OPS); a..d are its 32-bit parameters (see the shader's table), `cursor`
    the generator cursor that random draws read and advance."""
    out = backend.empty(shape, dtype) if out is None else out
    if out.size:
        push = kernels.LAYOUTS["random"].pack(
            n=out.size, out_start=out.start, a=a & MASK32, b=b & MASK32, c=c & MASK32,
            d=d & MASK32, cursor_start=0 if cursor is None else cursor.start)
        backend.launch("random", "", -(-out.size // 4), push,
                       kernels.LAYOUTS["random"].spec(OP=kernels.RANDOM_CODES[op],
                                                      OUT_DT=dtype.code), writes=[out, cursor])
    return out


def _f32_word(x):
    return int(np.float32(x).view(np.uint32))


# ---- the distributions on the host, from the draws; the shader computes the same ----------------
def _host_uniform(words, dtype, low, scale):
    if dtype is dtypes.bfloat16:
        u = (words >> 24).astype(np.float32) * np.float32(2.0 ** -8)
    else:
        u = (words >> 8).astype(np.float32) * np.float32(2.0 ** -24)
    return low + scale * u


def _horner(x, coefficients):
    acc = coefficients[-1]
    for c in coefficients[-2::-1]:
        acc = c + x * acc
    return acc


def _ln(x):
    """ln x for float32 x > 0 in float32 arithmetic: the twin of random.comp's ln
    (x = m 2^e, m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh((m - 1) / (m + 1)) by its series)."""
    m, e = np.frexp(x)
    low = m < _SQRT_HALF
    m, e = np.where(low, m * np.float32(2), m), np.where(low, e - 1, e)
    s = (m - np.float32(1)) / (m + np.float32(1))
    return e.astype(np.float32) * _LN2 + np.float32(2) * s * _horner(s * s, _ATANH)


def _cos_sin_turn(u):
    """(cos, sin) of 2 pi u for float32 u in [0, 1), in float32 +, -, * only: the twin of
    random.comp's cos_sin_turn (4u = quadrant q + f exactly; Taylor series in f)."""
    t = np.float32(4) * u
    q = np.floor(t + np.float32(0.5))
    f = t - q
    f2 = f * f
    s, c = f * _horner(f2, _SIN), np.float32(1) + f2 * _horner(f2, _COS)
    k = q.astype(np.int64) & 3
    return np.choose(k, [c, -s, -c, s]), np.choose(k, [s, c, -s, -c])


def _host_normal(words, dtype, mean, std):
    pairs = words.reshape(-1, 2, 2)  # [counter, pair, (radius, angle) word]
    u1 = ((pairs[..., 0] >> 8).astype(np.float32) + np.float32(1)) * np.float32(2.0 ** -24)
    cos, sin = _cos_sin_turn((pairs[..., 1] >> 8).astype(np.float32) * np.float32(2.0 ** -24))
    r = np.sqrt(np.float32(-2) * _ln(u1))
    z = np.stack([r * cos, r * sin], axis=-1).reshape(-1)
    return mean + std * z


def _host_randint(words, dtype, low, span):
    high = words.astype(np.uint64)
    if span:
        high = (high * np.uint64(span)) >> np.uint64(32)
    return ((np.uint64(low & MASK32) + high) & np.uint64(MASK32)).astype(np.uint32)


_HOST = {"uniform": _host_uniform, "normal": _host_normal, "randint": _host_randint}


def _host_draw(op, shape, dtype, generator, a, b):
    """`op`'s draws from the generator's next counters, on the host."""
    n = prod(shape)
    counters = -(-n // 4)
    seed, offset = generator._take(counters)
    values = _HOST[op](_words(seed, offset, counters), dtype, a, b)[:n]
    if op == "randint":
        values = values.view(np.int32) if dtype is dtypes.int32 else values
    return values.astype(dtype.np_dtype).reshape(shape)


def _sample(op, shape, dtype, device, generator, a, b):
    """A Tensor of `shape` drawn by `op` with parameters (a, b) from `generator`."""
    from .tensor import Tensor, _check_device_dtype
    device = as_device(device)
    _check_device_dtype(device, dtype)
    if generator is not None and not isinstance(generator, Generator):
        raise TypeError(f"generator must be a vkgrad.Generator, not {type(generator).__name__}")
    generator = generator or default_generator
    if device.kind == "host":  # a recorded step (vkgrad.compile) draws afresh on each replay
        data = device.backend.call(_host_draw, op, shape, dtype, generator, a, b)
    else:
        words = (a, b) if op == "randint" else (_f32_word(a), _f32_word(b))
        data = launch(device.backend, shape, dtype, op, *words,
                      cursor=generator._cursor(device.backend))
    return Tensor._wrap(data, device)


def _shape(shape, fn):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    try:
        return layout.normalize_shape(shape)
    except TypeError:
        raise TypeError(f"{fn}: a shape is ints or a tuple of ints, not {shape!r}") from None


def _float_dtype(dtype, fn):
    dtype = dtypes.dtype(dtype if dtype is not None else dtypes.float32)
    if not dtype.is_floating:
        raise TypeError(f"{fn} makes floating-point tensors, not {dtype.name}; "
                        "use randint for integers")
    return dtype


def check_real(value, name, fn):
    """`value` if it is a real number (bools are not), else a TypeError naming `fn`'s `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: {name} must be a real number, not {value!r}")
    return value


def _real(value, name, fn):
    if not isfinite(check_real(value, name, fn)):
        raise ValueError(f"{fn}: {name} must be finite, not {value}")
    return np.float32(value)


def rand(*shape, dtype=None, device=None, generator=None):
    """Uniform samples in [0, 1): `rand(2, 3)` or `rand((2, 3))`."""
    return _sample("uniform", _shape(shape, "rand"), _float_dtype(dtype, "rand"), device, generator,
                   np.float32(0), np.float32(1))


def randn(*shape, dtype=None, device=None, generator=None):
    """Standard normal samples: `randn(2, 3)` or `randn((2, 3))`."""
    return _sample("normal", _shape(shape, "randn"), _float_dtype(dtype, "randn"), device,
                   generator, np.float32(0), np.float32(1))


def uniform(low=0.0, high=1.0, shape=(), dtype=None, device=None, generator=None):
    """Uniform samples in [low, high), computed in float32 as low + (high - low) * u (rounding
    to the dtype may give `high` itself when the range is wide relative to its precision)."""
    lo, hi = _real(low, "low", "uniform"), _real(high, "high", "uniform")
    if not lo < hi:
        raise ValueError(f"uniform needs low < high, got low={low}, high={high}")
    scale = np.float32(hi - lo)
    if not isfinite(scale):
        raise ValueError(f"uniform: high - low = {float(hi) - float(lo)} overflows float32")
    return _sample("uniform", _shape((shape,), "uniform"), _float_dtype(dtype, "uniform"), device,
                   generator, lo, scale)


def normal(mean=0.0, std=1.0, shape=(), dtype=None, device=None, generator=None):
    """Normal samples with `mean` and standard deviation `std` (>= 0)."""
    m, s = _real(mean, "mean", "normal"), _real(std, "std", "normal")
    if s < 0:
        raise ValueError(f"normal needs std >= 0, got std={std}")
    return _sample("normal", _shape((shape,), "normal"), _float_dtype(dtype, "normal"), device,
                   generator, m, s)


def randint(low, high=None, shape=(), dtype=None, device=None, generator=None):
    """Integers drawn uniformly from [low, high) (from [0, low) when `high` is None, as numpy)."""
    if high is None:
        low, high = 0, low
    try:
        low, high = operator.index(low), operator.index(high)
    except TypeError:
        raise TypeError(f"randint needs integer bounds, got low={low!r}, high={high!r}") from None
    dtype = dtypes.dtype(dtype if dtype is not None else dtypes.int32)
    if dtype.kind not in "iu":
        raise TypeError(f"randint makes integer tensors (int32, uint32, uint8), not {dtype.name}")
    if low >= high:
        raise ValueError(f"randint needs low < high, got low={low}, high={high}")
    info = np.iinfo(dtype.np_dtype)
    if low < info.min or high - 1 > info.max:
        raise ValueError(f"randint range [{low}, {high}) does not fit in {dtype.name} "
                         f"[{info.min}, {info.max}]")
    span = (high - low) & MASK32  # 0 stands for the full 2^32 range
    return _sample("randint", _shape((shape,), "randint"), dtype, device, generator, low, span)
