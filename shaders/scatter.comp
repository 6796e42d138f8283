#version 450
#extension GL_GOOGLE_include_directive : require
// Deterministic scatter-combine through an index that may repeat destinations (add_at, index_add
// and so embedding's and take_along_axis's backward, scatter_reduce): every destination element
// is owned by one invocation, which combines its sources in source order,
//   dst[e] = (..((dst[e] o s_1) o s_2) ..) o s_k     (s_1 .. s_k the sources hitting e, in order)
// exactly as numpy's ufunc.at does on the host, so the result does not depend on scheduling.
//
// The domain (the sources, row-major) has keyed dims, along which the index picks the
// destination (dst stride 0 there), and free dims, along which dst moves by its own strides
// (the index addresses other axes of dst, so sources at different free coordinates never
// meet). The host has written keys[r][k] = destination offset of keyed position k (the index
// term), one row r per free position where the index varies along free dims (keys_step = m)
// or one shared row (keys_step = 0), and perm[r] = the stable argsort of row r (sort.comp), so
// equal keys are adjacent and in source order. Invocation (k, f) (f fastest, so neighbours
// touch neighbouring free elements) is a segment's owner when perm[k]'s key differs from
// perm[k-1]'s; it reads dst, combines the segment's sources in perm's order and stores once.
// One long segment is one invocation's serial loop: that is the price of a fixed order.
//
// MODE (combine.glsl's MODE_ADD, _MUL, _MAX, _MIN) and the dtypes are specialization constants;
// a DT_IMM src carries one value's bits (already dst's dtype).
#include "common.glsl"
#include "combine.glsl"

#include "scatter_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

void main() {
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint t = gl_GlobalInvocationID.x; t < p.m * p.nfree; t += threads) {
        uint k = t / p.nfree, f = t % p.nfree;
        uint keys = p.keys_start + f * p.keys_step, perm = p.perm_start + f * p.perm_step;
        uint key = ARENA_AT(SLOT_keys_start, keys + ARENA_AT(SLOT_perm_start, perm + k));
        if (k > 0u && ARENA_AT(SLOT_keys_start, keys + ARENA_AT(SLOT_perm_start, perm + k - 1u)) == key) continue;  // not the first
        int dst_off, src_free;
        STRIDED_OFFSET(f, p.nf, p.fshape, p.fdst, dst_off);
        STRIDED_OFFSET(f, p.nf, p.fshape, p.fsrc, src_free);
        uint e = p.dst_start + uint(dst_off) + key;
        uint acc = load_bits(DST_DT, SLOT_dst_start, e, 0);
        for (uint j = k; j < p.m; ++j) {
            uint q = ARENA_AT(SLOT_perm_start, perm + j);
            if (ARENA_AT(SLOT_keys_start, keys + q) != key) break;
            int src_off;
            STRIDED_OFFSET(q, p.nk, p.kshape, p.ksrc, src_off);
            acc = combine_bits(MODE, DST_DT, acc,
                               convert_bits(DST_DT, SRC_DT, SLOT_src_start, p.src_start, src_free + src_off));
        }
        if (elems_per_word(DST_DT) == 1u) ARENA_AT(SLOT_dst_start, e) = acc;
        else combine_atomic(MODE_STORE, DST_DT, SLOT_dst_start, e, acc);  // the word's other elements
    }
}
