/*
 * trady instruction counter: a QEMU TCG plugin (API v1, QEMU 7.2) that counts executed guest
 * instructions exactly, in total and per function, and records a snapshot at every execution of a
 * marker address (the firmware's tt_fw_marker()).
 *
 *   qemu-system-arm ... -plugin tt_insn_plugin.so,marker=0xADDR,ranges=FILE,out=FILE
 *
 *   ranges: one "START END" line (hex, END exclusive) per function, sorted by START; a translation
 *           block is charged to the range holding its first instruction (a block never spans two
 *           functions: calls and returns end blocks), else to "other".
 *   out:    one line per marker execution, then one "end" line at exit, each
 *           "<total> <count of range 0> ... <count of range N-1> <other>", cumulative counts.
 *
 * Counting adds each block's instruction count inline when the block starts, so a snapshot taken at
 * the marker includes the marker's own block (its 1-2 instructions). Single vCPU (the M-profile
 * machines have one). QEMU ships no plugin header: the few declarations used are written here,
 * matching include/qemu/qemu-plugin.h of API version 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the subset of qemu-plugin.h (API v1) this plugin uses ---- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;
/* ---- end of the API subset ---- */

#define MAX_RANGES 4096

static uint64_t total;
static uint64_t counts[MAX_RANGES + 1]; /* per range, then "other" */
static uint64_t starts[MAX_RANGES], ends[MAX_RANGES];
static size_t n_ranges;
static uint64_t marker = UINT64_MAX;
static FILE *out;

static uint64_t *counter_for(uint64_t pc)
{
    size_t lo = 0, hi = n_ranges; /* binary search: the last range starting at or before pc */
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (starts[mid] <= pc) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo > 0 && pc < ends[lo - 1] ? &counts[lo - 1] : &counts[n_ranges];
}

static void snapshot(const char *tag)
{
    fprintf(out, "%s%" PRIu64, tag, total);
    for (size_t i = 0; i <= n_ranges; i++) {
        fprintf(out, " %" PRIu64, counts[i]);
    }
    fputc('\n', out);
}

static void on_marker(unsigned int vcpu, void *userdata)
{
    (void)vcpu;
    (void)userdata;
    snapshot("");
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    const size_t n = qemu_plugin_tb_n_insns(tb);
    if (n == 0) {
        return;
    }
    const uint64_t pc = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, 0));
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, n);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, counter_for(pc), n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_vaddr(insn) == marker) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void on_qemu_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    snapshot("end ");
    fclose(out);
}

static int read_ranges(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    uint64_t s, e;
    while (n_ranges < MAX_RANGES && fscanf(f, "%" SCNx64 " %" SCNx64, &s, &e) == 2) {
        if (n_ranges > 0 && s < starts[n_ranges - 1]) {
            fclose(f);
            return -1;
        }
        starts[n_ranges] = s;
        ends[n_ranges] = e;
        n_ranges++;
    }
    const int bad = !feof(f) && n_ranges == MAX_RANGES;
    fclose(f);
    return bad ? -1 : 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv);

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    const char *out_path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "marker=", 7) == 0) {
            marker = strtoull(argv[i] + 7, NULL, 0);
        } else if (strncmp(argv[i], "ranges=", 7) == 0) {
            if (read_ranges(argv[i] + 7) != 0) {
                fprintf(stderr, "tt_insn_plugin: %s: unreadable or unsorted ranges file\n", argv[i] + 7);
                return -1;
            }
        } else if (strncmp(argv[i], "out=", 4) == 0) {
            out_path = argv[i] + 4;
        } else {
            fprintf(stderr, "tt_insn_plugin: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    out = fopen(out_path != NULL ? out_path : "/dev/stderr", "w");
    if (out == NULL) {
        fprintf(stderr, "tt_insn_plugin: cannot open %s\n", out_path);
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_qemu_exit, NULL);
    return 0;
}
