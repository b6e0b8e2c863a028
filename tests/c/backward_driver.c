/*
 * Test driver for the training kernels of runtime_c/tt_train.c (used by tests/test_backward_kernels.py).
 *
 *   backward_driver CASE OUT    run the case in file CASE, write the result to file OUT
 *
 * CASE is little-endian int32 fields: magic 0x42545454 ("TTTB"), op, null_mask, then the op's scalar
 * fields (fp32 values as their bit patterns, PRNG states as uint32), then its arrays, each as an int32
 * element count followed by the elements. Every array is allocated with exactly its element count, so
 * an out-of-bounds access shows up under AddressSanitizer. Bit i of null_mask replaces pointer
 * argument i (see each op) by NULL. Arrays the kernel writes in place (accumulated gradients, filters,
 * residuals) are read from the case file as their initial contents.
 * OUT is: int32 status, int32 number of outputs, then per output int32 element size, int32 element
 * count and the elements (raw bytes). A PRNG state is output as one uint32.
 *
 * Ops (fields; arrays; outputs; pointer arguments in null_mask bit order):
 *   1  tt_clamp_mask_s8: size; q:i8 mask_count; mask:u8; q mask
 *   2  tt_grad_quantize_s16: out_dims[4]; g_out:f32 mask:u8 eff_scale:f32 grad_count; grad_q:i16 sigma:f32;
 *      out_dims g_out mask eff_scale grad_q sigma
 *   3, 4  tt_conv2d_s8_bwd_input / tt_depthwise_conv2d_s8_bwd_input: stride padding filter_dims[4]
 *      out_dims[4] in_dims[4] sigma accumulate; filter:i8 grad_q:i16 g_in:f32; g_in:f32;
 *      conv filter_dims filter out_dims grad_q in_dims g_in
 *   5, 6  tt_conv2d_s8_bwd_weight_update / tt_depthwise_conv2d_s8_bwd_weight_update: input_offset stride
 *      padding in_dims[4] out_dims[4] filter_dims[4] c lr sigma rng_state; saved:i8 grad_q:i16 inv_sw2:f32
 *      filter:i8 residual:i8; filter:i8 residual:i8 rng_state:u32;
 *      conv sgd sgd.inv_sw2 sgd.rng in_dims saved out_dims grad_q filter_dims filter residual
 *   7  tt_residual_writeback_s8: filter_dims[4] depthwise c rng_state; residual:i8 filter:i8;
 *      filter:i8 rng_state:u32; filter_dims residual rng filter
 *   8  tt_avgpool_global_bwd_f32: in_dims[4] inv_hw accumulate; g_out:f32 g_in:f32; g_in:f32;
 *      in_dims g_out g_in
 *   9  tt_add_bwd_f32: size ratio1 ratio2 accumulate1 accumulate2 use1 use2 (use = 0 passes NULL);
 *      g_out:f32 mask:u8 g_1:f32 g_2:f32; g_1:f32 g_2:f32; g_out mask
 *   10 tt_softmax_xent_f32: classes label; logits:f32 grad_count; grad:f32 loss:f32; logits grad loss
 *   11 tt_fully_connected_f32_bwd_update: features classes lr in_scale; in:f32 grad:f32 weight:f32
 *      bias:f32 g_in_count; weight:f32 bias:f32 g_in:f32; in grad weight bias g_in
 *   12 tt_depthwise_conv2d_s8_bwd_input with a weight patch: op 4's fields and arrays, then arrays channel:i32
 *      (ascending) and slices:i8 (the working K x K slices of those channels, one after another)
 *   13 tt_conv2d_s8_bwd_input with a weight patch: op 3's fields and arrays, then channel:i32 and slices:i8 as op 12
 *      (the working C_out x K x K slices)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tt_train.h"

#define MAGIC 0x42545454
#define DRIVER_NAME "backward_driver"
#include "driver_io.h"

static float read_f32(FILE *f)
{
    const int32_t bits = read_i32(f);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

typedef struct {
    const void *data;
    int32_t elem;
    int32_t count;
} output;

static void write_result(const char *path, tt_status st, const output *outs, int32_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        die("cannot open output");
    }
    const int32_t head[2] = {(int32_t)st, n};
    if (fwrite(head, sizeof head[0], 2, f) != 2) {
        die("write failed");
    }
    for (int32_t i = 0; i < n; i++) {
        const int32_t desc[2] = {outs[i].elem, outs[i].count};
        if (fwrite(desc, sizeof desc[0], 2, f) != 2 ||
            (outs[i].count > 0 &&
             fwrite(outs[i].data, (size_t)outs[i].elem, (size_t)outs[i].count, f) != (size_t)outs[i].count)) {
            die("write failed");
        }
    }
    if (fclose(f) != 0) {
        die("write failed");
    }
}

static void run_clamp_mask(FILE *f, uint32_t mask, const char *out_path)
{
    const int32_t size = read_i32(f);
    int32_t n_q;
    int8_t *q = read_array(f, 1, &n_q);
    const int32_t n_mask = read_i32(f);
    uint8_t *bits = alloc_exact(1, n_mask);
    const tt_status st = tt_clamp_mask_s8(nul(mask, 0, q), size, nul(mask, 1, bits));
    const output outs[1] = {{bits, 1, n_mask}};
    write_result(out_path, st, outs, 1);
    free(q);
    free(bits);
}

static void run_grad_quantize(FILE *f, uint32_t mask, const char *out_path)
{
    tt_dims out_dims;
    read_dims(f, &out_dims);
    int32_t n_g, n_mask, n_scale;
    float *g_out = read_array(f, sizeof(float), &n_g);
    uint8_t *bits = read_array(f, 1, &n_mask);
    float *eff_scale = read_array(f, sizeof(float), &n_scale);
    const int32_t n_q = read_i32(f);
    int16_t *grad_q = alloc_exact(sizeof(int16_t), n_q);
    float *sigma = alloc_exact(sizeof(float), 1);
    const tt_status st = tt_grad_quantize_s16(nul(mask, 0, &out_dims), nul(mask, 1, g_out), nul(mask, 2, bits),
                                              nul(mask, 3, eff_scale), nul(mask, 4, grad_q), nul(mask, 5, sigma));
    const output outs[2] = {{grad_q, sizeof(int16_t), n_q}, {sigma, sizeof(float), 1}};
    write_result(out_path, st, outs, 2);
    free(g_out);
    free(bits);
    free(eff_scale);
    free(grad_q);
    free(sigma);
}

static void run_bwd_input(FILE *f, int op, uint32_t mask, const char *out_path)
{
    tt_conv_params conv = {.input_offset = 0, .output_offset = 0};
    tt_dims filter_dims, out_dims, in_dims;
    conv.stride = read_i32(f);
    conv.padding = read_i32(f);
    read_dims(f, &filter_dims);
    read_dims(f, &out_dims);
    read_dims(f, &in_dims);
    const float sigma = read_f32(f);
    const int32_t accumulate = read_i32(f);
    int32_t n_filter, n_q, n_in;
    int8_t *filter = read_array(f, 1, &n_filter);
    int16_t *grad_q = read_array(f, sizeof(int16_t), &n_q);
    float *g_in = read_array(f, sizeof(float), &n_in);
    int32_t n_channel = 0, n_slices = 0;
    int32_t *channel32 = NULL;
    uint16_t *channel = NULL;
    int8_t *slices = NULL;
    uint32_t *offset = NULL;
    tt_weight_patch patch;
    conv.patch = NULL;
    if (op == 12 || op == 13) {
        channel32 = read_array(f, 4, &n_channel);
        slices = read_array(f, 1, &n_slices);
        offset = alloc_exact(4, n_channel);
        channel = alloc_exact(2, n_channel);
        const int32_t taps = filter_dims.n * filter_dims.h * filter_dims.w; /* depthwise: n = 1 */
        if (n_slices != n_channel * taps) {
            die("patch slices do not match the channels");
        }
        for (int32_t j = 0; j < n_channel; j++) {
            offset[j] = (uint32_t)(j * taps);
            channel[j] = (uint16_t)channel32[j];
        }
        patch = (tt_weight_patch){.count = n_channel, .channel = channel, .base = slices, .offset = offset,
                                  .skip = 0};
        conv.patch = &patch;
    }
    const tt_conv_params *pc = nul(mask, 0, &conv);
    const tt_dims *pfd = nul(mask, 1, &filter_dims), *pod = nul(mask, 3, &out_dims), *pid = nul(mask, 5, &in_dims);
    tt_status st;
    if (op == 3 || op == 13) {
        st = tt_conv2d_s8_bwd_input(pc, pfd, nul(mask, 2, filter), pod, nul(mask, 4, grad_q), sigma, pid,
                                    accumulate, nul(mask, 6, g_in));
    } else {
        st = tt_depthwise_conv2d_s8_bwd_input(pc, pfd, nul(mask, 2, filter), pod, nul(mask, 4, grad_q), sigma, pid,
                                              accumulate, nul(mask, 6, g_in));
    }
    const output outs[1] = {{g_in, sizeof(float), n_in}};
    write_result(out_path, st, outs, 1);
    free(filter);
    free(grad_q);
    free(g_in);
    free(channel32);
    free(channel);
    free(slices);
    free(offset);
}

static void run_weight_update(FILE *f, int op, uint32_t mask, const char *out_path)
{
    tt_conv_params conv = {.output_offset = 0};
    tt_dims in_dims, out_dims, filter_dims;
    conv.input_offset = read_i32(f);
    conv.stride = read_i32(f);
    conv.padding = read_i32(f);
    read_dims(f, &in_dims);
    read_dims(f, &out_dims);
    read_dims(f, &filter_dims);
    const int32_t c = read_i32(f);
    const float lr = read_f32(f);
    const float sigma = read_f32(f);
    tt_prng rng = {.state = (uint32_t)read_i32(f)};
    int32_t n_saved, n_q, n_inv, n_filter, n_res;
    int8_t *saved = read_array(f, 1, &n_saved);
    int16_t *grad_q = read_array(f, sizeof(int16_t), &n_q);
    float *inv_sw2 = read_array(f, sizeof(float), &n_inv);
    int8_t *filter = read_array(f, 1, &n_filter);
    int8_t *residual = read_array(f, 1, &n_res);
    const tt_sgd_params sgd = {.lr = lr, .sigma = sigma, .inv_sw2 = nul(mask, 2, inv_sw2), .rng = nul(mask, 3, &rng)};
    const tt_conv_params *pc = nul(mask, 0, &conv);
    const tt_sgd_params *ps = nul(mask, 1, (void *)&sgd);
    const tt_dims *pid = nul(mask, 4, &in_dims), *pod = nul(mask, 6, &out_dims), *pfd = nul(mask, 8, &filter_dims);
    tt_status st;
    if (op == 5) {
        st = tt_conv2d_s8_bwd_weight_update(pc, ps, pid, nul(mask, 5, saved), c, pod, nul(mask, 7, grad_q), pfd,
                                            nul(mask, 9, filter), nul(mask, 10, residual));
    } else {
        st = tt_depthwise_conv2d_s8_bwd_weight_update(pc, ps, pid, nul(mask, 5, saved), c, pod, nul(mask, 7, grad_q),
                                                      pfd, nul(mask, 9, filter), nul(mask, 10, residual));
    }
    const output outs[3] = {{filter, 1, n_filter}, {residual, 1, n_res}, {&rng.state, sizeof(uint32_t), 1}};
    write_result(out_path, st, outs, 3);
    free(saved);
    free(grad_q);
    free(inv_sw2);
    free(filter);
    free(residual);
}

static void run_writeback(FILE *f, uint32_t mask, const char *out_path)
{
    tt_dims filter_dims;
    read_dims(f, &filter_dims);
    const int32_t depthwise = read_i32(f);
    const int32_t c = read_i32(f);
    tt_prng rng = {.state = (uint32_t)read_i32(f)};
    int32_t n_res, n_filter;
    int8_t *residual = read_array(f, 1, &n_res);
    int8_t *filter = read_array(f, 1, &n_filter);
    const tt_status st = tt_residual_writeback_s8(nul(mask, 0, &filter_dims), depthwise, c, nul(mask, 1, residual),
                                                  nul(mask, 2, &rng), nul(mask, 3, filter));
    const output outs[2] = {{filter, 1, n_filter}, {&rng.state, sizeof(uint32_t), 1}};
    write_result(out_path, st, outs, 2);
    free(residual);
    free(filter);
}

static void run_avgpool_bwd(FILE *f, uint32_t mask, const char *out_path)
{
    tt_dims in_dims;
    read_dims(f, &in_dims);
    const float inv_hw = read_f32(f);
    const int32_t accumulate = read_i32(f);
    int32_t n_out, n_in;
    float *g_out = read_array(f, sizeof(float), &n_out);
    float *g_in = read_array(f, sizeof(float), &n_in);
    const tt_status st = tt_avgpool_global_bwd_f32(nul(mask, 0, &in_dims), nul(mask, 1, g_out), inv_hw, accumulate,
                                                   nul(mask, 2, g_in));
    const output outs[1] = {{g_in, sizeof(float), n_in}};
    write_result(out_path, st, outs, 1);
    free(g_out);
    free(g_in);
}

static void run_add_bwd(FILE *f, uint32_t mask, const char *out_path)
{
    const int32_t size = read_i32(f);
    const float ratio1 = read_f32(f);
    const float ratio2 = read_f32(f);
    const int32_t accumulate1 = read_i32(f);
    const int32_t accumulate2 = read_i32(f);
    const int32_t use1 = read_i32(f);
    const int32_t use2 = read_i32(f);
    int32_t n_out, n_mask, n1, n2;
    float *g_out = read_array(f, sizeof(float), &n_out);
    uint8_t *bits = read_array(f, 1, &n_mask);
    float *g_1 = read_array(f, sizeof(float), &n1);
    float *g_2 = read_array(f, sizeof(float), &n2);
    const tt_status st = tt_add_bwd_f32(nul(mask, 0, g_out), nul(mask, 1, bits), size, ratio1, ratio2, accumulate1,
                                        use1 ? g_1 : NULL, accumulate2, use2 ? g_2 : NULL);
    const output outs[2] = {{g_1, sizeof(float), n1}, {g_2, sizeof(float), n2}};
    write_result(out_path, st, outs, 2);
    free(g_out);
    free(bits);
    free(g_1);
    free(g_2);
}

static void run_softmax_xent(FILE *f, uint32_t mask, const char *out_path)
{
    const int32_t classes = read_i32(f);
    const int32_t label = read_i32(f);
    int32_t n_logits;
    float *logits = read_array(f, sizeof(float), &n_logits);
    const int32_t n_grad = read_i32(f);
    float *grad = alloc_exact(sizeof(float), n_grad);
    float *loss = alloc_exact(sizeof(float), 1);
    const tt_status st = tt_softmax_xent_f32(nul(mask, 0, logits), classes, label, nul(mask, 1, grad),
                                             nul(mask, 2, loss));
    const output outs[2] = {{grad, sizeof(float), n_grad}, {loss, sizeof(float), 1}};
    write_result(out_path, st, outs, 2);
    free(logits);
    free(grad);
    free(loss);
}

static void run_fc_bwd(FILE *f, uint32_t mask, const char *out_path)
{
    const int32_t features = read_i32(f);
    const int32_t classes = read_i32(f);
    const float lr = read_f32(f);
    const float in_scale = read_f32(f);
    int32_t n_in, n_grad, n_w, n_b;
    float *in = read_array(f, sizeof(float), &n_in);
    float *grad = read_array(f, sizeof(float), &n_grad);
    float *weight = read_array(f, sizeof(float), &n_w);
    float *bias = read_array(f, sizeof(float), &n_b);
    const int32_t n_g = read_i32(f);
    float *g_in = alloc_exact(sizeof(float), n_g);
    const tt_status st = tt_fully_connected_f32_bwd_update(nul(mask, 0, in), nul(mask, 1, grad), features, classes,
                                                           lr, in_scale, nul(mask, 2, weight), nul(mask, 3, bias),
                                                           nul(mask, 4, g_in));
    const output outs[3] = {{weight, sizeof(float), n_w}, {bias, sizeof(float), n_b}, {g_in, sizeof(float), n_g}};
    write_result(out_path, st, outs, 3);
    free(in);
    free(grad);
    free(weight);
    free(bias);
    free(g_in);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        die("usage: backward_driver CASE OUT");
    }
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) {
        die("cannot open case file");
    }
    if (read_i32(f) != MAGIC) {
        die("bad magic");
    }
    const int op = read_i32(f);
    const uint32_t mask = (uint32_t)read_i32(f);
    switch (op) {
    case 1:
        run_clamp_mask(f, mask, argv[2]);
        break;
    case 2:
        run_grad_quantize(f, mask, argv[2]);
        break;
    case 3:
    case 4:
    case 12:
    case 13:
        run_bwd_input(f, op, mask, argv[2]);
        break;
    case 5:
    case 6:
        run_weight_update(f, op, mask, argv[2]);
        break;
    case 7:
        run_writeback(f, mask, argv[2]);
        break;
    case 8:
        run_avgpool_bwd(f, mask, argv[2]);
        break;
    case 9:
        run_add_bwd(f, mask, argv[2]);
        break;
    case 10:
        run_softmax_xent(f, mask, argv[2]);
        break;
    case 11:
        run_fc_bwd(f, mask, argv[2]);
        break;
    default:
        die("unknown op");
    }
    fclose(f);
    return 0;
}
