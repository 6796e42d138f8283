#version 450
#extension GL_GOOGLE_include_directive : require
// Row kernels: softmax, log-softmax, layer norm and cross-entropy, forward and backward, each in
// one dispatch (cross-entropy's "mean"/"sum": a second, one-workgroup dispatch adds the rows up).
// vkgrad/ops/rownorm.py launches them.
//
// Layout: every row operand (x, g, out) is a contiguous [outer, n, inner] block; row r (of
// rows = outer * inner) is (o, i) = (r / inner, r % inner) and its element j lies at
// o * n * inner + i + j * inner from the operand's start (the class axis of [N, C, d...] logits,
// the last axis of softmax over axis -1 has inner = 1). GROUP threads (a power of two) share a
// row; a workgroup takes WG / GROUP consecutive rows. A thread visits j = lane, lane + GROUP, ...
// with an index increment: no division or modulo per element.
//
// Row statistics are reduced across the row's threads by group_sum / group_max: with SUBGROUPS,
// subgroupAdd / subgroupMax within each subgroup (then the GROUP / gl_SubgroupSize partial results
// through shared memory), which needs GROUP == 1 or GROUP >= gl_SubgroupSize (rownorm.py picks
// GROUP so); without, a shared-memory tree. Maxima propagate NaN (tested by the bits).
//
// Softmax statistics of a row, online (one read): each thread keeps m, its largest x, and
// s = sum exp(x - m), rescaling s by exp(m - x) when a larger x arrives; the group combines them
// into M = max m and S = sum s exp(m - M). Threads that saw only -inf add nothing. As
// exp(x - M) / S would on the row itself, S is NaN when M is NaN or +inf, and a row of -inf gives
// M = -inf, S = 0, so NaN outputs: the results of the composite x - max, exp, sum, divide.
//   SOFTMAX          out = exp(x - M) / S
//   LOG_SOFTMAX      out = x - M - log S
//   LAYER_NORM       mean = sum x / n, var = sum (x - mean)^2 / n (two passes), rstd =
//                    1 / sqrt(var + eps), out = (x - mean) rstd w + b (w, b per j; DT_IMM when
//                    absent: 1 and 0); FLAG_STATS: (mean, rstd) of row r to aux[2r], aux[2r + 1]
//   SOFTMAX_BACK     p = softmax(x), out = p (g - sum g p)
//   LOG_SOFTMAX_BACK out = g - p sum g
//   LAYER_NORM_BACK  xhat = (x - mean) rstd from aux, gy = g w, out = rstd (gy - sum gy / n
//                    - xhat sum(gy xhat) / n); FLAG_GXHAT: g xhat to the float32 rows at side
//   CROSS_ENTROPY    target t of row r (T_DT at t_start + r), class weights w (DT_IMM: 1),
//                    smoothing s: loss = (1 - s) w[t] ((M - x[t]) + log S)
//                    + s / n (sum_c w[c] (M - x[c]) + sum_c w[c] log S), lse - x[c] with M
//                    subtracted first (lse = M + log S rounds to M at |M| > 2^24 log S: a row
//                    of equal 1e30 logits then gives log n, not 0), and weight w[t], both 0 where
//                    t == ignore_index; to out[r] (reduction "none"), else as float32 pairs to
//                    aux[2r], aux[2r + 1]. A t outside [0, n) (not ignore_index) counts as
//                    ignored and, in the ERROR_WORD variants (the only ones rownorm.py runs
//                    these modes in), writes error_code to the staging buffer's error word:
//                    the other variants never touch staging, which the validation layer's
//                    synchronisation checks count per binding a module uses.
//   CE_FINISH        one workgroup: L = sum aux[2r], W = sum aux[2r + 1] over the rows; out = L / W
//                    ("mean", FLAG_MEAN) or L, and W (float32) to side
//   CE_BACK          scale = g[r] ("none") or g[0] (/ W from aux[0] for "mean"); out[r, j] =
//                    scale ((1 - s) w[t] (p_j - [j == t]) + s / n (p_j sum_c w[c] - w[j])),
//                    0 where t is ignored
// Everything in float32; each output rounds once to OUT_DT. bf16 outputs are written a whole word
// per thread inside a row, and with 16-bit atomic and/or where a word holds elements of two rows.
#if defined(SUBGROUPS)
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_vote : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"

#include "rownorm_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

#define NEG_INF uintBitsToFloat(0xff800000u)
#define POS_INF uintBitsToFloat(0x7f800000u)
#define NAN uintBitsToFloat(0x7fc00000u)

shared float red[WG];
uint seg, lane;       // this thread's row within the workgroup, and its place in the row
int row_base;         // the row's first element, relative to every row operand's start
float st0, st1, st2, st3;  // the row's statistics (per mode)
int target;           // cross-entropy: the row's class, or -1 where ignored

float max_nan(float a, float b) { return f32_is_nan(a) ? a : (f32_is_nan(b) ? b : max(a, b)); }

#if defined(SUBGROUPS)
// the GROUP / gl_SubgroupSize partial results of a row's subgroups, combined in shared memory
float across_subgroups(float v, bool is_max) {
    if (subgroupElect()) red[gl_SubgroupID] = v;
    barrier();
    uint k = GROUP / gl_SubgroupSize, first = seg * k;
    float r = red[first];
    for (uint i = 1u; i < k; ++i) r = is_max ? max_nan(r, red[first + i]) : r + red[first + i];
    barrier();
    return r;
}

float group_sum(float v) {
    if (GROUP == 1u) return v;
    v = subgroupAdd(v);
    return GROUP == gl_SubgroupSize ? v : across_subgroups(v, false);
}

float group_max(float v) {
    if (GROUP == 1u) return v;
    bool nan = subgroupAny(f32_is_nan(v));
    v = subgroupMax(v);
    v = nan ? NAN : v;
    return GROUP == gl_SubgroupSize ? v : across_subgroups(v, true);
}
#else
float group_reduce(float v, bool is_max) {
    uint pos = seg * GROUP + lane;
    red[pos] = v;
    barrier();
    [[unroll]] for (uint s = GROUP >> 1; s > 0u; s >>= 1) {
        if (lane < s) red[pos] = is_max ? max_nan(red[pos], red[pos + s]) : red[pos] + red[pos + s];
        barrier();
    }
    float r = red[pos - lane];
    barrier();
    return r;
}

float group_sum(float v) { return group_reduce(v, false); }
float group_max(float v) { return group_reduce(v, true); }
#endif

float load_x(uint j) { return load_f32(X_DT, SLOT_x_start, p.x_start, row_base + int(j * p.inner)); }
float load_g(uint j) { return load_f32(G_DT, SLOT_g_start, p.g_start, row_base + int(j * p.inner)); }
float weight(uint j) { return load_f32(W_DT, SLOT_w_start, p.w_start, int(j)); }

// st0 = M, st1 = S of the row (see the top), every thread of the group.
void softmax_stats(bool live) {
    float m = NEG_INF, s = 0.0;
    if (live) {
        for (uint j = lane; j < p.n; j += GROUP) {
            float x = load_x(j);
            if (x > m) {
                s = s * exp(m - x) + 1.0;
                m = x;
            } else if (f32_is_nan(x)) {
                m = x;
            } else if (m != NEG_INF) {
                s += exp(x - m);
            }
        }
    }
    float big = group_max(m);
    float total = group_sum(m == NEG_INF ? 0.0 : s * exp(m - big));
    st0 = big;
    st1 = (f32_is_nan(big) || big == POS_INF) ? NAN : total;
}

// The row's sum of f(j) over its elements, f chosen by `what`.
#define ROW_SUM(live, expr, out) {                                           \
    float acc_ = 0.0;                                                          \
    if (live) for (uint j = lane; j < p.n; j += GROUP) acc_ += (expr);       \
    out = group_sum(acc_); }

// The output of element j of the current row (side outputs written on the way).
float value(uint j) {
    float x = load_x(j);
    if (MODE == MODE_SOFTMAX) return exp(x - st0) / st1;
    if (MODE == MODE_LOG_SOFTMAX) return x - st0 - log(st1);
    if (MODE == MODE_LAYER_NORM)
        return (x - st0) * st1 * weight(j) + load_f32(B_DT, SLOT_b_start, p.b_start, int(j));
    if (MODE == MODE_SOFTMAX_BACK) {
        float pj = exp(x - st0) / st1;
        return pj * (load_g(j) - st2);
    }
    if (MODE == MODE_LOG_SOFTMAX_BACK) return load_g(j) - exp(x - st0) / st1 * st2;
    if (MODE == MODE_LAYER_NORM_BACK) {
        float g = load_g(j), xhat = (x - st0) * st1;
        if ((FLAGS & FLAG_GXHAT) != 0u)
            ARENA_AT(SLOT_side_start, p.side_start + uint(row_base) + j) = floatBitsToUint(g * xhat);
        return st1 * (g * weight(j) - st2 - xhat * st3);
    }
    // MODE_CE_BACK: st0, st1 softmax, st2 sum_c w[c], st3 the row's scale
    if (target < 0) return 0.0;
    float pj = exp(x - st0) / st1, s = p.eps;
    float hit = int(j) == target ? 1.0 : 0.0;
    float wt = weight(uint(target));
    float spread = s == 0.0 ? 0.0 : s / float(p.n) * (pj * st2 - weight(j));
    return st3 * ((1.0 - s) * wt * (pj - hit) + spread);
}

// One bf16 element of the output through 16-bit atomics: the other half of its word is another row's.
void store_half(uint e, uint bits) {
    uint shift = (e & 1u) << 4;
    atomicAnd(ARENA_AT(SLOT_out_start, e >> 1), ~(0xffffu << shift));
    atomicOr(ARENA_AT(SLOT_out_start, e >> 1), bits << shift);
}

void write_row(bool live) {
    if (!live) return;
    uint first = p.out_start + uint(row_base);
    if (OUT_DT != DT_BFLOAT16) {
        uint e = first + lane * p.inner, step = GROUP * p.inner;
        for (uint j = lane; j < p.n; j += GROUP, e += step) ARENA_AT(SLOT_out_start, e) = floatBitsToUint(value(j));
    } else if (p.inner == 1u) {  // whole words inside the row, half words at its ends
        uint end = first + p.n;
        for (uint w = (first >> 1) + lane; w < (end + 1u) >> 1; w += GROUP) {
            uint e = w << 1;
            bool lo = e >= first, hi = e + 1u < end;
            uint lo_bits = lo ? f32_to_bf16(value(e - first)) : 0u;
            uint hi_bits = hi ? f32_to_bf16(value(e + 1u - first)) : 0u;
            if (lo && hi) ARENA_AT(SLOT_out_start, w) = lo_bits | (hi_bits << 16);
            else if (lo) store_half(e, lo_bits);
            else store_half(e + 1u, hi_bits);
        }
    } else {
        for (uint j = lane; j < p.n; j += GROUP)
            store_half(first + j * p.inner, f32_to_bf16(value(j)));
    }
}

// One float (the row's result) in OUT_DT at element r of out: by the row's first thread.
void write_one(uint r, float v) {
    if (lane != 0u) return;
    if (OUT_DT == DT_BFLOAT16) store_half(p.out_start + r, f32_to_bf16(v));
    else ARENA_AT(SLOT_out_start, p.out_start + r) = floatBitsToUint(v);
}

// The row's target class, or -1 where it is ignore_index or (flagged) out of range.
int row_target(bool live, uint r) {
    if (!live) return -1;
    int t = load_i32(T_DT, SLOT_t_start, p.t_start, int(r));
    if (t == p.ignore_index) return -1;
    if (t < 0 || t >= int(p.n)) {
#if defined(ERROR_WORD)
        atomicCompSwap(staging[staging.length() - 1], 0u, p.error_code);
#endif
        return -1;
    }
    return t;
}

void finish() {  // CE_FINISH: one workgroup, GROUP == WG
    float loss, w;
    ROW_SUM(true, uintBitsToFloat(ARENA_AT(SLOT_aux_start, p.aux_start + 2u * j)), loss);
    ROW_SUM(true, uintBitsToFloat(ARENA_AT(SLOT_aux_start, p.aux_start + 2u * j + 1u)), w);
    if (lane == 0u) {
        ARENA_AT(SLOT_side_start, p.side_start) = floatBitsToUint(w);
        float v = (FLAGS & FLAG_MEAN) != 0u ? loss / w : loss;
        ARENA_AT(SLOT_out_start, p.out_start >> (OUT_DT == DT_BFLOAT16 ? 1 : 0)) =
            OUT_DT == DT_BFLOAT16 ? f32_to_bf16(v) : floatBitsToUint(v);
    }
}

void main() {
    uint lid = gl_LocalInvocationID.x;
#if defined(SUBGROUPS)
    uint pos = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#else
    uint pos = lid;
#endif
    seg = pos / GROUP;
    lane = pos % GROUP;
    if (MODE == MODE_CE_FINISH) {
        finish();
        return;
    }
    uint per_group = WG / GROUP;
    uint n_groups = (p.rows + per_group - 1u) / per_group;
    for (uint grp = gl_WorkGroupID.x; grp < n_groups; grp += gl_NumWorkGroups.x) {
        uint r = grp * per_group + seg;
        bool live = r < p.rows;
        uint o = r / p.inner;
        row_base = int(o * p.n * p.inner + (r - o * p.inner));
        if (MODE == MODE_LAYER_NORM || MODE == MODE_LAYER_NORM_BACK) {
            if (MODE == MODE_LAYER_NORM) {
                float total, dev;
                ROW_SUM(live, load_x(j), total);
                st0 = total / float(p.n);
                ROW_SUM(live, (load_x(j) - st0) * (load_x(j) - st0), dev);
                st1 = inversesqrt(dev / float(p.n) + p.eps);
                if ((FLAGS & FLAG_STATS) != 0u && live && lane == 0u) {
                    ARENA_AT(SLOT_aux_start, p.aux_start + 2u * r) = floatBitsToUint(st0);
                    ARENA_AT(SLOT_aux_start, p.aux_start + 2u * r + 1u) = floatBitsToUint(st1);
                }
            } else {
                st0 = live ? uintBitsToFloat(ARENA_AT(SLOT_aux_start, p.aux_start + 2u * r)) : 0.0;
                st1 = live ? uintBitsToFloat(ARENA_AT(SLOT_aux_start, p.aux_start + 2u * r + 1u)) : 0.0;
                float a, b;
                ROW_SUM(live, load_g(j) * weight(j), a);
                ROW_SUM(live, load_g(j) * weight(j) * (load_x(j) - st0) * st1, b);
                st2 = a / float(p.n);
                st3 = b / float(p.n);
            }
            write_row(live);
            continue;
        }
        softmax_stats(live);
        if (MODE == MODE_SOFTMAX || MODE == MODE_LOG_SOFTMAX) {
            write_row(live);
        } else if (MODE == MODE_SOFTMAX_BACK) {
            ROW_SUM(live, load_g(j) * (exp(load_x(j) - st0) / st1), st2);
            write_row(live);
        } else if (MODE == MODE_LOG_SOFTMAX_BACK) {
            ROW_SUM(live, load_g(j), st2);
            write_row(live);
        } else {  // MODE_CROSS_ENTROPY, MODE_CE_BACK
            target = row_target(live, r);
            float smoothing = p.eps, w_all = 0.0, wx = 0.0;
            if ((FLAGS & FLAG_SMOOTH) != 0u) {
                ROW_SUM(live, weight(j), w_all);
                if (MODE == MODE_CROSS_ENTROPY) ROW_SUM(live, weight(j) * (st0 - load_x(j)), wx);
            }
            if (MODE == MODE_CE_BACK) {
                float scale = load_f32(G_DT, SLOT_g_start, p.g_start, (FLAGS & FLAG_NONE) != 0u && live
                                                        ? int(r) : 0);
                if ((FLAGS & FLAG_MEAN) != 0u) scale /= uintBitsToFloat(ARENA_AT(SLOT_aux_start, p.aux_start));
                st2 = w_all;
                st3 = scale;
                write_row(live);
                continue;
            }
            if (!live) continue;
            float log_s = log(st1), loss = 0.0, wt = 0.0;
            if (target >= 0) {
                wt = weight(uint(target));
                loss = (1.0 - smoothing) * wt * ((st0 - load_x(uint(target))) + log_s);
                if ((FLAGS & FLAG_SMOOTH) != 0u)
                    loss += smoothing / float(p.n) * (wx + w_all * log_s);
            }
            if ((FLAGS & FLAG_NONE) != 0u) {
                write_one(r, loss);
            } else if (lane == 0u) {
                ARENA_AT(SLOT_aux_start, p.aux_start + 2u * r) = floatBitsToUint(loss);
                ARENA_AT(SLOT_aux_start, p.aux_start + 2u * r + 1u) = floatBitsToUint(wt);
            }
        }
    }
}
