/*
 * tt_requantize_floor, tt_requantize_floor2 and the per-channel form tt_rq_prepare / tt_rq_twice (tt_rq_twice_biased)
 * / tt_ssat8_half (runtime_c/arm/tt_arm_math.h, used by the DSP kernels) against tt_requantize
 * (runtime_c/tt_requant.h): edge values x every shift, small accumulators with tie-making multipliers, then random
 * triples from a fixed xorshift seed. tt_rq is checked where tt_rq_prepare takes the fast form, with output offsets
 * -128, 0, 127 and one that varies. Prints "ok N rq M" (M: the triples checked in the fast form) or the first
 * mismatch; exit 1 on a mismatch.
 */
#include <inttypes.h>
#include <stdio.h>

#include "tt_arm_math.h"

static uint32_t state = 2463534242u;

static uint32_t next(void)
{
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

static long rq_checked = 0;

static int check(int32_t x, int32_t m, int32_t s, long *n)
{
    const int32_t want = tt_requantize(x, m, s), got = tt_requantize_floor(x, m, s);
    /* the pair form on x and a neighbour, plus an output offset where the sums cannot overflow */
    const int32_t x2 = (int32_t)((uint32_t)x ^ 0x55u), want_b = tt_requantize(x2, m, s);
    const int32_t big = 1 << 30;
    const int32_t offset = want > -big && want < big && want_b > -big && want_b < big ? 7 : 0;
    int32_t a = x, b = x2;
    tt_requantize_floor2(&a, &b, m, s, offset);
    (*n)++;
    /* the per-channel form, where it applies: the accumulator split into acc + bias (wrapping), four offsets */
    const tt_rq rq = tt_rq_prepare((int32_t)((uint32_t)x * 2654435761u), m, s);
    const int fast = m >= (1 << 30) && s <= -2;
    if ((rq.right != 0) != fast) {
        printf("tt_rq_prepare(multiplier=%" PRId32 ", shift=%" PRId32 ") takes the wrong form\n", m, s);
        return 1;
    }
    const int32_t offsets[4] = {-128, 0, 127, (int32_t)((uint32_t)x % 256u) - 128};
    rq_checked += fast;
    for (int i = 0; fast && i < 4; i++) {
        const int32_t acc = (int32_t)((uint32_t)x - (uint32_t)rq.bias);
        const int32_t twice = tt_rq_twice(acc, rq, 1 + 2 * offsets[i]);
        /* the depthwise kernel's use: the bias already in the accumulator (x = acc + bias, wrapping) */
        const int32_t biased = tt_rq_twice_biased(x, rq, 1 + 2 * offsets[i]);
        if ((twice >> 1) != want + offsets[i] || tt_ssat8_half(twice) != tt_clamp_s8(want + offsets[i]) ||
            biased != twice) {
            printf("mismatch x=%" PRId32 " multiplier=%" PRId32 " shift=%" PRId32 " offset %" PRId32
                   ": tt_rq_twice %" PRId32 " (biased %" PRId32 ") / 2 != reference %" PRId32 " + offset\n", x, m, s,
                   offsets[i], twice, biased, want);
            return 1;
        }
    }
    if (want != got || a != want + offset || b != want_b + offset) {
        printf("mismatch x=%" PRId32 " multiplier=%" PRId32 " shift=%" PRId32 ": floor %" PRId32 ", pair %" PRId32
               " and %" PRId32 " != reference %" PRId32 " and %" PRId32 " (+ offset %" PRId32 ")\n", x, m, s, got, a, b,
               want, want_b, offset);
        return 1;
    }
    return 0;
}

int main(void)
{
    static const int32_t edges[] = {INT32_MIN, INT32_MIN + 1, -1073741825, -1073741824, -1073741823, -65536, -257,
                                    -256, -255, -129, -128, -127, -3, -2, -1, 0, 1, 2, 3, 127, 128, 255, 256,
                                    65535, 1073741823, 1073741824, 1073741825, INT32_MAX - 1, INT32_MAX};
    const int ne = (int)(sizeof edges / sizeof edges[0]);
    long n = 0;
    for (int i = 0; i < ne; i++) {
        for (int j = 0; j < ne; j++) {
            for (int32_t s = -31; s <= 31; s++) {
                if (check(edges[i], edges[j], s, &n)) {
                    return 1;
                }
            }
        }
    }
    /* small accumulators with multipliers that make exact halves (ties) at every shift */
    static const int32_t ties[] = {1073741824, 1073741825, 1518500250, INT32_MAX};
    for (int32_t x = -4096; x <= 4096; x++) {
        for (int i = 0; i < 4; i++) {
            for (int32_t s = -20; s <= 2; s++) {
                if (check(x, ties[i], s, &n)) {
                    return 1;
                }
            }
        }
    }
    for (long k = 0; k < 4000000; k++) {
        const int32_t x = (int32_t)next(), s = (int32_t)(next() % 63u) - 31;
        /* quantised multipliers lie in [2^30, 2^31); every other int32 too, less often */
        const int32_t m = (k & 3) ? (int32_t)((next() >> 1) | 0x40000000u) : (int32_t)next();
        /* small accumulators are the common case: shift some x down */
        if (check((k & 1) ? x : x >> (next() % 31u), m, s, &n)) {
            return 1;
        }
    }
    printf("ok %ld rq %ld\n", n, rq_checked);
    return 0;
}
