#version 450
#extension GL_GOOGLE_include_directive : require
// Stable argsort of `rows` rows of `len` elements by a bitonic network (argsort, sort, topk).
// Each row is padded to `pow2` (a power of two >= len) slots of (key, index) pairs, two 32-bit
// arrays of rows * pow2 words, ordered by key and then by index, so equal keys keep their order:
//   SORT_INIT   keys[r][i] = order key of src's element i of row r (i < len), index i; padding
//               slots get the largest key and indices >= len, so they sort last
//   SORT_STEP   one compare-exchange step (k, j) of the network: slot i and slot i ^ j swap when
//               out of order, ascending where (i & k) == 0 (k = 2, 4, .., pow2; j = k/2, .., 1)
// Order keys are unsigned: a float's bits with the sign bit flipped (negatives: all bits), so
// that unsigned order is numeric order; -0 is +0 and every NaN the largest key (torch: NaN sorts
// above +inf); int32 has its sign bit flipped. DESCENDING complements the keys (NaN first, as
// torch's descending sort), the index tiebreak staying ascending (stable). Rows are addressed as
// in scan.comp: coordinates in `shape` (ndim dims) times src_strides, elements by src_step.
// The phase and src's dtype are specialization constants.
#include "common.glsl"

#include "sort_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants
#define KEY(w) ARENA_AT(SLOT_keys_start, w)
#define INDEX(w) ARENA_AT(SLOT_index_start, w)

uint order_key(int off) {
    uint b = load_bits(SRC_DT, SLOT_src_start, p.src_start, off);
    if (SRC_DT == DT_FLOAT32 || SRC_DT == DT_BFLOAT16) {
        uint u = SRC_DT == DT_BFLOAT16 ? b << 16 : b;
        if ((u & 0x7fffffffu) > 0x7f800000u) return 0xffffffffu;  // NaN
        if ((u & 0x7fffffffu) == 0u) u = 0u;                       // -0 is +0
        return (u & 0x80000000u) != 0u ? ~u : u | 0x80000000u;
    }
    return SRC_DT == DT_INT32 ? b ^ 0x80000000u : b;
}

// Whether pair a comes after pair b: by key, then by index.
bool after(uint ka, uint ia, uint kb, uint ib) { return ka > kb || (ka == kb && ia > ib); }

void main() {
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint t = gl_GlobalInvocationID.x; t < p.rows * p.pow2; t += threads) {
        uint r = t / p.pow2, i = t % p.pow2;
        if (PHASE == SORT_INIT) {
            uint key = 0xffffffffu;
            if (i < p.len) {
                int base;
                STRIDED_OFFSET(r, p.ndim, p.shape, p.src_strides, base);
                key = order_key(base + int(i) * p.src_step);
                if (p.descending != 0u) key = ~key;
            }
            ARENA_AT(SLOT_keys_start, p.keys_start + t) = key;
            ARENA_AT(SLOT_index_start, p.index_start + t) = i;
            continue;
        }
        uint l = i ^ p.j;
        if (l <= i) continue;
        uint a = p.keys_start + t, b = a + (l - i);
        uint ia = p.index_start + t, ib = ia + (l - i);
        bool ascending = (i & p.k) == 0u;
        if (after(KEY(a), INDEX(ia), KEY(b), INDEX(ib)) == ascending) {
            uint kt = KEY(a), it = INDEX(ia);
            KEY(a) = KEY(b);
            INDEX(ia) = INDEX(ib);
            KEY(b) = kt;
            INDEX(ib) = it;
        }
    }
}
