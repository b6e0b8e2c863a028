/* trady runtime: double-buffered persistent records of the trained state (see tt_persist.h). */
#include <stddef.h>
#include <string.h>

#include "tt_flash.h"
#include "tt_persist.h"
#include "tt_state.h"

static int region_bad(const tt_persist *p)
{
    return p == NULL || p->base == NULL || p->page_buffer == NULL || p->page_bytes < TT_PERSIST_HEADER_BYTES ||
           p->slot_bytes < 2 * p->page_bytes || p->slot_bytes % p->page_bytes != 0;
}

const char *tt_slot_state_name(tt_slot_state state)
{
    switch (state) {
    case TT_SLOT_VALID:
        return "valid";
    case TT_SLOT_EMPTY:
        return "empty";
    case TT_SLOT_TORN:
        return "torn";
    default:
        return "other";
    }
}

tt_persist_slot tt_persist_examine(const tt_persist *p, int32_t slot, uint32_t model_id)
{
    tt_persist_slot s = {.state = TT_SLOT_EMPTY, .seq = 0, .length = 0, .payload_crc = 0, .payload = NULL};
    if (region_bad(p) || slot < 0 || slot > 1) {
        return s;
    }
    const uint8_t *h = p->base + (size_t)slot * (size_t)p->slot_bytes;
    if (tt_le32_get(h) != TT_PERSIST_MAGIC) {
        return s;
    }
    s.state = TT_SLOT_TORN;
    if (tt_le32_get(h + 24) != tt_crc32(0, h, 24)) {
        return s;
    }
    const uint32_t length = tt_le32_get(h + 16);
    if (length > (uint32_t)(p->slot_bytes - p->page_bytes)) {
        return s;
    }
    const uint8_t *payload = h + p->page_bytes;
    if (tt_le32_get(h + 20) != tt_crc32(0, payload, (int32_t)length)) {
        return s;
    }
    s.state = tt_le32_get(h + 4) == TT_PERSIST_VERSION && tt_le32_get(h + 12) == model_id ? TT_SLOT_VALID : TT_SLOT_OTHER;
    s.seq = tt_le32_get(h + 8);
    s.length = (int32_t)length;
    s.payload_crc = tt_le32_get(h + 20);
    s.payload = payload;
    return s;
}

int32_t tt_persist_newest(const tt_persist *p, uint32_t model_id, tt_persist_slot *found)
{
    const tt_persist_slot a = tt_persist_examine(p, 0, model_id), b = tt_persist_examine(p, 1, model_id);
    int32_t slot = -1;
    if (a.state == TT_SLOT_VALID && (b.state != TT_SLOT_VALID || a.seq > b.seq)) {
        slot = 0;
    } else if (b.state == TT_SLOT_VALID) {
        slot = 1;
    }
    if (found != NULL) {
        *found = slot == 0 ? a : b;
    }
    return slot;
}

uint32_t tt_persist_payload_tail(const tt_persist_slot *s)
{
    return s != NULL && s->payload != NULL && s->length >= 4 ? tt_le32_get(s->payload + s->length - 4) : 0u;
}

static tt_status program(const tt_persist *p, uint8_t *page)
{
    return tt_flash_program_page((int8_t *)page, p->page_buffer, p->page_bytes);
}

tt_status tt_persist_begin(const tt_persist *p, uint32_t model_id, int32_t length, tt_persist_writer *w)
{
    if (region_bad(p) || w == NULL || length < 0 || length > p->slot_bytes - p->page_bytes) {
        return TT_ERR_ARG;
    }
    tt_persist_slot newest;
    const int32_t slot = tt_persist_newest(p, model_id, &newest);
    w->region = p;
    w->slot_base = p->base + (size_t)(slot == 0 ? 1 : 0) * (size_t)p->slot_bytes; /* never the newest record */
    w->seq = slot < 0 ? 1u : newest.seq + 1u;
    w->model_id = model_id;
    w->length = length;
    w->written = 0;
    w->crc = 0;
    w->pending = 0;
    w->page = 1;
    memset(p->page_buffer, 0xFF, (size_t)p->page_bytes); /* erase the header page: the slot's old record is gone */
    return program(p, w->slot_base);
}

tt_status tt_persist_append(void *ctx, const uint8_t *data, int32_t size)
{
    tt_persist_writer *w = ctx;
    if (w == NULL || data == NULL || size < 0 || size > w->length - w->written) {
        return TT_ERR_ARG;
    }
    const tt_persist *p = w->region;
    w->crc = tt_crc32(w->crc, data, size);
    w->written += size;
    while (size > 0) {
        const int32_t n = size < p->page_bytes - w->pending ? size : p->page_bytes - w->pending;
        memcpy(p->page_buffer + w->pending, data, (size_t)n);
        w->pending += n;
        data += n;
        size -= n;
        if (w->pending == p->page_bytes) {
            TT_TRY(program(p, w->slot_base + (size_t)w->page * (size_t)p->page_bytes));
            w->page++;
            w->pending = 0;
        }
    }
    return TT_OK;
}

tt_status tt_persist_commit(tt_persist_writer *w, uint32_t *seq)
{
    if (w == NULL || w->written != w->length) {
        return TT_ERR_ARG;
    }
    const tt_persist *p = w->region;
    if (w->pending > 0) {
        memset(p->page_buffer + w->pending, 0xFF, (size_t)(p->page_bytes - w->pending));
        TT_TRY(program(p, w->slot_base + (size_t)w->page * (size_t)p->page_bytes));
        w->page++;
        w->pending = 0;
    }
    uint8_t *h = p->page_buffer;
    memset(h, 0xFF, (size_t)p->page_bytes);
    tt_le32_put(h, TT_PERSIST_MAGIC);
    tt_le32_put(h + 4, TT_PERSIST_VERSION);
    tt_le32_put(h + 8, w->seq);
    tt_le32_put(h + 12, w->model_id);
    tt_le32_put(h + 16, (uint32_t)w->length);
    tt_le32_put(h + 20, w->crc);
    tt_le32_put(h + 24, tt_crc32(0, h, 24));
    TT_TRY(program(p, w->slot_base)); /* the commit: until this page is whole, the other slot's record wins */
    if (seq != NULL) {
        *seq = w->seq;
    }
    return TT_OK;
}

/* ---- the journal of home pages (flash weight home) ---- */

static int journal_bad(const tt_persist *p)
{
    return region_bad(p) || p->journal_entries < 1 || p->journal_page_bytes < 1;
}

static uint8_t *journal_entry(const tt_persist *p, int32_t k)
{
    const int32_t entry = TT_PERSIST_ENTRY_BYTES(p->journal_page_bytes, p->page_bytes);
    return p->base + 2 * (size_t)p->slot_bytes + (size_t)k * (size_t)entry;
}

tt_journal_entry tt_persist_journal_newest(const tt_persist *p, uint32_t model_id)
{
    tt_journal_entry best = {.index = -1, .seq = 0, .home_offset = 0, .content = NULL};
    for (int32_t k = 0; !journal_bad(p) && k < p->journal_entries; k++) {
        const uint8_t *h = journal_entry(p, k), *content = h + p->page_bytes;
        if (tt_le32_get(h) != TT_JOURNAL_MAGIC || tt_le32_get(h + 24) != tt_crc32(0, h, 24) ||
            tt_le32_get(h + 4) != TT_JOURNAL_VERSION || tt_le32_get(h + 12) != model_id || tt_le32_get(h + 16) > 0x7FFFFFFFu ||
            tt_le32_get(h + 20) != tt_crc32(0, content, p->journal_page_bytes)) {
            continue; /* empty, torn (its content being rewritten), or another model's */
        }
        if (best.index < 0 || tt_le32_get(h + 8) > best.seq) {
            best = (tt_journal_entry){.index = k, .seq = tt_le32_get(h + 8), .home_offset = (int32_t)tt_le32_get(h + 16),
                                      .content = content};
        }
    }
    return best;
}

tt_status tt_persist_journal_write(const tt_persist *p, uint32_t model_id, int32_t home_offset, const uint8_t *content)
{
    if (journal_bad(p) || content == NULL || home_offset < 0) {
        return TT_ERR_ARG;
    }
    const tt_journal_entry newest = tt_persist_journal_newest(p, model_id);
    /* the entry after the newest: never the newest, whose home page is whole by now */
    const int32_t k = newest.index < 0 ? 0 : (newest.index + 1) % p->journal_entries;
    uint8_t *h = journal_entry(p, k);
    for (int32_t at = 0; at < p->journal_page_bytes; at += p->page_bytes) {
        const int32_t n = p->journal_page_bytes - at < p->page_bytes ? p->journal_page_bytes - at : p->page_bytes;
        memset(p->page_buffer, 0xFF, (size_t)p->page_bytes);
        memcpy(p->page_buffer, content + at, (size_t)n);
        TT_TRY(program(p, h + p->page_bytes + at));
    }
    memset(p->page_buffer, 0xFF, (size_t)p->page_bytes);
    tt_le32_put(p->page_buffer, TT_JOURNAL_MAGIC);
    tt_le32_put(p->page_buffer + 4, TT_JOURNAL_VERSION);
    tt_le32_put(p->page_buffer + 8, newest.index < 0 ? 1u : newest.seq + 1u);
    tt_le32_put(p->page_buffer + 12, model_id);
    tt_le32_put(p->page_buffer + 16, (uint32_t)home_offset);
    tt_le32_put(p->page_buffer + 20, tt_crc32(0, content, p->journal_page_bytes));
    tt_le32_put(p->page_buffer + 24, tt_crc32(0, p->page_buffer, 24));
    return program(p, h); /* the entry is valid once this page is whole */
}
