// Element conversion and combination shared by gather.comp and scatter.comp (include after
// common.glsl). Modes (MODE_* from vkgrad/kernels.py GATHER_CODES): MODE_STORE: b replaces a;
// MODE_ADD: a + b (floats in f32, bf16 rounded; integers wrap; bool: or); MODE_MUL: a * b;
// MODE_MAX / MODE_MIN: the larger / smaller (floats: NaN wins, the earlier NaN first;
// integers compare signed for int32).

bool is_float(uint dt) { return dt == DT_FLOAT32 || dt == DT_BFLOAT16; }

// Element `off` of operand (src_dt, slot, start) as bits of dst_dt, not yet shifted into place:
// numpy's unsafe cast (through f32 when either is floating); a DT_IMM operand carries bits that
// the host already converted to dst_dt.
uint convert_bits(uint dst_dt, uint src_dt, uint slot, uint start, int off) {
    if (src_dt == DT_IMM) return start;
    if (src_dt == dst_dt) return load_bits(src_dt, slot, start, off);  // NaN payloads too
    if (is_float(src_dt) || is_float(dst_dt))
        return f32_to_bits(dst_dt, load_f32(src_dt, slot, start, off));
    return i32_to_bits(dst_dt, load_i32(src_dt, slot, start, off));
}

// dst's element a combined with src's b (both bits of dtype dt) by `mode`.
uint combine_bits(uint mode, uint dt, uint a, uint b) {
    if (mode == MODE_STORE) return b;
    if (mode == MODE_ADD) {
        if (dt == DT_FLOAT32) return floatBitsToUint(uintBitsToFloat(a) + uintBitsToFloat(b));
        if (dt == DT_BFLOAT16) return f32_to_bf16(bf16_to_f32(a) + bf16_to_f32(b));
        if (dt == DT_BOOL) return a | b;
        return a + b;
    }
    if (is_float(dt)) {
        float x = dt == DT_FLOAT32 ? uintBitsToFloat(a) : bf16_to_f32(a);
        float y = dt == DT_FLOAT32 ? uintBitsToFloat(b) : bf16_to_f32(b);
        if (mode == MODE_MUL) return f32_to_bits(dt, x * y);
        if (f32_is_nan(x)) return a;
        if (f32_is_nan(y)) return b;
        return (mode == MODE_MAX) == (x > y) ? a : b;
    }
    if (mode == MODE_MUL) return a * b;
    bool greater = dt == DT_INT32 ? int(a) > int(b) : a > b;
    return (mode == MODE_MAX) == greater ? a : b;
}

// Element e (an element index in the chunk at `slot`) of dtype dt combined with `bits` by `mode`, through a
// compare-and-swap on its word that changes only the element's own bits, so that neighbouring
// elements of a packed dtype, and other invocations combining into e, never lose writes.
void combine_atomic(uint mode, uint dt, uint slot, uint e, uint bits) {
    uint per = elems_per_word(dt);
    uint width = 32u / per;
    uint shift = (e % per) * width;
    uint field = (width == 32u ? 0xffffffffu : ((1u << width) - 1u)) << shift;
    uint word = e / per;
    uint old = ARENA_AT(slot, word);
    for (;;) {
        uint v = combine_bits(mode, dt, (old & field) >> shift, bits);
        uint seen = atomicCompSwap(ARENA_AT(slot, word), old, (old & ~field) | ((v << shift) & field));
        if (seen == old) break;
        old = seen;
    }
}
