#version 450
#extension GL_GOOGLE_include_directive : require
// Fills a fresh contiguous tensor with a function of each element's index: random draws
// (uniform, normal, randint) from Philox4x32-10, or the index patterns of arange, linspace and
// eye. Each invocation owns four consecutive elements (one Philox counter's four words), which
// is a whole number of words for every packing (f32/int32: 4, bf16: 2, uint8/bool: 1), so packed
// outputs never share a word between invocations. The op push constant selects the pattern.
// A random draw reads its Philox key and first counter from a generator's cursor in the arena,
// words [counter lo, counter hi, key lo, key hi, arrivals] (vkgrad/random.py), and advances the
// counter past the ones it used (counter.glsl), so a replayed draw takes fresh counters.
//
//   op             a             b              c                   d
//   UNIFORM        low (f32)     high-low (f32)
//   NORMAL         mean (f32)    std (f32)
//   RANDINT        low (int)     range (0: 2^32)
//   ARANGE_FLOAT   first (f32)   step (f32)     index set to d      value (f32)   int outputs floor
//   ARANGE_INT     first (int)   step (int)
//   EYE            columns       diagonal k (int)
//   WORDS          word 0        word 1         word 2              word 3        (0 after)
#include "common.glsl"
#include "counter.glsl"
#include "philox.glsl"

#include "random_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

// Box-Muller's log and sin/cos from basic arithmetic: Vulkan rounds +, - and * correctly but
// lets sin/cos err by 2^-11 and log by 2^-21 near 1 (large relative to a small radius), so
// these keep every device within a few float32 ulps of the numpy twins in random.py.

// ln x for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s) with
// s = (m - 1) / (m + 1), |s| < 0.172, whose series to s^9 errs by < 3e-9 relative.
float ln(float x) {
    int e;
    float m = frexp(x, e);
    if (m < 0.7071067690849304) { m *= 2.0; e -= 1; }
    precise float s = (m - 1.0) / (m + 1.0);
    precise float s2 = s * s;
    precise float r = float(e) * 0.6931471824645996 + 2.0 * s * (1.0 + s2 * (0.3333333432674408
        + s2 * (0.20000000298023224 + s2 * (0.1428571492433548 + s2 * 0.1111111119389534))));
    return r;
}

// cos and sin of 2 pi u for u in [0, 1): 4u splits exactly into a quadrant q and f in
// [-1/2, 1/2]; the polynomials are the Taylor series of sin and cos of (pi/2) f (terms to
// f^10: error < 2e-10), coefficients (pi/2)^n / n! rounded to float32.
vec2 cos_sin_turn(float u) {
    float t = 4.0 * u;
    float q = floor(t + 0.5);
    precise float f = t - q;
    precise float f2 = f * f;
    precise float s = f * (1.5707963705062866 + f2 * (-0.6459640860557556 + f2 * (
        0.07969262450933456 + f2 * (-0.004681753925979137 + f2 * 0.00016044118092395365))));
    precise float c = 1.0 + f2 * (-1.2337005138397217 + f2 * (0.25366950035095215 + f2 * (
        -0.020863480865955353 + f2 * (0.0009192602592520416 + f2 * -2.520204179745633e-05))));
    uint k = uint(q) & 3u;
    return k == 0u ? vec2(c, s) : (k == 1u ? vec2(-s, c) : (k == 2u ? vec2(-c, -s) : vec2(s, -c)));
}

// [0, 1) from the top 24 bits (8 for bf16, so that rounding to bf16 cannot reach 1.0).
float unit(uint x) {
    if (OUT_DT == DT_BFLOAT16) return float(x >> 24) * (1.0 / 256.0);
    return float(x >> 8) * (1.0 / 16777216.0);
}

// Bits of element `i`, which takes word `k` (0..3) of its counter's Philox `words`.
uint element_bits(uint i, uint k, uvec4 words) {
    uint x = words[k];
    if (OP == OP_UNIFORM) {
        precise float v = uintBitsToFloat(p.a) + uintBitsToFloat(p.b) * unit(x);
        return f32_to_bits(OUT_DT, v);
    }
    if (OP == OP_NORMAL) {
        // Box-Muller on the pair (words[2j], words[2j+1]): radius from the first, angle from
        // the second; elements 2j and 2j+1 take the cosine and the sine.
        uint pair = k & 2u;
        float u1 = (float(words[pair] >> 8) + 1.0) * (1.0 / 16777216.0);   // (0, 1]
        vec2 cs = cos_sin_turn(float(words[pair + 1u] >> 8) * (1.0 / 16777216.0));
        float r = sqrt(-2.0 * ln(u1));
        precise float z = r * cs[k & 1u];
        precise float v = uintBitsToFloat(p.a) + uintBitsToFloat(p.b) * z;
        return f32_to_bits(OUT_DT, v);
    }
    if (OP == OP_RANDINT) {
        // Multiply-high maps a 32-bit draw onto [0, range) with bias below range / 2^32.
        uint hi = x, lo;
        if (p.b != 0u) umulExtended(x, p.b, hi, lo);
        return u32_to_bits(OUT_DT, p.a + hi);
    }
    if (OP == OP_ARANGE_FLOAT) {
        precise float v = uintBitsToFloat(p.a) + float(i) * uintBitsToFloat(p.b);
        if (i == p.c) v = uintBitsToFloat(p.d);
        if (OUT_DT != DT_FLOAT32 && OUT_DT != DT_BFLOAT16) v = floor(v);
        return f32_to_bits(OUT_DT, v);
    }
    if (OP == OP_ARANGE_INT) return i32_to_bits(OUT_DT, int(p.a) + int(i) * int(p.b));
    if (OP == OP_WORDS) return i < 4u ? uvec4(p.a, p.b, p.c, p.d)[i] : 0u;
    // OP_EYE: ones where column - row == k
    return i32_to_bits(OUT_DT, int(i % p.a) - int(i / p.a) == int(p.b) ? 1 : 0);
}

void main() {
    uint per_word = elems_per_word(OUT_DT);
    uint groups = (p.n + 3u) / 4u;
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    bool random = OP == OP_UNIFORM || OP == OP_NORMAL || OP == OP_RANDINT;
    if (random) counter_load(SLOT_cursor_start, p.cursor_start, 4u);
    uvec2 first_counter = uvec2(counter_words[0], counter_words[1]);
    uvec2 key = uvec2(counter_words[2], counter_words[3]);
    for (uint g = gl_GlobalInvocationID.x; g < groups; g += threads) {
        uvec4 words = uvec4(0u);
        if (random) {
            uint carry;
            uint lo = uaddCarry(first_counter.x, g, carry);
            words = philox4x32_10(uvec4(lo, first_counter.y + carry, 0u, 0u), key);
        }
        for (uint k = 0u; k < 4u; k += per_word) {
            uint first = 4u * g + k;
            if (first >= p.n) break;
            uint packed = 0u;
            for (uint j = 0u; j < per_word && first + j < p.n; ++j)
                packed |= place_bits(OUT_DT, element_bits(first + j, k + j, words), first + j);
            ARENA_AT(SLOT_out_start, (p.out_start + first) / per_word) = packed;
        }
    }
    if (random) {
        uint carry;
        uint lo = uaddCarry(first_counter.x, groups, carry);
        counter_store(SLOT_cursor_start, p.cursor_start, 2u, SLOT_cursor_start, p.cursor_start + 4u, uvec4(lo, first_counter.y + carry, 0u, 0u));
    }
}
