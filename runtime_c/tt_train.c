/* trady runtime: training kernels, reference C99 (see tt_train.h). */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "tt_conv_bwd_common.h"
#include "tt_conv_common.h"
#include "tt_fmath.h"
#include "tt_train.h"

static inline float mask_at(const uint8_t *mask, int32_t i)
{
    return (float)((mask[i >> 3] >> (i & 7)) & 1);
}

/* 1 where -128 < q < 127, i.e. q + 127 in [0, 253]. */
static inline uint32_t unclamped(int8_t q)
{
    return (uint32_t)((int32_t)q + 127) < 254u ? 1u : 0u;
}

tt_status tt_clamp_mask_s8(const int8_t *q, int32_t size, uint8_t *mask)
{
    if (q == NULL || mask == NULL || size < 0) {
        return TT_ERR_ARG;
    }
    int32_t i = 0;
    for (; i + 8 <= size; i += 8) { /* one byte per 8 values, unrolled */
        mask[i >> 3] = (uint8_t)(unclamped(q[i]) | unclamped(q[i + 1]) << 1 | unclamped(q[i + 2]) << 2 |
                                 unclamped(q[i + 3]) << 3 | unclamped(q[i + 4]) << 4 | unclamped(q[i + 5]) << 5 |
                                 unclamped(q[i + 6]) << 6 | unclamped(q[i + 7]) << 7);
    }
    if (i < size) { /* the last, partial byte; its high bits 0 */
        uint32_t bits = 0;
        for (int32_t j = 0; i + j < size; j++) {
            bits |= unclamped(q[i + j]) << j;
        }
        mask[i >> 3] = (uint8_t)bits;
    }
    return TT_OK;
}

tt_status tt_save_channel_s8(const tt_dims *dims, const int8_t *in, int32_t c, int8_t *out)
{
    if (dims == NULL || in == NULL || out == NULL || c < 0 || c >= dims->c) {
        return TT_ERR_ARG;
    }
    const int32_t n = dims->h * dims->w;
    for (int32_t i = 0; i < n; i++) {
        out[i] = in[(size_t)i * dims->c + c];
    }
    return TT_OK;
}

tt_status tt_softmax_xent_f32(const float *logits, int32_t classes, int32_t label, float *grad, float *loss)
{
    if (logits == NULL || grad == NULL || loss == NULL || classes < 1) {
        return TT_ERR_ARG;
    }
    if (label < 0 || label >= classes) {
        return TT_ERR_RANGE;
    }
    float m = logits[0];
    for (int32_t k = 1; k < classes; k++) {
        m = logits[k] > m ? logits[k] : m;
    }
    float sum = 0.0f;
    for (int32_t k = 0; k < classes; k++) {
        grad[k] = tt_expf(logits[k] - m);
        sum = sum + grad[k];
    }
    for (int32_t k = 0; k < classes; k++) {
        grad[k] = grad[k] / sum;
    }
    grad[label] = grad[label] - 1.0f;
    *loss = tt_logf(sum) - (logits[label] - m);
    return TT_OK;
}

/* g_in[i] = in_scale * sum_k W[k, i] g[k], k in order (the head's input gradient with the current weights). */
static void fc_grad_input(const float *weight, const float *grad, int32_t features, int32_t classes, float in_scale,
                          float *g_in)
{
    for (int32_t i = 0; i < features; i++) {
        float acc = 0.0f;
        for (int32_t k = 0; k < classes; k++) {
            acc = acc + weight[(size_t)k * features + i] * grad[k];
        }
        g_in[i] = acc * in_scale;
    }
}

tt_status tt_fully_connected_f32_bwd_update(const float *in, const float *grad, int32_t features, int32_t classes,
                                            float lr, float in_scale, float *weight, float *bias, float *g_in)
{
    if (in == NULL || grad == NULL || weight == NULL || bias == NULL || g_in == NULL || features < 1 ||
        classes < 1) {
        return TT_ERR_ARG;
    }
    fc_grad_input(weight, grad, features, classes, in_scale, g_in);
    for (int32_t k = 0; k < classes; k++) {
        float *wk = weight + (size_t)k * features;
        for (int32_t i = 0; i < features; i++) {
            wk[i] = wk[i] - lr * (grad[k] * in[i]);
        }
        bias[k] = bias[k] - lr * grad[k];
    }
    return TT_OK;
}

tt_status tt_fully_connected_f32_bwd_accumulate(const float *in, const float *grad, int32_t features,
                                                int32_t classes, float in_scale, const float *weight, float *acc_w,
                                                float *acc_b, float *g_in)
{
    if (in == NULL || grad == NULL || weight == NULL || acc_w == NULL || acc_b == NULL || g_in == NULL ||
        features < 1 || classes < 1) {
        return TT_ERR_ARG;
    }
    fc_grad_input(weight, grad, features, classes, in_scale, g_in);
    for (int32_t k = 0; k < classes; k++) {
        float *ak = acc_w + (size_t)k * features;
        for (int32_t i = 0; i < features; i++) {
            ak[i] = ak[i] + grad[k] * in[i];
        }
        acc_b[k] = acc_b[k] + grad[k];
    }
    return TT_OK;
}

tt_status tt_fully_connected_f32_apply(const float *acc_w, const float *acc_b, int32_t features, int32_t classes,
                                       float lr, float scale, float *weight, float *bias)
{
    if (acc_w == NULL || acc_b == NULL || weight == NULL || bias == NULL || features < 1 || classes < 1) {
        return TT_ERR_ARG;
    }
    for (int32_t k = 0; k < classes; k++) {
        float *wk = weight + (size_t)k * features;
        const float *ak = acc_w + (size_t)k * features;
        for (int32_t i = 0; i < features; i++) {
            wk[i] = wk[i] - lr * (ak[i] * scale);
        }
        bias[k] = bias[k] - lr * (acc_b[k] * scale);
    }
    return TT_OK;
}

tt_status tt_avgpool_global_bwd_f32(const tt_dims *in_dims, const float *g_out, float inv_hw, int32_t accumulate,
                                    float *g_in)
{
    if (in_dims == NULL || g_out == NULL || g_in == NULL) {
        return TT_ERR_ARG;
    }
    const int32_t n = in_dims->h * in_dims->w;
    for (int32_t i = 0; i < n; i++) {
        for (int32_t c = 0; c < in_dims->c; c++) {
            const float v = g_out[c] * inv_hw;
            float *dst = g_in + (size_t)i * in_dims->c + c;
            *dst = accumulate ? *dst + v : v;
        }
    }
    return TT_OK;
}

tt_status tt_add_bwd_f32(const float *g_out, const uint8_t *mask, int32_t size, float ratio1, float ratio2,
                         int32_t accumulate1, float *g_1, int32_t accumulate2, float *g_2)
{
    if (g_out == NULL || mask == NULL || size < 0) {
        return TT_ERR_ARG;
    }
    for (int32_t i = 0; i < size; i++) {
        const float g = g_out[i] * mask_at(mask, i);
        if (g_1 != NULL) {
            g_1[i] = accumulate1 ? g_1[i] + g * ratio1 : g * ratio1;
        }
        if (g_2 != NULL) {
            g_2[i] = accumulate2 ? g_2[i] + g * ratio2 : g * ratio2;
        }
    }
    return TT_OK;
}

/*
 * Round to nearest, ties to even (the FPU's default mode), for |x| < 2^22 or NaN: rintf on the host and where the
 * FPU has VRINTX (Cortex-M7's FPv5), else x + 1.5 * 2^23 - 1.5 * 2^23 (Cortex-M4's FPv4 has no VRINTX and rintf is a
 * libm call). The magic form is exact there: x + 1.5 * 2^23 lies in [2^23, 2^24), where the float grid is the
 * integers, so the sum is x rounded to an integer (ties to even) and the subtraction is exact; it yields +0 where
 * rintf yields -0 (x in [-0.5, -0]), which the (int16_t) conversion maps to the same 0. NaN stays NaN.
 */
#ifndef TT_GQ_ROUND_MAGIC
#if defined(__arm__) && defined(__ARM_FP) && !(__ARM_FP & 8)
#define TT_GQ_ROUND_MAGIC 1
#else
#define TT_GQ_ROUND_MAGIC 0
#endif
#endif

static inline float gq_round(float x)
{
#if TT_GQ_ROUND_MAGIC
    return (x + 12582912.0f) - 12582912.0f; /* 1.5 * 2^23; not folded: (x + c) - c == x is not an IEEE identity */
#else
    return rintf(x);
#endif
}

/* cm = max(cm, |g|) where the mask bit is set (the "v > amax" fold of pass 1 below). */
static inline void gq_max(uint32_t b, uint32_t bit, float g, float *cm)
{
    const float a = fabsf(g);
    if ((b & bit) != 0u && a > *cm) {
        *cm = a;
    }
}

/* One element of pass 2 below: 0 where the mask bit is clear, else (int16_t)round((g * s) * inv). */
static inline int16_t gq_q(uint32_t b, uint32_t bit, const float *g, const float *s, float inv)
{
    return (b & bit) != 0u ? (int16_t)gq_round((*g * *s) * inv) : 0;
}

#define TT_GQ_CHUNK 64 /* channels whose running max |g| is kept on the stack at a time (256 bytes) */

/*
 * g' = (g * m) * s[o] (m = the mask bit as 0.0f / 1.0f) quantised to int16 with one scale; the values equal those of
 * the element-wise form (compiler/training.py) bit for bit:
 *
 * Pass 1, amax = max over elements of |g'|, folded with "v > amax ? v : amax" from +0, so NaN and +-0 terms never
 * change it and only the set of values > 0 matters. A masked element (m = 0) gives (g * 0) * s = +-0 or NaN (g or
 * s not finite): never counted, so it is skipped. An unmasked one gives |g * s| = fl(|g| * |s|) (rounding is
 * sign-symmetric). fl(x * |s|) is non-decreasing in x >= 0 (rounding is monotone, overflow included), so
 * max_i fl(|g_i| * |s|) = fl(cm * |s|), cm = max_i |g_i| over the channel's unmasked non-NaN g (folded the same
 * way from +0): a NaN g_i gives a NaN term both ways, never counted. The edge terms agree too: cm = 0 (nothing
 * unmasked, or all zero) gives 0 or NaN (s inf / NaN), never counted, as each term 0 * s was; cm > 0 with s NaN
 * gives NaN as each term did; s = +-inf gives inf iff some |g_i| > 0 (each term inf or NaN), s = 0 gives 0 or
 * NaN (cm inf) where the terms were 0 or NaN: counted the same. So the per-element s[o] multiply leaves the loop.
 *
 * Pass 2: a masked element was rintf((+-0 or NaN) * inv) -> (int16_t): 0 for +-0; for NaN the conversion is
 * out of range (undefined in C) and gives 0 on the targets (VCVT and cvttss2si truncated to 16 bits): it is
 * written 0 directly. An unmasked one computes (g * s) * inv as before (g * 1 = g exactly). The old clamp of the
 * rounded value to +-32767 is dropped because it never changed one: t = g * s is NaN (left as is by the clamp) or
 * finite with |t| <= amax (amax is the max of these |t|; inf made pass 1 return), and then by monotone rounding
 * |t * inv| <= fl(amax * fl(32767 / amax)) <= fl(32767 (1 + 2^-24)^2) <= 32767 + 2^-9 (the float spacing there),
 * which rounds to at most 32767; so |t * inv| < 2^22 and gq_round is exact.
 */
tt_status tt_grad_quantize_s16(const tt_dims *out_dims, const float *g_out, const uint8_t *mask,
                               const float *eff_scale, int16_t *grad_q, float *sigma)
{
    if (out_dims == NULL || g_out == NULL || mask == NULL || eff_scale == NULL || grad_q == NULL || sigma == NULL) {
        return TT_ERR_ARG;
    }
    const int32_t c_out = out_dims->c, pixels = out_dims->h * out_dims->w;
    const int32_t size = pixels * c_out;
    float amax = 0.0f;
    for (int32_t o0 = 0; o0 < c_out; o0 += TT_GQ_CHUNK) {
        const int32_t n = c_out - o0 < TT_GQ_CHUNK ? c_out - o0 : TT_GQ_CHUNK;
        float cm[TT_GQ_CHUNK];
        for (int32_t k = 0; k < n; k++) {
            cm[k] = 0.0f;
        }
        for (int32_t p = 0, i = o0; p < pixels; p++, i += c_out) { /* element i + k = (pixel p, channel o0 + k) */
            if ((c_out & 7) == 0) { /* i and n are multiples of 8: one mask byte per 8 elements */
                for (int32_t k = 0; k < n; k += 8) {
                    const uint32_t b = mask[(i + k) >> 3];
                    if (b != 0u) {
                        const float *g = g_out + i + k;
                        float *c = cm + k;
                        gq_max(b, 0x01u, g[0], c + 0);
                        gq_max(b, 0x02u, g[1], c + 1);
                        gq_max(b, 0x04u, g[2], c + 2);
                        gq_max(b, 0x08u, g[3], c + 3);
                        gq_max(b, 0x10u, g[4], c + 4);
                        gq_max(b, 0x20u, g[5], c + 5);
                        gq_max(b, 0x40u, g[6], c + 6);
                        gq_max(b, 0x80u, g[7], c + 7);
                    }
                }
                continue;
            }
            for (int32_t k = 0; k < n; k++) {
                const int32_t e = i + k;
                if ((mask[e >> 3] >> (e & 7)) & 1u) {
                    const float a = fabsf(g_out[e]);
                    cm[k] = a > cm[k] ? a : cm[k];
                }
            }
        }
        for (int32_t k = 0; k < n; k++) {
            const float v = cm[k] * fabsf(eff_scale[o0 + k]);
            amax = v > amax ? v : amax;
        }
    }
    if (!(amax >= TT_GRAD_MIN && amax <= FLT_MAX)) { /* zero, too small to scale (32767 / amax overflows), or not finite */
        for (int32_t i = 0; i < size; i++) {
            grad_q[i] = 0;
        }
        *sigma = 0.0f;
        return TT_OK;
    }
    const float inv = (float)TT_GRAD_LEVELS / amax;
    if ((c_out & 7) == 0) { /* one mask byte per 8 elements of one pixel */
        for (int32_t i = 0, o = 0; i < size; i += 8) {
            const uint32_t b = mask[i >> 3];
            const float *g = g_out + i, *sc = eff_scale + o;
            int16_t *q = grad_q + i;
            q[0] = gq_q(b, 0x01u, g + 0, sc + 0, inv);
            q[1] = gq_q(b, 0x02u, g + 1, sc + 1, inv);
            q[2] = gq_q(b, 0x04u, g + 2, sc + 2, inv);
            q[3] = gq_q(b, 0x08u, g + 3, sc + 3, inv);
            q[4] = gq_q(b, 0x10u, g + 4, sc + 4, inv);
            q[5] = gq_q(b, 0x20u, g + 5, sc + 5, inv);
            q[6] = gq_q(b, 0x40u, g + 6, sc + 6, inv);
            q[7] = gq_q(b, 0x80u, g + 7, sc + 7, inv);
            o = o + 8 == c_out ? 0 : o + 8;
        }
    } else {
        for (int32_t p = 0, i = 0; p < pixels; p++) {
            for (int32_t o = 0; o < c_out; o++, i++) {
                grad_q[i] = gq_q(mask[i >> 3], 1u << (i & 7), g_out + i, eff_scale + o, inv);
            }
        }
    }
    *sigma = amax / (float)TT_GRAD_LEVELS;
    return TT_OK;
}

/* floor(a / b) for b > 0 (C division truncates toward zero). */
static inline int32_t floor_div(int32_t a, int32_t b)
{
    const int32_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/*
 * One QAS SGD step of a single weight on its master copy w + r / 256 (see tt_train.h):
 * d = floor(clamp(-(dW * inv_sw2[o]) * lr * 256) + u); m = 256 w + r + d; w = clamp(round_half_up(m / 256));
 * r = clamp(m - 256 w). |d| <= 2^20 and |m| < 2^21: no int32 overflow.
 */
static inline void sgd_master(int8_t *w, int8_t *r, float dw, const tt_sgd_params *sgd, int32_t o)
{
    const float t = (dw * sgd->inv_sw2[o]) * sgd->lr;
    float x = -t * (float)TT_RESIDUAL_ONE;
    x = x == x ? x : 0.0f; /* NaN (an overflowed dW times a dead channel's 0): no step */
    x = x > TT_STEP_LIMIT ? TT_STEP_LIMIT : (x < -TT_STEP_LIMIT ? -TT_STEP_LIMIT : x);
    const int32_t d = (int32_t)floorf(x + tt_prng_uniform(sgd->rng));
    const int32_t m = (int32_t)*w * TT_RESIDUAL_ONE + (int32_t)*r + d;
    int32_t nw = floor_div(m + TT_RESIDUAL_ONE / 2, TT_RESIDUAL_ONE);
    nw = nw < -127 ? -127 : (nw > 127 ? 127 : nw);
    int32_t nr = m - nw * TT_RESIDUAL_ONE;
    nr = nr < -128 ? -128 : (nr > 127 ? 127 : nr);
    *w = (int8_t)nw;
    *r = (int8_t)nr;
}

/*
 * One QAS SGD step of a single working weight with stochastic rounding to whole LSBs (no residual; the flash
 * weight home): d = floor(clamp(-(dW * inv_sw2[o]) * lr) + u); w = clamp(w + d, -127, 127). |d| <= 2^20.
 */
static inline void sgd_round(int8_t *w, float dw, const tt_sgd_params *sgd, int32_t o)
{
    const float t = (dw * sgd->inv_sw2[o]) * sgd->lr;
    float x = -t;
    x = x == x ? x : 0.0f; /* NaN (an overflowed dW times a dead channel's 0): no step */
    x = x > TT_STEP_LIMIT ? TT_STEP_LIMIT : (x < -TT_STEP_LIMIT ? -TT_STEP_LIMIT : x);
    const int32_t v = (int32_t)*w + (int32_t)floorf(x + tt_prng_uniform(sgd->rng));
    *w = (int8_t)(v < -127 ? -127 : (v > 127 ? 127 : v));
}

/* Weight-gradient sums of a 1x1 dense/pointwise slice, TT_WG_BLOCK output channels at a time (the kernels visit the
 * elements in o order): sum[o - first] for o in [first, first + count); rows = C_out, or 0 where not 1x1 dense. */
#define TT_WG_BLOCK 32
typedef struct {
    int64_t sum[TT_WG_BLOCK];
    int32_t first, count, rows;
} wg_block;

static inline void wg_init(wg_block *b, int32_t depthwise, const tt_dims *filter_dims)
{
    b->first = 0;
    b->count = 0;
    b->rows = !depthwise && filter_dims->h == 1 && filter_dims->w == 1 ? filter_dims->n : 0;
}

/* The weight-gradient sum of tap (ky, kx) of output channel o, as fp32 (tt_conv_bwd_common.h). */
static inline float wsum(wg_block *b, const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *saved,
                         const tt_dims *out_dims, const int16_t *grad_q, int32_t o, int32_t ky, int32_t kx)
{
    if (b->rows == 0) {
        return tt_sum_to_f32(tt_conv_s8_weight_grad_sum(conv, in_dims, saved, out_dims, grad_q, o, ky, kx));
    }
    if (o < b->first || o >= b->first + b->count) {
        b->first = o;
        b->count = b->rows - o < TT_WG_BLOCK ? b->rows - o : TT_WG_BLOCK;
        tt_conv_s8_weight_grad_sums_1x1(conv, in_dims, saved, out_dims, grad_q, o, b->count, b->sum);
    }
    return tt_sum_to_f32(b->sum[o - b->first]);
}

tt_status tt_conv2d_s8_bwd_weight_update(const tt_conv_params *conv, const tt_sgd_params *sgd,
                                         const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                         const tt_dims *out_dims, const int16_t *grad_q,
                                         const tt_dims *filter_dims, int8_t *filter, int8_t *residual)
{
    if (conv == NULL || sgd == NULL || sgd->rng == NULL || sgd->inv_sw2 == NULL || in_dims == NULL ||
        saved == NULL || out_dims == NULL || grad_q == NULL || filter_dims == NULL || filter == NULL ||
        residual == NULL || c < 0 || c >= filter_dims->c) {
        return TT_ERR_ARG;
    }
    const int32_t k = filter_dims->h, c_in = filter_dims->c;
    wg_block wb;
    wg_init(&wb, 0, filter_dims);
    for (int32_t o = 0; o < filter_dims->n; o++) {
        for (int32_t ky = 0; ky < k; ky++) {
            for (int32_t kx = 0; kx < k; kx++) {
                int8_t *w = filter + (((size_t)o * k + ky) * k + kx) * c_in + c;
                sgd_master(w, residual + ((size_t)o * k + ky) * k + kx,
                           wsum(&wb, conv, in_dims, saved, out_dims, grad_q, o, ky, kx) * sgd->sigma, sgd,
                           o);
            }
        }
    }
    return TT_OK;
}

tt_status tt_depthwise_conv2d_s8_bwd_weight_update(const tt_conv_params *conv, const tt_sgd_params *sgd,
                                                   const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                                   const tt_dims *out_dims, const int16_t *grad_q,
                                                   const tt_dims *filter_dims, int8_t *filter, int8_t *residual)
{
    if (conv == NULL || sgd == NULL || sgd->rng == NULL || sgd->inv_sw2 == NULL || in_dims == NULL ||
        saved == NULL || out_dims == NULL || grad_q == NULL || filter_dims == NULL || filter == NULL ||
        residual == NULL || c < 0 || c >= filter_dims->c) {
        return TT_ERR_ARG;
    }
    const int32_t k = filter_dims->h, ch = filter_dims->c;
    wg_block wb;
    wg_init(&wb, 1, filter_dims);
    for (int32_t ky = 0; ky < k; ky++) {
        for (int32_t kx = 0; kx < k; kx++) {
            int8_t *w = filter + ((size_t)ky * k + kx) * ch + c;
            sgd_master(w, residual + (size_t)ky * k + kx,
                       wsum(&wb, conv, in_dims, saved, out_dims, grad_q, c, ky, kx) * sgd->sigma, sgd, c);
        }
    }
    return TT_OK;
}

static int sgd_args_bad(const tt_conv_params *conv, const tt_sgd_params *sgd, const tt_dims *in_dims,
                        const int8_t *saved, int32_t c, const tt_dims *out_dims, const int16_t *grad_q,
                        const tt_dims *filter_dims, const int8_t *slice)
{
    return conv == NULL || sgd == NULL || sgd->rng == NULL || sgd->inv_sw2 == NULL || in_dims == NULL ||
           saved == NULL || out_dims == NULL || grad_q == NULL || filter_dims == NULL || slice == NULL || c < 0 ||
           c >= filter_dims->c;
}

/* The SR update of input channel c's working slice, element by element in (o, ky, kx) order ((ky, kx) and o = c
 * if depthwise): the two _sr kernels. */
static tt_status update_slice_sr(const tt_conv_params *conv, const tt_sgd_params *sgd, const tt_dims *in_dims,
                                 const int8_t *saved, int32_t c, const tt_dims *out_dims, const int16_t *grad_q,
                                 const tt_dims *filter_dims, int32_t depthwise, int8_t *slice)
{
    if (sgd_args_bad(conv, sgd, in_dims, saved, c, out_dims, grad_q, filter_dims, slice)) {
        return TT_ERR_ARG;
    }
    const int32_t k = filter_dims->h, rows = depthwise ? 1 : filter_dims->n;
    wg_block wb;
    wg_init(&wb, depthwise, filter_dims);
    for (int32_t r = 0; r < rows; r++) {
        const int32_t o = depthwise ? c : r;
        for (int32_t ky = 0; ky < k; ky++) {
            for (int32_t kx = 0; kx < k; kx++) {
                sgd_round(slice + ((size_t)r * k + ky) * k + kx,
                          wsum(&wb, conv, in_dims, saved, out_dims, grad_q, o, ky, kx) * sgd->sigma, sgd, o);
            }
        }
    }
    return TT_OK;
}

tt_status tt_conv2d_s8_bwd_weight_update_sr(const tt_conv_params *conv, const tt_sgd_params *sgd,
                                            const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                            const tt_dims *out_dims, const int16_t *grad_q,
                                            const tt_dims *filter_dims, int8_t *slice)
{
    return update_slice_sr(conv, sgd, in_dims, saved, c, out_dims, grad_q, filter_dims, 0, slice);
}

tt_status tt_depthwise_conv2d_s8_bwd_weight_update_sr(const tt_conv_params *conv, const tt_sgd_params *sgd,
                                                      const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                                      const tt_dims *out_dims, const int16_t *grad_q,
                                                      const tt_dims *filter_dims, int8_t *slice)
{
    return update_slice_sr(conv, sgd, in_dims, saved, c, out_dims, grad_q, filter_dims, 1, slice);
}

tt_status tt_conv_s8_bwd_weight_accumulate(const tt_conv_params *conv, float sigma, int32_t depthwise,
                                           const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                           const tt_dims *out_dims, const int16_t *grad_q,
                                           const tt_dims *filter_dims, float *acc)
{
    if (conv == NULL || in_dims == NULL || saved == NULL || out_dims == NULL || grad_q == NULL ||
        filter_dims == NULL || acc == NULL || c < 0 || c >= filter_dims->c) {
        return TT_ERR_ARG;
    }
    const int32_t k = filter_dims->h, rows = depthwise ? 1 : filter_dims->n;
    wg_block wb;
    wg_init(&wb, depthwise, filter_dims);
    for (int32_t o = 0; o < rows; o++) {
        for (int32_t ky = 0; ky < k; ky++) {
            for (int32_t kx = 0; kx < k; kx++) {
                float *a = acc + ((size_t)o * k + ky) * k + kx;
                *a = *a + wsum(&wb, conv, in_dims, saved, out_dims, grad_q, depthwise ? c : o, ky, kx) *
                              sigma;
            }
        }
    }
    return TT_OK;
}

tt_status tt_sgd_apply_s8(const tt_sgd_params *sgd, const tt_dims *filter_dims, int32_t depthwise, int32_t c,
                          const float *acc, float scale, int8_t *weights, int8_t *residual)
{
    if (sgd == NULL || sgd->rng == NULL || sgd->inv_sw2 == NULL || filter_dims == NULL || acc == NULL ||
        weights == NULL || c < 0 || c >= filter_dims->c) {
        return TT_ERR_ARG;
    }
    const int32_t kk = filter_dims->h * filter_dims->w, rows = depthwise ? 1 : filter_dims->n;
    for (int32_t e = 0; e < rows * kk; e++) {
        const int32_t o = depthwise ? c : e / kk;
        if (residual != NULL) { /* RAM home: the master copy, weights = the home filter */
            sgd_master(weights + (size_t)e * filter_dims->c + c, residual + e, acc[e] * scale, sgd, o);
        } else { /* flash home: weights = the contiguous working slice */
            sgd_round(weights + e, acc[e] * scale, sgd, o);
        }
    }
    return TT_OK;
}

tt_status tt_slice_load_s8(const tt_dims *filter_dims, int32_t depthwise, int32_t c, const int8_t *filter,
                           int8_t *slice)
{
    if (filter_dims == NULL || filter == NULL || slice == NULL || c < 0 || c >= filter_dims->c) {
        return TT_ERR_ARG;
    }
    const int32_t n = (depthwise ? 1 : filter_dims->n) * filter_dims->h * filter_dims->w;
    for (int32_t e = 0; e < n; e++) {
        slice[e] = filter[(size_t)e * filter_dims->c + c];
    }
    return TT_OK;
}

tt_status tt_weights_read_s8(const tt_dims *filter_dims, int32_t depthwise, const int8_t *filter,
                             const tt_weight_patch *patch, int32_t offset, int32_t count, int8_t *out)
{
    if (filter_dims == NULL || filter == NULL || out == NULL || offset < 0 || count < 0) {
        return TT_ERR_ARG;
    }
    const int32_t c_in = filter_dims->c;
    const int32_t per_slice = (depthwise ? 1 : filter_dims->n) * filter_dims->h * filter_dims->w;
    if (offset > per_slice * c_in - count || tt_check_patch(patch, c_in) != TT_OK) {
        return TT_ERR_ARG;
    }
    memcpy(out, filter + offset, (size_t)count);
    for (int32_t j = 0; patch != NULL && j < patch->count; j++) {
        const int32_t c = patch->channel[j];
        for (int32_t e = 0; e < per_slice; e++) {
            const int32_t at = e * c_in + c - offset;
            if (at >= 0 && at < count) {
                out[at] = tt_patch_slice(patch, j)[e];
            }
        }
    }
    return TT_OK;
}

tt_status tt_residual_writeback_s8(const tt_dims *filter_dims, int32_t depthwise, int32_t c, const int8_t *residual,
                                   tt_prng *rng, int8_t *filter)
{
    if (filter_dims == NULL || residual == NULL || rng == NULL || filter == NULL || c < 0 || c >= filter_dims->c) {
        return TT_ERR_ARG;
    }
    const int32_t k = filter_dims->h, ch = filter_dims->c;
    const int32_t rows = depthwise ? 1 : filter_dims->n;
    for (int32_t i = 0; i < rows * k * k; i++) {
        /* slice element i: (o, ky, kx) of OHWI, or (ky, kx) of KKC */
        int8_t *w = filter + (size_t)i * ch + c;
        const float step = floorf((float)residual[i] * (1.0f / (float)TT_RESIDUAL_ONE) + tt_prng_uniform(rng));
        int32_t v = (int32_t)*w + (int32_t)step;
        *w = (int8_t)(v < -127 ? -127 : (v > 127 ? 127 : v));
    }
    return TT_OK;
}

float tt_lr_cosine(float base, int32_t step, int32_t warmup_steps, int32_t total_steps)
{
    if (step < warmup_steps) {
        return base * ((float)(step + 1) / (float)warmup_steps);
    }
    int32_t span = total_steps - warmup_steps;
    span = span > 1 ? span : 1;
    int32_t done = step - warmup_steps;
    done = done < span ? done : span;
    const float frac = (float)done / (float)span;
    return (base * 0.5f) * (1.0f + tt_cosf(3.14159274f * frac));
}
