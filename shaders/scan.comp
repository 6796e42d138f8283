#version 450
#extension GL_GOOGLE_include_directive : require
// Prefix sums along one axis (cumsum), and the compaction of a mask into the element offsets of
// its true entries (boolean indexing). Each of `rows` rows of `len` elements is cut into
// `nchunks` chunks of `chunk` elements, each handled by one invocation:
//   SCAN_CHUNKS   sums[r][k] = sum of chunk k of row r
//   SCAN_SUMS     one invocation per row: sums[r][k] = exclusive prefix of sums[r][..k],
//                 sums[r][nchunks] = the row's total
//   SCAN_WRITE    dst[r][j] = inclusive running sum, each chunk starting from sums[r][k]
//                 (no sums when nchunks == 1)
//   SCAN_COMPACT  (one contiguous row, the mask) for each j with src[j] != 0, in order:
//                 dst[count of true entries before j] = sum_d coord_d(j) * dst_strides[d],
//                 where coord(j) is j's position in `shape`.
// Rows are addressed by their coordinates in `shape` (ndim dims) times src/dst_strides; elements
// within a row by src_step/dst_step. Sums and dst are 32-bit: f32 bits when IS_FLOAT (floats
// accumulate in f32), int32/uint32 otherwise (integers wrap alike). The phase, is_float and
// src's dtype are specialization constants.
#include "common.glsl"

layout(local_size_x = 256) in;

#define MAXD 5
layout(constant_id = 0) const uint PHASE = 0u;
layout(constant_id = 1) const uint IS_FLOAT = 0u;
layout(constant_id = 2) const uint SRC_DT = 0u;

layout(push_constant) uniform Params {
    uint len; uint rows; uint chunk; uint nchunks; uint ndim;
    uint src_start; int src_step;
    uint dst_start; int dst_step; uint sums_start;
    uint shape[MAXD]; int src_strides[MAXD]; int dst_strides[MAXD];
} p;

uint add_acc(uint a, uint b) {
    return IS_FLOAT == 1u ? floatBitsToUint(uintBitsToFloat(a) + uintBitsToFloat(b)) : a + b;
}

uint load_acc(int off) {
    return IS_FLOAT == 1u ? floatBitsToUint(load_f32(SRC_DT, p.src_start, off))
                            : uint(load_i32(SRC_DT, p.src_start, off));
}

void coords_offsets(uint i, out int src_off, out int dst_off) {
    uint rest = i;
    src_off = 0;
    dst_off = 0;
    for (int d = int(p.ndim) - 1; d >= 0; --d) {
        int c = int(rest % p.shape[d]);
        rest /= p.shape[d];
        src_off += c * p.src_strides[d];
        dst_off += c * p.dst_strides[d];
    }
}

void main() {
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint stride = p.nchunks + 1u;  // sums per row: one per chunk and the total
    if (PHASE == SCAN_SUMS) {
        for (uint r = gl_GlobalInvocationID.x; r < p.rows; r += threads) {
            uint running = 0u;
            for (uint k = 0u; k < p.nchunks; ++k) {
                uint s = arena[p.sums_start + r * stride + k];
                arena[p.sums_start + r * stride + k] = running;
                running = add_acc(running, s);
            }
            arena[p.sums_start + r * stride + p.nchunks] = running;
        }
        return;
    }
    for (uint t = gl_GlobalInvocationID.x; t < p.rows * p.nchunks; t += threads) {
        uint r = t / p.nchunks, k = t % p.nchunks;
        uint lo = k * p.chunk, hi = min(p.len, lo + p.chunk);
        int src_base, dst_base;
        coords_offsets(r, src_base, dst_base);
        if (PHASE == SCAN_CHUNKS) {
            uint acc = 0u;
            for (uint j = lo; j < hi; ++j)
                acc = add_acc(acc, load_acc(src_base + int(j) * p.src_step));
            arena[p.sums_start + r * stride + k] = acc;
        } else if (PHASE == SCAN_WRITE) {
            uint acc = p.nchunks > 1u ? arena[p.sums_start + r * stride + k] : 0u;
            for (uint j = lo; j < hi; ++j) {
                acc = add_acc(acc, load_acc(src_base + int(j) * p.src_step));
                arena[uint(int(p.dst_start) + dst_base + int(j) * p.dst_step)] = acc;
            }
        } else {  // SCAN_COMPACT
            uint pos = arena[p.sums_start + k];
            for (uint j = lo; j < hi; ++j) {
                if (load_i32(SRC_DT, p.src_start, int(j)) == 0) continue;
                int unused, off;
                coords_offsets(j, unused, off);
                arena[p.dst_start + pos] = uint(off);
                pos += 1u;
            }
        }
    }
}
