#version 450
#extension GL_GOOGLE_include_directive : require
// Reductions (sum, prod, max, min, argmax, argmin, any, all) over any set of axes of a strided
// view. Each output is reduced by GROUP threads (a power of two, at most 64, chosen per call);
// a workgroup covers 256 / GROUP consecutive outputs and writes them as whole words, so packed
// outputs (bf16, bool) never share a word between workgroups. The op, the dtypes, GROUP and STAGE
// are specialization constants.
// Long reductions go in two passes (vkgrad/ops/reduce.py, _two_pass): the first reduces pieces of
// `chunk` consecutive reduced elements, output o covering piece o % pieces of row o / pieces,
// into float32/int32 partials; the second reduces those. For argmax/argmin the first pass
// (STAGE 1) also writes the winners' indices as int32 at idx_start, and the second (STAGE 2) reads
// them there, at the same offsets as the partial values; one pass is STAGE 0.
// Variants: DOMAIN_FLOAT (f32 accumulation), DOMAIN_INT (int32).
#include "common.glsl"

#define WG 256
layout(local_size_x = WG) in;

#define MAXD 4
layout(constant_id = 0) const uint OP = 0u;
layout(constant_id = 1) const uint OUT_DT = 0u;
layout(constant_id = 2) const uint A_DT = 0u;
layout(constant_id = 3) const uint GROUP = 1u;  // threads per output
layout(constant_id = 4) const uint STAGE = 0u;

layout(push_constant) uniform Params {
    uint n_out; uint n_red; uint out_start; uint a_start;
    uint scale_bits;                   // result multiplier (1/n for mean), float domain only
    uint ndim_out; uint ndim_red;
    uint out_shape[MAXD]; int out_strides[MAXD];
    uint red_shape[MAXD]; int red_strides[MAXD];
    uint pieces; uint chunk;           // pieces per row, reduced elements per piece
    uint idx_start;                    // argmax/argmin indices (STAGE 1: written, 2: read)
} p;

#if defined(DOMAIN_FLOAT)
#define T float
#define LOAD load_f32
#define TO_BITS f32_to_bits
#define LOWEST uintBitsToFloat(0xff800000u)   // -inf
#define HIGHEST uintBitsToFloat(0x7f800000u)  // +inf
#else
#define T int
#define LOAD load_i32
#define TO_BITS i32_to_bits
const int LOWEST = -2147483647 - 1;
const int HIGHEST = 2147483647;
#endif

shared T vals[WG];
shared int idxs[WG];

#if defined(DOMAIN_FLOAT)
bool is_nan(T v) { return f32_is_nan(v); }
#else
bool is_nan(T v) { return false; }
#endif

// Does (v, i) win over (w, j) for argmax (or argmin when `smallest`)? NaN wins, then first index.
bool wins(bool smallest, T v, int i, T w, int j) {
    if (is_nan(v) || is_nan(w)) return is_nan(v) && (!is_nan(w) || i < j);
    if (v == w) return i < j;
    return smallest ? v < w : v > w;
}

T identity_of(uint op) {
    switch (op) {
    case OP_PROD: case OP_ALL: return T(1);
    case OP_MAX: case OP_ARGMAX: return LOWEST;
    case OP_MIN: case OP_ARGMIN: return HIGHEST;
    }
    return T(0);
}

void combine(uint op, inout T acc, inout int acc_i, T v, int i) {
    switch (op) {
    case OP_SUM: acc += v; break;
    case OP_PROD: acc *= v; break;
    case OP_MAX: acc = (is_nan(acc) || is_nan(v)) ? (is_nan(acc) ? acc : v) : max(acc, v); break;
    case OP_MIN: acc = (is_nan(acc) || is_nan(v)) ? (is_nan(acc) ? acc : v) : min(acc, v); break;
    case OP_ANY: acc = (acc != T(0) || v != T(0)) ? T(1) : T(0); break;
    case OP_ALL: acc = (acc != T(0) && v != T(0)) ? T(1) : T(0); break;
    case OP_ARGMAX: case OP_ARGMIN:
        if (i >= 0 && (acc_i < 0 || wins(op == OP_ARGMIN, v, i, acc, acc_i))) { acc = v; acc_i = i; }
        break;
    }
}

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint per_group = WG / GROUP;
    uint seg = lid / GROUP, lane = lid % GROUP;
    uint n_groups = (p.n_out + per_group - 1u) / per_group;
    bool arg = OP == OP_ARGMAX || OP == OP_ARGMIN;

    for (uint g = gl_WorkGroupID.x; g < n_groups; g += gl_NumWorkGroups.x) {
        uint o = g * per_group + seg;
        T acc = identity_of(OP);
        int acc_i = -1;
        if (o < p.n_out) {
            uint first = (o % p.pieces) * p.chunk;
            uint end = first + min(p.chunk, p.n_red - first);
            int base;
            STRIDED_OFFSET(o / p.pieces, p.ndim_out, p.out_shape, p.out_strides, base);
            for (uint r = first + lane; r < end; r += GROUP) {
                int off;
                STRIDED_OFFSET(r, p.ndim_red, p.red_shape, p.red_strides, off);
                int i = STAGE == 2u ? load_i32(DT_INT32, p.idx_start, base + off) : int(r);
                combine(OP, acc, acc_i, LOAD(A_DT, p.a_start, base + off), i);
            }
        }
        vals[lid] = acc;
        idxs[lid] = acc_i;
        barrier();
        for (uint s = GROUP / 2u; s > 0u; s >>= 1) {
            if (lane < s) {
                T v = vals[lid]; int vi = idxs[lid];
                combine(OP, v, vi, vals[lid + s], idxs[lid + s]);
                vals[lid] = v; idxs[lid] = vi;
            }
            barrier();
        }
        uint per_word = elems_per_word(OUT_DT);
        if (lid < per_group / per_word && g * per_group + lid * per_word < p.n_out) {
            uint packed = 0u;
            for (uint k = 0u; k < per_word; ++k) {
                uint so = lid * per_word + k, out_i = g * per_group + so;
                if (out_i >= p.n_out) break;
                uint slot = so * GROUP;
                uint bits;
                if (STAGE == 1u) ARENA(p.idx_start + out_i) = uint(idxs[slot]);
                if (arg && STAGE != 1u) {
                    bits = uint(idxs[slot]);
                } else {
#if defined(DOMAIN_FLOAT)
                    bits = TO_BITS(OUT_DT, vals[slot] * uintBitsToFloat(p.scale_bits));
#else
                    bits = TO_BITS(OUT_DT, vals[slot]);
#endif
                }
                packed |= place_bits(OUT_DT, bits, out_i);
            }
            uint out_word = (p.out_start + g * per_group) / per_word + lid;
            ARENA(out_word) = packed;
        }
        barrier();
    }
}
