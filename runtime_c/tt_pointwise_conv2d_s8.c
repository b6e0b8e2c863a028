/* trady runtime: pointwise (1x1) convolution, reference C99 (see tt_kernels.h). */
#include <stddef.h>

#include "tt_conv_common.h"
#include "tt_kernels.h"
#include "tt_requant.h"

tt_status tt_pointwise_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv,
                                 const tt_per_channel_quant *quant, const tt_dims *in_dims, const int8_t *in,
                                 const tt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                                 const tt_dims *out_dims, int8_t *out)
{
    (void)ctx;
    const tt_status st = tt_check_conv_args(TT_CONV_POINTWISE, conv, quant, in_dims, in, filter_dims, filter, bias,
                                            out_dims, out);
    if (st != TT_OK) {
        return st;
    }
    const int32_t c_in = in_dims->c;
    const int32_t c_out = filter_dims->n;
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        for (int32_t ox = 0; ox < out_dims->w; ox++) {
            const int8_t *px = in + ((size_t)oy * conv->stride * in_dims->w + (size_t)ox * conv->stride) * c_in;
            int8_t *po = out + ((size_t)oy * out_dims->w + ox) * c_out;
            for (int32_t o = 0; o < c_out; o++) {
                const int8_t *pw = filter + (size_t)o * c_in;
                /* |sum| <= 127 * 255 * C_in < 2^31 for C_in < 66,000. */
                int32_t acc = 0;
                for (int32_t c = 0; c < c_in; c++) {
                    acc += (int32_t)pw[c] * ((int32_t)px[c] + conv->input_offset);
                }
                if (conv->patch != NULL) { /* working slices of some channels (tt_conv_common.h) */
                    acc = tt_add_wrap(acc, tt_patch_delta_1x1(conv->patch, pw, px, o, conv->input_offset));
                }
                acc = tt_add_wrap(acc, bias[o]);
                acc = tt_requantize(acc, quant->multiplier[o], quant->shift[o]) + conv->output_offset;
                po[o] = tt_clamp_s8(acc);
            }
        }
    }
    return TT_OK;
}
