/*
 * trady runtime: trained state that survives a reset (docs/PERSIST.md).
 *
 * A reserved flash region of two slots, each a whole number of erase pages. A slot holds one record:
 *   page 0: the header, little-endian u32s: "TTPR", version, sequence number, model id, payload length,
 *           CRC32 of the payload, CRC32 of the six preceding words; the rest of the page is 0xFF
 *   pages 1..: the payload (a trained-state file, tt_state.h), the last page padded with 0xFF
 * A write goes to the slot that does not hold the newest valid record, in this order: erase the header page
 * (the slot's old record is gone), program the payload pages, then program the header page. A record is valid
 * when both CRCs, the magic, the version and the length check out; at boot the valid record with the highest
 * sequence number wins. A power loss at any point leaves the other slot, and so the last committed record,
 * untouched: the boot finds either it or, once the header page is programmed in full, the new record.
 *
 * With a flash weight home the region also holds a journal of home pages after the two slots: a ring of
 * journal_entries entries, each a header page then the pages of one home page's content. Before a home page is
 * erased and programmed, its new content goes into the entry after the newest one: the content pages first, then
 * the header, little-endian u32s: "TTJR", version, sequence number, model id, byte offset of the page in the
 * home, CRC32 of the content, CRC32 of the six preceding words. The newest valid entry is the last home page
 * written (or being written): at boot it is redone (docs/PERSIST.md).
 *
 * Pages are written with tt_flash_program_page (tt_flash.h): the host model writes memory, a board port the
 * vendor's erase and program sequence.
 */
#ifndef TT_PERSIST_H
#define TT_PERSIST_H

#include <stdint.h>

#include "tt_types.h"

#define TT_PERSIST_MAGIC 0x52505454u /* "TTPR" read as a little-endian u32 */
#define TT_PERSIST_VERSION 1u
#define TT_PERSIST_HEADER_BYTES 28
#define TT_JOURNAL_MAGIC 0x524A5454u /* "TTJR" */
#define TT_JOURNAL_VERSION 1u

/** The region's erase page size unless the build sets it (the mps2 boards' default; the host uses the same). */
#ifndef TT_PERSIST_PAGE_BYTES
#define TT_PERSIST_PAGE_BYTES 2048
#endif

/** Bytes of one slot for payloads of up to `max_payload` bytes: a header page plus the payload's pages. */
#define TT_PERSIST_SLOT_BYTES(max_payload, page) ((1 + ((max_payload) + (page) - 1) / (page)) * (page))

/** Journal entries of the region of a flash weight home unless the build sets it (wear: docs/PERSIST.md). */
#ifndef TT_PERSIST_JOURNAL_ENTRIES
#define TT_PERSIST_JOURNAL_ENTRIES 4
#endif

/** Bytes of one journal entry for home pages of `home_page` bytes: a header page plus the content's pages. */
#define TT_PERSIST_ENTRY_BYTES(home_page, page) ((1 + ((home_page) + (page) - 1) / (page)) * (page))

/** Bytes of a whole region: two slots, then `entries` journal entries (none when home_page is 0: a RAM home). */
#define TT_PERSIST_REGION_BYTES(max_payload, page, entries, home_page) \
    (2 * TT_PERSIST_SLOT_BYTES(max_payload, page) + ((home_page) > 0 ? (entries) * TT_PERSIST_ENTRY_BYTES(home_page, page) : 0))

/** The region: two slots of slot_bytes, then the journal, page aligned, and an SRAM page buffer. */
typedef struct {
    uint8_t *base;             /**< [2 * slot_bytes + journal_entries * entry bytes], aligned to page_bytes */
    int32_t slot_bytes;        /**< a multiple of page_bytes, at least two pages */
    int32_t page_bytes;
    uint8_t *page_buffer;      /**< [page_bytes] */
    int32_t journal_entries;   /**< journal entries after the slots (flash weight home; 0: no journal) */
    int32_t journal_page_bytes; /**< bytes of one home page (the content of an entry) */
} tt_persist;

/** What a slot holds. */
typedef enum {
    TT_SLOT_VALID = 0,
    TT_SLOT_EMPTY = 1,  /**< no record header (erased, zero, or never written) */
    TT_SLOT_TORN = 2,   /**< a header whose CRCs or length do not check out: an interrupted write or damage */
    TT_SLOT_OTHER = 3   /**< a valid record of another version or another compiled model */
} tt_slot_state;

/** A slot's record, as found. */
typedef struct {
    tt_slot_state state;
    uint32_t seq;
    int32_t length;          /**< payload bytes */
    uint32_t payload_crc;
    const uint8_t *payload;  /**< in the region */
} tt_persist_slot;

/** Name of a slot state ("valid", "empty", "torn", "other"). */
const char *tt_slot_state_name(tt_slot_state state);

/** Examine slot 0 or 1 for a record of `model_id`. */
tt_persist_slot tt_persist_examine(const tt_persist *p, int32_t slot, uint32_t model_id);

/** The slot with the newest valid record of `model_id`, or -1 if neither slot holds one. */
int32_t tt_persist_newest(const tt_persist *p, uint32_t model_id, tt_persist_slot *found);

/** The payload's last 4 bytes as a little-endian u32 (a trained-state payload: its own CRC32); 0 if none. */
uint32_t tt_persist_payload_tail(const tt_persist_slot *s);

/** A record being written (tt_persist_begin, _append, _commit). */
typedef struct {
    const tt_persist *region;
    uint8_t *slot_base;
    uint32_t seq;
    uint32_t model_id;
    int32_t length;   /**< payload bytes announced */
    int32_t written;  /**< payload bytes so far */
    uint32_t crc;
    int32_t pending;  /**< bytes in the page buffer */
    int32_t page;     /**< next payload page to program (1-based within the slot) */
} tt_persist_writer;

/** Start a record of `length` payload bytes in the older slot: erases its header page. */
tt_status tt_persist_begin(const tt_persist *p, uint32_t model_id, int32_t length, tt_persist_writer *w);

/** Append payload bytes (a tt_sink: ctx is the writer); programs each page once it is full. */
tt_status tt_persist_append(void *ctx, const uint8_t *data, int32_t size);

/** Program the last payload page and then the header page; `seq` gets the record's sequence number. */
tt_status tt_persist_commit(tt_persist_writer *w, uint32_t *seq);

/** A journal entry, as found: the newest valid one of a model (tt_persist_journal_newest). */
typedef struct {
    int32_t index;           /**< entry index, -1: none valid */
    uint32_t seq;
    int32_t home_offset;     /**< byte offset of the page in the home */
    const uint8_t *content;  /**< [journal_page_bytes], in the region */
} tt_journal_entry;

/** The newest valid journal entry of `model_id` (index -1 if none, or the region has no journal). */
tt_journal_entry tt_persist_journal_newest(const tt_persist *p, uint32_t model_id);

/**
 * Journal the new content of the home page at `home_offset` (journal_page_bytes bytes): program it into the
 * entry after the newest, content pages first, header last. Call it before the home page is erased.
 */
tt_status tt_persist_journal_write(const tt_persist *p, uint32_t model_id, int32_t home_offset, const uint8_t *content);

#endif /* TT_PERSIST_H */
