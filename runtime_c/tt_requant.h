/*
 * trady runtime: fixed-point requantisation, TFLite's double-rounding arithmetic (SPEC 4).
 *
 * tt_requantize(x, m, s) = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^max(s,0), m),
 * max(-s,0)), identical to TFLite's MultiplyByQuantizedMultiplier and CMSIS-NN's default
 * arm_nn_requantize; the single-rounding variant is never used.
 */
#ifndef TT_REQUANT_H
#define TT_REQUANT_H

#include <stddef.h>
#include <stdint.h>

#include "tt_types.h"

/**
 * (a * b + nudge) / 2^31, truncated (gemmlowp): positive ties round up, negative exact ties toward zero;
 * saturates the one overflowing case.
 */
static inline int32_t tt_srdhm(int32_t a, int32_t b)
{
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    /* |a * b| <= 2^62, and the nudge keeps it below 2^63: no int64 overflow. */
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    /* C division truncates toward zero, as gemmlowp's does. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/** x / 2^exponent, rounded half away from zero; exponent in [0, 31]. */
static inline int32_t tt_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u); /* exponent <= 31: the mask fits 32 bits */
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* Right shift of a negative int32 is arithmetic on every compiler we target (gcc, arm-none-eabi-gcc). */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/** MultiplyByQuantizedMultiplier; the left shift wraps in 32 bits exactly as TFLite's int32 multiply. */
static inline int32_t tt_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return tt_rdbpot(tt_srdhm(shifted, multiplier), right);
}

/** Two's complement int32 addition (the accumulator + bias step of TFLite/CMSIS-NN). */
static inline int32_t tt_add_wrap(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int8_t tt_clamp_s8(int32_t v)
{
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

/** tt_add_s8's arguments (both builds): set, and shifts this requantisation takes (inputs and output scaled down). */
static inline tt_status tt_check_add_args(const tt_add_params *params, const int8_t *in1, const int8_t *in2,
                                          int32_t size, const int8_t *out)
{
    if (params == NULL || in1 == NULL || in2 == NULL || out == NULL || size < 0) {
        return TT_ERR_ARG;
    }
    if (params->left_shift < 0 || params->left_shift > 20 || params->input1_shift > 0 ||
        params->input2_shift > 0 || params->output_shift > 0) {
        return TT_ERR_RANGE;
    }
    return TT_OK;
}

#endif /* TT_REQUANT_H */
