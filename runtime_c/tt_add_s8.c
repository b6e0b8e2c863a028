/*
 * trady runtime: residual add (TFLite int8 ADD arithmetic, SPEC 4), reference C99. The firmware build
 * (`trady firmware --kernels dsp`) uses arm/tt_add_s8.c instead, which gives the same results bit for bit.
 */
#include <stddef.h>

#include "tt_kernels.h"
#include "tt_requant.h"

tt_status tt_add_s8(const tt_add_params *params, const int8_t *in1, const int8_t *in2, int32_t size, int8_t *out)
{
    const tt_status st = tt_check_add_args(params, in1, in2, size, out);
    if (st != TT_OK) {
        return st;
    }
    for (int32_t i = 0; i < size; i++) {
        /* |x + offset| <= 255, so the shifted value is below 255 * 2^20 < 2^28: no overflow. */
        const int32_t a = ((int32_t)in1[i] + params->input1_offset) * (1 << params->left_shift);
        const int32_t b = ((int32_t)in2[i] + params->input2_offset) * (1 << params->left_shift);
        /* Each scaled input is at most half of its shifted value (multiplier < 1): the sum fits. */
        const int32_t sum = tt_requantize(a, params->input1_multiplier, params->input1_shift) +
                            tt_requantize(b, params->input2_multiplier, params->input2_shift);
        out[i] = tt_clamp_s8(tt_requantize(sum, params->output_multiplier, params->output_shift) +
                             params->output_offset);
    }
    return TT_OK;
}
