/*
 * Bare-metal test of one DSP forward convolution kernel on the Cortex-M cores: TT_QEMU_KERNEL names it
 * (tt_depthwise_conv2d_s8, tt_pointwise_conv2d_s8 or tt_conv2d_s8; tt_support.assert_kernel_ok_in_qemu builds it for QEMU
 * with the generated conv_cases.h: each case's input, filter, quantisation, optional weight patch and the output the
 * reference executor computed). Runs every case, compares every output byte and prints, through semihosting,
 * "kernel: FAIL <case> status <s>" or "kernel: FAIL <case> at <index>: got <g>, expected <e>" for the first
 * difference of a case, then "kernel: OK <n> cases" if none differed. Exit status 0 when all match.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qemu_say.h"
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
} conv_case;

#include "conv_cases.h"

#ifndef TT_QEMU_KERNEL
#error "TT_QEMU_KERNEL: the kernel under test (-DTT_QEMU_KERNEL=tt_depthwise_conv2d_s8, ...)"
#endif

static int8_t out[16384];

int main(void)
{
    const int n = (int)(sizeof cases / sizeof cases[0]);
    int failed = 0;
    char b1[12], b2[12], b3[12];
    for (int i = 0; i < n; i++) {
        const conv_case *t = &cases[i];
        const tt_weight_patch patch = {.count = t->patch_count, .channel = t->patch_channel, .base = t->patch_base,
                                       .offset = t->patch_offset, .skip = 0};
        const tt_conv_params conv = {.input_offset = t->input_offset, .output_offset = t->output_offset,
                                     .stride = t->stride, .padding = t->padding,
                                     .patch = t->patch_count > 0 ? &patch : NULL};
        const tt_per_channel_quant quant = {.multiplier = t->multiplier, .shift = t->shift};
        const tt_context ctx = {.buf = NULL, .size = 0};
        const size_t size = (size_t)t->out_dims.h * t->out_dims.w * t->out_dims.c;
        if (size > sizeof out) {
            say("kernel: FAIL ", t->name, " output larger than the test buffer\n", NULL, NULL);
            failed = 1;
            continue;
        }
        memset(out, 0x5A, sizeof out);
        const tt_status st = TT_QEMU_KERNEL(&ctx, &conv, &quant, &t->in_dims, t->in, &t->filter_dims, t->filter,
                                            t->bias, &t->out_dims, out);
        if (st != TT_OK) {
            say("kernel: FAIL ", t->name, " status ", dec((int32_t)st, b1), "\n");
            failed = 1;
            continue;
        }
        for (size_t j = 0; j < size; j++) {
            if (out[j] != t->want[j]) {
                say("kernel: FAIL ", t->name, " at ", dec((int32_t)j, b1), ": got ");
                say(dec(out[j], b2), ", expected ", dec(t->want[j], b3), "\n", NULL);
                failed = 1;
                break;
            }
        }
    }
    if (!failed) {
        say("kernel: OK ", dec(n, b1), " cases\n", NULL, NULL);
    }
    return failed;
}
