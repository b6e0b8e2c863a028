/*
 * Bare-metal test of the DSP input gradients (pointwise and depthwise) on the Cortex-M cores
 * (tests/test_backward_kernels.py builds it for QEMU with the generated bwd_cases.h: each case's filter, G, sigma,
 * starting g_in, optional weight patch and the g_in the reference computed, as fp32 bit patterns). The inline-assembly
 * loops of runtime_c/arm/tt_conv_bwd_s8.c run only here and in the firmware. A case may pass G at an odd halfword
 * (the unaligned path). Prints, through
 * semihosting, "bwd: FAIL <case> status <s>" or "bwd: FAIL <case> at <index>: got <g>, expected <e>" for the first
 * difference of a case, then "bwd: OK <n> cases" if none differed. Exit status 0 when all match.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "qemu_say.h"
#include "tt_semihost.h"
#include "tt_train.h"

typedef struct {
    const char *name;
    int32_t depthwise, stride, padding;
    tt_dims filter_dims, out_dims, in_dims;
    float sigma;
    int32_t accumulate, unaligned;
    const int8_t *filter;
    const int16_t *grad_q;
    const uint32_t *g_in0, *want;
    int32_t patch_count;
    const uint16_t *patch_channel;
    int8_t *patch_base;
    const uint32_t *patch_offset;
} bwd_case;

#include "bwd_cases.h"

static float g_in[4096];
static int16_t grad_copy[8192 + 2] __attribute__((aligned(4)));

int main(void)
{
    const int n = (int)(sizeof cases / sizeof cases[0]);
    int failed = 0;
    char b1[12], b2[12], b3[12];
    for (int i = 0; i < n; i++) {
        const bwd_case *t = &cases[i];
        const tt_weight_patch patch = {.count = t->patch_count, .channel = t->patch_channel, .base = t->patch_base,
                                       .offset = t->patch_offset, .skip = 0};
        const tt_conv_params conv = {.input_offset = 0, .output_offset = 0, .stride = t->stride, .padding = t->padding,
                                     .patch = t->patch_count > 0 ? &patch : NULL};
        const size_t size = (size_t)t->in_dims.h * t->in_dims.w * t->in_dims.c;
        const size_t g_size = (size_t)t->out_dims.h * t->out_dims.w * t->out_dims.c;
        if (size > sizeof g_in / sizeof g_in[0] || g_size + 2 > sizeof grad_copy / sizeof grad_copy[0]) {
            say("bwd: FAIL ", t->name, " larger than the test buffers\n", NULL, NULL);
            failed = 1;
            continue;
        }
        memcpy(g_in, t->g_in0, size * sizeof g_in[0]);
        int16_t *g = grad_copy + (t->unaligned ? 1 : 0);
        memcpy(g, t->grad_q, g_size * sizeof g[0]);
        const tt_status st =
            t->depthwise ? tt_depthwise_conv2d_s8_bwd_input(&conv, &t->filter_dims, t->filter, &t->out_dims, g,
                                                            t->sigma, &t->in_dims, t->accumulate, g_in)
                         : tt_conv2d_s8_bwd_input(&conv, &t->filter_dims, t->filter, &t->out_dims, g, t->sigma,
                                                  &t->in_dims, t->accumulate, g_in);
        if (st != TT_OK) {
            say("bwd: FAIL ", t->name, " status ", dec(st, b1), "\n");
            failed = 1;
            continue;
        }
        for (size_t j = 0; j < size; j++) {
            uint32_t got;
            memcpy(&got, &g_in[j], sizeof got);
            if (got != t->want[j]) {
                say("bwd: FAIL ", t->name, " at ", dec((int32_t)j, b1), ": got ");
                say(dec((int32_t)got, b2), ", expected ", dec((int32_t)t->want[j], b3), " (fp32 bits)\n", NULL);
                failed = 1;
                break;
            }
        }
    }
    if (!failed) {
        say("bwd: OK ", dec(n, b1), " cases\n", NULL, NULL);
    }
    tt_sh_exit(failed);
}
