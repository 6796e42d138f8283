#version 450
#extension GL_GOOGLE_include_directive : require
// Convolution and pooling passes over NCHW tensors, selected by the MODE specialization constant:
//
//   MODE_IM2COL         out[(c, i, j), (oh, ow, n)] = a[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
//                       (0 in the padding): the columns a convolution multiplies by its weights
//   MODE_COL2IM         out[n, c, h, w] = sum of the column entries of a that read pixel (h, w)
//   MODE_MAXPOOL        out[n, c, oh, ow] = b at the position of the window's maximum of a
//   MODE_MAXPOOL_BACK   out[n, c, h, w] = sum of b[n, c, oh, ow] over the windows whose maximum
//                       of a lies at (h, w)
//   MODE_AVGPOOL        out[n, c, oh, ow] = sum of the window of a / divisor
//   MODE_AVGPOOL_BACK   out[n, c, h, w] = sum over the windows holding (h, w) of a / divisor
//
// Every backward pass is a gather: each input pixel visits the windows that contain it, so no two
// invocations write the same element and sums are deterministic. Each invocation writes `chunk`
// consecutive output elements (whole words of packed outputs), stepping their coordinates like
// an odometer: integer division, slow on CPU devices, happens once per chunk, not per element.
// Every operand is read through its element strides; sums accumulate in f32. Max windows skip
// the padding (it acts as -inf); the first maximum wins, and a NaN wins over any number.
#include "common.glsl"

#include "conv_layout.glsl"  // kernels.LAYOUTS: WG, limits, push constants p, spec constants

int a_at(uint n, uint c, int h, int w) {
    return int(n) * p.a_strides[0] + int(c) * p.a_strides[1] + h * p.a_strides[2]
        + w * p.a_strides[3];
}

int b_at(uint n, uint c, int h, int w) {
    return int(n) * p.b_strides[0] + int(c) * p.b_strides[1] + h * p.b_strides[2]
        + w * p.b_strides[3];
}

// ---- output: packed words, written once complete ---------------------------------------------
uint packed = 0u, packed_b = 0u;

// Element e of a contiguous output of dt that starts at `start` (a word boundary) of the chunk at
// `slot` gets `bits`.
void put(uint dt, uint slot, uint start, uint e, uint bits, inout uint word) {
    uint per = elems_per_word(dt);
    word |= place_bits(dt, bits, e);
    if (((e + 1u) & (per - 1u)) == 0u || e + 1u == p.n) {
        ARENA_AT(slot, (start + e) >> (per >> 1u)) = word;  // per is 1, 2 or 4
        word = 0u;
    }
}

void emit(uint e, float v) {
    put(OUT_DT, SLOT_out_start, p.out_start, e, f32_to_bits(OUT_DT, v), packed);
}

// ---- windows ---------------------------------------------------------------------------------
// The maximum of a over window (oh, ow), and in `tap` its tap i*kw + j (-inf and 0 if the window
// is all padding).
float window_max(uint n, uint c, uint oh, uint ow, out uint tap) {
    float best = uintBitsToFloat(0xff800000u);
    bool found = false;
    tap = 0u;
    for (uint i = 0u; i < p.kh; ++i) {
        int h = int(oh * p.sh + i * p.dh) - int(p.ph);
        if (h < 0 || h >= int(p.H)) continue;
        for (uint j = 0u; j < p.kw; ++j) {
            int w = int(ow * p.sw + j * p.dw) - int(p.pw);
            if (w < 0 || w >= int(p.W)) continue;
            float v = load_f32(A_DT, SLOT_a_start, p.a_start, a_at(n, c, h, w));
            if (!found || v > best || (f32_is_nan(v) && !f32_is_nan(best))) {
                best = v;
                tap = i * p.kw + j;
                found = true;
            }
        }
    }
    return best;
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

// The windows o along one axis whose tap t reads padded coordinate q (o*s + t*d == q) lie in
// [lo, hi]; each one still needs (q - o*s) % d == 0, and then t = (q - o*s) / d.
ivec2 window_range(int q, uint k, uint s, uint d, uint out_len) {
    int reach = q - int((k - 1u) * d);
    int lo = reach <= 0 ? 0 : (reach + int(s) - 1) / int(s);
    return ivec2(lo, min(int(out_len) - 1, q / int(s)));
}

// ---- the modes ---------------------------------------------------------------------------------
// Columns (c, i, j, oh, ow, n): the batch is innermost, so the matmul with the weights gives
// (out channel, oh, ow, n) and the host's taps are long contiguous runs.
void im2col_chunk(uint e, uint end) {
    uint n = e % p.N, r = e / p.N;
    uint ow = r % p.OW; r /= p.OW;
    uint oh = r % p.OH; r /= p.OH;
    uint j = r % p.kw; r /= p.kw;
    uint i = r % p.kh, c = r / p.kh;
    for (; e < end; ++e) {
        int h = int(oh * p.sh + i * p.dh) - int(p.ph), w = int(ow * p.sw + j * p.dw) - int(p.pw);
        bool inside = h >= 0 && h < int(p.H) && w >= 0 && w < int(p.W);
        emit(e, inside ? load_f32(A_DT, SLOT_a_start, p.a_start, a_at(n, c, h, w)) : 0.0);
        if (++n == p.N) {
            n = 0u;
            if (++ow == p.OW) {
                ow = 0u;
                if (++oh == p.OH) {
                    oh = 0u;
                    if (++j == p.kw) { j = 0u; if (++i == p.kh) { i = 0u; ++c; } }
                }
            }
        }
    }
}

// Pooling forward passes: outputs (n, c, oh, ow).
void pool_chunk(uint e, uint end) {
    uint ow = e % p.OW, r = e / p.OW;
    uint oh = r % p.OH; r /= p.OH;
    uint c = r % p.C, n = r / p.C;
    for (; e < end; ++e) {
        float v;
        if (MODE == MODE_MAXPOOL) {
            uint tap;
            v = window_max(n, c, oh, ow, tap);
            if (B_DT != DT_IMM) put(B_DT, SLOT_b_start, p.b_start, e, tap, packed_b);  // (b: the taps)
        } else {  // MODE_AVGPOOL
            float acc = 0.0;
            for (uint i = 0u; i < p.kh; ++i) {
                int h = int(oh * p.sh + i) - int(p.ph);
                if (h < 0 || h >= int(p.H)) continue;
                for (uint j = 0u; j < p.kw; ++j) {
                    int w = int(ow * p.sw + j) - int(p.pw);
                    if (w >= 0 && w < int(p.W))
                        acc += load_f32(A_DT, SLOT_a_start, p.a_start, a_at(n, c, h, w));
                }
            }
            v = acc / avg_divisor(oh, ow);
        }
        emit(e, v);
        if (++ow == p.OW) {
            ow = 0u;
            if (++oh == p.OH) { oh = 0u; if (++c == p.C) { c = 0u; ++n; } }
        }
    }
}

// Backward passes: outputs (n, c, h, w), each gathered from every window (oh, ow) holding it.
float pixel_value(uint n, uint c, uint h, uint w) {
    ivec2 rows = window_range(int(h + p.ph), p.kh, p.sh, p.dh, p.OH);
    ivec2 cols = window_range(int(w + p.pw), p.kw, p.sw, p.dw, p.OW);
    float acc = 0.0;
    for (int oh = rows.x; oh <= rows.y; ++oh) {
        int th = int(h + p.ph) - oh * int(p.sh);  // dilation 1 (pooling, most convolutions)
        if (p.dh != 1u && th % int(p.dh) != 0) continue;  // skips the divisions
        int i = p.dh == 1u ? th : th / int(p.dh);
        for (int ow = cols.x; ow <= cols.y; ++ow) {
            int tw = int(w + p.pw) - ow * int(p.sw);
            if (p.dw != 1u && tw % int(p.dw) != 0) continue;
            int j = p.dw == 1u ? tw : tw / int(p.dw);
            if (MODE == MODE_COL2IM) {
                int row = (int(c * p.kh) + i) * int(p.kw) + j;
                int col = (oh * int(p.OW) + ow) * int(p.N) + int(n);
                acc += load_f32(A_DT, SLOT_a_start, p.a_start, row * p.a_strides[0] + col * p.a_strides[1]);
            } else if (MODE == MODE_MAXPOOL_BACK) {
                if (load_i32(A_DT, SLOT_a_start, p.a_start, a_at(n, c, oh, ow)) == i * int(p.kw) + j)
                    acc += load_f32(B_DT, SLOT_b_start, p.b_start, b_at(n, c, oh, ow));
            } else {  // MODE_AVGPOOL_BACK
                acc += load_f32(A_DT, SLOT_a_start, p.a_start, a_at(n, c, oh, ow))
                    / avg_divisor(uint(oh), uint(ow));
            }
        }
    }
    return acc;
}

void pixel_chunk(uint e, uint end) {
    uint w = e % p.W, r = e / p.W;
    uint h = r % p.H; r /= p.H;
    uint c = r % p.C, n = r / p.C;
    for (; e < end; ++e) {
        emit(e, pixel_value(n, c, h, w));
        if (++w == p.W) { w = 0u; if (++h == p.H) { h = 0u; if (++c == p.C) { c = 0u; ++n; } } }
    }
}

void main() {
    uint chunks = (p.n + p.chunk - 1u) / p.chunk;
    uint threads = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint chunk = gl_GlobalInvocationID.x; chunk < chunks; chunk += threads) {
        uint e = chunk * p.chunk, end = min(e + p.chunk, p.n);
        if (MODE == MODE_IM2COL) {
            im2col_chunk(e, end);
        } else if (MODE == MODE_MAXPOOL || MODE == MODE_AVGPOOL) {
            pool_chunk(e, end);
        } else {
            pixel_chunk(e, end);
        }
    }
}
