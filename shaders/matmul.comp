#version 450
#extension GL_GOOGLE_include_directive : require
// Batched C[b] = A[b] @ B[b]: A is M x K, B is K x N, C is a fresh row-major (batch, M, N) array.
// A and B are read through arbitrary element strides (a transposed or broadcast view needs no
// copy; broadcast batch dims have stride 0) and any dtype (specialization constants); products
// accumulate in f32 and are converted once to the output dtype (integers too: exact while
// partial sums stay below 2^24).
//
// Two ways to compute, chosen per device (vkgrad/ops/linalg.py):
// - Tiled (GPUs): each 256-thread workgroup computes one BM x BN output tile, its threads
//   arranged TY x TX; each thread a TM x TN micro-tile of registers (adjacent columns, so packed
//   outputs are written as whole words where possible). Variants (kernels.MATMUL_TILES) differ
//   only in BM, BN and TY: square tiles for large products, flat or tall ones for the skinny
//   products of convolutions. K advances in BK-deep slices staged through shared memory.
// - DIRECT (CPU devices such as lavapipe): each invocation computes its own TM x TN block
//   straight from memory, with no shared memory and no barriers. A CPU driver runs a workgroup's
//   invocations as SIMD lanes on one core, switching between them at every barrier, so staging
//   through shared memory cost far more than it saved (0.3 GFLOP/s against several with DIRECT);
//   the CPU's own caches do the staging.
#include "common.glsl"

#ifdef DIRECT
#define TM DIRECT_TM
#define TN DIRECT_TN
#else
// BM, BN, TY come from the variant's defines (vkgrad/kernels.py, which linalg.py sizes the grid by)
#define TX (256 / TY)        // threads along a tile row
#define TM (BM / TY)         // rows per thread (a multiple of 4)
#define TN (BN / TX)         // columns per thread (a multiple of 4)
#define BK 16
#endif
layout(local_size_x = 256) in;

#define MAXB 3               // batch dims (after coalescing; padded with size 1, stride 0)
layout(constant_id = 0) const uint OUT_DT = 0u;
layout(constant_id = 1) const uint A_DT = 0u;
layout(constant_id = 2) const uint B_DT = 0u;

layout(push_constant) uniform Params {
    uint out_start; uint a_start; uint b_start;
    uint M; uint N; uint K;
    int a_sm; int a_sk; int b_sk; int b_sn;
    uint batch[MAXB]; int a_sb[MAXB]; int b_sb[MAXB];
} p;

// Bits of an accumulated result as an element of dt. Integer products accumulate exactly in f32
// (within 2^24) and wrap to a narrower output as integers do, as numpy's: uint8 is mod 256, not
// saturated like a float cast.
uint result_bits(uint dt, float v) {
    if (dt == DT_FLOAT32 || dt == DT_BFLOAT16 || dt == DT_BOOL) return f32_to_bits(dt, v);
    return i32_to_bits(dt, f32_to_i32(v));
}

// Write columns col..col+3 of one output row, starting at element e. Words wholly inside the four
// are stored plainly; a word shared with a neighbour's columns (odd N with bf16, edges) is
// updated bit-field by bit-field with atomics, so no neighbouring write is lost.
void store4(uint e, uint col, vec4 v) {
    uint dt = OUT_DT, per = elems_per_word(dt);
    if (e % per == 0u && col + 4u <= p.N) {
        for (uint w = 0u; w < 4u; w += per) {
            uint word = 0u;
            for (uint q = 0u; q < per; ++q) word |= place_bits(dt, result_bits(dt, v[w + q]), q);
            arena[(e + w) / per] = word;
        }
        return;
    }
    [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        if (col + c >= p.N) break;
        uint bits = result_bits(dt, v[c]);
        if (per == 1u) {
            arena[e + c] = bits;
        } else {
            uint width = 32u / per, mask = ((1u << width) - 1u) << (((e + c) % per) * width);
            atomicAnd(arena[(e + c) / per], ~mask);
            atomicOr(arena[(e + c) / per], place_bits(dt, bits, e + c));
        }
    }
}

// Element offsets of batch entry `bi` in A and B.
void batch_offsets(uint bi, out int a_base, out int b_base) {
    a_base = 0;
    b_base = 0;
    for (int d = MAXB - 1, rest = int(bi); d >= 0; --d) {
        int c = rest % int(p.batch[d]);
        rest /= int(p.batch[d]);
        a_base += c * p.a_sb[d];
        b_base += c * p.b_sb[d];
    }
}

// Write one thread's TM x TN block, whose first element is at (row0, col0), to batch entry bi.
void store_block(uint bi, uint row0, uint col0, vec4 acc[TM][TN / 4]) {
    uint out_base = p.out_start + bi * p.M * p.N;
    [[unroll]] for (uint i = 0u; i < TM; ++i) {
        uint row = row0 + i;
        if (row >= p.M) break;
        [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) {
            uint col = col0 + j * 4u;
            if (col < p.N) store4(out_base + row * p.N + col, col, acc[i][j]);
        }
    }
}

#ifdef DIRECT
void main() {
    uint blocks_m = (p.M + TM - 1u) / TM, blocks_n = (p.N + TN - 1u) / TN;
    uint n_blocks = blocks_m * blocks_n * p.batch[0] * p.batch[1] * p.batch[2];
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint block = gl_GlobalInvocationID.x; block < n_blocks; block += threads) {
        uint bi = block / (blocks_m * blocks_n), r = block % (blocks_m * blocks_n);
        uint m0 = (r / blocks_n) * TM, n0 = (r % blocks_n) * TN;
        int a_base, b_base;
        batch_offsets(bi, a_base, b_base);
        // Rows and columns past the edge read the last valid one (and are never stored), so the
        // k loop has no bounds checks.
        int a_row[TM], b_col[TN];
        [[unroll]] for (uint i = 0u; i < TM; ++i)
            a_row[i] = a_base + int(min(m0 + i, p.M - 1u)) * p.a_sm;
        [[unroll]] for (uint j = 0u; j < TN; ++j)
            b_col[j] = b_base + int(min(n0 + j, p.N - 1u)) * p.b_sn;

        vec4 acc[TM][TN / 4];
        [[unroll]] for (uint i = 0u; i < TM; ++i)
            [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) acc[i][j] = vec4(0.0);
        for (uint k = 0u; k < p.K; ++k) {
            int ak = int(k) * p.a_sk, bk = int(k) * p.b_sk;
            vec4 b[TN / 4];
            [[unroll]] for (uint j = 0u; j < TN; ++j)
                b[j / 4u][j % 4u] = load_f32(B_DT, p.b_start, b_col[j] + bk);
            [[unroll]] for (uint i = 0u; i < TM; ++i) {
                float a = load_f32(A_DT, p.a_start, a_row[i] + ak);
                [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) acc[i][j] += a * b[j];
            }
        }
        store_block(bi, m0, n0, acc);
    }
}
#else
// Staged slices: 4 consecutive rows of A (columns of B) per vec4, so the inner loop reads vec4s.
shared vec4 As[BK][BM / 4];
shared vec4 Bs[BK][BN / 4];

void main() {
    uint t = gl_LocalInvocationID.x;
    uint tx = t % uint(TX), ty = t / uint(TX);
    uint tiles_m = (p.M + BM - 1u) / BM, tiles_n = (p.N + BN - 1u) / BN;
    uint n_batch = p.batch[0] * p.batch[1] * p.batch[2];
    uint n_tiles = tiles_m * tiles_n * n_batch;

    for (uint tile = gl_WorkGroupID.x; tile < n_tiles; tile += gl_NumWorkGroups.x) {
        uint bi = tile / (tiles_m * tiles_n), r = tile % (tiles_m * tiles_n);
        uint m0 = (r / tiles_n) * BM, n0 = (r % tiles_n) * BN;
        int a_base, b_base;
        batch_offsets(bi, a_base, b_base);
        vec4 acc[TM][TN / 4];
        [[unroll]] for (uint i = 0u; i < TM; ++i)
            [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) acc[i][j] = vec4(0.0);

        for (uint k0 = 0u; k0 < p.K; k0 += BK) {
            // Stage A[m0:m0+BM, k0:k0+BK] and B[k0:k0+BK, n0:n0+BN], zero outside the matrices.
            for (uint l = t; l < BK * BM / 4u; l += 256u) {
                uint k = l % BK, mq = l / BK, gk = k0 + k;
                vec4 v = vec4(0.0);
                [[unroll]] for (uint q = 0u; q < 4u; ++q) {
                    uint gm = m0 + mq * 4u + q;
                    if (gm < p.M && gk < p.K)
                        v[q] = load_f32(A_DT, p.a_start,
                                        a_base + int(gm) * p.a_sm + int(gk) * p.a_sk);
                }
                As[k][mq] = v;
            }
            for (uint l = t; l < BK * BN / 4u; l += 256u) {
                uint nq = l % (BN / 4u), k = l / (BN / 4u), gk = k0 + k;
                vec4 v = vec4(0.0);
                [[unroll]] for (uint q = 0u; q < 4u; ++q) {
                    uint gn = n0 + nq * 4u + q;
                    if (gn < p.N && gk < p.K)
                        v[q] = load_f32(B_DT, p.b_start,
                                        b_base + int(gk) * p.b_sk + int(gn) * p.b_sn);
                }
                Bs[k][nq] = v;
            }
            barrier();
            for (uint k = 0u; k < BK; ++k) {  // forced unrolling made lavapipe slower
                vec4 a[TM / 4], b[TN / 4];
                [[unroll]] for (uint i = 0u; i < TM / 4u; ++i) a[i] = As[k][ty * (TM / 4u) + i];
                [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) b[j] = Bs[k][tx * (TN / 4u) + j];
                [[unroll]] for (uint i = 0u; i < TM; ++i)
                    [[unroll]] for (uint j = 0u; j < TN / 4u; ++j)
                        acc[i][j] += a[i / 4u][i % 4u] * b[j];
            }
            barrier();
        }

        store_block(bi, m0 + ty * TM, n0 + tx * TN, acc);
    }
}
#endif
