/*
 * trady runtime: depthwise convolution (multiplier 1) for Cortex-M with the DSP extension (see
 * tt_kernels.h). The firmware build (`trady firmware --kernels dsp`) uses this file instead of the
 * reference kernel of the same name; the results are bit-identical: the same taps (out-of-image taps
 * are skipped, as in the reference) summed exactly in int32.
 *
 * Four channels at a time (HWC keeps them adjacent): SXTB16 widens bytes 0 and 2 (and, after a
 * rotate by 8, bytes 1 and 3) into int16 lanes, SADD16 adds the input offset to the input lanes
 * ([-255, 255]: no lane overflow), and SMLABB / SMLATT multiply-accumulate the bottom / top lanes
 * into one accumulator per channel. |sum| <= 127 * 255 * K * K, far below 2^31 for K <= 64.
 * Requantisation: tt_requantize_floor (tt_arm_math.h), equal to tt_requantize.
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


tt_status tt_depthwise_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv,
                                 const tt_per_channel_quant *quant, const tt_dims *in_dims, const int8_t *in,
                                 const tt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                                 const tt_dims *out_dims, int8_t *out)
{
    (void)ctx;
    const tt_status st = tt_check_conv_args(TT_CONV_DEPTHWISE, conv, quant, in_dims, in, filter_dims, filter, bias,
                                            out_dims, out);
    if (st != TT_OK) {
        return st;
    }
    const int32_t k = filter_dims->h;
    const int32_t ch = in_dims->c;
    const int32_t h = in_dims->h, w = in_dims->w;
    const tt_out_quant q = {.bias = bias, .multiplier = quant->multiplier, .shift = quant->shift,
                         .output_offset = conv->output_offset};
    const int32_t offset = conv->input_offset;
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t c4 = ch & ~3;
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        const int32_t y0 = oy * conv->stride - conv->padding;
        const int32_t ky0 = y0 < 0 ? -y0 : 0, ky1 = y0 + k > h ? h - y0 : k;
        for (int32_t ox = 0; ox < out_dims->w; ox++) {
            const int32_t x0 = ox * conv->stride - conv->padding;
            const int32_t kx0 = x0 < 0 ? -x0 : 0, kx1 = x0 + k > w ? w - x0 : k;
            int8_t *po = out + ((size_t)oy * out_dims->w + ox) * ch;
            int32_t next = 0; /* the next patched channel (tt_patch_delta_dw), channels ascend */
            int32_t c = 0;
            for (; c < c4; c += 4) {
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                for (int32_t ky = ky0; ky < ky1; ky++) {
                    const int8_t *px = in + ((size_t)(y0 + ky) * w + x0 + kx0) * ch + c;
                    const int8_t *pw = filter + ((size_t)ky * k + kx0) * ch + c;
                    for (int32_t kx = kx0; kx < kx1; kx++, px += ch, pw += ch) {
                        const int32_t xw = tt_load4(px), ww = tt_load4(pw);
                        const int32_t xe = __sadd16(__sxtb16(xw), offset2);       /* x0, x2 */
                        const int32_t xo = __sadd16(tt_sxtb16_ror8(xw), offset2); /* x1, x3 */
                        const int32_t we = __sxtb16(ww), wo = tt_sxtb16_ror8(ww);
                        a0 = __smlabb(we, xe, a0);
                        a2 = __smlatt(we, xe, a2);
                        a1 = __smlabb(wo, xo, a1);
                        a3 = __smlatt(wo, xo, a3);
                    }
                }
                if (conv->patch != NULL) { /* working slices of some channels, in channel order */
                    a0 = tt_add_wrap(a0, tt_patch_delta_dw(conv->patch, &next, in_dims, in, filter, c, k, y0, x0, offset));
                    a1 = tt_add_wrap(a1, tt_patch_delta_dw(conv->patch, &next, in_dims, in, filter, c + 1, k, y0, x0,
                                                           offset));
                    a2 = tt_add_wrap(a2, tt_patch_delta_dw(conv->patch, &next, in_dims, in, filter, c + 2, k, y0, x0,
                                                           offset));
                    a3 = tt_add_wrap(a3, tt_patch_delta_dw(conv->patch, &next, in_dims, in, filter, c + 3, k, y0, x0,
                                                           offset));
                }
                po[c] = tt_finish_s8(a0, c, q);
                po[c + 1] = tt_finish_s8(a1, c + 1, q);
                po[c + 2] = tt_finish_s8(a2, c + 2, q);
                po[c + 3] = tt_finish_s8(a3, c + 3, q);
            }
            for (; c < ch; c++) {
                int32_t acc = 0;
                for (int32_t ky = ky0; ky < ky1; ky++) {
                    for (int32_t kx = kx0; kx < kx1; kx++) {
                        acc += (int32_t)filter[((size_t)ky * k + kx) * ch + c] *
                               ((int32_t)in[((size_t)(y0 + ky) * w + x0 + kx) * ch + c] + offset);
                    }
                }
                acc = tt_add_wrap(acc, tt_patch_delta_dw(conv->patch, &next, in_dims, in, filter, c, k, y0, x0, offset));
                po[c] = tt_finish_s8(acc, c, q);
            }
        }
    }
    return TT_OK;
}
