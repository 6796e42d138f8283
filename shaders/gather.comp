#version 450
#extension GL_GOOGLE_include_directive : require
// Strided copies with an optional integer index: gather (x[idx], take, take_along_axis), scatter
// (x[idx] = v, add_at), writes into views (setitem, concatenate, pad) and index arithmetic.
//
// Element c (a coordinate vector over `shape`, n elements in all) reads and writes
//   src_off = sum_d c_d * src_strides[d]     (+ ix when SIDE == INDEX_SRC)
//   dst_off = sum_d c_d * dst_strides[d]     (+ ix when SIDE == INDEX_DST)
//   ix      = fix(idx[sum_d c_d * idx_strides[d]]) * idx_scale
// where fix() checks the index against the axis of size idx_n: with WRAP (bit 0 of idx_check) it
// is valid in [-idx_n, idx_n) and negative ones wrap, as numpy's; without, in [0, idx_n) (class
// labels). An invalid index writes the op's error code (idx_check >> 1) into the error word, the
// staging buffer's last, unless an earlier error is there (see vkgrad/backend/vulkan.py), and is
// clamped into [0, idx_n), so that indices that live on the device can never address memory
// outside the indexed axis (idx_n == 0: the index is already an element offset, not checked).
// With SIDE == INDEX_VALUE the index is added to the (int32) value instead: dst = src + ix,
// which sums the offsets of several index arrays.
//
// MODE, SIDE and the dtypes are specialization constants.
// Modes: MODE_WORDS: dst = src, each invocation owns whole 32-bit words of dst (any 32-bit dst; a
//        packed dst only when contiguous and word-aligned, checked on the host);
//        MODE_STORE / MODE_ADD: dst = src or dst += src per element, through a compare-and-swap
//        on the element's word that changes only the element's own bits, so neighbouring elements
//        of a packed dtype never lose writes (combine.glsl);
//        MODE_MUL / MODE_MAX / MODE_MIN: dst = dst * src, max(dst, src), min(dst, src) alike.
//        The host sends combinations where an index repeats a destination to scatter.comp, which
//        combines in source order; here they meet only destinations that no other element hits.
// src is converted to dst's dtype as numpy's unsafe cast does (through f32 when either is
// floating); a DT_IMM src carries bits that the host already converted to dst's dtype.
#include "common.glsl"
#include "combine.glsl"

#include "gather_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

// Element i's (< 2^31) offsets: coordinates split off innermost first without dividing. Dims
// past the view's are padded with size 1 (inner, magic) and stride 0, so every MAXD are split.
void offsets(uint i, out int dst_off, out int src_off, out int ix) {
    uint rest = i;
    int io = 0;
    dst_off = 0;
    src_off = 0;
    [[unroll]] for (int d = MAXD - 1; d > 0; --d) {
        int c = split_coord(rest, p.inner[d - 1], p.magic[d - 1], p.shifts, d - 1);
        dst_off += c * p.dst_strides[d];
        src_off += c * p.src_strides[d];
        io += c * p.idx_strides[d];
    }
    dst_off += int(rest) * p.dst_strides[0];
    src_off += int(rest) * p.src_strides[0];
    io += int(rest) * p.idx_strides[0];
    ix = 0;
    if (SIDE != INDEX_NONE) {
        int v = load_i32(IDX_DT, SLOT_idx_start, p.idx_start, io);
        if (p.idx_n > 0u) {
            int len = int(p.idx_n);
            // an unsigned index reads as negative from 2^31 up: out of range, never wrapped
            if (v < 0 && IDX_DT == DT_INT32 && (p.idx_check & 1u) != 0u) v += len;
            if (v < 0 || v >= len) {
                atomicCompSwap(staging[staging.length() - 1], 0u, p.idx_check >> 1);
                v = clamp(v, 0, len - 1);
            }
        }
        ix = v * p.idx_scale;
    }
    if (SIDE == INDEX_SRC) src_off += ix;
    if (SIDE == INDEX_DST) dst_off += ix;
}

// The source element as bits of dst's dtype, not yet shifted into place.
uint value_bits(int src_off, int ix) {
    if (SIDE == INDEX_VALUE)
        return i32_to_bits(DST_DT, load_i32(SRC_DT, SLOT_src_start, p.src_start, src_off) + ix);
    return convert_bits(DST_DT, SRC_DT, SLOT_src_start, p.src_start, src_off);
}

void main() {
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    int dst_off, src_off, ix;
    // MODE_WORDS: ELEMS_PER_INVOCATION elements per invocation t, whole words of dst: words
    // base + j * 256 (j < words_per), base = (t - lane) * words_per + lane, so that neighbouring
    // invocations touch neighbouring words
    if (MODE == MODE_WORDS) {
        uint per = elems_per_word(DST_DT);
        uint words_per = ELEMS_PER_INVOCATION / per;
        uint words = (p.n + per - 1u) / per;
        uint lane = gl_LocalInvocationID.x, size = gl_WorkGroupSize.x;
        for (uint t = gl_GlobalInvocationID.x; (t - lane) * words_per < words; t += threads) {
            uint base = (t - lane) * words_per + lane;
            [[unroll]] for (uint j = 0u; j < words_per; ++j) {
                uint w = base + j * size;
                if (w >= words) break;
                uint packed = 0u;
                for (uint k = 0u; k < per; ++k) {
                    uint i = w * per + k;
                    if (i >= p.n) break;
                    offsets(i, dst_off, src_off, ix);
                    uint bits = value_bits(src_off, ix);
                    if (per == 1u) ARENA_AT(SLOT_dst_start, uint(int(p.dst_start) + dst_off)) = bits;
                    else packed |= place_bits(DST_DT, bits, i);
                }
                if (per > 1u) ARENA_AT(SLOT_dst_start, p.dst_start / per + w) = packed;
            }
        }
        return;
    }
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += threads) {
        offsets(i, dst_off, src_off, ix);
        combine_atomic(MODE, DST_DT, SLOT_dst_start, uint(int(p.dst_start) + dst_off),
                       value_bits(src_off, ix));
    }
}
