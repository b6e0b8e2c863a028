/*
 * Host stand-in for the ACLE DSP intrinsics the Cortex-M kernels of runtime_c/arm/ use, so that the host test
 * drivers can run those kernels (built with -D__ARM_FEATURE_DSP=1 and this directory first on the include path).
 * Each function follows the instruction's definition in the Armv7-M Architecture Reference Manual: 16-bit lanes
 * are signed halves of a 32-bit word, the 32-bit additions wrap (the hardware only sets the Q flag).
 */
#ifndef TT_HOST_ARM_ACLE_H
#define TT_HOST_ARM_ACLE_H

#include <stdint.h>

static inline int32_t tt_lo16(uint32_t x) { return (int16_t)(uint16_t)(x & 0xffffu); }
static inline int32_t tt_hi16(uint32_t x) { return (int16_t)(uint16_t)(x >> 16); }
static inline int32_t tt_wrap32(int64_t v) { return (int32_t)(uint32_t)(uint64_t)v; }

/* SXTB16: bytes 0 and 2 sign-extended into the two halves. */
static inline uint32_t __sxtb16(uint32_t x)
{
    return (uint32_t)(uint16_t)(int16_t)(int8_t)(x & 0xffu) |
           ((uint32_t)(uint16_t)(int16_t)(int8_t)((x >> 16) & 0xffu) << 16);
}

/* SADD16: halfwise addition, each half wrapping. */
static inline uint32_t __sadd16(uint32_t a, uint32_t b)
{
    return (uint32_t)(uint16_t)(tt_lo16(a) + tt_lo16(b)) | ((uint32_t)(uint16_t)(tt_hi16(a) + tt_hi16(b)) << 16);
}

/* SMLAD: acc + lo * lo + hi * hi. */
static inline int32_t __smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return tt_wrap32((int64_t)acc + (int64_t)tt_lo16(a) * tt_lo16(b) + (int64_t)tt_hi16(a) * tt_hi16(b));
}

static inline int32_t __smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return tt_wrap32((int64_t)acc + (int64_t)tt_lo16(a) * tt_lo16(b));
}

static inline int32_t __smlabt(uint32_t a, uint32_t b, int32_t acc)
{
    return tt_wrap32((int64_t)acc + (int64_t)tt_lo16(a) * tt_hi16(b));
}

static inline int32_t __smlatb(uint32_t a, uint32_t b, int32_t acc)
{
    return tt_wrap32((int64_t)acc + (int64_t)tt_hi16(a) * tt_lo16(b));
}

static inline int32_t __smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return tt_wrap32((int64_t)acc + (int64_t)tt_hi16(a) * tt_hi16(b));
}

#endif /* TT_HOST_ARM_ACLE_H */
