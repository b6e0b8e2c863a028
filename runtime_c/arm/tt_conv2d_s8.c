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
 * the order t0, t2, t1, t3 and SMLAD takes two int16 pairs per instruction. The int32 sum is exact:
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
#define TT_CONV_COLUMN 576 /* int16 taps: 1,152 bytes of stack, a 3x3 patch of 64 channels */
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

/* Position of tap t in the column: groups of four stored as t0, t2, t1, t3; the tail in order. */
static inline int32_t slot(int32_t t, int32_t n4)
{
    static const int8_t order[4] = {0, 2, 1, 3};
    return t < n4 ? (t & ~3) + order[t & 3] : t;
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
    const int32_t h = in_dims->h, w = in_dims->w;
    const tt_out_quant q = {.bias = bias, .multiplier = quant->multiplier, .shift = quant->shift,
                         .output_offset = conv->output_offset};
    const int32_t n = k * k * c_in, n4 = n & ~3;
    int16_t column[TT_CONV_COLUMN];
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        for (int32_t ox = 0; ox < out_dims->w; ox++) {
            const int32_t y0 = oy * conv->stride - conv->padding;
            const int32_t x0 = ox * conv->stride - conv->padding;
            int8_t *po = out + ((size_t)oy * out_dims->w + ox) * c_out;
            if (n > TT_CONV_COLUMN) {
                for (int32_t o = 0; o < c_out; o++) {
                    po[o] = tt_finish_s8(patched(conv, in_dims, in, filter, k, o, y0, x0,
                                           dot_reference(conv, in_dims, in, filter + (size_t)o * n, k, y0, x0)), o, q);
                }
                continue;
            }
            int32_t t = 0;
            for (int32_t ky = 0; ky < k; ky++) {
                const int32_t iy = y0 + ky;
                for (int32_t kx = 0; kx < k; kx++) {
                    const int32_t ix = x0 + kx;
                    const int inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
                    const int8_t *px = in + ((size_t)(inside ? iy : 0) * w + (inside ? ix : 0)) * c_in;
                    for (int32_t c = 0; c < c_in; c++, t++) {
                        column[slot(t, n4)] = (int16_t)(inside ? (int32_t)px[c] + conv->input_offset : 0);
                    }
                }
            }
            for (int32_t o = 0; o < c_out; o++) {
                const int8_t *pw = filter + (size_t)o * n;
                int32_t acc = 0;
                for (int32_t i = 0; i < n4; i += 4) {
                    const int32_t ww = tt_load4(pw + i);
                    int32_t ce, co;
                    memcpy(&ce, &column[i], sizeof ce);     /* taps t0, t2 */
                    memcpy(&co, &column[i + 2], sizeof co); /* taps t1, t3 */
                    acc = __smlad(tt_sxtb16_ror8(ww), co, __smlad(__sxtb16(ww), ce, acc));
                }
                for (int32_t i = n4; i < n; i++) {
                    acc += (int32_t)pw[i] * column[i];
                }
                po[o] = tt_finish_s8(patched(conv, in_dims, in, filter, k, o, y0, x0, acc), o, q);
            }
        }
    }
    return TT_OK;
}
