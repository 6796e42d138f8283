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
#define INF_F uintBitsToFloat(0x7f800000u)
#define LOG2E 1.44269504088896341
#define LN2_HI 0.693145751953125       // ln 2 in 15 bits: n * LN2_HI is exact for |n| < 512
#define LN2_LO 1.4286068203094173e-06  // ln 2 - LN2_HI
#define INV_SQRT2 0.70710678118654752

// The transcendental functions below keep a few ulps of relative error over the whole float
// range, near zero too (tests/test_elementwise_accuracy.py); the driver's exp, log and tanh lose
// it near 0 or for large arguments. NaN is tested on the bits, never with isnan.

// e^r - 1 for |r| <= ln(2) / 2, by its Taylor series to degree 8 (truncation < 6e-10 relative).
float expm1_small(float r) {
    return r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 +
           r * (1.0 / 720.0 + r * (1.0 / 5040.0 + r * (1.0 / 40320.0))))))));
}

// m 2^n for an integral n in [-300, 300], in two steps so that neither factor leaves the range.
float scale2(float m, float n) {
    int k = int(n);
    return ldexp(ldexp(m, k / 2), k - k / 2);
}

// x = n ln 2 + r with |r| <= ln(2) / 2 (plus rounding), r exact (Cody and Waite's reduction).
float reduce_ln2(float x, out float n) {
    n = roundEven(x * LOG2E);
    return (x - n * LN2_HI) - n * LN2_LO;
}

float exp_acc(float x) {
    if (f32_is_nan(x)) return x;
    if (x > 88.72284) return INF_F;
    if (x < -103.98) return 0.0;
    float n;
    float r = reduce_ln2(x, n);
    return scale2(1.0 + expm1_small(r), n);
}

float expm1_acc(float x) {
    if (f32_is_nan(x)) return x;
    if (abs(x) <= 0.34657359) return expm1_small(x);
    if (x > 24.0) return exp_acc(x);  // e^x - 1 rounds to e^x
    if (x < -17.5) return -1.0;       // e^x < 2^-25: -1 + e^x rounds to -1
    float n;
    float r = reduce_ln2(x, n);
    float p = scale2(1.0, n);         // e^x - 1 = 2^n (e^r - 1) + (2^n - 1), 2^n - 1 exact
    return p * expm1_small(r) + (p - 1.0);
}

// log(1 + f) for f in [sqrt(1/2) - 1, sqrt(2) - 1]: 2 atanh(s), s = f / (2 + f), |s| < 0.172,
// by atanh's series to s^13 (truncation < 1e-10 relative).
float log1p_small(float f) {
    float s = f / (2.0 + f);
    float s2 = s * s;
    return 2.0 * s + 2.0 * s * s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (
           1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0))))));
}

float log_acc(float x) {
    if (f32_is_nan(x)) return x;
    if (x < 0.0) return NAN_F;
    if (x == 0.0) return -INF_F;
    if (f32_is_inf(x)) return x;
    int e;
    float m = frexp(x, e);  // x = m 2^e, m in [1/2, 1)
    if (m < 0.70710678) { m *= 2.0; e -= 1; }
    float k = float(e);     // log x = e ln 2 + log(1 + (m - 1)), m - 1 exact
    return k * LN2_HI + (log1p_small(m - 1.0) + k * LN2_LO);
}

float log1p_acc(float x) {
    if (f32_is_nan(x) || f32_is_inf(x)) return x < 0.0 ? NAN_F : x;
    if (x > -0.29289321 && x < 0.41421356) return log1p_small(x);
    float u = 1.0 + x;  // log(1 + x) = log u - (u - 1 - x) / u: the rounding of 1 + x undone
    return log_acc(u) - ((u - 1.0) - x) / u;
}

// tanh x = x + x^3 T(x^2) for |x| <= 0.625 (a least-squares fit, relative error < 2e-10), else
// 1 - 2 / (e^(2|x|) + 1) with e^(2|x|) - 1 from expm1.
float tanh_acc(float x) {
    float a = abs(x);
    if (f32_is_nan(x) || a <= 0.625) {
        float u = x * x;
        return x + x * u * (-0.33333331012779566 + u * (0.13333212575945808 + u * (
               -0.053947462039552536 + u * (0.021704037935132016 + u * (-0.00818474445189638 +
               u * 0.00214905286453028)))));
    }
    float t = a > 9.5 ? 1.0 : 1.0 - 2.0 / (expm1_acc(2.0 * a) + 2.0);
    return x < 0.0 ? -t : t;
}

// 1 / (1 + e^-x), with e^-|x| so that neither branch overflows or cancels.
float sigmoid_acc(float x) {
    if (f32_is_nan(x)) return x;
    float e = exp_acc(-abs(x));
    float s = 1.0 / (1.0 + e);
    return x >= 0.0 ? s : e * s;
}

// erf(x) / x for |x| <= 1 and erfc(z) for 0.5 <= z <= ERFC_MAX: the fits in vkgrad/kernels.py.
float erf_over_x(float u) {  // u = x^2
    return ERF_P0 + u * (ERF_P1 + u * (ERF_P2 + u * (ERF_P3 + u * (ERF_P4 + u * (ERF_P5 +
           u * ERF_P6)))));
}

// erfc(z) for z >= 0.5 given z^2 = hi + lo with hi exact: e^(-z^2) as e^-hi e^-lo, so the
// rounding of z^2 (z^2 ulps at 2^-24, up to 110 of them) does not reach the result.
float erfc_tail(float z, float hi, float lo) {
    if (z > ERFC_MAX) return 0.0;
    float t = 1.0 / (1.0 + 0.5 * z);
    float r = ERFC_R0 + t * (ERFC_R1 + t * (ERFC_R2 + t * (ERFC_R3 + t * (ERFC_R4 + t * (ERFC_R5 +
              t * (ERFC_R6 + t * (ERFC_R7 + t * (ERFC_R8 + t * (ERFC_R9 + t * ERFC_R10)))))))));
    return exp_acc(-hi) * exp_acc(-lo) * r;
}

// x with its 12 low mantissa bits cleared: the square of the result is exact.
float high_bits(float x) { return uintBitsToFloat(floatBitsToUint(x) & 0xfffff000u); }

float erf_acc(float x) {
    float a = abs(x);
    if (f32_is_nan(x) || a <= 1.0) return x * erf_over_x(x * x);
    if (a >= 3.92) return x < 0.0 ? -1.0 : 1.0;  // erfc(3.92) < 2^-25: erf rounds to 1
    float h = high_bits(a);
    float r = 1.0 - erfc_tail(a, h * h, (a - h) * (a + h));
    return x < 0.0 ? -r : r;
}

// gelu(x) = x Phi(x) = x erfc(-x / sqrt 2) / 2. For x < 0, erfc of a positive argument, so the
// tail keeps its relative accuracy (1 + erf(x / sqrt 2) would cancel); z^2 = x^2 / 2 is split
// from x itself, not from the rounded x / sqrt 2.
float gelu_acc(float x) {
    if (f32_is_nan(x)) return x;
    float z = abs(x) * INV_SQRT2;
    if (x >= 0.0) {
        if (z <= 1.0) return 0.5 * x * (1.0 + z * erf_over_x(z * z));
        if (z >= 3.92) return x;
        float h = high_bits(x);
        return x - 0.5 * x * erfc_tail(z, 0.5 * (h * h), 0.5 * ((x - h) * (x + h)));
    }
    if (z < 0.5) return 0.5 * x * (1.0 - z * erf_over_x(z * z));
    if (z > ERFC_MAX) return f32_is_inf(x) ? NAN_F : -0.0;  // -inf * 0, as torch and numpy
    float h = high_bits(x);
    return 0.5 * x * erfc_tail(z, 0.5 * (h * h), 0.5 * ((x - h) * (x + h)));
}

// torch's gelu(approximate="tanh"): x (1 + tanh u) / 2 = x sigmoid(2u), u = sqrt(2 / pi) (x +
// 0.044715 x^3); the sigmoid form does not cancel for x < 0.
float gelu_tanh_acc(float x) {
    return x * sigmoid_acc(2.0 * 0.79788456080286536 * x * (1.0 + 0.044715 * x * x));
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
        if (a == 0.0) return b < 0.0 ? INF_F : 0.0;
        bool odd = b == floor(b) && mod(b, 2.0) == 1.0;
        if (f32_is_inf(a) && a < 0.0) {  // IEEE: (-inf)^b = (-0)^-b, negative only for odd b
            float m = b > 0.0 ? INF_F : 0.0;
            return odd ? -m : m;
        }
        float r = pow(abs(a), b);
        if (a < 0.0) {
            if (b != floor(b)) return NAN_F;
            if (odd) r = -r;
        }
        return r;
    }
    case OP_MAXIMUM: return (f32_is_nan(a) || f32_is_nan(b)) ? NAN_F : max(a, b);
    case OP_MINIMUM: return (f32_is_nan(a) || f32_is_nan(b)) ? NAN_F : min(a, b);
    case OP_CLIP: return (f32_is_nan(a) || f32_is_nan(b) || f32_is_nan(c)) ? NAN_F
                                                                       : min(max(a, b), c);
    case OP_EXP: return exp_acc(a);
    case OP_LOG: return log_acc(a);
    case OP_LOG1P: return log1p_acc(a);
    case OP_EXPM1: return expm1_acc(a);
    case OP_SQRT: return sqrt(a);
    case OP_RSQRT: return 1.0 / sqrt(a);
    case OP_RECIPROCAL: return 1.0 / a;
    case OP_SIN: return sin(a);
    case OP_COS: return cos(a);
    case OP_TANH: return tanh_acc(a);
    case OP_SIGMOID: return sigmoid_acc(a);
    case OP_SILU: return a * sigmoid_acc(a);
    case OP_RELU: return f32_is_nan(a) ? a : max(a, 0.0);
    case OP_GELU: return gelu_acc(a);
    case OP_GELU_TANH: return gelu_tanh_acc(a);
    case OP_ERF: return erf_acc(a);
    case OP_SOFTPLUS: return f32_is_nan(a) ? a : max(a, 0.0) + log1p_acc(exp_acc(-abs(a)));
    case OP_SIGN: return f32_is_nan(a) ? a : sign(a);
    case OP_FLOOR: return floor(a);
    case OP_CEIL: return ceil(a);
    case OP_ROUND: return roundEven(a);
    case OP_ISNAN: return truth(f32_is_nan(a));
    case OP_ISINF: return truth(f32_is_inf(a));
    case OP_ISFINITE: return truth((floatBitsToUint(a) & 0x7f800000u) != 0x7f800000u);
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
