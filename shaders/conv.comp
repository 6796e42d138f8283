#version 450
#extension GL_GOOGLE_include_directive : require
// Convolution and pooling passes over NCHW tensors, selected by the `mode` push constant:
//
//   MODE_IM2COL         out[n, (c, i, j), (oh, ow)] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
//                       (0 in the padding): the columns a convolution multiplies by its weights
//   MODE_COL2IM         out[n, c, h, w] = sum of the column entries that read x[n, c, h, w]
//   MODE_MAXPOOL        out[n, c, oh, ow] = b at the position of the window's maximum of a
//   MODE_MAXPOOL_BACK   out[n, c, h, w] = sum of b[n, c, oh, ow] over the windows whose maximum
//                       of a lies at (h, w)
//   MODE_AVGPOOL        out[n, c, oh, ow] = sum of the window of a / divisor
//   MODE_AVGPOOL_BACK   out[n, c, h, w] = sum over the windows holding (h, w) of a / divisor
//
// Every backward pass is a gather: one invocation per input pixel visits the (at most kh * kw)
// windows that contain it, so no two invocations write the same element and sums are
// deterministic. Invocations own whole output words (bf16 outputs are written two elements at
// a time); every operand is read through its element strides; sums accumulate in f32.
// Max windows skip the padding (it acts as -inf); the first maximum wins, a NaN over any number.
#include "common.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform Params {
    uint mode; uint n; uint out_start; uint out_dt;
    uint a_start; uint a_dt; uint b_start; uint b_dt;
    uint C; uint H; uint W; uint OH; uint OW;     // channels, input and output spatial sizes
    uint kh; uint kw; uint sh; uint sw; uint ph; uint pw; uint dh; uint dw;
    uint include_pad;                             // avg pooling: divide by kh * kw always
    int a_strides[4]; int b_strides[4];           // (n, c, h, w); columns use (n, row, col)
} p;

int a_at(uint n, uint c, int h, int w) {
    return int(n) * p.a_strides[0] + int(c) * p.a_strides[1] + h * p.a_strides[2]
        + w * p.a_strides[3];
}

int b_at(uint n, uint c, int h, int w) {
    return int(n) * p.b_strides[0] + int(c) * p.b_strides[1] + h * p.b_strides[2]
        + w * p.b_strides[3];
}

// Row-major (h * W + w) of the maximum of a over window (oh, ow), or -1 if it is all padding.
int window_argmax(uint n, uint c, uint oh, uint ow) {
    float best = 0.0;
    int arg = -1;
    for (uint i = 0u; i < p.kh; ++i) {
        int h = int(oh * p.sh + i * p.dh) - int(p.ph);
        if (h < 0 || h >= int(p.H)) continue;
        for (uint j = 0u; j < p.kw; ++j) {
            int w = int(ow * p.sw + j * p.dw) - int(p.pw);
            if (w < 0 || w >= int(p.W)) continue;
            float v = load_f32(p.a_dt, p.a_start, a_at(n, c, h, w));
            if (arg < 0 || v > best || (isnan(v) && !isnan(best))) {
                best = v;
                arg = h * int(p.W) + w;
            }
        }
    }
    return arg;
}

// Input positions (with dilation 1, as pooling uses) of window `o` along one axis of size n.
uint valid_taps(uint o, uint s, uint pad, uint k, uint n) {
    int lo = int(o * s) - int(pad);
    return uint(min(lo + int(k), int(n)) - max(lo, 0));
}

float avg_divisor(uint oh, uint ow) {
    if (p.include_pad != 0u) return float(p.kh * p.kw);
    return float(valid_taps(oh, p.sh, p.ph, p.kh, p.H) * valid_taps(ow, p.sw, p.pw, p.kw, p.W));
}

// Forward passes: element e of the output (n, c, oh, ow), or of the columns for im2col.
float window_value(uint e) {
    uint ow = e % p.OW; e /= p.OW;
    uint oh = e % p.OH; e /= p.OH;
    if (p.mode == MODE_IM2COL) {
        uint j = e % p.kw; e /= p.kw;
        uint i = e % p.kh; e /= p.kh;
        uint c = e % p.C, n = e / p.C;
        int h = int(oh * p.sh + i * p.dh) - int(p.ph), w = int(ow * p.sw + j * p.dw) - int(p.pw);
        if (h < 0 || h >= int(p.H) || w < 0 || w >= int(p.W)) return 0.0;
        return load_f32(p.a_dt, p.a_start, a_at(n, c, h, w));
    }
    uint c = e % p.C, n = e / p.C;
    if (p.mode == MODE_MAXPOOL) {
        int arg = window_argmax(n, c, oh, ow);
        if (arg < 0) return uintBitsToFloat(0xff800000u);  // -inf: a window of padding only
        return load_f32(p.b_dt, p.b_start, b_at(n, c, arg / int(p.W), arg % int(p.W)));
    }
    float acc = 0.0;  // MODE_AVGPOOL
    for (uint i = 0u; i < p.kh; ++i) {
        int h = int(oh * p.sh + i) - int(p.ph);
        if (h < 0 || h >= int(p.H)) continue;
        for (uint j = 0u; j < p.kw; ++j) {
            int w = int(ow * p.sw + j) - int(p.pw);
            if (w >= 0 && w < int(p.W)) acc += load_f32(p.a_dt, p.a_start, a_at(n, c, h, w));
        }
    }
    return acc / avg_divisor(oh, ow);
}

// Backward passes: element e of the input-shaped result (n, c, h, w), gathered from every
// window (oh, ow) that holds it at tap (i, j): oh * sh + i * dh == h + ph.
float pixel_value(uint e) {
    uint w = e % p.W; e /= p.W;
    uint h = e % p.H; e /= p.H;
    uint c = e % p.C, n = e / p.C;
    int self_index = int(h * p.W + w);
    float acc = 0.0;
    for (uint i = 0u; i < p.kh; ++i) {
        int th = int(h + p.ph) - int(i * p.dh);
        if (th < 0 || th % int(p.sh) != 0 || th / int(p.sh) >= int(p.OH)) continue;
        uint oh = uint(th) / p.sh;
        for (uint j = 0u; j < p.kw; ++j) {
            int tw = int(w + p.pw) - int(j * p.dw);
            if (tw < 0 || tw % int(p.sw) != 0 || tw / int(p.sw) >= int(p.OW)) continue;
            uint ow = uint(tw) / p.sw;
            if (p.mode == MODE_COL2IM) {
                int row = int((c * p.kh + i) * p.kw + j), col = int(oh * p.OW + ow);
                acc += load_f32(p.a_dt, p.a_start, int(n) * p.a_strides[0]
                                + row * p.a_strides[1] + col * p.a_strides[2]);
            } else if (p.mode == MODE_MAXPOOL_BACK) {
                if (window_argmax(n, c, oh, ow) == self_index)
                    acc += load_f32(p.b_dt, p.b_start, b_at(n, c, int(oh), int(ow)));
            } else {  // MODE_AVGPOOL_BACK
                acc += load_f32(p.a_dt, p.a_start, a_at(n, c, int(oh), int(ow)))
                    / avg_divisor(oh, ow);
            }
        }
    }
    return acc;
}

void main() {
    bool forward = p.mode == MODE_IM2COL || p.mode == MODE_MAXPOOL || p.mode == MODE_AVGPOOL;
    uint per_word = elems_per_word(p.out_dt);
    uint words = (p.n + per_word - 1u) / per_word;
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint word = gl_GlobalInvocationID.x; word < words; word += threads) {
        uint packed = 0u;
        for (uint k = 0u; k < per_word; ++k) {
            uint e = word * per_word + k;
            if (e >= p.n) break;
            float v = forward ? window_value(e) : pixel_value(e);
            packed |= place_bits(p.out_dt, f32_to_bits(p.out_dt, v), e);
        }
        arena[p.out_start / per_word + word] = packed;
    }
}
