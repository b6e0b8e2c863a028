/*
 * trady host simulator: drives a generated model on the host for verification and benchmarks.
 *
 *   host_sim forward IMAGES N OUT   run N int8 images (file of N * input size bytes); write, per
 *                                   image, every op's int8 output in op order, then the fp32 logits
 *   host_sim bench IMAGES N         time the forward pass; prints "forward_us_per_image <float>"
 *
 * Exit status: 0 ok, 1 kernel error, 2 bad usage or I/O error (one line on stderr).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "host_sim: %s: %s\n", what, detail);
    return 2;
}

static int8_t *read_images(const char *path, long n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    int8_t *buf = malloc((size_t)n * MODEL_INPUT_SIZE);
    if (buf != NULL && fread(buf, MODEL_INPUT_SIZE, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static void write_output(int32_t op, const int8_t *data, int32_t size, void *user)
{
    (void)op;
    FILE *f = user;
    fwrite(data, 1, (size_t)size, f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        return fail("usage", "host_sim forward IMAGES N OUT | host_sim bench IMAGES N");
    }
    const long n = strtol(argv[3], NULL, 10);
    if (n < 1) {
        return fail(argv[3], "N must be a positive integer");
    }
    int8_t *images = read_images(argv[2], n);
    if (images == NULL) {
        return fail(argv[2], "cannot read N images of MODEL_INPUT_SIZE bytes");
    }
    float logits[MODEL_NUM_CLASSES];
    model_init();
    int status = 0;
    if (strcmp(argv[1], "forward") == 0 && argc == 5) {
        FILE *out = fopen(argv[4], "wb");
        if (out == NULL) {
            free(images);
            return fail(argv[4], "cannot open for writing");
        }
        for (long i = 0; i < n && status == 0; i++) {
            memcpy(model_input(), images + (size_t)i * MODEL_INPUT_SIZE, MODEL_INPUT_SIZE);
            tt_status st = model_forward(logits, write_output, out);
            if (st != TT_OK) {
                fprintf(stderr, "host_sim: image %ld: forward failed: %s\n", i, tt_status_name(st));
                status = 1;
            }
            fwrite(logits, sizeof logits[0], MODEL_NUM_CLASSES, out);
        }
        if (fclose(out) != 0) {
            status = fail(argv[4], "write failed");
        }
    } else if (strcmp(argv[1], "bench") == 0 && argc == 4) {
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            const double t0 = now_s();
            for (long i = 0; i < n && status == 0; i++) {
                memcpy(model_input(), images + (size_t)i * MODEL_INPUT_SIZE, MODEL_INPUT_SIZE);
                status = model_forward(logits, NULL, NULL) == TT_OK ? 0 : 1;
            }
            const double dt = (now_s() - t0) / (double)n;
            best = dt < best ? dt : best;
        }
        printf("forward_us_per_image %.1f\n", best * 1e6);
    } else {
        status = fail(argv[1], "unknown command or wrong argument count");
    }
    free(images);
    return status;
}
