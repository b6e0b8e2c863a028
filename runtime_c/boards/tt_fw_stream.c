/*
 * Firmware application `stream` (`trady firmware --app stream`): trains on samples that arrive on the
 * UART in frames (tt_stream.h, docs/STREAM.md) and answers each frame:
 *
 *   HELLO      -> INFO (protocol version, classes, input size, receive capacity)
 *   CONFIG     -> model_train_init(seed, lr, warmup, total); ACK
 *   SAMPLE     -> at the first sample of an epoch model_epoch_begin (the TraDy resampling), then one
 *                 training step; ACK with the loss bits and the predicted class
 *   EPOCH_END  -> METRICS for the epoch (samples, correct, loss sum, rejections per reason, CRC32 of the
 *                 trained weights, head and selection, stack used); the next SAMPLE opens a new epoch
 *   DONE       -> ACK
 *   BYE        -> (after DONE, once its ACK arrived) no answer: main returns 0 and the emulator exits with
 *                 it (the DISCO prints "exit 0" and stops); exiting only then keeps the ACK from being lost
 *                 with a link that closes at exit
 *
 * A frame with a bad CRC, an impossible length, an unknown type, a wrong payload size, a label out of
 * range, CONFIG values out of range, or a SAMPLE before CONFIG or a BYE before DONE is answered with NAK (reason, type), counted, and never trained on.
 * A good frame that repeats the last one's type and sequence number (its answer was lost) gets the same
 * answer again without being acted on twice.
 */
#include <stdint.h>
#include <string.h>

#include "model.h"
#include "tt_state.h"
#include "tt_stream.h"
#include "tt_uart.h"

extern uint32_t tt_stack_used(void);

#define RX_CAPACITY (MODEL_INPUT_SIZE + 2 > 16 ? MODEL_INPUT_SIZE + 2 : 16)
#define METRICS_WORDS (6 + TT_STREAM_REASONS + 5)

static uint8_t rx_buf[RX_CAPACITY];
static uint8_t answer[TT_STREAM_OVERHEAD + 4 * METRICS_WORDS]; /* the last answer, resent for a repeat */
static uint32_t answer_len;
static tt_stream_parser parser;

static struct {
    int32_t configured, epoch_open, have_last, closing;
    uint8_t last_type;
    uint16_t last_seq;
    uint32_t epoch, trained, correct, total, duplicates;
    float loss_sum;
} st;

static void send(uint8_t type, uint16_t seq, const uint8_t *payload, uint32_t length)
{
    answer_len = tt_stream_encode(answer, sizeof answer, type, seq, payload, length);
    tt_uart_write(answer, answer_len);
}

static void nak(uint16_t seq, uint8_t type, tt_stream_reason why)
{
    uint8_t frame[TT_STREAM_OVERHEAD + 2];
    const uint8_t payload[2] = {(uint8_t)why, type};
    if (why != TT_STREAM_BAD_LENGTH && why != TT_STREAM_BAD_CRC) {
        parser.count[why]++; /* the parser counted its own rejections */
    }
    tt_uart_write(frame, tt_stream_encode(frame, sizeof frame, TT_STREAM_NAK, seq, payload, sizeof payload));
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void info(uint16_t seq)
{
    uint8_t p[12] = {TT_STREAM_VERSION, 0, (uint8_t)MODEL_NUM_CLASSES, (uint8_t)(MODEL_NUM_CLASSES >> 8)};
    tt_le32_put(p + 4, MODEL_INPUT_SIZE);
    tt_le32_put(p + 8, RX_CAPACITY);
    send(TT_STREAM_INFO, seq, p, sizeof p);
}

static tt_status weights_crc(uint32_t *crc)
{
    *crc = 0;
    for (int32_t conv = 0; conv < MODEL_NUM_CONVS; conv++) {
        int8_t *home, chunk[256];
        const int32_t size = model_trainable_weights(conv, &home);
        for (int32_t at = 0; at < size; at += (int32_t)sizeof chunk) {
            const int32_t n = size - at < (int32_t)sizeof chunk ? size - at : (int32_t)sizeof chunk;
            const tt_status s = model_read_weights(conv, at, n, chunk);
            if (s != TT_OK) {
                return s;
            }
            *crc = tt_crc32(*crc, (const uint8_t *)chunk, n);
        }
    }
    return TT_OK;
}

static void metrics(uint16_t seq)
{
    uint32_t w[METRICS_WORDS], k = 0, wcrc;
    if (weights_crc(&wcrc) != TT_OK) {
        nak(seq, TT_STREAM_EPOCH_END, TT_STREAM_FAILED);
        return;
    }
    w[k++] = st.epoch;
    w[k++] = st.trained;
    w[k++] = st.correct;
    w[k++] = float_bits(st.loss_sum);
    w[k++] = st.total;
    w[k++] = st.duplicates;
    for (int32_t r = 0; r < TT_STREAM_REASONS; r++) {
        w[k++] = parser.count[r];
    }
    float *hw, *hb;
    model_head(&hw, &hb);
    uint32_t hcrc = tt_crc32(0, (const uint8_t *)hw, (int32_t)sizeof hw[0] * MODEL_NUM_CLASSES * MODEL_FEATURES);
    hcrc = tt_crc32(hcrc, (const uint8_t *)hb, (int32_t)sizeof hb[0] * MODEL_NUM_CLASSES);
    const uint16_t *layers, *channels, *entries;
    const int32_t count = model_selection(&layers, &channels, &entries);
    w[k++] = wcrc;
    w[k++] = hcrc;
    w[k++] = tt_crc32(0, (const uint8_t *)entries, count * (int32_t)sizeof entries[0]);
    w[k++] = (uint32_t)count;
    w[k++] = tt_stack_used();
    uint8_t p[4 * METRICS_WORDS];
    for (uint32_t i = 0; i < k; i++) {
        tt_le32_put(p + 4 * i, w[i]);
    }
    send(TT_STREAM_METRICS, seq, p, sizeof p);
    st.epoch++;
    st.epoch_open = 0;
    st.trained = st.correct = 0;
    st.loss_sum = 0.0f;
}

/** One training step on a SAMPLE frame; returns 0 if it was NAKed. */
static int32_t sample(const tt_stream_frame *f)
{
    if (!st.configured) {
        nak(f->seq, f->type, TT_STREAM_BAD_STATE);
        return 0;
    }
    if (!st.epoch_open) {
        if (model_epoch_begin() != TT_OK) {
            nak(f->seq, f->type, TT_STREAM_FAILED);
            return 0;
        }
        st.epoch_open = 1;
    }
    const int32_t label = f->payload[0] | f->payload[1] << 8;
    float loss, logits[MODEL_NUM_CLASSES];
    memcpy(model_input(), f->payload + 2, MODEL_INPUT_SIZE);
    if (model_train_step(label, &loss, logits) != TT_OK) {
        nak(f->seq, f->type, TT_STREAM_FAILED);
        return 0;
    }
    int32_t best = 0;
    for (int32_t k = 1; k < MODEL_NUM_CLASSES; k++) {
        best = logits[k] > logits[best] ? k : best;
    }
    st.trained++;
    st.total++;
    st.correct += best == label ? 1u : 0u;
    st.loss_sum += loss;
    uint8_t p[8];
    tt_le32_put(p, float_bits(loss));
    tt_le32_put(p + 4, (uint32_t)best);
    send(TT_STREAM_ACK, f->seq, p, sizeof p);
    return 1;
}

/** Act on one good-CRC frame; returns 1 on BYE after DONE. */
static int32_t handle(const tt_stream_frame *f)
{
    const tt_stream_reason why = tt_stream_check(f, MODEL_INPUT_SIZE, MODEL_NUM_CLASSES);
    if (why != TT_STREAM_OK) {
        nak(f->seq, f->type, why);
        return 0;
    }
    if (st.have_last && f->type == st.last_type && f->seq == st.last_seq && f->type != TT_STREAM_HELLO) {
        st.duplicates++;
        tt_uart_write(answer, answer_len);
        return 0;
    }
    switch (f->type) {
    case TT_STREAM_HELLO:
        info(f->seq);
        break;
    case TT_STREAM_CONFIG: {
        float lr;
        const uint32_t bits = tt_le32_get(f->payload + 4);
        memcpy(&lr, &bits, sizeof lr);
        model_train_init(tt_le32_get(f->payload), lr, (int32_t)tt_le32_get(f->payload + 8),
                         (int32_t)tt_le32_get(f->payload + 12));
        memset(&st, 0, sizeof st);
        st.configured = 1;
        send(TT_STREAM_ACK, f->seq, NULL, 0);
        break;
    }
    case TT_STREAM_SAMPLE:
        if (!sample(f)) {
            return 0; /* NAKed: not a frame to recognise as a repeat */
        }
        break;
    case TT_STREAM_EPOCH_END:
        metrics(f->seq);
        break;
    case TT_STREAM_DONE:
        send(TT_STREAM_ACK, f->seq, NULL, 0);
        st.closing = 1;
        break;
    default: /* TT_STREAM_BYE */
        if (!st.closing) {
            nak(f->seq, f->type, TT_STREAM_BAD_STATE);
            return 0;
        }
        return 1;
    }
    st.have_last = 1;
    st.last_type = f->type;
    st.last_seq = f->seq;
    return 0;
}

int main(void)
{
    tt_uart_init();
    model_init();
    tt_stream_init(&parser, rx_buf, RX_CAPACITY);
    for (;;) {
        tt_stream_frame f;
        const int32_t r = tt_stream_feed(&parser, tt_uart_read(), &f);
        if (r == TT_STREAM_REJECT) {
            nak(parser.last.seq, parser.last.type, parser.reason);
        } else if (r == TT_STREAM_FRAME && handle(&f)) {
            return 0;
        }
    }
}
