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
 * an even index, so 5 aligned words hold its taps (the tenth entry belongs to the next window or the zero tail). The
 * working weights of each output channel (the home row with the slices of patched channels, so that no correction is
 * left) are widened once per call into the same order, 5 words per kernel row, the tenth lane 0. Three row slots, each input row widened once (row iy in slot (iy + 1) % 3; an output row's three rows fall
 * into distinct slots, and the next output row reuses its last). Then 2 output channels x 2 output pixels of a row per
 * step, 15 SMLAD each, and the prepared requantisation (tt_rq_prepare) of TT_FC_CHUNK channels at a time.
 */
#ifndef TT_FC_WIDTH
#define TT_FC_WIDTH 128 /* 3 rows of 3 * 130 + 2 int16: 2,352 B of stack */
#endif
#define TT_FC_CHUNK 16  /* output channels whose weights are widened at a time: 960 B */
#define TT_FC_ROW (3 * (TT_FC_WIDTH + 2) + 2)
#define TT_FC_WORDS 15  /* 3 kernel rows x 5 words */

/* Input row iy of the image (or a zero row outside it) into `row`: entry 3 * (ix + 1) + c = x + offset, 0 around. */
static void fc_widen_row(const tt_dims *in_dims, const int8_t *in, int32_t iy, int32_t offset, int16_t *row)
{
    const int32_t w = in_dims->w, len = 3 * (w + 2) + 2;
    if (iy < 0 || iy >= in_dims->h) {
        memset(row, 0, (size_t)len * sizeof row[0]);
        return;
    }
    const int8_t *px = in + (size_t)iy * w * 3;
    row[0] = row[1] = row[2] = 0;
    for (int32_t i = 0; i < 3 * w; i++) {
        row[3 + i] = (int16_t)((int32_t)px[i] + offset);
    }
    for (int32_t i = 3 * w + 3; i < len; i++) {
        row[i] = 0;
    }
}

/* Two int16 lanes as one word: a in the low half. */
static inline int32_t fc_lanes(int32_t a, int32_t b)
{
    return (int32_t)(((uint32_t)(uint16_t)b << 16) | (uint16_t)a);
}

/* Channel pair sums at two windows: ww = the widened weights of 2 channels (15 words each), x0 / x1 the windows'
 * rows (3 pointers each, 5 words read from each). */
static inline void fc_dot(const int32_t *w0, const int32_t *w1, const int16_t *const r[3], int32_t c0, int32_t c1,
                          int32_t *a00, int32_t *a01, int32_t *a10, int32_t *a11)
{
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
#pragma GCC unroll 3
    for (int32_t ky = 0; ky < 3; ky++) {
        const int16_t *p0 = r[ky] + c0, *p1 = r[ky] + c1;
#pragma GCC unroll 5
        for (int32_t j = 0; j < 5; j++) {
            const int32_t x0 = load_pair(p0 + 2 * j), x1 = load_pair(p1 + 2 * j);
            const int32_t u = w0[5 * ky + j], v = w1[5 * ky + j];
            s00 = __smlad(u, x0, s00);
            s01 = __smlad(v, x0, s01);
            s10 = __smlad(u, x1, s10);
            s11 = __smlad(v, x1, s11);
        }
    }
    *a00 = s00;
    *a01 = s01;
    *a10 = s10;
    *a11 = s11;
}

static void __attribute__((noinline)) first_conv(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in,
                                                 const int8_t *filter, int32_t c_out, tt_out_quant q,
                                                 const tt_dims *out_dims, int8_t *out)
{
    const int32_t offset = conv->input_offset, ho = out_dims->h, wo = out_dims->w;
    const int32_t kk = 1 + 2 * q.output_offset;
    int16_t rows[3][TT_FC_ROW];
    int32_t wide[TT_FC_CHUNK][TT_FC_WORDS];
    tt_rq rq[TT_FC_CHUNK];
    for (int32_t o0 = 0; o0 < c_out; o0 += TT_FC_CHUNK) {
        const int32_t n = c_out - o0 < TT_FC_CHUNK ? c_out - o0 : TT_FC_CHUNK;
        for (int32_t i = 0; i < n; i++) {
            int8_t pw[27]; /* the working weights of output o0 + i: the home row with the patched channels' slices */
            memcpy(pw, filter + (size_t)(o0 + i) * 27, sizeof pw);
            for (int32_t j = 0; conv->patch != NULL && j < conv->patch->count; j++) {
                const int32_t c = conv->patch->channel[j];
                const int8_t *sl = tt_patch_slice(conv->patch, j) + (size_t)(o0 + i) * 9;
                for (int32_t t = 0; t < 9; t++) {
                    pw[3 * t + c] = sl[t];
                }
            }
            for (int32_t ky = 0; ky < 3; ky++) {
                const int8_t *t = pw + 9 * ky;
                for (int32_t j = 0; j < 4; j++) {
                    wide[i][5 * ky + j] = fc_lanes(t[2 * j], t[2 * j + 1]);
                }
                wide[i][5 * ky + 4] = fc_lanes(t[8], 0);
            }
            rq[i] = tt_rq_prepare(q.bias[o0 + i], q.multiplier[o0 + i], q.shift[o0 + i]);
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
            for (int32_t ox = 0; ox < wo; ox += 2) {
                const int32_t ox1 = ox + 1 < wo ? ox + 1 : ox; /* an odd width ends with one pixel, as a pair */
                int8_t *po0 = out + ((size_t)oy * wo + ox) * c_out, *po1 = out + ((size_t)oy * wo + ox1) * c_out;
                for (int32_t i = 0; i < n; i += 2) {
                    const int32_t i1 = i + 1 < n ? i + 1 : i; /* an odd chunk ends with one channel, as a pair */
                    const int32_t o = o0 + i, o1 = o0 + i1;
                    int32_t a00, a01, a10, a11;
                    fc_dot(wide[i], wide[i1], r, 6 * ox, 6 * ox1, &a00, &a01, &a10, &a11);
                    if (rq[i].right != 0 && rq[i1].right != 0) {
                        const int32_t t00 = tt_rq_twice(a00, rq[i], kk), t10 = tt_rq_twice(a10, rq[i], kk);
                        const int32_t t01 = tt_rq_twice(a01, rq[i1], kk), t11 = tt_rq_twice(a11, rq[i1], kk);
                        po0[o1] = tt_ssat8_half(t01); /* o1 first: for a lone channel o1 == o, the same value */
                        po1[o1] = tt_ssat8_half(t11);
                        po0[o] = tt_ssat8_half(t00);
                        po1[o] = tt_ssat8_half(t10);
                    } else {
                        tt_finish2_s8(a01, a11, o1, q, po0 + o1, po1 + o1);
                        tt_finish2_s8(a00, a10, o, q, po0 + o, po1 + o);
                    }
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
