/*
 * trady runtime: residual add for Cortex-M (see tt_kernels.h). The firmware build (`trady firmware --kernels dsp`)
 * uses this file instead of the reference kernel of the same name; the results are bit-identical.
 *
 * Each input's scaled value, tt_requantize((x + offset) * 2^left_shift, multiplier, shift), depends on its int8 value
 * alone, so it is worked out once per call for all 256 values into a table (two tables of 256 int32, 2 KB of stack;
 * tt_requantize_floor, equal to tt_requantize, with the shifts split once where the multiplier is not INT32_MIN).
 * Per element that leaves two byte loads, two table loads and the sum's requantisation: the prepared form of
 * tt_arm_math.h (tt_rq_prepare / tt_rq_twice_biased / tt_ssat8_half: SMMLAR, two adds, a shift and an SSAT) when the
 * output multiplier is at least 2^30 and its shift at most -2 (every output scale below 1/4, as the models' adds),
 * tt_requantize_floor per element otherwise.
 */
#include <stddef.h>

#include "tt_arm_math.h"
#include "tt_kernels.h"
#include "tt_requant.h"

#if !defined(__ARM_FEATURE_DSP) || !__ARM_FEATURE_DSP
#error "runtime_c/arm/ needs the DSP extension (Cortex-M4/M7); build the reference kernels instead"
#endif

/* table[(uint8_t)x] = tt_requantize((x + offset) * 2^ls, multiplier, shift) for every int8 x (shift <= 0). */
static void scale_table(int32_t offset, int32_t ls, int32_t multiplier, int32_t shift, int32_t *table)
{
    if (multiplier == INT32_MIN) {
        for (int32_t x = -128; x < 128; x++) {
            table[(uint8_t)x] = tt_requantize_floor((x + offset) * (1 << ls), multiplier, shift);
        }
        return;
    }
    /* tt_requantize_floor with the shift split once: floor((v * m + 2^30) / 2^31) fits int32 for m != INT32_MIN
     * (see tt_requantize_floor2), then tt_rdbpot with its mask and threshold worked out once. */
    const int32_t e = -shift;
    const int32_t mask = (int32_t)((1u << e) - 1u), half = mask >> 1;
    for (int32_t x = -128; x < 128; x++) {
        /* |x + offset| <= 255, so the shifted value is below 255 * 2^20 < 2^28 (as in the reference). */
        const int32_t v = (x + offset) * (1 << ls);
        const int32_t h = (int32_t)(((int64_t)v * multiplier + ((int64_t)1 << 30)) >> 31);
        table[(uint8_t)x] = (h >> e) + ((h & mask) > half - (h >> 31) ? 1 : 0);
    }
}

/* Output offsets from int8 zero points; a larger one (the reference's sum does not overflow up to 2^30) takes
 * tt_requantize_floor, since the prepared form adds 1 + 2 * output_offset to a value up to 2^30. */
#define TT_ADD_OFFSET_MAX (1 << 16)

tt_status tt_add_s8(const tt_add_params *params, const int8_t *in1, const int8_t *in2, int32_t size, int8_t *out)
{
    const tt_status st = tt_check_add_args(params, in1, in2, size, out);
    if (st != TT_OK) {
        return st;
    }
    int32_t t1[256], t2[256];
    scale_table(params->input1_offset, params->left_shift, params->input1_multiplier, params->input1_shift, t1);
    scale_table(params->input2_offset, params->left_shift, params->input2_multiplier, params->input2_shift, t2);
    /* Each scaled input is at most its shifted value in size (|multiplier| <= 2^31, shift <= 0), below 2^28: the
     * sum of two fits (as in the reference). */
    const int32_t off_out = params->output_offset;
    const tt_rq c = tt_rq_prepare(0, params->output_multiplier, params->output_shift);
    if (c.right == 0 || off_out > TT_ADD_OFFSET_MAX || off_out < -TT_ADD_OFFSET_MAX) {
        for (int32_t i = 0; i < size; i++) {
            const int32_t sum = t1[(uint8_t)in1[i]] + t2[(uint8_t)in2[i]];
            out[i] = tt_ssat8(tt_requantize_floor(sum, params->output_multiplier, params->output_shift) + off_out);
        }
        return TT_OK;
    }
    const int32_t k = 1 + 2 * off_out;
    const uint8_t *u1 = (const uint8_t *)in1, *u2 = (const uint8_t *)in2; /* the table index: the int8's bits */
    int32_t i = 0;
    /* Four elements per step for less loop overhead; each element is read before its output is written (in place). */
    for (; i + 4 <= size; i += 4) {
        const int32_t s0 = t1[u1[i]] + t2[u2[i]], s1 = t1[u1[i + 1]] + t2[u2[i + 1]];
        out[i] = tt_ssat8_half(tt_rq_twice_biased(s0, c, k));
        out[i + 1] = tt_ssat8_half(tt_rq_twice_biased(s1, c, k));
        const int32_t s2 = t1[u1[i + 2]] + t2[u2[i + 2]], s3 = t1[u1[i + 3]] + t2[u2[i + 3]];
        out[i + 2] = tt_ssat8_half(tt_rq_twice_biased(s2, c, k));
        out[i + 3] = tt_ssat8_half(tt_rq_twice_biased(s3, c, k));
    }
    for (; i < size; i++) {
        out[i] = tt_ssat8_half(tt_rq_twice_biased(t1[u1[i]] + t2[u2[i]], c, k));
    }
    return TT_OK;
}
