/*
 * Test driver for the runtime_c kernels (used by tests/test_kernels.py).
 *
 *   kernel_driver CASE OUT    run the case in file CASE, write the result to file OUT
 *   kernel_driver status      print "code name" for every status code, one per line
 *
 * CASE is little-endian int32 fields: magic 0x444B5454 ("TTKD"), op, null_mask, then the op's
 * scalar fields, then its arrays, each as an int32 element count followed by the elements.
 * Every array is allocated with exactly its element count, so an out-of-bounds access shows up
 * under AddressSanitizer. Bit i of null_mask replaces pointer argument i (see each op) by NULL.
 * OUT is: int32 status, int32 element count, the output elements (raw bytes).
 *
 * Ops (pointer arguments in null_mask bit order):
 *   1, 2, 3  conv2d / depthwise / pointwise: fields in_dims[4] filter_dims[4] out_dims[4]
 *            input_offset output_offset stride padding; arrays in:i8 filter:i8 bias:i32
 *            multiplier:i32 shift:i32 out_count; pointers conv quant multiplier shift in_dims in
 *            filter_dims filter bias out_dims out
 *   11, 12, 13  the same convolutions with a weight patch (tt_weight_patch): after out_count the arrays
 *            channel:i32 (ascending input channels) and slices:i8 (the working slice of each, contiguous, in
 *            channel order; the filter array is then the home weights)
 *   4        add: fields the 10 tt_add_params, size, in_place (0 none, 1 out = in1, 2 out = in2);
 *            arrays in1:i8 in2:i8 out_count; pointers params in1 in2 out
 *   5        avgpool_global: fields in_dims[4]; arrays in:i8 out_count; pointers in_dims in out
 *   6        dequantize: fields size zero scale(float32 bits); arrays in:i8 out_count (f32);
 *            pointers in out
 *   7        fully_connected_f32: fields features classes; arrays in:f32 weight:f32 bias:f32
 *            out_count (f32); pointers in weight bias out
 *   8, 9, 10 tt_requantize(x, m, s) / tt_srdhm(x, m) / tt_rdbpot(x, s) elementwise: arrays
 *            x:i32 m:i32 s:i32 (same count); output i32; status is TT_OK
 *   11       depthwise with a weight patch: op 2's fields and arrays, then arrays channel:i32 (ascending)
 *            and slices:i8 (the working K x K slices of those channels, one after another)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tt_kernels.h"
#include "tt_requant.h"

#define MAGIC 0x444B5454
#define DRIVER_NAME "kernel_driver"
#include "driver_io.h"

static void write_result(const char *path, tt_status st, const void *data, size_t elem, int32_t count)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        die("cannot open output");
    }
    const int32_t head[2] = {(int32_t)st, count};
    if (fwrite(head, sizeof head[0], 2, f) != 2 ||
        (count > 0 && fwrite(data, elem, (size_t)count, f) != (size_t)count) || fclose(f) != 0) {
        die("write failed");
    }
}


static void run_conv(FILE *f, int op, uint32_t mask, const char *out_path)
{
    tt_dims in_dims, filter_dims, out_dims;
    tt_conv_params conv;
    read_dims(f, &in_dims);
    read_dims(f, &filter_dims);
    read_dims(f, &out_dims);
    conv.input_offset = read_i32(f);
    conv.output_offset = read_i32(f);
    conv.stride = read_i32(f);
    conv.padding = read_i32(f);
    conv.patch = NULL;
    int32_t n_in, n_filter, n_bias, n_mult, n_shift;
    int8_t *in = read_array(f, 1, &n_in);
    int8_t *filter = read_array(f, 1, &n_filter);
    int32_t *bias = read_array(f, 4, &n_bias);
    int32_t *mult = read_array(f, 4, &n_mult);
    int32_t *shift = read_array(f, 4, &n_shift);
    const int32_t n_out = read_i32(f);
    int8_t *out = alloc_exact(1, n_out);
    int32_t n_channel = 0, n_slices = 0;
    int32_t *channel32 = NULL;
    int8_t *slices = NULL;
    uint16_t *channel = NULL;
    uint32_t *offset = NULL;
    tt_weight_patch patch;
    if (op > 10) {
        channel32 = read_array(f, 4, &n_channel);
        slices = read_array(f, 1, &n_slices);
        if (n_channel < 1 || n_slices % n_channel != 0) {
            die("bad weight patch");
        }
        channel = alloc_exact(sizeof *channel, n_channel);
        offset = alloc_exact(sizeof *offset, n_channel);
        for (int32_t j = 0; j < n_channel; j++) {
            channel[j] = (uint16_t)channel32[j];
            offset[j] = (uint32_t)(j * (n_slices / n_channel));
        }
        patch = (tt_weight_patch){.count = n_channel, .channel = channel, .base = slices, .offset = offset, .skip = 0};
        conv.patch = &patch;
        op -= 10;
    }
    const tt_per_channel_quant quant = {.multiplier = nul(mask, 2, mult), .shift = nul(mask, 3, shift)};
    const tt_context ctx = {.buf = NULL, .size = 0};
    const tt_conv_params *pc = nul(mask, 0, &conv);
    const tt_per_channel_quant *pq = nul(mask, 1, (void *)&quant);
    const tt_dims *pid = nul(mask, 4, &in_dims), *pfd = nul(mask, 6, &filter_dims);
    const tt_dims *pod = nul(mask, 9, &out_dims);
    const int8_t *pin = nul(mask, 5, in), *pf = nul(mask, 7, filter);
    const int32_t *pb = nul(mask, 8, bias);
    int8_t *po = nul(mask, 10, out);
    tt_status st;
    if (op == 1) {
        st = tt_conv2d_s8(&ctx, pc, pq, pid, pin, pfd, pf, pb, pod, po);
    } else if (op == 2) {
        st = tt_depthwise_conv2d_s8(&ctx, pc, pq, pid, pin, pfd, pf, pb, pod, po);
    } else {
        st = tt_pointwise_conv2d_s8(&ctx, pc, pq, pid, pin, pfd, pf, pb, pod, po);
    }
    write_result(out_path, st, out, 1, n_out);
    free(channel32);
    free(slices);
    free(channel);
    free(offset);
    free(in);
    free(filter);
    free(bias);
    free(mult);
    free(shift);
    free(out);
}

static void run_add(FILE *f, uint32_t mask, const char *out_path)
{
    tt_add_params p;
    p.input1_offset = read_i32(f);
    p.input1_multiplier = read_i32(f);
    p.input1_shift = read_i32(f);
    p.input2_offset = read_i32(f);
    p.input2_multiplier = read_i32(f);
    p.input2_shift = read_i32(f);
    p.output_offset = read_i32(f);
    p.output_multiplier = read_i32(f);
    p.output_shift = read_i32(f);
    p.left_shift = read_i32(f);
    const int32_t size = read_i32(f);
    const int32_t in_place = read_i32(f);
    int32_t n1, n2;
    int8_t *in1 = read_array(f, 1, &n1);
    int8_t *in2 = read_array(f, 1, &n2);
    const int32_t n_out = read_i32(f);
    int8_t *own = alloc_exact(1, n_out);
    int8_t *out = in_place == 1 ? in1 : (in_place == 2 ? in2 : own);
    const int32_t n_written = in_place == 1 ? n1 : (in_place == 2 ? n2 : n_out);
    const tt_status st =
        tt_add_s8(nul(mask, 0, &p), nul(mask, 1, in1), nul(mask, 2, in2), size, nul(mask, 3, out));
    write_result(out_path, st, out, 1, n_written);
    free(in1);
    free(in2);
    free(own);
}

static void run_avgpool(FILE *f, uint32_t mask, const char *out_path)
{
    tt_dims in_dims;
    read_dims(f, &in_dims);
    int32_t n_in;
    int8_t *in = read_array(f, 1, &n_in);
    const int32_t n_out = read_i32(f);
    int8_t *out = alloc_exact(1, n_out);
    const tt_status st = tt_avgpool_global_s8(nul(mask, 0, &in_dims), nul(mask, 1, in), nul(mask, 2, out));
    write_result(out_path, st, out, 1, n_out);
    free(in);
    free(out);
}

static void run_dequantize(FILE *f, uint32_t mask, const char *out_path)
{
    const int32_t size = read_i32(f);
    const int32_t zero = read_i32(f);
    const int32_t scale_bits = read_i32(f);
    float scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    int32_t n_in;
    int8_t *in = read_array(f, 1, &n_in);
    const int32_t n_out = read_i32(f);
    float *out = alloc_exact(sizeof(float), n_out);
    const tt_status st = tt_dequantize_s8_f32(nul(mask, 0, in), size, zero, scale, nul(mask, 1, out));
    write_result(out_path, st, out, sizeof(float), n_out);
    free(in);
    free(out);
}

static void run_fc(FILE *f, uint32_t mask, const char *out_path)
{
    const int32_t features = read_i32(f);
    const int32_t classes = read_i32(f);
    int32_t n_in, n_w, n_b;
    float *in = read_array(f, sizeof(float), &n_in);
    float *weight = read_array(f, sizeof(float), &n_w);
    float *bias = read_array(f, sizeof(float), &n_b);
    const int32_t n_out = read_i32(f);
    float *out = alloc_exact(sizeof(float), n_out);
    const tt_status st = tt_fully_connected_f32(nul(mask, 0, in), nul(mask, 1, weight), nul(mask, 2, bias),
                                                features, classes, nul(mask, 3, out));
    write_result(out_path, st, out, sizeof(float), n_out);
    free(in);
    free(weight);
    free(bias);
    free(out);
}

static void run_requant(FILE *f, int op, const char *out_path)
{
    int32_t nx, nm, ns;
    int32_t *x = read_array(f, 4, &nx);
    int32_t *m = read_array(f, 4, &nm);
    int32_t *s = read_array(f, 4, &ns);
    if (nm != nx || ns != nx) {
        die("requant arrays differ in length");
    }
    int32_t *out = alloc_exact(4, nx);
    for (int32_t i = 0; i < nx; i++) {
        if (op == 8) {
            out[i] = tt_requantize(x[i], m[i], s[i]);
        } else if (op == 9) {
            out[i] = tt_srdhm(x[i], m[i]);
        } else {
            out[i] = tt_rdbpot(x[i], s[i]);
        }
    }
    write_result(out_path, TT_OK, out, 4, nx);
    free(x);
    free(m);
    free(s);
    free(out);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "status") == 0) {
        for (int code = -1; code <= TT_STATUS_COUNT; code++) {
            printf("%d %s\n", code, tt_status_name((tt_status)code));
        }
        return 0;
    }
    if (argc != 3) {
        die("usage: kernel_driver CASE OUT | kernel_driver status");
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
    case 2:
    case 3:
    case 11:
    case 12:
    case 13:
        run_conv(f, op, mask, argv[2]);
        break;
    case 4:
        run_add(f, mask, argv[2]);
        break;
    case 5:
        run_avgpool(f, mask, argv[2]);
        break;
    case 6:
        run_dequantize(f, mask, argv[2]);
        break;
    case 7:
        run_fc(f, mask, argv[2]);
        break;
    case 8:
    case 9:
    case 10:
        run_requant(f, op, argv[2]);
        break;
    default:
        die("unknown op");
    }
    fclose(f);
    return 0;
}
