#version 450
#extension GL_GOOGLE_include_directive : require
// Fused attention forward, flash-attention style: out[r] = softmax(q[r] K^T * scale) V for each
// query row r = (b, i) of `rows` = B * L, one invocation per row, with an online softmax, so the
// L x S scores are never stored. Row r reads q[b, i, :], keys and values k[b, j, :], v[b, j, :]
// for j < S (j <= i when CAUSAL: the top-left triangle), all contiguous in the arena:
//   q[b, i, e] at q_start + (b L + i) E + e,  k[b, j, e] at k_start + (b S + j) E + e,
//   v[b, j, c] at v_start + (b S + j) EV + c,  out[b, i, c] at out_start + (b L + i) EV + c.
// Online softmax over the keys seen so far: m their largest score, l = sum exp(s_j - m) and
// acc = sum exp(s_j - m) v_j; a new score s gives m' = max(m, s), and l, acc scale by
// exp(m - m') before adding exp(s - m'). out = acc / l; a row without keys (S = 0) is 0, as
// torch. Everything in f32; out rounds once to DT (bf16 rows must hold whole words: EV even,
// out_start even). E, EV <= MAXE. DT (q, k, v and out) and CAUSAL are specialization constants.
#include "common.glsl"

layout(local_size_x = 256) in;

#define MAXE 128
layout(constant_id = 0) const uint DT = 0u;
layout(constant_id = 1) const uint CAUSAL = 0u;

layout(push_constant) uniform Params {
    uint rows; uint L; uint S; uint E; uint EV;
    uint q_start; uint k_start; uint v_start; uint out_start; float scale;
} p;

void main() {
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint r = gl_GlobalInvocationID.x; r < p.rows; r += threads) {
        uint b = r / p.L, i = r - b * p.L;
        float q[MAXE], acc[MAXE];
        for (uint e = 0u; e < p.E; ++e) q[e] = load_f32(DT, p.q_start, int(r * p.E + e)) * p.scale;
        for (uint c = 0u; c < p.EV; ++c) acc[c] = 0.0;
        uint keys = CAUSAL == 1u ? min(i + 1u, p.S) : p.S;
        float m = 0.0, l = 0.0;
        for (uint j = 0u; j < keys; ++j) {
            uint kj = (b * p.S + j) * p.E, vj = (b * p.S + j) * p.EV;
            float s = 0.0;
            for (uint e = 0u; e < p.E; ++e) s += q[e] * load_f32(DT, p.k_start, int(kj + e));
            float m2 = j == 0u ? s : max(m, s);
            float shrink = j == 0u ? 0.0 : exp(m - m2), w = exp(s - m2);
            l = l * shrink + w;
            for (uint c = 0u; c < p.EV; ++c)
                acc[c] = acc[c] * shrink + w * load_f32(DT, p.v_start, int(vj + c));
            m = m2;
        }
        float inv = keys == 0u ? 0.0 : 1.0 / l;
        uint o = p.out_start + r * p.EV;
        if (DT == DT_BFLOAT16) {
            for (uint c = 0u; c < p.EV; c += 2u)
                arena[(o + c) >> 1] = f32_to_bf16(acc[c] * inv)
                                      | (f32_to_bf16(acc[c + 1u] * inv) << 16);
        } else {
            for (uint c = 0u; c < p.EV; ++c) arena[o + c] = floatBitsToUint(acc[c] * inv);
        }
    }
}
