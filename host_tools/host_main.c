/*
 * trady host simulator: drives a generated model on the host for verification and benchmarks.
 *
 *   host_sim forward IMAGES N OUT   run N int8 images (file of N * input size bytes); write, per
 *                                   image, every op's int8 output in op order, then the fp32 logits
 *                                   (persist=REGION: with the flash home of REGION.home, see below)
 *   host_sim bench IMAGES N         time the forward pass; prints "forward_us_per_image <float>"
 *   host_sim trace IMAGES LABELS N STEPS_PER_EPOCH SEED LR WARMUP TOTAL OUT
 *                                   N training steps on the images in file order; after each step write
 *                                   the selection (int32 count, uint16 pool indices), the loss and
 *                                   logits (fp32), every trainable conv's weights (int8, conv order) and
 *                                   the head (fp32 weights then bias)
 *   host_sim train TRAIN_IMAGES TRAIN_LABELS N TEST_IMAGES TEST_LABELS M EPOCHS SEED LR WARMUP_EPOCHS
 *                                   train for EPOCHS epochs (order shuffled per epoch with the PRNG's
 *                                   shuffle stream); prints "step i n" progress and one "epoch {json}"
 *                                   line per epoch with train loss, test accuracy and the selection size
 *   Both trace and train accept trailing options: load=STATE (restore a trained state after init),
 *   save=STATE (write the trained state at the end), start=S (trace only: the global step of the first
 *   image, for epoch boundaries when resuming).
 *   trace and train also accept persist=REGION: the file models the reserved flash region of the persistent state
 *   (tt_persist.h; created erased if absent): at boot the newest valid record is restored and the run goes
 *   on from its step (IMAGES then holds the whole run from step 0; not with start=), and a record is written
 *   at every epoch boundary after the first step taken (before the resampling), also when the run ends on one.
 *   It prints one "persist ..." line per restore and record on stdout. With a flash weight home the file
 *   REGION.home models the home (created from the compiled weights if absent; delete it to model a newly
 *   flashed image). fail_after=N: power loss after N bytes programmed into the region or the home (the page
 *   being programmed keeps N's share of new bytes, the rest is junk): both files are left as the flash would
 *   be and host_sim exits with status 3. trace with persist= ends with "flash pages-programmed region R home H".
 *   train with persist= goes on from the restored epoch (replaying the earlier epochs' shuffles) and writes a
 *   record before every later epoch and at the end.
 *   host_sim persist-restore REGION OUT
 *                                   restore the newest valid record of REGION into a fresh model and write
 *                                   it as a trained state file to OUT; prints the slots and what was restored
 *                                   (OUT is not written when no valid record exists)
 *   host_sim bench-train IMAGES LABELS N
 *                                   time training steps; prints "train_us_per_step <float>"
 *
 * Exit status: 0 ok, 1 kernel error, 2 bad usage or I/O error (one line on stderr).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "tt_flash.h"
#include "tt_persist.h"
#include "tt_prng.h"

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "host_sim: %s: %s\n", what, detail);
    return 2;
}

/* ---- the persistent-state region, modelled by a file (persist=REGION) ---- */
#define PERSIST_SLOT_BYTES TT_PERSIST_SLOT_BYTES(MODEL_PERSIST_MAX_BYTES, TT_PERSIST_PAGE_BYTES)
#define PERSIST_REGION_BYTES \
    TT_PERSIST_REGION_BYTES(MODEL_PERSIST_MAX_BYTES, TT_PERSIST_PAGE_BYTES, TT_PERSIST_JOURNAL_ENTRIES, MODEL_PERSIST_HOME_PAGE)
static uint8_t *persist_base;
static uint8_t persist_page[TT_PERSIST_PAGE_BYTES];
static tt_persist persist;
static FILE *persist_file, *home_file;
static int8_t *home_base; /* the flash weight home, modelled by REGION.home */
static int32_t home_size;
static long persist_fail_after = -1; /* bytes the flash may still take before the power goes; -1: never */
static unsigned long region_pages, home_pages; /* pages programmed (wear) */

/* Open (or create from the compiled weights) REGION.home and read it into the flash home. */
static int home_open(const char *region_path)
{
    home_size = model_flash_home(&home_base);
    if (home_size == 0) {
        return 0;
    }
    char path[4096];
    if (snprintf(path, sizeof path, "%s.home", region_path) >= (int)sizeof path) {
        return fail(region_path, "path too long");
    }
    home_file = fopen(path, "r+b");
    if (home_file == NULL) {
        home_file = fopen(path, "w+b");
        if (home_file == NULL || fwrite(home_base, 1, (size_t)home_size, home_file) != (size_t)home_size ||
            fflush(home_file) != 0) {
            return fail(path, "cannot create the flash home file");
        }
        return 0;
    }
    if (fseek(home_file, 0, SEEK_END) != 0 || ftell(home_file) != home_size) {
        fprintf(stderr, "host_sim: %s: the flash home of this model is %ld bytes\n", path, (long)home_size);
        return 2;
    }
    rewind(home_file);
    return fread(home_base, 1, (size_t)home_size, home_file) == (size_t)home_size ? 0 : fail(path, "cannot read it");
}

/* Open (or create, erased) the region file and read it into memory. */
static int persist_open(const char *path)
{
    const long size = PERSIST_REGION_BYTES;
    persist_base = malloc((size_t)size);
    if (persist_base == NULL) {
        return fail(path, "out of memory for the persistent region");
    }
    memset(persist_base, 0xFF, (size_t)size);
    persist_file = fopen(path, "r+b");
    if (persist_file == NULL) {
        persist_file = fopen(path, "w+b");
        if (persist_file == NULL || fwrite(persist_base, 1, (size_t)size, persist_file) != (size_t)size ||
            fflush(persist_file) != 0) {
            return fail(path, "cannot create the persistent region file");
        }
    } else {
        if (fseek(persist_file, 0, SEEK_END) != 0 || ftell(persist_file) != size) {
            fprintf(stderr, "host_sim: %s: a persistent region of this model is %ld bytes (2 slots of %ld and the journal)\n",
                    path, size, (long)PERSIST_SLOT_BYTES);
            return 2;
        }
        rewind(persist_file);
        if (fread(persist_base, 1, (size_t)size, persist_file) != (size_t)size) {
            return fail(path, "cannot read the persistent region file");
        }
    }
    persist = (tt_persist){.base = persist_base, .slot_bytes = PERSIST_SLOT_BYTES, .page_bytes = TT_PERSIST_PAGE_BYTES,
                           .page_buffer = persist_page,
                           .journal_entries = MODEL_PERSIST_HOME_PAGE > 0 ? TT_PERSIST_JOURNAL_ENTRIES : 0,
                           .journal_page_bytes = MODEL_PERSIST_HOME_PAGE};
    return home_open(path);
}

static void persist_store(const uint8_t *at, int32_t bytes)
{
    const int in_home = home_base != NULL && (const int8_t *)at >= home_base && (const int8_t *)at < home_base + home_size;
    FILE *f = in_home ? home_file : persist_file;
    const long offset = in_home ? (long)((const int8_t *)at - home_base) : (long)(at - persist_base);
    if (fseek(f, offset, SEEK_SET) != 0 || fwrite(at, 1, (size_t)bytes, f) != (size_t)bytes || fflush(f) != 0) {
        fprintf(stderr, "host_sim: cannot write the persistent region file\n");
        exit(2);
    }
}

/* The host flash model (tt_flash.h): erase then program; in the persistent region and the home also the
 * files, and the power-loss hook. */
tt_status tt_flash_program_page(int8_t *page, const uint8_t *data, int32_t bytes)
{
    uint8_t *p = (uint8_t *)page;
    const int in_home = home_file != NULL && page >= home_base && page < home_base + home_size;
    const int in_region = in_home || (persist_base != NULL && p >= persist_base && p < persist_base + PERSIST_REGION_BYTES);
    if (in_region && persist_fail_after >= 0 && persist_fail_after < bytes) {
        const int32_t kept = (int32_t)persist_fail_after;
        memcpy(p, data, (size_t)kept);
        for (int32_t i = kept; i < bytes; i++) { /* the torn rest: neither erased nor the new bytes */
            p[i] = (uint8_t)(data[i] ^ (0x5Au + (uint8_t)i));
        }
        persist_store(p, bytes);
        printf("persist power-loss at %s page offset %ld byte %ld\n", in_home ? "home" : "region",
               in_home ? (long)(page - home_base) : (long)(p - persist_base), (long)kept);
        fflush(stdout);
        exit(3);
    }
    memset(p, 0xFF, (size_t)bytes); /* erase */
    memcpy(p, data, (size_t)bytes); /* program */
    if (in_region) {
        *(in_home ? &home_pages : &region_pages) += 1;
        persist_store(p, bytes);
        persist_fail_after = persist_fail_after >= 0 ? persist_fail_after - bytes : -1;
    }
    return TT_OK;
}

static void persist_slots(void)
{
    for (int32_t k = 0; k < 2; k++) {
        const tt_persist_slot s = tt_persist_examine(&persist, k, MODEL_ID_CRC);
        printf("persist slot %d %s", (int)k, tt_slot_state_name(s.state));
        if (s.state == TT_SLOT_VALID) { /* with the state file's own CRC32 */
            printf(" seq %lu state-crc %08lx", (unsigned long)s.seq, (unsigned long)tt_persist_payload_tail(&s));
        }
        printf("\n");
    }
}

/* Restore from the region; prints what was found. Returns 0 or an exit status. */
static int persist_boot(uint32_t *seq)
{
    persist_slots();
    const tt_status st = model_persist_restore(&persist, seq);
    if (st != TT_OK) {
        fprintf(stderr, "host_sim: persist restore: %s\n", tt_status_name(st));
        return 1;
    }
    if (*seq == 0 && model_persist_refused() != 0) {
        printf("persist refused seq %lu: the weight home is not the one it was trained on, starting from scratch\n",
               (unsigned long)model_persist_refused());
    } else if (*seq == 0) {
        printf("persist none: no valid record of this model, starting from scratch\n");
    } else {
        printf("persist restored seq %lu step %ld\n", (unsigned long)*seq, (long)model_step());
    }
    fflush(stdout);
    return 0;
}

static int persist_save(void)
{
    uint32_t seq = 0;
    const tt_status st = model_persist_save(&persist, &seq);
    if (st != TT_OK) {
        fprintf(stderr, "host_sim: persist save: %s\n", tt_status_name(st));
        return 1;
    }
    tt_persist_slot s;
    tt_persist_newest(&persist, MODEL_ID_CRC, &s);
    printf("persist saved seq %lu step %ld state-crc %08lx\n", (unsigned long)seq, (long)model_step(),
           (unsigned long)tt_persist_payload_tail(&s));
    fflush(stdout);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *read_file(const char *path, size_t item, long n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    void *buf = malloc(item * (size_t)n);
    if (buf != NULL && fread(buf, item, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

static int8_t *read_images(const char *path, long n)
{
    return read_file(path, MODEL_INPUT_SIZE, n);
}

static int32_t *read_labels(const char *path, long n)
{
    int32_t *labels = read_file(path, sizeof(int32_t), n);
    for (long i = 0; labels != NULL && i < n; i++) {
        if (labels[i] < 0 || labels[i] >= MODEL_NUM_CLASSES) {
            fprintf(stderr, "host_sim: %s: label %d of sample %ld is out of range 0..%d\n", path, (int)labels[i], i,
                    MODEL_NUM_CLASSES - 1);
            free(labels);
            return NULL;
        }
    }
    return labels;
}

static void write_state(FILE *out)
{
    const uint16_t *layers, *channels, *entries;
    const int32_t count = model_selection(&layers, &channels, &entries);
    fwrite(&count, sizeof count, 1, out);
    fwrite(entries, sizeof entries[0], (size_t)count, out);
    for (int32_t conv = 0; conv < MODEL_NUM_CONVS; conv++) {
        int8_t *home;
        const int32_t size = model_trainable_weights(conv, &home);
        int8_t *w = size > 0 ? malloc((size_t)size) : NULL;
        if (w != NULL && model_read_weights(conv, 0, size, w) == TT_OK) { /* as trained (flash home: working copies) */
            fwrite(w, 1, (size_t)size, out);
        }
        free(w);
    }
    float *hw, *hb;
    model_head(&hw, &hb);
    fwrite(hw, sizeof hw[0], (size_t)MODEL_NUM_CLASSES * MODEL_FEATURES, out);
    fwrite(hb, sizeof hb[0], MODEL_NUM_CLASSES, out);
}

/* The value of option `key=` among argv[first..argc-1], or NULL. */
static const char *option(int argc, char **argv, int first, const char *key)
{
    const size_t n = strlen(key);
    for (int i = first; i < argc; i++) {
        if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') {
            return argv[i] + n + 1;
        }
    }
    return NULL;
}

static int load_state(const char *path)
{
    if (path == NULL) {
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return fail(path, "cannot open the state file");
    }
    uint8_t *buf = malloc(MODEL_STATE_MAX_BYTES + 1);
    const size_t n = buf != NULL ? fread(buf, 1, MODEL_STATE_MAX_BYTES + 1, f) : 0;
    fclose(f);
    const tt_status st = buf != NULL && n <= MODEL_STATE_MAX_BYTES ? model_state_load(buf, (int32_t)n) : TT_ERR_ARG;
    free(buf);
    return st == TT_OK ? 0 : fail(path, "not a trained state of this compiled model (version, model id, size or CRC)");
}

static int save_state(const char *path)
{
    if (path == NULL) {
        return 0;
    }
    uint8_t *buf = malloc(MODEL_STATE_MAX_BYTES);
    int32_t n = 0;
    const tt_status st = buf != NULL ? model_state_save(buf, MODEL_STATE_MAX_BYTES, &n) : TT_ERR_ARG;
    FILE *f = st == TT_OK ? fopen(path, "wb") : NULL;
    int status = 0;
    if (f == NULL || fwrite(buf, 1, (size_t)n, f) != (size_t)n) {
        status = fail(path, "cannot write the state file");
    }
    if (f != NULL && fclose(f) != 0) {
        status = fail(path, "cannot write the state file");
    }
    free(buf);
    return status;
}

static int trace(int argc, char **argv)
{
    const long n = strtol(argv[4], NULL, 10), per_epoch = strtol(argv[5], NULL, 10);
    int8_t *images = read_images(argv[2], n);
    int32_t *labels = read_labels(argv[3], n);
    FILE *out = fopen(argv[10], "wb");
    int status = 0;
    if (images == NULL || labels == NULL || out == NULL || per_epoch < 1) {
        status = fail("trace", "cannot read the images/labels or open the output");
    }
    model_train_init((uint32_t)strtoul(argv[6], NULL, 10), strtof(argv[7], NULL), (int32_t)strtol(argv[8], NULL, 10),
                     (int32_t)strtol(argv[9], NULL, 10));
    const char *start_opt = option(argc, argv, 11, "start");
    const long start = start_opt != NULL ? strtol(start_opt, NULL, 10) : 0;
    status = status == 0 ? load_state(option(argc, argv, 11, "load")) : status;
    const char *persist_path = option(argc, argv, 11, "persist"), *fail_opt = option(argc, argv, 11, "fail_after");
    long first = 0; /* the first image (and step) this run takes */
    if (status == 0 && persist_path != NULL) {
        uint32_t seq;
        status = start_opt != NULL ? fail("trace", "persist= goes on from the restored step: no start=") : 0;
        status = status == 0 ? persist_open(persist_path) : status;
        status = status == 0 ? persist_boot(&seq) : status;
        first = model_step();
        persist_fail_after = fail_opt != NULL ? strtol(fail_opt, NULL, 10) : -1;
    }
    for (long i = first; i < n && status == 0; i++) {
        float loss, logits[MODEL_NUM_CLASSES];
        if (persist_path != NULL && i > first && i % per_epoch == 0) {
            status = persist_save();
            if (status != 0) {
                break;
            }
        }
        tt_status st = (start + i) % per_epoch == 0 ? model_epoch_begin() : TT_OK;
        memcpy(model_input(), images + (size_t)i * MODEL_INPUT_SIZE, MODEL_INPUT_SIZE);
        st = st == TT_OK ? model_train_step(labels[i], &loss, logits) : st;
        if (st != TT_OK) {
            fprintf(stderr, "host_sim: step %ld: %s\n", i, tt_status_name(st));
            status = 1;
            break;
        }
        write_state(out);
        fwrite(&loss, sizeof loss, 1, out);
        fwrite(logits, sizeof logits[0], MODEL_NUM_CLASSES, out);
    }
    if (status == 0 && persist_path != NULL && n > first && n % per_epoch == 0) {
        status = persist_save(); /* the run ends on an epoch boundary */
    }
    if (status == 0 && persist_path != NULL) {
        printf("flash pages-programmed region %lu home %lu\n", region_pages, home_pages);
    }
    if (out != NULL && fclose(out) != 0) {
        status = fail(argv[10], "write failed");
    }
    status = status == 0 ? save_state(option(argc, argv, 11, "save")) : status;
    free(images);
    free(labels);
    return status;
}

static int persist_restore_cmd(char **argv)
{
    model_train_init(0, 0.0f, 1, 1);
    uint32_t seq = 0;
    int status = persist_open(argv[2]);
    status = status == 0 ? persist_boot(&seq) : status;
    return status == 0 && seq != 0 ? save_state(argv[3]) : status;
}

static int argmax(const float *v, int32_t n)
{
    int best = 0;
    for (int32_t k = 1; k < n; k++) {
        best = v[k] > v[best] ? k : best;
    }
    return best;
}

static int train(int argc, char **argv)
{
    const long n = strtol(argv[4], NULL, 10), m = strtol(argv[7], NULL, 10);
    const long epochs = strtol(argv[8], NULL, 10), warmup_epochs = strtol(argv[11], NULL, 10);
    const uint32_t seed = (uint32_t)strtoul(argv[9], NULL, 10);
    int8_t *images = read_images(argv[2], n), *test = read_images(argv[5], m);
    int32_t *labels = read_labels(argv[3], n), *test_labels = read_labels(argv[6], m);
    long *order = malloc(sizeof(long) * (size_t)(n > 0 ? n : 1));
    int status = 0;
    if (images == NULL || labels == NULL || test == NULL || test_labels == NULL || order == NULL || epochs < 1) {
        status = fail("train", "cannot read the train/test images and labels");
    }
    model_train_init(seed, strtof(argv[10], NULL), (int32_t)(warmup_epochs * n), (int32_t)(epochs * n));
    status = status == 0 ? load_state(option(argc, argv, 12, "load")) : status;
    const char *persist_path = option(argc, argv, 12, "persist"), *fail_opt = option(argc, argv, 12, "fail_after");
    long first = 0; /* the first epoch this run trains */
    if (status == 0 && persist_path != NULL) {
        uint32_t seq;
        status = persist_open(persist_path);
        status = status == 0 ? persist_boot(&seq) : status;
        if (status == 0 && model_step() % n != 0) {
            status = fail(persist_path, "the restored record is not at an epoch boundary of this data set");
        }
        first = model_step() / n;
        persist_fail_after = fail_opt != NULL ? strtol(fail_opt, NULL, 10) : -1;
    }
    tt_prng shuffle;
    tt_prng_seed(&shuffle, seed, TT_STREAM_SHUFFLE);
    for (long i = 0; i < n; i++) {
        order[i] = i;
    }
    for (long e = 0; e < epochs && status == 0; e++) {
        if (persist_path != NULL && e > first) {
            status = persist_save();
            if (status != 0) {
                break;
            }
        }
        tt_status st = e >= first ? model_epoch_begin() : TT_OK;
        for (long i = n - 1; i > 0; i--) { /* Fisher-Yates */
            const long j = (long)tt_prng_bounded(&shuffle, (uint32_t)(i + 1));
            const long t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        if (e < first) { /* trained before the restored record: only its shuffle is replayed */
            continue;
        }
        double loss_sum = 0.0;
        long correct_train = 0;
        for (long i = 0; i < n && st == TT_OK; i++) {
            float loss, logits[MODEL_NUM_CLASSES];
            memcpy(model_input(), images + (size_t)order[i] * MODEL_INPUT_SIZE, MODEL_INPUT_SIZE);
            st = model_train_step(labels[order[i]], &loss, logits);
            loss_sum += loss;
            correct_train += argmax(logits, MODEL_NUM_CLASSES) == labels[order[i]];
            if ((i + 1) % 50 == 0 || i + 1 == n) {
                printf("step %ld %ld\n", e * n + i + 1, epochs * n);
                fflush(stdout);
            }
        }
        long correct = 0;
        for (long i = 0; i < m && st == TT_OK; i++) {
            float logits[MODEL_NUM_CLASSES];
            memcpy(model_input(), test + (size_t)i * MODEL_INPUT_SIZE, MODEL_INPUT_SIZE);
            st = model_forward(logits, NULL, NULL);
            correct += argmax(logits, MODEL_NUM_CLASSES) == test_labels[i];
        }
        if (st != TT_OK) {
            fprintf(stderr, "host_sim: epoch %ld: %s\n", e, tt_status_name(st));
            status = 1;
            break;
        }
        const uint16_t *layers, *channels, *entries;
        const int32_t count = model_selection(&layers, &channels, &entries);
        printf("epoch {\"epoch\": %ld, \"train_loss\": %.6f, \"train_acc\": %.6f, \"test_acc\": %.6f, "
               "\"channels\": %d, \"flash_pages\": %lu}\n", e + 1, loss_sum / (double)n, (double)correct_train / (double)n,
               m > 0 ? (double)correct / (double)m : 0.0, (int)count, (unsigned long)model_flash_pages_programmed());
        fflush(stdout);
    }
    if (status == 0 && persist_path != NULL && epochs > first) {
        status = persist_save(); /* the run ends on an epoch boundary */
    }
    status = status == 0 ? save_state(option(argc, argv, 12, "save")) : status;
    free(images);
    free(test);
    free(labels);
    free(test_labels);
    free(order);
    return status;
}

static int bench_train(char **argv)
{
    const long n = strtol(argv[4], NULL, 10);
    int8_t *images = read_images(argv[2], n);
    int32_t *labels = read_labels(argv[3], n);
    if (images == NULL || labels == NULL) {
        free(images);
        free(labels);
        return fail("bench-train", "cannot read the images and labels");
    }
    model_train_init(1, 0.01f, 1, (int32_t)n);
    tt_status st = model_epoch_begin();
    const double t0 = now_s();
    for (long i = 0; i < n && st == TT_OK; i++) {
        float loss, logits[MODEL_NUM_CLASSES];
        memcpy(model_input(), images + (size_t)i * MODEL_INPUT_SIZE, MODEL_INPUT_SIZE);
        st = model_train_step(labels[i], &loss, logits);
    }
    printf("train_us_per_step %.1f\n", (now_s() - t0) / (double)n * 1e6);
    free(images);
    free(labels);
    return st == TT_OK ? 0 : 1;
}

static void write_output(int32_t op, const int8_t *data, int32_t size, void *user)
{
    (void)op;
    FILE *f = user;
    fwrite(data, 1, (size_t)size, f);
}


int main(int argc, char **argv)
{
    if (argc < 4) {
        return fail("usage", "host_sim forward|bench|trace|train|bench-train|persist-restore ... (see host_main.c)");
    }
    if (strcmp(argv[1], "trace") == 0) {
        return argc >= 11 ? trace(argc, argv) : fail("trace", "wrong argument count");
    }
    if (strcmp(argv[1], "train") == 0) {
        return argc >= 12 ? train(argc, argv) : fail("train", "wrong argument count");
    }
    if (strcmp(argv[1], "persist-restore") == 0) {
        return argc == 4 ? persist_restore_cmd(argv) : fail("persist-restore", "wrong argument count");
    }
    if (strcmp(argv[1], "bench-train") == 0) {
        return argc == 5 ? bench_train(argv) : fail("bench-train", "wrong argument count");
    }
    const long n = strtol(argv[3], NULL, 10);
    if (n < 1) {
        return fail(argv[3], "N must be a positive integer");
    }
    int8_t *images = read_images(argv[2], n);
    if (images == NULL) {
        return fail(argv[2], "cannot read N images of MODEL_INPUT_SIZE bytes");
    }
    float logits[MODEL_NUM_CLASSES];
    model_init();
    int status = 0;
    if (strcmp(argv[1], "forward") == 0 && (argc == 5 || argc == 6)) {
        const char *region = option(argc, argv, 5, "persist"); /* the flash home of REGION.home */
        status = region != NULL ? home_open(region) : 0;
        if (status != 0) {
            free(images);
            return status;
        }
        FILE *out = fopen(argv[4], "wb");
        if (out == NULL) {
            free(images);
            return fail(argv[4], "cannot open for writing");
        }
        for (long i = 0; i < n && status == 0; i++) {
            memcpy(model_input(), images + (size_t)i * MODEL_INPUT_SIZE, MODEL_INPUT_SIZE);
            tt_status st = model_forward(logits, write_output, out);
            if (st != TT_OK) {
                fprintf(stderr, "host_sim: image %ld: forward failed: %s\n", i, tt_status_name(st));
                status = 1;
            }
            fwrite(logits, sizeof logits[0], MODEL_NUM_CLASSES, out);
        }
        if (fclose(out) != 0) {
            status = fail(argv[4], "write failed");
        }
    } else if (strcmp(argv[1], "bench") == 0 && argc == 4) {
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            const double t0 = now_s();
            for (long i = 0; i < n && status == 0; i++) {
                memcpy(model_input(), images + (size_t)i * MODEL_INPUT_SIZE, MODEL_INPUT_SIZE);
                status = model_forward(logits, NULL, NULL) == TT_OK ? 0 : 1;
            }
            const double dt = (now_s() - t0) / (double)n;
            best = dt < best ? dt : best;
        }
        printf("forward_us_per_image %.1f\n", best * 1e6);
    } else {
        status = fail(argv[1], "unknown command or wrong argument count");
    }
    free(images);
    return status;
}
