/*
 * libFuzzer harness of the streaming frame parser (runtime_c/boards/tt_stream.c): `make fuzz`.
 *
 * The first input byte sets the receive capacity (1..256 bytes, an exactly sized heap buffer so that
 * AddressSanitizer sees any access past it); the rest is fed to the parser byte by byte. Checked on
 * every input: no access outside the buffer (ASan, UBSan), results are MORE/FRAME/REJECT only, a frame is
 * never longer than the capacity, a parser rejection is a length or CRC one, tt_stream_check stays inside
 * the payload, and every accepted frame re-encodes (tt_stream_encode) to bytes that a fresh parser accepts
 * as the same frame on their last byte, with no rejection.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tt_stream.h"

static void require(int ok)
{
    if (!ok) {
        abort();
    }
}

static void roundtrip(const tt_stream_frame *f, uint32_t capacity)
{
    uint8_t *enc = malloc(f->length + TT_STREAM_OVERHEAD), *buf = malloc(capacity);
    require(enc != NULL && buf != NULL);
    const uint32_t n = tt_stream_encode(enc, f->length + TT_STREAM_OVERHEAD, f->type, f->seq, f->payload, f->length);
    require(n == f->length + TT_STREAM_OVERHEAD);
    require(tt_stream_encode(enc, n - 1, f->type, f->seq, f->payload, f->length) == 0);
    tt_stream_parser q;
    tt_stream_init(&q, buf, capacity);
    for (uint32_t i = 0; i < n; i++) {
        tt_stream_frame g;
        const int32_t r = tt_stream_feed(&q, enc[i], &g);
        require(r == (i + 1 == n ? TT_STREAM_FRAME : TT_STREAM_MORE));
        if (r == TT_STREAM_FRAME) {
            require(g.type == f->type && g.seq == f->seq && g.length == f->length);
            require(f->length == 0 || memcmp(g.payload, f->payload, f->length) == 0);
        }
    }
    free(enc);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const uint32_t capacity = 1u + data[0];
    uint8_t *buf = malloc(capacity);
    require(buf != NULL);
    tt_stream_parser p;
    tt_stream_init(&p, buf, capacity);
    uint32_t frames = 0, rejects = 0;
    for (size_t i = 1; i < size; i++) {
        tt_stream_frame f;
        const int32_t r = tt_stream_feed(&p, data[i], &f);
        require(r == TT_STREAM_MORE || r == TT_STREAM_FRAME || r == TT_STREAM_REJECT);
        if (r == TT_STREAM_FRAME) {
            frames++;
            require(f.length <= capacity && f.payload == buf);
            const tt_stream_reason why = tt_stream_check(&f, capacity > 2 ? capacity - 2 : 0, 10);
            require(why >= TT_STREAM_OK && why < TT_STREAM_REASONS);
            roundtrip(&f, capacity);
        } else if (r == TT_STREAM_REJECT) {
            rejects++;
            require(p.reason == TT_STREAM_BAD_LENGTH || p.reason == TT_STREAM_BAD_CRC);
        }
    }
    require(p.count[TT_STREAM_OK] == frames);
    require(p.count[TT_STREAM_BAD_LENGTH] + p.count[TT_STREAM_BAD_CRC] == rejects);
    require(p.count[TT_STREAM_BAD_SYNC] <= size - 1);
    free(buf);
    return 0;
}
