/* trady runtime: page-buffered writes to the flash home of trainable weights (see tt_flash.h). */
#include <stddef.h>
#include <string.h>

#include "tt_flash.h"

__attribute__((weak)) tt_status tt_flash_program_page(int8_t *page, const uint8_t *data, int32_t bytes)
{
    memset(page, 0xFF, (size_t)bytes); /* erase */
    memcpy(page, data, (size_t)bytes); /* program */
    return TT_OK;
}

static int flash_bad(const tt_flash *flash)
{
    return flash == NULL || flash->base == NULL || flash->page_buffer == NULL || flash->page_bytes < 1 ||
           flash->size < 0 || flash->size % flash->page_bytes != 0;
}

/* Program the page at region offset `page` from the page buffer if the buffer differs from it. */
static tt_status commit(tt_flash *flash, int32_t page)
{
    if (memcmp(flash->base + page, flash->page_buffer, (size_t)flash->page_bytes) == 0) {
        return TT_OK;
    }
    if (flash->journal != NULL) {
        const tt_status st = flash->journal(flash->journal_ctx, page, flash->page_buffer);
        if (st != TT_OK) {
            return st;
        }
    }
    flash->pages_programmed++;
    return tt_flash_program_page(flash->base + page, flash->page_buffer, flash->page_bytes);
}

tt_status tt_flash_write(tt_flash *flash, int8_t *dst, const int8_t *src, int32_t size)
{
    if (flash_bad(flash) || dst == NULL || src == NULL || size < 0 || dst < flash->base ||
        dst - flash->base > flash->size - size) {
        return TT_ERR_ARG;
    }
    const int32_t begin = (int32_t)(dst - flash->base), end = begin + size, pb = flash->page_bytes;
    for (int32_t page = begin - begin % pb; page < end; page += pb) {
        const int32_t lo = begin > page ? begin : page, hi = end < page + pb ? end : page + pb;
        memcpy(flash->page_buffer, flash->base + page, (size_t)pb);
        memcpy(flash->page_buffer + (lo - page), src + (lo - begin), (size_t)(hi - lo));
        const tt_status st = commit(flash, page);
        if (st != TT_OK) {
            return st;
        }
    }
    return TT_OK;
}

/* ceil(a / b) for b > 0. */
static int32_t ceil_div(int32_t a, int32_t b)
{
    const int32_t q = a / b;
    return (a % b != 0 && a > 0) ? q + 1 : q;
}

tt_status tt_flash_writeback_slices(tt_flash *flash, const tt_dims *filter_dims, int32_t depthwise,
                                    const tt_weight_patch *patch, int8_t *filter)
{
    if (flash_bad(flash) || filter_dims == NULL || patch == NULL || filter == NULL || patch->count < 0) {
        return TT_ERR_ARG;
    }
    const int32_t c_in = filter_dims->c;
    const int32_t per_slice = (depthwise ? 1 : filter_dims->n) * filter_dims->h * filter_dims->w;
    const int32_t bytes = per_slice * c_in; /* the layer's weights: element e of channel c at e * c_in + c */
    if (filter < flash->base || filter - flash->base > flash->size - bytes) {
        return TT_ERR_ARG;
    }
    if (patch->count == 0) {
        return TT_OK;
    }
    const int32_t begin = (int32_t)(filter - flash->base), pb = flash->page_bytes;
    for (int32_t page = begin - begin % pb; page < begin + bytes; page += pb) {
        memcpy(flash->page_buffer, flash->base + page, (size_t)pb);
        for (int32_t j = 0; j < patch->count; j++) {
            const int32_t c = patch->channel[j];
            if (c >= c_in) {
                return TT_ERR_ARG;
            }
            /* slice elements e whose home offset begin + e * c_in + c lies in [page, page + pb) */
            int32_t lo = ceil_div(page - begin - c, c_in), hi = ceil_div(page + pb - begin - c, c_in);
            lo = lo > 0 ? lo : 0;
            hi = hi < per_slice ? hi : per_slice;
            for (int32_t e = lo; e < hi; e++) {
                flash->page_buffer[begin + e * c_in + c - page] = (uint8_t)tt_patch_slice(patch, j)[e];
            }
        }
        const tt_status st = commit(flash, page);
        if (st != TT_OK) {
            return st;
        }
    }
    return TT_OK;
}
