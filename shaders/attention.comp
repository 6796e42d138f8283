#version 450
#extension GL_GOOGLE_include_directive : require
// Fused attention, flash-attention style: softmax(Q K^T * scale + M) V and its gradients with the
// L x S scores and weights never stored. Each invocation owns one row and recomputes the scores
// it needs, one key (or query) at a time, in registers. For batch b (the flattened leading dims
// of B), query i < L and key j < S, with every tensor contiguous in the arena:
//   q[b, i, e] at q_start + (b L + i) E + e,  k[b, j, e] at k_start + (b S + j) E + e,
//   v[b, j, c] at v_start + (b S + j) EV + c,  rows of out, the float32 output o32, dO
//   (g_start) and dq as q's with width EV, EV, EV and E; dk, dv as k's and v's; lse[b, i] and
//   D[b, i] (float32) at (b L + i).
// The score s_ij = (q_i * scale) . k_j + M_ij. Key j takes part for query i unless CAUSAL and
// j > i (the top-left triangle, also when L != S), or s_ij = -inf: a False in a bool mask
// (MASK 1) gives M = -inf, an additive mask (MASK 2, of dtype MDT) gives its value, -inf too.
// M[b, i, j] sits at mask_start + (b / n_lo) s_hi + (b % n_lo) s_lo + i s_l + j s_s (element
// strides; 0 along broadcast dims), so a mask broadcasts over batch and heads unexpanded.
//
// PASS 0, the forward (rows = B L): an online softmax over the keys taking part so far: m their
//   largest score, l = sum exp(s_j - m), acc = sum exp(s_j - m) v_j; a new score s gives
//   m' = max(m, s), and l, acc scale by exp(m - m') before adding exp(s - m'). out = acc / l and
//   lse = m + log l, the row's log-sum-exp, kept for the backward, as is out in float32 (o32:
//   written there too when out is bf16). A row no key takes part for gets out = 0 (torch's
//   rule) and lse = 0 (never read: no P of that row is recomputed).
// PASS 1, dq (rows = B L): with P_ij = exp(s_ij - lse_i) and dP_ij = dO_i . v_j,
//   D_i = sum_j P_ij dP_ij = dO_i . o32_i and dq_i = scale sum_j P_ij (dP_ij - D_i) k_j.
// PASS 2, dk and dv (rows = B S; after pass 1, which wrote D): for key j, over the queries i
//   that see it (i >= j when CAUSAL: queries above the diagonal are never visited),
//   dv_j = sum_i P_ij dO_i and dk_j = scale sum_i P_ij (dP_ij - D_i) q_i.
// Pass 2 needs from pass 1 only D, and every sum is one invocation's: no atomics, the same
// bits on every run. Everything is computed in f32; each output rounds once to its
// dtype: ODT for the E-wide rows (dq, dk), ODTV for the EV-wide ones (out, dv); DT is that of
// q, k, v and dO. A bf16 output needs an even width (one invocation owns whole words of its
// rows; the caller asks for f32 and rounds otherwise). E, EV <= MAXE.
#include "common.glsl"

#include "attention_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

const uint NEG_INF = 0xff800000u;

// The mask's term of s_ij for batch b: 0 without a mask, 0 or -inf from a bool one.
float mask_term(uint b, uint i, uint j) {
    if (MASK == 0u) return 0.0;
    uint hi = b / p.n_lo;
    int at = int(hi) * p.s_hi + int(b - hi * p.n_lo) * p.s_lo + int(i) * p.s_l + int(j) * p.s_s;
    if (MASK == 1u)
        return load_bits(DT_BOOL, SLOT_mask_start, p.mask_start, at) != 0u ? 0.0
                                                                        : uintBitsToFloat(NEG_INF);
    return load_f32(MDT, SLOT_mask_start, p.mask_start, at);
}

bool takes_part(float s) { return floatBitsToUint(s) != NEG_INF; }

// Row `row` of width n, each value times `f`, rounded once to `dt` at element `start` of the
// chunk at `slot`.
#define STORE_ROW(dt, slot, start, row, width, vals, f) {                                  \
    uint o_ = (start) + (row) * (width);                                                   \
    if (dt == DT_BFLOAT16) {                                                               \
        for (uint c_ = 0u; c_ < (width); c_ += 2u)                                         \
            ARENA_AT(slot, (o_ + c_) >> 1) = f32_to_bf16(vals[c_] * (f))                   \
                                             | (f32_to_bf16(vals[c_ + 1u] * (f)) << 16);            \
    } else {                                                                               \
        for (uint c_ = 0u; c_ < (width); ++c_)                                             \
            ARENA_AT(slot, o_ + c_) = floatBitsToUint(vals[c_] * (f));                     \
    }                                                                                      \
}

// q_i * scale into registers: every pass forms s_ij = sum_e (q_ie * scale) k_je in this order,
// so the backward recomputes the forward's scores bit for bit.
#define LOAD_Q(qs, row) for (uint e_ = 0u; e_ < p.E; ++e_) \
    qs[e_] = load_f32(DT, SLOT_q_start, p.q_start, int((row) * p.E + e_)) * p.scale;

void forward_row(uint r) {
    uint b = r / p.L, i = r - b * p.L;
    float qs[MAXE], acc[MAXE];
    LOAD_Q(qs, r);
    for (uint c = 0u; c < p.EV; ++c) acc[c] = 0.0;
    uint keys = CAUSAL == 1u ? min(i + 1u, p.S) : p.S;
    float m = 0.0, l = 0.0;
    for (uint j = 0u; j < keys; ++j) {
        uint kj = (b * p.S + j) * p.E, vj = (b * p.S + j) * p.EV;
        float s = 0.0;
        for (uint e = 0u; e < p.E; ++e) s += qs[e] * load_f32(DT, SLOT_k_start, p.k_start, int(kj + e));
        s += mask_term(b, i, j);
        if (!takes_part(s)) continue;
        float m2 = l == 0.0 ? s : max(m, s);  // l >= 1 once a key took part
        float shrink = l == 0.0 ? 0.0 : exp(m - m2), w = exp(s - m2);
        l = l * shrink + w;
        for (uint c = 0u; c < p.EV; ++c)
            acc[c] = acc[c] * shrink + w * load_f32(DT, SLOT_v_start, p.v_start, int(vj + c));
        m = m2;
    }
    float inv = l == 0.0 ? 0.0 : 1.0 / l;
    STORE_ROW(ODTV, SLOT_out_start, p.out_start, r, p.EV, acc, inv);
    if (ODTV == DT_BFLOAT16) STORE_ROW(DT_FLOAT32, SLOT_o32_start, p.o32_start, r, p.EV, acc, inv);
    ARENA_AT(SLOT_lse_start, p.lse_start + r) = floatBitsToUint(l == 0.0 ? 0.0 : m + log(l));
}

void dq_row(uint r) {
    uint b = r / p.L, i = r - b * p.L;
    float qs[MAXE], g[MAXE], dq[MAXE], kj[MAXE];
    LOAD_Q(qs, r);
    float d = 0.0;
    for (uint c = 0u; c < p.EV; ++c) {
        g[c] = load_f32(DT, SLOT_g_start, p.g_start, int(r * p.EV + c));
        d += g[c] * uintBitsToFloat(ARENA_AT(SLOT_o32_start, p.o32_start + r * p.EV + c));
    }
    for (uint e = 0u; e < p.E; ++e) dq[e] = 0.0;
    uint keys = CAUSAL == 1u ? min(i + 1u, p.S) : p.S;
    float lse = uintBitsToFloat(ARENA_AT(SLOT_lse_start, p.lse_start + r));
    for (uint j = 0u; j < keys; ++j) {
        uint jr = b * p.S + j;
        float s = 0.0, dp = 0.0;
        for (uint e = 0u; e < p.E; ++e) {
            kj[e] = load_f32(DT, SLOT_k_start, p.k_start, int(jr * p.E + e));
            s += qs[e] * kj[e];
        }
        s += mask_term(b, i, j);
        if (!takes_part(s)) continue;
        for (uint c = 0u; c < p.EV; ++c) dp += g[c] * load_f32(DT, SLOT_v_start, p.v_start, int(jr * p.EV + c));
        float ds = exp(s - lse) * (dp - d);
        for (uint e = 0u; e < p.E; ++e) dq[e] += ds * kj[e];
    }
    ARENA_AT(SLOT_d_start, p.d_start + r) = floatBitsToUint(d);
    STORE_ROW(ODT, SLOT_out_start, p.out_start, r, p.E, dq, p.scale);
}

void dkv_row(uint r) {
    uint b = r / p.S, j = r - b * p.S;
    float k[MAXE], v[MAXE], dk[MAXE], dv[MAXE], qi[MAXE];
    for (uint e = 0u; e < p.E; ++e) {
        k[e] = load_f32(DT, SLOT_k_start, p.k_start, int(r * p.E + e));
        dk[e] = 0.0;
    }
    for (uint c = 0u; c < p.EV; ++c) {
        v[c] = load_f32(DT, SLOT_v_start, p.v_start, int(r * p.EV + c));
        dv[c] = 0.0;
    }
    for (uint i = CAUSAL == 1u ? j : 0u; i < p.L; ++i) {
        uint ir = b * p.L + i;
        float s = 0.0, dp = 0.0;
        for (uint e = 0u; e < p.E; ++e) {
            qi[e] = load_f32(DT, SLOT_q_start, p.q_start, int(ir * p.E + e));
            s += (qi[e] * p.scale) * k[e];
        }
        s += mask_term(b, i, j);
        if (!takes_part(s)) continue;
        float pij = exp(s - uintBitsToFloat(ARENA_AT(SLOT_lse_start, p.lse_start + ir)));
        for (uint c = 0u; c < p.EV; ++c) {
            float gc = load_f32(DT, SLOT_g_start, p.g_start, int(ir * p.EV + c));
            dp += gc * v[c];
            dv[c] += pij * gc;
        }
        float ds = pij * (dp - uintBitsToFloat(ARENA_AT(SLOT_d_start, p.d_start + ir)));
        for (uint e = 0u; e < p.E; ++e) dk[e] += ds * qi[e];
    }
    STORE_ROW(ODT, SLOT_out_start, p.out_start, r, p.E, dk, p.scale);
    STORE_ROW(ODTV, SLOT_outv_start, p.outv_start, r, p.EV, dv, 1.0);
}

void main() {
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint r = gl_GlobalInvocationID.x; r < p.rows; r += threads) {
        if (PASS == 0u) forward_row(r);
        else if (PASS == 1u) dq_row(r);
        else dkv_row(r);
    }
}
