/* trady runtime: argument checks shared by the convolution kernels (internal). */
#ifndef TT_CONV_COMMON_H
#define TT_CONV_COMMON_H

#include <stddef.h>

#include "tt_types.h"

static inline tt_status tt_check_conv(const tt_conv_params *conv, const tt_per_channel_quant *quant,
                                      const tt_dims *in_dims, const void *in, const tt_dims *filter_dims,
                                      const void *filter, const void *bias, const tt_dims *out_dims,
                                      const void *out, int32_t k, int32_t c_out)
{
    if (conv == NULL || quant == NULL || quant->multiplier == NULL || quant->shift == NULL ||
        in_dims == NULL || in == NULL || filter_dims == NULL || filter == NULL || bias == NULL ||
        out_dims == NULL || out == NULL) {
        return TT_ERR_ARG;
    }
    if (conv->stride < 1 || conv->padding < 0 || conv->padding >= k || in_dims->n != 1 || out_dims->n != 1 ||
        out_dims->c != c_out) {
        return TT_ERR_ARG;
    }
    if (in_dims->h < 1 || in_dims->w < 1 || in_dims->c < 1 || filter_dims->n < 1 || filter_dims->c < 1 || k < 1 ||
        out_dims->h < 1 || out_dims->w < 1 || c_out < 1) {
        return TT_ERR_ARG;
    }
    if (out_dims->h != (in_dims->h + 2 * conv->padding - k) / conv->stride + 1 ||
        out_dims->w != (in_dims->w + 2 * conv->padding - k) / conv->stride + 1) {
        return TT_ERR_ARG;
    }
    if (conv->input_offset < -127 || conv->input_offset > 128 || conv->output_offset < -128 ||
        conv->output_offset > 127) {
        return TT_ERR_RANGE;
    }
    return TT_OK;
}

#endif /* TT_CONV_COMMON_H */
