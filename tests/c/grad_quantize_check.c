/*
 * tt_grad_quantize_s16 (runtime_c/tt_train.c) against the element-wise form it replaced (grad_quantize_ref
 * below, the form compiler/training.py mirrors): every int16 value and the sigma bit pattern must match on random
 * gradients, masks and scales of many shapes (C_out across the channel-chunk boundaries) and on edge inputs:
 * +-inf, NaN, -0, denormals, huge values, all-zero masks, amax below TT_GRAD_MIN, non-finite or zero scales.
 * Prints the first mismatch and exits 1; prints the case count and exits 0 when all match.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tt_train.h"

#define MAX_SIZE (4 * 1280 + 64)

static float ref_mask_at(const uint8_t *mask, int32_t i)
{
    return (float)((mask[i >> 3] >> (i & 7)) & 1);
}

static void grad_quantize_ref(const tt_dims *out_dims, const float *g_out, const uint8_t *mask,
                              const float *eff_scale, int16_t *grad_q, float *sigma)
{
    const int32_t c_out = out_dims->c, pixels = out_dims->h * out_dims->w;
    const int32_t size = pixels * c_out;
    float amax = 0.0f;
    for (int32_t p = 0, i = 0; p < pixels; p++) {
        for (int32_t o = 0; o < c_out; o++, i++) {
            const float v = fabsf((g_out[i] * ref_mask_at(mask, i)) * eff_scale[o]);
            amax = v > amax ? v : amax;
        }
    }
    if (!(amax >= TT_GRAD_MIN && amax <= FLT_MAX)) {
        for (int32_t i = 0; i < size; i++) {
            grad_q[i] = 0;
        }
        *sigma = 0.0f;
        return;
    }
    const float inv = (float)TT_GRAD_LEVELS / amax;
    for (int32_t p = 0, i = 0; p < pixels; p++) {
        for (int32_t o = 0; o < c_out; o++, i++) {
            float q = rintf(((g_out[i] * ref_mask_at(mask, i)) * eff_scale[o]) * inv);
            q = q > (float)TT_GRAD_LEVELS ? (float)TT_GRAD_LEVELS
                                          : (q < -(float)TT_GRAD_LEVELS ? -(float)TT_GRAD_LEVELS : q);
            grad_q[i] = (int16_t)q;
        }
    }
    *sigma = amax / (float)TT_GRAD_LEVELS;
}

static uint32_t rng_state = 12345u;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* A value of the given kind: 0 normal-range random, 1 mostly specials, 2 tiny (denormal / near TT_GRAD_MIN). */
static float pick(int kind)
{
    static const float specials[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -0.5f, 1.5f, -2.5f, FLT_MAX, -FLT_MAX,
                                     FLT_MIN, -FLT_MIN, 1e-45f, -1e-45f, 1e-30f, 3e38f, 1e20f};
    const uint32_t r = rnd();
    if (kind == 1 && (r & 3u) == 0) {
        switch ((r >> 2) % 4u) {
        case 0: return INFINITY;
        case 1: return -INFINITY;
        case 2: return NAN;
        default: return specials[(r >> 4) % (sizeof specials / sizeof specials[0])];
        }
    }
    if (kind == 1 && (r & 3u) == 1) {
        return specials[(r >> 4) % (sizeof specials / sizeof specials[0])];
    }
    if (kind == 2) {
        return bits_to_float((rnd() & 0x807fffffu) | ((r & 1u) ? 0x0d000000u : 0u)); /* denormal or ~1e-30 */
    }
    const float mant = (float)(int32_t)(rnd() % 2000001u - 1000000) / 1000000.0f;
    return ldexpf(mant, (int)(r % 40u) - 30);
}

static long scaled; /* cases with sigma > 0 (not the all-zero early exit) */

static int check(int32_t h, int32_t w, int32_t c, int gkind, int skind, int mkind, long id)
{
    static float g[MAX_SIZE], s[1280];
    static uint8_t mask[MAX_SIZE / 8 + 1];
    static int16_t q_ref[MAX_SIZE], q_new[MAX_SIZE];
    const tt_dims d = {1, h, w, c};
    const int32_t size = h * w * c;
    for (int32_t i = 0; i < size; i++) {
        g[i] = pick(gkind);
    }
    for (int32_t o = 0; o < c; o++) {
        s[o] = skind == 3 ? ldexpf(1.0f, -10) : pick(skind);
    }
    for (int32_t b = 0; b < (size + 7) / 8; b++) {
        mask[b] = mkind == 0 ? 0u : (mkind == 1 ? 0xffu : (uint8_t)rnd());
    }
    float sig_ref = -1.0f, sig_new = -2.0f;
    grad_quantize_ref(&d, g, mask, s, q_ref, &sig_ref);
    memset(q_new, 0x55, sizeof q_new);
    if (tt_grad_quantize_s16(&d, g, mask, s, q_new, &sig_new) != TT_OK) {
        printf("case %ld: tt_grad_quantize_s16 failed\n", id);
        return 1;
    }
    if (float_bits(sig_ref) != float_bits(sig_new)) {
        printf("case %ld (h %d w %d c %d): sigma %a (old) != %a (new)\n", id, (int)h, (int)w, (int)c,
               (double)sig_ref, (double)sig_new);
        return 1;
    }
    scaled += sig_ref > 0.0f;
    for (int32_t i = 0; i < size; i++) {
        if (q_ref[i] != q_new[i]) {
            printf("case %ld (h %d w %d c %d): first mismatch at element %d (pixel %d, channel %d): g %a s %a "
                   "mask %d: %d (old) != %d (new)\n",
                   id, (int)h, (int)w, (int)c, (int)i, (int)(i / c), (int)(i % c), (double)g[i], (double)s[i % c],
                   (mask[i >> 3] >> (i & 7)) & 1, q_ref[i], q_new[i]);
            return 1;
        }
    }
    return 0;
}

int main(void)
{
    static const int32_t chans[] = {1, 3, 8, 16, 63, 64, 65, 127, 129, 1280};
    long cases = 0;
    for (int rep = 0; rep < 40; rep++) {
        for (size_t k = 0; k < sizeof chans / sizeof chans[0]; k++) {
            const int32_t c = chans[k];
            const int32_t hw = c >= 1000 ? 4 : (int32_t)(1 + rnd() % 7u);
            for (int gkind = 0; gkind < 3; gkind++) {
                for (int skind = 0; skind < 4; skind++) {
                    for (int mkind = 0; mkind < 3; mkind++) {
                        if (check(hw, c >= 1000 ? 1 : (int32_t)(1 + rnd() % 3u), c, gkind, skind, mkind, cases)) {
                            return 1;
                        }
                        cases++;
                    }
                }
            }
        }
    }
    printf("%ld cases (%ld with sigma > 0), all int16 values and sigma bits identical\n", cases, scaled);
    return 0;
}
