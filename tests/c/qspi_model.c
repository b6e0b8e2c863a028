/* Register-level host model of the DISCO's QUADSPI + N25Q128A (see qspi_model.h). */
#define _POSIX_C_SOURCE 200809L
#include "qspi_model.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model.h"
#include "tt_fw_output.h"

#define SUB 4096
#define PAGE 256
#define ERASE_POLLS 5 /* status reads that still see WIP after a subsector erase */
#define PROGRAM_POLLS 2
#define LATENCY 2 /* SR reads before a started command completes (TCF) */

/* ---- the layout: home, stamp, region ---- */
int8_t *qspi_model_pristine;
uint8_t qspi_model_stamp[4096] __attribute__((aligned(4096)));
uint8_t qspi_model_region[QSPI_MODEL_REGION_BYTES] __attribute__((aligned(4096)));

typedef struct {
    uint8_t *cpu;
    int32_t at, bytes;
} segment;
static segment seg[3];
static int32_t flash_bytes;
static uint8_t *flash; /* the N25Q128A's array (the modelled part of it) */
static const char *flash_path;
static long cut = -1; /* flash operations left before the power goes; -1: never */
static long erases, programmed; /* flash operations since power-on */

static void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stdout, "qspi-model: violation: ");
    vfprintf(stdout, fmt, ap);
    fprintf(stdout, "\n");
    fflush(stdout);
    va_end(ap);
    _exit(5);
}

static void protect(int prot);

static void at_exit(void)
{
    protect(PROT_READ); /* the leak checker scans the arrays after this */
    printf("qspi-model: flash operations %ld (%ld subsector erases, %ld bytes programmed)\n", erases + programmed, erases,
           programmed);
    fflush(stdout);
}

static void save_flash(void)
{
    if (flash_path == NULL) {
        return;
    }
    FILE *f = fopen(flash_path, "wb");
    if (f == NULL || fwrite(flash, 1, (size_t)flash_bytes, f) != (size_t)flash_bytes || fclose(f) != 0) {
        fprintf(stderr, "qspi-model: cannot write %s\n", flash_path);
        _exit(2);
    }
}

static void on_segv(int sig)
{
    (void)sig;
    static const char msg[] = "qspi-model: violation: the CPU read or wrote the QSPI window while it is not "
                              "memory-mapped and open in the MPU (or wrote to it)\n";
    fflush(stdout);
    if (write(1, msg, sizeof msg - 1) < 0) {
        _exit(4);
    }
    _exit(4);
}

/* ---- peripheral state ---- */
static uint32_t rcc_ahb1enr, rcc_ahb3enr, rcc_ahb3rstr;
static uint32_t gpio[3][10]; /* B, D, E: MODER..AFRH by word offset */
static uint32_t mpu_ctrl, mpu_rnr, mpu_rbar[8], mpu_rasr[8];
static uint32_t cr, dcr, dlr, ccr, ar, psmkr, psmar, pir;
static int busy, mapped, tcf, smf, latency, polling;
static int wait_addr, wait_data; /* the command configured in CCR waits for AR / DR */
static uint8_t data[PAGE + 4];
static int32_t data_len;
/* the flash */
static int wel, reset_enabled, wip_polls;
static int window_open;

static int32_t field(uint32_t v, int lo, int bits)
{
    return (int32_t)((v >> lo) & ((1u << bits) - 1u));
}

static void protect(int prot)
{
    for (int k = 0; k < 3; k++) {
        if (mprotect(seg[k].cpu, (size_t)seg[k].bytes, prot) != 0) {
            perror("qspi-model: mprotect");
            _exit(2);
        }
    }
}

/* The window is visible when the QUADSPI is memory-mapped and the MPU opens it (region 7, enabled). */
static void update_window(void)
{
    const int open = mapped && (mpu_ctrl & 1u) && (mpu_rasr[7] & 1u);
    if (open && !window_open) {
        protect(PROT_READ | PROT_WRITE);
        for (int k = 0; k < 3; k++) {
            memcpy(seg[k].cpu, flash + seg[k].at, (size_t)seg[k].bytes);
        }
        protect(PROT_READ);
    } else if (!open && window_open) {
        protect(PROT_NONE);
    }
    window_open = open;
}

int32_t qspi_model_offset(const volatile void *p)
{
    const uint8_t *q = (const uint8_t *)(uintptr_t)p;
    for (int k = 0; k < 3; k++) {
        if (q >= seg[k].cpu && q < seg[k].cpu + seg[k].bytes) {
            return seg[k].at + (int32_t)(q - seg[k].cpu);
        }
    }
    return -1;
}

static uint32_t junk(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

static void power_loss(const char *what, int32_t at, int32_t byte)
{
    printf("qspi-model: power-loss during %s at flash offset %ld byte %ld\n", what, (long)at, (long)byte);
    fflush(stdout);
    save_flash();
    _exit(3);
}

/* ---- the N25Q128A ---- */

static void check_pins(void)
{
    static const struct {
        int port, pin, af;
        const char *name;
    } pins[] = {{0, 2, 9, "PB2 CLK"}, {0, 6, 10, "PB6 NCS"}, {1, 11, 9, "PD11 IO0"},
                {1, 12, 9, "PD12 IO1"}, {2, 2, 9, "PE2 IO2"}, {1, 13, 9, "PD13 IO3"}};
    for (size_t i = 0; i < sizeof pins / sizeof pins[0]; i++) {
        const uint32_t *g = gpio[pins[i].port];
        const int pin = pins[i].pin;
        const int af = field(g[pin < 8 ? 8 : 9], 4 * (pin % 8), 4);
        if (field(g[0], 2 * pin, 2) != 2 || af != pins[i].af) {
            violation("pin %s is not in alternate function %d (MODER %d, AF %d)", pins[i].name, pins[i].af,
                      field(g[0], 2 * pin, 2), af);
        }
    }
}

static void flash_command(int instr, int32_t addr)
{
    if (instr != 0x05 && wip_polls > 0) {
        violation("command 0x%02x while the flash is busy (WIP: poll the status first)", instr);
    }
    if (instr != 0x99) {
        reset_enabled = instr == 0x66;
    }
    switch (instr) {
    case 0x66:
        return;
    case 0x99:
        if (!reset_enabled) {
            violation("RESET MEMORY without RESET ENABLE just before");
        }
        wel = 0;
        reset_enabled = 0;
        return;
    case 0x06:
        wel = 1;
        return;
    case 0x04:
        wel = 0;
        return;
    case 0x20: {
        if (!wel) {
            violation("SUBSECTOR ERASE at %ld without WRITE ENABLE", (long)addr);
        }
        if (addr < 0 || addr >= flash_bytes) {
            violation("SUBSECTOR ERASE at %ld, outside the modelled flash", (long)addr);
        }
        const int32_t base = addr - addr % SUB;
        if (cut == 0) {
            for (int32_t i = 0; i < SUB; i++) { /* partly erased: some bits set */
                flash[base + i] |= (uint8_t)junk((uint32_t)(base + i) * 2654435761u);
            }
            power_loss("SUBSECTOR ERASE", base, 0);
        }
        cut = cut > 0 ? cut - 1 : cut;
        erases++;
        memset(flash + base, 0xFF, SUB);
        wel = 0;
        wip_polls = ERASE_POLLS;
        return;
    }
    case 0x02: {
        if (!wel) {
            violation("PAGE PROGRAM at %ld without WRITE ENABLE", (long)addr);
        }
        if (addr < 0 || addr + data_len > flash_bytes) {
            violation("PAGE PROGRAM at %ld, outside the modelled flash", (long)addr);
        }
        if (addr % PAGE + data_len > PAGE) {
            violation("PAGE PROGRAM of %ld bytes at %ld crosses a 256-byte page (the flash would wrap)", (long)data_len,
                      (long)addr);
        }
        for (int32_t i = 0; i < data_len; i++) {
            if ((flash[addr + i] & data[i]) != data[i]) {
                violation("PAGE PROGRAM at %ld needs bits set that only an erase sets (byte %ld: 0x%02x over 0x%02x)",
                          (long)addr, (long)i, data[i], flash[addr + i]);
            }
        }
        for (int32_t i = 0; i < data_len; i++) {
            if (cut == 0) { /* this byte partly programmed, the rest of the page untouched */
                flash[addr + i] &= (uint8_t)(data[i] | junk((uint32_t)(addr + i)));
                power_loss("PAGE PROGRAM", addr, i);
            }
            cut = cut > 0 ? cut - 1 : cut;
            programmed++;
            flash[addr + i] &= data[i]; /* programming only clears bits */
        }
        wel = 0;
        wip_polls = PROGRAM_POLLS;
        return;
    }
    default:
        violation("command 0x%02x is not one the driver should send", instr);
    }
}

/* ---- QUADSPI ---- */

static void start(void)
{
    const int fmode = field(ccr, 26, 2), imode = field(ccr, 8, 2), admode = field(ccr, 10, 2);
    const int dmode = field(ccr, 24, 2), instr = field(ccr, 0, 8);
    if (!(cr & 1u)) {
        violation("a command started with the QUADSPI disabled (CR.EN)");
    }
    if (field(dcr, 16, 5) != 23) {
        violation("DCR.FSIZE is %d, the N25Q128A needs 23 (16 MB)", field(dcr, 16, 5));
    }
    if (window_open || (mpu_rasr[7] & 1u)) {
        violation("indirect command 0x%02x while the MPU leaves the window open (speculative reads)", instr);
    }
    if (imode != 1 || admode > 1 || dmode > 1 || field(ccr, 14, 2) != 0 || field(ccr, 31, 1) != 0) {
        violation("command 0x%02x is not single-line SDR (CCR %08x)", instr, ccr);
    }
    if (admode == 1 && field(ccr, 12, 2) != 2) {
        violation("command 0x%02x: address size %d, the N25Q128A takes 24 bits", instr, 8 * (field(ccr, 12, 2) + 1));
    }
    check_pins();
    busy = 1;
    latency = LATENCY;
    tcf = smf = 0;
    if (fmode == 2) { /* automatic polling of the status register */
        if (instr != 0x05 || dmode != 1 || dlr != 0) {
            violation("automatic polling must read one status byte with 0x05 (CCR %08x, DLR %u)", ccr, dlr);
        }
        if (!(cr & (1u << 22))) {
            violation("automatic polling without CR.APMS: it never stops");
        }
        polling = 1;
        return;
    }
    if (fmode != 0) {
        violation("indirect read mode is not modelled (the driver reads the flash through the window)");
    }
    flash_command(instr, admode ? (int32_t)ar : 0);
}

static uint32_t status_byte(void)
{
    const uint32_t s = (wip_polls > 0 ? 1u : 0u) | (wel ? 2u : 0u);
    if (wip_polls > 0) {
        wip_polls--;
    }
    return s;
}

static uint32_t read_sr(void)
{
    if (busy && !mapped) {
        if (polling) {
            if (((status_byte() & psmkr) == psmar)) {
                smf = 1;
                polling = 0;
                busy = 0;
            }
        } else if (!wait_addr && !wait_data && latency > 0 && --latency == 0) {
            tcf = 1;
            busy = 0;
        }
    }
    const int ftf = wait_data; /* the FIFO drains at once: room while data is expected */
    return (tcf ? 2u : 0u) | (ftf ? 4u : 0u) | (smf ? 8u : 0u) | (busy || wait_addr || wait_data || mapped ? 32u : 0u);
}

static void write_ccr(uint32_t v)
{
    if (busy || mapped) {
        violation("CCR written while BUSY%s", mapped ? " in memory-mapped mode (abort it first)" : "");
    }
    ccr = v;
    const int fmode = field(v, 26, 2), admode = field(v, 10, 2), dmode = field(v, 24, 2);
    if (fmode == 3) {
        if (field(v, 0, 8) != 0x0B || field(v, 8, 2) != 1 || admode != 1 || field(v, 12, 2) != 2 || dmode != 1 ||
            field(v, 18, 5) != 8 || field(v, 14, 2) != 0) {
            violation("memory-mapped mode must be FAST READ 0x0B, single line, 24-bit address, 8 dummy cycles "
                      "(CCR %08x)", v);
        }
        if (!(mpu_ctrl & 1u) || !(mpu_rasr[6] & 1u) || mpu_rbar[6] != 0x90000000u || field(mpu_rasr[6], 1, 5) != 27 ||
            field(mpu_rasr[6], 24, 3) != 0) {
            violation("memory-mapped mode without an MPU region forbidding the 256 MB window (speculative reads)");
        }
        check_pins();
        mapped = 1;
        update_window();
        return;
    }
    wait_addr = admode != 0 && fmode == 0;
    wait_data = 0;
    data_len = 0;
    if (!wait_addr) {
        if (dmode != 0 && fmode == 0) {
            violation("a write command with data but no address is not one the driver should send");
        }
        start();
    }
}

static void write_ar(uint32_t v)
{
    ar = v;
    if (!wait_addr) {
        violation("AR written when no command waits for an address");
    }
    wait_addr = 0;
    if (field(ccr, 24, 2) != 0) {
        if (dlr + 1u > PAGE) {
            violation("DLR %u: more than a 256-byte page to program", dlr);
        }
        wait_data = 1; /* starts at the first DR write */
        return;
    }
    start();
}

static void write_dr(uint32_t v)
{
    if (!wait_data) {
        violation("DR written when no indirect write waits for data");
    }
    for (int i = 0; i < 4; i++) {
        if ((uint32_t)data_len >= dlr + 1u) {
            violation("more data written to DR than DLR + 1 = %u bytes", dlr + 1u);
        }
        data[data_len++] = (uint8_t)(v >> (8 * i));
    }
    if ((uint32_t)data_len == dlr + 1u) {
        wait_data = 0;
        start();
    }
}

static void write_cr(uint32_t v)
{
    if (v & 2u) { /* ABORT: ends memory-mapped mode or the command in progress; reads back 0 at once */
        if (wait_data && data_len > 0) {
            data_len = 0; /* a program cut short by an abort is not executed */
        }
        busy = mapped = polling = wait_addr = wait_data = 0;
        update_window();
        v &= ~2u;
    } else if (busy || mapped || wait_addr || wait_data) {
        if ((v ^ cr) & ~1u) {
            violation("CR changed while BUSY");
        }
    }
    cr = v;
}

static void need_clock(uint32_t enr, uint32_t bit, const char *what)
{
    if (!(enr & bit)) {
        violation("%s accessed with its clock off (RCC)", what);
    }
}

static uint32_t *gpio_reg(uint32_t addr)
{
    const uint32_t bases[3] = {0x40020400u, 0x40020C00u, 0x40021000u}, bits[3] = {1u << 1, 1u << 3, 1u << 4};
    for (int k = 0; k < 3; k++) {
        if (addr >= bases[k] && addr < bases[k] + 0x28u && (addr - bases[k]) % 4u == 0) {
            need_clock(rcc_ahb1enr, bits[k], "GPIO");
            return &gpio[k][(addr - bases[k]) / 4u];
        }
    }
    return NULL;
}

uint32_t qspi_model_read(uint32_t addr)
{
    uint32_t *g = gpio_reg(addr);
    if (g != NULL) {
        return *g;
    }
    if (addr >= 0xA0001000u && addr < 0xA0001034u) {
        need_clock(rcc_ahb3enr, 2u, "QUADSPI");
    }
    switch (addr) {
    case 0x40023830u:
        return rcc_ahb1enr;
    case 0x40023838u:
        return rcc_ahb3enr;
    case 0x40023818u:
        return rcc_ahb3rstr;
    case 0xE000ED94u:
        return mpu_ctrl;
    case 0xE000ED14u:
        return 0; /* SCB->CCR: caches off */
    case 0xA0001000u:
        return cr;
    case 0xA0001004u:
        return dcr;
    case 0xA0001008u:
        return read_sr();
    case 0xA0001010u:
        return dlr;
    case 0xA0001014u:
        return ccr;
    default:
        violation("read of register %08x, which the model does not have", addr);
        return 0;
    }
}

void qspi_model_write(uint32_t addr, uint32_t v)
{
    uint32_t *g = gpio_reg(addr);
    if (g != NULL) {
        *g = v;
        return;
    }
    if (addr >= 0xA0001000u && addr < 0xA0001034u) {
        need_clock(rcc_ahb3enr, 2u, "QUADSPI");
        if (rcc_ahb3rstr & 2u) {
            violation("QUADSPI written while held in reset (RCC_AHB3RSTR)");
        }
    }
    switch (addr) {
    case 0x40023830u:
        rcc_ahb1enr = v;
        return;
    case 0x40023838u:
        rcc_ahb3enr = v;
        return;
    case 0x40023818u:
        if (v & 2u) { /* the peripheral's reset */
            cr = dcr = dlr = ccr = ar = psmkr = psmar = pir = 0;
            busy = mapped = tcf = smf = polling = wait_addr = wait_data = 0;
            update_window();
        }
        rcc_ahb3rstr = v;
        return;
    case 0xE000ED94u:
        mpu_ctrl = v;
        update_window();
        return;
    case 0xE000ED98u:
        mpu_rnr = v & 7u;
        return;
    case 0xE000ED9Cu:
        mpu_rbar[mpu_rnr] = v;
        return;
    case 0xE000EDA0u:
        mpu_rasr[mpu_rnr] = v;
        update_window();
        return;
    case 0xE000EF5Cu:
        return; /* DCIMVAC */
    case 0xA0001000u:
        write_cr(v);
        return;
    case 0xA0001004u:
        if (busy || mapped) {
            violation("DCR written while BUSY");
        }
        dcr = v;
        return;
    case 0xA000100Cu:
        if (v & ~0x1Bu) {
            violation("FCR %08x: only CTEF, CTCF, CSMF and CTOF are flags to clear", v);
        }
        tcf = (v & 2u) ? 0 : tcf;
        smf = (v & 8u) ? 0 : smf;
        return;
    case 0xA0001010u:
        if (busy || mapped) {
            violation("DLR written while BUSY");
        }
        dlr = v;
        return;
    case 0xA0001014u:
        write_ccr(v);
        return;
    case 0xA0001018u:
        write_ar(v);
        return;
    case 0xA0001020u:
        write_dr(v);
        return;
    case 0xA0001024u:
        psmkr = v;
        return;
    case 0xA0001028u:
        psmar = v;
        return;
    case 0xA000102Cu:
        pir = v;
        return;
    default:
        violation("write of register %08x, which the model does not have", addr);
    }
}

/* ---- the firmware's host side: text output, stack figure, start-up ---- */

void tt_out_init(void)
{
}

void tt_out_write(const char *text)
{
    fputs(text, stdout);
}

uint32_t tt_stack_used(void)
{
    return 0;
}

__attribute__((constructor)) static void qspi_model_start(void)
{
    int8_t *home;
    const int32_t home_bytes = model_flash_home(&home);
    if (home_bytes <= 0 || home_bytes % SUB != 0 || (uintptr_t)home % SUB != 0) {
        fprintf(stderr, "qspi-model: the model needs a flash home of whole, aligned 4096-byte pages\n");
        _exit(2);
    }
    seg[0] = (segment){(uint8_t *)home, 0, home_bytes};
    seg[1] = (segment){qspi_model_stamp, home_bytes, SUB};
    seg[2] = (segment){qspi_model_region, home_bytes + SUB, QSPI_MODEL_REGION_BYTES};
    flash_bytes = home_bytes + SUB + QSPI_MODEL_REGION_BYTES;
    static int8_t *pristine;
    pristine = malloc((size_t)home_bytes);
    flash = malloc((size_t)flash_bytes);
    if (pristine == NULL || flash == NULL) {
        _exit(2);
    }
    memcpy(pristine, home, (size_t)home_bytes); /* the image's weights: the internal flash's copy (LMA) */
    const char *x = getenv("QSPI_MODEL_IMAGE_XOR");
    pristine[0] = (int8_t)(pristine[0] ^ (x != NULL ? atoi(x) : 0));
    qspi_model_pristine = pristine;
    memset(flash, 0xFF, (size_t)flash_bytes); /* a fresh part */
    flash_path = getenv("QSPI_MODEL_FLASH");
    FILE *f = flash_path != NULL ? fopen(flash_path, "rb") : NULL;
    if (f != NULL) {
        if (fread(flash, 1, (size_t)flash_bytes, f) != (size_t)flash_bytes) {
            fprintf(stderr, "qspi-model: %s is not %ld bytes\n", flash_path, (long)flash_bytes);
            _exit(2);
        }
        fclose(f);
    }
    const char *c = getenv("QSPI_MODEL_CUT");
    cut = c != NULL ? atol(c) : -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    protect(PROT_NONE); /* the window: nothing to read until the driver maps it */
    atexit(save_flash);
    atexit(at_exit);
}
