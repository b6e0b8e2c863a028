/*
 * trady runtime: the on-device PRNG, bit-identical to compiler/prng.py (SPEC 7).
 * xorshift32 (13, 17, 5); streams seeded through murmur3 fmix32; unbiased bounded integers by
 * rejecting the low 2^32 mod n values; uniform floats from the top 24 bits (exact in [0, 1)).
 */
#ifndef TT_PRNG_H
#define TT_PRNG_H

#include <stdint.h>

enum { TT_STREAM_SAMPLER = 1, TT_STREAM_ROUNDING = 2, TT_STREAM_SHUFFLE = 3 };

typedef struct {
    uint32_t state; /**< never 0 */
} tt_prng;

static inline uint32_t tt_fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

static inline void tt_prng_seed(tt_prng *rng, uint32_t seed, uint32_t stream)
{
    const uint32_t s = tt_fmix32(seed ^ tt_fmix32(stream * 0x9E3779B9u));
    rng->state = s != 0 ? s : 0x6D2B79F5u;
}

static inline uint32_t tt_prng_next(tt_prng *rng)
{
    uint32_t x = rng->state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rng->state = x;
    return x;
}

/** Uniform integer in [0, n), n >= 1, without modulo bias. */
static inline uint32_t tt_prng_bounded(tt_prng *rng, uint32_t n)
{
    const uint32_t threshold = (0u - n) % n; /* = 2^32 mod n */
    for (;;) {
        const uint32_t r = tt_prng_next(rng);
        if (r >= threshold) {
            return r % n;
        }
    }
}

/** Uniform float in [0, 1): 24 random bits times 2^-24 (exact). */
static inline float tt_prng_uniform(tt_prng *rng)
{
    return (float)(tt_prng_next(rng) >> 8) * (1.0f / 16777216.0f);
}

#endif /* TT_PRNG_H */
