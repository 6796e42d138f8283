#version 450
#extension GL_GOOGLE_include_directive : require
// Batched C[b] = A[b] @ B[b]: A is M x K, B is K x N, C is a fresh row-major (batch, M, N) array.
// A and B are read through arbitrary element strides (a transposed or broadcast view needs no
// copy; broadcast batch dims have stride 0) and any dtype (specialization constants); products
// accumulate in f32 and are converted once to the output dtype (integers too: exact while
// partial sums stay below 2^24).
//
// Two kernels, chosen per device by vkgrad/ops/linalg.py:
// - The tiled GEMM (default; GPUs). Every size is a specialization constant that linalg.py
//   picks from the device's limits (kernels.MATMUL_TILES names the tiles): a workgroup of
//   WG = (BM / TM) (BN / TN) threads computes a BM x BN output tile, K advancing in BK-deep
//   slices staged through shared memory. Threads form warps of WARP lanes (the device's
//   subgroup size), each warp a WM x WN warp tile (WARP_N lanes along N), each lane TM x TN
//   outputs held in registers: TM / 4 groups of 4 rows and TN / 4 groups of 4 columns, the
//   groups WARP_M x 4 rows and WARP_N x 4 columns apart, so that a warp's lanes read consecutive
//   vec4s of shared memory (or the same one) and write consecutive 16-byte runs of C.
//   Operand layouts (A_AXIS, B_AXIS): each operand's slice is read along its contiguous axis,
//   K for A in NN and NT (a row-major A), M for A in TN (A = X^T, X row-major), N for B in NN
//   and TN, K for B in NT (B = W^T), 4 consecutive elements per lane, consecutive lanes on
//   consecutive vectors: coalesced in every layout. A_LOAD / B_LOAD say how the 4 are read: as
//   one vector of words (uvec4 for 32-bit dtypes, uvec2 for bf16, one word for 8-bit dtypes)
//   where the operand's start and other strides keep vectors 16-, 8- or 4-byte aligned; else
//   one word at a time, each word once (packed bf16 is never read an element per load); or,
//   for an operand with no unit stride, an element at a time.
//   Shared memory holds both slices as f32, k-major (a row of BM, or BN, values per k), each
//   row padded by MATMUL_PAD floats: slices read along K are stored transposed, 4 scalar
//   stores per lane, and with 2 lanes per row per pass the pad puts a warp's 32 stores of one
//   component in 32 different banks (16 rows x 2 k's: bank = 16 kq + row, mod 32); slices read
//   along M or N are stored as whole vec4s. The next slice is loaded into registers while the
//   current one is multiplied (register prefetch: two barriers per slice, one shared buffer).
// - DIRECT (CPU devices such as lavapipe, where it measured faster): each invocation computes
//   its own TM x TN block straight from memory, with no shared memory and no barriers. A CPU
//   driver runs a workgroup's invocations as SIMD lanes on one core, switching between them at
//   every barrier, and the CPU's own caches do the staging.
// With CONV defined (either kernel), the implicit GEMM of a convolution (vkgrad/ops/conv.py):
//   C = epilogue(W @ cols(x)) for W the O x K weights (A) and B = cols(x), the K x N column
//   matrix of an NCHW image x, which is never stored: B's loader reads
//   cols[(c, i, j), (oh, ow, n)] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] (0 in the
//   padding) straight from x (the batch innermost along N, as the explicit columns), and the
//   epilogue adds bias[row] and applies max(., 0) (flags) in f32 before the one rounding. With
//   FLAG_COLS_T, B = cols(x)^T instead (N x K: the weight gradient G @ cols^T, K = (oh, ow, n)).
//   With FLAG_GRAD_X, the input gradient dx = W' @ B, W' the C x (O kH kW) weights (o, i, j)
//   along K, as the transposed convolution: x is the upstream gradient G (O, OH*OW*N) viewed
//   as an image (N, O, OH, OW) (the push's H, W are OH, OW and its OH, OW are dx's H, W) and
//   B[(o, i, j), (h, w, n)] = G[n, o, oh, ow] where h + ph - i*dh = oh*sh and w + pw - j*dw =
//   ow*sw with 0 <= oh < OH, 0 <= ow < OW, else 0; the (C, H*W*N) result is dx batch-last.
//   The tiled kernel reads B along N (B_AXIS = AXIS_MN), an element at a time. The batch dim
//   is split-K: entry b multiplies A's and B's b-th K chunk of p.K terms into C[b].
#include "common.glsl"

layout(constant_id = SPEC_OUT_DT) const uint OUT_DT = 0u;
layout(constant_id = SPEC_A_DT) const uint A_DT = 0u;
layout(constant_id = SPEC_B_DT) const uint B_DT = 0u;

// Push constants, MAXB (batch dims after coalescing, padded in front with size 1, stride 0),
// WG and the CONV variants' FLAG_* (kernels.CONV_GEMM_FLAGS) come from vkgrad/kernels.py.
#ifdef CONV
#include "matmul_conv_layout.glsl"
#define BATCHES p.splits
#else
#include "matmul_layout.glsl"
#define BATCHES (p.batch[0] * p.batch[1] * p.batch[2])
#endif

// Bits of an accumulated result as an element of dt. Integer products accumulate exactly in f32
// (within 2^24) and wrap to a narrower output as integers do, as numpy's: uint8 is mod 256, not
// saturated like a float cast.
uint result_bits(uint dt, float v) {
    if (dt == DT_FLOAT32 || dt == DT_BFLOAT16 || dt == DT_BOOL) return f32_to_bits(dt, v);
    return i32_to_bits(dt, f32_to_i32(v));
}

// Write columns col..col+3 of one output row, starting at element e of the output's chunk. Words wholly inside the four
// are stored plainly; a word shared with a neighbour's columns (odd N with bf16, edges) is
// updated bit-field by bit-field with atomics, so no neighbouring write is lost.
void store4(uint e, uint col, vec4 v) {
    uint dt = OUT_DT, per = elems_per_word(dt);
    if (e % per == 0u && col + 4u <= p.N) {
        for (uint w = 0u; w < 4u; w += per) {
            uint word = 0u;
            for (uint q = 0u; q < per; ++q) word |= place_bits(dt, result_bits(dt, v[w + q]), q);
            ARENA_AT(SLOT_out_start, (e + w) / per) = word;
        }
        return;
    }
    [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        if (col + c >= p.N) break;
        uint bits = result_bits(dt, v[c]);
        if (per == 1u) {
            ARENA_AT(SLOT_out_start, e + c) = bits;
        } else {
            uint width = 32u / per, mask = ((1u << width) - 1u) << (((e + c) % per) * width);
            atomicAnd(ARENA_AT(SLOT_out_start, (e + c) / per), ~mask);
            atomicOr(ARENA_AT(SLOT_out_start, (e + c) / per), place_bits(dt, bits, e + c));
        }
    }
}

// Element offsets of batch entry `bi` in A and B (with CONV: in A, and B's first k).
void batch_offsets(uint bi, out int a_base, out int b_base) {
    a_base = 0;
    b_base = 0;
#ifdef CONV
    a_base = int(bi * p.K) * p.a_sk;
    b_base = int(bi * p.K);
#else
    for (int d = MAXB - 1, rest = int(bi); d >= 0; --d) {
        int c = rest % int(p.batch[d]);
        rest /= int(p.batch[d]);
        a_base += c * p.a_sb[d];
        b_base += c * p.b_sb[d];
    }
#endif
}

// The values stored for output row `row`: with CONV, plus the bias and through the ReLU
// (NaN stays NaN, as elementwise.comp's relu).
vec4 epilogue(uint row, vec4 v) {
#ifdef CONV
    if ((p.flags & FLAG_BIAS) != 0u) v += load_f32(p.bias_dt, SLOT_bias_start, p.bias_start, int(row) * p.bias_s);
    if ((p.flags & FLAG_RELU) != 0u)
        [[unroll]] for (uint c = 0u; c < 4u; ++c) v[c] = f32_is_nan(v[c]) ? v[c] : max(v[c], 0.0);
#endif
    return v;
}

#ifdef CONV
// Column `col` = (oh, ow, n) of cols(x): the offset in x of its window's tap (0, 0) (outside x
// where the window starts in the padding) and that tap's pixel (h, w).
int window_of(uint col, out ivec2 at) {
    uint t = col / p.NB;
    at = ivec2(int((t / p.OW) * p.sh) - int(p.ph), int((t % p.OW) * p.sw) - int(p.pw));
    return int(col % p.NB) * p.xs[0] + at.x * p.xs[2] + at.y * p.xs[3];
}

// Row `k` = (c, i, j) of cols(x): its offset in x from a window's tap (0, 0), and its pixel's.
int tap_of(uint k, out ivec2 d) {
    uint taps = p.kh * p.kw, r = k % taps;
    d = ivec2(int((r / p.kw) * p.dh), int((r % p.kw) * p.dw));
    return int(k / taps) * p.xs[1] + d.x * p.xs[2] + d.y * p.xs[3];
}

// The next tap after (i, j) = ij (j fastest, then i, then c), its offset and pixel stepped
// along: the DIRECT kernel's k loop divides nothing (integer division is slow on CPU devices;
// FLAG_GRAD_X's does, the implicit input gradient being a GPU's path).
void next_tap(inout uvec2 ij, inout int off, inout ivec2 d) {
    ij.y += 1u;
    off += int(p.dw) * p.xs[3];
    d.y += int(p.dw);
    if (ij.y < p.kw) return;
    ij.y = 0u;
    off += int(p.dh) * p.xs[2] - d.y * p.xs[3];
    d = ivec2(d.x + int(p.dh), 0);
    if (++ij.x < p.kh) return;
    ij.x = 0u;
    off += p.xs[1] - d.x * p.xs[2];
    d.x = 0;
}

// The next window after (n, ow) = nw (n fastest, then ow, then oh), its offset and pixel
// stepped along (FLAG_COLS_T's k loop, likewise).
void next_window(inout uvec2 nw, inout int base, inout ivec2 at) {
    base += p.xs[0];
    if (++nw.x < p.NB) return;
    nw.x = 0u;
    base += int(p.sw) * p.xs[3] - int(p.NB) * p.xs[0];
    at.y += int(p.sw);
    if (++nw.y < p.OW) return;
    nw.y = 0u;
    base += int(p.sh) * p.xs[2] - int(p.OW * p.sw) * p.xs[3];
    at += ivec2(int(p.sh), -int(p.OW * p.sw));
}

// FLAG_GRAD_X's column `col` = (h, w, n) of B: the offset of its batch entry in G and its
// pixel shifted by the padding, (h + ph, w + pw).
int grad_window_of(uint col, out ivec2 at) {
    uint t = col / p.NB;
    at = ivec2(int(t / p.OW + p.ph), int(t % p.OW + p.pw));
    return int(col % p.NB) * p.xs[0];
}

// FLAG_GRAD_X's row `k` = (o, i, j) of B: the offset of G's channel o and (i*dh, j*dw).
int grad_tap_of(uint k, out ivec2 d) {
    uint taps = p.kh * p.kw, r = k % taps;
    d = ivec2(int((r / p.kw) * p.dh), int((r % p.kw) * p.dw));
    return int(k / taps) * p.xs[1];
}

// B at the column (base, at) and the row (off, d) (FLAG_GRAD_X): G at the output pixel
// (at - d) / stride whose window's tap d is the column's pixel, or 0 where there is none
// (a select around the load of G's first element, as column_value).
float grad_value(int base, ivec2 at, int off, ivec2 d) {
    ivec2 q = at - d, s = ivec2(p.sh, p.sw), o = q / max(s, ivec2(1));
    bool inside = q.x >= 0 && q.y >= 0 && o * s == q && o.x < int(p.H) && o.y < int(p.W);
    float v = load_f32(B_DT, SLOT_b_start, p.b_start, inside ? base + off + o.x * p.xs[2] + o.y * p.xs[3] : 0);
    return inside ? v : 0.0;
}

// cols(x) at the window (base, at) and the tap (off, d): x's pixel, or 0 in the padding. The
// padding loads x's first element and discards it: a select, not a branch around the load
// (a CPU driver runs the invocations as SIMD lanes, where a branch means masked loads).
float column_value(int base, ivec2 at, int off, ivec2 d) {
    ivec2 q = at + d;
    bool inside = q.x >= 0 && q.x < int(p.H) && q.y >= 0 && q.y < int(p.W);
    float v = load_f32(B_DT, SLOT_b_start, p.b_start, inside ? base + off : 0);
    return inside ? v : 0.0;
}
#endif

#ifdef DIRECT
#define TM DIRECT_TM
#define TN DIRECT_TN
layout(local_size_x = WG) in;

// Write one thread's TM x TN block, whose first element is at (row0, col0), to batch entry bi.
void store_block(uint bi, uint row0, uint col0, vec4 acc[TM][TN / 4]) {
    uint out_base = p.out_start + bi * p.M * p.N;
    [[unroll]] for (uint i = 0u; i < TM; ++i) {
        uint row = row0 + i;
        if (row >= p.M) break;
        [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) {
            uint col = col0 + j * 4u;
            if (col < p.N) store4(out_base + row * p.N + col, col, epilogue(row, acc[i][j]));
        }
    }
}

void main() {
    uint blocks_m = (p.M + TM - 1u) / TM, blocks_n = (p.N + TN - 1u) / TN;
    uint n_blocks = blocks_m * blocks_n * BATCHES;
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
#ifdef CONV
        // per column its window (or with FLAG_COLS_T its tap): offset and pixel
        bool cols_t = (p.flags & FLAG_COLS_T) != 0u, grad_x = (p.flags & FLAG_GRAD_X) != 0u;
        ivec2 b_at[TN];
        [[unroll]] for (uint j = 0u; j < TN; ++j) {
            uint col = min(n0 + j, p.N - 1u);
            b_col[j] = grad_x ? grad_window_of(col, b_at[j])
                     : cols_t ? tap_of(col, b_at[j]) : window_of(col, b_at[j]);
        }
#else
        [[unroll]] for (uint j = 0u; j < TN; ++j)
            b_col[j] = b_base + int(min(n0 + j, p.N - 1u)) * p.b_sn;
#endif

        vec4 acc[TM][TN / 4];
        [[unroll]] for (uint i = 0u; i < TM; ++i)
            [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) acc[i][j] = vec4(0.0);
#ifdef CONV
        // row k of B: a tap (or with FLAG_COLS_T a window), stepped along with k
        uint k0 = uint(b_base), taps = p.kh * p.kw;
        ivec2 at;
        int k_off = cols_t ? window_of(k0, at) : tap_of(k0, at);
        uvec2 odometer = cols_t ? uvec2(k0 % p.NB, (k0 / p.NB) % p.OW)
                                : uvec2((k0 % taps) / p.kw, k0 % p.kw);
#endif
        for (uint k = 0u; k < p.K; ++k) {
            int ak = int(k) * p.a_sk;
            vec4 b[TN / 4];
#ifdef CONV
            if (grad_x) {
                ivec2 d;
                int off = grad_tap_of(k, d);
                [[unroll]] for (uint j = 0u; j < TN; ++j)
                    b[j / 4u][j % 4u] = grad_value(b_col[j], b_at[j], off, d);
            } else if (cols_t) {
                [[unroll]] for (uint j = 0u; j < TN; ++j)
                    b[j / 4u][j % 4u] = column_value(k_off, at, b_col[j], b_at[j]);
                next_window(odometer, k_off, at);
            } else {
                [[unroll]] for (uint j = 0u; j < TN; ++j)
                    b[j / 4u][j % 4u] = column_value(b_col[j], b_at[j], k_off, at);
                next_tap(odometer, k_off, at);
            }
#else
            int bk = int(k) * p.b_sk;
            [[unroll]] for (uint j = 0u; j < TN; ++j)
                b[j / 4u][j % 4u] = load_f32(B_DT, SLOT_b_start, p.b_start, b_col[j] + bk);
#endif
            [[unroll]] for (uint i = 0u; i < TM; ++i) {
                float a = load_f32(A_DT, SLOT_a_start, p.a_start, a_row[i] + ak);
                [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) acc[i][j] += a * b[j];
            }
        }
        store_block(bi, m0, n0, acc);
    }
}
#else
// The sizes (linalg.py's _gemm_config keeps them consistent: WG = (BM / TM) (BN / TN), every
// tile size a power of two, TM and TN multiples of 4, BK a multiple of 8, WARP_N dividing
// BN / TN and WARP / WARP_N dividing BM / TM).
layout(local_size_x = WG, local_size_x_id = SPEC_WG) in;
layout(constant_id = SPEC_BM) const uint BM = 64u;
layout(constant_id = SPEC_BN) const uint BN = 64u;
layout(constant_id = SPEC_BK) const uint BK = 16u;
layout(constant_id = SPEC_TM) const uint TM = 4u;
layout(constant_id = SPEC_TN) const uint TN = 4u;
layout(constant_id = SPEC_WARP) const uint WARP = 32u;
layout(constant_id = SPEC_WARP_N) const uint WARP_N = 16u;
layout(constant_id = SPEC_A_AXIS) const uint A_AXIS = AXIS_K;
layout(constant_id = SPEC_A_LOAD) const uint A_LOAD = LOAD_CONTIG;
layout(constant_id = SPEC_B_AXIS) const uint B_AXIS = AXIS_MN;
layout(constant_id = SPEC_B_LOAD) const uint B_LOAD = LOAD_CONTIG;

const uint THREADS = (BM / TM) * (BN / TN);
const uint WARP_M = WARP / WARP_N;              // lanes along M in a warp
const uint WM = WARP_M * TM, WN = WARP_N * TN;  // the warp tile
const uint WARPS_N = BN / WN;
const uint A_ROW = BM / 4u + MATMUL_PAD / 4u;   // vec4s per k row of the staged slices
const uint B_ROW = BN / 4u + MATMUL_PAD / 4u;
const uint B_OFFSET = BK * A_ROW;               // B's slice follows A's
const uint A_VECS = BM * BK / 4u, B_VECS = BN * BK / 4u;  // 4-element vectors per slice
const uint A_LOADS = (A_VECS + THREADS - 1u) / THREADS;   // ... per thread
const uint B_LOADS = (B_VECS + THREADS - 1u) / THREADS;

shared vec4 slices[BK * (A_ROW + B_ROW)];

// The arena's chunks again, as vectors of words (binding 0 aliased; read only through these).
layout(std430, binding = 0) readonly buffer ArenaChunk4 { uvec4 v[]; } arena_chunks4[ARENA_SLOTS];
layout(std430, binding = 0) readonly buffer ArenaChunk2 { uvec2 v[]; } arena_chunks2[ARENA_SLOTS];

// Position of the first element of vector v of a BX x BK slice read along `axis`: (x, k)
// within the slice. Along K two consecutive vectors share a row, then the next row (so a warp
// covers 16 rows x 8 k's, 32 bytes of f32 per row); along M or N vectors run along the row.
uvec2 vector_position(uint axis, uint bx, uint v) {
    if (axis == AXIS_K) return uvec2((v >> 1u) % bx, (((v >> 1u) / bx) * 2u + (v & 1u)) * 4u);
    return uvec2((v % (bx / 4u)) * 4u, v / (bx / 4u));
}

// Elements e, e + step, e + 2 step, e + 3 step (offsets from `start`, in the chunk at `slot`) of
// dt as f32, the first `valid` of them (the rest 0). LOAD_ALIGNED with all 4 valid: one vector of words, e a
// multiple of 4 (step 1); LOAD_CONTIG (step 1): each word once; LOAD_STRIDED: element by element.
vec4 load4(uint dt, uint mode, uint slot, uint start, int e, int step, uint valid) {
    uint per = elems_per_word(dt), i = start + uint(e);
    if (mode == LOAD_ALIGNED && valid == 4u) {
        uint word = i / per;
        if (per == 1u) {
            uvec4 w = arena_chunks4[slot].v[word >> 2u];
            return vec4(bits_to_f32(dt, w.x), bits_to_f32(dt, w.y), bits_to_f32(dt, w.z),
                        bits_to_f32(dt, w.w));
        }
        if (per == 2u) {
            uvec2 w = arena_chunks2[slot].v[word >> 1u];
            return vec4(bf16_to_f32(w.x & 0xffffu), bf16_to_f32(w.x >> 16u),
                        bf16_to_f32(w.y & 0xffffu), bf16_to_f32(w.y >> 16u));
        }
        uint w = ARENA_AT(slot, i >> 2u);
        return vec4(bits_to_f32(dt, w & 0xffu), bits_to_f32(dt, (w >> 8u) & 0xffu),
                    bits_to_f32(dt, (w >> 16u) & 0xffu), bits_to_f32(dt, w >> 24u));
    }
    vec4 v = vec4(0.0);
    if (mode == LOAD_STRIDED) {
        [[unroll]] for (uint c = 0u; c < 4u; ++c)
            if (c < valid) v[c] = load_f32(dt, slot, start, e + int(c) * step);
        return v;
    }
    uint width = 32u / per, mask = per == 1u ? 0xffffffffu : (1u << width) - 1u;
    uint w = i / per, word = valid > 0u ? ARENA_AT(slot, w) : 0u;
    [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        if (c >= valid) break;
        if ((i + c) / per != w) {
            w = (i + c) / per;
            word = ARENA_AT(slot, w);
        }
        v[c] = bits_to_f32(dt, (word >> (((i + c) % per) * width)) & mask);
    }
    return v;
}

// Vector v of the BX x BK slice at (x0, k0) of an operand with X rows (M or N) and K columns,
// element (x, k) at base + x s_x + k s_k: zero beyond the operand's edges.
vec4 load_vector(uint dt, uint axis, uint mode, uint slot, uint start, int base, int s_x, int s_k, uint x0,
                 uint x_len, uint k0, uint bx, uint v) {
    uvec2 at = vector_position(axis, bx, v);
    uint gx = x0 + at.x, gk = k0 + at.y;
    uint valid = axis == AXIS_K ? (gx < x_len && gk < p.K ? min(p.K - gk, 4u) : 0u)
                                : (gk < p.K && gx < x_len ? min(x_len - gx, 4u) : 0u);
    int e = base + int(gx) * s_x + int(gk) * s_k;
    return load4(dt, mode, slot, start, e, axis == AXIS_K ? s_k : s_x, valid);
}

#ifdef CONV
// Vector v of the BN x BK slice at (n0, k0) of B (cols(x), or cols(x)^T), read along N
// (B_AXIS = AXIS_MN): the 4 columns from (n0 + x, k0 + k) on, k counted from B's first k kb,
// zero beyond the edges and in the padding.
vec4 column_vector(uint n0, uint kb, uint k0, uint v) {
    uvec2 at = vector_position(AXIS_MN, BN, v);
    uint gx = n0 + at.x, gk = k0 + at.y;
    vec4 r = vec4(0.0);
    if (gk >= p.K) return r;
    ivec2 d, w;
    if ((p.flags & FLAG_GRAD_X) != 0u) {
        int off = grad_tap_of(kb + gk, d);
        [[unroll]] for (uint c = 0u; c < 4u; ++c) {
            if (gx + c >= p.N) break;
            int base = grad_window_of(gx + c, w);
            r[c] = grad_value(base, w, off, d);
        }
        return r;
    }
    if ((p.flags & FLAG_COLS_T) != 0u) {
        int base = window_of(kb + gk, w);
        [[unroll]] for (uint c = 0u; c < 4u; ++c) {
            if (gx + c >= p.N) break;
            int off = tap_of(gx + c, d);
            r[c] = column_value(base, w, off, d);
        }
        return r;
    }
    int off = tap_of(kb + gk, d);
    [[unroll]] for (uint c = 0u; c < 4u; ++c) {
        if (gx + c >= p.N) break;
        int base = window_of(gx + c, w);
        r[c] = column_value(base, w, off, d);
    }
    return r;
}
#define LOAD_B(k0, v) column_vector(n0, uint(b_base), k0, v)
#else
#define LOAD_B(k0, v) load_vector(B_DT, B_AXIS, B_LOAD, SLOT_b_start, p.b_start, b_base, p.b_sn, p.b_sk, n0, \
                                  p.N, k0, BN, v)
#endif

// Put vector v (as load_vector placed it) into the slice at `offset` of shared memory, k-major
// with `row` vec4s per k.
void stage(uint offset, uint row, uint axis, uint bx, uint v, vec4 value) {
    uvec2 at = vector_position(axis, bx, v);
    if (axis == AXIS_K) {
        [[unroll]] for (uint c = 0u; c < 4u; ++c)
            slices[offset + (at.y + c) * row + at.x / 4u][at.x % 4u] = value[c];
    } else {
        slices[offset + at.y * row + at.x / 4u] = value;
    }
}

void main() {
    uint t = gl_LocalInvocationID.x;
    uint warp = t / WARP, lane = t % WARP;
    uint wm = warp / WARPS_N, wn = warp % WARPS_N, lm = lane / WARP_N, ln = lane % WARP_N;
    // this lane's first vec4 of a k row of each slice; its groups follow WARP_M (WARP_N) apart
    uint a_first = wm * (WM / 4u) + lm, b_first = B_OFFSET + wn * (WN / 4u) + ln;
    uint tiles_m = (p.M + BM - 1u) / BM, tiles_n = (p.N + BN - 1u) / BN;
    uint n_tiles = tiles_m * tiles_n * BATCHES;
    uint n_slices = (p.K + BK - 1u) / BK;

    for (uint tile = gl_WorkGroupID.x; tile < n_tiles; tile += gl_NumWorkGroups.x) {
        uint bi = tile / (tiles_m * tiles_n), r = tile % (tiles_m * tiles_n);
        uint m0 = (r / tiles_n) * BM, n0 = (r % tiles_n) * BN;
        int a_base, b_base;
        batch_offsets(bi, a_base, b_base);

        vec4 acc[TM][TN / 4u];
        [[unroll]] for (uint i = 0u; i < TM; ++i)
            [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) acc[i][j] = vec4(0.0);
        vec4 a_next[A_LOADS], b_next[B_LOADS];  // the next slice, on its way from memory
        [[unroll]] for (uint i = 0u; i < A_LOADS; ++i)
            if (t + i * THREADS < A_VECS && n_slices > 0u)
                a_next[i] = load_vector(A_DT, A_AXIS, A_LOAD, SLOT_a_start, p.a_start, a_base, p.a_sm, p.a_sk,
                                        m0, p.M, 0u, BM, t + i * THREADS);
        [[unroll]] for (uint i = 0u; i < B_LOADS; ++i)
            if (t + i * THREADS < B_VECS && n_slices > 0u) b_next[i] = LOAD_B(0u, t + i * THREADS);

        for (uint s = 0u; s < n_slices; ++s) {
            barrier();  // everyone is done reading the previous slice
            [[unroll]] for (uint i = 0u; i < A_LOADS; ++i)
                if (t + i * THREADS < A_VECS)
                    stage(0u, A_ROW, A_AXIS, BM, t + i * THREADS, a_next[i]);
            [[unroll]] for (uint i = 0u; i < B_LOADS; ++i)
                if (t + i * THREADS < B_VECS)
                    stage(B_OFFSET, B_ROW, B_AXIS, BN, t + i * THREADS, b_next[i]);
            barrier();
            if (s + 1u < n_slices) {
                uint k0 = (s + 1u) * BK;
                [[unroll]] for (uint i = 0u; i < A_LOADS; ++i)
                    if (t + i * THREADS < A_VECS)
                        a_next[i] = load_vector(A_DT, A_AXIS, A_LOAD, SLOT_a_start, p.a_start, a_base, p.a_sm,
                                                p.a_sk, m0, p.M, k0, BM, t + i * THREADS);
                [[unroll]] for (uint i = 0u; i < B_LOADS; ++i)
                    if (t + i * THREADS < B_VECS) b_next[i] = LOAD_B(k0, t + i * THREADS);
            }
            [[unroll]] for (uint k = 0u; k < BK; ++k) {
                vec4 a[TM / 4u], b[TN / 4u];
                [[unroll]] for (uint i = 0u; i < TM / 4u; ++i)
                    a[i] = slices[k * A_ROW + a_first + i * WARP_M];
                [[unroll]] for (uint j = 0u; j < TN / 4u; ++j)
                    b[j] = slices[k * B_ROW + b_first + j * WARP_N];
                [[unroll]] for (uint i = 0u; i < TM; ++i)
                    [[unroll]] for (uint j = 0u; j < TN / 4u; ++j)
                        acc[i][j] = fma(vec4(a[i / 4u][i % 4u]), b[j], acc[i][j]);
            }
        }

        uint out_base = p.out_start + bi * p.M * p.N;
        [[unroll]] for (uint i = 0u; i < TM; ++i) {
            uint row = m0 + wm * WM + (i / 4u) * (WARP_M * 4u) + lm * 4u + i % 4u;
            [[unroll]] for (uint j = 0u; j < TN / 4u; ++j) {
                uint col = n0 + wn * WN + j * (WARP_N * 4u) + ln * 4u;
                if (row < p.M && col < p.N)
                    store4(out_base + row * p.N + col, col, epilogue(row, acc[i][j]));
            }
        }
    }
}
#endif
