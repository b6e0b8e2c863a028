/* trady runtime: global average pool, dequantise, fp32 head (reference C99); the residual add is tt_add_s8.c. */
#include <stddef.h>

#include "tt_kernels.h"
#include "tt_requant.h"

tt_status tt_avgpool_global_s8(const tt_dims *in_dims, const int8_t *in, int8_t *out)
{
    if (in_dims == NULL || in == NULL || out == NULL || in_dims->n != 1 || in_dims->h < 1 || in_dims->w < 1) {
        return TT_ERR_ARG;
    }
    if (in_dims->c < 1 || in_dims->h > (1 << 23) / in_dims->w) {
        return TT_ERR_RANGE; /* keeps |sum| <= 128 * H * W below 2^31 */
    }
    const int32_t n = in_dims->h * in_dims->w;
    for (int32_t c = 0; c < in_dims->c; c++) {
        int32_t acc = 0;
        for (int32_t i = 0; i < n; i++) {
            acc += in[(size_t)i * in_dims->c + c];
        }
        /* Round half away from zero (TFLite AVERAGE_POOL_2D); C division truncates toward zero. */
        acc = acc > 0 ? (acc + n / 2) / n : (acc - n / 2) / n;
        out[c] = tt_clamp_s8(acc);
    }
    return TT_OK;
}

tt_status tt_dequantize_s8_f32(const int8_t *in, int32_t size, int32_t zero, float scale, float *out)
{
    if (in == NULL || out == NULL || size < 0) {
        return TT_ERR_ARG;
    }
    for (int32_t i = 0; i < size; i++) {
        out[i] = (float)((int32_t)in[i] - zero) * scale;
    }
    return TT_OK;
}

tt_status tt_fully_connected_f32(const float *in, const float *weight, const float *bias, int32_t features,
                                 int32_t classes, float *out)
{
    if (in == NULL || weight == NULL || bias == NULL || out == NULL || features < 1 || classes < 1) {
        return TT_ERR_ARG;
    }
    for (int32_t k = 0; k < classes; k++) {
        const float *wk = weight + (size_t)k * features;
        float acc = bias[k];
        for (int32_t i = 0; i < features; i++) {
            acc += wk[i] * in[i];
        }
        out[k] = acc;
    }
    return TT_OK;
}
