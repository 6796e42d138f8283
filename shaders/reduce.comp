#version 450
#extension GL_GOOGLE_include_directive : require
// Reductions (sum, prod, max, min, argmax, argmin, any, all) over any set of axes of a strided
// view. Each output is reduced by GROUP threads (a power of two up to the workgroup, chosen per
// call); a workgroup covers WG / GROUP consecutive outputs and writes them as whole words, so
// packed outputs (bf16, bool) never share a word between workgroups. The op, the dtypes, GROUP,
// STAGE and the number of reduced dims are specialization constants.
//
// A thread visits the reduced elements first + lane, first + lane + GROUP, ... of its output. Its
// position among the reduced dims is a mixed-radix counter advanced by GROUP's digits with one
// carry per dim, and the element offset moves with it: no division or modulo per element (only
// per output, for the kept index).
//
// Combining the threads of an output: with SUBGROUPS, subgroup arithmetic (subgroupAdd, Mul,
// Max, Min; argmax/argmin as the winning value, then subgroupMin over the indices that hold
// it), then the GROUP / gl_SubgroupSize subgroup results through shared memory; this needs
// GROUP == 1 or GROUP >= gl_SubgroupSize (reduce.py picks GROUP so), and a thread's place is
// gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID. Without, a shared-memory tree.
// Float max/min/argmax/argmin let NaN win (tested by the bits, subgroupAny where the subgroup
// operations would leave NaN undefined); argmax/argmin ties go to the first index.
//
// Long reductions go in two passes (vkgrad/ops/reduce.py, _two_pass): the first reduces pieces of
// `chunk` consecutive reduced elements, output o covering piece o % pieces of row o / pieces,
// into float32/int32 partials; the second reduces those. For argmax/argmin the first pass
// (STAGE 1) also writes the winners' indices as int32 at idx_start, and the second (STAGE 2) reads
// them there, at the same offsets as the partial values; one pass is STAGE 0.
// Variants: DOMAIN_FLOAT (f32 accumulation), DOMAIN_INT (int32), each with SUBGROUPS or not.
#if defined(SUBGROUPS)
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_vote : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"

#include "reduce_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

#if defined(DOMAIN_FLOAT)
#define T float
#define LOAD load_f32
#define TO_BITS f32_to_bits
#define LOWEST uintBitsToFloat(0xff800000u)   // -inf
#define HIGHEST uintBitsToFloat(0x7f800000u)  // +inf
#define NAN uintBitsToFloat(0x7fc00000u)
bool is_nan(T v) { return f32_is_nan(v); }
#else
#define T int
#define LOAD load_i32
#define TO_BITS i32_to_bits
const int LOWEST = -2147483647 - 1;
const int HIGHEST = 2147483647;
#define NAN 0
bool is_nan(T v) { return false; }
#endif
const int NO_INDEX = 2147483647;

shared T vals[WG];
shared int idxs[WG];

bool arg_op() { return OP == OP_ARGMAX || OP == OP_ARGMIN; }

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

uint seg, lane;  // this thread's output within the workgroup, and its place among its threads

#if defined(SUBGROUPS)
// (acc, acc_i) of every invocation of the subgroup, combined (in every invocation).
void subgroup_combine(inout T acc, inout int acc_i) {
    if (arg_op()) {
        bool nan = subgroupAny(acc_i >= 0 && is_nan(acc));
        T best = OP == OP_ARGMAX ? subgroupMax(acc_i >= 0 ? acc : LOWEST)
                                 : subgroupMin(acc_i >= 0 ? acc : HIGHEST);
        bool hit = acc_i >= 0 && (nan ? is_nan(acc) : acc == best);
        int i = subgroupMin(hit ? acc_i : NO_INDEX);
        acc = nan ? NAN : best;
        acc_i = i == NO_INDEX ? -1 : i;
        return;
    }
    bool nan = subgroupAny(is_nan(acc));
    switch (OP) {
    case OP_SUM: acc = subgroupAdd(acc); break;
    case OP_PROD: acc = subgroupMul(acc); break;
    case OP_MAX: case OP_ANY: acc = subgroupMax(acc); break;
    case OP_MIN: case OP_ALL: acc = subgroupMin(acc); break;
    }
    if ((OP == OP_MAX || OP == OP_MIN) && nan) acc = NAN;
}
#endif

// The output's (acc, acc_i) from all its GROUP threads, in its lane 0.
void group_combine(inout T acc, inout int acc_i) {
#if defined(SUBGROUPS)
    if (GROUP > 1u) subgroup_combine(acc, acc_i);
    if (GROUP > gl_SubgroupSize) {
        if (subgroupElect()) { vals[gl_SubgroupID] = acc; idxs[gl_SubgroupID] = acc_i; }
        barrier();
        uint k = GROUP / gl_SubgroupSize;
        if (lane == 0u) {
            for (uint s = seg * k + 1u; s < (seg + 1u) * k; ++s)
                combine(OP, acc, acc_i, vals[s], idxs[s]);
        }
        barrier();
    }
#else
    uint pos = seg * GROUP + lane;
    vals[pos] = acc;
    idxs[pos] = acc_i;
    barrier();
    [[unroll]] for (uint s = GROUP / 2u; s > 0u; s >>= 1) {
        if (lane < s) {
            T v = vals[pos]; int vi = idxs[pos];
            combine(OP, v, vi, vals[pos + s], idxs[pos + s]);
            vals[pos] = v; idxs[pos] = vi;
        }
        barrier();
    }
    acc = vals[pos];
    acc_i = idxs[pos];
    barrier();
#endif
}

void main() {
#if defined(SUBGROUPS)
    uint pos = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
    uint pos = gl_LocalInvocationID.x;
#endif
    seg = pos / GROUP;
    lane = pos % GROUP;
    uint lid = gl_LocalInvocationID.x;
    uint per_group = WG / GROUP;
    uint n_groups = (p.n_out + per_group - 1u) / per_group;

    // GROUP as digits of the reduced dims' mixed radix (the last dim fastest), and the offset
    // those digits move by
    uint step[MAXD];
    int step_off = 0;
    uint rest = GROUP;
    [[unroll]] for (int d = MAXD - 1; d >= 0; --d) {
        step[d] = 0u;
        if (uint(d) < RED_DIMS) {
            step[d] = d == 0 ? rest : rest % p.red_shape[d];
            rest = d == 0 ? 0u : rest / p.red_shape[d];
            step_off += int(step[d]) * p.red_strides[d];
        }
    }

    for (uint g = gl_WorkGroupID.x; g < n_groups; g += gl_NumWorkGroups.x) {
        uint o = g * per_group + seg;
        T acc = identity_of(OP);
        int acc_i = -1;
        if (o < p.n_out) {
            uint row = o / p.pieces;
            uint first = (o - row * p.pieces) * p.chunk;
            uint end = first + min(p.chunk, p.n_red - first);
            int base;
            STRIDED_OFFSET(row, p.ndim_out, p.out_shape, p.out_strides, base);
            // the counter at this thread's first element
            uint c[MAXD];
            uint r = first + lane, left = r;
            int off = base;
            [[unroll]] for (int d = MAXD - 1; d >= 0; --d) {
                c[d] = 0u;
                if (uint(d) < RED_DIMS) {
                    c[d] = d == 0 ? left : left % p.red_shape[d];
                    left = d == 0 ? 0u : left / p.red_shape[d];
                    off += int(c[d]) * p.red_strides[d];
                }
            }
            for (; r < end; r += GROUP) {
                int i = STAGE == 2u ? load_i32(DT_INT32, SLOT_idx_start, p.idx_start, off) : int(r);
                combine(OP, acc, acc_i, LOAD(A_DT, SLOT_a_start, p.a_start, off), i);
                off += step_off;
                uint carry = 0u;
                [[unroll]] for (int d = MAXD - 1; d >= 0; --d) {
                    if (uint(d) < RED_DIMS) {
                        c[d] += step[d] + carry;
                        off += int(carry) * p.red_strides[d];
                        carry = c[d] >= p.red_shape[d] ? 1u : 0u;
                        if (carry != 0u) {
                            c[d] -= p.red_shape[d];
                            off -= int(p.red_shape[d]) * p.red_strides[d];
                        }
                    }
                }
            }
        }
        group_combine(acc, acc_i);
        if (lane == 0u) { vals[seg] = acc; idxs[seg] = acc_i; }
        barrier();
        uint per_word = elems_per_word(OUT_DT);
        if (lid < per_group / per_word && g * per_group + lid * per_word < p.n_out) {
            uint packed = 0u;
            for (uint k = 0u; k < per_word; ++k) {
                uint so = lid * per_word + k, out_i = g * per_group + so;
                if (out_i >= p.n_out) break;
                uint bits;
                if (STAGE == 1u) ARENA_AT(SLOT_idx_start, p.idx_start + out_i) = uint(idxs[so]);
                if (arg_op() && STAGE != 1u) {
                    bits = uint(idxs[so]);
                } else {
#if defined(DOMAIN_FLOAT)
                    bits = TO_BITS(OUT_DT, vals[so] * uintBitsToFloat(p.scale_bits));
#else
                    bits = TO_BITS(OUT_DT, vals[so]);
#endif
                }
                packed |= place_bits(OUT_DT, bits, out_i);
            }
            uint out_word = (p.out_start + g * per_group) / per_word + lid;
            ARENA_AT(SLOT_out_start, out_word) = packed;
        }
        barrier();
    }
}
