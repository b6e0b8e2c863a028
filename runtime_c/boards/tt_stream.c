/* trady UART streaming protocol: parser, checks and encoder (see tt_stream.h, docs/STREAM.md). */
#include <string.h>

#include "tt_state.h"
#include "tt_stream.h"

enum { WAIT_SYNC0, WAIT_SYNC1, IN_HEADER, IN_PAYLOAD, IN_CRC };

void tt_stream_init(tt_stream_parser *p, uint8_t *buf, uint32_t capacity)
{
    memset(p, 0, sizeof *p);
    p->buf = buf;
    p->capacity = capacity;
    p->state = WAIT_SYNC0;
}

static int32_t reject(tt_stream_parser *p, tt_stream_reason why)
{
    p->count[why]++;
    p->reason = why;
    p->state = WAIT_SYNC0;
    return TT_STREAM_REJECT;
}

int32_t tt_stream_feed(tt_stream_parser *p, uint8_t byte, tt_stream_frame *out)
{
    switch (p->state) {
    case WAIT_SYNC0:
        if (byte == TT_STREAM_SYNC0) {
            p->state = WAIT_SYNC1;
        } else {
            p->count[TT_STREAM_BAD_SYNC]++;
        }
        return TT_STREAM_MORE;
    case WAIT_SYNC1:
        if (byte == TT_STREAM_SYNC1) {
            p->state = IN_HEADER;
            p->got = 0;
        } else {
            /* the pending 0xA5 was noise; a new 0xA5 may start the frame, anything else is noise too */
            p->count[TT_STREAM_BAD_SYNC] += byte == TT_STREAM_SYNC0 ? 1u : 2u;
            p->state = byte == TT_STREAM_SYNC0 ? WAIT_SYNC1 : WAIT_SYNC0;
        }
        return TT_STREAM_MORE;
    case IN_HEADER:
        p->header[p->got++] = byte;
        if (p->got < sizeof p->header) {
            return TT_STREAM_MORE;
        }
        p->last.type = p->header[0];
        p->last.seq = (uint16_t)(p->header[1] | p->header[2] << 8);
        p->last.length = p->length = tt_le32_get(p->header + 3);
        p->last.payload = p->buf;
        if (p->length > p->capacity) {
            return reject(p, TT_STREAM_BAD_LENGTH);
        }
        p->crc = tt_crc32(0, p->header, (int32_t)sizeof p->header);
        p->crc_in = 0;
        p->got = 0;
        p->state = p->length > 0 ? IN_PAYLOAD : IN_CRC;
        return TT_STREAM_MORE;
    case IN_PAYLOAD:
        /* the CRC byte by byte: over a whole image at the payload's end it would take longer than the CRC's 4
         * bytes take to arrive, and a polled UART (the DISCO's USART1) would lose them to an overrun */
        p->buf[p->got++] = byte;
        p->crc = tt_crc32(p->crc, &byte, 1);
        if (p->got == p->length) {
            p->got = 0;
            p->state = IN_CRC;
        }
        return TT_STREAM_MORE;
    case IN_CRC:
    default:
        p->crc_in |= (uint32_t)byte << (8u * p->got);
        if (++p->got < 4u) {
            return TT_STREAM_MORE;
        }
        if (p->crc_in != p->crc) {
            return reject(p, TT_STREAM_BAD_CRC);
        }
        p->count[TT_STREAM_OK]++;
        p->state = WAIT_SYNC0;
        *out = p->last;
        return TT_STREAM_FRAME;
    }
}

tt_stream_reason tt_stream_check(const tt_stream_frame *f, uint32_t input_size, uint32_t classes)
{
    switch (f->type) {
    case TT_STREAM_HELLO:
    case TT_STREAM_EPOCH_END:
    case TT_STREAM_DONE:
    case TT_STREAM_BYE:
        return f->length == 0 ? TT_STREAM_OK : TT_STREAM_BAD_SIZE;
    case TT_STREAM_CONFIG: {
        if (f->length != 16) {
            return TT_STREAM_BAD_SIZE;
        }
        const uint32_t lr = tt_le32_get(f->payload + 4); /* fp32 bits: positive, not zero, not inf/NaN */
        const int32_t warmup = (int32_t)tt_le32_get(f->payload + 8), total = (int32_t)tt_le32_get(f->payload + 12);
        const int32_t lr_ok = (lr & 0x80000000u) == 0u && lr != 0u && ((lr >> 23) & 0xFFu) != 0xFFu;
        return lr_ok && warmup >= 0 && total >= 1 ? TT_STREAM_OK : TT_STREAM_BAD_VALUE;
    }
    case TT_STREAM_SAMPLE:
        if (f->length != input_size + 2u) {
            return TT_STREAM_BAD_SIZE;
        }
        return (uint32_t)(f->payload[0] | f->payload[1] << 8) < classes ? TT_STREAM_OK : TT_STREAM_BAD_LABEL;
    default:
        return TT_STREAM_BAD_TYPE;
    }
}

uint32_t tt_stream_encode(uint8_t *out, uint32_t capacity, uint8_t type, uint16_t seq, const uint8_t *payload,
                          uint32_t length)
{
    if (capacity < TT_STREAM_OVERHEAD || length > capacity - TT_STREAM_OVERHEAD) {
        return 0;
    }
    out[0] = TT_STREAM_SYNC0;
    out[1] = TT_STREAM_SYNC1;
    out[2] = type;
    out[3] = (uint8_t)seq;
    out[4] = (uint8_t)(seq >> 8);
    tt_le32_put(out + 5, length);
    if (length > 0) {
        memcpy(out + TT_STREAM_HEADER, payload, length);
    }
    const uint32_t crc = tt_crc32(0, out + 2, (int32_t)(TT_STREAM_HEADER - 2 + length));
    tt_le32_put(out + TT_STREAM_HEADER + length, crc);
    return TT_STREAM_HEADER + length + 4u;
}
