/*
 * trady runtime: the trained-state file (SPEC 8), written and read without malloc.
 *
 * Layout (little-endian), version 1:
 *   "TTST", u32 version, u32 model_id (CRC32 of the plan's identity: source hash, strategy, budget, classes),
 *   u32 length of the whole file, then the model's sections (see the generated <model>_state_save), then
 *   u32 CRC32 (IEEE 802.3, as zlib.crc32) of every preceding byte.
 */
#ifndef TT_STATE_H
#define TT_STATE_H

#include <stdint.h>

#include "tt_types.h"

#define TT_STATE_MAGIC 0x54535454u /* "TTST" read as a little-endian u32 */
#define TT_STATE_VERSION 1u

/** CRC32 (reflected polynomial 0xEDB88320), continuing from `crc` (start with 0). */
uint32_t tt_crc32(uint32_t crc, const uint8_t *data, int32_t size);

/** Where a streaming cursor's bytes go (tt_persist_append, tt_sink_count); a non-OK status stops the writes. */
typedef tt_status (*tt_sink)(void *ctx, const uint8_t *data, int32_t size);

/**
 * A bounded byte writer/reader over a caller's buffer; or, with `sink` set, a streaming writer that hands
 * each write to the sink (no buffer, no capacity) and keeps the CRC32 of the bytes written so far in `crc`.
 */
typedef struct {
    uint8_t *buf;
    int32_t capacity;
    int32_t pos;
    int32_t overflow; /**< set when a write or read ran past capacity, or the sink failed */
    tt_sink sink;     /**< NULL: write into buf */
    void *sink_ctx;
    uint32_t crc;     /**< with a sink: CRC32 of the bytes written (start with 0) */
} tt_cursor;

/** A sink that only counts (a cursor's pos): the length pass before a streamed write. */
tt_status tt_sink_count(void *ctx, const uint8_t *data, int32_t size);

/** The little-endian u32 at b, the byte order of every trady format (state file, records, QSPI stamp, UART frames). */
static inline uint32_t tt_le32_get(const uint8_t *b)
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

/** Store v at b, little-endian. */
static inline void tt_le32_put(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
}

void tt_put(tt_cursor *c, const void *data, int32_t size);
void tt_put_u32(tt_cursor *c, uint32_t v);
void tt_get(tt_cursor *c, void *data, int32_t size);
uint32_t tt_get_u32(tt_cursor *c);

#endif /* TT_STATE_H */
