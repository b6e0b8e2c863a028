/*
 * trady runtime: float32 exp and cos with a fixed operation sequence, so that the host, the
 * Cortex-M build and compiler/training.py (expf, cosf) agree bit for bit whatever libm is
 * linked. Build with -ffp-contract=off (no fused multiply-add).
 */
#ifndef TT_FMATH_H
#define TT_FMATH_H

#include <stdint.h>
#include <string.h>

/** exp(x) for x <= 0 (softmax after subtracting the max); x < -87 is treated as -87. */
static inline float tt_expf(float x)
{
    if (x < -87.0f) {
        x = -87.0f;
    }
    /* n = round(x / ln 2) (floor of x*log2(e) + 1/2); r = x - n ln 2 in two parts (Cody-Waite). */
    const float n = floorf(x * 1.44269504f + 0.5f);
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-06f;
    /* Taylor polynomial of degree 6 on |r| <= 0.35, Horner form (relative error < 2e-7). */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^n built from its bits: n is in [-126, 0] here, a normal float. */
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/** cos(x) for x in [0, pi]: -sin(x - pi/2) with an odd Taylor polynomial of degree 11. */
static inline float tt_cosf(float x)
{
    const float y = x - 1.57079637f;
    const float y2 = y * y;
    float p = -1.0f / 39916800.0f;
    p = p * y2 + 1.0f / 362880.0f;
    p = p * y2 + -1.0f / 5040.0f;
    p = p * y2 + 1.0f / 120.0f;
    p = p * y2 + -1.0f / 6.0f;
    p = p * y2 + 1.0f;
    return -(y * p);
}

#endif /* TT_FMATH_H */
