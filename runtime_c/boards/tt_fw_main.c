/*
 * Firmware application: training steps on the samples embedded in the image (fw_samples.h, written
 * by `trady firmware`), reported one line at a time so the host can compare them
 * with the host build's `host_sim forward` and `host_sim trace` on the same samples:
 *
 *   fwd OP CRC                  first, a forward pass on sample 0: CRC32 of each op's int8 output
 *   fwd logits CRC              and of its fp32 logits
 *   step S sel COUNT CRC        the selection after the step: length, CRC32 of the uint16 entries
 *   step S w CONV CRC           per trainable conv: CRC32 of its int8 weights (layout as emitted)
 *   step S head CRC             CRC32 of the fp32 head weights then bias (their bytes)
 *   step S loss BITS logits CRC the fp32 loss as hex bits, CRC32 of the fp32 logits
 *   done STEPS stack BYTES      at the end, with the stack painting's measured use
 *
 * Built with -DTT_FW_PERSIST, the trained state survives a reset (tt_persist.h, docs/PERSIST.md): at boot the
 * newest valid record of the persistent-state region (tt_sections.ld) is restored and training goes on from its step (one line
 * per slot, then "persist restored seq S step T", "persist refused seq S: ..." when a flash home is not the one
 * the record was trained on, or "persist none ..."), and a record is written at every epoch
 * boundary after the first step taken, before the resampling ("persist saved seq S step T"), as host_sim does.
 *
 * Built with -DTT_FW_QSPI (the STM32F746G-DISCO), the QSPI flash that holds the flash home and the region is
 * brought up first and the home copied into it unless its stamp names this image ("qspi home kept|fresh|other").
 *
 * Built with -DTT_FW_BENCH instead, it runs one forward pass and FW_NUM_SAMPLES training steps and
 * calls tt_fw_marker() before the forward pass, after each of its ops (the observer), after the head,
 * and before and after each step: an instruction counting plugin records its count at every call
 * (`trady bench-mcu`), so there are MODEL_NUM_OPS + 2 + 2 * FW_NUM_SAMPLES markers.
 * Text goes through tt_fw_output.h (semihosting or the board's UART, chosen by the build);
 * main's return value is the exit status: 0 ok, 1 a kernel reported an error (the emulator's; on the
 * STM32F746G-DISCO's USART1 a last line "exit STATUS").
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fw_samples.h"
#include "model.h"
#include "tt_fw_output.h"
#include "tt_state.h"

extern uint32_t tt_stack_used(void);

static int32_t check(tt_status st, const char *what)
{
    if (st != TT_OK) {
        char line[96];
        snprintf(line, sizeof line, "error %s: %s\n", what, tt_status_name(st));
        tt_out_write(line);
        return 1;
    }
    return 0;
}

#if defined(TT_FW_BENCH)

/** Does nothing; its entry address is what the instruction counter watches. */
void __attribute__((noinline)) tt_fw_marker(void)
{
    __asm__ volatile("" ::: "memory");
}

/** The generated train_step's per-layer marks (TT_TRAIN_MARK in tt_train.h). */
void tt_train_mark(void)
{
    tt_fw_marker();
}

static void observe(int32_t op, const int8_t *data, int32_t size, void *user)
{
    (void)op;
    (void)data;
    (void)size;
    (void)user;
    tt_fw_marker();
}

int main(void)
{
    float logits[MODEL_NUM_CLASSES], loss;
    int32_t status = 0;
    tt_out_init();
    model_init();
    memcpy(model_input(), fw_images[0], MODEL_INPUT_SIZE);
    tt_fw_marker();
    status |= check(model_forward(logits, observe, NULL), "forward");
    tt_fw_marker(); /* the head ran since the last op's marker */
    model_train_init(FW_SEED, FW_LR, FW_WARMUP, FW_TOTAL);
    status |= check(model_epoch_begin(), "epoch_begin");
    for (int32_t i = 0; i < FW_NUM_SAMPLES && status == 0; i++) {
        memcpy(model_input(), fw_images[i], MODEL_INPUT_SIZE);
        tt_fw_marker();
        status |= check(model_train_step(fw_labels[i], &loss, logits), "train_step");
        tt_fw_marker();
    }
    char line[64];
    snprintf(line, sizeof line, "bench done stack %lu\n", (unsigned long)tt_stack_used());
    tt_out_write(line);
    return status;
}

#else

#if defined(TT_FW_QSPI)
#include "tt_qspi_stm32f7.h"
#ifndef TT_QSPI_HOST_MODEL
extern int8_t _sitt_home[]; /* the home's pristine weights in internal flash (its LMA, tt_sections.ld) */
extern uint8_t _stt_stamp[];
#define FW_QSPI_PRISTINE _sitt_home
#define FW_QSPI_STAMP _stt_stamp
#endif

/* The STM32F746G-DISCO: bring up the QSPI flash, and with a flash home copy the pristine home into it unless its
 * stamp names this image (tt_qspi_stm32f7.h). One line says which case it was. */
static int32_t qspi_boot(void)
{
    char line[160];
    if (check(tt_qspi_init(), "qspi_init") != 0) {
        return 1;
    }
    int8_t *home;
    const int32_t bytes = model_flash_home(&home);
    if (bytes == 0) {
        tt_out_write("qspi ready: no flash home\n");
        return 0;
    }
    const tt_qspi_image image = {.home = home, .pristine = FW_QSPI_PRISTINE, .bytes = bytes, .stamp = FW_QSPI_STAMP,
                                 .model_id = MODEL_ID_CRC};
    tt_qspi_outcome outcome = TT_QSPI_FRESH;
    uint32_t crc = 0;
    if (check(tt_qspi_boot(&image, &outcome, &crc), "qspi_boot") != 0) {
        return 1;
    }
    snprintf(line, sizeof line, "qspi home %s: %ld bytes, image crc %08lx%s\n", tt_qspi_outcome_name(outcome),
             (long)bytes, (unsigned long)crc,
             outcome == TT_QSPI_KEPT ? " (the stamp names this image: trained home kept)"
             : outcome == TT_QSPI_FRESH ? " (no stamp: pristine home copied)"
                                        : " (another image's stamp: pristine home copied)");
    tt_out_write(line);
    return 0;
}
#endif

#if defined(TT_FW_PERSIST)
#define FW_PERSIST_SLOT_BYTES TT_PERSIST_SLOT_BYTES(MODEL_PERSIST_MAX_BYTES, TT_PERSIST_PAGE_BYTES)
#define FW_PERSIST_BYTES \
    TT_PERSIST_REGION_BYTES(MODEL_PERSIST_MAX_BYTES, TT_PERSIST_PAGE_BYTES, TT_PERSIST_JOURNAL_ENTRIES, MODEL_PERSIST_HOME_PAGE)
#ifndef TT_QSPI_HOST_MODEL
extern uint8_t _stt_persist[], _ett_persist[]; /* the region the linker script reserves (tt_sections.ld) */
#endif
static uint8_t persist_page[TT_PERSIST_PAGE_BYTES];
static const tt_persist persist = {
    .base = _stt_persist,
    .slot_bytes = FW_PERSIST_SLOT_BYTES,
    .page_bytes = TT_PERSIST_PAGE_BYTES,
    .page_buffer = persist_page,
    .journal_entries = MODEL_PERSIST_HOME_PAGE > 0 ? TT_PERSIST_JOURNAL_ENTRIES : 0, /* a flash home's journal */
    .journal_page_bytes = MODEL_PERSIST_HOME_PAGE,
};

static int32_t persist_boot(void)
{
    char line[128];
    if (_ett_persist - _stt_persist < FW_PERSIST_BYTES || (uintptr_t)_stt_persist % TT_PERSIST_PAGE_BYTES != 0) {
        tt_out_write("error persist: the linked region is smaller than two slots and the journal or not page aligned\n");
        return 1;
    }
    for (int32_t k = 0; k < 2; k++) {
        const tt_persist_slot s = tt_persist_examine(&persist, k, MODEL_ID_CRC);
        if (s.state == TT_SLOT_VALID) { /* with the state file's own CRC32 */
            snprintf(line, sizeof line, "persist slot %ld valid seq %lu state-crc %08lx\n", (long)k, (unsigned long)s.seq,
                     (unsigned long)tt_persist_payload_tail(&s));
        } else {
            snprintf(line, sizeof line, "persist slot %ld %s\n", (long)k, tt_slot_state_name(s.state));
        }
        tt_out_write(line);
    }
    uint32_t seq = 0;
    const int32_t status = check(model_persist_restore(&persist, &seq), "persist_restore");
    if (status == 0 && seq == 0 && model_persist_refused() != 0) {
        snprintf(line, sizeof line,
                 "persist refused seq %lu: the weight home is not the one it was trained on, starting from scratch\n",
                 (unsigned long)model_persist_refused());
        tt_out_write(line);
    } else if (status == 0 && seq == 0) {
        tt_out_write("persist none: no valid record of this model, starting from scratch\n");
    } else if (status == 0) {
        snprintf(line, sizeof line, "persist restored seq %lu step %ld\n", (unsigned long)seq, (long)model_step());
        tt_out_write(line);
    }
    return status;
}

static int32_t persist_save(void)
{
    char line[80];
    uint32_t seq = 0;
    const int32_t status = check(model_persist_save(&persist, &seq), "persist_save");
    if (status == 0) {
        tt_persist_slot s;
        tt_persist_newest(&persist, MODEL_ID_CRC, &s);
        snprintf(line, sizeof line, "persist saved seq %lu step %ld state-crc %08lx\n", (unsigned long)seq,
                 (long)model_step(), (unsigned long)tt_persist_payload_tail(&s));
        tt_out_write(line);
    }
    return status;
}
#endif

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static void print_output(int32_t op, const int8_t *data, int32_t size, void *user)
{
    (void)user;
    char line[48];
    snprintf(line, sizeof line, "fwd %ld %08lx\n", (long)op, (unsigned long)tt_crc32(0, (const uint8_t *)data, size));
    tt_out_write(line);
}

int main(void)
{
    char line[96];
    float logits[MODEL_NUM_CLASSES], loss;
    int32_t status = 0, step = 0;
    tt_out_init();
#if defined(TT_FW_QSPI)
    if (qspi_boot() != 0) {
        return 1; /* the home is not readable */
    }
#endif
    model_init();
    memcpy(model_input(), fw_images[0], MODEL_INPUT_SIZE);
    status |= check(model_forward(logits, print_output, NULL), "forward");
    snprintf(line, sizeof line, "fwd logits %08lx\n", (unsigned long)tt_crc32(0, (const uint8_t *)logits, (int32_t)sizeof logits));
    tt_out_write(line);
    model_train_init(FW_SEED, FW_LR, FW_WARMUP, FW_TOTAL);
#if defined(TT_FW_PERSIST)
    status |= persist_boot();
    step = model_step();
    const int32_t first = step;
#endif
    for (; step < FW_NUM_SAMPLES && status == 0; step++) {
        if (step % FW_PER_EPOCH == 0) {
#if defined(TT_FW_PERSIST)
            status |= step > first ? persist_save() : 0;
#endif
            status |= status == 0 ? check(model_epoch_begin(), "epoch_begin") : 0;
        }
        memcpy(model_input(), fw_images[step], MODEL_INPUT_SIZE);
        status |= status == 0 ? check(model_train_step(fw_labels[step], &loss, logits), "train_step") : 0;
        if (status != 0) {
            break;
        }
        const uint16_t *layers, *channels, *entries;
        const int32_t count = model_selection(&layers, &channels, &entries);
        snprintf(line, sizeof line, "step %ld sel %ld %08lx\n", (long)step, (long)count,
                 (unsigned long)tt_crc32(0, (const uint8_t *)entries, count * (int32_t)sizeof entries[0]));
        tt_out_write(line);
        for (int32_t conv = 0; conv < MODEL_NUM_CONVS; conv++) {
            int8_t *home;
            const int32_t size = model_trainable_weights(conv, &home);
            if (size > 0) {
                /* the weights as trained (with a flash home: the working slices over the home), in chunks */
                int8_t chunk[256];
                uint32_t crc = 0;
                for (int32_t at = 0; at < size && status == 0; at += (int32_t)sizeof chunk) {
                    const int32_t n = size - at < (int32_t)sizeof chunk ? size - at : (int32_t)sizeof chunk;
                    status |= check(model_read_weights(conv, at, n, chunk), "read_weights");
                    crc = tt_crc32(crc, (const uint8_t *)chunk, n);
                }
                snprintf(line, sizeof line, "step %ld w %ld %08lx\n", (long)step, (long)conv, (unsigned long)crc);
                tt_out_write(line);
            }
        }
        float *hw, *hb;
        model_head(&hw, &hb);
        uint32_t crc = tt_crc32(0, (const uint8_t *)hw, (int32_t)sizeof hw[0] * MODEL_NUM_CLASSES * MODEL_FEATURES);
        crc = tt_crc32(crc, (const uint8_t *)hb, (int32_t)sizeof hb[0] * MODEL_NUM_CLASSES);
        snprintf(line, sizeof line, "step %ld head %08lx\n", (long)step, (unsigned long)crc);
        tt_out_write(line);
        snprintf(line, sizeof line, "step %ld loss %08lx logits %08lx\n", (long)step, (unsigned long)float_bits(loss),
                 (unsigned long)tt_crc32(0, (const uint8_t *)logits, (int32_t)sizeof logits));
        tt_out_write(line);
    }
#if defined(TT_FW_PERSIST)
    if (status == 0 && step > first && step % FW_PER_EPOCH == 0) {
        status |= persist_save(); /* the run ends on an epoch boundary */
    }
#endif
    snprintf(line, sizeof line, "done %ld stack %lu\n", (long)step, (unsigned long)tt_stack_used());
    tt_out_write(line);
    return status;
}

#endif
