/*
 * trady runtime: reference inference kernels (plain C99, bit-exact with compiler/reference.py).
 *
 * Argument order (CMSIS-NN's): ctx, op params, quant params, dims + data per input, out dims, out.
 * Every kernel validates its arguments and returns TT_ERR_ARG / TT_ERR_RANGE instead of running.
 */
#ifndef TT_KERNELS_H
#define TT_KERNELS_H

#include <stdint.h>

#include "tt_types.h"

/**
 * Dense convolution, int8 in / int8 out, per-output-channel requantisation.
 * @param in      [1, H, W, C_in]
 * @param filter  [C_out, K, K, C_in] (OHWI), symmetric (zero point 0)
 * @param bias    [C_out] int32
 * @param out     [1, H_out, W_out, C_out], H_out = (H + 2*padding - K) / stride + 1
 * acc = bias + sum over non-padded taps of w * (x + input_offset), int32 (bias add wraps);
 * out = clamp(requantize(acc) + output_offset, -128, 127).
 */
tt_status tt_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv, const tt_per_channel_quant *quant,
                       const tt_dims *in_dims, const int8_t *in, const tt_dims *filter_dims, const int8_t *filter,
                       const int32_t *bias, const tt_dims *out_dims, int8_t *out);

/** Scratch bytes tt_conv2d_s8 needs (0 for the reference kernel). */
int32_t tt_conv2d_s8_get_buffer_size(const tt_dims *in_dims, const tt_dims *filter_dims);

/**
 * Pointwise (1x1) convolution; any stride, no padding.
 * @param filter [C_out, C_in]; other arguments as tt_conv2d_s8 (filter_dims h = w = 1).
 */
tt_status tt_pointwise_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv,
                                 const tt_per_channel_quant *quant, const tt_dims *in_dims, const int8_t *in,
                                 const tt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                                 const tt_dims *out_dims, int8_t *out);

/**
 * Depthwise convolution, channel multiplier 1.
 * @param filter [K, K, C] (filter_dims n = 1, h = w = K, c = C); other arguments as tt_conv2d_s8.
 */
tt_status tt_depthwise_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv,
                                 const tt_per_channel_quant *quant, const tt_dims *in_dims, const int8_t *in,
                                 const tt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                                 const tt_dims *out_dims, int8_t *out);

/**
 * TFLite int8 ADD of two tensors of `size` elements; out may alias in1 or in2 (in-place).
 */
tt_status tt_add_s8(const tt_add_params *params, const int8_t *in1, const int8_t *in2, int32_t size, int8_t *out);

/**
 * Global average pool [1, H, W, C] -> [1, 1, 1, C]; rounding half away from zero, same quantisation.
 */
tt_status tt_avgpool_global_s8(const tt_dims *in_dims, const int8_t *in, int8_t *out);

/** out[i] = (float)(in[i] - zero) * scale, fp32. */
tt_status tt_dequantize_s8_f32(const int8_t *in, int32_t size, int32_t zero, float scale, float *out);

/**
 * Fully connected fp32: out[k] = bias[k] + sum_i weight[k * features + i] * in[i], summed in order
 * i = 0, 1, ... (one rounding per multiply and per add; build with -ffp-contract=off).
 */
tt_status tt_fully_connected_f32(const float *in, const float *weight, const float *bias, int32_t features,
                                 int32_t classes, float *out);

#endif /* TT_KERNELS_H */
