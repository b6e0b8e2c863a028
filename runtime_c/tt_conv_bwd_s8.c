/*
 * trady runtime: input gradients of the convolutions (transposed convs with the int8 weights) and the weight-gradient
 * sums of the training kernels, reference C99 (see tt_train.h, tt_conv_bwd_common.h). The firmware build
 * (`trady firmware --kernels dsp`) uses arm/tt_conv_bwd_s8.c instead, which gives the same results bit for bit.
 */
#include <stddef.h>

#include "tt_conv_bwd_common.h"
#include "tt_train.h"

tt_status tt_conv2d_s8_bwd_input(const tt_conv_params *conv, const tt_dims *filter_dims, const int8_t *filter,
                                 const tt_dims *out_dims, const int16_t *grad_q, float sigma,
                                 const tt_dims *in_dims, int32_t accumulate, float *g_in)
{
    const tt_status st = tt_check_bwd_input(0, conv, filter_dims, filter, out_dims, grad_q, in_dims, g_in);
    if (st != TT_OK) {
        return st;
    }
    const int32_t k = filter_dims->h, c_in = in_dims->c;
    for (int32_t iy = 0; iy < in_dims->h; iy++) {
        for (int32_t ix = 0; ix < in_dims->w; ix++) {
            int32_t next = 0;
            for (int32_t c = 0; c < c_in; c++) {
                size_t ws;
                const int8_t *wc = tt_patched_weights(conv->patch, &next, filter, c, c_in, &ws);
                const int64_t acc = tt_bwd_input_sum(conv, k, out_dims, grad_q, wc, ws, iy, ix, 0, out_dims->c);
                tt_bwd_store(g_in + ((size_t)iy * in_dims->w + ix) * c_in + c, (float)acc * sigma, accumulate);
            }
        }
    }
    return TT_OK;
}

/* As tt_conv2d_s8_bwd_input, each channel summing over its own output channel only. Kept apart: with the count a
 * constant 1 the sum inlines to a plain loop over the taps; one function for both measured 8 M instructions more
 * per mcunet training step (`trady bench-mcu --kernels reference`). */
tt_status tt_depthwise_conv2d_s8_bwd_input(const tt_conv_params *conv, const tt_dims *filter_dims,
                                           const int8_t *filter, const tt_dims *out_dims, const int16_t *grad_q,
                                           float sigma, const tt_dims *in_dims, int32_t accumulate, float *g_in)
{
    const tt_status st = tt_check_bwd_input(1, conv, filter_dims, filter, out_dims, grad_q, in_dims, g_in);
    if (st != TT_OK) {
        return st;
    }
    const int32_t k = filter_dims->h, ch = in_dims->c;
    for (int32_t iy = 0; iy < in_dims->h; iy++) {
        for (int32_t ix = 0; ix < in_dims->w; ix++) {
            int32_t next = 0;
            for (int32_t c = 0; c < ch; c++) {
                size_t ws;
                const int8_t *wc = tt_patched_weights(conv->patch, &next, filter, c, ch, &ws);
                const int64_t acc = tt_bwd_input_sum(conv, k, out_dims, grad_q, wc, ws, iy, ix, c, 1);
                tt_bwd_store(g_in + ((size_t)iy * in_dims->w + ix) * ch + c, (float)acc * sigma, accumulate);
            }
        }
    }
    return TT_OK;
}

int64_t tt_conv_s8_weight_grad_sum(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *saved,
                                   const tt_dims *out_dims, const int16_t *grad_q, int32_t o, int32_t ky, int32_t kx)
{
    return tt_weight_grad_sum_ref(conv, in_dims, saved, out_dims, grad_q, o, ky, kx);
}

void tt_conv_s8_weight_grad_sums_1x1(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *saved,
                                     const tt_dims *out_dims, const int16_t *grad_q, int32_t o0, int32_t count,
                                     int64_t *sums)
{
    for (int32_t j = 0; j < count; j++) {
        sums[j] = tt_weight_grad_sum_ref(conv, in_dims, saved, out_dims, grad_q, o0 + j, 0, 0);
    }
}
