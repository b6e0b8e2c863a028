/*
 * trady UART streaming protocol (docs/STREAM.md): frames, a byte-at-a-time parser and an encoder.
 *
 * Frame (little-endian):  0xA5 0x5A | type u8 | seq u16 | length u32 | payload[length] | crc u32
 * The CRC32 (tt_crc32, as zlib.crc32) covers type, seq, length and payload. The parser keeps one frame
 * in a buffer the caller owns (no malloc); a length above that buffer's capacity is rejected as soon as
 * the header is complete, so a corrupted length never makes it wait for more than the capacity. After a
 * rejection it hunts for the next sync pair. Used by the firmware (tt_fw_stream.c) and the host test
 * and fuzz harnesses (host_tools/tt_stream_host.c, host_tools/tt_stream_fuzz.c).
 */
#ifndef TT_STREAM_H
#define TT_STREAM_H

#include <stdint.h>

#define TT_STREAM_VERSION 1u
#define TT_STREAM_SYNC0 0xA5u
#define TT_STREAM_SYNC1 0x5Au
#define TT_STREAM_HEADER 9 /* sync 2 + type 1 + seq 2 + length 4 */
#define TT_STREAM_OVERHEAD (TT_STREAM_HEADER + 4)

/* Frame types. Host -> firmware: */
#define TT_STREAM_HELLO 0x01u     /* empty; answered by INFO */
#define TT_STREAM_CONFIG 0x02u    /* seed u32, lr f32, warmup i32, total i32: model_train_init; ACK */
#define TT_STREAM_SAMPLE 0x10u    /* label u16, image int8[input size]: one training step; ACK (loss bits) */
#define TT_STREAM_EPOCH_END 0x11u /* empty; answered by METRICS; the next SAMPLE starts a new epoch */
#define TT_STREAM_DONE 0x12u      /* empty; ACK; the firmware then waits for BYE */
#define TT_STREAM_BYE 0x13u       /* empty, after DONE's ACK arrived; no answer: the firmware exits with 0 */
/* Firmware -> host: */
#define TT_STREAM_INFO 0x81u
#define TT_STREAM_ACK 0x86u
#define TT_STREAM_NAK 0x95u /* reason u8 */
#define TT_STREAM_METRICS 0xA0u

/* Why a frame was rejected (NAK payload and counter index). */
typedef enum {
    TT_STREAM_OK = 0,
    TT_STREAM_BAD_SYNC = 1,   /* a byte outside any frame (counted per byte, never NAKed) */
    TT_STREAM_BAD_LENGTH = 2, /* declared length above the receive buffer */
    TT_STREAM_BAD_CRC = 3,
    TT_STREAM_BAD_TYPE = 4,   /* unknown type, or a firmware -> host type sent to the firmware */
    TT_STREAM_BAD_SIZE = 5,   /* payload size wrong for its type */
    TT_STREAM_BAD_LABEL = 6,  /* SAMPLE label >= classes */
    TT_STREAM_BAD_STATE = 7,  /* not valid now (SAMPLE before CONFIG) */
    TT_STREAM_FAILED = 8,     /* the model reported an error (kernel status) */
    TT_STREAM_BAD_VALUE = 9,  /* CONFIG: lr not a finite positive number, warm-up < 0 or total steps < 1 */
    TT_STREAM_REASONS = 10
} tt_stream_reason;

typedef struct {
    uint8_t type;
    uint16_t seq;
    uint32_t length;
    const uint8_t *payload; /* inside the parser's buffer; valid until the next tt_stream_feed */
} tt_stream_frame;

typedef struct {
    uint8_t *buf;
    uint32_t capacity;
    int32_t state;
    uint8_t header[TT_STREAM_HEADER - 2];
    uint32_t got; /* bytes of the current field received */
    uint32_t length;
    uint32_t crc;
    uint32_t crc_in;
    uint32_t count[TT_STREAM_REASONS]; /* rejections per reason; count[TT_STREAM_OK]: good-CRC frames */
    tt_stream_frame last;                  /* type and seq of the last frame or rejection */
    tt_stream_reason reason;               /* why the last TT_STREAM_REJECT */
} tt_stream_parser;

/* tt_stream_feed results */
#define TT_STREAM_MORE 0   /* need more bytes */
#define TT_STREAM_FRAME 1  /* *out is a frame with a good CRC */
#define TT_STREAM_REJECT 2 /* a frame was rejected: parser->last has its type and seq, ->reason why */

/** Start a parser over the caller's buffer (`capacity` bytes: the largest payload accepted). */
void tt_stream_init(tt_stream_parser *p, uint8_t *buf, uint32_t capacity);

/** Feed one byte. Returns TT_STREAM_MORE, TT_STREAM_FRAME (fills *out) or TT_STREAM_REJECT. */
int32_t tt_stream_feed(tt_stream_parser *p, uint8_t byte, tt_stream_frame *out);

/** Check a good-CRC host -> firmware frame's type, size, label and CONFIG values; TT_STREAM_OK or the reason. */
tt_stream_reason tt_stream_check(const tt_stream_frame *f, uint32_t input_size, uint32_t classes);

/** Write a frame into out (capacity bytes); returns its size, or 0 if it does not fit. */
uint32_t tt_stream_encode(uint8_t *out, uint32_t capacity, uint8_t type, uint16_t seq, const uint8_t *payload,
                          uint32_t length);

#endif /* TT_STREAM_H */
