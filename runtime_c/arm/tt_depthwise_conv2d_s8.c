/*
 * trady runtime: depthwise convolution (multiplier 1) for Cortex-M with the DSP extension (see
 * tt_kernels.h). The firmware build (`trady firmware --kernels dsp`) uses this file instead of the
 * reference kernel of the same name; the results are bit-identical: the same taps (out-of-image taps
 * are skipped, as in the reference) summed exactly in int32.
 *
 * Four channels at a time (HWC keeps them adjacent): SXTB16 widens bytes 0 and 2 (and, after a
 * rotate by 8, bytes 1 and 3) into int16 lanes, SADD16 adds the input offset to the input lanes
 * ([-255, 255]: no lane overflow), and SMLABB / SMLATT multiply-accumulate the bottom / top lanes
 * into one accumulator per channel. |sum| <= 127 * 255 * K * K, far below 2^31 for K <= 64.
 * Requantisation: tt_requantize_floor (tt_arm_math.h), equal to tt_requantize.
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


/* The taps of a window along one axis: it starts at `start` (input coordinate of tap 0); taps lo..hi-1 are inside. */
typedef struct {
    int32_t start, lo, hi;
} window;

/* Channels c..c+3 of the output pixel with windows wy, wx: the sums of w * (x + input_offset) over its taps. */
static inline void taps4(const int8_t *in, const int8_t *filter, int32_t ch, int32_t w, int32_t k, int32_t c, window wy,
                         window wx, int32_t offset2, int32_t acc[4])
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int32_t ky = wy.lo; ky < wy.hi; ky++) {
        const int8_t *px = in + ((size_t)(wy.start + ky) * w + wx.start + wx.lo) * ch + c;
        const int8_t *pw = filter + ((size_t)ky * k + wx.lo) * ch + c;
        for (int32_t kx = wx.lo; kx < wx.hi; kx++, px += ch, pw += ch) {
            const int32_t xw = tt_load4(px), ww = tt_load4(pw);
            const int32_t xe = __sadd16(__sxtb16(xw), offset2);       /* x0, x2 */
            const int32_t xo = __sadd16(tt_sxtb16_ror8(xw), offset2); /* x1, x3 */
            const int32_t we = __sxtb16(ww), wo = tt_sxtb16_ror8(ww);
            a0 = __smlabb(we, xe, a0);
            a2 = __smlatt(we, xe, a2);
            a1 = __smlabb(wo, xo, a1);
            a3 = __smlatt(wo, xo, a3);
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* One tap of four channels: px, pw point at the input and weight bytes of channel c; adds into a[0..3]. */
static inline void tap4(const int8_t *px, const int8_t *pw, int32_t offset2, int32_t a[4])
{
    const int32_t xw = tt_load4(px), ww = tt_load4(pw);
    const int32_t xe = __sadd16(__sxtb16(xw), offset2);       /* x0, x2 */
    const int32_t xo = __sadd16(tt_sxtb16_ror8(xw), offset2); /* x1, x3 */
    const int32_t we = __sxtb16(ww), wo = tt_sxtb16_ror8(ww);
    a[0] = __smlabb(we, xe, a[0]);
    a[2] = __smlatt(we, xe, a[2]);
    a[1] = __smlabb(wo, xo, a[1]);
    a[3] = __smlatt(wo, xo, a[3]);
}

/* taps4 for a 3x3 window wholly inside the image (y0, x0: its top-left input pixel), the nine taps unrolled (out of
 * line: fewer instructions than inlined into the caller, measured). */
static __attribute__((noinline)) void taps4_3x3(const int8_t *in, const int8_t *filter, int32_t ch, int32_t w,
                                                int32_t c, int32_t y0, int32_t x0, int32_t offset2, int32_t acc[4])
{
    const size_t row = (size_t)w * ch;
    const int8_t *r0 = in + ((size_t)y0 * w + x0) * ch + c, *r1 = r0 + row, *r2 = r1 + row;
    const int8_t *pw = filter + c;
    int32_t a[4] = {0, 0, 0, 0};
    tap4(r0, pw, offset2, a);
    tap4(r0 + ch, pw + ch, offset2, a);
    tap4(r0 + 2 * ch, pw + 2 * ch, offset2, a);
    tap4(r1, pw + 3 * ch, offset2, a);
    tap4(r1 + ch, pw + 4 * ch, offset2, a);
    tap4(r1 + 2 * ch, pw + 5 * ch, offset2, a);
    tap4(r2, pw + 6 * ch, offset2, a);
    tap4(r2 + ch, pw + 7 * ch, offset2, a);
    tap4(r2 + 2 * ch, pw + 8 * ch, offset2, a);
    acc[0] = a[0];
    acc[1] = a[1];
    acc[2] = a[2];
    acc[3] = a[3];
}

/* One channel c (the ones past the last group of four), as the reference sums it. */
static inline int32_t tap1(const int8_t *in, const int8_t *filter, int32_t ch, int32_t w, int32_t k, int32_t c,
                           window wy, window wx, int32_t offset)
{
    int32_t acc = 0;
    for (int32_t ky = wy.lo; ky < wy.hi; ky++) {
        for (int32_t kx = wx.lo; kx < wx.hi; kx++) {
            acc += (int32_t)filter[((size_t)ky * k + kx) * ch + c] *
                   ((int32_t)in[((size_t)(wy.start + ky) * w + wx.start + kx) * ch + c] + offset);
        }
    }
    return acc;
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
    const int32_t k = filter_dims->h;
    const int32_t ch = in_dims->c;
    const int32_t h = in_dims->h, w = in_dims->w;
    const tt_out_quant q = {.bias = bias, .multiplier = quant->multiplier, .shift = quant->shift,
                         .output_offset = conv->output_offset};
    const int32_t offset = conv->input_offset;
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t c4 = ch & ~3;
    for (int32_t oy = 0; oy < out_dims->h; oy++) {
        const int32_t y0 = oy * conv->stride - conv->padding;
        const window wy = {.start = y0, .lo = y0 < 0 ? -y0 : 0, .hi = y0 + k > h ? h - y0 : k};
        for (int32_t ox = 0; ox < out_dims->w; ox += 2) { /* two output pixels of the row: one set-up per channel */
            const int32_t ox1 = ox + 1 < out_dims->w ? ox + 1 : ox; /* an odd width ends with one pixel, twice */
            const int32_t xa = ox * conv->stride - conv->padding, xb = ox1 * conv->stride - conv->padding;
            const window wa = {.start = xa, .lo = xa < 0 ? -xa : 0, .hi = xa + k > w ? w - xa : k};
            const window wb = {.start = xb, .lo = xb < 0 ? -xb : 0, .hi = xb + k > w ? w - xb : k};
            int8_t *pa = out + ((size_t)oy * out_dims->w + ox) * ch;
            int8_t *pb = out + ((size_t)oy * out_dims->w + ox1) * ch;
            const int inner3 = k == 3 && wy.lo == 0 && wy.hi == 3 && wa.lo == 0 && wa.hi == 3 && wb.lo == 0 &&
                               wb.hi == 3;
            int32_t next_a = 0, next_b = 0; /* the next patched channel of each pixel (tt_patch_delta_dw) */
            int32_t c = 0;
            for (; c < c4; c += 4) {
                int32_t a[4], b[4];
                if (inner3) { /* 3x3, both windows inside the image: the same taps, unrolled */
                    taps4_3x3(in, filter, ch, w, c, y0, xa, offset2, a);
                    taps4_3x3(in, filter, ch, w, c, y0, xb, offset2, b);
                } else {
                    taps4(in, filter, ch, w, k, c, wy, wa, offset2, a);
                    taps4(in, filter, ch, w, k, c, wy, wb, offset2, b);
                }
                if (conv->patch != NULL) { /* working slices of some channels, in channel order */
                    for (int32_t j = 0; j < 4; j++) {
                        a[j] = tt_add_wrap(a[j], tt_patch_delta_dw(conv->patch, &next_a, in_dims, in, filter, c + j, k,
                                                                   y0, xa, offset));
                        b[j] = tt_add_wrap(b[j], tt_patch_delta_dw(conv->patch, &next_b, in_dims, in, filter, c + j, k,
                                                                   y0, xb, offset));
                    }
                }
                tt_finish2_s8(a[0], b[0], c, q, pa + c, pb + c);
                tt_finish2_s8(a[1], b[1], c + 1, q, pa + c + 1, pb + c + 1);
                tt_finish2_s8(a[2], b[2], c + 2, q, pa + c + 2, pb + c + 2);
                tt_finish2_s8(a[3], b[3], c + 3, q, pa + c + 3, pb + c + 3);
            }
            for (; c < ch; c++) {
                int32_t acc_a = tap1(in, filter, ch, w, k, c, wy, wa, offset);
                int32_t acc_b = tap1(in, filter, ch, w, k, c, wy, wb, offset);
                acc_a = tt_add_wrap(acc_a, tt_patch_delta_dw(conv->patch, &next_a, in_dims, in, filter, c, k, y0, xa,
                                                             offset));
                acc_b = tt_add_wrap(acc_b, tt_patch_delta_dw(conv->patch, &next_b, in_dims, in, filter, c, k, y0, xb,
                                                             offset));
                tt_finish2_s8(acc_a, acc_b, c, q, pa + c, pb + c);
            }
        }
    }
    return TT_OK;
}
