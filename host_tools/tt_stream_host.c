/*
 * Host driver of the streaming frame parser (runtime_c/boards/tt_stream.c) for the tests:
 *
 *   tt_stream_host CAPACITY INPUT_SIZE CLASSES < BYTES
 *
 * feeds stdin to a parser with a CAPACITY-byte buffer and prints one line per event, then the counters:
 *   frame TYPE SEQ LENGTH PAYLOAD_CRC CHECK   a good-CRC frame; CHECK: tt_stream_check's reason (0 ok)
 *   reject REASON TYPE SEQ                    a frame the parser rejected (2 length, 3 crc)
 *   counts C0 C1 ... C9                       count[] per reason (C0: good frames, C1: bytes skipped)
 * Exit status: 0, or 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tt_state.h"
#include "tt_stream.h"

static uint8_t buf[1 << 16];

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: tt_stream_host CAPACITY INPUT_SIZE CLASSES < BYTES\n");
        return 2;
    }
    const unsigned long cap = strtoul(argv[1], NULL, 10);
    const uint32_t input = (uint32_t)strtoul(argv[2], NULL, 10), classes = (uint32_t)strtoul(argv[3], NULL, 10);
    if (cap > sizeof buf) {
        fprintf(stderr, "tt_stream_host: capacity above %u\n", (unsigned)sizeof buf);
        return 2;
    }
    tt_stream_parser p;
    tt_stream_init(&p, buf, (uint32_t)cap);
    int c;
    while ((c = getchar()) != EOF) {
        tt_stream_frame f;
        const int32_t r = tt_stream_feed(&p, (uint8_t)c, &f);
        if (r == TT_STREAM_FRAME) {
            printf("frame %u %u %lu %08lx %d\n", f.type, f.seq, (unsigned long)f.length,
                   (unsigned long)tt_crc32(0, f.payload, (int32_t)f.length), (int)tt_stream_check(&f, input, classes));
        } else if (r == TT_STREAM_REJECT) {
            printf("reject %d %u %u\n", (int)p.reason, p.last.type, p.last.seq);
        }
    }
    printf("counts");
    for (int i = 0; i < TT_STREAM_REASONS; i++) {
        printf(" %lu", (unsigned long)p.count[i]);
    }
    printf("\n");
    return 0;
}
