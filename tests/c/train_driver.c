/*
 * Test driver for the training runtime's scalar pieces: PRNG, tt_expf/tt_cosf, the learning-rate
 * schedule and the sampler. Reads commands on argv, prints numbers one per line (tests/test_training.py).
 *   prng SEED STREAM N          N raw values, then N bounded(1000003) values, then N uniforms (%a)
 *   expf X...                   tt_expf of each hex-float argument (%a)
 *   cosf X...                   tt_cosf (%a)
 *   lr BASE WARMUP TOTAL        tt_lr_cosine for steps 0..TOTAL (%a)
 *   sample POOL_FILE BUDGET SEED EPOCHS
 *                               POOL_FILE: int32 size, int32 num_layers, uint32 min_cost, uint16 layer[size],
 *                               uint16 channel[size], uint32 cost[num_layers]; prints per epoch the count, units
 *                               and the selected pool indices
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "tt_fmath.h"
#include "tt_prng.h"
#include "tt_train.h"

static int sample(char **argv)
{
    FILE *f = fopen(argv[2], "rb");
    if (f == NULL) {
        return 2;
    }
    int32_t size, layers;
    uint32_t min_cost;
    if (fread(&size, 4, 1, f) != 1 || fread(&layers, 4, 1, f) != 1 || fread(&min_cost, 4, 1, f) != 1) {
        return 2;
    }
    uint16_t *layer = malloc(2 * (size_t)size + 2), *channel = malloc(2 * (size_t)size + 2);
    uint32_t *cost = malloc(4 * (size_t)layers + 4);
    if (fread(layer, 2, (size_t)size, f) != (size_t)size || fread(channel, 2, (size_t)size, f) != (size_t)size ||
        fread(cost, 4, (size_t)layers, f) != (size_t)layers) {
        return 2;
    }
    fclose(f);
    tt_pool pool = {.entry_layer = layer, .entry_channel = channel, .layer_cost = cost, .size = size,
                    .num_layers = layers, .min_cost = min_cost};
    uint16_t *entries = malloc(2 * (size_t)size + 2);
    uint32_t *offsets = malloc(4 * (size_t)size + 4);
    int32_t *begin = malloc(4 * (size_t)layers + 4);
    uint8_t *drawn = malloc((size_t)size / 8 + 1), *chosen = malloc((size_t)size / 8 + 1);
    tt_selection sel = {.entries = entries, .offsets = offsets, .layer_begin = begin, .capacity = size};
    tt_prng rng;
    tt_prng_seed(&rng, (uint32_t)strtoul(argv[4], NULL, 10), TT_STREAM_SAMPLER);
    const uint32_t budget = (uint32_t)strtoul(argv[3], NULL, 10);
    for (long e = 0; e < strtol(argv[5], NULL, 10); e++) {
        if (tt_sampler_select(&pool, budget, &rng, drawn, chosen, &sel) != TT_OK) {
            return 1;
        }
        printf("%d %u", (int)sel.count, (unsigned)sel.units);
        for (int32_t j = 0; j < sel.count; j++) {
            printf(" %u", (unsigned)entries[j]);
        }
        printf("\n");
    }
    free(layer);
    free(channel);
    free(cost);
    free(entries);
    free(offsets);
    free(begin);
    free(drawn);
    free(chosen);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        return 2;
    }
    if (strcmp(argv[1], "prng") == 0 && argc == 5) {
        tt_prng rng;
        const long n = strtol(argv[4], NULL, 10);
        tt_prng_seed(&rng, (uint32_t)strtoul(argv[2], NULL, 10), (uint32_t)strtoul(argv[3], NULL, 10));
        for (long i = 0; i < n; i++) {
            printf("%u\n", (unsigned)tt_prng_next(&rng));
        }
        for (long i = 0; i < n; i++) {
            printf("%u\n", (unsigned)tt_prng_bounded(&rng, 1000003u));
        }
        for (long i = 0; i < n; i++) {
            printf("%a\n", (double)tt_prng_uniform(&rng));
        }
        return 0;
    }
    if ((strcmp(argv[1], "expf") == 0 || strcmp(argv[1], "cosf") == 0)) {
        for (int i = 2; i < argc; i++) {
            const float x = strtof(argv[i], NULL);
            printf("%a\n", (double)(argv[1][0] == 'e' ? tt_expf(x) : tt_cosf(x)));
        }
        return 0;
    }
    if (strcmp(argv[1], "lr") == 0 && argc == 5) {
        const float base = strtof(argv[2], NULL);
        const int32_t warm = (int32_t)strtol(argv[3], NULL, 10), total = (int32_t)strtol(argv[4], NULL, 10);
        for (int32_t s = 0; s <= total; s++) {
            printf("%a\n", (double)tt_lr_cosine(base, s, warm, total));
        }
        return 0;
    }
    if (strcmp(argv[1], "sample") == 0 && argc == 6) {
        return sample(argv);
    }
    return 2;
}
