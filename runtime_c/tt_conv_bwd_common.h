/*
 * trady runtime: the input-gradient sums shared by the reference backward kernels (tt_conv_bwd_s8.c) and their
 * Cortex-M DSP variants (arm/tt_conv_bwd_s8.c), which fall back to them outside their fast paths (internal).
 */
#ifndef TT_CONV_BWD_COMMON_H
#define TT_CONV_BWD_COMMON_H

#include <stddef.h>

#include "tt_conv_common.h"
#include "tt_train.h"

/* Output row/column oy that tap k of input position i reads from, or -1 (stride/padding geometry). */
static inline int32_t tt_source_index(int32_t i, int32_t k, int32_t stride, int32_t padding, int32_t out_size)
{
    const int32_t num = i + padding - k;
    if (num < 0 || num % stride != 0) {
        return -1;
    }
    const int32_t o = num / stride;
    return o < out_size ? o : -1;
}

/* The argument checks of tt_conv2d_s8_bwd_input (depthwise = 0) and tt_depthwise_conv2d_s8_bwd_input. */
static inline tt_status tt_check_bwd_input(int32_t depthwise, const tt_conv_params *conv, const tt_dims *filter_dims,
                                           const int8_t *filter, const tt_dims *out_dims, const int16_t *grad_q,
                                           const tt_dims *in_dims, const float *g_in)
{
    if (conv == NULL || filter_dims == NULL || filter == NULL || out_dims == NULL || grad_q == NULL ||
        in_dims == NULL || g_in == NULL || conv->stride < 1) {
        return TT_ERR_ARG;
    }
    const int32_t c_in = in_dims->c;
    const int ok = depthwise ? filter_dims->c == c_in && out_dims->c == c_in
                             : filter_dims->c == c_in && filter_dims->n == out_dims->c;
    return ok ? tt_check_patch(conv->patch, c_in) : TT_ERR_ARG;
}

/*
 * The input gradient at input position (iy, ix): the sum over ky, kx and output channels o in [o0, o0 + count) of
 * w[o - o0, ky, kx] * G[oy, ox, o], where wc[e * ws] is element e of the input channel's weight slice
 * (tt_patched_weights; OHWI row o - o0, or the KKC column of a depthwise channel). Dense/pointwise: o0 = 0,
 * count = C_out; depthwise channel c: o0 = c, count = 1. |w * G| <= 128 * 32767 < 2^22 fits int32; the sum over
 * up to 2^41 taps fits int64.
 */
static inline int64_t tt_bwd_input_sum(const tt_conv_params *conv, int32_t k, const tt_dims *out_dims,
                                       const int16_t *grad_q, const int8_t *wc, size_t ws, int32_t iy, int32_t ix,
                                       int32_t o0, int32_t count)
{
    int64_t acc = 0;
    for (int32_t ky = 0; ky < k; ky++) {
        const int32_t oy = tt_source_index(iy, ky, conv->stride, conv->padding, out_dims->h);
        if (oy < 0) {
            continue;
        }
        for (int32_t kx = 0; kx < k; kx++) {
            const int32_t ox = tt_source_index(ix, kx, conv->stride, conv->padding, out_dims->w);
            if (ox < 0) {
                continue;
            }
            const int16_t *g = grad_q + ((size_t)oy * out_dims->w + ox) * out_dims->c + o0;
            for (int32_t o = 0; o < count; o++) {
                acc += (int32_t)wc[(((size_t)o * k + ky) * k + kx) * ws] * (int32_t)g[o];
            }
        }
    }
    return acc;
}

/* The reference weight-gradient sum (tt_conv_s8_weight_grad_sum). */
static inline int64_t tt_weight_grad_sum_ref(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *saved,
                                             const tt_dims *out_dims, const int16_t *grad_q, int32_t o, int32_t ky,
                                             int32_t kx)
{
    int64_t acc = 0;
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        const int32_t iy = oy * conv->stride - conv->padding + ky;
        if (iy < 0 || iy >= in_dims->h) {
            continue;
        }
        for (int32_t ox = 0; ox < out_dims->w; ox++) {
            const int32_t ix = ox * conv->stride - conv->padding + kx;
            if (ix < 0 || ix >= in_dims->w) {
                continue;
            }
            /* |(A - z) * G| <= 255 * 32767 < 2^23 */
            acc += ((int32_t)saved[(size_t)iy * in_dims->w + ix] + conv->input_offset) *
                   (int32_t)grad_q[((size_t)oy * out_dims->w + ox) * out_dims->c + o];
        }
    }
    return acc;
}

/*
 * The weight-gradient sum of tap (ky, kx) of output channel o of one input channel (the training kernels of
 * tt_train.c scale it by sigma): the sum over output positions of (A[iy, ix] + input_offset) * G[oy, ox, o], A the
 * saved [H, W] plane of the input channel. Exact (int64), so the DSP variant may sum in any order.
 */
int64_t tt_conv_s8_weight_grad_sum(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *saved,
                                   const tt_dims *out_dims, const int16_t *grad_q, int32_t o, int32_t ky, int32_t kx);

/* tt_conv_s8_weight_grad_sum of a 1x1 conv (ky = kx = 0) for output channels o0 .. o0 + count - 1, into sums. */
void tt_conv_s8_weight_grad_sums_1x1(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *saved,
                                     const tt_dims *out_dims, const int16_t *grad_q, int32_t o0, int32_t count,
                                     int64_t *sums);

/* The fp32 value of an exact integer sum: converted from int32 when it fits (one VCVT on the core instead of a library
 * call), which rounds the same integer to nearest just as the int64 conversion does. */
static inline float tt_sum_to_f32(int64_t acc)
{
    return acc >= INT32_MIN && acc <= INT32_MAX ? (float)(int32_t)acc : (float)acc;
}

/* g_in element (+)= acc * sigma (the fp32 result of every input-gradient kernel). */
static inline void tt_bwd_store(float *dst, float v, int32_t accumulate)
{
    *dst = accumulate ? *dst + v : v;
}

#endif /* TT_CONV_BWD_COMMON_H */
