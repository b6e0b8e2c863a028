/* trady runtime: dense convolution, reference C99 (see tt_kernels.h). */
#include <stddef.h>

#include "tt_conv_common.h"
#include "tt_kernels.h"
#include "tt_requant.h"

int32_t tt_conv2d_s8_get_buffer_size(const tt_dims *in_dims, const tt_dims *filter_dims)
{
    (void)in_dims;
    (void)filter_dims;
    return 0;
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
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        for (int32_t ox = 0; ox < out_dims->w; ox++) {
            const int32_t y0 = oy * conv->stride - conv->padding;
            const int32_t x0 = ox * conv->stride - conv->padding;
            for (int32_t o = 0; o < c_out; o++) {
                /* |w| <= 127, |x + input_offset| <= 255: the sum is below 2^31 while
                 * K*K*C_in < 66,000 taps (the compiler checks this for every layer). */
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
                        const int8_t *px = in + ((size_t)iy * w + ix) * c_in;
                        const int8_t *pw = filter + (((size_t)o * k + ky) * k + kx) * c_in;
                        for (int32_t c = 0; c < c_in; c++) {
                            acc += (int32_t)pw[c] * ((int32_t)px[c] + conv->input_offset);
                        }
                    }
                }
                if (conv->patch != NULL) { /* working slices of some channels (tt_conv_common.h) */
                    acc = tt_add_wrap(acc, tt_patch_delta_conv(conv->patch, in_dims, in, filter, k, o, y0, x0,
                                                               conv->input_offset));
                }
                acc = tt_add_wrap(acc, bias[o]);
                acc = tt_requantize(acc, quant->multiplier[o], quant->shift[o]) + conv->output_offset;
                out[((size_t)oy * out_dims->w + ox) * c_out + o] = tt_clamp_s8(acc);
            }
        }
    }
    return TT_OK;
}
