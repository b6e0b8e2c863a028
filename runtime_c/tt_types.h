/*
 * trady runtime: shared types.
 *
 * Layouts: activations are [N, H, W, C] int8 (N = 1 on the device); dense conv weights are
 * [C_out, K, K, C_in] (OHWI), depthwise weights [K, K, C] (1HWC), pointwise weights [C_out, C_in].
 * Sign convention (as CMSIS-NN): input_offset = -x_zero, output_offset = +y_zero.
 */
#ifndef TT_TYPES_H
#define TT_TYPES_H

#include <stdint.h>

/** Status of every kernel call. Names in tt_status_name(). */
typedef enum {
    TT_OK = 0,
    TT_ERR_ARG = 1,       /**< a NULL pointer or an inconsistent dimension */
    TT_ERR_RANGE = 2,     /**< a parameter out of its documented range */
    TT_ERR_UNSUPPORTED = 3, /**< not available on this target (e.g. no flash write-back port) */
    TT_STATUS_COUNT = 4
} tt_status;

/** Return from the enclosing function with the status of `call` unless it is TT_OK. */
#define TT_TRY(call)                  \
    do {                              \
        const tt_status st_ = (call); \
        if (st_ != TT_OK) {           \
            return st_;               \
        }                             \
    } while (0)

/** Tensor dimensions, NHWC; for filters n = C_out, h = w = K, c = C_in (1 for depthwise). */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} tt_dims;

/** Scratch memory handed to a kernel (none of the reference kernels needs any). */
typedef struct {
    void *buf;
    int32_t size;
} tt_context;

/**
 * Working copies of some input-channel slices of a conv's weights (SPEC 8, weights with a flash home): the
 * kernels use slice[j] in place of the home weights of input channel channel[j]. A slice is contiguous, in
 * (o, ky, kx) order ([C_out, K, K]) for a dense or pointwise conv and (ky, kx) order ([K, K]) for a
 * depthwise one. Channels ascend strictly.
 */
typedef struct {
    int32_t count;
    const uint16_t *channel;  /**< [count] input channel */
    int8_t *base;             /**< working slice j starts at base + offset[j] + skip */
    const uint32_t *offset;   /**< [count] */
    uint32_t skip;
} tt_weight_patch;

/** Working slice j of a weight patch. */
static inline int8_t *tt_patch_slice(const tt_weight_patch *patch, int32_t j)
{
    return patch->base + patch->offset[j] + patch->skip;
}

/** Convolution geometry and offsets; padding is the same on all four sides. */
typedef struct {
    int32_t input_offset;   /**< -x_zero, in [-127, 128] */
    int32_t output_offset;  /**< +y_zero, in [-128, 127] */
    int32_t stride;         /**< >= 1 */
    int32_t padding;        /**< (K - 1) / 2 */
    const tt_weight_patch *patch;  /**< NULL, or working slices that replace some of the filter's weights */
} tt_conv_params;

/** Per-output-channel requantisation: real = multiplier * 2^(shift - 31). */
typedef struct {
    const int32_t *multiplier;  /**< [C_out], in [2^30, 2^31) or 0 */
    const int32_t *shift;       /**< [C_out], in [-31, 30]; positive shifts left */
} tt_per_channel_quant;

/** TFLite int8 ADD parameters (left_shift = 20; all shifts <= 0). */
typedef struct {
    int32_t input1_offset;
    int32_t input1_multiplier;
    int32_t input1_shift;
    int32_t input2_offset;
    int32_t input2_multiplier;
    int32_t input2_shift;
    int32_t output_offset;
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t left_shift;
} tt_add_params;

/** Name of a status code, for messages. */
const char *tt_status_name(tt_status status);

#endif /* TT_TYPES_H */
