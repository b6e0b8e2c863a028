/*
 * trady runtime: helpers shared by the Cortex-M DSP kernels of runtime_c/arm/ (internal).
 *
 * tt_requantize_floor() equals tt_requantize() (tt_requant.h) for every input, with a cheaper
 * SaturatingRoundingDoublingHighMul: gemmlowp's (a*b + nudge) / 2^31 truncated toward zero, nudge
 * 2^30 for a*b >= 0 and 1 - 2^30 below, is floor((a*b + 2^30) / 2^31) in both cases (for a*b < 0 the
 * truncation of a negative quotient is the floor of the numerator plus 2^31 - 1), which is one
 * SMLAL and a shift (CMSIS-NN's arm_nn_doubling_high_mult_no_sat). Plain C: the host test suite
 * checks the equality on edge cases and random values (tests/test_firmware.py).
 *
 * One exact fast requantisation serves the DSP kernels' common channels (multiplier >= 2^30, shift <= -2):
 * tt_rq_prepare once per output channel, then tt_rq_twice (bias added: pointwise, first_conv) or
 * tt_rq_twice_biased (the depthwise kernel, whose accumulators start from the bias), and tt_ssat8_half;
 * every other channel takes tt_requantize_floor.
 */
#ifndef TT_ARM_MATH_H
#define TT_ARM_MATH_H

#include <stdint.h>
#include <string.h>

#include "tt_requant.h"

/** floor((a * b + 2^30) / 2^31); INT32_MAX for the one overflowing case, as tt_srdhm. */
static inline int32_t tt_srdhm_floor(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    /* Right shift of a negative int64 is arithmetic (floor) on gcc and arm-none-eabi-gcc. */
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

/** tt_requantize with tt_srdhm_floor and tt_rdbpot: the same result for every (x, multiplier, shift). */
static inline int32_t tt_requantize_floor(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return tt_rdbpot(tt_srdhm_floor((int32_t)((uint32_t)x << left), multiplier), right);
}

/*
 * tt_requantize_floor of two accumulators of the same output channel (multiplier, shift), each plus `offset`:
 * the shifts are split once, and the one overflowing case of tt_srdhm_floor (both factors INT32_MIN) is ruled
 * out once: with multiplier != INT32_MIN, |a * b| <= 2^31 (2^31 - 1) and the floor fits int32.
 */
static inline void tt_requantize_floor2(int32_t *x, int32_t *y, int32_t multiplier, int32_t shift, int32_t offset)
{
    if (multiplier == INT32_MIN) {
        *x = tt_requantize_floor(*x, multiplier, shift) + offset;
        *y = tt_requantize_floor(*y, multiplier, shift) + offset;
        return;
    }
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int64_t half = (int64_t)1 << 30;
    const int32_t hx = (int32_t)(((int64_t)(int32_t)((uint32_t)*x << left) * multiplier + half) >> 31);
    const int32_t hy = (int32_t)(((int64_t)(int32_t)((uint32_t)*y << left) * multiplier + half) >> 31);
    *x = tt_rdbpot(hx, right) + offset;
    *y = tt_rdbpot(hy, right) + offset;
}

/** SMMLAR: (acc * 2^32 + a * b + 2^31) / 2^32 rounded down, the 64-bit sum taken mod 2^64 (one instruction). */
static inline int32_t tt_smmlar(int32_t a, int32_t b, int32_t acc)
{
#if defined(__arm__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
#else
    const uint64_t v = ((uint64_t)(uint32_t)acc << 32) + (uint64_t)((int64_t)a * b) + 0x80000000u;
    return (int32_t)(uint32_t)(v >> 32);
#endif
}

/*
 * The per-channel form of tt_requantize_floor for the common channels (multiplier in [2^30, 2^31), shift <= -2:
 * every quantised scale below 1/4), five instructions per value with the clamp:
 *   h = floor((x * m + 2^30) / 2^31) = floor((2 m x + 2^31) / 2^32) = SMMLAR(x, m2, x) with m2 = 2m - 2^32 (int32),
 *       since 2 m x = x * m2 + x * 2^32 (|2 m x| < 2^63, so the 64-bit sum is exact);
 *   RoundingDivideByPOT(h, r) = floor((floor((h - [h < 0]) / 2^(r-1)) + 1) / 2) (half away from zero: a negative
 *       tie is one below the threshold), and h - [h < 0] = h + (h >> 31) cannot wrap (h > INT32_MIN here);
 *   + output_offset: (w + 1 + 2 * output_offset) / 2 rounded down, |w| <= 2^30 for r >= 2, so no wrap; the halving
 *       and the int8 clamp are one SSAT with ASR #1 on the core.
 * tt_rq_prepare gives right = r - 1 >= 1 for such a channel and 0 for any other (the caller takes
 * tt_requantize_floor there). tests/c/requant_floor.c checks tt_rq_twice and tt_rq_twice_biased against
 * tt_requantize.
 */
typedef struct {
    int32_t bias, m2, right; /* right = -shift - 1, or 0: not the fast form */
} tt_rq;

static inline tt_rq tt_rq_prepare(int32_t bias, int32_t multiplier, int32_t shift)
{
    const int fast = multiplier >= (1 << 30) && shift <= -2;
    const tt_rq r = {.bias = bias, .m2 = (int32_t)((uint32_t)multiplier << 1), .right = fast ? -shift - 1 : 0};
    return r;
}

/** floor((RoundingDivideByPOT(h, r) * 2 + 1 + 2 * output_offset) / 2) before the clamp: x = acc + bias of a fast
 * channel (right >= 1; c.bias is not used) and k = 1 + 2 * output_offset; tt_ssat8_half of it is the int8 output.
 * SMMLAR, two adds (one with ASR #31) and a shift. */
static inline int32_t tt_rq_twice_biased(int32_t x, tt_rq c, int32_t k)
{
    const int32_t h = tt_smmlar(x, c.m2, x);
    return ((h + (h >> 31)) >> c.right) + k;
}

/** tt_rq_twice_biased of acc + c.bias (wrapping). */
static inline int32_t tt_rq_twice(int32_t acc, tt_rq c, int32_t k)
{
    return tt_rq_twice_biased(tt_add_wrap(acc, c.bias), c, k);
}

#if defined(__ARM_FEATURE_SAT) && __ARM_FEATURE_SAT
#include <arm_acle.h>

/** Clamp to int8 with one SSAT (tt_clamp_s8's result). */
static inline int8_t tt_ssat8(int32_t v)
{
    return (int8_t)__ssat(v, 8);
}

/** Clamp v / 2 (rounded down) to int8: one SSAT with ASR #1. */
static inline int8_t tt_ssat8_half(int32_t v)
{
    int32_t r;
    __asm__("ssat %0, #8, %1, asr #1" : "=r"(r) : "r"(v));
    return (int8_t)r;
}
#else /* the host build of the tests */
static inline int8_t tt_ssat8(int32_t v)
{
    return tt_clamp_s8(v);
}

static inline int8_t tt_ssat8_half(int32_t v)
{
    return tt_clamp_s8(v >> 1);
}
#endif

/** Rotate right by 8 (GCC 12's arm_acle.h has no __ror). */
static inline int32_t tt_ror8(int32_t x)
{
    return (int32_t)(((uint32_t)x >> 8) | ((uint32_t)x << 24));
}

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>

/** SXTB16 of x rotated right by 8 (bytes 1 and 3 sign-extended into the two halves): one instruction on the
 * core, where GCC would emit a separate rotate for __sxtb16(tt_ror8(x)). */
static inline int32_t tt_sxtb16_ror8(int32_t x)
{
#if defined(__arm__)
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
#else /* a host build of the DSP kernels (tests/c/acle_host) */
    return (int32_t)__sxtb16(tt_ror8(x));
#endif
}
#endif

/** Four int8 from any address (Cortex-M4/M7 load words unaligned; memcpy compiles to one LDR). */
static inline int32_t tt_load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Quantisation values are read into locals by the DSP kernels: int8 stores may alias anything, so the
 * compiler would otherwise reload them through the structs for every output. */
typedef struct {
    const int32_t *bias, *multiplier, *shift;
    int32_t output_offset;
} tt_out_quant;

/** Output channel o's int8 value from its accumulator: bias (wrapping), requantisation, offset, clamp. */
static inline int8_t tt_finish_s8(int32_t acc, int32_t o, tt_out_quant q)
{
    acc = tt_add_wrap(acc, q.bias[o]);
    return tt_ssat8(tt_requantize_floor(acc, q.multiplier[o], q.shift[o]) + q.output_offset);
}

/** Output channel o of two pixels from their accumulators, into *pa and *pb (tt_finish_s8 twice, one set-up). */
static inline void tt_finish2_s8(int32_t a, int32_t b, int32_t o, tt_out_quant q, int8_t *pa, int8_t *pb)
{
    const int32_t bias = q.bias[o];
    a = tt_add_wrap(a, bias);
    b = tt_add_wrap(b, bias);
    tt_requantize_floor2(&a, &b, q.multiplier[o], q.shift[o], q.output_offset);
    *pa = tt_ssat8(a);
    *pb = tt_ssat8(b);
}

/* tt_pointwise_conv2d_s8's widening: SXTAB16, a + the sign-extended bytes 0 and 2 of x (after a rotate by 8:
 * bytes 1 and 3), lane by lane mod 2^16: __sadd16(a, __sxtb16(x)) in one instruction. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
static inline int32_t tt_sxtab16(int32_t a, int32_t x)
{
#if defined(__arm__)
    int32_t r;
    __asm__("sxtab16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(x));
    return r;
#else /* a host build of the DSP kernels (tests/c/acle_host) */
    return (int32_t)__sadd16(a, __sxtb16(x));
#endif
}

static inline int32_t tt_sxtab16_ror8(int32_t a, int32_t x)
{
#if defined(__arm__)
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
#else
    return (int32_t)__sadd16(a, tt_sxtb16_ror8(x));
#endif
}
#endif

#endif /* TT_ARM_MATH_H */
