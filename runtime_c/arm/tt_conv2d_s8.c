/*
 * trady runtime: dense convolution for Cortex-M with the DSP extension (see tt_kernels.h). The
 * firmware build (`trady firmware --kernels dsp`) uses this file instead of the reference kernel of
 * the same name; the results are bit-identical.
 *
 * Per output pixel the K*K*C_in input patch is gathered once into an int16 column with the input
 * offset added (x + input_offset in [-255, 255]); taps outside the image are stored as 0, which adds
 * nothing, as the reference skips them. Each output channel is then a dot product of its
 * [K, K, C_in] weights (contiguous) with the column, four taps per step: SXTB16 widens weight bytes
 * 0 and 2 (and, after a rotate by 8, bytes 1 and 3), so the column keeps each group of four taps in
 * the order t0, t2, t1, t3 and SMLAD takes two int16 pairs per instruction. Two output pixels and two output
 * channels at a time: each widened weight word serves both pixels' columns, and each channel's requantisation
 * set-up both pixels (tt_finish2_s8). The int32 sum is exact:
 * 127 * 255 * K * K * C_in < 2^31 (the compiler checks K*K*C_in < 66,000). Patches longer than
 * TT_CONV_COLUMN (on the stack) take the reference loop. Requantisation: tt_requantize_floor
 * (tt_arm_math.h), equal to tt_requantize.
 */
#include <arm_acle.h>
#include <stddef.h>

#include "tt_arm_math.h"
#include "tt_conv_common.h"
#include "tt_kernels.h"
#include "tt_requant.h"

#if !defined(__ARM_FEATURE_DSP) || !__ARM_FEATURE_DSP
#error "runtime_c/arm/ needs the DSP extension (Cortex-M4/M7); build the reference kernels instead"
#endif

#ifndef TT_CONV_COLUMN /* a test builds with a short column to run the reference path */
#define TT_CONV_COLUMN 576 /* taps of a 3x3 patch of 64 channels: 2 int16 columns + 1 int8, 2,880 B of stack */
#endif

int32_t tt_conv2d_s8_get_buffer_size(const tt_dims *in_dims, const tt_dims *filter_dims)
{
    (void)in_dims;
    (void)filter_dims;
    return 0;
}


/* acc plus the correction for the working slices of patched channels, if any (tt_conv_common.h). */
static inline int32_t patched(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in,
                              const int8_t *filter, int32_t k, int32_t o, int32_t y0, int32_t x0, int32_t acc)
{
    return conv->patch == NULL ? acc : tt_add_wrap(acc, tt_patch_delta_conv(conv->patch, in_dims, in, filter, k, o, y0,
                                                                            x0, conv->input_offset));
}

/* The reference loop, for patches longer than the column. */
static int32_t dot_reference(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in, const int8_t *pw,
                             int32_t k, int32_t y0, int32_t x0)
{
    const int32_t c_in = in_dims->c;
    int32_t acc = 0;
    for (int32_t ky = 0; ky < k; ky++) {
        const int32_t iy = y0 + ky;
        for (int32_t kx = 0; kx < k && iy >= 0 && iy < in_dims->h; kx++) {
            const int32_t ix = x0 + kx;
            if (ix < 0 || ix >= in_dims->w) {
                continue;
            }
            const int8_t *px = in + ((size_t)iy * in_dims->w + ix) * c_in;
            const int8_t *pwk = pw + ((size_t)ky * k + kx) * c_in;
            for (int32_t c = 0; c < c_in; c++) {
                acc += (int32_t)pwk[c] * ((int32_t)px[c] + conv->input_offset);
            }
        }
    }
    return acc;
}

/* Two int16 column entries as one word (lane 0 the first), and back. */
static inline int32_t load_pair(const int16_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store_pair(int16_t *p, int32_t v)
{
    memcpy(p, &v, sizeof v);
}

/*
 * The K x K x C_in patch of the output pixel whose window starts at (y0, x0), as int16 x + input_offset; groups
 * of four taps are stored as t0, t2, t1, t3, the tail in order. The int8 patch is copied first, with
 * x_zero = -input_offset (in [-128, 127]) for taps outside the image, which makes their column entries 0; then each
 * group of four bytes is widened with SXTB16 and SADD16 into the words (t0, t2) and (t1, t3), as the pointwise kernel
 * widens its input (lanes in [-255, 255]).
 */
static inline void gather(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in, int32_t k, int32_t y0,
                          int32_t x0, int32_t n, int16_t *column)
{
    const int32_t h = in_dims->h, w = in_dims->w, c_in = in_dims->c;
    const int32_t offset = conv->input_offset;
    const int8_t zero = (int8_t)(-offset);
    int8_t bytes[TT_CONV_COLUMN];
    int32_t t = 0;
    for (int32_t ky = 0; ky < k; ky++) {
        const int32_t iy = y0 + ky;
        for (int32_t kx = 0; kx < k; kx++) {
            const int32_t ix = x0 + kx;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                const int8_t *px = in + ((size_t)iy * w + ix) * c_in;
                for (int32_t c = 0; c < c_in; c++) {
                    bytes[t++] = px[c];
                }
            } else {
                for (int32_t c = 0; c < c_in; c++) {
                    bytes[t++] = zero;
                }
            }
        }
    }
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t n4 = n & ~3;
    for (int32_t i = 0; i < n4; i += 4) {
        const int32_t xw = tt_load4(bytes + i);
        store_pair(column + i, __sadd16(__sxtb16(xw), offset2));
        store_pair(column + i + 2, __sadd16(tt_sxtb16_ror8(xw), offset2));
    }
    for (int32_t i = n4; i < n; i++) {
        column[i] = (int16_t)((int32_t)bytes[i] + offset);
    }
}

tt_status tt_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv, const tt_per_channel_quant *quant,
                       const tt_dims *in_dims, const int8_t *in, const tt_dims *filter_dims, const int8_t *filter,
                       const int32_t *bias, const tt_dims *out_dims, int8_t *out)
{
    (void)ctx;
    const tt_status st = tt_check_conv_args(TT_CONV_DENSE, conv, quant, in_dims, in, filter_dims, filter, bias, out_dims,
                                            out);
    if (st != TT_OK) {
        return st;
    }
    const int32_t k = filter_dims->h;
    const int32_t c_in = in_dims->c;
    const int32_t c_out = filter_dims->n;
    const tt_out_quant q = {.bias = bias, .multiplier = quant->multiplier, .shift = quant->shift,
                         .output_offset = conv->output_offset};
    const int32_t n = k * k * c_in, n4 = n & ~3;
    int16_t column[2][TT_CONV_COLUMN]; /* the patches of two output pixels */
    const int32_t pixels = out_dims->h * out_dims->w;
    for (int32_t p = 0; p < pixels; p += 2) {
        const int32_t both = p + 1 < pixels; /* an odd pixel count ends with one pixel, computed as a pair */
        const int32_t p1 = both ? p + 1 : p;
        const int32_t y0 = (p / out_dims->w) * conv->stride - conv->padding;
        const int32_t x0 = (p % out_dims->w) * conv->stride - conv->padding;
        const int32_t y1 = (p1 / out_dims->w) * conv->stride - conv->padding;
        const int32_t x1 = (p1 % out_dims->w) * conv->stride - conv->padding;
        int8_t *po0 = out + (size_t)p * c_out, *po1 = out + (size_t)p1 * c_out;
        if (n > TT_CONV_COLUMN) {
            for (int32_t o = 0; o < c_out; o++) {
                const int8_t *pw = filter + (size_t)o * n;
                po0[o] = tt_finish_s8(patched(conv, in_dims, in, filter, k, o, y0, x0,
                                              dot_reference(conv, in_dims, in, pw, k, y0, x0)), o, q);
                po1[o] = tt_finish_s8(patched(conv, in_dims, in, filter, k, o, y1, x1,
                                              dot_reference(conv, in_dims, in, pw, k, y1, x1)), o, q);
            }
            continue;
        }
        gather(conv, in_dims, in, k, y0, x0, n, column[0]);
        gather(conv, in_dims, in, k, y1, x1, n, column[1]);
        const int16_t *c0 = column[0], *c1 = column[1];
        int32_t o = 0;
        for (; o + 2 <= c_out; o += 2) { /* 2 output channels x 2 pixels: each widened weight word serves both */
            const int8_t *pw0 = filter + (size_t)o * n, *pw1 = pw0 + n;
            int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
            for (int32_t i = 0; i < n4; i += 4) {
                const int32_t u = tt_load4(pw0 + i), v = tt_load4(pw1 + i);
                const int32_t ue = __sxtb16(u), uo = tt_sxtb16_ror8(u), ve = __sxtb16(v), vo = tt_sxtb16_ror8(v);
                const int32_t e0 = load_pair(c0 + i), d0 = load_pair(c0 + i + 2); /* taps t0, t2 and t1, t3 */
                const int32_t e1 = load_pair(c1 + i), d1 = load_pair(c1 + i + 2);
                a00 = __smlad(uo, d0, __smlad(ue, e0, a00));
                a01 = __smlad(vo, d0, __smlad(ve, e0, a01));
                a10 = __smlad(uo, d1, __smlad(ue, e1, a10));
                a11 = __smlad(vo, d1, __smlad(ve, e1, a11));
            }
            for (int32_t i = n4; i < n; i++) {
                a00 += (int32_t)pw0[i] * c0[i];
                a01 += (int32_t)pw1[i] * c0[i];
                a10 += (int32_t)pw0[i] * c1[i];
                a11 += (int32_t)pw1[i] * c1[i];
            }
            if (conv->patch != NULL) {
                a00 = patched(conv, in_dims, in, filter, k, o, y0, x0, a00);
                a01 = patched(conv, in_dims, in, filter, k, o + 1, y0, x0, a01);
                a10 = patched(conv, in_dims, in, filter, k, o, y1, x1, a10);
                a11 = patched(conv, in_dims, in, filter, k, o + 1, y1, x1, a11);
            }
            tt_finish2_s8(a00, a10, o, q, po0 + o, po1 + o);
            tt_finish2_s8(a01, a11, o + 1, q, po0 + o + 1, po1 + o + 1);
        }
        if (o < c_out) { /* an odd C_out: the last output channel of both pixels */
            const int8_t *pw0 = filter + (size_t)o * n;
            int32_t a00 = 0, a10 = 0;
            for (int32_t i = 0; i < n4; i += 4) {
                const int32_t u = tt_load4(pw0 + i);
                const int32_t ue = __sxtb16(u), uo = tt_sxtb16_ror8(u);
                a00 = __smlad(uo, load_pair(c0 + i + 2), __smlad(ue, load_pair(c0 + i), a00));
                a10 = __smlad(uo, load_pair(c1 + i + 2), __smlad(ue, load_pair(c1 + i), a10));
            }
            for (int32_t i = n4; i < n; i++) {
                a00 += (int32_t)pw0[i] * c0[i];
                a10 += (int32_t)pw0[i] * c1[i];
            }
            tt_finish2_s8(patched(conv, in_dims, in, filter, k, o, y0, x0, a00),
                          patched(conv, in_dims, in, filter, k, o, y1, x1, a10), o, q, po0 + o, po1 + o);
        }
    }
    return TT_OK;
}
