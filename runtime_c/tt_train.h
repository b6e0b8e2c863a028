/*
 * trady runtime: training kernels (SPEC 5) and the TraDy sampler (SPEC 7), bit-exact with
 * compiler/training.py and compiler/sampler.py.
 *
 * Gradients travel between layers as fp32 g = dL/dq (with respect to each tensor's integer value),
 * laid out like the tensor ([H, W, C]). Inside a conv, g' = g * mask * M[o] is quantised to int16
 * with one per-tensor scale sigma (tt_grad_quantize_s16); all sums over g' are then integer sums
 * (int32 products, int64 accumulators: exact, so the summation order does not matter) and are
 * scaled back to fp32 by one multiply with sigma.
 */
#ifndef TT_TRAIN_H
#define TT_TRAIN_H

#include <stdint.h>

#include "tt_prng.h"
#include "tt_types.h"

#define TT_GRAD_LEVELS 32767
#define TT_GRAD_MIN 1e-30f          /**< max|g'| below this (or not finite) counts as a zero gradient */
#define TT_RESIDUAL_ONE 256        /**< residual units per weight LSB (8 fractional bits) */
#define TT_STEP_LIMIT 1048576.0f   /**< |update| bound in residual units before the int conversion */

/*
 * Per-layer cost of a training step: the generated train_step calls TT_TRAIN_MARK() after each forward op, after
 * the loss and head, and after each backward op. The firmware's instruction-count build (trady bench-mcu)
 * defines TT_TRAIN_MARKS and provides tt_train_mark(); elsewhere the marks compile to nothing.
 */
#if defined(TT_TRAIN_MARKS)
void tt_train_mark(void);
#define TT_TRAIN_MARK() tt_train_mark()
#else
#define TT_TRAIN_MARK() ((void)0)
#endif

/** mask bit i (LSB first within each byte) = 1 where -128 < q[i] < 127 (the output was not clamped). */
tt_status tt_clamp_mask_s8(const int8_t *q, int32_t size, uint8_t *mask);

/** Copy channel c of an [H, W, C] int8 tensor into a contiguous [H, W] plane (saved activation A[c]). */
tt_status tt_save_channel_s8(const tt_dims *dims, const int8_t *in, int32_t c, int8_t *out);

/**
 * Softmax cross-entropy: grad[k] = p[k] - (k == label), loss = log(sum exp(l - max)) - (l[label] - max).
 * exp is tt_expf; the sum runs over k in order.
 */
tt_status tt_softmax_xent_f32(const float *logits, int32_t classes, int32_t label, float *grad, float *loss);

/**
 * fp32 head backward and SGD: g_in[i] = sum_k W[k, i] g[k] (k in order, with the old weights), then
 * W[k, i] -= lr * (g[k] * in[i]) and bias[k] -= lr * g[k]. g_in is scaled by `in_scale` (dL/dq).
 */
tt_status tt_fully_connected_f32_bwd_update(const float *in, const float *grad, int32_t features, int32_t classes,
                                            float lr, float in_scale, float *weight, float *bias, float *g_in);

/**
 * Gradient accumulation (compile option): g_in as tt_fully_connected_f32_bwd_update (current weights), then
 * acc_w[k, i] += grad[k] * in[i] and acc_b[k] += grad[k]; the weights do not change.
 */
tt_status tt_fully_connected_f32_bwd_accumulate(const float *in, const float *grad, int32_t features,
                                                int32_t classes, float in_scale, const float *weight, float *acc_w,
                                                float *acc_b, float *g_in);

/** Apply accumulated head gradients: W[k, i] -= lr * (acc_w[k, i] * scale), bias[k] -= lr * (acc_b[k] * scale). */
tt_status tt_fully_connected_f32_apply(const float *acc_w, const float *acc_b, int32_t features, int32_t classes,
                                       float lr, float scale, float *weight, float *bias);

/** Global average pool backward: g_in[h, w, c] (+)= g_out[c] * inv_hw. */
tt_status tt_avgpool_global_bwd_f32(const tt_dims *in_dims, const float *g_out, float inv_hw, int32_t accumulate,
                                    float *g_in);

/** Residual add backward: g = g_out * mask; g_1 (+)= g * ratio1; g_2 (+)= g * ratio2 (either may be NULL). */
tt_status tt_add_bwd_f32(const float *g_out, const uint8_t *mask, int32_t size, float ratio1, float ratio2,
                         int32_t accumulate1, float *g_1, int32_t accumulate2, float *g_2);

/**
 * g'[h, w, o] = g_out * mask * eff_scale[o], quantised: G = rint(g' * (32767 / max|g'|)), sigma = max|g'| / 32767
 * (G = 0, sigma = 0 when max|g'| is below TT_GRAD_MIN or not finite).
 */
tt_status tt_grad_quantize_s16(const tt_dims *out_dims, const float *g_out, const uint8_t *mask,
                               const float *eff_scale, int16_t *grad_q, float *sigma);

/**
 * Input gradient of a dense or pointwise conv (transposed conv with the int8 weights):
 * g_in[iy, ix, c] (+)= sigma * sum over o, ky, kx of w[o, ky, kx, c] * G[oy, ox, o].
 * filter [C_out, K, K, C_in] (OHWI; pointwise: [C_out, C_in]).
 */
tt_status tt_conv2d_s8_bwd_input(const tt_conv_params *conv, const tt_dims *filter_dims, const int8_t *filter,
                                 const tt_dims *out_dims, const int16_t *grad_q, float sigma,
                                 const tt_dims *in_dims, int32_t accumulate, float *g_in);

/** Depthwise version: filter [K, K, C]; g_in[iy, ix, c] (+)= sigma * sum over ky, kx of w[ky, kx, c] G[oy, ox, c]. */
tt_status tt_depthwise_conv2d_s8_bwd_input(const tt_conv_params *conv, const tt_dims *filter_dims,
                                           const int8_t *filter, const tt_dims *out_dims, const int16_t *grad_q,
                                           float sigma, const tt_dims *in_dims, int32_t accumulate, float *g_in);

/** QAS SGD step for one weight slice; see tt_sgd_update_s8. */
typedef struct {
    float lr;
    float sigma;           /**< scale of grad_q */
    const float *inv_sw2;  /**< [C_out] 1 / s_w^2, 0 for dead channels */
    tt_prng *rng;          /**< stochastic rounding stream */
} tt_sgd_params;

/**
 * Weight gradient and update of input channel c of a dense/pointwise conv (the slice W[:, c]):
 * dW[o, ky, kx] = sigma * sum over (oy, ox) of (A[iy, ix] + input_offset) * G[oy, ox, o], then a QAS SGD
 * step on the master copy w + r/256 (r: `residual`, one int8 per slice element in (o, ky, kx) order):
 * d = floor(-(dW * inv_sw2[o]) * lr * 256 + u) with u from the PRNG (stochastic rounding),
 * m = 256 w + r + d, w = clamp(round_half_up(m / 256), -127, 127), r = clamp(m - 256 w, -128, 127).
 * A is the saved [H, W] plane of channel c. Elements are visited in (o, ky, kx) order.
 */
tt_status tt_conv2d_s8_bwd_weight_update(const tt_conv_params *conv, const tt_sgd_params *sgd,
                                         const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                         const tt_dims *out_dims, const int16_t *grad_q,
                                         const tt_dims *filter_dims, int8_t *filter, int8_t *residual);

/** Depthwise version: the slice is w[:, :, c] and only G[:, :, c] contributes; (ky, kx) order. */
tt_status tt_depthwise_conv2d_s8_bwd_weight_update(const tt_conv_params *conv, const tt_sgd_params *sgd,
                                                   const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                                   const tt_dims *out_dims, const int16_t *grad_q,
                                                   const tt_dims *filter_dims, int8_t *filter, int8_t *residual);

/**
 * Flash weight home (SPEC 8): the same gradient as tt_conv2d_s8_bwd_weight_update, applied to the contiguous
 * working slice [C_out, K, K] of input channel c in the update arena with stochastic rounding to whole LSBs
 * (no residual): d = floor(-(dW * inv_sw2[o]) * lr + u), w = clamp(w + d, -127, 127); (o, ky, kx) order.
 */
tt_status tt_conv2d_s8_bwd_weight_update_sr(const tt_conv_params *conv, const tt_sgd_params *sgd,
                                            const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                            const tt_dims *out_dims, const int16_t *grad_q,
                                            const tt_dims *filter_dims, int8_t *slice);

/** Depthwise version: the working slice is [K, K] and only G[:, :, c] contributes; (ky, kx) order. */
tt_status tt_depthwise_conv2d_s8_bwd_weight_update_sr(const tt_conv_params *conv, const tt_sgd_params *sgd,
                                                      const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                                      const tt_dims *out_dims, const int16_t *grad_q,
                                                      const tt_dims *filter_dims, int8_t *slice);

/**
 * Gradient accumulation: acc[e] += sigma * (the weight-gradient sum of tt_conv2d_s8_bwd_weight_update) for
 * every element e of input channel c's slice, in (o, ky, kx) order ((ky, kx) if depthwise).
 */
tt_status tt_conv_s8_bwd_weight_accumulate(const tt_conv_params *conv, float sigma, int32_t depthwise,
                                           const tt_dims *in_dims, const int8_t *saved, int32_t c,
                                           const tt_dims *out_dims, const int16_t *grad_q,
                                           const tt_dims *filter_dims, float *acc);

/**
 * Apply accumulated gradients dW = acc[e] * scale to one slice with the QAS SGD step of the update kernels
 * (sgd->sigma unused): with `residual`, on the master copy of the home `weights` (OHWI or KKC, channel c);
 * without (NULL), on the contiguous working slice `weights` with stochastic rounding to whole LSBs.
 */
tt_status tt_sgd_apply_s8(const tt_sgd_params *sgd, const tt_dims *filter_dims, int32_t depthwise, int32_t c,
                          const float *acc, float scale, int8_t *weights, int8_t *residual);

/** Copy input channel c's weights (OHWI, or KKC if depthwise) into a contiguous slice in (o, ky, kx) order. */
tt_status tt_slice_load_s8(const tt_dims *filter_dims, int32_t depthwise, int32_t c, const int8_t *filter,
                           int8_t *slice);

/**
 * The weights a kernel sees: elements [offset, offset + count) of the home `filter` (OHWI, or KKC if depthwise)
 * with the working slices of `patch` (may be NULL) in place of their channels' home weights.
 */
tt_status tt_weights_read_s8(const tt_dims *filter_dims, int32_t depthwise, const int8_t *filter,
                             const tt_weight_patch *patch, int32_t offset, int32_t count, int8_t *out);

/**
 * Fold a slice's residual back into its int8 weights when the selection changes (SPEC 8 write-back):
 * w = clamp(w + floor(r / 256 + u), -127, 127), u from the PRNG, in slice order.
 */
tt_status tt_residual_writeback_s8(const tt_dims *filter_dims, int32_t depthwise, int32_t c, const int8_t *residual,
                                   tt_prng *rng, int8_t *filter);

/** Learning rate at `step`: linear warm-up over warmup_steps, then cosine to 0 at total_steps. */
float tt_lr_cosine(float base, int32_t step, int32_t warmup_steps, int32_t total_steps);

/* ---- sampler ---- */

/** The sampling pool (compile-time constant tables). Entries are sorted by (layer, channel). */
typedef struct {
    const uint16_t *entry_layer;    /**< [size] conv index */
    const uint16_t *entry_channel;  /**< [size] input channel */
    const uint32_t *layer_cost;     /**< [num_layers] C_W + C_A units per channel */
    int32_t size;
    int32_t num_layers;
    uint32_t min_cost;              /**< cheapest entry */
} tt_pool;

/** A selection: pool indices in ascending order, and where each one's input plane lives. */
typedef struct {
    uint16_t *entries;   /**< [capacity] */
    uint32_t *offsets;   /**< [capacity] byte offset of the entry's block (A[c], then the residual) */
    int32_t *layer_begin;  /**< [num_layers + 1] entries of layer l: layer_begin[l] .. layer_begin[l+1]-1 */
    int32_t capacity;
    int32_t count;
    uint32_t units;      /**< C_W + C_A of the selection */
    uint32_t bytes;      /**< update-arena bytes of the selection */
} tt_selection;

/**
 * Draw a selection (SPEC 7): uniform without replacement over the pool (drawn bitset), accept an entry if
 * its cost fits the remaining budget, stop when the pool is exhausted or the remaining budget is below
 * the cheapest entry. `drawn` and `chosen` are bitsets of (size + 7) / 8 bytes.
 */
tt_status tt_sampler_select(const tt_pool *pool, uint32_t budget, tt_prng *rng, uint8_t *drawn, uint8_t *chosen,
                            tt_selection *sel);

/** Set a fixed selection (pool indices, ascending), e.g. the su strategy's. */
tt_status tt_selection_set(const tt_pool *pool, const uint16_t *entries, int32_t count, tt_selection *sel);

/**
 * Lay out the selection in the update arena: each entry of layer l takes block_bytes[l] bytes (its saved
 * input plane, then its weight-slice residual) and fill layer_begin. TT_ERR_RANGE if they exceed arena_bytes.
 */
tt_status tt_selection_layout(const tt_pool *pool, const uint32_t *block_bytes, uint32_t arena_bytes,
                              tt_selection *sel);

#endif /* TT_TRAIN_H */
