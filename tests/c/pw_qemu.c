/*
 * Bare-metal test of the DSP pointwise kernel on the Cortex-M cores (tests/test_kernels.py builds it for QEMU
 * with the generated pw_cases.h: each case's input, filter, quantisation, optional weight patch and the output the
 * reference executor computed). Runs every case, compares every output byte and prints, through semihosting,
 * "pw: FAIL <case> status <s>" or "pw: FAIL <case> at <index>: got <g>, expected <e>" for the first difference of
 * a case, then "pw: OK <n> cases" if none differed. Exit status 0 when all match.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tt_kernels.h"
#include "tt_semihost.h"

typedef struct {
    const char *name;
    tt_dims in_dims, filter_dims, out_dims;
    int32_t input_offset, output_offset, stride, padding;
    const int8_t *in, *filter;
    const int32_t *bias, *multiplier, *shift;
    const int8_t *want;
    int32_t patch_count;
    const uint16_t *patch_channel;
    int8_t *patch_base;
    const uint32_t *patch_offset;
} pw_case;

#include "pw_cases.h"

static int8_t out[16384];

/* Decimal text of v into buf (at least 12 bytes). */
static const char *dec(int32_t v, char *buf)
{
    char *p = buf + 11;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    *p = '\0';
    do {
        *--p = (char)('0' + u % 10u);
        u /= 10u;
    } while (u != 0u);
    if (v < 0) {
        *--p = '-';
    }
    return p;
}

static void say(const char *a, const char *b, const char *c, const char *d, const char *e)
{
    const char *parts[5] = {a, b, c, d, e};
    for (int i = 0; i < 5; i++) {
        if (parts[i] != NULL) {
            tt_sh_write0(parts[i]);
        }
    }
}

int main(void)
{
    const int n = (int)(sizeof cases / sizeof cases[0]);
    int failed = 0;
    char b1[12], b2[12], b3[12];
    for (int i = 0; i < n; i++) {
        const pw_case *t = &cases[i];
        const tt_weight_patch patch = {.count = t->patch_count, .channel = t->patch_channel, .base = t->patch_base,
                                       .offset = t->patch_offset, .skip = 0};
        const tt_conv_params conv = {.input_offset = t->input_offset, .output_offset = t->output_offset,
                                     .stride = t->stride, .padding = t->padding,
                                     .patch = t->patch_count > 0 ? &patch : NULL};
        const tt_per_channel_quant quant = {.multiplier = t->multiplier, .shift = t->shift};
        const tt_context ctx = {.buf = NULL, .size = 0};
        const size_t size = (size_t)t->out_dims.h * t->out_dims.w * t->out_dims.c;
        if (size > sizeof out) {
            say("pw: FAIL ", t->name, " output larger than the test buffer\n", NULL, NULL);
            failed = 1;
            continue;
        }
        memset(out, 0x5A, sizeof out);
        const tt_status st = tt_pointwise_conv2d_s8(&ctx, &conv, &quant, &t->in_dims, t->in, &t->filter_dims,
                                                    t->filter, t->bias, &t->out_dims, out);
        if (st != TT_OK) {
            say("pw: FAIL ", t->name, " status ", dec((int32_t)st, b1), "\n");
            failed = 1;
            continue;
        }
        for (size_t j = 0; j < size; j++) {
            if (out[j] != t->want[j]) {
                say("pw: FAIL ", t->name, " at ", dec((int32_t)j, b1), ": got ");
                say(dec(out[j], b2), ", expected ", dec(t->want[j], b3), "\n", NULL);
                failed = 1;
                break;
            }
        }
    }
    if (!failed) {
        say("pw: OK ", dec(n, b1), " cases\n", NULL, NULL);
    }
    return failed;
}
