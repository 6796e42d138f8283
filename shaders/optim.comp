#version 450
#extension GL_GOOGLE_include_directive : require
// One optimizer step for one parameter: SGD, Adam(W) or RMSprop. The rule, its flags and the
// dtypes are specialization constants; hyper-parameters are push constants, so changing the
// learning rate never creates a pipeline. Each invocation owns element i: it reads the parameter
// (any float dtype, any strides), its gradient and the float32 state buffers, and writes the
// parameter and the state in place. The math runs in f32;
// a bf16 parameter is rounded once at the end (from its f32 master copy when MASTER is set).
// The formulas are PyTorch's (see vkgrad/ops/optimizers.py, which runs the same ones in numpy).
//
//   rule     h[0]     h[1]          h[2]          h[3]         h[4]    h[5]      h[6]  h[7]
//   SGD      lr       weight_decay  momentum      1-dampening
//   ADAM     lr/bc1   weight_decay  decay_factor  1-beta1      beta2   1-beta2   eps   sqrt(bc2)
//   RMSPROP  lr       weight_decay  alpha         1-alpha      eps     momentum
//   state    s[0]             s[1]              s[2]
//   SGD      momentum_buffer
//   ADAM     exp_avg          exp_avg_sq        max_exp_avg_sq
//   RMSPROP  square_avg       momentum_buffer   grad_avg        (s[3]: f32 master weights)
#include "common.glsl"

layout(local_size_x = 256) in;

#define MAXD 4
layout(constant_id = 0) const uint RULE = 0u;
layout(constant_id = 1) const uint FLAGS = 0u;
layout(constant_id = 2) const uint P_DT = 0u;
layout(constant_id = 3) const uint G_DT = 0u;

layout(push_constant) uniform Params {
    uint n; uint ndim; uint p_start; uint g_start;
    uint s[4];                   // starts (in f32 elements) of the contiguous f32 state buffers
    float h[8];                  // hyper-parameters (see the table above)
    uint shape[MAXD]; int p_strides[MAXD]; int g_strides[MAXD];
} p;

bool has(uint flag) { return (FLAGS & flag) != 0u; }

// A state buffer's value; FLAG_FRESH: buffers were just allocated and hold nothing yet (zeros).
float state(uint k, uint i) { return has(FLAG_FRESH) ? 0.0 : uintBitsToFloat(arena[p.s[k] + i]); }
void set_state(uint k, uint i, float v) { arena[p.s[k] + i] = floatBitsToUint(v); }

void main() {
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += threads) {
        int po, go;
        STRIDED_OFFSET(i, p.ndim, p.shape, p.p_strides, po);
        STRIDED_OFFSET(i, p.ndim, p.shape, p.g_strides, go);
        uint old_bits = load_bits(P_DT, p.p_start, po);
        float w = load_f32(P_DT, p.p_start, po);
        if (has(FLAG_MASTER) && !has(FLAG_FRESH_MASTER)) {
            // Continue from the f32 master copy unless the parameter no longer is its rounding:
            // then it was set outside the optimizer (a load_state_dict) and wins.
            float m = uintBitsToFloat(arena[p.s[3] + i]);
            if (f32_to_bits(P_DT, m) == old_bits) w = m;
        }
        float g = load_f32(G_DT, p.g_start, go);
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
            w -= p.h[0] * (m / (sqrt(v) / p.h[7] + p.h[6]));
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

        if (has(FLAG_MASTER)) arena[p.s[3] + i] = floatBitsToUint(w);
        uint bits = f32_to_bits(P_DT, w);
        uint e = uint(int(p.p_start) + po);
        if (P_DT == DT_FLOAT32) {
            arena[e] = bits;
        } else {
            // bf16: flip only this element's half of the shared word (its neighbour may belong to
            // another invocation, or to another tensor)
            uint shift = (e & 1u) << 4;
            atomicXor(arena[e >> 1], (old_bits ^ bits) << shift);
        }
    }
}
