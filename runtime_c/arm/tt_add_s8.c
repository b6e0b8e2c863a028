/*
 * trady runtime: residual add for Cortex-M (see tt_kernels.h). The firmware build (`trady firmware --kernels dsp`)
 * uses this file instead of the reference kernel of the same name; the results are bit-identical.
 *
 * The quantisation parameters are one per tensor, so everything about the shifts is worked out once: each
 * requantisation is then tt_requantize_floor (tt_arm_math.h, equal to tt_requantize) with its rounding mask and
 * threshold in registers: one SMLAL and a shift for the high multiply (no multiplier is INT32_MIN here; a tensor
 * whose multiplier is takes the per-element tt_requantize_floor), and-compare-add for the rounding division.
 */
#include <stddef.h>

#include "tt_arm_math.h"
#include "tt_kernels.h"
#include "tt_requant.h"

#if !defined(__ARM_FEATURE_DSP) || !__ARM_FEATURE_DSP
#error "runtime_c/arm/ needs the DSP extension (Cortex-M4/M7); build the reference kernels instead"
#endif

/* x * m requantised by 2^-e (e in [0, 31]): mask = 2^e - 1, half = mask >> 1; m != INT32_MIN. */
typedef struct {
    int32_t m, e, mask, half;
} scale;

static inline scale scale_of(int32_t multiplier, int32_t shift)
{
    const int32_t e = -shift;
    const int32_t mask = (int32_t)((1u << e) - 1u);
    const scale s = {.m = multiplier, .e = e, .mask = mask, .half = mask >> 1};
    return s;
}

/* tt_requantize(x, m, -e) for m != INT32_MIN: floor((x * m + 2^30) / 2^31) fits int32 (see tt_requantize_floor2),
 * then tt_rdbpot with the threshold (mask >> 1) + (h < 0) written as half - (h >> 31). */
static inline int32_t apply(int32_t x, scale s)
{
    const int32_t h = (int32_t)(((int64_t)x * s.m + ((int64_t)1 << 30)) >> 31);
    return (h >> s.e) + ((h & s.mask) > s.half - (h >> 31) ? 1 : 0);
}

tt_status tt_add_s8(const tt_add_params *params, const int8_t *in1, const int8_t *in2, int32_t size, int8_t *out)
{
    const tt_status st = tt_check_add_args(params, in1, in2, size, out);
    if (st != TT_OK) {
        return st;
    }
    const int32_t ls = params->left_shift, off1 = params->input1_offset, off2 = params->input2_offset;
    const int32_t off_out = params->output_offset;
    if (params->input1_multiplier == INT32_MIN || params->input2_multiplier == INT32_MIN ||
        params->output_multiplier == INT32_MIN) {
        for (int32_t i = 0; i < size; i++) {
            const int32_t a = ((int32_t)in1[i] + off1) * (1 << ls), b = ((int32_t)in2[i] + off2) * (1 << ls);
            const int32_t sum = tt_requantize_floor(a, params->input1_multiplier, params->input1_shift) +
                                tt_requantize_floor(b, params->input2_multiplier, params->input2_shift);
            out[i] = tt_ssat8(tt_requantize_floor(sum, params->output_multiplier, params->output_shift) + off_out);
        }
        return TT_OK;
    }
    const scale s1 = scale_of(params->input1_multiplier, params->input1_shift);
    const scale s2 = scale_of(params->input2_multiplier, params->input2_shift);
    const scale so = scale_of(params->output_multiplier, params->output_shift);
    for (int32_t i = 0; i < size; i++) {
        /* |x + offset| <= 255, so the shifted value is below 255 * 2^20 < 2^28; each scaled input is at most half
         * of it (multiplier < 1), so the sum fits (as in the reference). */
        const int32_t a = ((int32_t)in1[i] + off1) * (1 << ls), b = ((int32_t)in2[i] + off2) * (1 << ls);
        out[i] = tt_ssat8(apply(apply(a, s1) + apply(b, s2), so) + off_out);
    }
    return TT_OK;
}
