/*
 * trady runtime: depthwise convolution (multiplier 1) for Cortex-M with the DSP extension (see
 * tt_kernels.h). The firmware build (`trady firmware --kernels dsp`) uses this file instead of the
 * reference kernel of the same name; the results are bit-identical: the same taps (out-of-image taps
 * are skipped, as in the reference) summed exactly mod 2^32, the same requantisation.
 *
 * Four channels at a time (HWC keeps them adjacent), one group of four over the whole output plane:
 * - the group's K x K weights (the working slices of patched channels, tt_patched_weights) are widened once
 *   into a stack buffer: SXTB16 puts channels 0 and 2 (and, rotated by 8, 1 and 3) into int16 lanes, and
 *   SMLABB / SMLATT multiply-accumulate the bottom / top lanes into one accumulator per channel;
 * - interior pixels (the whole window inside the image) start from bias + input_offset * sum(w) and sum
 *   w * x over the unrolled taps (3x3, 5x5, 7x7) without bounds checks; the sum is exact mod 2^32, and so
 *   equals the reference's exact sum plus the wrapping bias add;
 * - border pixels start from the bias and sum w * (x + input_offset) over the taps inside the image (SADD16
 *   adds the offset to both lanes: [-255, 255], no lane overflow);
 * - requantisation: the prepared form of tt_arm_math.h (tt_rq_prepare once per group, then tt_rq_twice_biased
 *   and tt_ssat8_half: SMMLAR, two adds, a shift and SSAT per value) where all four channels take it, else
 *   tt_requantize_floor; both equal tt_requantize.
 * Channels past the last group of four, and K > TT_DW_MAX_K, go one channel at a time as the reference does.
 * |sum| <= 127 * 255 * K * K before the bias, far below 2^31 for K <= 64.
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
#define TT_DW_MAX_K 7 /* largest K of the widened weight buffer (2 K^2 words on the stack); larger K per channel */
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
    int32_t band_words;   /* the band's size (plane4_band), 0 where it does not fit */
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
 * The band: the group's input rows copied into a ring of K rows, each one word (four channels) per column and
 * padded by `padding` columns on both sides with the byte -input_offset in every lane, plus one row that is all
 * padding (for rows above and below the image). A padding tap then adds w * (-input_offset), which cancels its
 * share of input_offset * sum(w) in the accumulator start: every output pixel sums all K x K taps, no border
 * case, and the taps of a row are at constant word offsets. Row iy lives in slot iy mod K (the K rows of a
 * window are distinct mod K); rows are copied in ascending order, each once.
 */
#ifndef TT_DW_BAND_WORDS
#define TT_DW_BAND_WORDS 640 /* 2,560 bytes on the stack: (K + 1) (W + 2 padding) words; larger planes go without */
#endif

/* The words of output pixels 0..out_w-1 of one row: rows[ky] = the band row of window row ky, k constant at the
 * unrolled call sites. */
static inline __attribute__((always_inline)) void band_row(const dw_geom *d, const dw_group *g,
                                                           const uint32_t *const rows[], int8_t *o, int32_t k)
{
    const int32_t ch = d->ch, stride = d->stride;
    for (int32_t ox = 0, off = 0; ox < d->out_w; ox++, off += stride, o += ch) {
        int32_t a0 = g->init[0], a1 = g->init[1], a2 = g->init[2], a3 = g->init[3];
#pragma GCC unroll 7
        for (int32_t ky = 0; ky < k; ky++) {
            const uint32_t *r = rows[ky] + off;
            const int32_t *wt = g->wb + 2 * ky * k;
#pragma GCC unroll 7
            for (int32_t kx = 0; kx < k; kx++) {
                const int32_t xw = (int32_t)r[kx];
                const int32_t xe = __sxtb16(xw), xo = tt_sxtb16_ror8(xw);
                a0 = __smlabb(wt[2 * kx], xe, a0);
                a2 = __smlatt(wt[2 * kx], xe, a2);
                a1 = __smlabb(wt[2 * kx + 1], xo, a1);
                a3 = __smlatt(wt[2 * kx + 1], xo, a3);
            }
        }
        finish4(g, a0, a1, a2, a3, o);
    }
}

static __attribute__((noinline)) void band_row_any(const dw_geom *d, const dw_group *g, const uint32_t *const rows[],
                                                   int8_t *o)
{
    band_row(d, g, rows, o, d->k);
}

static __attribute__((noinline)) void band_row3(const dw_geom *d, const dw_group *g, const uint32_t *const rows[],
                                                int8_t *o)
{
    band_row(d, g, rows, o, 3);
}

static __attribute__((noinline)) void band_row5(const dw_geom *d, const dw_group *g, const uint32_t *const rows[],
                                                int8_t *o)
{
    band_row(d, g, rows, o, 5);
}

static __attribute__((noinline)) void band_row7(const dw_geom *d, const dw_group *g, const uint32_t *const rows[],
                                                int8_t *o)
{
    band_row(d, g, rows, o, 7);
}

/* Channels c..c+3 over the whole plane through the band (d->band_words > 0: it fits). */
static void plane4_band(const dw_geom *d, const dw_group *g, int32_t c)
{
    uint32_t band[TT_DW_BAND_WORDS];
    const int32_t k = d->k, p = d->padding, ch = d->ch, w = d->w;
    const int32_t span = w + 2 * p; /* words per band row */
    const uint32_t pad = 0x01010101u * (uint8_t)(-d->input_offset);
    for (int32_t i = 0; i < (k + 1) * span; i++) { /* the padding columns, and the padding row (slot k) */
        band[i] = pad;
    }
    void (*row)(const dw_geom *, const dw_group *, const uint32_t *const[], int8_t *) =
        k == 3 ? band_row3 : k == 5 ? band_row5 : k == 7 ? band_row7 : band_row_any;
    const uint32_t *rows[TT_DW_MAX_K];
    int32_t copied = 0; /* input rows 0..copied-1 are in the band */
    for (int32_t oy = 0; oy < d->out_h; oy++) {
        const int32_t y0 = oy * d->stride - p;
        for (; copied < y0 + k && copied < d->h; copied++) {
            uint32_t *dst = band + (size_t)(copied % k) * span + p;
            const int8_t *src = d->in + (size_t)copied * w * ch + c;
#pragma GCC unroll 4
            for (int32_t ix = 0; ix < w; ix++, src += ch) {
                dst[ix] = (uint32_t)tt_load4(src);
            }
        }
        for (int32_t ky = 0; ky < k; ky++) {
            const int32_t iy = y0 + ky;
            rows[ky] = band + (size_t)(iy >= 0 && iy < d->h ? iy % k : k) * span;
        }
        row(d, g, rows, d->out + (size_t)oy * d->out_w * ch + c);
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
    if (d->band_words > 0) {
        plane4_band(d, &g, c);
        return;
    }
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

/* The taps inside [0, size) summed over the n outputs along one axis. */
static int32_t inside_taps(int32_t size, int32_t k, int32_t stride, int32_t padding, int32_t n)
{
    int32_t taps = 0;
    for (int32_t o = 0; o < n; o++) {
        const int32_t x0 = o * stride - padding;
        taps += (x0 + k > size ? size - x0 : k) - (x0 < 0 ? -x0 : 0);
    }
    return taps;
}

/* The band sums all K x K taps of every pixel at about 8 instructions per tap and four channels, the window
 * path (pixel_border, row_inner) only those inside the image at up to about 13 (measured): the band pays when at
 * least 8/13 of the taps are inside (tx, ty: inside_taps along x and y). */
static int band_pays(int32_t tx, int32_t ty, int32_t out_w, int32_t out_h, int32_t k)
{
    return 13 * (int64_t)tx * ty >= 8 * (int64_t)out_w * k * out_h * k;
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
    const int32_t band_words = (d.k + 1) * (d.w + 2 * d.padding);
    d.band_words = d.k <= TT_DW_MAX_K && band_words <= TT_DW_BAND_WORDS &&
                           band_pays(inside_taps(d.w, d.k, d.stride, d.padding, d.out_w),
                                     inside_taps(d.h, d.k, d.stride, d.padding, d.out_h), d.out_w, d.out_h, d.k)
                       ? band_words
                       : 0;
    const tt_out_quant q = {.bias = bias, .multiplier = quant->multiplier, .shift = quant->shift,
                            .output_offset = conv->output_offset};
    const int32_t c4 = d.k <= TT_DW_MAX_K ? d.ch & ~3 : 0;
    int32_t next = 0; /* the next patched channel (tt_patched_weights); channels go in ascending order */
    int32_t c = 0;
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
