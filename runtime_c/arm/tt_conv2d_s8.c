/*
 * trady runtime: dense convolution for Cortex-M with the DSP extension (see tt_kernels.h). The
 * firmware build (`trady firmware --kernels dsp`) uses this file instead of the reference kernel of
 * the same name; the results are bit-identical.
 *
 * Per output pixel the K*K*C_in input patch is gathered once into an int16 column with the input
 * offset added (x + input_offset in [-255, 255]); taps outside the image are stored as 0, which adds
 * nothing, as the reference skips them. Each output channel is then a dot product of its
 * [K, K, C_in] weights (contiguous) with the column, four taps per step: SXTB16 widens weight bytes
 * 0 and 2 (and, after a rotate by 8, bytes 1 and 3), so the column keeps each group of four taps in
 * the order t0, t2, t1, t3 and SMLAD takes two int16 pairs per instruction. Two output pixels and two output
 * channels at a time: each widened weight word serves both pixels' columns, and each channel's requantisation
 * set-up both pixels (tt_finish2_s8). The int32 sum is exact:
 * 127 * 255 * K * K * C_in < 2^31 (the compiler checks K*K*C_in < 66,000). Patches longer than
 * TT_CONV_COLUMN (on the stack) take the reference loop. Requantisation: tt_requantize_floor
 * (tt_arm_math.h), equal to tt_requantize.
 */
#include <arm_acle.h>
#include <stddef.h>

#include "tt_arm_math.h"
#include "tt_conv_common.h"
#include "tt_kernels.h"
#include "tt_requant.h"

#if !defined(__ARM_FEATURE_DSP) || !__ARM_FEATURE_DSP
#error "runtime_c/arm/ needs the DSP extension (Cortex-M4/M7); build the reference kernels instead"
#endif

#ifndef TT_CONV_COLUMN /* a test builds with a short column to run the reference path */
#define TT_CONV_COLUMN 576 /* taps of a 3x3 patch of 64 channels: 2 int16 columns + 1 int8, 2,880 B of stack */
#endif

int32_t tt_conv2d_s8_get_buffer_size(const tt_dims *in_dims, const tt_dims *filter_dims)
{
    (void)in_dims;
    (void)filter_dims;
    return 0;
}


/* acc plus the correction for the working slices of patched channels, if any (tt_conv_common.h). */
static inline int32_t patched(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in,
                              const int8_t *filter, int32_t k, int32_t o, int32_t y0, int32_t x0, int32_t acc)
{
    return conv->patch == NULL ? acc : tt_add_wrap(acc, tt_patch_delta_conv(conv->patch, in_dims, in, filter, k, o, y0,
                                                                            x0, conv->input_offset));
}

/* The reference loop, for patches longer than the column. */
static int32_t dot_reference(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in, const int8_t *pw,
                             int32_t k, int32_t y0, int32_t x0)
{
    const int32_t c_in = in_dims->c;
    int32_t acc = 0;
    for (int32_t ky = 0; ky < k; ky++) {
        const int32_t iy = y0 + ky;
        for (int32_t kx = 0; kx < k && iy >= 0 && iy < in_dims->h; kx++) {
            const int32_t ix = x0 + kx;
            if (ix < 0 || ix >= in_dims->w) {
                continue;
            }
            const int8_t *px = in + ((size_t)iy * in_dims->w + ix) * c_in;
            const int8_t *pwk = pw + ((size_t)ky * k + kx) * c_in;
            for (int32_t c = 0; c < c_in; c++) {
                acc += (int32_t)pwk[c] * ((int32_t)px[c] + conv->input_offset);
            }
        }
    }
    return acc;
}

/* Two int16 column entries as one word (lane 0 the first), and back. */
static inline int32_t load_pair(const int16_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store_pair(int16_t *p, int32_t v)
{
    memcpy(p, &v, sizeof v);
}

/*
 * The K x K x C_in patch of the output pixel whose window starts at (y0, x0), as int16 x + input_offset; groups
 * of four taps are stored as t0, t2, t1, t3, the tail in order. The int8 patch is copied first, with
 * x_zero = -input_offset (in [-128, 127]) for taps outside the image, which makes their column entries 0; then each
 * group of four bytes is widened with SXTB16 and SADD16 into the words (t0, t2) and (t1, t3), as the pointwise kernel
 * widens its input (lanes in [-255, 255]).
 */
static inline void gather(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in, int32_t k, int32_t y0,
                          int32_t x0, int32_t n, int16_t *column)
{
    const int32_t h = in_dims->h, w = in_dims->w, c_in = in_dims->c;
    const int32_t offset = conv->input_offset;
    const int8_t zero = (int8_t)(-offset);
    int8_t bytes[TT_CONV_COLUMN];
    int32_t t = 0;
    for (int32_t ky = 0; ky < k; ky++) {
        const int32_t iy = y0 + ky;
        for (int32_t kx = 0; kx < k; kx++) {
            const int32_t ix = x0 + kx;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                const int8_t *px = in + ((size_t)iy * w + ix) * c_in;
                for (int32_t c = 0; c < c_in; c++) {
                    bytes[t++] = px[c];
                }
            } else {
                for (int32_t c = 0; c < c_in; c++) {
                    bytes[t++] = zero;
                }
            }
        }
    }
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t n4 = n & ~3;
    for (int32_t i = 0; i < n4; i += 4) {
        const int32_t xw = tt_load4(bytes + i);
        store_pair(column + i, __sadd16(__sxtb16(xw), offset2));
        store_pair(column + i + 2, __sadd16(tt_sxtb16_ror8(xw), offset2));
    }
    for (int32_t i = n4; i < n; i++) {
        column[i] = (int16_t)((int32_t)bytes[i] + offset);
    }
}

/* Any shape: per pair of output pixels the two patches gathered into int16 columns (see the top of the file). */
static void __attribute__((noinline)) general(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in,
                                              const int8_t *filter, int32_t k, int32_t c_out, tt_out_quant q,
                                              const tt_dims *out_dims, int8_t *out)
{
    const int32_t c_in = in_dims->c;
    const int32_t n = k * k * c_in, n4 = n & ~3;
    int16_t column[2][TT_CONV_COLUMN]; /* the patches of two output pixels */
    const int32_t pixels = out_dims->h * out_dims->w;
    for (int32_t p = 0; p < pixels; p += 2) {
        const int32_t both = p + 1 < pixels; /* an odd pixel count ends with one pixel, computed as a pair */
        const int32_t p1 = both ? p + 1 : p;
        const int32_t y0 = (p / out_dims->w) * conv->stride - conv->padding;
        const int32_t x0 = (p % out_dims->w) * conv->stride - conv->padding;
        const int32_t y1 = (p1 / out_dims->w) * conv->stride - conv->padding;
        const int32_t x1 = (p1 % out_dims->w) * conv->stride - conv->padding;
        int8_t *po0 = out + (size_t)p * c_out, *po1 = out + (size_t)p1 * c_out;
        if (n > TT_CONV_COLUMN) {
            for (int32_t o = 0; o < c_out; o++) {
                const int8_t *pw = filter + (size_t)o * n;
                po0[o] = tt_finish_s8(patched(conv, in_dims, in, filter, k, o, y0, x0,
                                              dot_reference(conv, in_dims, in, pw, k, y0, x0)), o, q);
                po1[o] = tt_finish_s8(patched(conv, in_dims, in, filter, k, o, y1, x1,
                                              dot_reference(conv, in_dims, in, pw, k, y1, x1)), o, q);
            }
            continue;
        }
        gather(conv, in_dims, in, k, y0, x0, n, column[0]);
        gather(conv, in_dims, in, k, y1, x1, n, column[1]);
        const int16_t *c0 = column[0], *c1 = column[1];
        int32_t o = 0;
        for (; o + 2 <= c_out; o += 2) { /* 2 output channels x 2 pixels: each widened weight word serves both */
            const int8_t *pw0 = filter + (size_t)o * n, *pw1 = pw0 + n;
            int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
            for (int32_t i = 0; i < n4; i += 4) {
                const int32_t u = tt_load4(pw0 + i), v = tt_load4(pw1 + i);
                const int32_t ue = __sxtb16(u), uo = tt_sxtb16_ror8(u), ve = __sxtb16(v), vo = tt_sxtb16_ror8(v);
                const int32_t e0 = load_pair(c0 + i), d0 = load_pair(c0 + i + 2); /* taps t0, t2 and t1, t3 */
                const int32_t e1 = load_pair(c1 + i), d1 = load_pair(c1 + i + 2);
                a00 = __smlad(uo, d0, __smlad(ue, e0, a00));
                a01 = __smlad(vo, d0, __smlad(ve, e0, a01));
                a10 = __smlad(uo, d1, __smlad(ue, e1, a10));
                a11 = __smlad(vo, d1, __smlad(ve, e1, a11));
            }
            for (int32_t i = n4; i < n; i++) {
                a00 += (int32_t)pw0[i] * c0[i];
                a01 += (int32_t)pw1[i] * c0[i];
                a10 += (int32_t)pw0[i] * c1[i];
                a11 += (int32_t)pw1[i] * c1[i];
            }
            if (conv->patch != NULL) {
                a00 = patched(conv, in_dims, in, filter, k, o, y0, x0, a00);
                a01 = patched(conv, in_dims, in, filter, k, o + 1, y0, x0, a01);
                a10 = patched(conv, in_dims, in, filter, k, o, y1, x1, a10);
                a11 = patched(conv, in_dims, in, filter, k, o + 1, y1, x1, a11);
            }
            tt_finish2_s8(a00, a10, o, q, po0 + o, po1 + o);
            tt_finish2_s8(a01, a11, o + 1, q, po0 + o + 1, po1 + o + 1);
        }
        if (o < c_out) { /* an odd C_out: the last output channel of both pixels */
            const int8_t *pw0 = filter + (size_t)o * n;
            int32_t a00 = 0, a10 = 0;
            for (int32_t i = 0; i < n4; i += 4) {
                const int32_t u = tt_load4(pw0 + i);
                const int32_t ue = __sxtb16(u), uo = tt_sxtb16_ror8(u);
                a00 = __smlad(uo, load_pair(c0 + i + 2), __smlad(ue, load_pair(c0 + i), a00));
                a10 = __smlad(uo, load_pair(c1 + i + 2), __smlad(ue, load_pair(c1 + i), a10));
            }
            for (int32_t i = n4; i < n; i++) {
                a00 += (int32_t)pw0[i] * c0[i];
                a10 += (int32_t)pw0[i] * c1[i];
            }
            tt_finish2_s8(patched(conv, in_dims, in, filter, k, o, y0, x0, a00),
                          patched(conv, in_dims, in, filter, k, o, y1, x1, a10), o, q, po0 + o, po1 + o);
        }
    }
}

/*
 * The first layer's shape: 3x3, stride 2, padding 1, 3 input channels (27 taps), input width <= TT_FC_WIDTH.
 * Each input row is widened once into an int16 row x + input_offset with a zero column on both sides (and zero rows
 * above and below the image): the 3 x 3 window of output column ox in such a row is 9 contiguous entries from 6 * ox,
 * an even index, so 5 aligned words hold its taps (the tenth entry belongs to the next window or the zero tail). Three
 * row slots, each input row widened once (row iy in slot (iy + 1) % 3; an output row's three rows fall into distinct
 * slots, and the next output row reuses its last). The working weights of each output channel (the home row with the
 * slices of patched channels, so that no correction is left) are widened once per call into the same order, 5 words
 * per kernel row, the tenth lane 0, the two channels of a pair interleaved word by word (one LDRD per tap pair).
 * Then 2 output channels x 4 output pixels of a row per step: each weight pair is loaded once for the four pixels and
 * each row word once for the two channels (15 LDRD, 60 LDR and 120 SMLAD for 8 outputs, the 8 sums, the pair's
 * weights and one row word in registers: inline asm with fixed registers on the core, fc_dot4 in C elsewhere). The
 * sums start from the bias (SMLAD wraps as tt_add_wrap does). A pair of two channels that both take the prepared
 * requantisation (tt_rq_prepare: tt_rq_twice_biased, tt_ssat8_half) is finished in the same asm step, and a run of
 * such pairs is one asm loop; other pairs take tt_requantize_floor (fc_store4). The last 1-3 pixels of a row repeat
 * the last window (fc_dot4 in C). TT_FC_CHUNK channels are prepared at a time.
 */
#ifndef TT_FC_WIDTH
#define TT_FC_WIDTH 128 /* 3 rows of 3 * 130 + 2 int16: 2,352 B of stack */
#endif
#define TT_FC_CHUNK 16  /* output channels prepared at a time: 8 fc_pair, 1,248 B */
#define TT_FC_ROW (3 * (TT_FC_WIDTH + 2) + 2)
#define TT_FC_WORDS 30  /* per channel pair: 3 kernel rows x 5 words x 2 channels */

/* Two int16 lanes as one word: a in the low half. */
static inline int32_t fc_lanes(int32_t a, int32_t b)
{
    return (int32_t)(((uint32_t)(uint16_t)b << 16) | (uint16_t)a);
}

/* Input row iy of the image (or a zero row outside it) into `row`: entry 3 * (ix + 1) + c = x + offset, 0 around.
 * Four bytes per step: SXTB16 widens bytes 0, 2 and 1, 3, repacked in order (lanes x + offset in [-255, 255]). */
static void fc_widen_row(const tt_dims *in_dims, const int8_t *in, int32_t iy, int32_t offset, int16_t *row)
{
    const int32_t w = in_dims->w, len = 3 * (w + 2) + 2;
    if (iy < 0 || iy >= in_dims->h) {
        memset(row, 0, (size_t)len * sizeof row[0]);
        return;
    }
    const int8_t *px = in + (size_t)iy * w * 3;
    const int32_t offset2 = fc_lanes(offset, offset);
    row[0] = row[1] = row[2] = 0;
    int32_t i = 0;
    for (; i + 4 <= 3 * w; i += 4) {
        const int32_t xw = tt_load4(px + i);
        const uint32_t e = (uint32_t)__sxtb16(xw), o = (uint32_t)tt_sxtb16_ror8(xw); /* bytes 0, 2 and 1, 3 */
        store_pair(row + 3 + i, __sadd16((e & 0xffffu) | (o << 16), offset2));
        store_pair(row + 5 + i, __sadd16((e >> 16) | (o & 0xffff0000u), offset2));
    }
    for (; i < 3 * w; i++) {
        row[3 + i] = (int16_t)((int32_t)px[i] + offset);
    }
    for (int32_t i = 3 * w + 3; i < len; i++) {
        row[i] = 0;
    }
}

/* The sums of a channel pair (u, v) at four windows, from the biases: w = the pair's widened weights (u and v words
 * alternating), p = the first window's three rows, window k at entry d[k] of each (d0 = 0). s[2k] is u's sum at
 * window k, s[2k + 1] v's. */
static inline void fc_dot4(const int32_t *w, const int16_t *const p[3], int32_t d1, int32_t d2, int32_t d3,
                           int32_t bu, int32_t bv, int32_t s[8])
{
    int32_t s0 = bu, s1 = bv, s2 = bu, s3 = bv, s4 = bu, s5 = bv, s6 = bu, s7 = bv;
#pragma GCC unroll 3
    for (int32_t ky = 0; ky < 3; ky++) {
        const int16_t *r = p[ky];
#pragma GCC unroll 5
        for (int32_t j = 0; j < 5; j++) {
            const int32_t u = w[10 * ky + 2 * j], v = w[10 * ky + 2 * j + 1];
            int32_t x = load_pair(r + 2 * j);
            s0 = __smlad(u, x, s0);
            s1 = __smlad(v, x, s1);
            x = load_pair(r + d1 + 2 * j);
            s2 = __smlad(u, x, s2);
            s3 = __smlad(v, x, s3);
            x = load_pair(r + d2 + 2 * j);
            s4 = __smlad(u, x, s4);
            s5 = __smlad(v, x, s5);
            x = load_pair(r + d3 + 2 * j);
            s6 = __smlad(u, x, s6);
            s7 = __smlad(v, x, s7);
        }
    }
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
    s[4] = s4;
    s[5] = s5;
    s[6] = s6;
    s[7] = s7;
}

/* A channel pair of a chunk: what a step reads, together (the weights from one pointer, the rest with LDRD). */
typedef struct {
    int32_t w[TT_FC_WORDS];              /* widened weights, u and v words alternating */
    int32_t bias[2], m2[2], right[2];    /* u's and v's tt_rq */
    int32_t fast;                        /* both channels take the prepared form */
    int32_t dv;                          /* v's output index after u's: 1, or 0 for a chunk's lone last channel */
    int32_t run;                         /* fused pairs (fast, dv = 1) from this one on, for fc_steps4_fast */
} fc_pair;

/* One step of fc_dot4_adjacent: its inputs (w: a fc_pair's weights, p: the first window's three rows) and sums; for
 * fc_steps4_fast also u's output at the first window (po, v's at po + 1, window k's c_out * k further),
 * 1 + 2 * output_offset (kk) and the number of pairs (n). */
typedef struct {
    int32_t s[8];
    const int32_t *w;
    const int16_t *p[3];
    int8_t *po;
    int32_t c_out, kk, n;
} fc_step;

#if defined(__arm__)
/*
 * fc_dot4 at four adjacent windows (d = 6, 12, 18) on the core: one LDRD per weight pair and one LDR per row word,
 * all offsets immediate, the 8 sums (r1-r8), u, v (r9, r10), the row word (r11) and the two pointers (r12, lr) in
 * registers. In C, GCC 12 spills the row words or their addresses across the channel loop (2.3 instructions a MAC
 * instead of 1.6), and an asm with 13 register operands has no allocation at some -O levels; so fixed registers,
 * declared clobbered, and the step in memory at r0.
 */
#define FC_X(D, S0, S1)                                                                                                \
    "ldr r11, [lr, #(" D ")]\n\t"                                                                                      \
    "smlad " S0 ", r9, r11, " S0 "\n\t"                                                                                \
    "smlad " S1 ", r10, r11, " S1 "\n\t"
/* Tap pair J of kernel row KY: weights at w + 40 KY + 8 J, row word J of each window (window k 12 k bytes on). */
#define FC_TAP(KY, J)                                                                                                  \
    "ldrd r9, r10, [r12, #(40 * " #KY " + 8 * " #J ")]\n\t"                                                            \
    FC_X("4 * " #J, "r1", "r2") FC_X("12 + 4 * " #J, "r3", "r4") FC_X("24 + 4 * " #J, "r5", "r6")                      \
    FC_X("36 + 4 * " #J, "r7", "r8")
/* Tap pair 0 of kernel row 0 starts the sums from the biases: r7 and r8 hold bu and bv, read by the other six sums
 * before they take their own products. */
#define FC_X_FIRST(D, S0, S1)                                                                                          \
    "ldr r11, [lr, #(" D ")]\n\t"                                                                                      \
    "smlad " S0 ", r9, r11, r7\n\t"                                                                                    \
    "smlad " S1 ", r10, r11, r8\n\t"
#define FC_TAP_FIRST                                                                                                   \
    "ldrd r9, r10, [r12]\n\t"                                                                                          \
    FC_X_FIRST("0", "r1", "r2") FC_X_FIRST("12", "r3", "r4") FC_X_FIRST("24", "r5", "r6") FC_X("36", "r7", "r8")
#define FC_ROW(KY) FC_TAP(KY, 0) FC_TAP(KY, 1) FC_TAP(KY, 2) FC_TAP(KY, 3) FC_TAP(KY, 4)

#define FC_DOT_ASM                                                                                                     \
    "ldr r12, [r0, %[w]]\n\t"                                                                                          \
    "ldrd r7, r8, [r12, %[bias]]\n\t"                                                                                  \
    "ldr lr, [r0, %[p0]]\n\t"                                                                                          \
    FC_TAP_FIRST FC_TAP(0, 1) FC_TAP(0, 2) FC_TAP(0, 3) FC_TAP(0, 4)                                                   \
    "ldr lr, [r0, %[p1]]\n\t"                                                                                          \
    FC_ROW(1)                                                                                                          \
    "ldr lr, [r0, %[p2]]\n\t"                                                                                          \
    FC_ROW(2)
#define FC_OFFSETS                                                                                                     \
    [w] "i"(offsetof(fc_step, w)), [bias] "i"(offsetof(fc_pair, bias)), [p0] "i"(offsetof(fc_step, p)),               \
        [p1] "i"(offsetof(fc_step, p) + sizeof(const int16_t *)),                                                      \
        [p2] "i"(offsetof(fc_step, p) + 2 * sizeof(const int16_t *))
#define FC_CLOBBERS "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "memory"

static inline void fc_dot4_adjacent(fc_step *st)
{
    register fc_step *a __asm__("r0") = st;
    __asm__ volatile(FC_DOT_ASM "stmia r0, {r1-r8}" : : "r"(a), FC_OFFSETS : FC_CLOBBERS);
}

/* tt_rq_twice_biased and tt_ssat8_half of sum S by (m2, right) = (M, R), k in r12. */
#define FC_RQ(S, M, R)                                                                                                 \
    "smmlar " S ", " S ", " M ", " S "\n\t"                                                                            \
    "add " S ", " S ", " S ", asr #31\n\t"                                                                             \
    "asr " S ", " S ", " R "\n\t"                                                                                      \
    "add " S ", " S ", r12\n\t"                                                                                        \
    "ssat " S ", #8, " S ", asr #1\n\t"

/* fc_dot4_adjacent and the outputs of n >= 1 fused pairs, one after the other in the chunk (fc_store4's prepared
 * form, dv = 1): u's m2 and right in r9 and r11, v's in r10 and lr; then po and c_out in r9 and r10 for the stores.
 * The loop is in the asm, since the compiler keeps nothing in registers across it: w moves on by a fc_pair, po by
 * the pair's 2 outputs, and n counts down to 0. */
static inline void fc_steps4_fast(fc_step *st)
{
    register fc_step *a __asm__("r0") = st;
    __asm__ volatile("1:\n\t"
                     FC_DOT_ASM
                     "ldrd r9, r10, [r12, %[m2]]\n\t"
                     "ldrd r11, lr, [r12, %[right]]\n\t"
                     "ldr r12, [r0, %[kk]]\n\t"
                     FC_RQ("r1", "r9", "r11") FC_RQ("r2", "r10", "lr") FC_RQ("r3", "r9", "r11")
                     FC_RQ("r4", "r10", "lr") FC_RQ("r5", "r9", "r11") FC_RQ("r6", "r10", "lr")
                     FC_RQ("r7", "r9", "r11") FC_RQ("r8", "r10", "lr")
                     "ldrd r9, r10, [r0, %[po]]\n\t"
                     "strb r1, [r9]\n\t"
                     "strb r2, [r9, #1]\n\t"
                     "add r9, r9, r10\n\t"
                     "strb r3, [r9]\n\t"
                     "strb r4, [r9, #1]\n\t"
                     "add r9, r9, r10\n\t"
                     "strb r5, [r9]\n\t"
                     "strb r6, [r9, #1]\n\t"
                     "add r9, r9, r10\n\t"
                     "strb r7, [r9]\n\t"
                     "strb r8, [r9, #1]\n\t"
                     "ldr r12, [r0, %[w]]\n\t"
                     "add r12, r12, %[pair]\n\t"
                     "str r12, [r0, %[w]]\n\t"
                     "ldr r9, [r0, %[po]]\n\t"
                     "add r9, r9, #2\n\t"
                     "str r9, [r0, %[po]]\n\t"
                     "ldr r1, [r0, %[n]]\n\t"
                     "subs r1, r1, #1\n\t"
                     "str r1, [r0, %[n]]\n\t"
                     "bne 1b"
                     :
                     : "r"(a), FC_OFFSETS, [m2] "i"(offsetof(fc_pair, m2)), [right] "i"(offsetof(fc_pair, right)),
                       [kk] "i"(offsetof(fc_step, kk)), [po] "i"(offsetof(fc_step, po)),
                       [n] "i"(offsetof(fc_step, n)), [pair] "i"(sizeof(fc_pair))
                     : FC_CLOBBERS, "cc");
}
#else /* the host build of the tests */
static inline void fc_dot4_adjacent(fc_step *st)
{
    const fc_pair *c = (const fc_pair *)(const void *)st->w; /* w is the first member */
    fc_dot4(st->w, st->p, 6, 12, 18, c->bias[0], c->bias[1], st->s);
}

static inline void fc_steps4_fast(fc_step *st)
{
    for (; st->n > 0; st->n--, st->w += sizeof(fc_pair) / sizeof(st->w[0]), st->po += 2) {
        const fc_pair *c = (const fc_pair *)(const void *)st->w;
        const tt_rq cu = {.bias = 0, .m2 = c->m2[0], .right = c->right[0]};
        const tt_rq cv = {.bias = 0, .m2 = c->m2[1], .right = c->right[1]};
        fc_dot4_adjacent(st);
        for (int32_t k = 0; k < 4; k++) {
            st->po[k * st->c_out] = tt_ssat8_half(tt_rq_twice_biased(st->s[2 * k], cu, st->kk));
            st->po[k * st->c_out + 1] = tt_ssat8_half(tt_rq_twice_biased(st->s[2 * k + 1], cv, st->kk));
        }
    }
}
#endif


/* Outputs u (at po[k * c_out]) and v (at po[k * c_out + dv]) of the first `count` windows of a fc_dot4 step (the sums
 * include the bias); v first: for a lone channel dv == 0 and both values are the same. o: u's output channel. */
static inline void fc_store4(const int32_t s[8], int32_t count, int8_t *po, int32_t c_out, const fc_pair *c,
                             int32_t kk, tt_out_quant q, int32_t o)
{
    const int32_t dv = c->dv;
    if (c->fast) {
        const tt_rq cu = {.bias = 0, .m2 = c->m2[0], .right = c->right[0]};
        const tt_rq cv = {.bias = 0, .m2 = c->m2[1], .right = c->right[1]};
#pragma GCC unroll 4
        for (int32_t k = 0; k < count; k++) {
            po[k * c_out + dv] = tt_ssat8_half(tt_rq_twice_biased(s[2 * k + 1], cv, kk));
            po[k * c_out] = tt_ssat8_half(tt_rq_twice_biased(s[2 * k], cu, kk));
        }
        return;
    }
    const int32_t mu = q.multiplier[o], su = q.shift[o], mv = q.multiplier[o + dv], sv = q.shift[o + dv];
#pragma GCC unroll 4
    for (int32_t k = 0; k < count; k++) {
        po[k * c_out + dv] = tt_ssat8(tt_requantize_floor(s[2 * k + 1], mv, sv) + q.output_offset);
        po[k * c_out] = tt_ssat8(tt_requantize_floor(s[2 * k], mu, su) + q.output_offset);
    }
}

static void __attribute__((noinline)) first_conv(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in,
                                                 const int8_t *filter, int32_t c_out, tt_out_quant q,
                                                 const tt_dims *out_dims, int8_t *out)
{
    const int32_t offset = conv->input_offset, ho = out_dims->h, wo = out_dims->w;
    const int32_t kk = 1 + 2 * q.output_offset;
    int16_t rows[3][TT_FC_ROW];
    fc_pair pairs[TT_FC_CHUNK / 2];
    for (int32_t o0 = 0; o0 < c_out; o0 += TT_FC_CHUNK) {
        const int32_t n = c_out - o0 < TT_FC_CHUNK ? c_out - o0 : TT_FC_CHUNK, np = (n + 1) / 2;
        for (int32_t i = 0; i < 2 * np; i++) { /* an odd chunk ends with its last channel twice, as a pair */
            const int32_t o = o0 + (i < n ? i : n - 1);
            int8_t pw[27]; /* the working weights of output o: the home row with the patched channels' slices */
            memcpy(pw, filter + (size_t)o * 27, sizeof pw);
            for (int32_t j = 0; conv->patch != NULL && j < conv->patch->count; j++) {
                const int32_t c = conv->patch->channel[j];
                const int8_t *sl = tt_patch_slice(conv->patch, j) + (size_t)o * 9;
                for (int32_t t = 0; t < 9; t++) {
                    pw[3 * t + c] = sl[t];
                }
            }
            fc_pair *pr = &pairs[i / 2];
            int32_t *wi = pr->w + (i & 1);
            for (int32_t ky = 0; ky < 3; ky++) {
                const int8_t *t = pw + 9 * ky;
                for (int32_t j = 0; j < 4; j++) {
                    wi[10 * ky + 2 * j] = fc_lanes(t[2 * j], t[2 * j + 1]);
                }
                wi[10 * ky + 8] = fc_lanes(t[8], 0);
            }
            const tt_rq c = tt_rq_prepare(q.bias[o], q.multiplier[o], q.shift[o]);
            pr->bias[i & 1] = c.bias;
            pr->m2[i & 1] = c.m2;
            pr->right[i & 1] = c.right;
            if (i & 1) {
                pr->fast = pr->right[0] != 0 && pr->right[1] != 0;
                pr->dv = i < n ? 1 : 0;
            }
        }
        for (int32_t i = np - 1; i >= 0; i--) {
            pairs[i].run = pairs[i].fast && pairs[i].dv ? 1 + (i + 1 < np ? pairs[i + 1].run : 0) : 0;
        }
        int32_t held[3] = {-2, -2, -2}; /* the input row in each slot (-2: none; -1 is the zero row above) */
        for (int32_t oy = 0; oy < ho; oy++) {
            const int16_t *r[3];
            for (int32_t ky = 0; ky < 3; ky++) {
                const int32_t iy = 2 * oy - 1 + ky, slot = (iy + 1) % 3;
                if (held[slot] != iy) {
                    fc_widen_row(in_dims, in, iy, offset, rows[slot]);
                    held[slot] = iy;
                }
                r[ky] = rows[slot];
            }
            int8_t *po = out + (size_t)oy * wo * c_out + o0;
            int32_t ox = 0;
            for (; ox + 4 <= wo; ox += 4, po += 4 * c_out) {
                fc_step st = {.p = {r[0] + 6 * ox, r[1] + 6 * ox, r[2] + 6 * ox}, .c_out = c_out, .kk = kk};
                for (int32_t i = 0; i < np;) {
                    st.w = pairs[i].w;
                    st.po = po + 2 * i;
                    if (pairs[i].run > 0) {
                        st.n = pairs[i].run;
                        fc_steps4_fast(&st);
                        i += pairs[i].run;
                    } else {
                        fc_dot4_adjacent(&st);
                        fc_store4(st.s, 4, st.po, c_out, &pairs[i], kk, q, o0 + 2 * i);
                        i++;
                    }
                }
            }
            if (ox < wo) { /* the last pixels of a row: the missing windows repeat the last one */
                const int16_t *const p[3] = {r[0] + 6 * ox, r[1] + 6 * ox, r[2] + 6 * ox};
                const int32_t count = wo - ox;
                for (int32_t i = 0; i < np; i++) {
                    int32_t s[8];
                    fc_dot4(pairs[i].w, p, 6 * (count > 1), 6 * (count > 2 ? 2 : count - 1), 6 * (count - 1),
                            pairs[i].bias[0], pairs[i].bias[1], s);
                    fc_store4(s, count, po + 2 * i, c_out, &pairs[i], kk, q, o0 + 2 * i);
                }
            }
        }
    }
}

tt_status tt_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv, const tt_per_channel_quant *quant,
                       const tt_dims *in_dims, const int8_t *in, const tt_dims *filter_dims, const int8_t *filter,
                       const int32_t *bias, const tt_dims *out_dims, int8_t *out)
{
    (void)ctx;
    const tt_status st = tt_check_conv_args(TT_CONV_DENSE, conv, quant, in_dims, in, filter_dims, filter, bias, out_dims,
                                            out);
    if (st != TT_OK) {
        return st;
    }
    const int32_t k = filter_dims->h;
    const tt_out_quant q = {.bias = bias, .multiplier = quant->multiplier, .shift = quant->shift,
                            .output_offset = conv->output_offset};
    if (k == 3 && in_dims->c == 3 && conv->stride == 2 && conv->padding == 1 && in_dims->w <= TT_FC_WIDTH) {
        first_conv(conv, in_dims, in, filter, filter_dims->n, q, out_dims, out);
    } else {
        general(conv, in_dims, in, filter, k, filter_dims->n, q, out_dims, out);
    }
    return TT_OK;
}
