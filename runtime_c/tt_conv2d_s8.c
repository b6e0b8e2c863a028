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

/*
 * Patched channels (a flash weight home, tt_types.h): the sum over their taps of (slice - home) * (x + offset)
 * for output channel o at the window starting at (y0, x0). Only the total with the working weights is bounded
 * (see tt_conv2d_s8), so the correction is summed mod 2^32 and the corrected accumulator is exact.
 */
static int32_t patch_delta(const tt_conv_params *conv, const tt_weight_patch *patch, const tt_dims *in_dims,
                           const int8_t *in, const int8_t *filter, int32_t k, int32_t o, int32_t y0, int32_t x0)
{
    const int32_t h = in_dims->h, w = in_dims->w, c_in = in_dims->c;
    uint32_t delta = 0;
    for (int32_t j = 0; j < patch->count; j++) {
        const int32_t c = patch->channel[j];
        const int8_t *s = tt_patch_slice(patch, j) + (size_t)o * k * k;
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
                const int32_t d = (int32_t)s[ky * k + kx] - (int32_t)filter[(((size_t)o * k + ky) * k + kx) * c_in + c];
                delta += (uint32_t)(d * ((int32_t)in[((size_t)iy * w + ix) * c_in + c] + conv->input_offset));
            }
        }
    }
    return (int32_t)delta;
}

tt_status tt_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv, const tt_per_channel_quant *quant,
                       const tt_dims *in_dims, const int8_t *in, const tt_dims *filter_dims, const int8_t *filter,
                       const int32_t *bias, const tt_dims *out_dims, int8_t *out)
{
    (void)ctx;
    if (filter_dims == NULL || in_dims == NULL) {
        return TT_ERR_ARG;
    }
    const int32_t k = filter_dims->h;
    const int32_t c_in = in_dims->c;
    const int32_t c_out = filter_dims->n;
    tt_status st = tt_check_conv(conv, quant, in_dims, in, filter_dims, filter, bias, out_dims, out, k, c_out);
    if (st != TT_OK) {
        return st;
    }
    if (filter_dims->w != k || filter_dims->c != c_in) {
        return TT_ERR_ARG;
    }
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
                if (conv->patch != NULL) {
                    acc = tt_add_wrap(acc, patch_delta(conv, conv->patch, in_dims, in, filter, k, o, y0, x0));
                }
                acc = tt_add_wrap(acc, bias[o]);
                acc = tt_requantize(acc, quant->multiplier[o], quant->shift[o]) + conv->output_offset;
                out[((size_t)oy * out_dims->w + ox) * c_out + o] = tt_clamp_s8(acc);
            }
        }
    }
    return TT_OK;
}
