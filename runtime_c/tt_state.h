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

/** A bounded byte writer/reader over a caller's buffer. */
typedef struct {
    uint8_t *buf;
    int32_t capacity;
    int32_t pos;
    int32_t overflow; /**< set when a write or read ran past capacity */
} tt_cursor;

void tt_put(tt_cursor *c, const void *data, int32_t size);
void tt_put_u32(tt_cursor *c, uint32_t v);
void tt_get(tt_cursor *c, void *data, int32_t size);
uint32_t tt_get_u32(tt_cursor *c);

#endif /* TT_STATE_H */
