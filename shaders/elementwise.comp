#version 450
#extension GL_GOOGLE_include_directive : require
// Every elementwise op: unary, binary and ternary, over strided and broadcast operands of any
// dtype. The op and the operand dtypes are specialization constants, so each pipeline holds only
// its own op's code. Variants: DOMAIN_FLOAT (f32 math), DOMAIN_INT (int32), DOMAIN_UINT (uint32).
#include "common.glsl"

#include "elementwise_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

#if defined(DOMAIN_FLOAT)
#define T float
#define LOAD load_f32
#define FROM_BITS bits_to_f32
#define TO_BITS f32_to_bits
#elif defined(DOMAIN_INT)
#define T int
#define LOAD load_i32
#define FROM_BITS bits_to_i32
#define TO_BITS i32_to_bits
#else
#define T uint
#define LOAD load_u32
#define FROM_BITS bits_to_u32
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
#define LN2 0.69314718055994531
#define LOG10_2_HI 0.301025390625           // log10(2) in 15 bits: k * LOG10_2_HI is exact
#define LOG10_2_LO 4.6050389811980175e-06   // log10(2) - LOG10_2_HI
#define LOG10E 0.43429448190325182
#define INV_LN2_HI 1.4426950216293335          // 1 / ln 2 as a float32 and the rest
#define INV_LN2_LO 1.9259629911266175e-08
#define PI 3.14159265358979324
#define PI_2 1.57079632679489662
#define PI_4 0.78539816339744831
#define PIO2_1 1.57080078125                // pi/2 in three 12-bit parts and the rest
#define PIO2_2 -4.453584551811218e-06
#define PIO2_3 -8.706138032721356e-10
#define PIO2_4 6.223372171896613e-14
#define SELU_ALPHA 1.6732632423543772
#define SELU_SCALE 1.0507009873554805

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

// x = m 2^e, m in [1/2, 1), for finite x > 0, subnormal x too: a driver's frexp may misread
// those (lavapipe's gave log(1e-40) = -88.0), so they are scaled by 2^24 first. (A device that
// flushes them to zero takes them for 0 before this.)
float frexp_all(float x, out int e) {
    bool tiny = x < 1.17549435e-38;
    float m = frexp(tiny ? x * 16777216.0 : x, e);
    if (tiny) e -= 24;
    return m;
}

// x = 2^k (1 + f) for finite x > 0, with 1 + f in [sqrt(1/2), sqrt(2)): returns log(1 + f)
// (f exact), the part of log x that is not k ln 2.
float log_split(float x, out float k) {
    int e;
    float m = frexp_all(x, e);
    if (m < 0.70710678) { m *= 2.0; e -= 1; }
    k = float(e);
    return log1p_small(m - 1.0);
}

// log x, log2 x or log10 x (base_hi + base_lo = log_b 2, base_hi in 15 bits so that k base_hi
// is exact; inv_ln = 1 / ln b) as k log_b 2 + log(1 + f) / ln b. Base 2 gives k exactly.
float log_base(float x, float base_hi, float base_lo, float inv_ln) {
    if (f32_is_nan(x)) return x;
    if (x < 0.0) return NAN_F;
    if (x == 0.0) return -INF_F;
    if (f32_is_inf(x)) return x;
    float k;
    float l = log_split(x, k);
    return k * base_hi + (l * inv_ln + k * base_lo);
}

float log_acc(float x) { return log_base(x, LN2_HI, LN2_LO, 1.0); }

float log1p_acc(float x) {
    if (f32_is_nan(x) || f32_is_inf(x)) return x < 0.0 ? NAN_F : x;
    if (x > -0.29289321 && x < 0.41421356) return log1p_small(x);
    if (x == -1.0) return -INF_F;  // (u = 0 below: the correction would be 0 / 0)
    // log(1 + x) = log u - (u - 1 - x) / u: the rounding of 1 + x undone (precise: Mesa's NIR
    // had folded the correction to 0, see two_sum)
    precise float u = 1.0 + x;
    precise float rounding = (u - 1.0) - x;
    return log_acc(u) - rounding / u;
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

float softplus_acc(float x) {  // log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
    return f32_is_nan(x) ? x : max(x, 0.0) + log1p_acc(exp_acc(-abs(x)));
}

// |r| with the sign bit of s (copysign).
float with_sign(float r, float s) {
    return uintBitsToFloat((floatBitsToUint(r) & 0x7fffffffu) | (floatBitsToUint(s) & 0x80000000u));
}

// 2^(x + lo) for a non-NaN x and a small lo: 2^n 2^r, n = round(x), r = (x - n) + lo, x - n exact
// (|x - n| <= 1/2), 2^r = 1 + expm1(r ln 2) with |r ln 2| <= ln(2)/2 (and lo's share).
float exp2_split(float x, float lo) {
    if (x >= 128.0) return INF_F;
    if (x < -150.0) return 0.0;
    float n = roundEven(x);
    precise float r = (x - n) + lo;
    return scale2(1.0 + expm1_small(r * LN2), n);
}

float exp2_acc(float x) { return f32_is_nan(x) ? x : exp2_split(x, 0.0); }

// The error-free steps below are `precise` (SPIR-V NoContraction): compilers may otherwise
// rewrite them by real-number algebra (Mesa's NIR folds (a + b) - a to b), which is what they
// exist to avoid.
// a b = p + e exactly (Dekker's product): the 12-bit halves' products are exact, and so is each
// step of e.
float two_prod(float a, float b, out float e) {
    precise float p = a * b;
    float ah = high_bits(a), bh = high_bits(b);
    precise float al = a - ah, bl = b - bh;
    precise float r = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    e = r;
    return p;
}

// a + b = s + e exactly (Knuth's two-sum).
float two_sum(float a, float b, out float e) {
    precise float s = a + b;
    precise float bb = s - a;
    precise float r = (a - (s - bb)) + (b - bb);
    e = r;
    return s;
}

// log2 x = hi + lo for finite x > 0, to about 2^-40 relative: x = 2^k (1 + f) (log_split's f),
// log(1 + f) = 2 atanh(s) with s = f / (2 + f) carried as s + s_lo, s_lo from the division's
// exact residual f - s (2 + f) (so the division's own rounding, 2.5 ulps on a GPU, cancels),
// the series past 2s in float (it is below 1% of log(1 + f)); then times 1 / ln 2 and plus k
// in two-float arithmetic.
float log2_split(float x, out float lo) {
    int e;
    float m = frexp_all(x, e);
    if (m < 0.70710678) { m *= 2.0; e -= 1; }
    float f = m - 1.0;
    precise float d = 2.0 + f, d_lo = f - (d - 2.0);  // 2 + f = d + d_lo exactly
    float s = f / d, pe;
    float p = two_prod(s, d, pe);                     // f - p exact (Sterbenz)
    precise float residual = ((f - p) - pe) - s * d_lo;
    float s_lo = residual / d;
    float u = s * s;
    float tail = 2.0 * s * u * (1.0 / 3.0 + u * (1.0 / 5.0 + u * (1.0 / 7.0 + u * (1.0 / 9.0 +
                 u * (1.0 / 11.0 + u * (1.0 / 13.0))))));
    float q_lo;
    float q = two_prod(2.0 * s, INV_LN2_HI, q_lo);  // log2(1 + f) = q + q_lo
    q_lo += 2.0 * s * INV_LN2_LO + (2.0 * s_lo + tail) * INV_LN2_HI;
    float k_lo;
    float hi = two_sum(float(e), q, k_lo);
    lo = k_lo + q_lo;
    return hi;
}

// x^y for x > 0 (infinite too) and y != 0 (infinite too), x != 1: 2^(y log2 x) with y log2 x
// from log2_split and Dekker's product, so that the rounding of t = y log2 x (|t| ulps of the
// result in exp2(y * log2(x)), the driver's pow) does not reach 2^t.
float pow_pos(float x, float y) {
    if (f32_is_inf(y)) return (x > 1.0) == (y > 0.0) ? INF_F : 0.0;
    if (f32_is_inf(x)) return y > 0.0 ? INF_F : 0.0;
    float l_lo;
    float l = log2_split(x, l_lo);
    if (abs(y * l) > 200.0) return y * l > 0.0 ? INF_F : 0.0;
    float t_lo;
    float t = two_prod(y, l, t_lo);
    return exp2_split(t, t_lo + y * l_lo);
}

// 2/pi in bits, most significant first, after a zero word (for windows that start before its
// first bit): 2/pi = sum over k >= 1 of two_over_pi(k) 2^(-32 k). Enough for every float32:
// Payne and Hanek's reduction below reads 96 bits from bit e - 2 on, e <= 104. (A function of
// selects, not a constant array: lavapipe builds such an array in every invocation, which made
// sin 3 times slower everywhere.)
uint two_over_pi(int k) {
    return k < 4 ? (k < 2 ? (k == 0 ? 0u : 0xa2f9836eu) : (k == 2 ? 0x4e441529u : 0xfc2757d1u))
                 : (k < 6 ? (k == 4 ? 0xf534ddc0u : 0xdb629599u)
                          : (k == 6 ? 0x3c439041u : (k == 7 ? 0xfe5163abu : 0xdebbc561u)));
}

// |x| 2/pi mod 4 for finite |x| > 6433 as q + f, q the nearest integer (mod 4), f in [-1/2, 1/2]:
// returns f pi/2. |x| = M 2^E with M a 24-bit integer; the bits of 2/pi of weight 2^(2 - E) and
// above make multiples of 4 M and drop out, so |x| 2/pi mod 4 is M W 2^-94 mod 4, W the 96 bits
// of 2/pi from weight 2^(1 - E) on: a 120-bit integer product, exact, whose bits 94 and 95 are
// q and whose lower 94 bits are the fraction (the bits of 2/pi past W add < 2^-70). The fraction
// is normalised before it is rounded to float32, so f keeps 24 bits however close |x| lies to a
// multiple of pi/2.
float reduce_pio2_large(float a, out int q) {
    int e;
    uint m = uint(frexp(a, e) * 16777216.0);  // a = m 2^(e - 24), exact
    int pos = e - 24 + 30;                    // W's first bit in two_over_pi (bit 0 = top of 0)
    int word = pos >> 5, shift = pos & 31;
    uint t0 = two_over_pi(word), t1 = two_over_pi(word + 1), t2 = two_over_pi(word + 2),
         t3 = two_over_pi(word + 3);
    uint w[3];  // (a shift by 32 is undefined in GLSL)
    w[0] = shift == 0 ? t0 : (t0 << shift) | (t1 >> (32 - shift));
    w[1] = shift == 0 ? t1 : (t1 << shift) | (t2 >> (32 - shift));
    w[2] = shift == 0 ? t2 : (t2 << shift) | (t3 >> (32 - shift));
    uint h1, l1, h2, l2, carry;
    umulExtended(m, w[1], h1, l1);
    umulExtended(m, w[2], h2, l2);
    uint r2 = uaddCarry(l1, h2, carry);      // the product's words 1 to 3 (bits 0 to 95); what
    uint r1 = m * w[0] + h1 + carry;         // carries past bit 95 is a multiple of 4
    q = int(r1 >> 30);
    uint f0 = r1 & 0x3fffffffu, f1 = r2, f2 = l2;  // the fraction, 30 + 64 bits
    float sign = 1.0;
    if (f0 >= 0x20000000u) {  // f >= 1/2: q + 1 and f - 1, negated here in 94-bit two's complement
        q += 1;
        sign = -1.0;
        f2 = ~f2 + 1u;
        f1 = ~f1 + (f2 == 0u ? 1u : 0u);
        f0 = (~f0 + (f1 == 0u && f2 == 0u ? 1u : 0u)) & 0x3fffffffu;
    }
    int scale = -30;  // f = f0 2^-30 + f1 2^-62 + f2 2^-94 (f is never 0: pi is irrational)
    if (f0 == 0u) { f0 = f1; f1 = f2; f2 = 0u; scale -= 32; }
    if (f0 == 0u) { f0 = f1; f1 = 0u; scale -= 32; }
    int lead = 31 - findMSB(f0);
    if (lead > 0) f0 = (f0 << lead) | (f1 >> (32 - lead));
    return sign * (float(f0) * ldexp(PI_2, scale - lead));
}

// x = q pi/2 + r with |r| <= pi/4 (about), r accurate to its last bits near 0 too; q mod 4 is what
// the callers use. |x| <= pi/4: r = x (-0 too). |x| <= 6433: Cody and Waite's reduction, pi/2 in
// three 12-bit parts (n PIO2_k exact for |n| < 2^12) and a fourth, whose subtractions cancel
// exactly (Sterbenz); beyond, Payne and Hanek's (reduce_pio2_large).
float reduce_pio2(float x, out int q) {
    float a = abs(x);
    if (a <= PI_4) { q = 0; return x; }
    if (a <= 6433.0) {
        float n = roundEven(x * 0.63661977236758134);
        q = int(n);
        return ((x - n * PIO2_1) - n * PIO2_2) - n * PIO2_3 - n * PIO2_4;
    }
    float r = reduce_pio2_large(a, q);
    if (x < 0.0) { q = -q; r = -r; }
    return r;
}

// sin r and cos r for |r| <= pi/4 by their Taylor series to r^13 and r^14 (truncation < 3e-12);
// sin r has the sign of r (-0 too: -0 + (+0) would be +0).
float sin_small(float r) {
    float u = r * r;
    return with_sign(r + r * u * (-1.0 / 6.0 + u * (1.0 / 120.0 + u * (-1.0 / 5040.0 + u * (
           1.0 / 362880.0 + u * (-1.0 / 39916800.0 + u * (1.0 / 6227020800.0)))))), r);
}

float cos_small(float r) {
    float u = r * r;
    return 1.0 + u * (-0.5 + u * (1.0 / 24.0 + u * (-1.0 / 720.0 + u * (1.0 / 40320.0 + u * (
           -1.0 / 3628800.0 + u * (1.0 / 479001600.0))))));
}

// sin x, cos x: x = q pi/2 + r, then +-sin r or +-cos r by q mod 4. NaN for NaN and infinities.
float sin_acc(float x) {
    if (f32_is_nan(x) || f32_is_inf(x)) return NAN_F;
    int q;
    float r = reduce_pio2(x, q);
    float v = (q & 1) == 0 ? sin_small(r) : cos_small(r);
    return (q & 2) == 0 ? v : -v;
}

float cos_acc(float x) {
    if (f32_is_nan(x) || f32_is_inf(x)) return NAN_F;
    int q;
    float r = reduce_pio2(x, q);
    float v = (q & 1) == 0 ? cos_small(r) : sin_small(r);
    return ((q + 1) & 2) == 0 ? v : -v;
}

// tan x = sin r / cos r for even q, -cos r / sin r for odd q.
float tan_acc(float x) {
    if (f32_is_nan(x) || f32_is_inf(x)) return NAN_F;
    int q;
    float r = reduce_pio2(x, q);
    float s = sin_small(r), c = cos_small(r);
    return (q & 1) == 0 ? s / c : -c / s;
}

// 1 / sqrt(x) by inversesqrt (2 ulps; 1.0 / sqrt(x) adds a division's 2.5 to sqrt's 6.5),
// which GLSL leaves undefined for x <= 0: IEEE's +-inf at +-0 and NaN below are given here, and
// 0 at +inf.
float rsqrt(float x) {
    if (x > 0.0) return f32_is_inf(x) ? 0.0 : inversesqrt(x);
    return x == 0.0 ? with_sign(INF_F, x) : NAN_F;
}

// sqrt x for x >= 0 (NaN below, as IEEE), rounded as IEEE's within a hair: the driver's s
// (1 / inversesqrt: 6.5 ulps allowed) and one Newton step s + (x - s^2) / (2s) with x - s^2
// exact (Dekker's product; x - p by Sterbenz), whose own error is far below an ulp.
float sqrt_acc(float x) {
    if (!(x >= 0.0)) return NAN_F;  // GLSL leaves sqrt(x < 0) undefined
    float s = sqrt(x);
    if (s == 0.0 || f32_is_inf(s)) return s;
    float e;
    float p = two_prod(s, s, e);
    precise float residual = (x - p) - e;
    return s + residual / (2.0 * s);
}

// atan x: |x| <= tan(pi/8) directly; up to tan(3pi/8) as pi/4 + atan((|x| - 1) / (|x| + 1));
// beyond as pi/2 + atan(-1 / |x|); atan t for |t| <= tan(pi/8) by its series to t^23
// (truncation < 3e-11 relative).
float atan_acc(float x) {
    if (f32_is_nan(x)) return x;
    float a = abs(x), base = 0.0, t = a;
    if (a > 2.4142135) { base = PI_2; t = -1.0 / a; }
    else if (a > 0.41421356) { base = PI_4; t = (a - 1.0) / (a + 1.0); }
    float u = t * t;
    float p = -1.0 / 3.0 + u * (1.0 / 5.0 + u * (-1.0 / 7.0 + u * (1.0 / 9.0 + u * (-1.0 / 11.0 +
              u * (1.0 / 13.0 + u * (-1.0 / 15.0 + u * (1.0 / 17.0 + u * (-1.0 / 19.0 + u * (
              1.0 / 21.0 + u * (-1.0 / 23.0))))))))));
    return with_sign(base + (t + t * u * p), x);
}

// atan2(y, x) as numpy and C: the quadrant from the signs (of zeros too), atan |y / x| inside it.
float atan2_acc(float y, float x) {
    if (f32_is_nan(y) || f32_is_nan(x)) return NAN_F;
    bool neg_x = (floatBitsToUint(x) & 0x80000000u) != 0u;
    float r;
    if (y == 0.0) r = neg_x ? PI : 0.0;
    else if (f32_is_inf(x) && f32_is_inf(y)) r = neg_x ? 3.0 * PI_4 : PI_4;
    else {
        r = atan_acc(abs(y) / abs(x));  // x == 0: atan(inf) = pi/2
        if (neg_x) r = PI - r;
    }
    return with_sign(r, y);
}

// asin x = atan2(x, sqrt((1 - x)(1 + x))), acos x = atan2(sqrt((1 - x)(1 + x)), x): 1 - x is
// exact near 1, so both keep their relative accuracy at the ends of [-1, 1] and near 0.
float asin_acc(float x) {
    if (f32_is_nan(x)) return x;
    if (abs(x) > 1.0) return NAN_F;
    return atan2_acc(x, sqrt_acc((1.0 - abs(x)) * (1.0 + abs(x))));
}

float acos_acc(float x) {
    if (f32_is_nan(x)) return x;
    if (abs(x) > 1.0) return NAN_F;
    return atan2_acc(sqrt_acc((1.0 - x) * (1.0 + x)), x);
}

// e^|x| / 2 for |x| > 9 (where e^-|x| is below half an ulp of it), past e^x's overflow too.
float half_exp(float a) {
    if (a <= 88.0) return 0.5 * exp_acc(a);
    float t = exp_acc(0.5 * a);
    return (0.5 * t) * t;
}

// sinh x = (E + E / (E + 1)) / 2, E = expm1 |x|: no cancellation, exact near 0.
float sinh_acc(float x) {
    if (f32_is_nan(x)) return x;
    float a = abs(x);
    if (a > 9.0) return with_sign(half_exp(a), x);
    float e = expm1_acc(a);
    return with_sign(0.5 * (e + e / (e + 1.0)), x);
}

float cosh_acc(float x) {
    if (f32_is_nan(x)) return x;
    float a = abs(x);
    if (a > 9.0) return half_exp(a);
    float t = exp_acc(a);
    return 0.5 * (t + 1.0 / t);
}

// asinh |x| = log1p(|x| + x^2 / (1 + sqrt(1 + x^2))); log(2 |x|) beyond 4096, where the rest,
// 1 / (4 x^2), is below float32's resolution.
float asinh_acc(float x) {
    if (f32_is_nan(x)) return x;
    float a = abs(x);
    float r = a > 4096.0 ? log_acc(a) + LN2 : log1p_acc(a + a * a / (1.0 + sqrt_acc(1.0 + a * a)));
    return with_sign(r, x);
}

// acosh x = log1p(t + sqrt(t (x + 1))), t = x - 1 exact: accurate near 1, where acosh is
// sqrt(2t); log(2x) beyond 4096.
float acosh_acc(float x) {
    if (f32_is_nan(x)) return x;
    if (x < 1.0) return NAN_F;
    if (x > 4096.0) return log_acc(x) + LN2;
    float t = x - 1.0;
    return log1p_acc(t + sqrt_acc(t * (x + 1.0)));
}

// atanh x = log1p(2|x| / (1 - |x|)) / 2, with the sign of x.
float atanh_acc(float x) {
    if (f32_is_nan(x)) return x;
    float a = abs(x);
    if (a > 1.0) return NAN_F;
    return with_sign(a == 1.0 ? INF_F : 0.5 * log1p_acc(2.0 * a / (1.0 - a)), x);
}

// log(e^a + e^b) = max + log1p(e^-|a - b|); equal arguments (infinities too) give a + ln 2.
float logaddexp_acc(float a, float b) {
    if (f32_is_nan(a) || f32_is_nan(b)) return NAN_F;
    if (a == b) return a + LN2;
    return max(a, b) + log1p_acc(exp_acc(-abs(a - b)));
}

// mish x = x tanh(softplus x) = x n / (n + 2), n = e^x (e^x + 2), from (1 + e^x)^2 - 1 over
// (1 + e^x)^2 + 1: no tanh of a rounded softplus; x beyond 20 (tanh rounds to 1 from 9 on).
float mish_acc(float x) {
    if (f32_is_nan(x) || x > 20.0) return x;
    float e = exp_acc(x);
    float n = e * (e + 2.0);
    return x * (n / (n + 2.0));
}

// x 2^k for an integer k in [-252, 254], exact where the result is a float (a subnormal one too,
// on a device that keeps them): two products with powers of two built from their bits.
float scale_pow2(float x, int k) {
    int k1 = clamp(k, -126, 127);
    return x * uintBitsToFloat(uint(k1 + 127) << 23) * uintBitsToFloat(uint(k - k1 + 127) << 23);
}

// x mod y for finite x >= 0, y > 0, exactly (the remainder always is a float), in integers:
// x = X 2^ex, y = Y 2^ey with 24-bit X, Y (from the bits, subnormals too), and x >= y implies
// ex >= ey, so x mod y = (X 2^(ex - ey) mod Y) 2^ey, the power of two taken in steps of 8 bits
// (r < Y < 2^24, so r 2^8 fits a uint): at most 32 steps for float32's widest ex - ey, 253.
// No fma (lavapipe's rounds twice) and no division of floats, so exact on every device.
float fmod_mag(float x, float y) {
    if (x < y) return x;
    uint ux = floatBitsToUint(x), uy = floatBitsToUint(y);
    uint fx = ux >> 23, fy = uy >> 23;  // exponent fields (the sign bits are 0)
    uint r = fx == 0u ? ux : (ux & 0x7fffffu) | 0x800000u;
    uint m = fy == 0u ? uy : (uy & 0x7fffffu) | 0x800000u;
    int ey = int(max(fy, 1u)) - 150;
    int g = int(max(fx, 1u)) - 150 - ey;
    [[dont_unroll]] for (int step = 0; step < 32; ++step) {
        int k = min(g, 8);
        r = (r << k) % m;
        g -= k;
        if (g == 0) break;
    }
    return scale_pow2(float(r), ey);
}

// fmod as C and numpy: a - trunc(a / b) b, exact (fmod_mag), with the sign of a; NaN for b 0.
float c_fmod(float a, float b) {
    if (b == 0.0 || f32_is_inf(a) || f32_is_nan(a) || f32_is_nan(b)) return NAN_F;
    if (f32_is_inf(b)) return a;
    return with_sign(fmod_mag(abs(a), abs(b)), a);
}

// numpy's floor division (npy_divmod), exact where floor(a / b) is not: (a - fmod(a, b)) / b
// moved to the divisor's side and rounded to the nearest integer; NaN for an infinite a.
float py_floordiv(float a, float b) {
    if (b == 0.0) return a / b;
    float m = c_fmod(a, b);
    float q = (a - m) / b;
    if (m != 0.0 && ((b < 0.0) != (m < 0.0))) q -= 1.0;
    if (q == 0.0) return with_sign(0.0, a / b);
    float f = floor(q);
    return q - f > 0.5 ? f + 1.0 : f;
}

// numpy's float remainder: fmod moved to the divisor's side, so it has the divisor's sign
// (torch's too; a zero is signed as the divisor, as numpy), and a finite a with an infinite b
// keeps a (or gives b) instead of a - inf * 0.
float py_mod(float a, float b) {
    float r = c_fmod(a, b);
    if (r != 0.0 && ((r < 0.0) != (b < 0.0))) r += b;
    return r == 0.0 ? with_sign(0.0, b) : r;
}
#else
// Integer division truncated toward zero, on magnitudes (GLSL leaves / and % of negative
// operands undefined): numpy's 0 for division by zero; INT_MIN / -1 wraps to INT_MIN.
T trunc_div(T a, T b) {
    if (b == T(0)) return T(0);
#if defined(DOMAIN_INT)
    uint ua = a < 0 ? 0u - uint(a) : uint(a), ub = b < 0 ? 0u - uint(b) : uint(b);
    uint q = ua / ub;
    return (a < 0) != (b < 0) ? int(0u - q) : int(q);
#else
    return a / b;
#endif
}
T c_fmod(T a, T b) {  // a - trunc(a / b) b: the sign of a, as C and numpy's fmod (0 for b 0)
    return b == T(0) ? T(0) : a - trunc_div(a, b) * b;
}
T py_floordiv(T a, T b) {  // rounded toward -inf (numpy, Python)
    T q = trunc_div(a, b);
#if defined(DOMAIN_INT)
    if (b != 0 && a - q * b != 0 && ((a < 0) != (b < 0))) q -= 1;
#endif
    return q;
}
T py_mod(T a, T b) {  // the sign of b (numpy's remainder, torch's remainder)
    if (b == T(0)) return T(0);
    return a - py_floordiv(a, b) * b;
}
// Shifts as numpy and torch: a count outside [0, 32) shifts every bit out (0, or -1 for a
// negative int shifted right); GLSL leaves such shifts undefined, so they never reach it.
T shift_left(T a, T b) {
#if defined(DOMAIN_INT)
    if (b < 0 || b >= 32) return 0;
#else
    if (b >= 32u) return 0u;
#endif
    return a << b;
}
T shift_right(T a, T b) {
#if defined(DOMAIN_INT)
    if (b < 0 || b >= 32) return a < 0 ? -1 : 0;
#else
    if (b >= 32u) return 0u;
#endif
    return a >> b;
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
    case OP_FLOORDIV: return py_floordiv(a, b);
    case OP_MOD: return py_mod(a, b);
    case OP_POW: {  // IEEE's pow (numpy's): signs, zeros, infinities and NaN here, pow_pos beyond
        if (b == 0.0 || a == 1.0) return 1.0;  // IEEE: also for a NaN or infinite other side
        if (f32_is_nan(a) || f32_is_nan(b)) return NAN_F;  // (the driver's pow(NaN, 3) was 0)
        if (b == 2.0) return a * a;
        // odd integer b: every float beyond 2^24 is even, and b / 2 is exact
        bool odd = b == floor(b) && floor(b * 0.5) != b * 0.5;
        if (a == 0.0) return b < 0.0 ? (odd ? with_sign(INF_F, a) : INF_F) : (odd ? a : 0.0);
        if (a == -1.0 && f32_is_inf(b)) return 1.0;  // IEEE: (-1)^+-inf = 1, as 1^+-inf
        if (f32_is_inf(a) && a < 0.0) {  // IEEE: (-inf)^b = (-0)^-b, negative only for odd b
            float m = b > 0.0 ? INF_F : 0.0;
            return odd ? -m : m;
        }
        float r = pow_pos(abs(a), b);
        if (a < 0.0) {
            if (b != floor(b)) return NAN_F;
            if (odd) r = -r;
        }
        return r;
    }
    case OP_MAXIMUM: return (f32_is_nan(a) || f32_is_nan(b)) ? NAN_F : max(a, b);
    case OP_MINIMUM: return (f32_is_nan(a) || f32_is_nan(b)) ? NAN_F : min(a, b);
    case OP_CLIP:
    case OP_HARDTANH: return (f32_is_nan(a) || f32_is_nan(b) || f32_is_nan(c)) ? NAN_F
                                                                       : min(max(a, b), c);
    case OP_EXP: return exp_acc(a);
    case OP_LOG: return log_acc(a);
    case OP_LOG1P: return log1p_acc(a);
    case OP_EXPM1: return expm1_acc(a);
    case OP_SQRT: return sqrt_acc(a);
    case OP_RSQRT: return rsqrt(a);
    case OP_RECIPROCAL: return 1.0 / a;
    case OP_SIN: return sin_acc(a);
    case OP_COS: return cos_acc(a);
    case OP_TANH: return tanh_acc(a);
    case OP_SIGMOID: return sigmoid_acc(a);
    case OP_SILU: return a * sigmoid_acc(a);
    case OP_RELU: return f32_is_nan(a) ? a : max(a, 0.0);
    case OP_GELU: return gelu_acc(a);
    case OP_GELU_TANH: return gelu_tanh_acc(a);
    case OP_ERF: return erf_acc(a);
    case OP_SOFTPLUS: return softplus_acc(a);
    case OP_SOFTPLUS_BETA: return a * b > c ? a : softplus_acc(a * b) / b;  // torch's threshold
    case OP_TRUNC: return trunc(a);
    case OP_LOG2: return log_base(a, 1.0, 0.0, LOG2E);
    case OP_LOG10: return log_base(a, LOG10_2_HI, LOG10_2_LO, LOG10E);
    case OP_EXP2: return exp2_acc(a);
    case OP_TAN: return tan_acc(a);
    case OP_ASIN: return asin_acc(a);
    case OP_ACOS: return acos_acc(a);
    case OP_ATAN: return atan_acc(a);
    case OP_SINH: return sinh_acc(a);
    case OP_COSH: return cosh_acc(a);
    case OP_ASINH: return asinh_acc(a);
    case OP_ACOSH: return acosh_acc(a);
    case OP_ATANH: return atanh_acc(a);
    case OP_SELU: return a > 0.0 ? a * SELU_SCALE : expm1_acc(a) * (SELU_ALPHA * SELU_SCALE);
    case OP_HARDSIGMOID: return f32_is_nan(a) ? a : min(max(a + 3.0, 0.0), 6.0) / 6.0;
    case OP_HARDSWISH: return f32_is_nan(a) ? a : a * min(max(a + 3.0, 0.0), 6.0) / 6.0;
    case OP_MISH: return mish_acc(a);
    case OP_SOFTSIGN: return a / (1.0 + abs(a));
    case OP_LOGSIGMOID: return f32_is_nan(a) ? a : min(a, 0.0) - log1p_acc(exp_acc(-abs(a)));
    case OP_TRUNCDIV: return trunc(a / b);
    case OP_FMOD: return c_fmod(a, b);
    case OP_COPYSIGN: return with_sign(a, b);
    case OP_LOGADDEXP: return logaddexp_acc(a, b);
    case OP_ATAN2: return atan2_acc(a, b);
    case OP_LEAKY_RELU: return a > 0.0 ? a : a * b;
    case OP_ELU: return a > 0.0 ? a : b * expm1_acc(a * c);  // b: alpha, c: input scale
    case OP_LERP: return abs(c) < 0.5 ? a + c * (b - a) : b - (b - a) * (1.0 - c);  // as torch
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
    case OP_TRUNCDIV: return trunc_div(a, b);
    case OP_FMOD: return c_fmod(a, b);
    case OP_LSHIFT: return shift_left(a, b);
    case OP_RSHIFT: return shift_right(a, b);
    case OP_BITNOT: return OUT_DT == DT_BOOL ? truth(a == T(0)) : ~a;  // a bool's ~ is its not
    case OP_POW: return int_pow(a, b);
    case OP_MAXIMUM: return max(a, b);
    case OP_MINIMUM: return min(a, b);
    case OP_CLIP:
    case OP_HARDTANH: return min(max(a, b), c);
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

// Element offsets of row-major index i (< 2^31) in out and the operands: coordinates split off
// innermost first without dividing (split_coord); contiguous operands coalesce to one dim, i.
void offsets(uint i, out int oo, out int ao, out int bo, out int co) {
    uint rest = i;
    oo = 0; ao = 0; bo = 0; co = 0;
    for (int d = int(p.ndim) - 1; d > 0; --d) {
        int c = split_coord(rest, p.inner[d - 1], p.magic[d - 1], p.shifts, d - 1);
        oo += c * p.out_strides[d];
        ao += c * p.a_strides[d];
        bo += c * p.b_strides[d];
        co += c * p.c_strides[d];
    }
    int c = int(rest);
    oo += c * p.out_strides[0];
    ao += c * p.a_strides[0];
    bo += c * p.b_strides[0];
    co += c * p.c_strides[0];
}

// The arena's chunks again, as 16- and 8-byte words: four elements of any dtype per access.
layout(std430, binding = 0) buffer ArenaQuads { uvec4 quads[]; } arena_quads[ARENA_SLOTS];
layout(std430, binding = 0) buffer ArenaPairs { uvec2 pairs[]; } arena_pairs[ARENA_SLOTS];

// Whether operand (dt, start, stride) of a one-dim domain is read four elements at a time, in
// whole aligned words: an immediate, or contiguous elements from a multiple of 4.
bool by_quads(uint dt, uint start, int stride) {
    return dt == DT_IMM || (stride == 1 && start % 4u == 0u);
}

// Elements 4q .. 4q + 3 of a by_quads operand, their bits shifted down (an immediate's: `start`).
uvec4 load_quad(uint dt, uint slot, uint start, uint q) {
    if (dt == DT_IMM) return uvec4(start);
    uint e = start + 4u * q;
    if (elems_per_word(dt) == 1u) return arena_quads[slot].quads[e >> 2];
    if (dt == DT_BFLOAT16) {
        uvec2 h = arena_pairs[slot].pairs[e >> 2];
        return uvec4(h.x & 0xffffu, h.x >> 16, h.y & 0xffffu, h.y >> 16);
    }
    uint b = ARENA_AT(slot, e >> 2);
    return uvec4(b & 0xffu, (b >> 8) & 0xffu, (b >> 16) & 0xffu, b >> 24);
}

// Output elements 4q .. 4q + 3 (out by_quads), from their bits.
void store_quad(uint q, uvec4 r) {
    uint e = p.out_start + 4u * q;
    if (elems_per_word(OUT_DT) == 1u) {
        arena_quads[SLOT_out_start].quads[e >> 2] = r;
    } else if (OUT_DT == DT_BFLOAT16) {
        arena_pairs[SLOT_out_start].pairs[e >> 2] = uvec2(r.x | (r.y << 16), r.z | (r.w << 16));
    } else {
        ARENA_AT(SLOT_out_start, e >> 2) = r.x | (r.y << 8) | (r.z << 16) | (r.w << 24);
    }
}

T value(uint dt, uint bits) { return dt == DT_IMM ? LOAD(dt, 0u, bits, 0) : FROM_BITS(dt, bits); }

// The bits of an operand's element at offset `off` (an immediate's: `start`).
uint operand_bits(uint dt, uint slot, uint start, int off) {
    return dt == DT_IMM ? start : load_bits(dt, slot, start, off);
}

// Invocation q of the grid-stride loop computes the quad of elements 4q .. 4q + 3 (fewer at the
// end; ELEMS_PER_INVOCATION in vkgrad/kernels.py): whole output words of every dtype (1, 2 or
// 4 elements to a word), so that no two invocations write one word. Contiguous operands that
// start at a multiple of 4 move in 16-, 8- or 4-byte accesses; others element by element at
// their offsets. Both paths share one application of the op to the quad: lavapipe compiles
// each copy of an op's code again (a second, path-specific copy tripled pipeline creation).
void main() {
    uint per_word = elems_per_word(OUT_DT);
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint quads = (p.n + 3u) / 4u;
    bool vector = p.ndim == 1u && by_quads(OUT_DT, p.out_start, p.out_strides[0])
        && by_quads(A_DT, p.a_start, p.a_strides[0]) && by_quads(B_DT, p.b_start, p.b_strides[0])
        && by_quads(C_DT, p.c_start, p.c_strides[0]);
    for (uint q = gl_GlobalInvocationID.x; q < quads; q += threads) {
        uint first = 4u * q, count = min(4u, p.n - first);
        bool whole = vector && count == 4u;
        uvec4 a = uvec4(0u), b = uvec4(0u), c = uvec4(0u), r;  // past count: computed, unused
        ivec4 out_off;
        if (whole) {
            a = load_quad(A_DT, SLOT_a_start, p.a_start, q);
            b = load_quad(B_DT, SLOT_b_start, p.b_start, q);
            c = load_quad(C_DT, SLOT_c_start, p.c_start, q);
        } else {
            [[unroll]] for (uint k = 0u; k < 4u; ++k) {
                if (k == count) break;
                int ao, bo, co;
                offsets(first + k, out_off[k], ao, bo, co);
                a[k] = operand_bits(A_DT, SLOT_a_start, p.a_start, ao);
                b[k] = operand_bits(B_DT, SLOT_b_start, p.b_start, bo);
                c[k] = operand_bits(C_DT, SLOT_c_start, p.c_start, co);
            }
        }
        [[unroll]] for (uint k = 0u; k < 4u; ++k) {
            r[k] = (OP == OP_IDENTITY && A_DT == OUT_DT) ? a[k]  // a copy moves bits, NaN payloads too
                 : TO_BITS(OUT_DT, apply(value(A_DT, a[k]), value(B_DT, b[k]), value(C_DT, c[k])));
        }
        if (whole) {
            store_quad(q, r);
        } else if (per_word == 1u) {  // strided output: in-place writes into views
            for (uint k = 0u; k < count; ++k)
                ARENA_AT(SLOT_out_start, int(p.out_start) + out_off[k]) = r[k];
        } else {  // packed outputs are contiguous, from a word boundary
            uint word = (p.out_start + first) / per_word;
            uint packed = 0u;
            for (uint k = 0u; k < count; ++k) {
                packed |= place_bits(OUT_DT, r[k], k);
                if ((k + 1u) % per_word == 0u || k + 1u == count) {
                    ARENA_AT(SLOT_out_start, word + k / per_word) = packed;
                    packed = 0u;
                }
            }
        }
    }
}
