/* trady runtime: trained-state file helpers (see tt_state.h). */
#include <string.h>

#include "tt_state.h"

uint32_t tt_crc32(uint32_t crc, const uint8_t *data, int32_t size)
{
    crc = ~crc;
    for (int32_t i = 0; i < size; i++) {
        crc ^= data[i];
        for (int32_t b = 0; b < 8; b++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

tt_status tt_sink_count(void *ctx, const uint8_t *data, int32_t size)
{
    (void)ctx;
    (void)data;
    (void)size;
    return TT_OK;
}

void tt_put(tt_cursor *c, const void *data, int32_t size)
{
    if (c->sink != NULL) {
        if (c->overflow || size < 0 || c->sink(c->sink_ctx, data, size) != TT_OK) {
            c->overflow = 1;
            return;
        }
        if (c->sink != tt_sink_count) {
            c->crc = tt_crc32(c->crc, data, size);
        }
        c->pos += size;
        return;
    }
    if (c->overflow || size < 0 || c->pos > c->capacity - size) {
        c->overflow = 1;
        return;
    }
    memcpy(c->buf + c->pos, data, (size_t)size);
    c->pos += size;
}

void tt_put_u32(tt_cursor *c, uint32_t v)
{
    uint8_t b[4];
    tt_le32_put(b, v);
    tt_put(c, b, 4);
}

void tt_get(tt_cursor *c, void *data, int32_t size)
{
    if (c->overflow || size < 0 || c->pos > c->capacity - size) {
        c->overflow = 1;
        memset(data, 0, size > 0 ? (size_t)size : 0u);
        return;
    }
    memcpy(data, c->buf + c->pos, (size_t)size);
    c->pos += size;
}

uint32_t tt_get_u32(tt_cursor *c)
{
    uint8_t b[4];
    tt_get(c, b, 4);
    return tt_le32_get(b);
}
