/* Register-level host model of the DISCO's USART1 and its pins (see uart_model.h). */
#include "uart_model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define RCC_AHB1ENR 0x40023830u
#define RCC_APB2ENR 0x40023844u
#define GPIOA 0x40020000u
#define GPIOB 0x40020400u
#define USART1 0x40011000u

#define CR1_UE (1u << 0)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_FORMAT 0x10009600u /* M1, OVER8, M0, PCE: fixed while UE is set (RM0385) */
#define ISR_FE (1u << 1)
#define ISR_NF (1u << 2)
#define ISR_ORE (1u << 3)
#define ISR_RXNE (1u << 5)
#define ISR_TC (1u << 6)
#define ISR_TXE (1u << 7)
#define ISR_TEACK (1u << 21)
#define ISR_REACK (1u << 22)
#define ICR_CLEARS 0x0002115Fu /* PECF FECF NCF ORECF IDLECF TCCF LBDCF CTSCF RTOCF CMCF */
#define STUCK_POLLS 200000L
#define QUEUE 4096

/* ---- state ---- */
static uint32_t rcc_ahb1enr = 0x00100000u, rcc_apb2enr; /* AHB1ENR resets with DTCMRAMEN set */
/* MODER .. AFRH (10 words) of GPIOA and GPIOB, reset values: the debug pins PA13-15, PB3-4 in AF */
static uint32_t gpio[2][10] = {{0xA8000000u, 0, 0x0C000000u, 0x64000000u, 0, 0, 0, 0, 0, 0},
                               {0x00000280u, 0, 0x000000C0u, 0x00000100u, 0, 0, 0, 0, 0, 0}};
static uint32_t cr1, cr2, cr3, brr, flags = ISR_TC | ISR_TXE; /* flags: FE NF ORE RXNE TC TXE */
static uint32_t tdr, rdr, shift_byte;
static int shifting;
static unsigned long now, shift_end;
static long polls;
static uint32_t last_isr;

static struct {
    uint8_t byte;
    int fe;
    unsigned long at;
} rx[QUEUE];
static int32_t rx_head, rx_tail, lost;
static uint8_t tx[QUEUE];
static int32_t tx_len;

static void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("uart-model: violation: ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    exit(5);
}

static uint32_t field(uint32_t v, int lo, int bits)
{
    return (v >> lo) & ((1u << bits) - 1u);
}

static void check_pin(int port, int pin, const char *name)
{
    const uint32_t *g = gpio[port];
    const uint32_t mode = field(g[0], 2 * pin, 2), af = field(g[pin < 8 ? 8 : 9], 4 * (pin % 8), 4);
    if (mode != 2u || af != 7u) {
        violation("pin %s is not in alternate function 7 (MODER %u, AF %u)", name, (unsigned)mode, (unsigned)af);
    }
}

/* The line as the host's 8N1 UART at UART_MODEL_BAUD sees it (16x oversampling: baud = 16 MHz / BRR). */
static void check_line(void)
{
    if (cr1 & CR1_FORMAT) {
        violation("CR1 %08x: not 8 data bits, no parity, 16x oversampling", (unsigned)cr1);
    }
    if (field(cr2, 12, 2) != 0u) {
        violation("CR2 STOP %u: not 1 stop bit", (unsigned)field(cr2, 12, 2));
    }
    if (cr3 & 0x300u) {
        violation("CR3 %08x: hardware flow control on (the VCP has no RTS/CTS)", (unsigned)cr3);
    }
    const double baud = brr ? 16e6 / brr : 0.0, err = (baud - UART_MODEL_BAUD) / UART_MODEL_BAUD;
    if (err > 0.02 || err < -0.02) {
        violation("baud rate %.0f (BRR %u) is not the host's %d", baud, (unsigned)brr, UART_MODEL_BAUD);
    }
}

/* Let the line catch up with `now`: bytes finish leaving, queued bytes arrive. */
static void advance(void)
{
    if (shifting && now >= shift_end) {
        if (tx_len < QUEUE) {
            tx[tx_len++] = (uint8_t)shift_byte;
        }
        shifting = 0;
        flags |= flags & ISR_TXE ? ISR_TC : 0u; /* the end of a transmission with nothing more to send */
    }
    if (!shifting && !(flags & ISR_TXE)) { /* TDR -> shift register */
        shift_byte = tdr;
        shifting = 1;
        shift_end = now + UART_MODEL_BYTE_TICKS;
        flags |= ISR_TXE;
    }
    while (rx_head != rx_tail && rx[rx_head].at <= now) {
        const uint32_t on = CR1_UE | CR1_RE;
        if ((cr1 & on) != on) {
            lost++;
        } else {
            check_pin(1, 7, "PB7 RX");
            if (flags & ISR_ORE) {
                lost++; /* no byte reaches RDR while ORE is set */
            } else if (flags & ISR_RXNE) {
                flags |= ISR_ORE;
                lost++;
            } else {
                rdr = rx[rx_head].byte;
                flags |= ISR_RXNE | (rx[rx_head].fe ? ISR_FE : 0u);
            }
        }
        rx_head = (rx_head + 1) % QUEUE;
    }
}

static void need_clock(uint32_t enr, uint32_t bit, const char *what)
{
    if (!(enr & bit)) {
        violation("%s accessed with its clock off (RCC)", what);
    }
}

static uint32_t *gpio_reg(uint32_t addr)
{
    const uint32_t bases[2] = {GPIOA, GPIOB};
    for (int k = 0; k < 2; k++) {
        if (addr >= bases[k] && addr < bases[k] + 0x28u && (addr - bases[k]) % 4u == 0) {
            need_clock(rcc_ahb1enr, 1u << k, k ? "GPIOB" : "GPIOA");
            return &gpio[k][(addr - bases[k]) / 4u];
        }
    }
    return NULL;
}

static uint32_t isr_value(void)
{
    return flags | (cr1 & CR1_UE && cr1 & CR1_TE ? ISR_TEACK : 0u) | (cr1 & CR1_UE && cr1 & CR1_RE ? ISR_REACK : 0u);
}

uint32_t uart_model_peek(uint32_t addr)
{
    switch (addr) {
    case RCC_AHB1ENR:
        return rcc_ahb1enr;
    case RCC_APB2ENR:
        return rcc_apb2enr;
    case USART1 + 0x00u:
        return cr1;
    case USART1 + 0x04u:
        return cr2;
    case USART1 + 0x08u:
        return cr3;
    case USART1 + 0x0Cu:
        return brr;
    case USART1 + 0x1Cu:
        return isr_value();
    case USART1 + 0x24u:
        return rdr;
    default:
        break;
    }
    const uint32_t bases[2] = {GPIOA, GPIOB};
    for (int k = 0; k < 2; k++) {
        if (addr >= bases[k] && addr < bases[k] + 0x28u) {
            return gpio[k][(addr - bases[k]) / 4u];
        }
    }
    fprintf(stderr, "uart-model: peek at unmodelled %08x\n", (unsigned)addr);
    exit(2);
}

uint32_t uart_model_read(uint32_t addr)
{
    now++;
    advance();
    uint32_t *g = gpio_reg(addr);
    if (g != NULL) {
        return *g;
    }
    if (addr >= USART1 && addr < USART1 + 0x400u) {
        need_clock(rcc_apb2enr, 1u << 4, "USART1");
    }
    if (addr != USART1 + 0x1Cu) {
        polls = 0;
    }
    switch (addr) {
    case RCC_AHB1ENR:
    case RCC_APB2ENR:
    case USART1 + 0x00u:
    case USART1 + 0x04u:
    case USART1 + 0x08u:
    case USART1 + 0x0Cu:
        return uart_model_peek(addr);
    case USART1 + 0x1Cu: {
        const uint32_t v = isr_value();
        const int idle = rx_head == rx_tail && !shifting;
        polls = v == last_isr && idle ? polls + 1 : 0;
        last_isr = v;
        if (polls > STUCK_POLLS) {
            printf("uart-model: stuck: ISR %08x polled %ld times with nothing left to receive or send "
                   "(%ld bytes lost)\n", (unsigned)v, polls, (long)lost);
            fflush(stdout);
            exit(6);
        }
        return v;
    }
    case USART1 + 0x24u:
        if (!(flags & ISR_RXNE)) {
            violation("RDR read while RXNE is clear");
        }
        flags &= ~ISR_RXNE;
        return rdr;
    default:
        violation("read of unmodelled register %08x", (unsigned)addr);
    }
    return 0;
}

void uart_model_write(uint32_t addr, uint32_t value)
{
    now++;
    advance();
    polls = 0;
    uint32_t *g = gpio_reg(addr);
    if (g != NULL) {
        *g = value;
        return;
    }
    if (addr >= USART1 && addr < USART1 + 0x400u) {
        need_clock(rcc_apb2enr, 1u << 4, "USART1");
    }
    switch (addr) {
    case RCC_AHB1ENR:
        rcc_ahb1enr = value;
        return;
    case RCC_APB2ENR:
        rcc_apb2enr = value;
        return;
    case USART1 + 0x00u:
        if ((cr1 & CR1_UE) && (value & CR1_UE) && ((cr1 ^ value) & CR1_FORMAT)) {
            violation("CR1 frame format changed while UE is set");
        }
        if (!(value & CR1_UE)) { /* disabling the USART resets its flags */
            flags = ISR_TC | ISR_TXE;
            shifting = 0;
        }
        cr1 = value;
        if ((value & CR1_UE) && (value & (CR1_TE | CR1_RE))) {
            check_line();
        }
        return;
    case USART1 + 0x04u:
    case USART1 + 0x08u:
    case USART1 + 0x0Cu:
        if (cr1 & CR1_UE) {
            violation("%s written while UE is set", addr == USART1 + 0x0Cu ? "BRR" : "CR2/CR3");
        }
        *(addr == USART1 + 0x04u ? &cr2 : addr == USART1 + 0x08u ? &cr3 : &brr) = value;
        return;
    case USART1 + 0x20u:
        flags &= ~(value & ICR_CLEARS & (ISR_FE | ISR_NF | ISR_ORE | ISR_TC));
        return;
    case USART1 + 0x28u:
        if ((cr1 & (CR1_UE | CR1_TE)) != (CR1_UE | CR1_TE)) {
            violation("TDR written with the transmitter off (CR1 %08x): the byte is not sent", (unsigned)cr1);
        }
        if (!(flags & ISR_TXE)) {
            violation("TDR written while TXE is clear: a byte not yet sent overwritten");
        }
        check_pin(0, 9, "PA9 TX");
        tdr = value & 0xFFu;
        flags &= ~(ISR_TXE | ISR_TC);
        advance();
        return;
    default:
        violation("write of unmodelled register %08x", (unsigned)addr);
    }
}

void uart_model_send(const uint8_t *data, int32_t n, uint32_t gap, int framing_error)
{
    unsigned long at = now;
    if (rx_head != rx_tail) {
        const int32_t last = (rx_tail + QUEUE - 1) % QUEUE;
        at = rx[last].at > at ? rx[last].at : at;
    }
    for (int32_t i = 0; i < n; i++) {
        at += gap;
        rx[rx_tail].byte = data[i];
        rx[rx_tail].fe = framing_error;
        rx[rx_tail].at = at;
        rx_tail = (rx_tail + 1) % QUEUE;
        if (rx_tail == rx_head) {
            fprintf(stderr, "uart-model: receive queue full\n");
            exit(2);
        }
    }
}

void uart_model_idle(uint32_t ticks)
{
    for (uint32_t t = 0; t < ticks; t++) {
        now++;
        advance();
    }
}

int32_t uart_model_sent(uint8_t *out, int32_t cap)
{
    const int32_t n = tx_len < cap ? tx_len : cap;
    for (int32_t i = 0; i < n; i++) {
        out[i] = tx[i];
    }
    for (int32_t i = n; i < tx_len; i++) {
        tx[i - n] = tx[i];
    }
    tx_len -= n;
    return n;
}

int32_t uart_model_lost(void)
{
    return lost;
}

void uart_model_halt(int32_t code)
{
    advance();
    if (shifting || !(flags & ISR_TXE)) {
        violation("halted before the last byte left (TC clear): the host misses the end of the output");
    }
    printf("uart-model: halt %ld after \"", (long)code);
    for (int32_t i = 0; i < tx_len; i++) {
        const int c = tx[i];
        if (c == '\n') {
            printf("\\n");
        } else if (c >= 32 && c < 127 && c != '"' && c != '\\') {
            putchar(c);
        } else {
            printf("\\x%02x", c);
        }
    }
    printf("\"\n");
    fflush(stdout);
    exit(0);
}
