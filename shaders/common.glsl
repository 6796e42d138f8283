// Shared by every vkgrad kernel: the memory model, dtype codes, packed loads and stores.
//
// Device tensors live in the arena, one or more storage buffers (chunks) of 32-bit words. A
// dispatch binds the chunks its operands live in, up to ARENA_SLOTS of them, as the array
// `arena_chunks` (binding 0); binding 1 is the host-visible staging buffer used by transfers.
// ARENA_AT(slot, w) is word w of the chunk at `slot`, an lvalue (assign to it, pass it to
// atomics). A tensor operand is (dtype, slot, start): `start` counts elements of that dtype from
// the first element of its chunk, a plain 32-bit index (so a chunk may take what one binding
// addresses): narrow types are packed (bf16 two to a word, uint8/bool four), low half / low
// byte first, as numpy lays them out on little-endian hosts, and start / elements per word is
// the word of the element. A family's kernel finds an operand's slot in its push word `slots`,
// as SLOT_<start field> (kernels.Layout), uniform across the dispatch by construction.
// vk.Kernel code, which has no `slots`, addresses words as ARENA(w) with the slot in w's top
// bits (w = slot << ARENA_SLOT_SHIFT | word; the helpers without a slot argument take starts
// so), and `arena` (binding 2) is the chunk at slot 0 alone, for kernels whose operands all
// live in one chunk (vkgrad.Kernel code written before chunks). DT_* values, op codes and the
// ARENA_* constants arrive as -D defines generated from vkgrad/kernels.py.
#extension GL_EXT_control_flow_attributes : enable

layout(std430, binding = 0) buffer ArenaChunk { uint words[]; } arena_chunks[ARENA_SLOTS];
layout(std430, binding = 1) buffer Staging { uint staging[]; };
#define ARENA_AT(slot, w) arena_chunks[slot].words[w]
#ifndef FAMILY  // vk.Kernel code (vkgrad's own kernels, built with -DFAMILY, have no use for it)
layout(std430, binding = 2) buffer Arena { uint arena[]; };
#define ARENA(w) ARENA_AT(uint(w) >> ARENA_SLOT_SHIFT, uint(w) & ARENA_SLOT_MASK)
#endif

uint elems_per_word(uint dt) {
    return dt == DT_BFLOAT16 ? 2u : ((dt == DT_UINT8 || dt == DT_BOOL) ? 4u : 1u);
}

// ---- bf16 <-> f32 -----------------------------------------------------------------------------
float bf16_to_f32(uint bits16) { return uintBitsToFloat(bits16 << 16); }

// Round to nearest even; NaN stays NaN (quiet bit set so truncation cannot make it an infinity).
uint f32_to_bf16(float v) {
    uint u = floatBitsToUint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// NaN and infinity tests on the bits: a driver may fold isnan/isinf away under fast math.
bool f32_is_nan(float v) { return (floatBitsToUint(v) & 0x7fffffffu) > 0x7f800000u; }
bool f32_is_inf(float v) { return (floatBitsToUint(v) & 0x7fffffffu) == 0x7f800000u; }

// ---- float -> integer ------------------------------------------------------------------------
// GLSL leaves int(v) and uint(v) undefined for NaN, infinities and values out of range (devices
// differ: NVIDIA saturates, x86 wraps), so every conversion goes through these, which define it as
// docs/numerics.md does (and the host does): truncate toward zero, saturate to the type's range,
// NaN to 0. 2^31 and 2^32 are exact in f32, so the bounds compare exactly.
int f32_to_i32(float v) {
    if (f32_is_nan(v)) return 0;
    if (v >= 2147483648.0) return 0x7fffffff;
    if (v <= -2147483648.0) return int(0x80000000u);
    return int(v);
}

uint f32_to_u32(float v) {
    if (f32_is_nan(v) || v <= 0.0) return 0u;  // (-1, 0) truncates to 0 too
    if (v >= 4294967296.0) return 0xffffffffu;
    return uint(v);
}

// ---- raw element access ---------------------------------------------------------------------------
uint load_bits(uint dt, uint slot, uint start, int index) {
    uint e = uint(int(start) + index);
    if (dt == DT_BFLOAT16) return (ARENA_AT(slot, e >> 1) >> ((e & 1u) << 4)) & 0xffffu;
    if (dt == DT_UINT8 || dt == DT_BOOL)
        return (ARENA_AT(slot, e >> 2) >> ((e & 3u) << 3)) & 0xffu;
    return ARENA_AT(slot, e);
}

// An operand whose dtype is DT_IMM is a scalar carried in the push constants: `start` holds its
// bits (a float in the float domain, an int otherwise) and the index is ignored.
// The value of an element of dt (not DT_IMM) whose bits, shifted down, are `b`.
float bits_to_f32(uint dt, uint b) {
    if (dt == DT_FLOAT32) return uintBitsToFloat(b);
    if (dt == DT_BFLOAT16) return bf16_to_f32(b);
    if (dt == DT_INT32) return float(int(b));
    return float(b);
}

float load_f32(uint dt, uint slot, uint start, int index) {
    if (dt == DT_IMM) return uintBitsToFloat(start);
    return bits_to_f32(dt, load_bits(dt, slot, start, index));
}

int bits_to_i32(uint dt, uint b) {
    if (dt == DT_FLOAT32) return f32_to_i32(uintBitsToFloat(b));
    if (dt == DT_BFLOAT16) return f32_to_i32(bf16_to_f32(b));
    return int(b);
}

uint bits_to_u32(uint dt, uint b) {
    if (dt == DT_FLOAT32 || dt == DT_BFLOAT16) return f32_to_u32(bits_to_f32(dt, b));
    return uint(bits_to_i32(dt, b));
}

int load_i32(uint dt, uint slot, uint start, int index) {
    if (dt == DT_IMM) return int(start);
    return bits_to_i32(dt, load_bits(dt, slot, start, index));
}

uint load_u32(uint dt, uint slot, uint start, int index) {
    if (dt == DT_IMM) return start;
    return bits_to_u32(dt, load_bits(dt, slot, start, index));
}

// vk.Kernel's forms: `start` carries its slot in its top bits (see ARENA(w)), as launch gives
// a tensor argument to a kernel without `slots`.
#define LEGACY_LOAD(ret, name)                                                        \
    ret name(uint dt, uint start, int index) {                                        \
        if (dt == DT_IMM) return name(dt, 0u, start, index);                          \
        uint e = uint(int(start) + index);                                            \
        uint high = uint(ARENA_SLOT_SHIFT + findLSB(elems_per_word(dt)));             \
        return name(dt, e >> high, e & ((1u << high) - 1u), 0);                       \
    }
#ifndef FAMILY
LEGACY_LOAD(uint, load_bits)
LEGACY_LOAD(float, load_f32)
LEGACY_LOAD(int, load_i32)
LEGACY_LOAD(uint, load_u32)
#endif

// Bits of `v` as an element of `dt`, not yet shifted into place within its word.
uint f32_to_bits(uint dt, float v) {
    if (dt == DT_FLOAT32) return floatBitsToUint(v);
    if (dt == DT_BFLOAT16) return f32_to_bf16(v);
    if (dt == DT_INT32) return uint(f32_to_i32(v));
    if (dt == DT_BOOL) return v != 0.0 ? 1u : 0u;  // NaN is true, as in numpy
    if (dt == DT_UINT8) return min(f32_to_u32(v), 255u);
    return f32_to_u32(v);
}

uint i32_to_bits(uint dt, int v) {
    if (dt == DT_FLOAT32) return floatBitsToUint(float(v));
    if (dt == DT_BFLOAT16) return f32_to_bf16(float(v));
    if (dt == DT_BOOL) return v != 0 ? 1u : 0u;
    if (dt == DT_UINT8) return uint(v) & 0xffu;
    return uint(v);
}

uint u32_to_bits(uint dt, uint v) {
    if (dt == DT_FLOAT32) return floatBitsToUint(float(v));
    if (dt == DT_BFLOAT16) return f32_to_bf16(float(v));
    if (dt == DT_BOOL) return v != 0u ? 1u : 0u;
    if (dt == DT_UINT8) return v & 0xffu;
    return v;
}

// Element `index` of a packed word: shift the element's bits into place.
uint place_bits(uint dt, uint bits, uint index) {
    uint width = 32u / elems_per_word(dt);
    return width == 32u ? bits : (bits << ((index % elems_per_word(dt)) * width));
}

// ---- strided indexing -------------------------------------------------------------------------------
// Element offset of row-major linear index `i` in a view with `ndim` dims of `shape`/`strides`.
#define STRIDED_OFFSET(i, ndim, shape, strides, out) {                     \
    uint rest_ = (i); int off_ = 0;                                        \
    for (int d_ = int(ndim) - 1; d_ >= 0; --d_) {                          \
        uint c_ = rest_ % shape[d_]; rest_ /= shape[d_];                   \
        off_ += int(c_) * strides[d_];                                     \
    }                                                                      \
    out = off_; }

// ---- division by a dimension ----------------------------------------------------------------------
// floor(n / d) for n < 2^31 by a multiply-high and a shift, m and s from vkgrad.layout.div_magic(d)
// (which proves it exact): no integer division, which CPU drivers run as a loop of scalar ones.
uint div_magic(uint n, uint m, uint s) {
    uint hi, lo;
    umulExtended(n << 1, m, hi, lo);
    return hi >> s;
}

// The coordinate along an inner dim of size `dim` of row-major index `rest` (< 2^31), which keeps
// the index over the outer dims. m: the dim's div_magic multiplier, its shift in byte k of
// `shifts` (vkgrad.layout.div_magic_fields lays them out).
int split_coord(inout uint rest, uint dim, uint m, uint shifts, int k) {
    uint q = div_magic(rest, m, (shifts >> (8 * k)) & 0xffu);
    int c = int(rest - q * dim);
    rest = q;
    return c;
}
