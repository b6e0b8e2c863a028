/*
 * trady runtime: float32 exp and cos with a fixed operation sequence, so that the host, the
 * Cortex-M build and compiler/training.py (expf, cosf) agree bit for bit whatever libm is
 * linked; and log for the reported loss, so that the host and every Cortex-M build print the same
 * loss (newlib's logf for single-precision FPUs, e.g. Cortex-M4, differs from glibc's in the last
 * bit). Build with -ffp-contract=off (no fused multiply-add).
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

/**
 * log(x) for a positive normal float x (the softmax's sum of exponentials, >= 1): x = m 2^e with
 * m in (sqrt(1/2), sqrt(2)], log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, odd series to
 * s^9 (truncation < 3e-9 relative); e ln 2 in two parts (Cody-Waite). Relative error < 3e-7.
 */
static inline float tt_logf(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    int32_t e = (int32_t)(bits >> 23) - 127;
    bits = (bits & 0x007FFFFFu) | 0x3F800000u; /* the mantissa as a float in [1, 2) */
    float m;
    memcpy(&m, &bits, sizeof m);
    if (m > 1.41421354f) {
        m = m * 0.5f;
        e = e + 1;
    }
    const float s = (m - 1.0f) / (m + 1.0f);
    const float s2 = s * s;
    float p = 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    const float fe = (float)e;
    return fe * 0.693145752f + (fe * 1.42860677e-06f + 2.0f * s * p);
}

#endif /* TT_FMATH_H */
