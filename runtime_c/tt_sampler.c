/* trady runtime: the TraDy channel sampler (SPEC 7), bit-identical to compiler/sampler.py. */
#include <stddef.h>

#include "tt_train.h"

static inline int32_t bit_get(const uint8_t *bits, int32_t i)
{
    return (bits[i >> 3] >> (i & 7)) & 1;
}

static inline void bit_set(uint8_t *bits, int32_t i)
{
    bits[i >> 3] = (uint8_t)(bits[i >> 3] | (1u << (i & 7)));
}

static tt_status collect(const tt_pool *pool, const uint8_t *chosen, tt_selection *sel)
{
    sel->count = 0;
    sel->units = 0;
    for (int32_t i = 0; i < pool->size; i++) {
        if (bit_get(chosen, i)) {
            if (sel->count >= sel->capacity) {
                return TT_ERR_RANGE;
            }
            sel->entries[sel->count++] = (uint16_t)i;
            sel->units += pool->layer_cost[pool->entry_layer[i]];
        }
    }
    return TT_OK;
}

tt_status tt_sampler_select(const tt_pool *pool, uint32_t budget, tt_prng *rng, uint8_t *drawn, uint8_t *chosen,
                            tt_selection *sel)
{
    if (pool == NULL || rng == NULL || drawn == NULL || chosen == NULL || sel == NULL) {
        return TT_ERR_ARG;
    }
    for (int32_t i = 0; i < (pool->size + 7) / 8; i++) {
        drawn[i] = 0;
        chosen[i] = 0;
    }
    uint32_t remaining = budget;
    int32_t n_drawn = 0;
    while (n_drawn < pool->size && remaining >= pool->min_cost) {
        const int32_t r = (int32_t)tt_prng_bounded(rng, (uint32_t)pool->size);
        if (bit_get(drawn, r)) {
            continue; /* already drawn: redraw (sampling without replacement) */
        }
        bit_set(drawn, r);
        n_drawn++;
        const uint32_t cost = pool->layer_cost[pool->entry_layer[r]];
        if (cost <= remaining) {
            bit_set(chosen, r);
            remaining -= cost;
        }
    }
    return collect(pool, chosen, sel);
}

tt_status tt_selection_set(const tt_pool *pool, const uint16_t *entries, int32_t count, tt_selection *sel)
{
    if (pool == NULL || sel == NULL || (entries == NULL && count > 0) || count > sel->capacity) {
        return TT_ERR_ARG;
    }
    sel->count = 0;
    sel->units = 0;
    for (int32_t j = 0; j < count; j++) {
        if (entries[j] >= pool->size || (j > 0 && entries[j] <= entries[j - 1])) {
            return TT_ERR_ARG;
        }
        sel->entries[sel->count++] = entries[j];
        sel->units += pool->layer_cost[pool->entry_layer[entries[j]]];
    }
    return TT_OK;
}

tt_status tt_selection_layout(const tt_pool *pool, const uint32_t *block_bytes, uint32_t arena_bytes,
                              tt_selection *sel)
{
    if (pool == NULL || block_bytes == NULL || sel == NULL) {
        return TT_ERR_ARG;
    }
    uint32_t offset = 0;
    int32_t layer = 0;
    for (int32_t j = 0; j < sel->count; j++) {
        const int32_t l = pool->entry_layer[sel->entries[j]];
        while (layer <= l) {
            sel->layer_begin[layer++] = j;
        }
        sel->offsets[j] = offset;
        offset += block_bytes[l];
    }
    while (layer <= pool->num_layers) {
        sel->layer_begin[layer++] = sel->count;
    }
    sel->bytes = offset;
    return offset <= arena_bytes ? TT_OK : TT_ERR_RANGE;
}
