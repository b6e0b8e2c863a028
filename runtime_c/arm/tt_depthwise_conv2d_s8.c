/*
 * trady runtime: depthwise convolution (multiplier 1) for Cortex-M with the DSP extension (see
 * tt_kernels.h). The firmware build (`trady firmware --kernels dsp`) uses this file instead of the
 * reference kernel of the same name; the results are bit-identical: the same taps summed exactly mod 2^32
 * (padding taps add 0 in effect), the same requantisation.
 *
 * Two methods, both four channels (one word of HWC input) at a time:
 * - the band (K in [2, 7], stride 1 or 2, where it fits its 3 KB stack buffer: every layer of the models we
 *   ship): the group's input rows are copied once into one int16 plane per channel, padded with -input_offset
 *   (see "The band" below), so that SMLAD multiplies two taps of one channel at once and every pixel sums all
 *   K x K taps from bias + input_offset * sum(w); one channel at a time then sweeps its output rows, four pixels
 *   a step with the band and weight words in registers (K = 3: inline assembly on the cores, 65 to 71
 *   instructions per 4 pixels = 1.8 to 2 per MAC with the requantisation), and requantises each with the
 *   channel's prepared form (tt_rq_prepare: tt_rq_twice_biased and tt_ssat8_half, SMMLAR, two adds, a shift
 *   and SSAT) or tt_requantize_floor for a channel the prepared form does not take;
 * - the window path (wider planes, K = 1, stride > 2): the group's K x K weights (the working slices of patched
 *   channels, tt_patched_weights) are widened into a stack buffer: SXTB16 puts channels 0 and 2 (and, rotated by
 *   8, 1 and 3) into int16 lanes, and SMLABB / SMLATT multiply-accumulate the bottom / top lanes into one
 *   accumulator per channel; interior pixels (the whole window inside the image) start from bias +
 *   input_offset * sum(w) and sum w * x over the unrolled taps (3x3, 5x5, 7x7) without bounds checks; border
 *   pixels start from the bias and sum w * (x + input_offset) over the taps inside the image (SADD16 adds the
 *   offset to both lanes: [-255, 255], no lane overflow); requantisation as above where all four channels take
 *   the prepared form, else tt_requantize_floor.
 * Channels past the last group of four, and K > TT_DW_MAX_K, go one channel at a time as the reference does.
 * |sum| <= 127 * 255 * K * K before the bias, far below 2^31 for K <= 64. Stack: the band's 3,072 bytes and
 * 816 bytes of weight pairs (planes_band), or 400 bytes of widened weights (the window path).
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

#ifndef TT_DW_MAX_K
#define TT_DW_MAX_K 7 /* largest K of the band and the widened weight buffer; larger K per channel */
#endif
#if TT_DW_MAX_K > 15
#error "TT_DW_MAX_K: the sums of a channel's weights are kept in int16 lanes (|sum| <= 128 K^2)"
#endif

/* What every pass over the plane needs. */
typedef struct {
    const int8_t *in;
    int8_t *out;
    int32_t h, w, ch, k, stride, padding, out_h, out_w, input_offset, offset2;
    int32_t ox_lo, ox_hi; /* output columns whose windows are inside the image: [ox_lo, ox_hi) */
    int32_t oy_lo, oy_hi;
    int32_t span;         /* words per band row */
    int32_t band_rows;    /* band rows per channel: H + 2 padding (the whole plane) or K + 1 (a ring); 0: none */
    int whole;            /* the band holds the whole plane */
} dw_geom;

/* One group of four channels: widened weights (tap t: wb[2t] = channels 0, 2 and wb[2t + 1] = 1, 3), the
 * accumulator starts of interior and border pixels, and the requantisation of each channel. */
typedef struct {
    int32_t wb[2 * TT_DW_MAX_K * TT_DW_MAX_K];
    int32_t init[4], bias[4];
    tt_rq rq[4];                     /* RQ_FAST: tt_rq_twice_biased (the accumulators hold the bias) */
    int32_t k2;                      /* 1 + 2 * output_offset */
    int mode;                        /* RQ_FAST or RQ_FLOOR */
    int32_t multiplier[4], shift[4]; /* RQ_FLOOR: tt_requantize_floor + output_offset */
    int32_t output_offset;
} dw_group;

/* How a group requantises: all four channels by the prepared form of tt_arm_math.h (tt_rq_prepare took the fast
 * form: multiplier >= 2^30, shift <= -2), or (any other channel among the four) tt_requantize_floor. */
enum { RQ_FAST, RQ_FLOOR };

/* Hides *p's value from the optimiser (no instruction). */
static inline __attribute__((always_inline)) void tt_opaque_ptr(const int8_t **p)
{
    __asm__("" : "+r"(*p));
}

/* The K x K taps of an interior pixel whose window starts at p (channel 0 of the group) into a[0..3], without the
 * input offset; k is a constant at the unrolled call sites. */
static inline __attribute__((always_inline)) void taps_inner(const int8_t *p, const int32_t *wb, int32_t ch,
                                                             int32_t row, int32_t k, int32_t a[4])
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
#pragma GCC unroll 7
    for (int32_t ky = 0; ky < k; ky++) {
        const int8_t *px = p;
        p += row;
        tt_opaque_ptr(&p); /* the next row from this one: no hoisted k^2 offsets (they would spill) */
        const int32_t *wt = wb + 2 * ky * k;
#pragma GCC unroll 7
        for (int32_t kx = 0; kx < k; kx++) {
            const int32_t xw = tt_load4(px + (size_t)kx * ch);
            const int32_t xe = __sxtb16(xw), xo = tt_sxtb16_ror8(xw);
            a0 = __smlabb(wt[2 * kx], xe, a0);
            a2 = __smlatt(wt[2 * kx], xe, a2);
            a1 = __smlabb(wt[2 * kx + 1], xo, a1);
            a3 = __smlatt(wt[2 * kx + 1], xo, a3);
        }
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

/* Channel j's int8 output from its accumulator (bias included), for the group's mode. */
static inline __attribute__((always_inline)) int8_t finish1(const dw_group *g, int32_t a, int j)
{
    if (g->mode == RQ_FAST) {
        return tt_ssat8_half(tt_rq_twice_biased(a, g->rq[j], g->k2));
    }
    return tt_ssat8(tt_requantize_floor(a, g->multiplier[j], g->shift[j]) + g->output_offset);
}

/* Output pixel (the accumulators of its four channels, bias included) to out[0..3]. */
static inline __attribute__((always_inline)) void finish4(const dw_group *g, int32_t a0, int32_t a1, int32_t a2,
                                                          int32_t a3, int8_t *out)
{
    if (g->mode == RQ_FAST) { /* the common case first, without the mode tests of finish1 */
        const int32_t k2 = g->k2;
        const int32_t t0 = tt_rq_twice_biased(a0, g->rq[0], k2), t1 = tt_rq_twice_biased(a1, g->rq[1], k2);
        const int32_t t2 = tt_rq_twice_biased(a2, g->rq[2], k2), t3 = tt_rq_twice_biased(a3, g->rq[3], k2);
        out[0] = tt_ssat8_half(t0); /* all four before the stores: an int8 store may alias *g */
        out[1] = tt_ssat8_half(t1);
        out[2] = tt_ssat8_half(t2);
        out[3] = tt_ssat8_half(t3);
    } else {
        out[0] = finish1(g, a0, 0);
        out[1] = finish1(g, a1, 1);
        out[2] = finish1(g, a2, 2);
        out[3] = finish1(g, a3, 3);
    }
}

/* Interior pixels ox_lo..ox_hi-1 of output row oy, for a constant k. */
static inline __attribute__((always_inline)) void row_inner(const dw_geom *d, const dw_group *g, int32_t c,
                                                            int32_t oy, int32_t k)
{
    const int32_t ch = d->ch;
    const int32_t row = d->w * ch, step = d->stride * ch;
    const int32_t y0 = oy * d->stride - d->padding, x0 = d->ox_lo * d->stride - d->padding;
    const int8_t *p = d->in + ((size_t)y0 * d->w + x0) * ch + c;
    int8_t *o = d->out + ((size_t)oy * d->out_w + d->ox_lo) * ch + c;
    for (int32_t ox = d->ox_lo; ox < d->ox_hi; ox++, p += step, o += ch) {
        int32_t a[4] = {g->init[0], g->init[1], g->init[2], g->init[3]};
        taps_inner(p, g->wb, ch, row, k, a);
        finish4(g, a[0], a[1], a[2], a[3], o);
    }
}

/* One output pixel with some taps outside the image (out of line: the border is a small share of most planes). */
static __attribute__((noinline)) void pixel_border(const dw_geom *d, const dw_group *g, int32_t c, int32_t oy,
                                                   int32_t ox)
{
    const int32_t k = d->k, ch = d->ch;
    const int32_t y0 = oy * d->stride - d->padding, x0 = ox * d->stride - d->padding;
    const int32_t ky_lo = y0 < 0 ? -y0 : 0, ky_hi = y0 + k > d->h ? d->h - y0 : k;
    const int32_t kx_lo = x0 < 0 ? -x0 : 0, kx_hi = x0 + k > d->w ? d->w - x0 : k;
    int32_t a[4] = {g->bias[0], g->bias[1], g->bias[2], g->bias[3]};
    for (int32_t ky = ky_lo; ky < ky_hi; ky++) {
        const int8_t *px = d->in + ((size_t)(y0 + ky) * d->w + x0 + kx_lo) * ch + c;
        const int32_t *wt = g->wb + 2 * (ky * k + kx_lo);
        for (int32_t kx = kx_lo; kx < kx_hi; kx++, px += ch, wt += 2) {
            const int32_t xw = tt_load4(px);
            const int32_t xe = __sadd16(__sxtb16(xw), d->offset2);       /* x0, x2 */
            const int32_t xo = __sadd16(tt_sxtb16_ror8(xw), d->offset2); /* x1, x3 */
            a[0] = __smlabb(wt[0], xe, a[0]);
            a[2] = __smlatt(wt[0], xe, a[2]);
            a[1] = __smlabb(wt[1], xo, a[1]);
            a[3] = __smlatt(wt[1], xo, a[3]);
        }
    }
    finish4(g, a[0], a[1], a[2], a[3], d->out + ((size_t)oy * d->out_w + ox) * ch + c);
}

/* Interior columns of row oy for any k (1, 2, 4, 6, ...: no unrolled variant). */
static __attribute__((noinline)) void row_inner_any(const dw_geom *d, const dw_group *g, int32_t c, int32_t oy)
{
    row_inner(d, g, c, oy, d->k);
}

static __attribute__((noinline)) void row_inner3(const dw_geom *d, const dw_group *g, int32_t c, int32_t oy)
{
    row_inner(d, g, c, oy, 3);
}

static __attribute__((noinline)) void row_inner5(const dw_geom *d, const dw_group *g, int32_t c, int32_t oy)
{
    row_inner(d, g, c, oy, 5);
}

static __attribute__((noinline)) void row_inner7(const dw_geom *d, const dw_group *g, int32_t c, int32_t oy)
{
    row_inner(d, g, c, oy, 7);
}

/*
 * The band: for a group of four channels, each channel's input rows as int16 values, two columns to a word (the
 * even column in the bottom half), with `padding` columns of the value -input_offset on both sides and rows of it
 * above and below the image (the accumulators start from bias + input_offset * sum(w), so a padding tap adds
 * w * (-input_offset) and cancels its share: every output pixel sums all K x K taps, no border case). Each row has
 * span words: at least W + 2 padding + 1 halves, since a pair of pixels reads one half past its windows.
 * The band holds the whole padded plane when it fits (band row iy + padding), else a ring of K rows (row iy in
 * slot iy mod K, copied once, in ascending order) and one row of padding (slot K) for the rows outside the image.
 *
 * With the taps of one channel adjacent in a word, SMLAD multiplies two taps at once. For window row ky with
 * weights w[0..K-1], n = K / 2, and the band words X[j] = (x[2j], x[2j + 1]) from the window's first column:
 *   E[j] = (w[2j], w[2j + 1]) and O[j + 1] = (w[2j + 1], w[2j + 2]) for j < n (w[K] = 0), kept side by side;
 *   pixel ox (window from an even column):  a0 += sum_{j<n} SMLAD(E[j], X[j])     [+ SMLATB(O[n], X[n]) for odd K]
 *   pixel ox + 1 (stride 1):                a1 += SMLABT(E[0], X[0]) + sum_{j<n} SMLAD(O[j + 1], X[j + 1]);
 * stride 2 windows all start at even columns (word ox). Four pixels at a time share the words of their windows:
 * per row and step j one LDRD of (E[j], O[j + 1]), one new band word and four SMLAD (K = 3, stride 1: 14
 * instructions per row for 12 MACs). One channel at a time keeps its requantisation constants (tt_rq) in
 * registers; the band's int16 lanes hold |x| <= 128, so no SMLAD lane or sum overflows what int32 holds exactly.
 */
#ifndef TT_DW_BAND_WORDS
#define TT_DW_BAND_WORDS 768 /* 3,072 bytes on the stack: 4 (K + 1 or H + 2 padding) rows of span words */
#endif

/* One channel of a group: its weight pairs and requantisation. */
typedef struct {
    int32_t eo[TT_DW_MAX_K][TT_DW_MAX_K / 2][2]; /* (E[j], O[j + 1]) of window row ky (see above) */
    int32_t init;                                /* bias + input_offset * sum(w), wrapping */
    tt_rq rq;                                    /* fast channels: tt_rq_twice_biased */
    int32_t k2;                                  /* 1 + 2 * output_offset */
    int32_t multiplier, shift, output_offset;    /* the others: tt_requantize_floor + output_offset */
} dw_chan;

/* Channel output from its accumulator (bias included): the prepared form (fast) or tt_requantize_floor. */
static inline __attribute__((always_inline)) int8_t chan_finish(const dw_chan *cw, int32_t a, tt_rq rq, int32_t k2,
                                                                int fast)
{
    if (fast) {
        return tt_ssat8_half(tt_rq_twice_biased(a, rq, k2));
    }
    return tt_ssat8(tt_requantize_floor(a, cw->multiplier, cw->shift) + cw->output_offset);
}

/*
 * base[i], base[i + 1] with one LDRD (base 4-byte aligned; i constant at the unrolled sites: an immediate offset). GCC
 * 12 splits 64-bit loads into two LDR for the Cortex-M7, and an asm memory operand makes it hoist and spill every
 * address; the asm reads only the band and the weights, which the row functions never write (their stores are
 * the int8 outputs), so it needs no memory operand.
 */
static inline __attribute__((always_inline)) void load2(const int32_t *base, int32_t i, int32_t *lo, int32_t *hi)
{
#if defined(__arm__)
    if (__builtin_constant_p(i) && i >= 0 && i < 255) {
        int32_t a, b;
        __asm__("ldrd %0, %1, [%2, #%c3]" : "=r"(a), "=r"(b) : "r"(base), "i"(4 * i));
        *lo = a;
        *hi = b;
        return;
    }
#endif
    *lo = base[i];
    *hi = base[i + 1];
}

/* The weight pair (E[j], O[j + 1]) of a row: from memory by load2, or (regs) plain loads of a local array that the
 * compiler keeps in registers. */
static inline __attribute__((always_inline)) void load_eo(const int32_t (*eo)[2], int32_t j, int regs, int32_t *e,
                                                          int32_t *o)
{
    if (regs) {
        *e = eo[j][0];
        *o = eo[j][1];
    } else {
        load2(&eo[0][0], 2 * j, e, o); /* the pairs of a row are contiguous */
    }
}

/*
 * One window row of four pixels (q = 0..3) into a[q]: x is the band word of pixel 0's window, eo the row's weight
 * pairs (regs: a local copy kept in registers); k and stride are constants at the unrolled sites (rows_any,
 * rows_floor: d->k and d->stride). Stride 1: pixels 2q' and 2q' + 1 are a pair from word q'; stride 2: pixel q
 * from word q. The band words are loaded as the steps reach them (a window of three or four words in registers).
 */
static inline __attribute__((always_inline)) void row_quad(const int32_t *x, const int32_t (*eo)[2], int regs,
                                                           int32_t k, int32_t stride, int32_t a[4])
{
    const int32_t n = k / 2;
    int32_t s0 = a[0], s1 = a[1], s2 = a[2], s3 = a[3];
    int32_t e, o = 0, x0, x1, x2, x3 = 0;
    load2(x, 0, &x0, &x1);
    if (stride == 1) {
        load_eo(eo, 0, regs, &e, &o);
        s1 = __smlabt(e, x0, s1);
        s3 = __smlabt(e, x1, s3);
#pragma GCC unroll 3
        for (int32_t j = 0; j < n; j++) {
            if (j > 0) {
                load_eo(eo, j, regs, &e, &o);
            }
            x2 = x[j + 2];
            s0 = __smlad(e, x0, s0);
            s1 = __smlad(o, x1, s1);
            s2 = __smlad(e, x1, s2);
            s3 = __smlad(o, x2, s3);
            x0 = x1;
            x1 = x2;
        }
        if (k & 1) { /* x0, x1 = X[n], X[n + 1] */
            s0 = __smlatb(o, x0, s0);
            s2 = __smlatb(o, x1, s2);
        }
    } else {
        x2 = x[2];
#pragma GCC unroll 3
        for (int32_t j = 0; j < n; j++) {
            load_eo(eo, j, regs, &e, &o);
            x3 = x[j + 3];
            s0 = __smlad(e, x0, s0);
            s1 = __smlad(e, x1, s1);
            s2 = __smlad(e, x2, s2);
            s3 = __smlad(e, x3, s3);
            x0 = x1;
            x1 = x2;
            x2 = x3;
        }
        if (k & 1) { /* x0..x3 = X[n..n + 3] */
            x3 = x[n + 3];
            s0 = __smlatb(o, x0, s0);
            s1 = __smlatb(o, x1, s1);
            s2 = __smlatb(o, x2, s2);
            s3 = __smlatb(o, x3, s3);
        }
    }
    a[0] = s0;
    a[1] = s1;
    a[2] = s2;
    a[3] = s3;
}

/* One window row of a pair of pixels (stride 1, or stride 2 from words 0 and 1), into a[0..1]; as row_quad. */
static inline __attribute__((always_inline)) void row_pair(const int32_t *x, const int32_t (*eo)[2], int regs,
                                                           int32_t k, int32_t stride, int32_t a[2])
{
    const int32_t n = k / 2;
    int32_t s0 = a[0], s1 = a[1];
    int32_t e, o = 0;
    if (stride == 1) {
        int32_t e0, o1;
        load_eo(eo, 0, regs, &e0, &o1);
        s1 = __smlabt(e0, x[0], s1);
    }
#pragma GCC unroll 3
    for (int32_t j = 0; j < n; j++) {
        load_eo(eo, j, regs, &e, &o);
        s0 = __smlad(e, x[j], s0);
        s1 = __smlad(stride == 1 ? o : e, x[j + 1], s1);
    }
    if (k & 1) {
        s0 = __smlatb(o, x[n], s0);
        if (stride == 2) {
            s1 = __smlatb(o, x[n + 1], s1);
        }
    }
    a[0] = s0;
    a[1] = s1;
}

/* One window row of a single pixel (the last of an odd row, its window from an even column) into *a0. */
static inline __attribute__((always_inline)) void row_one(const int32_t *x, const int32_t (*eo)[2], int regs,
                                                          int32_t k, int32_t *a0)
{
    const int32_t n = k / 2;
    int32_t s0 = *a0, e, o = 0;
#pragma GCC unroll 3
    for (int32_t j = 0; j < n; j++) {
        load_eo(eo, j, regs, &e, &o);
        s0 = __smlad(e, x[j], s0);
    }
    if (k & 1) {
        s0 = __smlatb(o, x[n], s0);
    }
    *a0 = s0;
}

#if defined(__arm__)
/*
 * The four-pixel steps of one output row for K = 3 (row_quad and the prepared requantisation, as chan_rows computes
 * them) in assembly: GCC keeps too few of the 6 weights, 3 row pointers, 4 sums and the requantisation constants
 * in registers and spills about 20 instructions per step; here the weights and constants come from c[] by LDRD as
 * they are needed (65 instructions per 4 pixels at stride 1, 71 at stride 2). c: the pairs (E[0], O[1]) of rows
 * 0..2, init, m2, right, k2, ch and the end of the steps' output (op + 4 ch per step, at least one step).
 * Registers: sums a0..a3 r4 r5 r6 r8, band words r9 r10, (E[0], O[1]) r11 lr, c r12.
 */
/* stride 1: pixels 0, 1 from word 0 and 2, 3 from word 1 (words 0..2) */
#define TT_DW_ROW3S1(p, off)                                                                                    \
    "ldrd r11, lr, [r12, #" #off "]\n\t"                                                                        \
    "ldrd r9, r10, [" p "], #8\n\t"                                                                             \
    "smlad r4, r11, r9, r4\n\t"                                                                                 \
    "smlabt r5, r11, r9, r5\n\t"                                                                                \
    "smlad r6, r11, r10, r6\n\t"                                                                                \
    "smlabt r8, r11, r10, r8\n\t"                                                                               \
    "smlatb r4, lr, r10, r4\n\t"                                                                                \
    "smlad r5, lr, r10, r5\n\t"                                                                                 \
    "ldr r9, [" p "]\n\t"                                                                                       \
    "smlatb r6, lr, r9, r6\n\t"                                                                                 \
    "smlad r8, lr, r9, r8\n\t"
/* stride 2: pixel q from word q (words 0..4) */
#define TT_DW_ROW3S2(p, off)                                                                                    \
    "ldrd r11, lr, [r12, #" #off "]\n\t"                                                                        \
    "ldrd r9, r10, [" p "], #16\n\t"                                                                            \
    "smlad r4, r11, r9, r4\n\t"                                                                                 \
    "smlatb r4, lr, r10, r4\n\t"                                                                                \
    "smlad r5, r11, r10, r5\n\t"                                                                                \
    "ldrd r9, r10, [" p ", #-8]\n\t"                                                                            \
    "smlatb r5, lr, r9, r5\n\t"                                                                                 \
    "smlad r6, r11, r9, r6\n\t"                                                                                 \
    "smlatb r6, lr, r10, r6\n\t"                                                                                \
    "smlad r8, r11, r10, r8\n\t"                                                                                \
    "ldr r9, [" p "]\n\t"                                                                                       \
    "smlatb r8, lr, r9, r8\n\t"
#define TT_DW_RQ(a)                                                                                             \
    "smmlar " a ", " a ", r9, " a "\n\t"                                                                        \
    "add " a ", " a ", " a ", asr #31\n\t"                                                                      \
    "asr " a ", " a ", r10\n\t"                                                                                 \
    "add " a ", " a ", r11\n\t"                                                                                 \
    "ssat " a ", #8, " a ", asr #1\n\t"
#define TT_DW_QUADS3(row)                                                                                       \
    "1:\n\t"                                                                                                    \
    "ldr r4, [r12, #24]\n\t" /* init */                                                                         \
    "mov r5, r4\n\t"                                                                                            \
    "mov r6, r4\n\t"                                                                                            \
    "mov r8, r4\n\t" row("r0", 0) row("r1", 8) row("r2", 16)                                                    \
    "ldrd r9, r10, [r12, #28]\n\t" /* m2, right */                                                              \
    "ldr r11, [r12, #36]\n\t"      /* k2 */                                                                     \
    TT_DW_RQ("r4") TT_DW_RQ("r5") TT_DW_RQ("r6") TT_DW_RQ("r8")                                                 \
    "ldrd r9, r10, [r12, #40]\n\t" /* ch, end */                                                                \
    "strb r4, [r3]\n\t"                                                                                         \
    "strb r5, [r3, r9]\n\t"                                                                                     \
    "add r3, r3, r9, lsl #1\n\t"                                                                                \
    "strb r6, [r3]\n\t"                                                                                         \
    "strb r8, [r3, r9]\n\t"                                                                                     \
    "add r3, r3, r9, lsl #1\n\t"                                                                                \
    "cmp r3, r10\n\t"                                                                                           \
    "bne 1b\n\t"

static inline __attribute__((always_inline)) void quads3(const int32_t **pp0, const int32_t **pp1,
                                                         const int32_t **pp2, int8_t **pop, const int32_t c[12],
                                                         int32_t stride)
{
    register const int32_t *p0 __asm__("r0") = *pp0;
    register const int32_t *p1 __asm__("r1") = *pp1;
    register const int32_t *p2 __asm__("r2") = *pp2;
    register int8_t *op __asm__("r3") = *pop;
    register const int32_t *cr __asm__("r12") = c;
    if (stride == 1) {
        __asm__ volatile(TT_DW_QUADS3(TT_DW_ROW3S1)
                         : "+r"(p0), "+r"(p1), "+r"(p2), "+r"(op)
                         : "r"(cr)
                         : "r4", "r5", "r6", "r8", "r9", "r10", "r11", "lr", "cc", "memory");
    } else {
        __asm__ volatile(TT_DW_QUADS3(TT_DW_ROW3S2)
                         : "+r"(p0), "+r"(p1), "+r"(p2), "+r"(op)
                         : "r"(cr)
                         : "r4", "r5", "r6", "r8", "r9", "r10", "r11", "lr", "cc", "memory");
    }
    *pp0 = p0;
    *pp1 = p1;
    *pp2 = p2;
    *pop = op;
}
#undef TT_DW_ROW3S1
#undef TT_DW_ROW3S2
#undef TT_DW_RQ
#undef TT_DW_QUADS3
#endif

/*
 * Output rows 0..n_rows-1 of one channel into o (HWC: one byte every ch): rows[ky] is the band row of window
 * row ky for output row 0, row_step the words from one output row's band rows to the next (the whole plane;
 * ring rows come one at a time). k and stride are constants at the unrolled call sites, or d->k and
 * d->stride. K = 3 keeps its six weight words in locals (the int8 stores could alias *cw).
 */
static inline __attribute__((always_inline)) void chan_rows(const dw_geom *d, const dw_chan *cw,
                                                            const int32_t *const rows[], int32_t row_step,
                                                            int32_t n_rows, int8_t *o, int32_t k, int32_t stride,
                                                            int fast)
{
    const int32_t ch = d->ch, out_w = d->out_w;
    const int32_t init = cw->init, k2 = cw->k2;
    const tt_rq rq = cw->rq;
    const int small = k == 3;
    int32_t w3[3][1][2] = {{{0}}};
    if (small) {
        for (int32_t ky = 0; ky < 3; ky++) {
            w3[ky][0][0] = cw->eo[ky][0][0];
            w3[ky][0][1] = cw->eo[ky][0][1];
        }
    }
    /* K = 3 keeps its three row pointers in registers; larger K read theirs from rows[] at every use (reloaded
     * anyway after the int8 stores, which could alias rows[]), which frees the registers for the sums */
    const int keep = k == 3;
#if defined(__arm__)
    int32_t c3[12]; /* quads3's constants */
    if (k == 3 && fast) {
        for (int32_t ky = 0; ky < 3; ky++) {
            c3[2 * ky] = w3[ky][0][0];
            c3[2 * ky + 1] = w3[ky][0][1];
        }
        c3[6] = init;
        c3[7] = rq.m2;
        c3[8] = rq.right;
        c3[9] = k2;
        c3[10] = ch;
    }
#endif
    for (int32_t r = 0; r < n_rows; r++, o += (size_t)out_w * ch) {
        const int32_t *p[TT_DW_MAX_K] = {NULL};
#pragma GCC unroll 7
        for (int32_t ky = 0; ky < k; ky++) {
            p[ky] = rows[ky] + r * row_step;
        }
        int32_t idx = r * row_step; /* !keep: the words from rows[ky] to the pixels' first window word */
        int8_t *op = o;
        int32_t ox = 0;
#if defined(__arm__)
        if (k == 3 && fast && out_w >= 4) {
            c3[11] = (int32_t)(intptr_t)(op + (size_t)(out_w / 4) * 4 * ch);
            quads3(&p[0], &p[1], &p[2], &op, c3, stride);
            ox = out_w & ~3;
        }
#endif
        for (; ox + 3 < out_w; ox += 4, op += 4 * ch, idx += 2 * stride) {
            int32_t a[4] = {init, init, init, init};
#pragma GCC unroll 7
            for (int32_t ky = 0; ky < k; ky++) {
                row_quad(keep ? p[ky] : rows[ky] + idx, small ? w3[ky] : cw->eo[ky], small, k, stride, a);
                p[ky] += 2 * stride; /* four pixels on: four halves (stride 1) or eight */
            }
            const int8_t v0 = chan_finish(cw, a[0], rq, k2, fast), v1 = chan_finish(cw, a[1], rq, k2, fast);
            const int8_t v2 = chan_finish(cw, a[2], rq, k2, fast), v3 = chan_finish(cw, a[3], rq, k2, fast);
            op[0] = v0;
            op[ch] = v1;
            op[2 * ch] = v2;
            op[3 * ch] = v3;
        }
        if (ox + 1 < out_w) {
            int32_t a[2] = {init, init};
#pragma GCC unroll 7
            for (int32_t ky = 0; ky < k; ky++) {
                row_pair(keep ? p[ky] : rows[ky] + idx, small ? w3[ky] : cw->eo[ky], small, k, stride, a);
                p[ky] += stride;
            }
            const int8_t v0 = chan_finish(cw, a[0], rq, k2, fast), v1 = chan_finish(cw, a[1], rq, k2, fast);
            op[0] = v0;
            op[ch] = v1;
            op += 2 * ch;
            ox += 2;
            idx += stride;
        }
        if (ox < out_w) {
            int32_t a0 = init;
#pragma GCC unroll 7
            for (int32_t ky = 0; ky < k; ky++) {
                row_one(keep ? p[ky] : rows[ky] + idx, small ? w3[ky] : cw->eo[ky], small, k, &a0);
            }
            op[0] = chan_finish(cw, a0, rq, k2, fast);
        }
    }
}


/* The row functions (no scheduling before register allocation: it hoists the band loads of all K rows to the top
 * of a step and spills them). */
#define TT_DW_ROWS(name, k, stride, fast)                                                                        \
    static __attribute__((noinline, optimize("no-schedule-insns"))) void name(                                   \
        const dw_geom *d, const dw_chan *cw, const int32_t *const rows[], int32_t row_step, int32_t n_rows,       \
        int8_t *o)                                                                                               \
    {                                                                                                            \
        chan_rows(d, cw, rows, row_step, n_rows, o, k, stride, fast);                                            \
    }
TT_DW_ROWS(rows3s1, 3, 1, 1)
TT_DW_ROWS(rows3s2, 3, 2, 1)
TT_DW_ROWS(rows5s1, 5, 1, 1)
TT_DW_ROWS(rows5s2, 5, 2, 1)
TT_DW_ROWS(rows7s1, 7, 1, 1)
TT_DW_ROWS(rows7s2, 7, 2, 1)
TT_DW_ROWS(rows_any, d->k, d->stride, 1)
TT_DW_ROWS(rows_floor, d->k, d->stride, 0)
#undef TT_DW_ROWS

/* The row functions by kind, called through one switch (direct calls: the firmware's static stack bound sees
 * them). */
typedef enum { ROWS3S1, ROWS3S2, ROWS5S1, ROWS5S2, ROWS7S1, ROWS7S2, ROWS_ANY, ROWS_FLOOR } dw_rows_kind;

static void rows_call(dw_rows_kind kind, const dw_geom *d, const dw_chan *cw, const int32_t *const rows[],
                      int32_t row_step, int32_t n_rows, int8_t *o)
{
    switch (kind) {
    case ROWS3S1:
        rows3s1(d, cw, rows, row_step, n_rows, o);
        break;
    case ROWS3S2:
        rows3s2(d, cw, rows, row_step, n_rows, o);
        break;
    case ROWS5S1:
        rows5s1(d, cw, rows, row_step, n_rows, o);
        break;
    case ROWS5S2:
        rows5s2(d, cw, rows, row_step, n_rows, o);
        break;
    case ROWS7S1:
        rows7s1(d, cw, rows, row_step, n_rows, o);
        break;
    case ROWS7S2:
        rows7s2(d, cw, rows, row_step, n_rows, o);
        break;
    case ROWS_ANY:
        rows_any(d, cw, rows, row_step, n_rows, o);
        break;
    default:
        rows_floor(d, cw, rows, row_step, n_rows, o);
        break;
    }
}

/* PKHBT / PKHTB: the bottom half of a under the bottom half of b, and the top half of b over the top half of a (one
 * instruction each; GCC 12 has no intrinsic and does not find them). */
static inline uint32_t dw_pack_lo(uint32_t a, uint32_t b)
{
#if defined(__arm__)
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (a & 0xffffu) | (b << 16);
#endif
}

static inline uint32_t dw_pack_hi(uint32_t a, uint32_t b)
{
#if defined(__arm__)
    uint32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(b), "r"(a));
    return r;
#else
    return (a >> 16) | (b & 0xffff0000u);
#endif
}

/* The four words (a_j, b_j) of a pair of columns a, b (four channels each) into v[j]: the halves of a and b packed
 * (bytes a0 a1 b0 b1 and a2 a3 b2 b3), then SXTB16 and SXTB16 ROR 8 of each. */
static inline __attribute__((always_inline)) void pack4(uint32_t a, uint32_t b, int32_t v[4])
{
    const uint32_t lo = dw_pack_lo(a, b), hi = dw_pack_hi(a, b);
    v[0] = (int32_t)__sxtb16(lo);
    v[1] = tt_sxtb16_ror8((int32_t)lo);
    v[2] = (int32_t)__sxtb16(hi);
    v[3] = tt_sxtb16_ror8((int32_t)hi);
}

/* pack4 into dst[j * chan_words]. */
static inline __attribute__((always_inline)) void band_put(int32_t *dst, int32_t chan_words, uint32_t a, uint32_t b)
{
    int32_t v[4];
    pack4(a, b, v);
    dst[0] = v[0];
    dst[chan_words] = v[1];
    dst[2 * chan_words] = v[2];
    dst[3 * chan_words] = v[3];
}

/* The E/O words, accumulator starts and requantisation of channels c..c+3 (wc[j], ws[j]: tt_patched_weights), the
 * taps of the four channels packed as the band's columns are (pack4); fn[j]: the row function of each (`fast`
 * where the channel takes the prepared form, else rows_floor). */
static inline __attribute__((always_inline)) void group_prepare_k(const dw_geom *d, const int8_t *const wc[4],
                                                                   const size_t ws[4], int32_t c, tt_out_quant q,
                                                                   dw_chan cw[4], dw_rows_kind fast, dw_rows_kind fn[4],
                                                                   int32_t k)
{
    const int32_t n = k / 2;
    /* no working slice among the four: the home filter's word of each tap */
    const int home = wc[0] + 1 == wc[1] && wc[1] + 1 == wc[2] && wc[2] + 1 == wc[3] && ws[0] == (size_t)d->ch &&
                     ws[1] == ws[0] && ws[2] == ws[0] && ws[3] == ws[0];
    int32_t sum[4] = {0, 0, 0, 0}; /* |sum| <= 128 K^2 */
#pragma GCC unroll 3 /* all of K = 3; larger K partly (code size) */
    for (int32_t ky = 0; ky < k; ky++) {
        uint32_t t[TT_DW_MAX_K + 1]; /* t[kx]: the four channels' tap kx, t[k] = 0 */
#pragma GCC unroll 7
        for (int32_t kx = 0; kx < k; kx++) {
            const size_t tap = (size_t)ky * k + kx;
            if (home) {
                t[kx] = (uint32_t)tt_load4(wc[0] + tap * ws[0]);
            } else {
                t[kx] = 0;
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    t[kx] |= (uint32_t)(uint8_t)wc[j][tap * ws[j]] << (8 * j);
                }
            }
        }
        t[k] = 0;
#pragma GCC unroll 3
        for (int32_t i = 0; i < n; i++) {
            int32_t e[4], o[4];
            pack4(t[2 * i], t[2 * i + 1], e);     /* taps 2i, 2i + 1 */
            pack4(t[2 * i + 1], t[2 * i + 2], o); /* taps 2i + 1, 2i + 2 */
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                cw[j].eo[ky][i][0] = e[j];
                cw[j].eo[ky][i][1] = o[j];
                sum[j] = __smlad(e[j], 0x00010001, sum[j]);
                if ((k & 1) && i == n - 1) { /* tap K - 1: the top half of O[n] */
                    sum[j] = __smlatb(o[j], 1, sum[j]);
                }
            }
        }
    }
    for (int j = 0; j < 4; j++) {
        const int32_t bias = q.bias[c + j];
        /* |sum * input_offset| <= 128 * 49 * 128: exact; the bias add wraps as the reference's does */
        cw[j].init = tt_add_wrap(sum[j] * d->input_offset, bias);
        cw[j].rq = tt_rq_prepare(bias, q.multiplier[c + j], q.shift[c + j]);
        cw[j].k2 = 1 + 2 * q.output_offset;
        cw[j].multiplier = q.multiplier[c + j];
        cw[j].shift = q.shift[c + j];
        cw[j].output_offset = q.output_offset;
        fn[j] = cw[j].rq.right != 0 ? fast : ROWS_FLOOR;
    }
}

/* group_prepare_k unrolled for K = 3, 5, 7 (its share is large on the small planes of the last layers). */
static void group_prepare(const dw_geom *d, const int8_t *const wc[4], const size_t ws[4], int32_t c, tt_out_quant q,
                          dw_chan cw[4], dw_rows_kind fast, dw_rows_kind fn[4])
{
    if (d->k == 3) {
        group_prepare_k(d, wc, ws, c, q, cw, fast, fn, 3);
    } else if (d->k == 5) {
        group_prepare_k(d, wc, ws, c, q, cw, fast, fn, 5);
    } else if (d->k == 7) {
        group_prepare_k(d, wc, ws, c, q, cw, fast, fn, 7);
    } else {
        group_prepare_k(d, wc, ws, c, q, cw, fast, fn, d->k);
    }
}

/* Input row iy of channels c..c+3 (src: its pixel 0, channel c) into the band rows dst + j * chan_words (dst: the
 * row's first word); image column ix is half padding + ix, pad (-input_offset in every byte) fills the halves
 * beside the image that share a word with it. */
static void band_copy_row(const dw_geom *d, const int8_t *src, int32_t *dst, int32_t chan_words, uint32_t pad)
{
    const int32_t ch = d->ch;
    int32_t *t = dst + (d->padding >> 1);
    int32_t w = d->w;
    if (d->padding & 1) {
        band_put(t++, chan_words, pad, (uint32_t)tt_load4(src));
        src += ch;
        w--;
    }
    for (int32_t n = w >> 1; n > 0; n--, src += 2 * ch) {
        band_put(t++, chan_words, (uint32_t)tt_load4(src), (uint32_t)tt_load4(src + ch));
    }
    if (w & 1) {
        band_put(t, chan_words, (uint32_t)tt_load4(src), pad);
    }
}

/* Channels c..c+3 through the band (its padding filled); wc[j], ws[j]: the weights of channel c + j. */
static void group_band(const dw_geom *d, int32_t *band, const int8_t *const wc[4], const size_t ws[4], int32_t c,
                       tt_out_quant q, uint32_t pad)
{
    const int32_t k = d->k, p = d->padding, ch = d->ch, span = d->span, chan_words = d->band_rows * span;
    const dw_rows_kind fast = d->stride == 1 ? (k == 3 ? ROWS3S1 : k == 5 ? ROWS5S1 : k == 7 ? ROWS7S1 : ROWS_ANY)
                                             : (k == 3 ? ROWS3S2 : k == 5 ? ROWS5S2 : k == 7 ? ROWS7S2 : ROWS_ANY);
    dw_chan cw[4];
    dw_rows_kind fn[4];
    group_prepare(d, wc, ws, c, q, cw, fast, fn);
    const int32_t *rows[TT_DW_MAX_K];
    const int8_t *in = d->in + c;
    int8_t *out = d->out + c;
    if (d->whole) { /* the whole plane: image row iy in band row iy + padding */
        for (int32_t iy = 0; iy < d->h; iy++) {
            band_copy_row(d, in + (size_t)iy * d->w * ch, band + (size_t)(iy + p) * span, chan_words, pad);
        }
        for (int j = 0; j < 4; j++) {
            for (int32_t ky = 0; ky < k; ky++) {
                rows[ky] = band + (size_t)j * chan_words + (size_t)ky * span;
            }
            rows_call(fn[j], d, &cw[j], rows, d->stride * span, d->out_h, out + j);
        }
        return;
    }
    int32_t copied = 0; /* input rows 0..copied-1 are in the ring */
    for (int32_t oy = 0; oy < d->out_h; oy++) {
        const int32_t y0 = oy * d->stride - p;
        for (; copied < y0 + k && copied < d->h; copied++) {
            band_copy_row(d, in + (size_t)copied * d->w * ch, band + (size_t)(copied % k) * span, chan_words, pad);
        }
        const int32_t *r0[TT_DW_MAX_K]; /* channel 0's rows */
        for (int32_t ky = 0, slot = y0 % k + (y0 < 0 ? k : 0); ky < k; ky++, slot = slot + 1 < k ? slot + 1 : 0) {
            const int32_t iy = y0 + ky;
            r0[ky] = band + (size_t)(iy >= 0 && iy < d->h ? slot : k) * span;
        }
        for (int j = 0; j < 4; j++) {
            for (int32_t ky = 0; ky < k; ky++) {
                rows[ky] = r0[ky] + (size_t)j * chan_words;
            }
            rows_call(fn[j], d, &cw[j], rows, 0, 1, out + (size_t)oy * d->out_w * ch + j);
        }
    }
}

/* Channels 0..c4-1 through the band, in groups of four (next: tt_patched_weights' walk). */
static __attribute__((noinline)) void planes_band(const dw_geom *d, const tt_weight_patch *patch,
                                                  const int8_t *filter, tt_out_quant q, int32_t c4, int32_t *next)
{
    int32_t band[TT_DW_BAND_WORDS];
    const uint32_t pad = 0x01010101u * (uint8_t)(-d->input_offset); /* -input_offset in [-128, 127] */
    const int32_t pad2 = (int32_t)__sxtb16(pad);
    /* every group copies the same image cells: the padding is filled once */
    for (int32_t i = 0; i < 4 * d->band_rows * d->span; i++) {
        band[i] = pad2;
    }
    for (int32_t c = 0; c < c4; c += 4) {
        const int8_t *wc[4];
        size_t ws[4];
        for (int j = 0; j < 4; j++) {
            wc[j] = tt_patched_weights(patch, next, filter, c + j, d->ch, &ws[j]);
        }
        group_band(d, band, wc, ws, c, q, pad);
    }
}

/* Channels c..c+3 over the whole output plane; wc[j], ws[j]: the weights of channel c + j (tt_patched_weights). */
static void plane4(const dw_geom *d, const int8_t *const wc[4], const size_t ws[4], int32_t c, tt_out_quant q,
                   const tt_per_channel_quant *quant)
{
    dw_group g;
    const int32_t taps = d->k * d->k;
    /* no working slice among the four: the home filter's word of each tap */
    const int home = wc[0] + 1 == wc[1] && wc[1] + 1 == wc[2] && wc[2] + 1 == wc[3] && ws[0] == (size_t)d->ch &&
                     ws[1] == ws[0] && ws[2] == ws[0] && ws[3] == ws[0];
    int32_t se = 0, so = 0; /* sum(w) of channels 0, 2 and 1, 3 in int16 lanes: |sum| <= 127 * 49 */
    for (int32_t t = 0; t < taps; t++) {
        int32_t word;
        if (home) {
            word = tt_load4(wc[0] + (size_t)t * ws[0]);
        } else {
            uint32_t u = 0;
            for (int j = 0; j < 4; j++) {
                u |= (uint32_t)(uint8_t)wc[j][(size_t)t * ws[j]] << (8 * j);
            }
            word = (int32_t)u;
        }
        g.wb[2 * t] = (int32_t)__sxtb16(word);
        g.wb[2 * t + 1] = tt_sxtb16_ror8(word);
        se = (int32_t)__sadd16(se, g.wb[2 * t]);
        so = (int32_t)__sadd16(so, g.wb[2 * t + 1]);
    }
    const int32_t sum[4] = {(int16_t)(uint16_t)se, (int16_t)(uint16_t)so, (int16_t)((uint32_t)se >> 16),
                            (int16_t)((uint32_t)so >> 16)};
    int fast = 1;
    g.output_offset = q.output_offset;
    g.k2 = 1 + 2 * q.output_offset;
    for (int j = 0; j < 4; j++) {
        g.bias[j] = q.bias[c + j];
        /* |sum| <= 127 * K^2 * 128: exact; the bias add wraps as the reference's does */
        g.init[j] = tt_add_wrap(sum[j] * d->input_offset, g.bias[j]);
        g.multiplier[j] = quant->multiplier[c + j];
        g.shift[j] = quant->shift[c + j];
        g.rq[j] = tt_rq_prepare(g.bias[j], g.multiplier[j], g.shift[j]);
        fast &= g.rq[j].right != 0;
    }
    g.mode = fast ? RQ_FAST : RQ_FLOOR;
    void (*inner)(const dw_geom *, const dw_group *, int32_t, int32_t) =
        d->k == 3 ? row_inner3 : d->k == 5 ? row_inner5 : d->k == 7 ? row_inner7 : row_inner_any;
    for (int32_t oy = 0; oy < d->out_h; oy++) {
        if (oy < d->oy_lo || oy >= d->oy_hi || d->ox_lo >= d->ox_hi) {
            for (int32_t ox = 0; ox < d->out_w; ox++) {
                pixel_border(d, &g, c, oy, ox);
            }
            continue;
        }
        for (int32_t ox = 0; ox < d->ox_lo; ox++) {
            pixel_border(d, &g, c, oy, ox);
        }
        inner(d, &g, c, oy);
        for (int32_t ox = d->ox_hi; ox < d->out_w; ox++) {
            pixel_border(d, &g, c, oy, ox);
        }
    }
}

/* One channel c over the whole plane, as the reference sums it (wc, ws: its weights, tt_patched_weights). */
static void plane1(const dw_geom *d, const int8_t *wc, size_t ws, int32_t c, tt_out_quant q)
{
    const int32_t k = d->k, ch = d->ch;
    for (int32_t oy = 0; oy < d->out_h; oy++) {
        const int32_t y0 = oy * d->stride - d->padding;
        for (int32_t ox = 0; ox < d->out_w; ox++) {
            const int32_t x0 = ox * d->stride - d->padding;
            int32_t acc = 0;
            for (int32_t ky = 0; ky < k; ky++) {
                const int32_t iy = y0 + ky;
                for (int32_t kx = 0; kx < k && iy >= 0 && iy < d->h; kx++) {
                    const int32_t ix = x0 + kx;
                    if (ix >= 0 && ix < d->w) {
                        acc += (int32_t)wc[((size_t)ky * k + kx) * ws] *
                               ((int32_t)d->in[((size_t)iy * d->w + ix) * ch + c] + d->input_offset);
                    }
                }
            }
            d->out[((size_t)oy * d->out_w + ox) * ch + c] = tt_finish_s8(acc, c, q);
        }
    }
}

/* First output index o in [0, n) with o * stride - padding >= lo_min, and one past the last with
 * o * stride - padding + k <= size: the outputs whose windows lie inside [0, size) along one axis. */
static void inner_range(int32_t size, int32_t k, int32_t stride, int32_t padding, int32_t n, int32_t *lo,
                        int32_t *hi)
{
    *lo = (padding + stride - 1) / stride;
    *hi = size - k + padding >= 0 ? (size - k + padding) / stride + 1 : 0;
    *hi = *hi < n ? *hi : n;
    *lo = *lo < *hi ? *lo : *hi;
}

tt_status tt_depthwise_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv,
                                 const tt_per_channel_quant *quant, const tt_dims *in_dims, const int8_t *in,
                                 const tt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                                 const tt_dims *out_dims, int8_t *out)
{
    (void)ctx;
    const tt_status st = tt_check_conv_args(TT_CONV_DEPTHWISE, conv, quant, in_dims, in, filter_dims, filter, bias,
                                            out_dims, out);
    if (st != TT_OK) {
        return st;
    }
    const int32_t offset = conv->input_offset;
    dw_geom d = {.in = in, .out = out, .h = in_dims->h, .w = in_dims->w, .ch = in_dims->c, .k = filter_dims->h,
                 .stride = conv->stride, .padding = conv->padding, .out_h = out_dims->h, .out_w = out_dims->w,
                 .input_offset = offset,
                 .offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset)};
    inner_range(d.w, d.k, d.stride, d.padding, d.out_w, &d.ox_lo, &d.ox_hi);
    inner_range(d.h, d.k, d.stride, d.padding, d.out_h, &d.oy_lo, &d.oy_hi);
    /* the band's rows: a pair of pixels reads one half past its windows, and windows may pass the padding (a
     * stride that does not divide W + 2 padding - K, or W + 2 padding < K) */
    const int64_t halves = (d.w + 2 * d.padding > d.stride * (d.out_w - 1) + d.k ? d.w + 2 * d.padding
                                                                                 : d.stride * (d.out_w - 1) + d.k) +
                           1;
    const int64_t whole = d.h + 2 * d.padding > d.stride * (d.out_h - 1) + d.k ? d.h + 2 * d.padding
                                                                                 : d.stride * (d.out_h - 1) + d.k;
    d.span = (int32_t)((halves + 1) / 2);
    d.band_rows = 0;
    if (d.k >= 2 && d.k <= TT_DW_MAX_K && d.stride <= 2 && d.ch >= 4) { /* K = 1: no tap pairs */
        d.whole = 4 * whole * d.span <= TT_DW_BAND_WORDS;
        d.band_rows = d.whole ? (int32_t)whole : 4 * (d.k + 1) * (int64_t)d.span <= TT_DW_BAND_WORDS ? d.k + 1 : 0;
    }
    const tt_out_quant q = {.bias = bias, .multiplier = quant->multiplier, .shift = quant->shift,
                            .output_offset = conv->output_offset};
    const int32_t c4 = d.k <= TT_DW_MAX_K ? d.ch & ~3 : 0;
    int32_t next = 0; /* the next patched channel (tt_patched_weights); channels go in ascending order */
    int32_t c = 0;
    if (d.band_rows > 0) {
        planes_band(&d, conv->patch, filter, q, c4, &next);
        c = c4;
    }
    for (; c < c4; c += 4) {
        const int8_t *wc[4];
        size_t ws[4];
        for (int j = 0; j < 4; j++) {
            wc[j] = tt_patched_weights(conv->patch, &next, filter, c + j, d.ch, &ws[j]);
        }
        plane4(&d, wc, ws, c, q, quant);
    }
    for (; c < d.ch; c++) {
        size_t ws;
        const int8_t *wc = tt_patched_weights(conv->patch, &next, filter, c, d.ch, &ws);
        plane1(&d, wc, ws, c, q);
    }
    return TT_OK;
}
