/*
 * trady runtime: the flash home of trainable weights (SPEC 8), written back through a page buffer.
 *
 * Flash is erased and programmed a whole page at a time, so every write is read-modify-write: copy the page
 * into the page buffer (SRAM), patch it, then tt_flash_program_page erases the page and programs it from the
 * buffer. Pages are counted from the start of the region, which the build aligns to the page size. The
 * host simulator keeps the region in ordinary memory and tt_flash_program_page is a weak host model (fill
 * with 0xFF, then copy); a board port overrides it with the vendor's erase and program sequence.
 */
#ifndef TT_FLASH_H
#define TT_FLASH_H

#include <stdint.h>

#include "tt_types.h"

/**
 * Called with a page's new content before the page is erased and programmed (the persistent state's journal,
 * tt_persist.h): `offset` is the page's byte offset in the region. An error leaves the page untouched.
 */
typedef tt_status (*tt_flash_journal)(void *ctx, int32_t offset, const uint8_t *content);

/** A flash region and its page buffer. */
typedef struct {
    int8_t *base;             /**< start of the region (page aligned on the target) */
    int32_t size;             /**< bytes, a multiple of page_bytes */
    int32_t page_bytes;
    uint8_t *page_buffer;     /**< [page_bytes] SRAM */
    uint32_t pages_programmed; /**< erase/program cycles so far (wear) */
    tt_flash_journal journal; /**< NULL: pages are programmed without a journal */
    void *journal_ctx;
} tt_flash;

/** Erase one page and program it with `bytes` bytes from `data` (weak; a board port overrides it). */
tt_status tt_flash_program_page(int8_t *page, const uint8_t *data, int32_t bytes);

/** Write `size` bytes from `src` to `dst` inside the region, page by page; pages left unchanged are skipped. */
tt_status tt_flash_write(tt_flash *flash, int8_t *dst, const int8_t *src, int32_t size);

/**
 * Write the working slices of `patch` back into their home `filter` (OHWI, or KKC if depthwise; inside the
 * region), visiting each page of the layer once; pages left unchanged are skipped.
 */
tt_status tt_flash_writeback_slices(tt_flash *flash, const tt_dims *filter_dims, int32_t depthwise,
                                    const tt_weight_patch *patch, int8_t *filter);

#endif /* TT_FLASH_H */
