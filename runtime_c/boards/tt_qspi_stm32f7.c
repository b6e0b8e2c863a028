/*
 * STM32F746G-DISCO: QUADSPI driver for the N25Q128A (see tt_qspi_stm32f7.h): bring-up, the image stamp and the boot
 * copy of the pristine home, and tt_flash_program_page (tt_flash.h) for the home and the persistent-state region.
 *
 * Register values follow RM0385 (QUADSPI), the N25Q128A data sheet and the pin-out of ST's BSP for the board
 * (stm32746g_discovery_qspi.c: CLK PB2 AF9, NCS PB6 AF10, IO0 PD11 AF9, IO1 PD12 AF9, IO2 PE2 AF9, IO3 PD13 AF9).
 * The core runs on the 16 MHz HSI (no clock set-up in tt_startup.c): prescaler 0, so the QSPI clock is 16 MHz
 * (the flash allows 108 MHz for FAST READ). The caches are off (tt_startup.c does not enable them); should
 * anything enable the D-cache, the programmed range is invalidated. The Cortex-M7 reads Normal memory
 * speculatively: an MPU region forbids the whole 256 MB QSPI window (strongly ordered, no access) and a second one
 * opens the flash's 16 MB read-only, only while the window is memory-mapped (ST AN4760).
 */
#include <stddef.h>

#include "tt_flash.h"
#include "tt_qspi_stm32f7.h"
#include "tt_state.h"

/* ---- registers ---- */
#define RCC 0x40023800u
#define RCC_AHB1ENR (RCC + 0x30u)
#define RCC_AHB3RSTR (RCC + 0x18u)
#define RCC_AHB3ENR (RCC + 0x38u)
#define RCC_GPIOB (1u << 1)
#define RCC_GPIOD (1u << 3)
#define RCC_GPIOE (1u << 4)
#define RCC_QSPI (1u << 1)

#define GPIOB 0x40020400u
#define GPIOD 0x40020C00u
#define GPIOE 0x40021000u
#define GPIO_MODER 0x00u
#define GPIO_OSPEEDR 0x08u
#define GPIO_PUPDR 0x0Cu
#define GPIO_AFRL 0x20u
#define GPIO_AFRH 0x24u

#define QSPI 0xA0001000u
#define QSPI_CR (QSPI + 0x00u)
#define QSPI_DCR (QSPI + 0x04u)
#define QSPI_SR (QSPI + 0x08u)
#define QSPI_FCR (QSPI + 0x0Cu)
#define QSPI_DLR (QSPI + 0x10u)
#define QSPI_CCR (QSPI + 0x14u)
#define QSPI_AR (QSPI + 0x18u)
#define QSPI_DR (QSPI + 0x20u)
#define QSPI_PSMKR (QSPI + 0x24u)
#define QSPI_PSMAR (QSPI + 0x28u)
#define QSPI_PIR (QSPI + 0x2Cu)

#define CR_EN (1u << 0)
#define CR_ABORT (1u << 1)
#define CR_SSHIFT (1u << 4)
#define CR_FTHRES(n) ((uint32_t)(n) << 8)
#define CR_APMS (1u << 22)
#define CR_PRESCALER(n) ((uint32_t)(n) << 24)
#define DCR_CSHT(n) ((uint32_t)(n) << 8)
#define DCR_FSIZE(n) ((uint32_t)(n) << 16)
#define SR_TCF (1u << 1)
#define SR_FTF (1u << 2)
#define SR_SMF (1u << 3)
#define SR_BUSY (1u << 5)
#define SR_TEF (1u << 0)
#define FCR_ALL 0x1Bu /* CTOF, CSMF, CTCF, CTEF */
#define CCR_IMODE1 (1u << 8)
#define CCR_ADMODE1 (1u << 10)
#define CCR_ADSIZE24 (2u << 12)
#define CCR_DCYC(n) ((uint32_t)(n) << 18)
#define CCR_DMODE1 (1u << 24)
#define CCR_FMODE_WRITE (0u << 26)
#define CCR_FMODE_READ (1u << 26)
#define CCR_FMODE_POLL (2u << 26)
#define CCR_FMODE_MAPPED (3u << 26)

#define MPU_CTRL 0xE000ED94u
#define MPU_RNR 0xE000ED98u
#define MPU_RBAR 0xE000ED9Cu
#define MPU_RASR 0xE000EDA0u
#define SCB_CCR 0xE000ED14u
#define SCB_CCR_DC (1u << 16)
#define SCB_DCIMVAC 0xE000EF5Cu

/* ---- N25Q128A ---- */
#define CMD_WRITE_ENABLE 0x06u
#define CMD_READ_STATUS 0x05u
#define CMD_SUBSECTOR_ERASE 0x20u
#define CMD_PAGE_PROGRAM 0x02u
#define CMD_FAST_READ 0x0Bu
#define CMD_RESET_ENABLE 0x66u
#define CMD_RESET_MEMORY 0x99u
#define FAST_READ_DUMMY 8 /* the data sheet's default for FAST READ in extended SPI */
#define STATUS_WIP 0x01u
#define STATUS_WEL 0x02u

#define WINDOW 0x90000000u
#define QSPI_PRESCALER 0 /* QSPI clock = HCLK / (0 + 1) = 16 MHz on the HSI */
#define SPIN_LIMIT 50000000L /* status polls before giving up (a subsector erase takes up to 0.8 s) */

/* ---- MPU: region 6 forbids the whole 256 MB window, region 7 opens the flash read-only while it is mapped ---- */
#define MPU_DENY 6u
#define MPU_MAPPED 7u
#define RASR_ENABLE 1u
#define RASR_SIZE(log2) ((uint32_t)((log2) - 1) << 1)
#define RASR_XN (1u << 28)
#define RASR_AP_NONE (0u << 24)
#define RASR_AP_RO (6u << 24)
#define RASR_NORMAL_NC (1u << 19) /* TEX=1 C=0 B=0: Normal, not cacheable */

static void mpu_region(uint32_t region, uint32_t rasr)
{
    TT_BARRIER();
    TT_REG_WR(MPU_RNR, region);
    TT_REG_WR(MPU_RBAR, WINDOW);
    TT_REG_WR(MPU_RASR, rasr);
    TT_BARRIER();
}

static void mpu_mapped(int open)
{
    mpu_region(MPU_MAPPED, RASR_XN | RASR_AP_RO | RASR_NORMAL_NC | RASR_SIZE(24) | (open ? RASR_ENABLE : 0u));
}

/* ---- indirect commands ---- */

static tt_status wait_flag(uint32_t flag)
{
    for (long i = 0; i < SPIN_LIMIT; i++) {
        const uint32_t sr = TT_REG_RD(QSPI_SR);
        if (sr & SR_TEF) {
            return TT_ERR_RANGE;
        }
        if (sr & flag) {
            if (flag != SR_FTF) { /* FTF clears itself as the FIFO drains; TCF and SMF are cleared in FCR */
                TT_REG_WR(QSPI_FCR, flag);
            }
            return TT_OK;
        }
    }
    return TT_ERR_RANGE;
}

static tt_status wait_idle(void)
{
    for (long i = 0; i < SPIN_LIMIT; i++) {
        if ((TT_REG_RD(QSPI_SR) & SR_BUSY) == 0) {
            return TT_OK;
        }
    }
    return TT_ERR_RANGE;
}

/* An instruction without address or data: it starts when CCR is written. */
static tt_status command(uint32_t instruction)
{
    TT_REG_WR(QSPI_CCR, CCR_FMODE_WRITE | CCR_IMODE1 | instruction);
    const tt_status st = wait_flag(SR_TCF);
    return st != TT_OK ? st : wait_idle();
}

/* Auto-polling of the status register until (status & mask) == match; stops on the match (APMS). */
static tt_status poll_status(uint32_t mask, uint32_t match)
{
    TT_REG_WR(QSPI_PSMKR, mask);
    TT_REG_WR(QSPI_PSMAR, match);
    TT_REG_WR(QSPI_PIR, 0x10u);
    TT_REG_WR(QSPI_DLR, 0u); /* one status byte per poll */
    TT_REG_WR(QSPI_CCR, CCR_FMODE_POLL | CCR_DMODE1 | CCR_IMODE1 | CMD_READ_STATUS);
    const tt_status st = wait_flag(SR_SMF);
    return st != TT_OK ? st : wait_idle();
}

static tt_status write_enable(void)
{
    const tt_status st = command(CMD_WRITE_ENABLE);
    return st != TT_OK ? st : poll_status(STATUS_WEL, STATUS_WEL);
}

static tt_status erase_subsector(uint32_t addr)
{
    tt_status st = write_enable();
    if (st != TT_OK) {
        return st;
    }
    TT_REG_WR(QSPI_CCR, CCR_FMODE_WRITE | CCR_ADSIZE24 | CCR_ADMODE1 | CCR_IMODE1 | CMD_SUBSECTOR_ERASE);
    TT_REG_WR(QSPI_AR, addr); /* an address and no data: the command starts here */
    st = wait_flag(SR_TCF);
    return st != TT_OK ? st : poll_status(STATUS_WIP, 0u);
}

/* PAGE PROGRAM of one whole 256-byte page at addr (256-aligned) from `data` (outside the window). */
static tt_status program_page(uint32_t addr, const uint8_t *data)
{
    tt_status st = write_enable();
    if (st != TT_OK) {
        return st;
    }
    TT_REG_WR(QSPI_DLR, TT_QSPI_PROGRAM_PAGE - 1);
    TT_REG_WR(QSPI_CCR, CCR_FMODE_WRITE | CCR_DMODE1 | CCR_ADSIZE24 | CCR_ADMODE1 | CCR_IMODE1 | CMD_PAGE_PROGRAM);
    TT_REG_WR(QSPI_AR, addr); /* with data to write, the command starts at the first DR write */
    for (int32_t i = 0; i < TT_QSPI_PROGRAM_PAGE; i += 4) {
        st = wait_flag(SR_FTF); /* room for a word in the FIFO */
        if (st != TT_OK) {
            return st;
        }
        TT_REG_WR(QSPI_DR, (uint32_t)data[i] | ((uint32_t)data[i + 1] << 8) | ((uint32_t)data[i + 2] << 16) |
                               ((uint32_t)data[i + 3] << 24)); /* the FIFO sends the low byte first */
    }
    st = wait_flag(SR_TCF);
    st = st != TT_OK ? st : wait_idle();
    return st != TT_OK ? st : poll_status(STATUS_WIP, 0u);
}

/* Leave memory-mapped mode: close the window in the MPU first, then abort the mapped read sequence. */
static tt_status indirect_begin(void)
{
    mpu_mapped(0);
    TT_REG_WR(QSPI_CR, TT_REG_RD(QSPI_CR) | CR_ABORT);
    for (long i = 0; i < SPIN_LIMIT; i++) {
        if ((TT_REG_RD(QSPI_CR) & CR_ABORT) == 0) {
            TT_REG_WR(QSPI_FCR, FCR_ALL);
            return wait_idle();
        }
    }
    return TT_ERR_RANGE;
}

/* Enter memory-mapped mode (FAST READ, single line, 24-bit address, 8 dummy cycles), then open the window. */
static tt_status mapped_begin(void)
{
    const tt_status st = wait_idle();
    if (st != TT_OK) {
        return st;
    }
    TT_REG_WR(QSPI_CCR, CCR_FMODE_MAPPED | CCR_DMODE1 | CCR_DCYC(FAST_READ_DUMMY) | CCR_ADSIZE24 | CCR_ADMODE1 |
                            CCR_IMODE1 | CMD_FAST_READ);
    mpu_mapped(1);
    return TT_OK;
}

/* Invalidate the D-cache over [p, p + bytes) if anything enabled it (tt_startup.c does not). */
static void dcache_invalidate(const void *p, int32_t bytes)
{
    if ((TT_REG_RD(SCB_CCR) & SCB_CCR_DC) == 0) {
        return;
    }
    TT_BARRIER();
    for (uintptr_t a = (uintptr_t)p & ~(uintptr_t)31u; a < (uintptr_t)p + (uintptr_t)bytes; a += 32u) {
        TT_REG_WR(SCB_DCIMVAC, (uint32_t)a);
    }
    TT_BARRIER();
}

/* Erase and program whole subsectors at window offset `at`; data == NULL: erase only. Indirect mode. */
static tt_status write_subsectors(int32_t at, const uint8_t *data, int32_t bytes)
{
    for (int32_t s = 0; s < bytes; s += TT_QSPI_SUBSECTOR) {
        tt_status st = erase_subsector((uint32_t)(at + s));
        for (int32_t p = 0; data != NULL && st == TT_OK && p < TT_QSPI_SUBSECTOR; p += TT_QSPI_PROGRAM_PAGE) {
            st = program_page((uint32_t)(at + s + p), data + s + p);
        }
        if (st != TT_OK) {
            return st;
        }
    }
    return TT_OK;
}

/* The range [p, p + bytes) as whole subsectors of the window: its offset, or -1. */
static int32_t window_range(const void *p, int32_t bytes)
{
    const int32_t at = TT_QSPI_WINDOW_OFFSET(p);
    if (at < 0 || bytes <= 0 || at % TT_QSPI_SUBSECTOR != 0 || bytes % TT_QSPI_SUBSECTOR != 0 ||
        bytes > TT_QSPI_FLASH_BYTES - at) {
        return -1;
    }
    return at;
}

static int in_window(const void *p, int32_t bytes)
{
    return TT_QSPI_WINDOW_OFFSET(p) >= 0 || (bytes > 0 && TT_QSPI_WINDOW_OFFSET((const uint8_t *)p + bytes - 1) >= 0);
}

tt_status tt_flash_program_page(int8_t *page, const uint8_t *data, int32_t bytes)
{
    const int32_t at = window_range(page, bytes);
    if (at < 0 || data == NULL || in_window(data, bytes)) {
        return TT_ERR_ARG; /* the source must be SRAM (or internal flash): the window is closed while programming */
    }
    tt_status st = indirect_begin();
    st = st != TT_OK ? st : write_subsectors(at, data, bytes);
    const tt_status back = mapped_begin(); /* the window comes back even after an error */
    dcache_invalidate(page, bytes);
    return st != TT_OK ? st : back;
}

/* ---- bring-up ---- */

static void gpio_af(uint32_t port, uint32_t pin, uint32_t af, uint32_t pull_up)
{
    TT_REG_WR(port + GPIO_MODER, (TT_REG_RD(port + GPIO_MODER) & ~(3u << (2 * pin))) | (2u << (2 * pin)));
    TT_REG_WR(port + GPIO_OSPEEDR, TT_REG_RD(port + GPIO_OSPEEDR) | (3u << (2 * pin))); /* very high speed */
    TT_REG_WR(port + GPIO_PUPDR, (TT_REG_RD(port + GPIO_PUPDR) & ~(3u << (2 * pin))) | (pull_up << (2 * pin)));
    const uint32_t afr = pin < 8 ? port + GPIO_AFRL : port + GPIO_AFRH, shift = 4 * (pin % 8);
    TT_REG_WR(afr, (TT_REG_RD(afr) & ~(15u << shift)) | (af << shift));
}

tt_status tt_qspi_init(void)
{
    /* the MPU first: no speculative read reaches the window before it is mapped */
    mpu_region(MPU_DENY, RASR_XN | RASR_AP_NONE | RASR_SIZE(28) | RASR_ENABLE); /* strongly ordered, no access */
    mpu_mapped(0);
    TT_REG_WR(MPU_CTRL, 5u); /* ENABLE | PRIVDEFENA: the default map elsewhere */
    TT_BARRIER();
    TT_REG_WR(RCC_AHB1ENR, TT_REG_RD(RCC_AHB1ENR) | RCC_GPIOB | RCC_GPIOD | RCC_GPIOE);
    TT_REG_WR(RCC_AHB3ENR, TT_REG_RD(RCC_AHB3ENR) | RCC_QSPI);
    (void)TT_REG_RD(RCC_AHB3ENR); /* the clock is on before the peripheral is touched */
    TT_REG_WR(RCC_AHB3RSTR, TT_REG_RD(RCC_AHB3RSTR) | RCC_QSPI);
    TT_REG_WR(RCC_AHB3RSTR, TT_REG_RD(RCC_AHB3RSTR) & ~RCC_QSPI);
    gpio_af(GPIOB, 2, 9, 0);  /* CLK */
    gpio_af(GPIOB, 6, 10, 1); /* NCS, pulled up */
    gpio_af(GPIOD, 11, 9, 0); /* IO0 */
    gpio_af(GPIOD, 12, 9, 0); /* IO1 */
    gpio_af(GPIOE, 2, 9, 0);  /* IO2 */
    gpio_af(GPIOD, 13, 9, 0); /* IO3 */
    TT_REG_WR(QSPI_DCR, DCR_FSIZE(23) | DCR_CSHT(1)); /* 2^(23+1) = 16 MB; NCS high 2 cycles (125 ns) between commands */
    TT_REG_WR(QSPI_CR, CR_PRESCALER(QSPI_PRESCALER) | CR_APMS | CR_FTHRES(3) | CR_SSHIFT | CR_EN);
    /* after a warm reset the flash may still be erasing or programming: wait for it; then reset its volatile
     * configuration (an earlier program may have changed the dummy cycles or the protocol) to the defaults */
    tt_status st = poll_status(STATUS_WIP, 0u);
    st = st != TT_OK ? st : command(CMD_RESET_ENABLE);
    st = st != TT_OK ? st : command(CMD_RESET_MEMORY);
    st = st != TT_OK ? st : poll_status(STATUS_WIP, 0u);
    return st != TT_OK ? st : mapped_begin();
}

/* ---- the stamp ---- */

const char *tt_qspi_outcome_name(tt_qspi_outcome outcome)
{
    return outcome == TT_QSPI_KEPT ? "kept" : outcome == TT_QSPI_FRESH ? "fresh" : "other";
}

#define STAMP_WORDS 6 /* magic, version, model id, home bytes, CRC32 of the home, CRC32 of the five before */

tt_status tt_qspi_boot(const tt_qspi_image *image, tt_qspi_outcome *outcome, uint32_t *crc)
{
    if (image == NULL || outcome == NULL || image->pristine == NULL || window_range(image->home, image->bytes) < 0 ||
        window_range(image->stamp, TT_QSPI_SUBSECTOR) < 0 || in_window(image->pristine, image->bytes)) {
        return TT_ERR_ARG;
    }
    uint8_t want[4 * STAMP_WORDS];
    const uint32_t home_crc = tt_crc32(0, (const uint8_t *)image->pristine, image->bytes);
    tt_le32_put(want, TT_QSPI_STAMP_MAGIC);
    tt_le32_put(want + 4, TT_QSPI_STAMP_VERSION);
    tt_le32_put(want + 8, image->model_id);
    tt_le32_put(want + 12, (uint32_t)image->bytes);
    tt_le32_put(want + 16, home_crc);
    tt_le32_put(want + 20, tt_crc32(0, want, 20));
    if (crc != NULL) {
        *crc = home_crc;
    }
    const uint8_t *s = image->stamp; /* read through the window (mapped since tt_qspi_init) */
    int same = 1;
    for (int32_t i = 0; i < 4 * STAMP_WORDS; i++) {
        same &= s[i] == want[i];
    }
    if (same) {
        *outcome = TT_QSPI_KEPT;
        return TT_OK;
    }
    const int stamped = tt_le32_get(s) == TT_QSPI_STAMP_MAGIC && tt_le32_get(s + 20) == tt_crc32(0, s, 20);
    *outcome = stamped ? TT_QSPI_OTHER : TT_QSPI_FRESH;
    const int32_t stamp_at = TT_QSPI_WINDOW_OFFSET(image->stamp), home_at = TT_QSPI_WINDOW_OFFSET(image->home);
    /* erase the stamp first: until the last step, a boot finds no stamp and copies again */
    tt_status st = indirect_begin();
    st = st != TT_OK ? st : write_subsectors(stamp_at, NULL, TT_QSPI_SUBSECTOR);
    st = st != TT_OK ? st : write_subsectors(home_at, (const uint8_t *)image->pristine, image->bytes);
    if (st == TT_OK) { /* the stamp, last: its first page holds the six words, the rest stays erased */
        uint8_t page[TT_QSPI_PROGRAM_PAGE];
        for (int32_t i = 0; i < TT_QSPI_PROGRAM_PAGE; i++) {
            page[i] = i < 4 * STAMP_WORDS ? want[i] : 0xFFu;
        }
        st = program_page((uint32_t)stamp_at, page);
    }
    const tt_status back = mapped_begin();
    dcache_invalidate(image->home, image->bytes);
    dcache_invalidate(image->stamp, TT_QSPI_SUBSECTOR);
    return st != TT_OK ? st : back;
}
