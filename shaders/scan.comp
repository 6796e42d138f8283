#version 450
#extension GL_GOOGLE_include_directive : require
// Running combinations along one axis (cumsum, cumprod, cummax, cummin, logcumsumexp), and the
// compaction of a mask into the element offsets of its true entries (boolean indexing). The
// combination is COMBINE (associative, so chunks combine in any grouping): sum, product,
// maximum, minimum (floats propagate NaN; integers compare signed for int32, unsigned for
// unsigned sources) or log(e^a + e^b). "Sums" below are such combinations. Each of `rows` rows of
// `len` elements is cut into
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
// accumulate in f32), int32/uint32 otherwise (integers wrap alike). The phase, is_float, src's
// dtype and the combination are specialization constants.
#include "common.glsl"

#include "scan_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

const uint NEG_INF = 0xff800000u;
const bool UNSIGNED = SRC_DT == DT_UINT32 || SRC_DT == DT_UINT8 || SRC_DT == DT_BOOL;

// log(e^a + e^b) = m + log1p(e^(n - m)) for m = max, n = min; log1p(e), e in (0, 1], as
// 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = e / (2 + e) <= 1/3 (nine terms reach float32's
// precision, with no reliance on log's accuracy near 1). -inf and NaN by their bits.
float logaddexp(float a, float b) {
    if (f32_is_nan(a) || f32_is_nan(b)) return a + b;
    float m = max(a, b), n = min(a, b);
    if (floatBitsToUint(n) == NEG_INF || f32_is_inf(m)) return m;
    float e = exp(n - m), s = e / (2.0 + e), s2 = s * s, sum = 0.0;
    [[unroll]] for (int k = 17; k >= 1; k -= 2) sum = sum * s2 + 1.0 / float(k);
    return m + 2.0 * s * sum;
}

// The identity of COMBINE as accumulator bits.
uint identity_acc() {
    if (COMBINE == COMBINE_PROD) return IS_FLOAT == 1u ? floatBitsToUint(1.0) : 1u;
    if (COMBINE == COMBINE_MAX)
        return IS_FLOAT == 1u ? NEG_INF : (UNSIGNED ? 0u : 0x80000000u);
    if (COMBINE == COMBINE_MIN)
        return IS_FLOAT == 1u ? 0x7f800000u : (UNSIGNED ? 0xffffffffu : 0x7fffffffu);
    if (COMBINE == COMBINE_LOGADDEXP) return NEG_INF;
    return 0u;
}

uint add_acc(uint a, uint b) {
    if (IS_FLOAT == 1u) {
        float x = uintBitsToFloat(a), y = uintBitsToFloat(b);
        if (COMBINE == COMBINE_SUM) return floatBitsToUint(x + y);
        if (COMBINE == COMBINE_PROD) return floatBitsToUint(x * y);
        if (COMBINE == COMBINE_LOGADDEXP) return floatBitsToUint(logaddexp(x, y));
        if (f32_is_nan(x)) return a;
        if (f32_is_nan(y)) return b;
        return floatBitsToUint(COMBINE == COMBINE_MAX ? max(x, y) : min(x, y));
    }
    if (COMBINE == COMBINE_SUM) return a + b;
    if (COMBINE == COMBINE_PROD) return a * b;
    bool greater = UNSIGNED ? a > b : int(a) > int(b);
    return (COMBINE == COMBINE_MAX) == greater ? a : b;
}

uint load_acc(int off) {
    return IS_FLOAT == 1u ? floatBitsToUint(load_f32(SRC_DT, SLOT_src_start, p.src_start, off))
                            : uint(load_i32(SRC_DT, SLOT_src_start, p.src_start, off));
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
            uint running = identity_acc();
            for (uint k = 0u; k < p.nchunks; ++k) {
                uint s = ARENA_AT(SLOT_sums_start, p.sums_start + r * stride + k);
                ARENA_AT(SLOT_sums_start, p.sums_start + r * stride + k) = running;
                running = add_acc(running, s);
            }
            ARENA_AT(SLOT_sums_start, p.sums_start + r * stride + p.nchunks) = running;
        }
        return;
    }
    for (uint t = gl_GlobalInvocationID.x; t < p.rows * p.nchunks; t += threads) {
        uint r = t / p.nchunks, k = t % p.nchunks;
        uint lo = k * p.chunk, hi = min(p.len, lo + p.chunk);
        int src_base, dst_base;
        coords_offsets(r, src_base, dst_base);
        if (PHASE == SCAN_CHUNKS) {
            uint acc = identity_acc();
            for (uint j = lo; j < hi; ++j)
                acc = add_acc(acc, load_acc(src_base + int(j) * p.src_step));
            ARENA_AT(SLOT_sums_start, p.sums_start + r * stride + k) = acc;
        } else if (PHASE == SCAN_WRITE) {
            uint acc = p.nchunks > 1u ? ARENA_AT(SLOT_sums_start, p.sums_start + r * stride + k) : identity_acc();
            for (uint j = lo; j < hi; ++j) {
                acc = add_acc(acc, load_acc(src_base + int(j) * p.src_step));
                ARENA_AT(SLOT_dst_start, uint(int(p.dst_start) + dst_base + int(j) * p.dst_step)) = acc;
            }
        } else {  // SCAN_COMPACT
            uint pos = ARENA_AT(SLOT_sums_start, p.sums_start + k);
            for (uint j = lo; j < hi; ++j) {
                if (load_i32(SRC_DT, SLOT_src_start, p.src_start, int(j)) == 0) continue;
                int unused, off;
                coords_offsets(j, unused, off);
                ARENA_AT(SLOT_dst_start, p.dst_start + pos) = uint(off);
                pos += 1u;
            }
        }
    }
}
