/* trady runtime: argument checks shared by the convolution kernels (internal). */
#ifndef TT_CONV_COMMON_H
#define TT_CONV_COMMON_H

#include <stddef.h>

#include "tt_types.h"

/* A weight patch (tt_types.h) is well formed: channels ascend strictly inside [0, c_in), slices are set. */
static inline tt_status tt_check_patch(const tt_weight_patch *patch, int32_t c_in)
{
    if (patch == NULL) {
        return TT_OK;
    }
    if (patch->count < 0 || (patch->count > 0 && (patch->channel == NULL || patch->base == NULL ||
                                                   patch->offset == NULL))) {
        return TT_ERR_ARG;
    }
    for (int32_t j = 0; j < patch->count; j++) {
        if (patch->channel[j] >= c_in || (j > 0 && patch->channel[j] <= patch->channel[j - 1])) {
            return TT_ERR_ARG;
        }
    }
    return TT_OK;
}

/*
 * The weights of input channel c as seen by a kernel: element e of its slice ((o, ky, kx) or (ky, kx) order)
 * is base[e * stride]. Without a patch entry that is the home filter (base = filter + c, stride = C_in, since
 * OHWI and KKC both keep the channel innermost); with one it is the contiguous working slice. `next` walks the
 * ascending patch channels while the caller visits channels in ascending order.
 */
static inline const int8_t *tt_patched_weights(const tt_weight_patch *patch, int32_t *next, const int8_t *filter,
                                               int32_t c, int32_t c_in, size_t *stride)
{
    if (patch != NULL && *next < patch->count && patch->channel[*next] == c) {
        *stride = 1;
        return tt_patch_slice(patch, (*next)++);
    }
    *stride = (size_t)c_in;
    return filter + c;
}

/*
 * Forward corrections for patched channels (tt_weight_patch): the sum over their taps of
 * (slice - home) * (x + input_offset). Only the total with the working weights is bounded (see the kernels'
 * accumulator bounds), so the correction is summed mod 2^32; added with tt_add_wrap it makes the
 * accumulator exactly the one with the working weights. |slice - home| * |x + offset| <= 254 * 255.
 */

/* Pointwise: output o at input pixel px; w_row = the home weights of o ([C_in]). */
static inline int32_t tt_patch_delta_1x1(const tt_weight_patch *patch, const int8_t *w_row, const int8_t *px,
                                         int32_t o, int32_t input_offset)
{
    uint32_t delta = 0;
    for (int32_t j = 0; j < patch->count; j++) {
        const int32_t c = patch->channel[j];
        const int32_t d = (int32_t)tt_patch_slice(patch, j)[o] - (int32_t)w_row[c];
        delta += (uint32_t)(d * ((int32_t)px[c] + input_offset));
    }
    return (int32_t)delta;
}

/* One K x K window starting at (y0, x0) of input channel c: s[ky * k + kx] is the working weight of a tap,
 * home[(ky * k + kx) * C_in] its home weight (OHWI row or KKC column, channel innermost). */
static inline uint32_t tt_patch_delta_window(const int8_t *s, const int8_t *home, const tt_dims *in_dims,
                                             const int8_t *in, int32_t c, int32_t k, int32_t y0, int32_t x0,
                                             int32_t input_offset)
{
    const int32_t h = in_dims->h, w = in_dims->w, c_in = in_dims->c;
    uint32_t delta = 0;
    for (int32_t ky = 0; ky < k; ky++) {
        const int32_t iy = y0 + ky;
        for (int32_t kx = 0; kx < k && iy >= 0 && iy < h; kx++) {
            const int32_t ix = x0 + kx;
            if (ix < 0 || ix >= w) {
                continue;
            }
            const int32_t d = (int32_t)s[ky * k + kx] - (int32_t)home[((size_t)ky * k + kx) * c_in];
            delta += (uint32_t)(d * ((int32_t)in[((size_t)iy * w + ix) * c_in + c] + input_offset));
        }
    }
    return delta;
}

/* Dense K x K: output o at the window starting at (y0, x0); filter OHWI. */
static inline int32_t tt_patch_delta_conv(const tt_weight_patch *patch, const tt_dims *in_dims, const int8_t *in,
                                          const int8_t *filter, int32_t k, int32_t o, int32_t y0, int32_t x0,
                                          int32_t input_offset)
{
    const int8_t *home_o = filter + (size_t)o * k * k * in_dims->c;
    uint32_t delta = 0;
    for (int32_t j = 0; j < patch->count; j++) {
        const int32_t c = patch->channel[j];
        delta += tt_patch_delta_window(tt_patch_slice(patch, j) + (size_t)o * k * k, home_o + c, in_dims, in, c, k,
                                       y0, x0, input_offset);
    }
    return (int32_t)delta;
}

/* Depthwise: channel c at the window starting at (y0, x0) if c is the patch's next channel (then *next moves
 * on; callers visit channels in ascending order), else 0; filter KKC. */
static inline int32_t tt_patch_delta_dw(const tt_weight_patch *patch, int32_t *next, const tt_dims *in_dims,
                                        const int8_t *in, const int8_t *filter, int32_t c, int32_t k, int32_t y0,
                                        int32_t x0, int32_t input_offset)
{
    if (patch == NULL || *next >= patch->count || patch->channel[*next] != c) {
        return 0;
    }
    const int8_t *s = tt_patch_slice(patch, (*next)++);
    return (int32_t)tt_patch_delta_window(s, filter + c, in_dims, in, c, k, y0, x0, input_offset);
}

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
    return tt_check_patch(conv->patch, in_dims->c);
}


/** The three conv kernels (tt_kernels.h), for tt_check_conv_args. */
typedef enum { TT_CONV_DENSE, TT_CONV_POINTWISE, TT_CONV_DEPTHWISE } tt_conv_kind;

/* Every argument check of a conv kernel of `kind`, in the kernels' order (NULL dims, then tt_check_conv, then
 * the filter's shape); shared by the reference kernels and their DSP variants. */
static inline tt_status tt_check_conv_args(tt_conv_kind kind, const tt_conv_params *conv,
                                           const tt_per_channel_quant *quant, const tt_dims *in_dims, const void *in,
                                           const tt_dims *filter_dims, const void *filter, const void *bias,
                                           const tt_dims *out_dims, const void *out)
{
    if (filter_dims == NULL || in_dims == NULL) {
        return TT_ERR_ARG;
    }
    const int32_t k = filter_dims->h, c_in = in_dims->c;
    const int32_t c_out = kind == TT_CONV_DEPTHWISE ? c_in : filter_dims->n;
    const tt_status st = tt_check_conv(conv, quant, in_dims, in, filter_dims, filter, bias, out_dims, out,
                                       kind == TT_CONV_POINTWISE ? 1 : k, c_out);
    if (st != TT_OK) {
        return st;
    }
    int ok;
    switch (kind) {
    case TT_CONV_POINTWISE:
        ok = filter_dims->h == 1 && filter_dims->w == 1 && filter_dims->c == c_in;
        break;
    case TT_CONV_DEPTHWISE:
        ok = filter_dims->n == 1 && filter_dims->w == k && filter_dims->c == c_in;
        break;
    default:
        ok = filter_dims->w == k && filter_dims->c == c_in;
        break;
    }
    return ok ? TT_OK : TT_ERR_ARG;
}

#endif /* TT_CONV_COMMON_H */
