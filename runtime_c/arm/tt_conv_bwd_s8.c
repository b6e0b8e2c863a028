/*
 * trady runtime: input gradients of the convolutions and the weight-gradient sums (tt_conv_bwd_common.h) for
 * Cortex-M with the DSP extension (see tt_train.h). The firmware build (`trady firmware --kernels dsp`) uses this
 * file instead of the reference file of the same name; the results are bit-identical: the same integer sums
 * (exact, so their order does not matter), converted to fp32 and scaled by sigma with the same expression. A sum
 * that fits int32 is converted from int32 (one VCVT) rather than from int64 (a library call): both conversions
 * round the same integer to nearest.
 *
 * Pointwise, stride 1, 2 * C_out <= TT_BWD_COLUMN (C_out <= 576): pointwise4, one pixel x four input channels. The
 * four weight columns w[:, c..c + 3] are gathered once into int16 words (w[o, c + j], w[o + 1, c + j]) interleaved
 * per output pair (the patched slice where a channel has one); per pixel, SMLAD multiplies a word of
 * G[pixel, o..o + 1] with each of the four column words of o. On the core the loop is inline assembly: one LDRD of
 * G and two LDMs of column words per eight SMLADs, the whole pixel loop and the fp32 stores in one block where
 * C_out % 4 == 0. |w * G| <= 128 * 32767 = 4,194,176, so an int32 accumulator is exact over TT_BWD_CHUNK = 512
 * products (512 * 4,194,176 < 2^31); longer sums add chunks into int64. Longer columns (C_out <= TT_BWD_COLUMN):
 * pointwise, two channels x two pixels in C with the same column words. Other dense convs take the reference sums.
 *
 * Depthwise (K * K <= 511 taps: the sum fits int32 as above): per input pixel the taps that reach it (the stride /
 * padding geometry) are listed once; four channels at a time, SXTB16 widens weight bytes 0 and 2 (and, after a
 * rotate by 8, bytes 1 and 3) into int16 lanes, and SMLABB / SMLABT / SMLATB / SMLATT multiply them with the lanes
 * of G[pixel, c..c + 1] and G[pixel, c + 2..c + 3]. A group of four with a patched channel takes the reference
 * sums. Stride 1 and 2 take a band of G rows instead where it pays and fits (dw_bwd_band, dw_bwd_band2, below):
 * one group of four channels over the whole plane, the patched slices widened with the rest; for K = 3, 5, 7 the
 * taps of a pixel are one inline-assembly block (one LDRD of G and one of the weights per tap).
 *
 * Weight-gradient sums, stride 1: runs of A and G four pixels at a time (SXTB16, SMLABB / SMLATB); 1x1: four
 * outputs at a time over packed activation pairs. Every inline-assembly block (`#if defined(__arm__)`) has the
 * plain C beside it for the host build of the tests; tests/c/bwd_qemu.c runs the blocks on the cores.
 */
#include <arm_acle.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tt_arm_math.h"
#include "tt_conv_bwd_common.h"
#include "tt_train.h"

#if !defined(__ARM_FEATURE_DSP) || !__ARM_FEATURE_DSP
#error "runtime_c/arm/ needs the DSP extension (Cortex-M4/M7); build the reference kernels instead"
#endif

#ifndef TT_BWD_COLUMN /* a test builds with a short column to run the other paths */
#define TT_BWD_COLUMN 1152 /* words of pointwise columns (4 channels x C_out <= 576 int16), 4.5 KB of stack */
#endif
#define TT_BWD_CHUNK 512 /* products per int32 partial sum (see above) */
#ifndef TT_DW_TAPS /* a test builds with a short list to run the reference path */
#define TT_DW_TAPS 121 /* depthwise taps listed per pixel on the stack (K <= 11); larger K take the reference */
#endif

static inline int32_t load_word(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#if defined(__arm__)
/* Four int32 sums (operands a0..a3) to fp32 (VCVT), times sigma, into s0..s3: store4 and pw4_rows. */
#define TT_SCALE4                                                                                               \
    "vmov s0, s1, %[a0], %[a1]\n\t"                                                                             \
    "vmov s2, s3, %[a2], %[a3]\n\t"                                                                             \
    "vcvt.f32.s32 s0, s0\n\t"                                                                                   \
    "vcvt.f32.s32 s1, s1\n\t"                                                                                   \
    "vcvt.f32.s32 s2, s2\n\t"                                                                                   \
    "vcvt.f32.s32 s3, s3\n\t"                                                                                   \
    "vmul.f32 s0, s0, %[sigma]\n\t"                                                                             \
    "vmul.f32 s1, s1, %[sigma]\n\t"                                                                             \
    "vmul.f32 s2, s2, %[sigma]\n\t"                                                                             \
    "vmul.f32 s3, s3, %[sigma]\n\t"
#endif

/* dst[j] (+)= (float)a_j * sigma for j = 0..3, as tt_bwd_store. On the core two VMOVs, the four VCVT and VMUL, one
 * VLDM and four VADDs where accumulating, and one VSTM: 12 or 17 instructions where GCC takes about 20 or 28
 * (each value moved, converted and stored alone, the flag tested for each). Same instructions per value as the C. */
static inline __attribute__((always_inline)) void store4(float *dst, int32_t a0, int32_t a1, int32_t a2, int32_t a3,
                                                         float sigma, int32_t accumulate)
{
#if defined(__arm__)
    float(*const d)[4] = (float(*)[4])dst;
    if (accumulate) {
        __asm__(TT_SCALE4
                "vldmia %[p], {s4-s7}\n\t"
                "vadd.f32 s0, s4, s0\n\t"
                "vadd.f32 s1, s5, s1\n\t"
                "vadd.f32 s2, s6, s2\n\t"
                "vadd.f32 s3, s7, s3\n\t"
                "vstmia %[p], {s0-s3}\n\t"
                : "+m"(*d)
                : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [sigma] "t"(sigma), [p] "r"(dst)
                : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7");
    } else {
        __asm__(TT_SCALE4
                "vstmia %[p], {s0-s3}\n\t"
                : "=m"(*d)
                : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [sigma] "t"(sigma), [p] "r"(dst)
                : "s0", "s1", "s2", "s3");
    }
#else
    tt_bwd_store(dst, (float)a0 * sigma, accumulate);
    tt_bwd_store(dst + 1, (float)a1 * sigma, accumulate);
    tt_bwd_store(dst + 2, (float)a2 * sigma, accumulate);
    tt_bwd_store(dst + 3, (float)a3 * sigma, accumulate);
#endif
}

/* The reference sums for every channel of every input pixel (shapes outside the fast path). */
static void conv_reference(const tt_conv_params *conv, const tt_dims *filter_dims, const int8_t *filter,
                           const tt_dims *out_dims, const int16_t *grad_q, float sigma, const tt_dims *in_dims,
                           int32_t accumulate, float *g_in)
{
    const int32_t k = filter_dims->h, c_in = in_dims->c;
    for (int32_t iy = 0; iy < in_dims->h; iy++) {
        for (int32_t ix = 0; ix < in_dims->w; ix++) {
            int32_t next = 0;
            for (int32_t c = 0; c < c_in; c++) {
                size_t ws;
                const int8_t *wc = tt_patched_weights(conv->patch, &next, filter, c, c_in, &ws);
                const int64_t acc = tt_bwd_input_sum(conv, k, out_dims, grad_q, wc, ws, iy, ix, 0, out_dims->c);
                tt_bwd_store(g_in + ((size_t)iy * in_dims->w + ix) * c_in + c, tt_sum_to_f32(acc) * sigma, accumulate);
            }
        }
    }
}

/*
 * Pointwise, stride 1: sums of pixels p0 and p1 (rows g0, g1 of G) with the interleaved columns `cols` over
 * outputs [0, c_out2) (even), in chunks of TT_BWD_CHUNK; s[2 * pixel + channel].
 */
static inline void dot_2x2(const int16_t *g0, const int16_t *g1, const int32_t *cols, int32_t c_out2, int64_t s[4])
{
    s[0] = s[1] = s[2] = s[3] = 0;
    for (int32_t o0 = 0; o0 < c_out2; o0 += TT_BWD_CHUNK) {
        const int32_t o1 = o0 + TT_BWD_CHUNK < c_out2 ? o0 + TT_BWD_CHUNK : c_out2;
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
        for (int32_t o = o0; o < o1; o += 2) {
            const int32_t ga = load_word(g0 + o), gb = load_word(g1 + o);
            const int32_t wa = cols[o], wb = cols[o + 1]; /* (w[o, c], w[o+1, c]), (w[o, c+1], w[o+1, c+1]) */
            a00 = __smlad(ga, wa, a00);
            a01 = __smlad(ga, wb, a01);
            a10 = __smlad(gb, wa, a10);
            a11 = __smlad(gb, wb, a11);
        }
        s[0] += a00;
        s[1] += a01;
        s[2] += a10;
        s[3] += a11;
    }
}

/*
 * Pointwise, stride 1, one pixel: the sums over outputs [0, 2 * pairs) of four input channels whose columns `cw` are
 * interleaved per output pair o as cw[2o + j] = (w[o, c + j], w[o + 1, c + j]): each word of G (G[o], G[o + 1])
 * serves four SMLADs. On the core, where G is word-aligned, inline assembly takes a quad of outputs (two pairs) per
 * LDRD of G and two LDMs of four column words per eight SMLADs (16 MACs in 11 instructions; GCC's own loop takes 18,
 * short of registers for the four sums, three pointers and the loaded words), four quads per loop step, then single
 * quads. A last odd pair (and a pixel with an unaligned row: an odd C_out) takes the plain C loop, which is all of
 * the host build.
 */
typedef struct {
    int32_t a0, a1, a2, a3;
} pw4_sums;

#if defined(__arm__)
/* One quad: G[o..o + 3] into r12 (o, o + 1) and lr (o + 2, o + 3); the column words of pair o, then of o + 2. */
#define TT_PW4_QUAD                                                                                             \
    "ldrd r12, lr, [%[g]], #8\n\t"                                                                              \
    "ldmia %[cw]!, {r8, r9, r10, r11}\n\t"                                                                      \
    "smlad %[a0], r12, r8, %[a0]\n\t"                                                                           \
    "smlad %[a1], r12, r9, %[a1]\n\t"                                                                           \
    "smlad %[a2], r12, r10, %[a2]\n\t"                                                                          \
    "smlad %[a3], r12, r11, %[a3]\n\t"                                                                          \
    "ldmia %[cw]!, {r8, r9, r10, r11}\n\t"                                                                      \
    "smlad %[a0], lr, r8, %[a0]\n\t"                                                                            \
    "smlad %[a1], lr, r9, %[a1]\n\t"                                                                            \
    "smlad %[a2], lr, r10, %[a2]\n\t"                                                                           \
    "smlad %[a3], lr, r11, %[a3]\n\t"
#endif

static inline __attribute__((always_inline)) pw4_sums pw4_dot(const int16_t *g, const int32_t *cw, int32_t pairs)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#if defined(__arm__)
    if (((uintptr_t)g & 3u) == 0 && pairs >= 2) {
        const int32_t quads = pairs >> 1; /* two output pairs: one LDRD of G */
        const int16_t *const end4 = g + 16 * (quads >> 2), *const end1 = g + 4 * quads;
        if (g != end4) { /* four quads per step */
            __asm__ volatile("1:\n\t" TT_PW4_QUAD TT_PW4_QUAD TT_PW4_QUAD TT_PW4_QUAD
                             "cmp %[g], %[end]\n\t"
                             "bne 1b\n\t"
                             : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [g] "+r"(g), [cw] "+r"(cw)
                             : [end] "r"(end4)
                             : "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
        }
        if (g != end1) { /* the last one to three */
            __asm__ volatile("1:\n\t" TT_PW4_QUAD
                             "cmp %[g], %[end]\n\t"
                             "bne 1b\n\t"
                             : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [g] "+r"(g), [cw] "+r"(cw)
                             : [end] "r"(end1)
                             : "r8", "r9", "r10", "r11", "r12", "lr", "cc", "memory");
        }
        pairs &= 1;
    }
#endif
    for (int32_t i = 0; i < pairs; i++, g += 2, cw += 4) {
        const int32_t gw = load_word(g);
        a0 = __smlad(gw, cw[0], a0);
        a1 = __smlad(gw, cw[1], a1);
        a2 = __smlad(gw, cw[2], a2);
        a3 = __smlad(gw, cw[3], a3);
    }
    const pw4_sums s = {a0, a1, a2, a3};
    return s;
}

#if defined(__arm__) && defined(__OPTIMIZE__) /* -O0 keeps a frame pointer: one register short */
/* pw4_rows' state in memory: its loop needs every register but one for the sums, G, the columns and the pointers. */
typedef struct {
    const int32_t *cols;
    int32_t quad4_bytes, quad1_bytes; /* G bytes of a row in steps of four quads, then single quads */
    float *dst;                       /* g_in of the pixel's channel c */
    int32_t dst_step;                 /* bytes from one pixel's g_in to the next */
    int32_t left;                     /* pixels still to do (>= 1) */
} pw4_rows_state;

/* The tail of pw4_rows' step: TT_SCALE4, then the pixel loop's end reloaded from the state. */
#define TT_PW4_SCALE TT_SCALE4 "ldr %[end], [%[st], #12]\n\t"

/* The sums of one pixel (pw4_dot's loops, the sums starting at zero), then its four g_in; per pixel: */
#define TT_PW4_ROW                                                                                              \
    "0:\n\t"                                                                                                    \
    "ldr %[cw], [%[st]]\n\t"                                                                                    \
    "ldr %[end], [%[st], #4]\n\t"                                                                               \
    "mov %[a0], #0\n\t"                                                                                         \
    "mov %[a1], #0\n\t"                                                                                         \
    "mov %[a2], #0\n\t"                                                                                         \
    "mov %[a3], #0\n\t"                                                                                         \
    "add %[end], %[end], %[g]\n\t"                                                                              \
    "cmp %[g], %[end]\n\t"                                                                                      \
    "beq 2f\n\t"                                                                                                \
    "1:\n\t" TT_PW4_QUAD TT_PW4_QUAD TT_PW4_QUAD TT_PW4_QUAD                                                    \
    "cmp %[g], %[end]\n\t"                                                                                      \
    "bne 1b\n\t"                                                                                                \
    "2:\n\t"                                                                                                    \
    "ldr %[end], [%[st], #8]\n\t"                                                                               \
    "add %[end], %[end], %[g]\n\t"                                                                              \
    "cmp %[g], %[end]\n\t"                                                                                      \
    "beq 4f\n\t"                                                                                                \
    "3:\n\t" TT_PW4_QUAD                                                                                        \
    "cmp %[g], %[end]\n\t"                                                                                      \
    "bne 3b\n\t"                                                                                                \
    "4:\n\t" TT_PW4_SCALE

/* ... and the next pixel: dst += dst_step, --left. */
#define TT_PW4_NEXT                                                                                             \
    "vstmia %[end], {s0-s3}\n\t"                                                                                \
    "ldr %[a0], [%[st], #16]\n\t"                                                                               \
    "add %[end], %[end], %[a0]\n\t"                                                                             \
    "str %[end], [%[st], #12]\n\t"                                                                              \
    "ldr %[a0], [%[st], #20]\n\t"                                                                               \
    "subs %[a0], %[a0], #1\n\t"                                                                                 \
    "str %[a0], [%[st], #20]\n\t"                                                                               \
    "bne 0b\n\t"

/*
 * Every pixel of a group of four channels in one assembly loop (pw4_dot's sums, then (float)sum * sigma written or
 * added as tt_bwd_store does: the same VCVT, VMUL and VADD as the C): C_out % 4 == 0, C_out <= TT_BWD_CHUNK, G
 * word-aligned. Saves the C loop's per-pixel spills around pw4_dot's assembly (which leaves GCC eight registers).
 */
static void pw4_rows(const int16_t *g, pw4_rows_state *st, float sigma, int32_t accumulate)
{
    int32_t a0, a1, a2, a3;
    const int32_t *cw;
    const void *end;
    if (accumulate) {
        __asm__ volatile(TT_PW4_ROW
                         "vldmia %[end], {s4-s7}\n\t"
                         "vadd.f32 s0, s4, s0\n\t"
                         "vadd.f32 s1, s5, s1\n\t"
                         "vadd.f32 s2, s6, s2\n\t"
                         "vadd.f32 s3, s7, s3\n\t" TT_PW4_NEXT
                         : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [cw] "=&r"(cw),
                           [end] "=&r"(end), [g] "+r"(g)
                         : [st] "r"(st), [sigma] "t"(sigma)
                         : "r8", "r9", "r10", "r11", "r12", "lr", "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "cc",
                           "memory");
    } else {
        __asm__ volatile(TT_PW4_ROW TT_PW4_NEXT
                         : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [cw] "=&r"(cw),
                           [end] "=&r"(end), [g] "+r"(g)
                         : [st] "r"(st), [sigma] "t"(sigma)
                         : "r8", "r9", "r10", "r11", "r12", "lr", "s0", "s1", "s2", "s3", "cc", "memory");
    }
}
#undef TT_PW4_SCALE
#undef TT_PW4_ROW
#undef TT_PW4_NEXT
#endif

#if !defined(__arm__)
/* Bytes 0, 1 of x and 0, 1 of y (PKHBT on the core), and bytes 2, 3 of each (PKHTB). */
static inline uint32_t pw4_pack_lo(uint32_t x, uint32_t y)
{
    return (x & 0xffffu) | (y << 16);
}

static inline uint32_t pw4_pack_hi(uint32_t x, uint32_t y)
{
    return (x >> 16) | (y & 0xffff0000u);
}
#endif

/*
 * Pointwise, stride 1, 2 * C_out <= TT_BWD_COLUMN: four input channels at a time, their columns gathered once into
 * `cols` (pw4_dot's layout), then every pixel: pw4_rows where it applies, else pw4_dot (int32 sums, one VCVT each;
 * C_out > TT_BWD_CHUNK: int32 chunks added into int64). A group of four home channels gathers a word of
 * w[o, c..c + 3] and of w[o + 1, c..c + 3] per output pair: two halfword packs and four SXTB16 give its four column
 * words. A group with a working slice (or short of four channels: zero columns beside it) gathers channel by channel.
 */
static void __attribute__((noinline)) pointwise4(const tt_conv_params *conv, const int8_t *filter,
                                                 const tt_dims *out_dims, const int16_t *grad_q, float sigma,
                                                 const tt_dims *in_dims, int32_t accumulate, float *g_in)
{
    const int32_t c_in = in_dims->c, c_out = out_dims->c;
    const int32_t c_out2 = c_out & ~1, pairs = c_out / 2;
    const int32_t pixels = in_dims->h * in_dims->w;
    const tt_weight_patch *patch = conv->patch;
    int32_t cols[TT_BWD_COLUMN];
    int32_t next = 0;
    for (int32_t c = 0; c < c_in; c += 4) {
        const int32_t nch = c_in - c < 4 ? c_in - c : 4;
        int16_t last[4] = {0, 0, 0, 0}; /* w[c_out - 1, c + j] for an odd c_out */
        if (nch == 4 && (patch == NULL || next >= patch->count || patch->channel[next] >= c + 4)) {
            const int8_t *w = filter + c;
#if defined(__arm__)
            if (c_out2 > 0) { /* the loop below in 12 instructions per output pair (GCC: 17), one STM of the four */
                int32_t *cw = cols;
                const int32_t *const end = cols + 2 * c_out2;
                uint32_t x, y, lo, hi;
                __asm__ volatile("1:\n\t"
                                 "ldr %[x], [%[w]]\n\t"
                                 "ldr %[y], [%[w], %[cin]]\n\t"
                                 "add %[w], %[w], %[cin2]\n\t"
                                 "pkhbt %[lo], %[x], %[y], lsl #16\n\t"
                                 "pkhtb %[hi], %[y], %[x], asr #16\n\t"
                                 "sxtb16 r8, %[lo]\n\t"
                                 "sxtb16 r9, %[lo], ror #8\n\t"
                                 "sxtb16 r10, %[hi]\n\t"
                                 "sxtb16 r11, %[hi], ror #8\n\t"
                                 "stmia %[cw]!, {r8, r9, r10, r11}\n\t"
                                 "cmp %[cw], %[end]\n\t"
                                 "bne 1b\n\t"
                                 : [w] "+r"(w), [cw] "+r"(cw), [x] "=&r"(x), [y] "=&r"(y), [lo] "=&r"(lo),
                                   [hi] "=&r"(hi)
                                 : [cin] "r"(c_in), [cin2] "r"(2 * c_in), [end] "r"(end)
                                 : "r8", "r9", "r10", "r11", "cc", "memory");
            }
#else
            int32_t *cw = cols;
            for (int32_t o = 0; o < c_out2; o += 2, w += 2 * (size_t)c_in, cw += 4) {
                const uint32_t x = (uint32_t)tt_load4(w), y = (uint32_t)tt_load4(w + c_in); /* rows o, o + 1 */
                const int32_t lo = (int32_t)pw4_pack_lo(x, y); /* w[o, c], w[o, c + 1], w[o + 1, c], ... */
                const int32_t hi = (int32_t)pw4_pack_hi(x, y); /* the same of c + 2, c + 3 */
                cw[0] = (int32_t)__sxtb16(lo);
                cw[1] = tt_sxtb16_ror8(lo);
                cw[2] = (int32_t)__sxtb16(hi);
                cw[3] = tt_sxtb16_ror8(hi);
            }
#endif
            if (c_out2 < c_out) {
                for (int32_t j = 0; j < 4; j++) {
                    last[j] = w[j];
                }
            }
        } else {
            for (int32_t j = 0; j < 4; j++) {
                size_t ws = 0;
                const int8_t *w = j < nch ? tt_patched_weights(patch, &next, filter, c + j, c_in, &ws) : NULL;
                for (int32_t o = 0; o < c_out2; o += 2) {
                    const uint32_t lo = w != NULL ? (uint16_t)(int16_t)w[(size_t)o * ws] : 0u;
                    const uint32_t hi = w != NULL ? (uint16_t)(int16_t)w[(size_t)(o + 1) * ws] : 0u;
                    cols[2 * o + j] = (int32_t)(lo | (hi << 16));
                }
                if (c_out2 < c_out && w != NULL) {
                    last[j] = w[(size_t)c_out2 * ws];
                }
            }
        }
        float *dst = g_in + c;
        const int16_t *g = grad_q;
#if defined(__arm__) && defined(__OPTIMIZE__) /* -O0 keeps a frame pointer: one register short */
        if (nch == 4 && c_out % 4 == 0 && c_out <= TT_BWD_CHUNK && ((uintptr_t)grad_q & 3u) == 0 && pixels > 0) {
            pw4_rows_state st = {.cols = cols, .quad4_bytes = 32 * (c_out / 16), .quad1_bytes = 8 * (c_out / 4 % 4),
                                 .dst = dst, .dst_step = 4 * c_in, .left = pixels};
            pw4_rows(g, &st, sigma, accumulate);
            continue;
        }
#endif
        if (c_out > TT_BWD_CHUNK) { /* int32 sums over chunks of TT_BWD_CHUNK outputs, added into int64 */
            for (int32_t p = 0; p < pixels; p++, g += c_out, dst += c_in) {
                int64_t sum[4] = {0, 0, 0, 0};
                for (int32_t o = 0; o < pairs; o += TT_BWD_CHUNK / 2) {
                    const int32_t n = pairs - o < TT_BWD_CHUNK / 2 ? pairs - o : TT_BWD_CHUNK / 2;
                    const pw4_sums s = pw4_dot(g + 2 * o, cols + 4 * o, n);
                    sum[0] += s.a0;
                    sum[1] += s.a1;
                    sum[2] += s.a2;
                    sum[3] += s.a3;
                }
                for (int32_t j = 0; j < nch; j++) {
                    if (c_out2 < c_out) {
                        sum[j] += last[j] * g[c_out2];
                    }
                    tt_bwd_store(dst + j, tt_sum_to_f32(sum[j]) * sigma, accumulate);
                }
            }
            continue;
        }
        for (int32_t p = 0; p < pixels; p++, g += c_out, dst += c_in) {
            pw4_sums s = pw4_dot(g, cols, pairs);
            if (c_out2 < c_out) {
                const int32_t gl = g[c_out2];
                s.a0 += last[0] * gl;
                s.a1 += last[1] * gl;
                s.a2 += last[2] * gl;
                s.a3 += last[3] * gl;
            }
            if (nch == 4 && !accumulate) {
                dst[0] = (float)s.a0 * sigma;
                dst[1] = (float)s.a1 * sigma;
                dst[2] = (float)s.a2 * sigma;
                dst[3] = (float)s.a3 * sigma;
            } else {
                const int32_t sum[4] = {s.a0, s.a1, s.a2, s.a3};
                for (int32_t j = 0; j < nch; j++) {
                    tt_bwd_store(dst + j, (float)sum[j] * sigma, accumulate);
                }
            }
        }
    }
}

static void pointwise(const tt_conv_params *conv, const int8_t *filter, const tt_dims *out_dims,
                      const int16_t *grad_q, float sigma, const tt_dims *in_dims, int32_t accumulate, float *g_in)
{
    const int32_t c_in = in_dims->c, c_out = out_dims->c;
    const int32_t c_out2 = c_out & ~1;
    const int32_t pixels = in_dims->h * in_dims->w;
    int32_t cols[TT_BWD_COLUMN]; /* per output pair o: column word of channel c at o, of c + 1 at o + 1 */
    int16_t last[2] = {0, 0};    /* w[c_out - 1, c], w[c_out - 1, c + 1] for an odd c_out */
    int32_t next = 0;
    for (int32_t c = 0; c < c_in; c += 2) {
        const int32_t pair = c + 1 < c_in; /* an odd c_in ends with a single channel: a zero column beside it */
        size_t ws0, ws1 = 0;
        const int8_t *w0 = tt_patched_weights(conv->patch, &next, filter, c, c_in, &ws0);
        const int8_t *w1 = pair ? tt_patched_weights(conv->patch, &next, filter, c + 1, c_in, &ws1) : NULL;
        for (int32_t o = 0; o < c_out2; o += 2) {
            const uint32_t a0 = (uint16_t)(int16_t)w0[(size_t)o * ws0];
            const uint32_t a1 = (uint16_t)(int16_t)w0[(size_t)(o + 1) * ws0];
            const uint32_t b0 = pair ? (uint16_t)(int16_t)w1[(size_t)o * ws1] : 0u;
            const uint32_t b1 = pair ? (uint16_t)(int16_t)w1[(size_t)(o + 1) * ws1] : 0u;
            cols[o] = (int32_t)(a0 | (a1 << 16));
            cols[o + 1] = (int32_t)(b0 | (b1 << 16));
        }
        if (c_out2 < c_out) {
            last[0] = w0[(size_t)c_out2 * ws0];
            last[1] = pair ? w1[(size_t)c_out2 * ws1] : 0;
        }
        for (int32_t p = 0; p < pixels; p += 2) {
            const int32_t both = p + 1 < pixels; /* an odd pixel count ends with one pixel: computed twice */
            const int16_t *g0 = grad_q + (size_t)p * c_out, *g1 = both ? g0 + c_out : g0;
            int64_t s[4];
            dot_2x2(g0, g1, cols, c_out2, s);
            if (c_out2 < c_out) {
                s[0] += (int32_t)last[0] * g0[c_out2];
                s[1] += (int32_t)last[1] * g0[c_out2];
                s[2] += (int32_t)last[0] * g1[c_out2];
                s[3] += (int32_t)last[1] * g1[c_out2];
            }
            float *d0 = g_in + (size_t)p * c_in + c;
            tt_bwd_store(d0, tt_sum_to_f32(s[0]) * sigma, accumulate);
            if (pair) {
                tt_bwd_store(d0 + 1, tt_sum_to_f32(s[1]) * sigma, accumulate);
            }
            if (both) {
                tt_bwd_store(d0 + c_in, tt_sum_to_f32(s[2]) * sigma, accumulate);
                if (pair) {
                    tt_bwd_store(d0 + c_in + 1, tt_sum_to_f32(s[3]) * sigma, accumulate);
                }
            }
        }
    }
}

tt_status tt_conv2d_s8_bwd_input(const tt_conv_params *conv, const tt_dims *filter_dims, const int8_t *filter,
                                 const tt_dims *out_dims, const int16_t *grad_q, float sigma,
                                 const tt_dims *in_dims, int32_t accumulate, float *g_in)
{
    const tt_status st = tt_check_bwd_input(0, conv, filter_dims, filter, out_dims, grad_q, in_dims, g_in);
    if (st != TT_OK) {
        return st;
    }
    if (filter_dims->h == 1 && filter_dims->w == 1 && conv->stride == 1 && conv->padding == 0 &&
        out_dims->h == in_dims->h && out_dims->w == in_dims->w && 2 * out_dims->c <= TT_BWD_COLUMN) {
        pointwise4(conv, filter, out_dims, grad_q, sigma, in_dims, accumulate, g_in);
    } else if (filter_dims->h == 1 && filter_dims->w == 1 && conv->stride == 1 && conv->padding == 0 &&
               out_dims->h == in_dims->h && out_dims->w == in_dims->w && out_dims->c <= TT_BWD_COLUMN) {
        pointwise(conv, filter, out_dims, grad_q, sigma, in_dims, accumulate, g_in);
    } else {
        conv_reference(conv, filter_dims, filter, out_dims, grad_q, sigma, in_dims, accumulate, g_in);
    }
    return TT_OK;
}

/* Depthwise channel c of input pixel (iy, ix) with the reference sum; dst = the pixel's g_in. */
static inline void dw_reference(const tt_conv_params *conv, int32_t k, const int8_t *filter, const tt_dims *out_dims,
                                const int16_t *grad_q, float sigma, int32_t accumulate, int32_t *next, int32_t iy,
                                int32_t ix, int32_t c, float *dst)
{
    size_t ws;
    const int8_t *wc = tt_patched_weights(conv->patch, next, filter, c, out_dims->c, &ws);
    const int64_t acc = tt_bwd_input_sum(conv, k, out_dims, grad_q, wc, ws, iy, ix, c, 1);
    tt_bwd_store(dst + c, tt_sum_to_f32(acc) * sigma, accumulate);
}

/*
 * Depthwise, stride 1, through a band (as the forward kernel's): with a = K - 1 - ky, b = K - 1 - kx and
 * p' = K - 1 - padding, g_in[iy, ix] = sum over a, b of w[K-1-a, K-1-b] * G[iy - p' + a, ix - p' + b] (G zero
 * outside), a correlation with the flipped filter. Per group of four channels: the flipped weights (working
 * slices included) widened once into the stack; G rows copied once each into a ring of K rows of two words per
 * column (the four int16 channels), zero-padded by p' columns, rows outside G pointing at a zero row. Each tap
 * is then one LDRD of G, one LDRD of the weights and four SMLAxy. Used where at least 6/14 of the taps are
 * inside G (the tap-list path above costs about 14 instructions per listed tap, the band 6 per tap) and the
 * band fits TT_DWB_BAND_WORDS.
 */
#ifndef TT_DWB_BAND_WORDS
#define TT_DWB_BAND_WORDS 640 /* 2,560 bytes of stack: (K + 1) (out_w + 2 p') 2 words */
#endif
#define TT_DWB_MAX_K 7

typedef struct {
    int32_t wb[2 * TT_DWB_MAX_K * TT_DWB_MAX_K]; /* flipped tap t = a K + b: (w0, w2), (w1, w3) */
    int32_t ch, in_w, k;
    float sigma;
    int32_t accumulate;
} dwb_group;

/*
 * Input pixels 0..in_w-1 of one row: rows[a] = the band row of G row iy - p' + a; dst = g_in of pixel 0. The
 * group's values are read into locals (the fp32 stores may alias anything). On the core the K x K taps of a pixel for
 * K = 3, 5, 7 are one assembly block (dwb_taps): per tap one LDRD of G, one LDRD of the weights (immediate offsets)
 * and the four SMLAxy, 6 instructions where GCC's code reloads and spills to 8 or 9.
 */
#if defined(__arm__)
/* Band row a of the pixel: rows[a] + the pixel's byte offset. */
#define TT_DWB_ROWP(A)                                                                                          \
    "ldr %[r], [%[rows], #" #A "]\n\t"                                                                          \
    "add %[r], %[r], %[off]\n\t"
/* Tap (a, b): G column words at byte G of the row, weight words at byte W of wb. */
#define TT_DWB_TAP(G, W)                                                                                        \
    "ldrd %[g0], %[g1], [%[r], #" #G "]\n\t"                                                                    \
    "ldrd %[w0], %[w1], [%[wb], #" #W "]\n\t"                                                                   \
    "smlabb %[a0], %[w0], %[g0], %[a0]\n\t"                                                                     \
    "smlabt %[a1], %[w1], %[g0], %[a1]\n\t"                                                                     \
    "smlatb %[a2], %[w0], %[g1], %[a2]\n\t"                                                                     \
    "smlatt %[a3], %[w1], %[g1], %[a3]\n\t"
#define TT_DWB_TAPS3 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 0) TT_DWB_TAP(8, 8) TT_DWB_TAP(16, 16) TT_DWB_ROWP(4) TT_DWB_TAP(0, 24) \
    TT_DWB_TAP(8, 32) TT_DWB_TAP(16, 40) TT_DWB_ROWP(8) TT_DWB_TAP(0, 48) TT_DWB_TAP(8, 56) TT_DWB_TAP(16, 64)
#define TT_DWB_TAPS5 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 0) TT_DWB_TAP(8, 8) TT_DWB_TAP(16, 16) TT_DWB_TAP(24, 24) TT_DWB_TAP(32, 32) \
    TT_DWB_ROWP(4) TT_DWB_TAP(0, 40) TT_DWB_TAP(8, 48) TT_DWB_TAP(16, 56) TT_DWB_TAP(24, 64) TT_DWB_TAP(32, 72) \
    TT_DWB_ROWP(8) TT_DWB_TAP(0, 80) TT_DWB_TAP(8, 88) TT_DWB_TAP(16, 96) TT_DWB_TAP(24, 104) \
    TT_DWB_TAP(32, 112) TT_DWB_ROWP(12) TT_DWB_TAP(0, 120) TT_DWB_TAP(8, 128) TT_DWB_TAP(16, 136) \
    TT_DWB_TAP(24, 144) TT_DWB_TAP(32, 152) TT_DWB_ROWP(16) TT_DWB_TAP(0, 160) TT_DWB_TAP(8, 168) \
    TT_DWB_TAP(16, 176) TT_DWB_TAP(24, 184) TT_DWB_TAP(32, 192)
#define TT_DWB_TAPS7 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 0) TT_DWB_TAP(8, 8) TT_DWB_TAP(16, 16) TT_DWB_TAP(24, 24) TT_DWB_TAP(32, 32) \
    TT_DWB_TAP(40, 40) TT_DWB_TAP(48, 48) TT_DWB_ROWP(4) TT_DWB_TAP(0, 56) TT_DWB_TAP(8, 64) TT_DWB_TAP(16, 72) \
    TT_DWB_TAP(24, 80) TT_DWB_TAP(32, 88) TT_DWB_TAP(40, 96) TT_DWB_TAP(48, 104) TT_DWB_ROWP(8) \
    TT_DWB_TAP(0, 112) TT_DWB_TAP(8, 120) TT_DWB_TAP(16, 128) TT_DWB_TAP(24, 136) TT_DWB_TAP(32, 144) \
    TT_DWB_TAP(40, 152) TT_DWB_TAP(48, 160) TT_DWB_ROWP(12) TT_DWB_TAP(0, 168) TT_DWB_TAP(8, 176) \
    TT_DWB_TAP(16, 184) TT_DWB_TAP(24, 192) TT_DWB_TAP(32, 200) TT_DWB_TAP(40, 208) TT_DWB_TAP(48, 216) \
    TT_DWB_ROWP(16) TT_DWB_TAP(0, 224) TT_DWB_TAP(8, 232) TT_DWB_TAP(16, 240) TT_DWB_TAP(24, 248) \
    TT_DWB_TAP(32, 256) TT_DWB_TAP(40, 264) TT_DWB_TAP(48, 272) TT_DWB_ROWP(20) TT_DWB_TAP(0, 280) \
    TT_DWB_TAP(8, 288) TT_DWB_TAP(16, 296) TT_DWB_TAP(24, 304) TT_DWB_TAP(32, 312) TT_DWB_TAP(40, 320) \
    TT_DWB_TAP(48, 328) TT_DWB_ROWP(24) TT_DWB_TAP(0, 336) TT_DWB_TAP(8, 344) TT_DWB_TAP(16, 352) \
    TT_DWB_TAP(24, 360) TT_DWB_TAP(32, 368) TT_DWB_TAP(40, 376) TT_DWB_TAP(48, 384)
#define TT_DWB_ASM(TAPS)                                                                                        \
    __asm__(TAPS                                                                                                \
            : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [g0] "=&r"(g0), [g1] "=&r"(g1),      \
              [w0] "=&r"(w0), [w1] "=&r"(w1), [r] "=&r"(r)                                                      \
            : [rows] "r"(rows), [wb] "r"(wb), [off] "r"(8 * ix)                                                 \
            : "memory")
#endif

static inline __attribute__((always_inline)) void dwb_row(const dwb_group *g, const uint32_t *const rows[],
                                                          float *dst, int32_t k)
{
    const int32_t *wb = g->wb;
    const int32_t in_w = g->in_w, ch = g->ch, accumulate = g->accumulate;
    const float sigma = g->sigma;
    for (int32_t ix = 0; ix < in_w; ix++, dst += ch) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#if defined(__arm__)
        int32_t g0, g1, w0, w1;
        const uint32_t *r;
        if (k == 3) {
            TT_DWB_ASM(TT_DWB_TAPS3);
        } else if (k == 5) {
            TT_DWB_ASM(TT_DWB_TAPS5);
        } else if (k == 7) {
            TT_DWB_ASM(TT_DWB_TAPS7);
        } else
#endif
        {
            for (int32_t a = 0; a < k; a++) {
                const uint32_t *rr = rows[a] + 2 * ix;
                const int32_t *wt = wb + 2 * a * k;
#pragma GCC unroll 7
                for (int32_t b = 0; b < k; b++) {
                    const int32_t g01 = (int32_t)rr[2 * b], g23 = (int32_t)rr[2 * b + 1];
                    const int32_t we = wt[2 * b], wo = wt[2 * b + 1];
                    a0 = __smlabb(we, g01, a0);
                    a1 = __smlabt(wo, g01, a1);
                    a2 = __smlatb(we, g23, a2);
                    a3 = __smlatt(wo, g23, a3);
                }
            }
        }
        store4(dst, a0, a1, a2, a3, sigma, accumulate);
    }
}

static __attribute__((noinline)) void dwb_row_any(const dwb_group *g, const uint32_t *const rows[], float *dst)
{
    dwb_row(g, rows, dst, g->k);
}

static __attribute__((noinline)) void dwb_row3(const dwb_group *g, const uint32_t *const rows[], float *dst)
{
    dwb_row(g, rows, dst, 3);
}

static __attribute__((noinline)) void dwb_row5(const dwb_group *g, const uint32_t *const rows[], float *dst)
{
    dwb_row(g, rows, dst, 5);
}

static __attribute__((noinline)) void dwb_row7(const dwb_group *g, const uint32_t *const rows[], float *dst)
{
    dwb_row(g, rows, dst, 7);
}

/* Taps inside [0, out) summed over the n input positions along one axis (stride 1, p' = K - 1 - padding). */
static int32_t dwb_inside(int32_t n, int32_t k, int32_t pf, int32_t out)
{
    int32_t taps = 0;
    for (int32_t i = 0; i < n; i++) {
        const int32_t o0 = i - pf; /* G index of tap b = 0 */
        taps += (o0 + k > out ? out - o0 : k) - (o0 < 0 ? -o0 : 0);
    }
    return taps;
}

/* Whether the band path takes this input gradient (see above). */
static int dwb_fits(const tt_conv_params *conv, int32_t k, const tt_dims *out_dims, const tt_dims *in_dims)
{
    const int32_t pf = k - 1 - conv->padding;
    if (conv->stride != 1 || k > TT_DWB_MAX_K || in_dims->c < 4 || pf < 0 ||
        (k + 1) * (out_dims->w + 2 * pf) * 2 > TT_DWB_BAND_WORDS) {
        return 0;
    }
    const int64_t inside = (int64_t)dwb_inside(in_dims->w, k, pf, out_dims->w) *
                           dwb_inside(in_dims->h, k, pf, out_dims->h);
    return 14 * inside >= 6 * (int64_t)in_dims->w * k * in_dims->h * k;
}

/* The K x K weights of channels c..c+3 (their working slices where patched, tt_patched_weights; *next: the next
 * patched channel) widened into lane pairs: tap t into wb[2t] = (w0, w2) and wb[2t + 1] = (w1, w3), from filter tap
 * taps - 1 - t where flip (the rotated kernel of the stride-1 input gradient), else from tap t. */
static inline __attribute__((always_inline)) void dwb_widen_group(const tt_weight_patch *patch, const int8_t *filter,
                                                                  int32_t ch, int32_t c, int32_t taps, int flip,
                                                                  int32_t *next, int32_t *wb)
{
    if (patch == NULL || *next >= patch->count || patch->channel[*next] >= c + 4) {
        /* four home channels: one word of the KKC filter per tap */
        for (int32_t t = 0; t < taps; t++) {
            const int32_t src = flip ? taps - 1 - t : t;
            const int32_t u = tt_load4(filter + (size_t)src * ch + c);
            wb[2 * t] = (int32_t)__sxtb16(u);
            wb[2 * t + 1] = tt_sxtb16_ror8(u);
        }
        return;
    }
    const int8_t *wc[4];
    size_t ws[4];
    for (int j = 0; j < 4; j++) {
        wc[j] = tt_patched_weights(patch, next, filter, c + j, ch, &ws[j]);
    }
    for (int32_t t = 0; t < taps; t++) {
        const int32_t src = flip ? taps - 1 - t : t; /* flipped: (K-1-a) K + (K-1-b) */
        uint32_t u = 0;
        for (int j = 0; j < 4; j++) {
            u |= (uint32_t)(uint8_t)wc[j][(size_t)src * ws[j]] << (8 * j);
        }
        wb[2 * t] = (int32_t)__sxtb16((int32_t)u);
        wb[2 * t + 1] = tt_sxtb16_ror8((int32_t)u);
    }
}

/* G row oy of channels c..c+3 (out_w columns of four int16) into the band row at dst: two words per column. */
static inline __attribute__((always_inline)) void dwb_copy_row(uint32_t *dst, const int16_t *grad_q, int32_t oy,
                                                               int32_t out_w, int32_t ch, int32_t c)
{
    const int16_t *src = grad_q + (size_t)oy * out_w * ch + c;
    for (int32_t ox = 0; ox < out_w; ox++, src += ch) {
        dst[2 * ox] = (uint32_t)load_word(src);
        dst[2 * ox + 1] = (uint32_t)load_word(src + 2);
    }
}

/* The band path for every channel: groups of four, then the channels past the last group per pixel. */
static void dw_bwd_band(const tt_conv_params *conv, int32_t k, const int8_t *filter, const tt_dims *out_dims,
                        const int16_t *grad_q, float sigma, const tt_dims *in_dims, int32_t accumulate, float *g_in)
{
    const int32_t ch = in_dims->c, pf = k - 1 - conv->padding, span = out_dims->w + 2 * pf;
    uint32_t band[TT_DWB_BAND_WORDS];
    dwb_group g = {.ch = ch, .in_w = in_dims->w, .k = k, .sigma = sigma, .accumulate = accumulate};
    void (*row)(const dwb_group *, const uint32_t *const[], float *) =
        k == 3 ? dwb_row3 : k == 5 ? dwb_row5 : k == 7 ? dwb_row7 : dwb_row_any;
    const uint32_t *rows[TT_DWB_MAX_K];
    int32_t next = 0; /* the next patched channel (tt_patched_weights); channels ascend */
    int32_t c = 0;
    for (; c + 4 <= ch; c += 4) {
        dwb_widen_group(conv->patch, filter, ch, c, k * k, 1, &next, g.wb);
        memset(band, 0, (size_t)(k + 1) * span * 2 * sizeof band[0]);
        int32_t copied = 0; /* G rows 0..copied-1 are in the band */
        for (int32_t iy = 0; iy < in_dims->h; iy++) {
            const int32_t o0 = iy - pf;
            for (; copied < o0 + k && copied < out_dims->h; copied++) {
                dwb_copy_row(band + ((size_t)(copied % k) * span + pf) * 2, grad_q, copied, out_dims->w, ch, c);
            }
            for (int32_t a = 0; a < k; a++) {
                const int32_t oy = o0 + a;
                rows[a] = band + (size_t)(oy >= 0 && oy < out_dims->h ? oy % k : k) * span * 2;
            }
            row(&g, rows, g_in + (size_t)iy * in_dims->w * ch + c);
        }
    }
    for (int32_t iy = 0; iy < in_dims->h && c < ch; iy++) {
        for (int32_t ix = 0; ix < in_dims->w; ix++) {
            float *dst = g_in + ((size_t)iy * in_dims->w + ix) * ch;
            int32_t n = next;
            for (int32_t j = c; j < ch; j++) {
                dw_reference(conv, k, filter, out_dims, grad_q, sigma, accumulate, &n, iy, ix, j, dst);
            }
        }
    }
}

/*
 * Depthwise, stride 2, through a band of G rows: input row iy with iy + padding = 2m + py takes the taps
 * ky = 2j + py from G row m - j, and likewise along x (ix + padding = 2n + px, kx = 2i + px, G column n - i):
 * per parity class a stride-1 sum over about K^2 / 4 taps, none of them skipped by a test. The G rows are copied
 * once each into a ring of K rows, PL columns of zeros on the left and PR on the right, rows outside G pointing
 * at a zero row. Taken where at least 8/13 of the class taps are inside G and the band fits.
 */
#define TT_DWB2_PL ((TT_DWB_MAX_K + 1) / 2)     /* zero columns left of G column 0: n - i >= -PL */
#define TT_DWB2_PR (TT_DWB_MAX_K / 2 + 2)       /* and right of the last: n <= out_w - 1 + PR */

/* Along one axis of n input positions (stride 2): the class taps of all positions into *all, and those inside
 * [0, out) into *inside. */
static void dwb2_taps(int32_t n, int32_t k, int32_t padding, int32_t out, int64_t *all, int64_t *inside)
{
    *all = 0;
    *inside = 0;
    for (int32_t i = 0; i < n; i++) {
        const int32_t m = (i + padding) >> 1, par = (i + padding) & 1;
        for (int32_t j = 0; 2 * j + par < k; j++) {
            *all += 1;
            *inside += m - j >= 0 && m - j < out;
        }
    }
}

static int dwb2_fits(const tt_conv_params *conv, int32_t k, const tt_dims *out_dims, const tt_dims *in_dims)
{
    if (conv->stride != 2 || k > TT_DWB_MAX_K || in_dims->c < 4 ||
        (k + 1) * (out_dims->w + TT_DWB2_PL + TT_DWB2_PR) * 2 > TT_DWB_BAND_WORDS) {
        return 0;
    }
    int64_t all_x, in_x, all_y, in_y;
    dwb2_taps(in_dims->w, k, conv->padding, out_dims->w, &all_x, &in_x);
    dwb2_taps(in_dims->h, k, conv->padding, out_dims->h, &all_y, &in_y);
    return 13 * in_x * in_y >= 8 * all_x * all_y;
}

/* One input row of dw_bwd_band2: the band rows of its class (rows[j] = G row m - j), the widened weights. */
typedef struct {
    const uint32_t *const *rows;
    const int32_t *wb;
    int32_t in_w, p, ch;
    float sigma;
    int32_t accumulate;
} dwb2_line;

/* The sums of input pixel (row class py, column class px, G column n) over its class taps, written or added to dst:
 * K and the classes constant in dwb2_row's copies, so that both loops unroll (immediate offsets, no tests); on the
 * core for K = 3, 5, 7 one assembly block of dwb_row's taps (G walks left: tap i at column n - i). */
#if defined(__arm__)
#define TT_DWB2_TAPS3_00 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 0) TT_DWB_TAP(-8, 16) TT_DWB_ROWP(4) TT_DWB_TAP(0, 48) TT_DWB_TAP(-8, 64)
#define TT_DWB2_TAPS3_01 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 8) TT_DWB_ROWP(4) TT_DWB_TAP(0, 56)
#define TT_DWB2_TAPS3_10 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 24) TT_DWB_TAP(-8, 40)
#define TT_DWB2_TAPS3_11 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 32)
#define TT_DWB2_TAPS5_00 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 0) TT_DWB_TAP(-8, 16) TT_DWB_TAP(-16, 32) TT_DWB_ROWP(4) TT_DWB_TAP(0, 80) \
    TT_DWB_TAP(-8, 96) TT_DWB_TAP(-16, 112) TT_DWB_ROWP(8) TT_DWB_TAP(0, 160) TT_DWB_TAP(-8, 176) \
    TT_DWB_TAP(-16, 192)
#define TT_DWB2_TAPS5_01 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 8) TT_DWB_TAP(-8, 24) TT_DWB_ROWP(4) TT_DWB_TAP(0, 88) TT_DWB_TAP(-8, 104) \
    TT_DWB_ROWP(8) TT_DWB_TAP(0, 168) TT_DWB_TAP(-8, 184)
#define TT_DWB2_TAPS5_10 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 40) TT_DWB_TAP(-8, 56) TT_DWB_TAP(-16, 72) TT_DWB_ROWP(4) TT_DWB_TAP(0, 120) \
    TT_DWB_TAP(-8, 136) TT_DWB_TAP(-16, 152)
#define TT_DWB2_TAPS5_11 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 48) TT_DWB_TAP(-8, 64) TT_DWB_ROWP(4) TT_DWB_TAP(0, 128) TT_DWB_TAP(-8, 144)
#define TT_DWB2_TAPS7_00 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 0) TT_DWB_TAP(-8, 16) TT_DWB_TAP(-16, 32) TT_DWB_TAP(-24, 48) TT_DWB_ROWP(4) \
    TT_DWB_TAP(0, 112) TT_DWB_TAP(-8, 128) TT_DWB_TAP(-16, 144) TT_DWB_TAP(-24, 160) TT_DWB_ROWP(8) \
    TT_DWB_TAP(0, 224) TT_DWB_TAP(-8, 240) TT_DWB_TAP(-16, 256) TT_DWB_TAP(-24, 272) TT_DWB_ROWP(12) \
    TT_DWB_TAP(0, 336) TT_DWB_TAP(-8, 352) TT_DWB_TAP(-16, 368) TT_DWB_TAP(-24, 384)
#define TT_DWB2_TAPS7_01 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 8) TT_DWB_TAP(-8, 24) TT_DWB_TAP(-16, 40) TT_DWB_ROWP(4) TT_DWB_TAP(0, 120) \
    TT_DWB_TAP(-8, 136) TT_DWB_TAP(-16, 152) TT_DWB_ROWP(8) TT_DWB_TAP(0, 232) TT_DWB_TAP(-8, 248) \
    TT_DWB_TAP(-16, 264) TT_DWB_ROWP(12) TT_DWB_TAP(0, 344) TT_DWB_TAP(-8, 360) TT_DWB_TAP(-16, 376)
#define TT_DWB2_TAPS7_10 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 56) TT_DWB_TAP(-8, 72) TT_DWB_TAP(-16, 88) TT_DWB_TAP(-24, 104) TT_DWB_ROWP(4) \
    TT_DWB_TAP(0, 168) TT_DWB_TAP(-8, 184) TT_DWB_TAP(-16, 200) TT_DWB_TAP(-24, 216) TT_DWB_ROWP(8) \
    TT_DWB_TAP(0, 280) TT_DWB_TAP(-8, 296) TT_DWB_TAP(-16, 312) TT_DWB_TAP(-24, 328)
#define TT_DWB2_TAPS7_11 \
    TT_DWB_ROWP(0) TT_DWB_TAP(0, 64) TT_DWB_TAP(-8, 80) TT_DWB_TAP(-16, 96) TT_DWB_ROWP(4) TT_DWB_TAP(0, 176) \
    TT_DWB_TAP(-8, 192) TT_DWB_TAP(-16, 208) TT_DWB_ROWP(8) TT_DWB_TAP(0, 288) TT_DWB_TAP(-8, 304) \
    TT_DWB_TAP(-16, 320)
#define TT_DWB2_CASE(K, PY, PX)                                                                                 \
    if (k == K && py == PY && px == PX) {                                                                       \
        TT_DWB_ASM(TT_DWB2_TAPS##K##_##PY##PX);                                                                 \
        done = 1;                                                                                               \
    }
#endif

static inline __attribute__((always_inline)) void dwb2_sum(const uint32_t *const rows[4], const int32_t *wb,
                                                           int32_t k, int32_t py, int32_t px, int32_t n, float sigma,
                                                           int32_t accumulate, float *dst)
{
    const int32_t rows_n = (k - py + 1) >> 1, cols_n = (k - px + 1) >> 1;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int done = 0;
#if defined(__arm__)
    {
        const int32_t ix = n + TT_DWB2_PL; /* TT_DWB_ASM's byte offset 8 * ix */
        int32_t g0, g1, w0, w1;
        const uint32_t *r;
        TT_DWB2_CASE(3, 0, 0)
        TT_DWB2_CASE(3, 0, 1)
        TT_DWB2_CASE(3, 1, 0)
        TT_DWB2_CASE(3, 1, 1)
        TT_DWB2_CASE(5, 0, 0)
        TT_DWB2_CASE(5, 0, 1)
        TT_DWB2_CASE(5, 1, 0)
        TT_DWB2_CASE(5, 1, 1)
        TT_DWB2_CASE(7, 0, 0)
        TT_DWB2_CASE(7, 0, 1)
        TT_DWB2_CASE(7, 1, 0)
        TT_DWB2_CASE(7, 1, 1)
    }
#endif
    if (!done) {
#pragma GCC unroll 4
        for (int32_t j = 0; j < rows_n; j++) {
            const uint32_t *r = rows[j] + 2 * (n + TT_DWB2_PL);
            const int32_t *wt = wb + 2 * ((2 * j + py) * k + px);
#pragma GCC unroll 4
            for (int32_t i = 0; i < cols_n; i++) {
                const int32_t g01 = (int32_t)r[-2 * i], g23 = (int32_t)r[-2 * i + 1];
                a0 = __smlabb(wt[4 * i], g01, a0);
                a1 = __smlabt(wt[4 * i + 1], g01, a1);
                a2 = __smlatb(wt[4 * i], g23, a2);
                a3 = __smlatt(wt[4 * i + 1], g23, a3);
            }
        }
    }
    store4(dst, a0, a1, a2, a3, sigma, accumulate);
}

/* Every pixel of an input row of row class py; dst = g_in of its pixel 0, channel c. The line's values are read
 * into locals once: the fp32 stores may alias anything, so the compiler would reload them per pixel. */
static inline __attribute__((always_inline)) void dwb2_row(const dwb2_line *l, int32_t k, int32_t py, float *dst)
{
    const uint32_t *rows[4];
    for (int32_t j = 0; j < 4 && j < TT_DWB_MAX_K; j++) {
        rows[j] = j < (k - py + 1) >> 1 ? l->rows[j] : NULL;
    }
    const int32_t *wb = l->wb;
    const int32_t in_w = l->in_w, p = l->p, ch = l->ch, accumulate = l->accumulate;
    const float sigma = l->sigma;
    for (int32_t ix = 0; ix < in_w; ix++, dst += ch) {
        const int32_t n = (ix + p) >> 1;
        if (((ix + p) & 1) == 0) {
            dwb2_sum(rows, wb, k, py, 0, n, sigma, accumulate, dst);
        } else {
            dwb2_sum(rows, wb, k, py, 1, n, sigma, accumulate, dst);
        }
    }
}

static __attribute__((noinline)) void dwb2_row_any(const dwb2_line *l, int32_t k, int32_t py, float *dst)
{
    if (py == 0) {
        dwb2_row(l, k, 0, dst);
    } else {
        dwb2_row(l, k, 1, dst);
    }
}

#define TT_DWB2_ROW(K)                                                                                          \
    static __attribute__((noinline)) void dwb2_row##K(const dwb2_line *l, int32_t py, float *dst)              \
    {                                                                                                           \
        if (py == 0) {                                                                                          \
            dwb2_row(l, K, 0, dst);                                                                             \
        } else {                                                                                                \
            dwb2_row(l, K, 1, dst);                                                                             \
        }                                                                                                       \
    }
TT_DWB2_ROW(3)
TT_DWB2_ROW(5)
TT_DWB2_ROW(7)
#undef TT_DWB2_ROW

static void dw_bwd_band2(const tt_conv_params *conv, int32_t k, const int8_t *filter, const tt_dims *out_dims,
                         const int16_t *grad_q, float sigma, const tt_dims *in_dims, int32_t accumulate, float *g_in)
{
    const int32_t ch = in_dims->c, p = conv->padding;
    const int32_t span = out_dims->w + TT_DWB2_PL + TT_DWB2_PR;
    uint32_t band[TT_DWB_BAND_WORDS];
    int32_t wb[2 * TT_DWB_MAX_K * TT_DWB_MAX_K]; /* tap ky K + kx: (w0, w2), (w1, w3) */
    const uint32_t *rows[TT_DWB_MAX_K];
    void (*row)(const dwb2_line *, int32_t, float *) = k == 3 ? dwb2_row3 : k == 5 ? dwb2_row5 : k == 7 ? dwb2_row7
                                                                                                  : NULL;
    int32_t next = 0;
    int32_t c = 0;
    for (; c + 4 <= ch; c += 4) {
        dwb_widen_group(conv->patch, filter, ch, c, k * k, 0, &next, wb);
        memset(band, 0, (size_t)(k + 1) * span * 2 * sizeof band[0]);
        int32_t copied = 0;
        for (int32_t iy = 0; iy < in_dims->h; iy++) {
            const int32_t m = (iy + p) >> 1, py = (iy + p) & 1, rows_n = (k - py + 1) >> 1;
            for (; copied <= m && copied < out_dims->h; copied++) {
                dwb_copy_row(band + ((size_t)(copied % k) * span + TT_DWB2_PL) * 2, grad_q, copied, out_dims->w, ch,
                             c);
            }
            for (int32_t j = 0; j < rows_n; j++) {
                const int32_t oy = m - j;
                rows[j] = band + (size_t)(oy >= 0 && oy < out_dims->h ? oy % k : k) * span * 2;
            }
            const dwb2_line line = {.rows = rows, .wb = wb, .in_w = in_dims->w, .p = p, .ch = ch, .sigma = sigma,
                                    .accumulate = accumulate};
            float *dst = g_in + (size_t)iy * in_dims->w * ch + c;
            if (row != NULL) {
                row(&line, py, dst);
            } else {
                dwb2_row_any(&line, k, py, dst);
            }
        }
    }
    for (int32_t iy = 0; iy < in_dims->h && c < ch; iy++) {
        for (int32_t ix = 0; ix < in_dims->w; ix++) {
            float *dst = g_in + ((size_t)iy * in_dims->w + ix) * ch;
            int32_t nx = next;
            for (int32_t j = c; j < ch; j++) {
                dw_reference(conv, k, filter, out_dims, grad_q, sigma, accumulate, &nx, iy, ix, j, dst);
            }
        }
    }
}

tt_status tt_depthwise_conv2d_s8_bwd_input(const tt_conv_params *conv, const tt_dims *filter_dims,
                                           const int8_t *filter, const tt_dims *out_dims, const int16_t *grad_q,
                                           float sigma, const tt_dims *in_dims, int32_t accumulate, float *g_in)
{
    const tt_status st = tt_check_bwd_input(1, conv, filter_dims, filter, out_dims, grad_q, in_dims, g_in);
    if (st != TT_OK) {
        return st;
    }
    if (dwb_fits(conv, filter_dims->h, out_dims, in_dims)) {
        dw_bwd_band(conv, filter_dims->h, filter, out_dims, grad_q, sigma, in_dims, accumulate, g_in);
        return TT_OK;
    }
    if (dwb2_fits(conv, filter_dims->h, out_dims, in_dims)) {
        dw_bwd_band2(conv, filter_dims->h, filter, out_dims, grad_q, sigma, in_dims, accumulate, g_in);
        return TT_OK;
    }
    const int32_t k = filter_dims->h, ch = in_dims->c;
    const int32_t fast = k * k <= TT_DW_TAPS; /* also k * k <= 511: int32 sums (see above) */
    const int32_t c4 = fast ? ch & ~3 : 0;
    const tt_weight_patch *patch = conv->patch;
    int32_t tap_w[TT_DW_TAPS]; /* per listed tap: weight offset (ky * k + kx) * ch */
    int32_t tap_g[TT_DW_TAPS]; /* and G offset (oy * out_w + ox) * ch */
    for (int32_t iy = 0; iy < in_dims->h; iy++) {
        for (int32_t ix = 0; ix < in_dims->w; ix++) {
            int32_t n = 0;
            for (int32_t ky = 0; ky < k && fast; ky++) {
                const int32_t oy = tt_source_index(iy, ky, conv->stride, conv->padding, out_dims->h);
                for (int32_t kx = 0; kx < k && oy >= 0; kx++) {
                    const int32_t ox = tt_source_index(ix, kx, conv->stride, conv->padding, out_dims->w);
                    if (ox >= 0) {
                        tap_w[n] = (ky * k + kx) * ch;
                        tap_g[n] = (oy * out_dims->w + ox) * ch;
                        n++;
                    }
                }
            }
            float *dst = g_in + ((size_t)iy * in_dims->w + ix) * ch;
            int32_t next = 0; /* the next patched channel; channels ascend */
            int32_t c = 0;
            for (; c < c4; c += 4) {
                if (patch != NULL && next < patch->count && patch->channel[next] < c + 4) {
                    for (int32_t j = c; j < c + 4; j++) { /* a group with a working slice: the reference sums */
                        dw_reference(conv, k, filter, out_dims, grad_q, sigma, accumulate, &next, iy, ix, j, dst);
                    }
                    continue;
                }
                const int8_t *pw = filter + c;
                const int16_t *pg = grad_q + c;
                int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                for (int32_t t = 0; t < n; t++) {
                    const int32_t ww = tt_load4(pw + tap_w[t]);
                    const int32_t g01 = load_word(pg + tap_g[t]), g23 = load_word(pg + tap_g[t] + 2);
                    const int32_t we = __sxtb16(ww), wo = tt_sxtb16_ror8(ww); /* (w0, w2), (w1, w3) */
                    a0 = __smlabb(we, g01, a0);
                    a1 = __smlabt(wo, g01, a1);
                    a2 = __smlatb(we, g23, a2);
                    a3 = __smlatt(wo, g23, a3);
                }
                tt_bwd_store(dst + c, (float)a0 * sigma, accumulate);
                tt_bwd_store(dst + c + 1, (float)a1 * sigma, accumulate);
                tt_bwd_store(dst + c + 2, (float)a2 * sigma, accumulate);
                tt_bwd_store(dst + c + 3, (float)a3 * sigma, accumulate);
            }
            for (; c < ch; c++) {
                dw_reference(conv, k, filter, out_dims, grad_q, sigma, accumulate, &next, iy, ix, c, dst);
            }
        }
    }
    return TT_OK;
}

/*
 * Weight-gradient sum, stride 1: for each output row whose input row iy is inside, the output columns whose input
 * columns are inside form one run, A contiguous and G strided by C_out. Four pixels at a time: SXTB16 and SADD16
 * widen A[ix..ix+3] + input_offset into (a0, a2) and (a1, a3) (lanes in [-255, 255]), and SMLABB / SMLATB multiply
 * them with G of the four pixels (each an int16 in the bottom half of a word). |(A - z) * G| <= 255 * 32767 < 2^23,
 * so int32 partial sums are exact over TT_WG_CHUNK = 256 pixels; longer runs add chunks into int64.
 */
#define TT_WG_CHUNK 256

int64_t tt_conv_s8_weight_grad_sum(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *saved,
                                   const tt_dims *out_dims, const int16_t *grad_q, int32_t o, int32_t ky, int32_t kx)
{
    if (conv->stride != 1) {
        return tt_weight_grad_sum_ref(conv, in_dims, saved, out_dims, grad_q, o, ky, kx);
    }
    const int32_t offset = conv->input_offset;
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t cs = out_dims->c;
    const int32_t dx = kx - conv->padding; /* ix = ox + dx */
    const int32_t ox0 = dx < 0 ? -dx : 0;
    const int32_t ox1 = in_dims->w - dx < out_dims->w ? in_dims->w - dx : out_dims->w;
    int64_t acc = 0;
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        const int32_t iy = oy - conv->padding + ky;
        if (iy < 0 || iy >= in_dims->h) {
            continue;
        }
        for (int32_t from = ox0; from < ox1; from += TT_WG_CHUNK) {
            const int32_t n = ox1 - from < TT_WG_CHUNK ? ox1 - from : TT_WG_CHUNK;
            const int8_t *a = saved + (size_t)iy * in_dims->w + from + dx;
            const int16_t *g = grad_q + ((size_t)oy * out_dims->w + from) * cs + o;
            int32_t s = 0, i = 0;
            for (; i + 4 <= n; i += 4, a += 4, g += 4 * cs) {
                const int32_t xw = tt_load4(a);
                const int32_t xe = __sadd16(__sxtb16(xw), offset2);       /* A0, A2 + offset */
                const int32_t xo = __sadd16(tt_sxtb16_ror8(xw), offset2); /* A1, A3 + offset */
                s = __smlabb(xe, g[0], s);
                s = __smlabb(xo, g[cs], s);
                s = __smlatb(xe, g[2 * cs], s);
                s = __smlatb(xo, g[3 * cs], s);
            }
            for (; i < n; i++, a++, g += cs) {
                s += ((int32_t)*a + offset) * (int32_t)*g;
            }
            acc += s;
        }
    }
    return acc;
}

/*
 * 1x1, stride 1 (input and output pixels coincide): per chunk of TT_WG_CHUNK pixels the activations are packed once
 * into one word per pixel pair p, p + 1 (A[p] + offset, A[p + 1] + offset). Then four outputs o..o + 3 at a time over
 * the chunk, their sums in registers: per pixel pair the words G[p, o..o + 1], G[p, o + 2..o + 3] and those of p + 1,
 * and SMLABB / SMLATB / SMLABT / SMLATT multiply each lane of G with the activation of its pixel (8 MACs per 13
 * instructions, where repacking G for SMLAD would cost as many). int32 partial sums stay exact over TT_WG_CHUNK pixels
 * (see above) and are added into int64.
 */
void tt_conv_s8_weight_grad_sums_1x1(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *saved,
                                     const tt_dims *out_dims, const int16_t *grad_q, int32_t o0, int32_t count,
                                     int64_t *sums)
{
    if (conv->stride != 1 || conv->padding != 0 || in_dims->h != out_dims->h || in_dims->w != out_dims->w) {
        for (int32_t j = 0; j < count; j++) {
            sums[j] = tt_conv_s8_weight_grad_sum(conv, in_dims, saved, out_dims, grad_q, o0 + j, 0, 0);
        }
        return;
    }
    const int32_t offset = conv->input_offset, cs = out_dims->c, pixels = out_dims->h * out_dims->w;
    int32_t pairs[TT_WG_CHUNK / 2];
    for (int32_t j = 0; j < count; j++) {
        sums[j] = 0;
    }
    for (int32_t p0 = 0; p0 + 2 <= pixels; p0 += TT_WG_CHUNK) {
        const int32_t np = (pixels - p0 < TT_WG_CHUNK ? pixels - p0 : TT_WG_CHUNK) / 2; /* pixel pairs */
        for (int32_t k = 0; k < np; k++) {
            const uint32_t a0 = (uint16_t)((int32_t)saved[p0 + 2 * k] + offset);
            const uint32_t a1 = (uint16_t)((int32_t)saved[p0 + 2 * k + 1] + offset);
            pairs[k] = (int32_t)(a0 | (a1 << 16));
        }
        const int16_t *g = grad_q + (size_t)p0 * cs + o0;
        int32_t j = 0;
        for (; j + 4 <= count; j += 4) {
            int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            const int16_t *gp = g + j;
            for (int32_t k = 0; k < np; k++, gp += 2 * (size_t)cs) {
                const int32_t a = pairs[k];
                const int32_t u0 = load_word(gp), u1 = load_word(gp + 2);           /* G[p, o..o + 3] */
                const int32_t v0 = load_word(gp + cs), v1 = load_word(gp + cs + 2); /* G[p + 1, o..o + 3] */
                s0 = __smlabb(a, u0, s0);
                s0 = __smlatb(a, v0, s0);
                s1 = __smlabt(a, u0, s1);
                s1 = __smlatt(a, v0, s1);
                s2 = __smlabb(a, u1, s2);
                s2 = __smlatb(a, v1, s2);
                s3 = __smlabt(a, u1, s3);
                s3 = __smlatt(a, v1, s3);
            }
            sums[j] += s0;
            sums[j + 1] += s1;
            sums[j + 2] += s2;
            sums[j + 3] += s3;
        }
        for (; j < count; j++) { /* the last one to three outputs */
            int32_t s = 0;
            const int16_t *gp = g + j;
            for (int32_t k = 0; k < np; k++, gp += 2 * (size_t)cs) {
                s = __smlabb(pairs[k], gp[0], s);
                s = __smlatb(pairs[k], gp[cs], s);
            }
            sums[j] += s;
        }
    }
    if (pixels % 2 != 0) { /* the last pixel */
        const int32_t a = (int32_t)saved[pixels - 1] + offset;
        const int16_t *g = grad_q + (size_t)(pixels - 1) * cs + o0;
        for (int32_t j = 0; j < count; j++) {
            sums[j] += a * (int32_t)g[j];
        }
    }
}
