#version 450
#extension GL_GOOGLE_include_directive : require
// Every elementwise op: unary, binary and ternary, over strided and broadcast operands of any
// dtype. The op and the operand dtypes are specialization constants, so each pipeline holds only
// its own op's code. Variants: DOMAIN_FLOAT (f32 math), DOMAIN_INT (int32), DOMAIN_UINT (uint32).
#include "common.glsl"

layout(local_size_x = 256) in;

#define MAXD 4
layout(constant_id = 0) const uint OP = 0u;
layout(constant_id = 1) const uint OUT_DT = 0u;
layout(constant_id = 2) const uint A_DT = 0u;   // DT_IMM: a scalar in the push constants
layout(constant_id = 3) const uint B_DT = 0u;
layout(constant_id = 4) const uint C_DT = 0u;

layout(push_constant) uniform Params {
    uint n; uint ndim; uint out_start; uint a_start; uint b_start; uint c_start;
    uint shape[MAXD];
    int out_strides[MAXD];  // used for unpacked outputs; packed outputs are contiguous
    int a_strides[MAXD]; int b_strides[MAXD]; int c_strides[MAXD];
} p;

#if defined(DOMAIN_FLOAT)
#define T float
#define LOAD load_f32
#define TO_BITS f32_to_bits
#elif defined(DOMAIN_INT)
#define T int
#define LOAD load_i32
#define TO_BITS i32_to_bits
#else
#define T uint
#define LOAD load_u32
#define TO_BITS u32_to_bits
#endif

T truth(bool v) { return v ? T(1) : T(0); }

#if defined(DOMAIN_FLOAT)
#define NAN_F uintBitsToFloat(0x7fc00000u)

// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), enough for f32 GELU.
float erf_approx(float x) {
    float z = abs(x);
    float t = 1.0 / (1.0 + 0.5 * z);
    float r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
              t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
              t * (-0.82215223 + t * 0.17087277)))))))));
    return x >= 0.0 ? 1.0 - r : r - 1.0;
}

float py_mod(float a, float b) {  // numpy's float remainder: sign follows the divisor
    if (b == 0.0) return NAN_F;
    float r = a - b * trunc(a / b);
    if (r != 0.0 && ((r < 0.0) != (b < 0.0))) r += b;
    return r;
}
#else
T py_floordiv(T a, T b) {
    if (b == T(0)) return T(0);  // numpy returns 0 (with a warning) for integer division by zero
#if defined(DOMAIN_INT)
    int q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
#else
    return a / b;
#endif
}
T py_mod(T a, T b) {
    if (b == T(0)) return T(0);
    return a - py_floordiv(a, b) * b;
}
T int_pow(T a, T e) {
#if defined(DOMAIN_INT)
    if (e < 0) return (a == 1) ? 1 : ((a == -1) ? ((e & 1) == 1 ? -1 : 1) : 0);
#endif
    T r = T(1);
    uint k = uint(e);
    while (k > 0u) { if ((k & 1u) == 1u) r *= a; a *= a; k >>= 1; }
    return r;
}
#endif

T apply(T a, T b, T c) {
    switch (OP) {
    case OP_IDENTITY: return a;
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    case OP_SQUARE: return a * a;
    case OP_EQ: return truth(a == b);
    case OP_NE: return truth(a != b);
    case OP_LT: return truth(a < b);
    case OP_LE: return truth(a <= b);
    case OP_GT: return truth(a > b);
    case OP_GE: return truth(a >= b);
    case OP_LOGICAL_AND: return truth(a != T(0) && b != T(0));
    case OP_LOGICAL_OR: return truth(a != T(0) || b != T(0));
    case OP_LOGICAL_NOT: return truth(a == T(0));
    case OP_WHERE: return a != T(0) ? b : c;
#if defined(DOMAIN_FLOAT)
    case OP_NEG: return -a;
    case OP_ABS: return abs(a);
    case OP_DIV: return a / b;
    case OP_FLOORDIV: return b == 0.0 ? a / b : floor(a / b);
    case OP_MOD: return py_mod(a, b);
    case OP_POW: {  // GLSL's pow is undefined for a < 0 or a == 0 with b <= 0; numpy's is not
        if (b == 0.0) return 1.0;
        if (b == 2.0) return a * a;
        if (a == 0.0) return b < 0.0 ? uintBitsToFloat(0x7f800000u) : 0.0;
        float r = pow(abs(a), b);
        if (a < 0.0) {
            if (b != floor(b)) return NAN_F;
            if (mod(b, 2.0) == 1.0) r = -r;
        }
        return r;
    }
    case OP_MAXIMUM: return (isnan(a) || isnan(b)) ? NAN_F : max(a, b);
    case OP_MINIMUM: return (isnan(a) || isnan(b)) ? NAN_F : min(a, b);
    case OP_CLIP: return (isnan(a) || isnan(b) || isnan(c)) ? NAN_F : min(max(a, b), c);
    case OP_EXP: return exp(a);
    case OP_LOG: return log(a);
    case OP_LOG1P: return abs(a) < 1e-4 ? a - 0.5 * a * a + a * a * a / 3.0 : log(1.0 + a);
    case OP_EXPM1: return abs(a) < 1e-4 ? a + 0.5 * a * a + a * a * a / 6.0 : exp(a) - 1.0;
    case OP_SQRT: return sqrt(a);
    case OP_RSQRT: return 1.0 / sqrt(a);
    case OP_RECIPROCAL: return 1.0 / a;
    case OP_SIN: return sin(a);
    case OP_COS: return cos(a);
    case OP_TANH: return abs(a) > 15.0 ? sign(a) : tanh(a);
    case OP_SIGMOID: return a >= 0.0 ? 1.0 / (1.0 + exp(-a)) : exp(a) / (1.0 + exp(a));
    case OP_RELU: return isnan(a) ? a : max(a, 0.0);
    case OP_GELU: return 0.5 * a * (1.0 + erf_approx(a * 0.70710678118654752));
    case OP_ERF: return erf_approx(a);
    case OP_SOFTPLUS: return max(a, 0.0) + log(1.0 + exp(-abs(a)));
    case OP_SIGN: return isnan(a) ? a : sign(a);
    case OP_FLOOR: return floor(a);
    case OP_CEIL: return ceil(a);
    case OP_ROUND: return roundEven(a);
    case OP_ISNAN: return truth(isnan(a));
    case OP_ISINF: return truth(isinf(a));
    case OP_ISFINITE: return truth(!isnan(a) && !isinf(a));
#else
#if defined(DOMAIN_INT)
    case OP_NEG: return -a;
    case OP_ABS: return abs(a);
    case OP_SIGN: return sign(a);
#else
    case OP_NEG: return -a;
    case OP_ABS: return a;
    case OP_SIGN: return truth(a != 0u);
#endif
    case OP_FLOORDIV: return py_floordiv(a, b);
    case OP_MOD: return py_mod(a, b);
    case OP_POW: return int_pow(a, b);
    case OP_MAXIMUM: return max(a, b);
    case OP_MINIMUM: return min(a, b);
    case OP_CLIP: return min(max(a, b), c);
    case OP_BITAND: return a & b;
    case OP_BITOR: return a | b;
    case OP_BITXOR: return a ^ b;
    case OP_ISNAN: return T(0);
    case OP_ISINF: return T(0);
    case OP_ISFINITE: return T(1);
#endif
    }
    return a;
}

void main() {
    uint per_word = elems_per_word(OUT_DT);
    uint words = (p.n + per_word - 1u) / per_word;
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint w = gl_GlobalInvocationID.x; w < words; w += threads) {
        uint packed = 0u;
        for (uint k = 0u; k < per_word; ++k) {
            uint i = w * per_word + k;
            if (i >= p.n) break;
            uint rest = i;
            int oo = 0, ao = 0, bo = 0, co = 0;
            if (p.ndim == 1u) {  // contiguous operands coalesce to one dim: no division (slow
                oo = int(i) * p.out_strides[0];  // on CPU drivers)
                ao = int(i) * p.a_strides[0];
                bo = int(i) * p.b_strides[0];
                co = int(i) * p.c_strides[0];
            } else for (int d = int(p.ndim) - 1; d >= 0; --d) {
                int coord = int(rest % p.shape[d]);
                rest /= p.shape[d];
                oo += coord * p.out_strides[d];
                ao += coord * p.a_strides[d];
                bo += coord * p.b_strides[d];
                co += coord * p.c_strides[d];
            }
            uint bits;
            if (OP == OP_IDENTITY && A_DT == OUT_DT) {
                bits = load_bits(A_DT, p.a_start, ao);  // a copy moves bits, NaN payloads too
            } else {
                bits = TO_BITS(OUT_DT, apply(LOAD(A_DT, p.a_start, ao), LOAD(B_DT, p.b_start, bo),
                                             LOAD(C_DT, p.c_start, co)));
            }
            if (per_word == 1u) {
                arena[int(p.out_start) + oo] = bits;  // strided output: in-place writes into views
            } else {
                packed |= place_bits(OUT_DT, bits, i);
            }
        }
        if (per_word > 1u) arena[p.out_start / per_word + w] = packed;
    }
}
