/* trady runtime: depthwise convolution (multiplier 1), reference C99 (see tt_kernels.h). */
#include <stddef.h>

#include "tt_conv_common.h"
#include "tt_kernels.h"
#include "tt_requant.h"

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
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        for (int32_t ox = 0; ox < out_dims->w; ox++) {
            const int32_t y0 = oy * conv->stride - conv->padding;
            const int32_t x0 = ox * conv->stride - conv->padding;
            int32_t next = 0;
            for (int32_t c = 0; c < ch; c++) {
                size_t ws;
                const int8_t *wc = tt_patched_weights(conv->patch, &next, filter, c, ch, &ws);
                /* |sum| <= 127 * 255 * K * K: far below 2^31 for any K <= 64. */
                int32_t acc = 0;
                for (int32_t ky = 0; ky < k; ky++) {
                    const int32_t iy = y0 + ky;
                    if (iy < 0 || iy >= h) {
                        continue;
                    }
                    for (int32_t kx = 0; kx < k; kx++) {
                        const int32_t ix = x0 + kx;
                        if (ix < 0 || ix >= w) {
                            continue;
                        }
                        acc += (int32_t)wc[((size_t)ky * k + kx) * ws] *
                               ((int32_t)in[((size_t)iy * w + ix) * ch + c] + conv->input_offset);
                    }
                }
                acc = tt_add_wrap(acc, bias[c]);
                acc = tt_requantize(acc, quant->multiplier[c], quant->shift[c]) + conv->output_offset;
                out[((size_t)oy * out_dims->w + ox) * ch + c] = tt_clamp_s8(acc);
            }
        }
    }
    return TT_OK;
}
