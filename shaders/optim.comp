#version 450
#extension GL_GOOGLE_include_directive : require
// One optimizer step for one parameter: SGD, Adam(W) or RMSprop. The rule, its flags and the
// dtypes are specialization constants; hyper-parameters are push constants, so changing the
// learning rate never creates a pipeline. Each invocation owns element i: it reads the parameter
// (any float dtype, any strides), its gradient and the float32 state buffers, and writes the
// parameter and the state in place. The math runs in f32;
// a bf16 parameter is rounded once at the end (from its f32 master copy when MASTER is set).
// The formulas are PyTorch's (see vkgrad/ops/optimizers.py, which runs the same ones in numpy).
// Adam and RMSprop count their steps on the device (counter.glsl): the dispatch reads the f32
// step count at p.step_start and leaves it one higher (unless p.advance is 0), so a recorded step
// replays with the right count. Adam's step size lr / bc1 and sqrt(bc2), bc_k = 1 - beta_k^t,
// are computed once per workgroup in double-float arithmetic from lr and the betas given as
// f32 pairs (hi + lo), and rounded once to f32: the host's float64 values, rounded to f32.
//
//   rule     h[0]   h[1]          h[2]          h[3]         h[4]      h[5]     h[6]  h[7]
//   SGD      lr     weight_decay  momentum      1-dampening
//   ADAM     lr     weight_decay  decay_factor  1-beta1      beta2     1-beta2  eps   lr lo
//            h[8]: beta1, h[9]: beta1 lo, h[10]: beta2 lo
//   RMSPROP  lr     weight_decay  alpha         1-alpha      eps       momentum
//   state    s[0]             s[1]              s[2]
//   SGD      momentum_buffer
//   ADAM     exp_avg          exp_avg_sq        max_exp_avg_sq
//   RMSPROP  square_avg       momentum_buffer   grad_avg        (s[3]: f32 master weights)
#include "common.glsl"
#include "counter.glsl"

#include "optim_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

bool has(uint flag) { return (FLAGS & flag) != 0u; }

// A state buffer's value; FLAG_FRESH: buffers were just allocated and hold nothing yet (zeros).
float state(uint k, uint i) { return has(FLAG_FRESH) ? 0.0 : uintBitsToFloat(ARENA_AT(SLOT_s_start(k), p.s_start[k] + i)); }
void set_state(uint k, uint i, float v) { ARENA_AT(SLOT_s_start(k), p.s_start[k] + i) = floatBitsToUint(v); }

// Double-float arithmetic: a value is hi + lo (|lo| <= ulp(hi) / 2), about 44 bits from
// correctly rounded f32 +, -, * (precise: never contracted into fma). Division and sqrt take
// an f32 estimate (Vulkan lets them err by a few ulps) and correct it with an exact residual.
vec2 df_quick(float a, float b) {  // |a| >= |b|
    precise float s = a + b;
    precise float e = b - (s - a);
    return vec2(s, e);
}
vec2 df_sum(float a, float b) {
    precise float s = a + b; precise float v = s - a; precise float e = (a - (s - v)) + (b - v);
    return vec2(s, e);
}
vec2 df_split(float a) {  // a = hi + lo, each of 12 significant bits (Veltkamp)
    precise float c = 4097.0 * a;
    precise float hi = c - (c - a);
    precise float lo = a - hi;
    return vec2(hi, lo);
}
vec2 df_prod(float a, float b) {
    vec2 x = df_split(a), y = df_split(b);
    precise float q = a * b;
    precise float e = ((x.x * y.x - q) + x.x * y.y + x.y * y.x) + x.y * y.y;
    return vec2(q, e);
}
vec2 df_mul(vec2 a, vec2 b) {
    vec2 q = df_prod(a.x, b.x);
    precise float e = q.y + (a.x * b.y + a.y * b.x);
    return df_quick(q.x, e);
}
vec2 df_add(vec2 a, vec2 b) {
    vec2 s = df_sum(a.x, b.x);
    precise float e = s.y + (a.y + b.y);
    return df_quick(s.x, e);
}
vec2 df_div(vec2 a, vec2 b) {
    float q1 = a.x / b.x;
    vec2 r = df_add(a, -df_mul(b, vec2(q1, 0.0)));
    float q2 = r.x / b.x;
    r = df_add(r, -df_mul(b, vec2(q2, 0.0)));
    return df_add(df_quick(q1, q2), vec2(r.x / b.x, 0.0));
}
vec2 df_sqrt(vec2 a) {
    float s = sqrt(a.x);
    vec2 r = df_add(a, -df_prod(s, s));
    return df_add(vec2(s, 0.0), vec2(r.x / (2.0 * s), 0.0));
}
vec2 df_pow(vec2 b, uint t) {  // b^t by squaring
    vec2 r = vec2(1.0, 0.0);
    for (; t != 0u; t >>= 1) {
        if ((t & 1u) != 0u) r = df_mul(r, b);
        if (t > 1u) b = df_mul(b, b);
    }
    return r;
}
float df_round(vec2 a) { precise float r = a.x + a.y; return r; }

shared float step_size, bc2_sqrt;  // ADAM: lr / bc1 and sqrt(bc2) of this step

void main() {
    bool counts = RULE != RULE_SGD;
    float t = 0.0;  // this step's number (f32 counts exactly to 2^24, as PyTorch's step)
    if (counts) {
        counter_load(SLOT_step_start, p.step_start, 1u);
        t = uintBitsToFloat(counter_words[0]) + 1.0;
        if (RULE == RULE_ADAM) {
            if (gl_LocalInvocationIndex == 0u) {
                vec2 one = vec2(1.0, 0.0);
                uint k = uint(clamp(t, 0.0, 16777216.0));
                vec2 bc1 = df_add(one, -df_pow(vec2(p.h[8], p.h[9]), k));
                vec2 bc2 = df_add(one, -df_pow(vec2(p.h[4], p.h[10]), k));
                step_size = df_round(df_div(vec2(p.h[0], p.h[7]), bc1));
                bc2_sqrt = df_round(df_sqrt(bc2));
            }
            barrier();
        }
    }
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += threads) {
        int po, go;
        STRIDED_OFFSET(i, p.ndim, p.shape, p.p_strides, po);
        STRIDED_OFFSET(i, p.ndim, p.shape, p.g_strides, go);
        uint old_bits = load_bits(P_DT, SLOT_p_start, p.p_start, po);
        float w = load_f32(P_DT, SLOT_p_start, p.p_start, po);
        if (has(FLAG_MASTER) && !has(FLAG_FRESH_MASTER)) {
            // Continue from the f32 master copy unless the parameter no longer is its rounding:
            // then it was set outside the optimizer (a load_state_dict) and wins.
            float m = uintBitsToFloat(ARENA_AT(SLOT_s_start(3), p.s_start[3] + i));
            if (f32_to_bits(P_DT, m) == old_bits) w = m;
        }
        float g = load_f32(G_DT, SLOT_g_start, p.g_start, go);
        if (has(FLAG_MAXIMIZE)) g = -g;

        if (RULE == RULE_SGD) {
            if (p.h[1] != 0.0) g += p.h[1] * w;
            if (has(FLAG_MOMENTUM)) {
                // the first step starts the buffer at the gradient itself
                float b = has(FLAG_FRESH) ? g : state(0, i) * p.h[2] + p.h[3] * g;
                set_state(0, i, b);
                g = has(FLAG_NESTEROV) ? g + p.h[2] * b : b;
            }
            w -= p.h[0] * g;
        } else if (RULE == RULE_ADAM) {
            w *= p.h[2];  // decoupled (AdamW) decay: 1 - lr * weight_decay, else 1
            if (p.h[1] != 0.0) g += p.h[1] * w;
            float m = state(0, i);
            m += p.h[3] * (g - m);
            float v = state(1, i) * p.h[4] + p.h[5] * g * g;
            set_state(0, i, m);
            set_state(1, i, v);
            if (has(FLAG_AMSGRAD)) {
                v = max(state(2, i), v);
                set_state(2, i, v);
            }
            w -= step_size * (m / (sqrt(v) / bc2_sqrt + p.h[6]));
        } else {  // RULE_RMSPROP
            if (p.h[1] != 0.0) g += p.h[1] * w;
            float sq = state(0, i) * p.h[2] + p.h[3] * g * g;
            set_state(0, i, sq);
            float avg;
            if (has(FLAG_CENTERED)) {
                float ga = state(2, i);
                ga += p.h[3] * (g - ga);
                set_state(2, i, ga);
                avg = sqrt(sq - ga * ga) + p.h[4];
            } else {
                avg = sqrt(sq) + p.h[4];
            }
            if (has(FLAG_MOMENTUM)) {
                float b = state(1, i) * p.h[5] + g / avg;
                set_state(1, i, b);
                w -= p.h[0] * b;
            } else {
                w -= p.h[0] * (g / avg);
            }
        }

        if (has(FLAG_MASTER)) ARENA_AT(SLOT_s_start(3), p.s_start[3] + i) = floatBitsToUint(w);
        uint bits = f32_to_bits(P_DT, w);
        uint e = p.p_start + uint(po);
        if (P_DT == DT_FLOAT32) {
            ARENA_AT(SLOT_p_start, e) = bits;
        } else {
            // bf16: flip only this element's half of the shared word (its neighbour may belong to
            // another invocation, or to another tensor)
            uint shift = (e & 1u) << 4;
            atomicXor(ARENA_AT(SLOT_p_start, e >> 1), (old_bits ^ bits) << shift);
        }
    }
    if (counts && p.advance != 0u)
        counter_store(SLOT_step_start, p.step_start, 1u, SLOT_arrive_start, p.arrive_start, uvec4(floatBitsToUint(t), 0u, 0u, 0u));
}
