/*
 * trady runtime: pointwise (1x1) convolution for Cortex-M with the DSP extension (see tt_kernels.h).
 * The firmware build (`trady firmware --kernels dsp`) uses this file instead of the reference kernel
 * of the same name; the results are bit-identical (integer sums in another order, no overflow).
 *
 * Four input channels at a time: the input word is widened into two words of int16 lanes, bytes 0
 * and 2 (then, after a rotate by 8, bytes 1 and 3) sign-extended plus the input offset (SXTAB16, or
 * SXTB16 and SADD16), the weight word likewise without the offset (SXTB16), and SMLAD multiplies two
 * lane pairs and adds both products to the accumulator. Lanes stay in int16: x + input_offset is in
 * [-255, 255] (x in [-128, 127], input_offset = -x_zero in [-127, 128]), weights in [-128, 127].
 * |sum| <= 127 * 255 * C_in < 2^31 for C_in < 66,000 (the compiler checks), so the int32 accumulator
 * is exact in any order, and it starts from the bias (acc + bias wraps alike, tt_add_wrap).
 *
 * The common case, C_in a multiple of 4 up to 4 * TT_PW_GROUPS / 2 channels (common): four pixels (a
 * quad) are widened once into a stack buffer, then each output channel's weight word serves the four
 * pixels; the inner loop is inline asm (LDM of the widened words, 14 instructions per 16 MACs), and
 * for chunks whose channels all have the prepared requantisation (tt_rq, tt_arm_math.h) so is the
 * whole channel loop (quad_fast). Longer inputs with an even group count (common_long) take pixel
 * pairs, two output channels at a time, in inline asm too. The rest (C_in not a multiple of 4, and
 * the longest inputs) is plain C (other, pixel_long). Every asm loop has the same sums in C for the
 * host build of the tests. A weight patch (working slices of some input channels, tt_conv_common.h)
 * adds its corrections per output before the requantisation: tt_rq_twice_biased and tt_ssat8_half
 * for the prepared channels, tt_requantize_floor (equal to tt_requantize) for the others.
 */
#include <arm_acle.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tt_arm_math.h"
#include "tt_conv_common.h"
#include "tt_kernels.h"
#include "tt_requant.h"

#if !defined(__ARM_FEATURE_DSP) || !__ARM_FEATURE_DSP
#error "runtime_c/arm/ needs the DSP extension (Cortex-M4/M7); build the reference kernels instead"
#endif

#ifndef TT_PW_CHUNK /* a test builds with 2 to run several chunks and odd chunk ends */
#define TT_PW_CHUNK 160 /* output channels whose requantisation is prepared at a time: 1,920 B of stack */
#endif

#ifndef TT_PW_PATCHES
#define TT_PW_PATCHES 16 /* patched input channels prepared per quad (more take patch_quad): 336 B of stack */
#endif

#ifndef TT_PW_GROUPS /* a test builds with fewer to run the other paths */
#define TT_PW_GROUPS 256 /* 1,024 input channels widened once per pixel pair, 512 per quad: 4 KB of stack */
#endif

static inline int32_t dot_tail(const int8_t *pw, const int8_t *px, int32_t from, int32_t c_in, int32_t offset,
                               int32_t acc)
{
    for (int32_t c = from; c < c_in; c++) {
        acc += (int32_t)pw[c] * ((int32_t)px[c] + offset);
    }
    return acc;
}

/* The requantisation values (tt_out_quant, read into locals: see tt_arm_math.h), the input offset and the patch. */
typedef struct {
    tt_out_quant fin;
    int32_t input_offset;
    const tt_weight_patch *patch;  /* working slices of some channels (flash weight home), or NULL */
} out_quant;

/* Output o of the pixel px: the patch correction (w = the home row of o), then tt_finish_s8. */
static inline int8_t finish(int32_t acc, int32_t o, out_quant q, const int8_t *w, const int8_t *px)
{
    if (q.patch != NULL) {
        acc = tt_add_wrap(acc, tt_patch_delta_1x1(q.patch, w, px, o, q.input_offset));
    }
    return tt_finish_s8(acc, o, q.fin);
}

/* acc plus the input channels past the last group of four and the patch correction (finish's first steps). */
static inline int32_t fix(int32_t acc, int32_t o, out_quant q, const int8_t *w, const int8_t *px, int32_t c4,
                          int32_t c_in)
{
    acc = dot_tail(w, px, c4, c_in, q.input_offset, acc);
    return q.patch == NULL ? acc : tt_add_wrap(acc, tt_patch_delta_1x1(q.patch, w, px, o, q.input_offset));
}

/* One output pixel without the widened buffer (inputs with more than 4 * TT_PW_GROUPS channels). */
static void pixel_long(const int8_t *px, int8_t *po, const int8_t *filter, int32_t c_in, int32_t c_out, int32_t offset,
                       out_quant q)
{
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t c4 = c_in & ~3;
    int32_t o = 0;
    for (; o + 4 <= c_out; o += 4) {
        const int8_t *w0 = filter + (size_t)o * c_in, *w1 = w0 + c_in, *w2 = w1 + c_in, *w3 = w2 + c_in;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int32_t c = 0; c < c4; c += 4) {
            const int32_t xw = tt_load4(px + c);
            const int32_t xe = __sadd16(__sxtb16(xw), offset2);       /* x0, x2 */
            const int32_t xo = __sadd16(tt_sxtb16_ror8(xw), offset2); /* x1, x3 */
            int32_t w = tt_load4(w0 + c);
            a0 = __smlad(tt_sxtb16_ror8(w), xo, __smlad(__sxtb16(w), xe, a0));
            w = tt_load4(w1 + c);
            a1 = __smlad(tt_sxtb16_ror8(w), xo, __smlad(__sxtb16(w), xe, a1));
            w = tt_load4(w2 + c);
            a2 = __smlad(tt_sxtb16_ror8(w), xo, __smlad(__sxtb16(w), xe, a2));
            w = tt_load4(w3 + c);
            a3 = __smlad(tt_sxtb16_ror8(w), xo, __smlad(__sxtb16(w), xe, a3));
        }
        po[o] = finish(dot_tail(w0, px, c4, c_in, offset, a0), o, q, w0, px);
        po[o + 1] = finish(dot_tail(w1, px, c4, c_in, offset, a1), o + 1, q, w1, px);
        po[o + 2] = finish(dot_tail(w2, px, c4, c_in, offset, a2), o + 2, q, w2, px);
        po[o + 3] = finish(dot_tail(w3, px, c4, c_in, offset, a3), o + 3, q, w3, px);
    }
    for (; o < c_out; o++) {
        const int8_t *w0 = filter + (size_t)o * c_in;
        int32_t a0 = 0;
        for (int32_t c = 0; c < c4; c += 4) {
            const int32_t xw = tt_load4(px + c), w = tt_load4(w0 + c);
            a0 = __smlad(tt_sxtb16_ror8(w), __sadd16(tt_sxtb16_ror8(xw), offset2),
                         __smlad(__sxtb16(w), __sadd16(__sxtb16(xw), offset2), a0));
        }
        po[o] = finish(dot_tail(w0, px, c4, c_in, offset, a0), o, q, w0, px);
    }
}

/* One output channel (weights w0, groups words) at two pixels (widened x: px0's two words, px1's per group), from
 * zero into *a0, *a1: the odd C_out's last output of both pixels. */
static inline void dot_one(const int8_t *w0, const int32_t *x, int32_t groups, int32_t *a0, int32_t *a1)
{
    int32_t a00 = 0, a10 = 0;
    for (int32_t g = 0; g < groups; g++, x += 4) {
        const int32_t u = tt_load4(w0 + 4 * g);
        const int32_t ue = __sxtb16(u), uo = tt_sxtb16_ror8(u);
        a00 = __smlad(uo, x[1], __smlad(ue, x[0], a00));
        a10 = __smlad(uo, x[3], __smlad(ue, x[2], a10));
    }
    *a0 = a00;
    *a1 = a10;
}

/* The input pixel of output pixel p (row-major over the output): the stride picks every stride-th pixel. */
static inline const int8_t *input_pixel(const tt_conv_params *conv, const tt_dims *in_dims, const tt_dims *out_dims,
                                        const int8_t *in, int32_t p)
{
    const int32_t oy = p / out_dims->w, ox = p - oy * out_dims->w;
    return in + ((size_t)oy * conv->stride * in_dims->w + (size_t)ox * conv->stride) * in_dims->c;
}

/* Both pixels' inputs widened: per group of 4 channels (x0, x2), (x1, x3) + offset of px0, then of px1. */
static inline void widen(const int8_t *px0, const int8_t *px1, int32_t groups, int32_t offset2, int32_t *widened)
{
    for (int32_t g = 0; g < groups; g++) {
        const int32_t x0 = tt_load4(px0 + 4 * g), x1 = tt_load4(px1 + 4 * g);
        widened[4 * g] = __sadd16(__sxtb16(x0), offset2);
        widened[4 * g + 1] = __sadd16(tt_sxtb16_ror8(x0), offset2);
        widened[4 * g + 2] = __sadd16(__sxtb16(x1), offset2);
        widened[4 * g + 3] = __sadd16(tt_sxtb16_ror8(x1), offset2);
    }
}

/* The other inputs: C_in not a multiple of 4 (the tail channels added one by one), more groups than the quads take
 * and an odd number of them, or more than 4 * TT_PW_GROUPS channels (pixel_long). */
static tt_status __attribute__((noinline)) other(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in,
                                                 const int8_t *filter, int32_t c_out, out_quant q,
                                                 const tt_dims *out_dims, int8_t *out)
{
    const int32_t c_in = in_dims->c;
    const int32_t offset = conv->input_offset;
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t c4 = c_in & ~3;
    const int32_t groups = c4 / 4;
    int32_t widened[4 * TT_PW_GROUPS]; /* per group of 4 channels: (x0, x2), (x1, x3) + offset of both pixels */
    const int32_t pixels = out_dims->h * out_dims->w;
    for (int32_t p = 0; p < pixels; p += 2) {
        const int32_t both = p + 1 < pixels; /* an odd pixel count ends with one pixel, computed as a pair */
        const int8_t *px0 = input_pixel(conv, in_dims, out_dims, in, p);
        const int8_t *px1 = both ? input_pixel(conv, in_dims, out_dims, in, p + 1) : px0;
        int8_t *po0 = out + (size_t)p * c_out;
        int8_t *po1 = both ? po0 + c_out : po0; /* a lone last pixel: its pair is itself, stored twice */
        if (groups > TT_PW_GROUPS) {
            pixel_long(px0, po0, filter, c_in, c_out, offset, q);
            pixel_long(px1, po1, filter, c_in, c_out, offset, q);
            continue;
        }
        widen(px0, px1, groups, offset2, widened);
        int32_t o = 0;
        for (; o + 2 <= c_out; o += 2) { /* 2 outputs x 2 pixels: each widened weight word serves two pixels */
            const int8_t *w0 = filter + (size_t)o * c_in, *w1 = w0 + c_in;
            int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
            const int32_t *x = widened;
            for (int32_t g = 0; g < groups; g++, x += 4) {
                const int32_t u = tt_load4(w0 + 4 * g), v = tt_load4(w1 + 4 * g);
                const int32_t ue = __sxtb16(u), uo = tt_sxtb16_ror8(u), ve = __sxtb16(v), vo = tt_sxtb16_ror8(v);
                a00 = __smlad(uo, x[1], __smlad(ue, x[0], a00));
                a01 = __smlad(vo, x[1], __smlad(ve, x[0], a01));
                a10 = __smlad(uo, x[3], __smlad(ue, x[2], a10));
                a11 = __smlad(vo, x[3], __smlad(ve, x[2], a11));
            }
            if (c4 < c_in || q.patch != NULL) {
                a00 = fix(a00, o, q, w0, px0, c4, c_in);
                a01 = fix(a01, o + 1, q, w1, px0, c4, c_in);
                a10 = fix(a10, o, q, w0, px1, c4, c_in);
                a11 = fix(a11, o + 1, q, w1, px1, c4, c_in);
            }
            tt_finish2_s8(a00, a10, o, q.fin, po0 + o, po1 + o);
            tt_finish2_s8(a01, a11, o + 1, q.fin, po0 + o + 1, po1 + o + 1);
        }
        if (o < c_out) { /* an odd C_out: the last output of both pixels */
            const int8_t *w0 = filter + (size_t)o * c_in;
            int32_t a00, a10;
            dot_one(w0, widened, groups, &a00, &a10);
            tt_finish2_s8(fix(a00, o, q, w0, px0, c4, c_in), fix(a10, o, q, w0, px1, c4, c_in), o, q.fin, po0 + o,
                          po1 + o);
        }
    }
    return TT_OK;
}

/*
 * The common case (C_in a multiple of 4, at most 2 * TT_PW_GROUPS groups): four pixels (a quad) per pass over the
 * output channels, one output channel at a time, so that each widened weight word serves four pixels and each
 * channel's requantisation form is read once per four values. The quad's inputs are widened once into `widened`
 * (per group of 4 channels: (x0, x2), (x1, x3) + offset of each pixel, 8 words); output channels go in chunks of
 * TT_PW_CHUNK whose forms are prepared once (tt_rq_prepare). A last quad of fewer than four pixels repeats its last
 * pixel and writes into a stack stage that is then copied out.
 */
typedef struct {
    const int8_t *px[4]; /* the quad's input pixels */
} quad_in;

/* The quad's inputs widened: per group of 4 channels (x0, x2), (x1, x3) + offset of each pixel in turn (one SXTAB16
 * per word). */
static inline void widen4(const quad_in *qi, int32_t groups, int32_t offset2, int32_t *widened)
{
    const int8_t *p0 = qi->px[0], *p1 = qi->px[1], *p2 = qi->px[2], *p3 = qi->px[3];
    for (int32_t g = 0; g < groups; g++, widened += 8) {
        const int32_t x0 = tt_load4(p0 + 4 * g), x1 = tt_load4(p1 + 4 * g);
        const int32_t x2 = tt_load4(p2 + 4 * g), x3 = tt_load4(p3 + 4 * g);
        widened[0] = tt_sxtab16(offset2, x0);
        widened[1] = tt_sxtab16_ror8(offset2, x0);
        widened[2] = tt_sxtab16(offset2, x1);
        widened[3] = tt_sxtab16_ror8(offset2, x1);
        widened[4] = tt_sxtab16(offset2, x2);
        widened[5] = tt_sxtab16_ror8(offset2, x2);
        widened[6] = tt_sxtab16(offset2, x3);
        widened[7] = tt_sxtab16_ror8(offset2, x3);
    }
}

#if defined(__arm__)
/* One group of one output channel at the quad, as asm text: the weight word (post-increment), both halves widened,
 * the four pixels' words in two LDMs (r8 .. r11: a pixel pair's (x0, x2), (x1, x3); LDM needs ascending registers),
 * 8 SMLAD: 13 instructions per 16 MACs. */
#define TT_PW_QUAD_GROUP                                                                                               \
    "ldr %[t0], [%[u]], #4\n\t"                                                                                        \
    "ldm %[x]!, {r8, r9, r10, r11}\n\t"                                                                                \
    "sxtb16 %[t1], %[t0], ror #8\n\t"                                                                                  \
    "sxtb16 %[t0], %[t0]\n\t"                                                                                          \
    "smlad %[b0], %[t0], r8, %[b0]\n\t"                                                                                \
    "smlad %[b1], %[t0], r10, %[b1]\n\t"                                                                               \
    "smlad %[b0], %[t1], r9, %[b0]\n\t"                                                                                \
    "smlad %[b1], %[t1], r11, %[b1]\n\t"                                                                               \
    "ldm %[x]!, {r8, r9, r10, r11}\n\t"                                                                                \
    "smlad %[b2], %[t0], r8, %[b2]\n\t"                                                                                \
    "smlad %[b3], %[t0], r10, %[b3]\n\t"                                                                               \
    "smlad %[b2], %[t1], r9, %[b2]\n\t"                                                                                \
    "smlad %[b3], %[t1], r11, %[b3]\n\t"
#endif

/*
 * The sums of one output channel (weights *pw, groups words; *pw moves past them) at the quad (widened x), added
 * to *a0 .. *a3. On the core: inline asm, two groups per loop iteration (14 instructions per 16 MACs with the CMP
 * and BNE; GCC's code took 20 per 16 for two channels at two pixels), an odd group count (odd, a constant of the
 * caller) first one group. The host build (tests/c/acle_host) runs the same sums in C; they are exact in any order.
 */
static inline __attribute__((always_inline)) void dot_quad(const int8_t **pw, const int32_t *x, int32_t groups,
                                                           const int odd, int32_t *a0, int32_t *a1, int32_t *a2,
                                                           int32_t *a3)
{
#if defined(__arm__)
    const int8_t *u = *pw;
    const int32_t *const end = x + 8 * groups;
    int32_t b0 = *a0, b1 = *a1, b2 = *a2, b3 = *a3, t0, t1;
    if (odd) {
        __asm__(TT_PW_QUAD_GROUP
                : [b0] "+r"(b0), [b1] "+r"(b1), [b2] "+r"(b2), [b3] "+r"(b3), [x] "+r"(x), [u] "+r"(u),
                  [t0] "=&r"(t0), [t1] "=&r"(t1)
                :
                : "r8", "r9", "r10", "r11", "memory");
    }
    if (!odd || x != end) {
        __asm__("1:\n\t" TT_PW_QUAD_GROUP TT_PW_QUAD_GROUP
                "cmp %[x], %[end]\n\t"
                "bne 1b"
                : [b0] "+r"(b0), [b1] "+r"(b1), [b2] "+r"(b2), [b3] "+r"(b3), [x] "+r"(x), [u] "+r"(u),
                  [t0] "=&r"(t0), [t1] "=&r"(t1)
                : [end] "r"(end)
                : "r8", "r9", "r10", "r11", "cc", "memory");
    }
    *pw = u;
    *a0 = b0;
    *a1 = b1;
    *a2 = b2;
    *a3 = b3;
#else
    (void)odd;
    const int8_t *u = *pw;
    for (int32_t g = 0; g < groups; g++, x += 8) {
        const int32_t w = tt_load4(u + 4 * g);
        const int32_t we = __sxtb16(w), wo = tt_sxtb16_ror8(w);
        *a0 = __smlad(wo, x[1], __smlad(we, x[0], *a0));
        *a1 = __smlad(wo, x[3], __smlad(we, x[2], *a1));
        *a2 = __smlad(wo, x[5], __smlad(we, x[4], *a2));
        *a3 = __smlad(wo, x[7], __smlad(we, x[6], *a3));
    }
    *pw = u + 4 * groups;
#endif
}

/* tt_patch_delta_1x1 of output channel o (home row w0) at the quad's four pixels, added to *a0 .. *a3 (wrapping):
 * each weight difference serves the four pixels. */
static inline void patch_quad(const tt_weight_patch *patch, const int8_t *w0, int32_t o, const quad_in *qi,
                              int32_t offset, int32_t *a0, int32_t *a1, int32_t *a2, int32_t *a3)
{
    uint32_t e0 = 0, e1 = 0, e2 = 0, e3 = 0;
    for (int32_t j = 0; j < patch->count; j++) {
        const int32_t c = patch->channel[j];
        const int32_t d = (int32_t)tt_patch_slice(patch, j)[o] - (int32_t)w0[c];
        e0 += (uint32_t)(d * ((int32_t)qi->px[0][c] + offset));
        e1 += (uint32_t)(d * ((int32_t)qi->px[1][c] + offset));
        e2 += (uint32_t)(d * ((int32_t)qi->px[2][c] + offset));
        e3 += (uint32_t)(d * ((int32_t)qi->px[3][c] + offset));
    }
    *a0 = tt_add_wrap(*a0, (int32_t)e0);
    *a1 = tt_add_wrap(*a1, (int32_t)e1);
    *a2 = tt_add_wrap(*a2, (int32_t)e2);
    *a3 = tt_add_wrap(*a3, (int32_t)e3);
}

/*
 * A patch of at most TT_PW_PATCHES channels prepared for a quad: their lanes of the widened inputs are zeroed, so
 * that the sums are those of the other channels, and each output adds slice[j][i] * x[j][pixel] (the working
 * weight times the input + offset) for its patched channels: no home weight read, no difference per output.
 */
typedef struct {
    int32_t count;
    const int8_t *slice[TT_PW_PATCHES]; /* patched channel j's working slice from the chunk's first output on */
    int32_t x[TT_PW_PATCHES][4];        /* its input + offset at the quad's four pixels */
} quad_patch;

/* tt_finish2_s8's requantisation (the accumulators already hold the bias) of output channel o at the quad, into
 * po[0], po[s], po[2 s], po[3 s]: the channels without the prepared form, out of line. */
static void __attribute__((noinline)) finish_quad_other(int32_t a0, int32_t a1, int32_t a2, int32_t a3, int32_t o,
                                                        const tt_out_quant *q, int8_t *po, ptrdiff_t s)
{
    tt_requantize_floor2(&a0, &a1, q->multiplier[o], q->shift[o], q->output_offset);
    tt_requantize_floor2(&a2, &a3, q->multiplier[o], q->shift[o], q->output_offset);
    po[0] = tt_ssat8(a0);
    po[s] = tt_ssat8(a1);
    po[2 * s] = tt_ssat8(a2);
    po[3 * s] = tt_ssat8(a3);
}

/*
 * Output channels o0 .. o0 + n - 1 (weights from w, prepared forms rq[0 .. n - 1]) at the quad, into po[i],
 * po[s + i], po[2 s + i], po[3 s + i]. The accumulators start from the bias (the sums then wrap as tt_add_wrap),
 * the patch's corrections follow (patch: patch_quad per output; pp: a prepared patch; either may be NULL), then
 * the requantisation. odd: groups is odd.
 */
static inline __attribute__((always_inline)) void quad_body(const int8_t *w, int32_t o0, int32_t n,
                                                            const int32_t *widened, int32_t groups,
                                                            const tt_out_quant *q, const tt_rq *rq, int8_t *po,
                                                            ptrdiff_t s, const tt_weight_patch *patch,
                                                            const quad_in *qi, int32_t offset,
                                                            const quad_patch *pp, const int odd)
{
    const int32_t k = 1 + 2 * q->output_offset;
    const tt_rq *const rq0 = rq, *const rq_end = rq + n;
    for (; rq < rq_end; rq++, po++) {
        int32_t a0 = rq->bias, a1 = a0, a2 = a0, a3 = a0;
        const int8_t *const w0 = w;
        dot_quad(&w, widened, groups, odd, &a0, &a1, &a2, &a3);
        if (patch != NULL) {
            patch_quad(patch, w0, o0 + (int32_t)(rq - rq0), qi, offset, &a0, &a1, &a2, &a3);
        }
        if (pp != NULL) {
            const int32_t i = (int32_t)(rq - rq0);
            for (int32_t j = 0; j < pp->count; j++) {
                const int32_t v = pp->slice[j][i];
                const int32_t *x = pp->x[j];
                a0 = tt_add_wrap(a0, v * x[0]);
                a1 = tt_add_wrap(a1, v * x[1]);
                a2 = tt_add_wrap(a2, v * x[2]);
                a3 = tt_add_wrap(a3, v * x[3]);
            }
        }
        const tt_rq c = *rq;
        if (c.right != 0) {
            const int32_t t0 = tt_rq_twice_biased(a0, c, k), t1 = tt_rq_twice_biased(a1, c, k);
            const int32_t t2 = tt_rq_twice_biased(a2, c, k), t3 = tt_rq_twice_biased(a3, c, k);
            int8_t *const p2 = po + 2 * s;
            po[0] = tt_ssat8_half(t0);
            po[s] = tt_ssat8_half(t1);
            p2[0] = tt_ssat8_half(t2);
            p2[s] = tt_ssat8_half(t3);
        } else {
            finish_quad_other(a0, a1, a2, a3, o0 + (int32_t)(rq - rq0), q, po, s);
        }
    }
}

/* quad_body out of line for each (patch, odd group count): the unpatched even case has nothing else in its loop. */
static void __attribute__((noinline)) quad_even(const int8_t *w, int32_t o0, int32_t n, const int32_t *widened,
                                                int32_t groups, const tt_out_quant *q, const tt_rq *rq, int8_t *po,
                                                ptrdiff_t s)
{
    quad_body(w, o0, n, widened, groups, q, rq, po, s, NULL, NULL, 0, NULL, 0);
}

static void __attribute__((noinline)) quad_odd(const int8_t *w, int32_t o0, int32_t n, const int32_t *widened,
                                               int32_t groups, const tt_out_quant *q, const tt_rq *rq, int8_t *po,
                                               ptrdiff_t s)
{
    quad_body(w, o0, n, widened, groups, q, rq, po, s, NULL, NULL, 0, NULL, 1);
}

/*
 * quad_even for a chunk whose channels all have the prepared form (tt_rq_prepare's right != 0, MCUNet's and
 * MobileNetV2's channels): on the core the whole channel loop is one asm block, the accumulators from the bias, the
 * sums, tt_rq_twice_biased and tt_ssat8_half of the four values and their stores, with the loop's state in a stack
 * struct (the sums take the other 13 registers): 42 instructions per channel besides the sums, against about 58
 * for GCC's code of quad_body. The host build runs quad_body.
 */
#if defined(__arm__)
typedef struct {
    const tt_rq *rq, *rq_end; /* this channel's prepared form, the chunk's end */
    int8_t *po;               /* this channel's output at the quad's first pixel */
    ptrdiff_t s;              /* from one pixel's output to the next */
    int32_t k;                /* 1 + 2 * output_offset */
    const int32_t *widened;
    const int32_t *pairs, *pairs_end; /* quad_fast_patched: its patch_pair entries */
    int32_t i;                        /* quad_fast_patched: this channel's index in the chunk */
} quad_state;

/* The asm reads tt_rq's m2 and right with one LDRD, quad_state's po and s with another. */
typedef char tt_pw_rq_layout[offsetof(tt_rq, right) == offsetof(tt_rq, m2) + 4 ? 1 : -1];
typedef char tt_pw_state_layout[offsetof(quad_state, s) == offsetof(quad_state, po) + 4 ? 1 : -1];

/* A channel's start: its bias in the four accumulators, the sums over the groups (two per iteration). */
#define TT_PW_FAST_SUMS                                                                                                \
    "0:\n\t"                                                                                                           \
    "ldr %[t0], [%[st], %[o_rq]]\n\t"                                                                                  \
    "ldr %[b0], [%[t0], %[o_bias]]\n\t"                                                                                \
    "mov %[b1], %[b0]\n\t"                                                                                             \
    "mov %[b2], %[b0]\n\t"                                                                                             \
    "mov %[b3], %[b0]\n\t"                                                                                             \
    "ldr %[x], [%[st], %[o_widened]]\n\t"                                                                              \
    "1:\n\t" TT_PW_QUAD_GROUP TT_PW_QUAD_GROUP                                                                         \
    "cmp %[x], %[end]\n\t"                                                                                             \
    "bne 1b\n\t"

/* tt_rq_twice_biased and tt_ssat8_half of the four values, their stores, the next channel. */
#define TT_PW_FAST_FINISH                                                                                              \
    "ldr %[t0], [%[st], %[o_rq]]\n\t"                                                                                  \
    "ldrd %[t1], %[x], [%[t0], %[o_m2]]\n\t" /* m2, right */                                                           \
    "smmlar %[b0], %[b0], %[t1], %[b0]\n\t"                                                                            \
    "smmlar %[b1], %[b1], %[t1], %[b1]\n\t"                                                                            \
    "smmlar %[b2], %[b2], %[t1], %[b2]\n\t"                                                                            \
    "smmlar %[b3], %[b3], %[t1], %[b3]\n\t"                                                                            \
    "add %[b0], %[b0], %[b0], asr #31\n\t"                                                                             \
    "add %[b1], %[b1], %[b1], asr #31\n\t"                                                                             \
    "add %[b2], %[b2], %[b2], asr #31\n\t"                                                                             \
    "add %[b3], %[b3], %[b3], asr #31\n\t"                                                                             \
    "asr %[b0], %[b0], %[x]\n\t"                                                                                       \
    "asr %[b1], %[b1], %[x]\n\t"                                                                                       \
    "asr %[b2], %[b2], %[x]\n\t"                                                                                       \
    "asr %[b3], %[b3], %[x]\n\t"                                                                                       \
    "ldr %[t1], [%[st], %[o_k]]\n\t"                                                                                   \
    "add %[b0], %[b0], %[t1]\n\t"                                                                                      \
    "add %[b1], %[b1], %[t1]\n\t"                                                                                      \
    "add %[b2], %[b2], %[t1]\n\t"                                                                                      \
    "add %[b3], %[b3], %[t1]\n\t"                                                                                      \
    "ssat %[b0], #8, %[b0], asr #1\n\t"                                                                                \
    "ssat %[b1], #8, %[b1], asr #1\n\t"                                                                                \
    "ssat %[b2], #8, %[b2], asr #1\n\t"                                                                                \
    "ssat %[b3], #8, %[b3], asr #1\n\t"                                                                                \
    "ldrd %[t1], %[x], [%[st], %[o_po]]\n\t" /* po, s */                                                               \
    "strb %[b0], [%[t1]]\n\t"                                                                                          \
    "strb %[b1], [%[t1], %[x]]\n\t"                                                                                    \
    "add r8, %[t1], %[x], lsl #1\n\t"                                                                                  \
    "strb %[b2], [r8]\n\t"                                                                                             \
    "strb %[b3], [r8, %[x]]\n\t"                                                                                       \
    "add %[t1], %[t1], #1\n\t"                                                                                         \
    "str %[t1], [%[st], %[o_po]]\n\t"                                                                                  \
    "add %[t0], %[t0], %[size]\n\t"                                                                                    \
    "ldr %[x], [%[st], %[o_end]]\n\t"                                                                                  \
    "str %[t0], [%[st], %[o_rq]]\n\t"                                                                                  \
    "cmp %[t0], %[x]\n\t"                                                                                              \
    "bne 0b"

/*
 * The patch corrections between the sums and the finish (quad_fast_patched): per entry (two patched channels a, b:
 * their slices, then per pixel the word (x_a, x_b) + offset), the working weights (v_a, v_b) of this channel packed
 * by PKHBT, one SMLAD per pixel: 6 instructions per patched channel.
 */
#define TT_PW_FAST_PATCH                                                                                               \
    "ldr %[t0], [%[st], %[o_pairs]]\n\t"                                                                               \
    "ldr %[t1], [%[st], %[o_pairs_end]]\n\t"                                                                           \
    "ldr %[x], [%[st], %[o_i]]\n\t"                                                                                    \
    "2:\n\t"                                                                                                           \
    "ldrd r8, r9, [%[t0]], #8\n\t"                                                                                     \
    "ldrsb r8, [r8, %[x]]\n\t"                                                                                         \
    "ldrsb r9, [r9, %[x]]\n\t"                                                                                         \
    "pkhbt r8, r8, r9, lsl #16\n\t"                                                                                    \
    "ldrd r10, r11, [%[t0]], #8\n\t"                                                                                   \
    "smlad %[b0], r8, r10, %[b0]\n\t"                                                                                  \
    "smlad %[b1], r8, r11, %[b1]\n\t"                                                                                  \
    "ldrd r10, r11, [%[t0]], #8\n\t"                                                                                   \
    "smlad %[b2], r8, r10, %[b2]\n\t"                                                                                  \
    "smlad %[b3], r8, r11, %[b3]\n\t"                                                                                  \
    "cmp %[t0], %[t1]\n\t"                                                                                             \
    "bne 2b\n\t"                                                                                                       \
    "add %[x], %[x], #1\n\t"                                                                                           \
    "str %[x], [%[st], %[o_i]]\n\t"

#define TT_PW_FAST_OUT                                                                                                 \
    [b0] "=&r"(b0), [b1] "=&r"(b1), [b2] "=&r"(b2), [b3] "=&r"(b3), [x] "=&r"(x), [u] "+r"(u), [t0] "=&r"(t0),        \
        [t1] "=&r"(t1)
#define TT_PW_FAST_IN                                                                                                  \
    [end] "r"(end), [st] "r"(&st), [o_rq] "i"(offsetof(quad_state, rq)), [o_end] "i"(offsetof(quad_state, rq_end)),  \
        [o_po] "i"(offsetof(quad_state, po)), [o_k] "i"(offsetof(quad_state, k)),                                     \
        [o_widened] "i"(offsetof(quad_state, widened)), [o_bias] "i"(offsetof(tt_rq, bias)),                          \
        [o_m2] "i"(offsetof(tt_rq, m2)), [size] "i"(sizeof(tt_rq)), [o_pairs] "i"(offsetof(quad_state, pairs)),        \
        [o_pairs_end] "i"(offsetof(quad_state, pairs_end)), [o_i] "i"(offsetof(quad_state, i))
#endif

/* quad_fast's body: pairs, npairs: the patch entries of quad_fast_patched (6 words each), or NULL. */
static inline __attribute__((always_inline)) void quad_fast_body(const int8_t *w, int32_t o0, int32_t n,
                                                                 const int32_t *widened, int32_t groups,
                                                                 const tt_out_quant *q, const tt_rq *rq, int8_t *po,
                                                                 ptrdiff_t s, const int32_t *pairs, int32_t npairs)
{
#if defined(__arm__)
    (void)o0;
    quad_state st = {.rq = rq, .rq_end = rq + n, .po = po, .s = s, .k = 1 + 2 * q->output_offset,
                     .widened = widened, .pairs = pairs, .pairs_end = pairs + 6 * npairs, .i = 0};
    const int32_t *const end = widened + 8 * groups;
    const int8_t *u = w;
    int32_t b0, b1, b2, b3, t0, t1;
    const int32_t *x;
    if (pairs == NULL) {
        __asm__ volatile(TT_PW_FAST_SUMS TT_PW_FAST_FINISH
                         : TT_PW_FAST_OUT
                         : TT_PW_FAST_IN
                         : "r8", "r9", "r10", "r11", "cc", "memory");
    } else {
        __asm__ volatile(TT_PW_FAST_SUMS TT_PW_FAST_PATCH TT_PW_FAST_FINISH
                         : TT_PW_FAST_OUT
                         : TT_PW_FAST_IN
                         : "r8", "r9", "r10", "r11", "cc", "memory");
    }
#else
    (void)pairs;
    (void)npairs;
    quad_body(w, o0, n, widened, groups, q, rq, po, s, NULL, NULL, 0, NULL, 0);
#endif
}

static void __attribute__((noinline)) quad_fast(const int8_t *w, int32_t o0, int32_t n, const int32_t *widened,
                                                int32_t groups, const tt_out_quant *q, const tt_rq *rq, int8_t *po,
                                                ptrdiff_t s)
{
    quad_fast_body(w, o0, n, widened, groups, q, rq, po, s, NULL, 0);
}

static void __attribute__((noinline)) quad_patched(const int8_t *w, int32_t o0, int32_t n, int32_t *widened,
                                                   int32_t groups, const tt_out_quant *q, const tt_rq *rq, int8_t *po,
                                                   ptrdiff_t s, const tt_weight_patch *patch, const quad_in *qi,
                                                   int32_t offset, int fast)
{
    if (patch->count > TT_PW_PATCHES) {
        if (groups & 1) {
            quad_body(w, o0, n, widened, groups, q, rq, po, s, patch, qi, offset, NULL, 1);
        } else {
            quad_body(w, o0, n, widened, groups, q, rq, po, s, patch, qi, offset, NULL, 0);
        }
        return;
    }
    quad_patch pp;
    pp.count = patch->count;
    pp.slice[0] = NULL; /* count >= 1 here, which GCC's -Wmaybe-uninitialized does not see with TT_PW_PATCHES = 1 */
    for (int32_t j = 0; j < patch->count; j++) {
        const int32_t c = patch->channel[j];
        /* channel c's lane: the group's word (x0, x2) or (x1, x3) of each pixel, the low half for x0 and x1 */
        int32_t *word = widened + 8 * (c / 4) + (c & 1);
        const uint32_t keep = (c & 2) ? 0x0000FFFFu : 0xFFFF0000u;
        pp.slice[j] = tt_patch_slice(patch, j) + o0;
        for (int32_t l = 0; l < 4; l++) {
            pp.x[j][l] = (int32_t)qi->px[l][c] + offset;
            word[2 * l] = (int32_t)((uint32_t)word[2 * l] & keep);
        }
    }
#if defined(__arm__)
    if (fast && (groups & 1) == 0) { /* quad_fast with the corrections: pp as entries of two channels (a, b) */
        int32_t pairs[6 * ((TT_PW_PATCHES + 1) / 2)];
        const int32_t npairs = (pp.count + 1) / 2;
        for (int32_t e = 0; e < npairs; e++) {
            const int32_t a = 2 * e, b = 2 * e + 1 < pp.count ? 2 * e + 1 : a; /* an odd count: b = a, x_b = 0 */
            pairs[6 * e] = (int32_t)(uintptr_t)pp.slice[a];
            pairs[6 * e + 1] = (int32_t)(uintptr_t)pp.slice[b];
            for (int32_t l = 0; l < 4; l++) {
                const uint32_t xb = b != a ? (uint32_t)(uint16_t)pp.x[b][l] : 0u;
                pairs[6 * e + 2 + l] = (int32_t)((uint32_t)(uint16_t)pp.x[a][l] | (xb << 16));
            }
        }
        quad_fast_body(w, o0, n, widened, groups, q, rq, po, s, pairs, npairs);
        return;
    }
#else
    (void)fast;
#endif
    if (groups & 1) {
        quad_body(w, o0, n, widened, groups, q, rq, po, s, NULL, NULL, 0, &pp, 1);
    } else {
        quad_body(w, o0, n, widened, groups, q, rq, po, s, NULL, NULL, 0, &pp, 0);
    }
}

static void __attribute__((noinline)) common(const tt_conv_params *conv, const tt_dims *in_dims, const int8_t *in,
                                             const int8_t *filter, int32_t c_out, tt_out_quant q,
                                             const tt_dims *out_dims, int8_t *out)
{
    const int32_t c_in = in_dims->c, groups = c_in / 4, offset = conv->input_offset;
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t pixels = out_dims->h * out_dims->w;
    const tt_weight_patch *patch = conv->patch != NULL && conv->patch->count > 0 ? conv->patch : NULL; /* 0: none */
    int32_t widened[8 * (TT_PW_GROUPS / 2)];
    tt_rq rq[TT_PW_CHUNK];
    int8_t stage[4 * TT_PW_CHUNK]; /* a last quad of fewer than four pixels: its outputs, n per pixel */
    for (int32_t o0 = 0; o0 < c_out; o0 += TT_PW_CHUNK) {
        const int32_t n = c_out - o0 < TT_PW_CHUNK ? c_out - o0 : TT_PW_CHUNK;
        int fast = 1; /* every channel of the chunk has the prepared form */
        for (int32_t i = 0; i < n; i++) {
            rq[i] = tt_rq_prepare(q.bias[o0 + i], q.multiplier[o0 + i], q.shift[o0 + i]);
            fast &= rq[i].right != 0;
        }
        const int8_t *w = filter + (size_t)o0 * c_in;
        for (int32_t p = 0; p < pixels; p += 4) {
            const int32_t lanes = pixels - p < 4 ? pixels - p : 4;
            quad_in qi;
            for (int32_t l = 0; l < 4; l++) { /* stride 1: output pixel p reads input pixel p */
                const int32_t pl = p + (l < lanes ? l : lanes - 1);
                qi.px[l] = conv->stride == 1 ? in + (size_t)pl * c_in : input_pixel(conv, in_dims, out_dims, in, pl);
            }
            widen4(&qi, groups, offset2, widened);
            int8_t *po = lanes == 4 ? out + (size_t)p * c_out + o0 : stage;
            const ptrdiff_t s = lanes == 4 ? c_out : n;
            if (patch != NULL) {
                quad_patched(w, o0, n, widened, groups, &q, rq, po, s, patch, &qi, offset, fast);
            } else if (groups & 1) {
                quad_odd(w, o0, n, widened, groups, &q, rq, po, s);
            } else if (fast) {
                quad_fast(w, o0, n, widened, groups, &q, rq, po, s);
            } else {
                quad_even(w, o0, n, widened, groups, &q, rq, po, s);
            }
            for (int32_t l = 0; l < 4 && lanes < 4; l++) {
                if (l < lanes) {
                    memcpy(out + (size_t)(p + l) * c_out + o0, stage + l * n, (size_t)n);
                }
            }
        }
    }
}

/* tt_finish2_s8 out of line without its bias (the accumulators a, b start from it), for the channels without the
 * prepared form (kept out of the loops' registers). */
static void __attribute__((noinline)) finish_pair_other(int32_t a, int32_t b, int32_t o, const tt_out_quant *q,
                                                        int8_t *pa, int8_t *pb)
{
    tt_requantize_floor2(&a, &b, q->multiplier[o], q->shift[o], q->output_offset);
    *pa = tt_ssat8(a);
    *pb = tt_ssat8(b);
}

/* finish_pair of output channel o0 + (rq - rq0) into *po and po[step], the channel found from rq only when it has no
 * prepared form. */
static inline __attribute__((always_inline)) void finish_plain(int32_t a, int32_t b, const tt_rq *rq, int32_t k,
                                                               const tt_out_quant *q, int8_t *po, ptrdiff_t step,
                                                               const tt_rq *rq0, int32_t o0)
{
    const tt_rq c = *rq;
    if (c.right != 0) {
        const int32_t ta = tt_rq_twice_biased(a, c, k), tb = tt_rq_twice_biased(b, c, k);
        po[0] = tt_ssat8_half(ta);
        po[step] = tt_ssat8_half(tb);
    } else {
        finish_pair_other(a, b, o0 + (int32_t)(rq - rq0), q, po, po + step);
    }
}


/* Four input channels of two output channels (weights u0, u1) at two pixels (widened x: px0's two words, px1's). */
static inline void dot_group(const int8_t *u0, const int8_t *u1, const int32_t *x, int32_t *a00, int32_t *a01,
                             int32_t *a10, int32_t *a11)
{
    const int32_t u = tt_load4(u0), v = tt_load4(u1);
    const int32_t ue = __sxtb16(u), uo = tt_sxtb16_ror8(u), ve = __sxtb16(v), vo = tt_sxtb16_ror8(v);
    *a00 = __smlad(uo, x[1], __smlad(ue, x[0], *a00));
    *a01 = __smlad(vo, x[1], __smlad(ve, x[0], *a01));
    *a10 = __smlad(uo, x[3], __smlad(ue, x[2], *a10));
    *a11 = __smlad(vo, x[3], __smlad(ve, x[2], *a11));
}


/* tt_patch_delta_1x1 of output channels o, o + 1 (home rows w0, w0 + c_in) at two pixels, added to the four
 * accumulators: each weight difference serves both pixels. */
static inline void patch_pairs(const tt_weight_patch *patch, const int8_t *w0, int32_t c_in, int32_t o,
                               const int8_t *px0, const int8_t *px1, int32_t offset, int32_t *a00, int32_t *a01,
                               int32_t *a10, int32_t *a11)
{
    uint32_t e00 = 0, e01 = 0, e10 = 0, e11 = 0;
    for (int32_t j = 0; j < patch->count; j++) {
        const int32_t c = patch->channel[j];
        const int8_t *sl = tt_patch_slice(patch, j);
        const int32_t d0 = (int32_t)sl[o] - (int32_t)w0[c], d1 = (int32_t)sl[o + 1] - (int32_t)w0[c_in + c];
        const int32_t x0 = (int32_t)px0[c] + offset, x1 = (int32_t)px1[c] + offset;
        e00 += (uint32_t)(d0 * x0);
        e01 += (uint32_t)(d1 * x0);
        e10 += (uint32_t)(d0 * x1);
        e11 += (uint32_t)(d1 * x1);
    }
    *a00 = tt_add_wrap(*a00, (int32_t)e00);
    *a01 = tt_add_wrap(*a01, (int32_t)e01);
    *a10 = tt_add_wrap(*a10, (int32_t)e10);
    *a11 = tt_add_wrap(*a11, (int32_t)e11);
}


/*
 * Output channels o0 .. o0 + (n & ~1) - 1 (weights from w) of two pixels px0, px1 whose inputs (an even number of
 * groups of 4 channels) are widened in `widened`, into po[i] and po[step + i]: 2 output channels x 2 pixels per
 * inner loop, each widened weight word serving both pixels. On the core the loop is inline asm, two groups per
 * iteration (one LDM of a group's four widened words, LDR with post-increment of the two weight words, 4 SXTB16 and
 * 8 SMLAD: 16 instructions per 16 MACs with the CMP and BNE). The accumulators start from the bias, then the
 * corrections for the working slices of `patch` (may be NULL), then the requantisation of the prepared forms rq[].
 * Pointers walk instead of indices (every register is the asm loop's, so each live value is reloaded after it) and
 * the weights of the next pair start where the loop's u1 ends.
 */
static inline __attribute__((always_inline)) void pairs_even(const int8_t *w, int32_t c_in, int32_t o0, int32_t n,
                                                             const int32_t *widened, int32_t groups,
                                                             const tt_out_quant *q, const tt_rq *rq, int8_t *po,
                                                             ptrdiff_t step, const tt_weight_patch *patch,
                                                             const int8_t *px0, const int8_t *px1, int32_t offset)
{
    const int32_t k = 1 + 2 * q->output_offset;
    const tt_rq *const rq0 = rq, *const rq_end = rq + (n & ~1);
#if defined(__arm__)
    const int32_t *const end = widened + 4 * groups;
#endif
    for (; rq < rq_end; rq += 2, po += 2) {
        int32_t b00 = rq[0].bias, b01 = rq[1].bias, b10 = b00, b11 = b01;
        const int8_t *const w0 = w;
#if defined(__arm__)
        const int8_t *u0 = w, *u1 = w + c_in;
        const int32_t *x = widened;
        int32_t t0, t1;
        __asm__("1:\n\t"
                "ldm %[x]!, {r8, r9, r10, r11}\n\t"
                "ldr %[t0], [%[u0]], #4\n\t"
                "sxtb16 %[t1], %[t0], ror #8\n\t"
                "sxtb16 %[t0], %[t0]\n\t"
                "smlad %[b00], %[t0], r8, %[b00]\n\t"
                "smlad %[b10], %[t0], r10, %[b10]\n\t"
                "smlad %[b00], %[t1], r9, %[b00]\n\t"
                "smlad %[b10], %[t1], r11, %[b10]\n\t"
                "ldr %[t0], [%[u1]], #4\n\t"
                "sxtb16 %[t1], %[t0], ror #8\n\t"
                "sxtb16 %[t0], %[t0]\n\t"
                "smlad %[b01], %[t0], r8, %[b01]\n\t"
                "smlad %[b11], %[t0], r10, %[b11]\n\t"
                "smlad %[b01], %[t1], r9, %[b01]\n\t"
                "smlad %[b11], %[t1], r11, %[b11]\n\t"
                "ldm %[x]!, {r8, r9, r10, r11}\n\t"
                "ldr %[t0], [%[u0]], #4\n\t"
                "sxtb16 %[t1], %[t0], ror #8\n\t"
                "sxtb16 %[t0], %[t0]\n\t"
                "smlad %[b00], %[t0], r8, %[b00]\n\t"
                "smlad %[b10], %[t0], r10, %[b10]\n\t"
                "smlad %[b00], %[t1], r9, %[b00]\n\t"
                "smlad %[b10], %[t1], r11, %[b10]\n\t"
                "ldr %[t0], [%[u1]], #4\n\t"
                "sxtb16 %[t1], %[t0], ror #8\n\t"
                "sxtb16 %[t0], %[t0]\n\t"
                "smlad %[b01], %[t0], r8, %[b01]\n\t"
                "smlad %[b11], %[t0], r10, %[b11]\n\t"
                "smlad %[b01], %[t1], r9, %[b01]\n\t"
                "smlad %[b11], %[t1], r11, %[b11]\n\t"
                "cmp %[x], %[end]\n\t"
                "bne 1b"
                : [b00] "+r"(b00), [b01] "+r"(b01), [b10] "+r"(b10), [b11] "+r"(b11), [x] "+r"(x), [u0] "+r"(u0),
                  [u1] "+r"(u1), [t0] "=&r"(t0), [t1] "=&r"(t1)
                : [end] "r"(end)
                : "r8", "r9", "r10", "r11", "cc", "memory");
        w = u1;
#else
        for (int32_t g = 0; g < groups; g++) {
            dot_group(w + 4 * g, w + c_in + 4 * g, widened + 4 * g, &b00, &b01, &b10, &b11);
        }
        w += 2 * c_in;
#endif
        if (patch != NULL) {
            patch_pairs(patch, w0, c_in, o0 + (int32_t)(rq - rq0), px0, px1, offset, &b00, &b01, &b10, &b11);
        }
        finish_plain(b00, b10, rq, k, q, po, step, rq0, o0);
        finish_plain(b01, b11, rq + 1, k, q, po + 1, step, rq0, o0);
    }
}

/* pairs_even without a patch (the unpatched layers: no correction in the loop) and with one, out of line. */
static void __attribute__((noinline)) pairs_even_plain(const int8_t *w, int32_t c_in, int32_t o0, int32_t n,
                                                       const int32_t *widened, int32_t groups, const tt_out_quant *q,
                                                       const tt_rq *rq, int8_t *po, ptrdiff_t step)
{
    pairs_even(w, c_in, o0, n, widened, groups, q, rq, po, step, NULL, NULL, NULL, 0);
}

static void __attribute__((noinline)) pairs_even_patched(const int8_t *w, int32_t c_in, int32_t o0, int32_t n,
                                                         const int32_t *widened, int32_t groups,
                                                         const tt_out_quant *q, const tt_rq *rq, int8_t *po,
                                                         ptrdiff_t step, const tt_weight_patch *patch,
                                                         const int8_t *px0, const int8_t *px1, int32_t offset)
{
    pairs_even(w, c_in, o0, n, widened, groups, q, rq, po, step, patch, px0, px1, offset);
}

/*
 * Inputs too long for the quads (an even group count up to TT_PW_GROUPS): output channels in chunks of TT_PW_CHUNK
 * whose requantisation forms are prepared once, then every pixel pair of the chunk (pairs_even).
 */
static void __attribute__((noinline)) common_long(const tt_conv_params *conv, const tt_dims *in_dims,
                                                  const int8_t *in, const int8_t *filter, int32_t c_out,
                                                  tt_out_quant q, const tt_dims *out_dims, int8_t *out)
{
    const int32_t c_in = in_dims->c, groups = c_in / 4, offset = conv->input_offset;
    const int32_t offset2 = (int32_t)(((uint32_t)(uint16_t)offset << 16) | (uint16_t)offset);
    const int32_t pixels = out_dims->h * out_dims->w;
    const tt_weight_patch *patch = conv->patch != NULL && conv->patch->count > 0 ? conv->patch : NULL; /* 0: none */
    int32_t widened[4 * TT_PW_GROUPS];
    tt_rq rq[TT_PW_CHUNK];
    for (int32_t o0 = 0; o0 < c_out; o0 += TT_PW_CHUNK) {
        const int32_t n = c_out - o0 < TT_PW_CHUNK ? c_out - o0 : TT_PW_CHUNK;
        for (int32_t i = 0; i < n; i++) {
            rq[i] = tt_rq_prepare(q.bias[o0 + i], q.multiplier[o0 + i], q.shift[o0 + i]);
        }
        for (int32_t p = 0; p < pixels; p += 2) {
            const int32_t both = p + 1 < pixels; /* an odd pixel count ends with one pixel, computed as a pair */
            const int8_t *px0 = input_pixel(conv, in_dims, out_dims, in, p);
            const int8_t *px1 = both ? input_pixel(conv, in_dims, out_dims, in, p + 1) : px0;
            int8_t *po0 = out + (size_t)p * c_out;
            int8_t *po1 = both ? po0 + c_out : po0; /* a lone last pixel: its pair is itself, stored twice */
            widen(px0, px1, groups, offset2, widened);
            if (patch == NULL) {
                pairs_even_plain(filter + (size_t)o0 * c_in, c_in, o0, n, widened, groups, &q, rq, po0 + o0,
                                 po1 - po0);
            } else {
                pairs_even_patched(filter + (size_t)o0 * c_in, c_in, o0, n, widened, groups, &q, rq, po0 + o0,
                                   po1 - po0, patch, px0, px1, offset);
            }
            if (n & 1) { /* an odd C_out: the last output of both pixels */
                const int32_t o = o0 + n - 1;
                const int8_t *w0 = filter + (size_t)o * c_in;
                int32_t a00, a10;
                dot_one(w0, widened, groups, &a00, &a10);
                if (patch != NULL) {
                    a00 = tt_add_wrap(a00, tt_patch_delta_1x1(patch, w0, px0, o, offset));
                    a10 = tt_add_wrap(a10, tt_patch_delta_1x1(patch, w0, px1, o, offset));
                }
                tt_finish2_s8(a00, a10, o, q, po0 + o, po1 + o);
            }
        }
    }
}


tt_status tt_pointwise_conv2d_s8(const tt_context *ctx, const tt_conv_params *conv,
                                 const tt_per_channel_quant *quant, const tt_dims *in_dims, const int8_t *in,
                                 const tt_dims *filter_dims, const int8_t *filter, const int32_t *bias,
                                 const tt_dims *out_dims, int8_t *out)
{
    (void)ctx;
    const tt_status st = tt_check_conv_args(TT_CONV_POINTWISE, conv, quant, in_dims, in, filter_dims, filter, bias,
                                            out_dims, out);
    if (st != TT_OK) {
        return st;
    }
    const int32_t c_in = in_dims->c;
    const int32_t c_out = filter_dims->n;
    const out_quant q = {.fin = {.bias = bias, .multiplier = quant->multiplier, .shift = quant->shift,
                                 .output_offset = conv->output_offset},
                         .input_offset = conv->input_offset, .patch = conv->patch};
    const int32_t c4 = c_in & ~3;
    const int32_t groups = c4 / 4;
    if (c4 == c_in && groups <= TT_PW_GROUPS / 2) {
        common(conv, in_dims, in, filter, c_out, q.fin, out_dims, out);
        return TT_OK;
    }
    if (c4 == c_in && groups <= TT_PW_GROUPS && (groups & 1) == 0) {
        common_long(conv, in_dims, in, filter, c_out, q.fin, out_dims, out);
        return TT_OK;
    }
    return other(conv, in_dims, in, filter, c_out, q, out_dims, out);
}
