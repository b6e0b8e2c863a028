/*
 * STM32F746G-DISCO: firmware text output (tt_fw_output.h) and the streaming firmware's byte I/O (tt_uart.h) on
 * USART1, which the board wires to the ST-LINK's virtual COM port (TX PA9, RX PB7, both alternate function 7).
 *
 * 8N1 at TT_UART_BAUD (115200 unless the build defines it), 16x oversampling. The core runs on the 16 MHz HSI
 * (tt_startup.c sets no clock) and USART1's kernel clock after reset is PCLK2 = HCLK, so BRR = 16 MHz / baud,
 * rounded: 139 for 115200 (115,108 baud, 0.08 % slow). Register values follow RM0385 (USART, RCC, GPIO) and
 * the pin-out of ST's BSP for the board (stm32746g_discovery.h, COM1).
 *
 * Polling, blocking, with one byte of hardware receive buffer (RDR): a byte that arrives while RDR still holds
 * the last one sets ORE and is lost. So the transmit loop keeps receiving while it waits for TXE: bytes that
 * arrive while the firmware answers (the stream host may send the rest of a cut frame meanwhile) go into a
 * RX_RING-byte ring that tt_uart_read empties first. Bytes that arrive while the firmware computes (a training
 * step) are lost past the first; the stream protocol's CRC and retransmission recover them (docs/STREAM.md).
 * Every look at the receiver clears ORE and the framing and noise flags (ICR), so an overrun never leaves the
 * receiver stuck.
 *
 * tt_out_exit: the board has no host to exit to; it prints "exit STATUS", waits until the last bit has left
 * (TC) and stops in a loop (the reset button starts the firmware again).
 *
 * Every register access goes through TT_REG_RD / TT_REG_WR and the final loop through TT_UART_HALT, so the same
 * driver compiles on the host against a register-level model of USART1, RCC and GPIOA/B (tests/c/uart_model.c,
 * built with -DTT_UART_HOST_MODEL).
 */
#include <stdint.h>

#include "tt_fw_output.h"
#include "tt_uart.h"

#if defined(TT_UART_HOST_MODEL)
#include "uart_model.h" /* TT_REG_RD, TT_REG_WR, TT_UART_HALT */
#else
#define TT_REG_RD(addr) (*(volatile uint32_t *)(uintptr_t)(addr))
#define TT_REG_WR(addr, value) (*(volatile uint32_t *)(uintptr_t)(addr) = (uint32_t)(value))
#define TT_UART_HALT(code) \
    do {                   \
        (void)(code);      \
        for (;;) {         \
        }                  \
    } while (0)
#endif

#ifndef TT_UART_BAUD
#define TT_UART_BAUD 115200u
#endif
#define UART_CLOCK 16000000u /* HSI = HCLK = PCLK2 after reset */
#define RX_RING 64u /* a power of two; more than arrives while the stream firmware sends an ACK or a NAK */

/* ---- registers ---- */
#define RCC 0x40023800u
#define RCC_AHB1ENR (RCC + 0x30u)
#define RCC_APB2ENR (RCC + 0x44u)
#define RCC_GPIOA (1u << 0)
#define RCC_GPIOB (1u << 1)
#define RCC_USART1 (1u << 4)

#define GPIOA 0x40020000u
#define GPIOB 0x40020400u
#define GPIO_MODER 0x00u
#define GPIO_PUPDR 0x0Cu
#define GPIO_AFRL 0x20u
#define GPIO_AFRH 0x24u
#define AF_USART1 7u

#define USART1 0x40011000u
#define USART_CR1 (USART1 + 0x00u)
#define USART_CR2 (USART1 + 0x04u)
#define USART_CR3 (USART1 + 0x08u)
#define USART_BRR (USART1 + 0x0Cu)
#define USART_ISR (USART1 + 0x1Cu)
#define USART_ICR (USART1 + 0x20u)
#define USART_RDR (USART1 + 0x24u)
#define USART_TDR (USART1 + 0x28u)

#define CR1_UE (1u << 0)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define ISR_FE (1u << 1)
#define ISR_NF (1u << 2)
#define ISR_ORE (1u << 3)
#define ISR_RXNE (1u << 5)
#define ISR_TC (1u << 6)
#define ISR_TXE (1u << 7)
#define ICR_FECF (1u << 1) /* the clear bits sit where their ISR flags are */
#define ICR_NCF (1u << 2)
#define ICR_ORECF (1u << 3)

/* Alternate function `af` with a pull-up on one pin; the port's other pins keep their set-up (the QSPI driver
 * owns PB2 and PB6). */
static void gpio_af(uint32_t port, uint32_t pin, uint32_t af)
{
    TT_REG_WR(port + GPIO_MODER, (TT_REG_RD(port + GPIO_MODER) & ~(3u << (2 * pin))) | (2u << (2 * pin)));
    /* the pull-up keeps RX idle (high) when no ST-LINK drives it, as ST's BSP does for the COM port */
    TT_REG_WR(port + GPIO_PUPDR, (TT_REG_RD(port + GPIO_PUPDR) & ~(3u << (2 * pin))) | (1u << (2 * pin)));
    const uint32_t afr = pin < 8 ? port + GPIO_AFRL : port + GPIO_AFRH, shift = 4 * (pin % 8);
    TT_REG_WR(afr, (TT_REG_RD(afr) & ~(15u << shift)) | (af << shift));
}

void tt_uart_init(void)
{
    TT_REG_WR(RCC_AHB1ENR, TT_REG_RD(RCC_AHB1ENR) | RCC_GPIOA | RCC_GPIOB);
    TT_REG_WR(RCC_APB2ENR, TT_REG_RD(RCC_APB2ENR) | RCC_USART1);
    (void)TT_REG_RD(RCC_APB2ENR); /* the clock is on before the peripheral is touched */
    gpio_af(GPIOA, 9, AF_USART1); /* TX */
    gpio_af(GPIOB, 7, AF_USART1); /* RX */
    /* RM0385: the frame format and BRR while UE is clear (BRR is only writable then), UE, then TE and RE */
    TT_REG_WR(USART_CR1, 0u); /* 8 data bits, no parity, 16x oversampling */
    TT_REG_WR(USART_CR2, 0u); /* 1 stop bit */
    TT_REG_WR(USART_CR3, 0u); /* no flow control, overrun detection on */
    TT_REG_WR(USART_BRR, (UART_CLOCK + TT_UART_BAUD / 2u) / TT_UART_BAUD);
    TT_REG_WR(USART_CR1, CR1_UE);
    TT_REG_WR(USART_CR1, CR1_UE | CR1_TE | CR1_RE);
}

static uint8_t ring[RX_RING];
static uint32_t ring_in, ring_out; /* free-running: ring_in - ring_out bytes wait */

/* One look at the receiver: clear the error flags and move a received byte into the ring; returns ISR. */
static uint32_t poll(void)
{
    const uint32_t isr = TT_REG_RD(USART_ISR);
    if ((isr & (ISR_ORE | ISR_NF | ISR_FE)) != 0u) {
        /* with ORE set no further byte reaches RDR: clear it (the byte in RDR, if any, is still good); a
         * framing or noise error only marks the byte, which the stream CRC rejects */
        TT_REG_WR(USART_ICR, ICR_ORECF | ICR_NCF | ICR_FECF);
    }
    if ((isr & ISR_RXNE) != 0u && ring_in - ring_out < RX_RING) { /* a full ring leaves the byte in RDR */
        ring[ring_in++ % RX_RING] = (uint8_t)TT_REG_RD(USART_RDR); /* the read clears RXNE */
    }
    return isr;
}

static void put(uint8_t byte)
{
    while ((poll() & ISR_TXE) == 0u) { /* TDR still full: receive meanwhile */
    }
    TT_REG_WR(USART_TDR, byte);
}

void tt_uart_write(const uint8_t *data, uint32_t size)
{
    for (uint32_t i = 0; i < size; i++) {
        put(data[i]);
    }
}

uint8_t tt_uart_read(void)
{
    while (ring_in == ring_out) {
        (void)poll();
    }
    return ring[ring_out++ % RX_RING];
}

void tt_out_init(void)
{
    tt_uart_init(); /* RX too: the same set-up serves both interfaces */
}

void tt_out_write(const char *text)
{
    for (; *text != '\0'; text++) {
        put((uint8_t)*text);
    }
}

void tt_out_exit(int32_t code)
{
    char line[16] = "exit ", digits[11];
    uint32_t n = code < 0 ? 0u - (uint32_t)code : (uint32_t)code, at = 5, k = 0;
    do {
        digits[k++] = (char)('0' + n % 10u);
        n /= 10u;
    } while (n != 0u);
    if (code < 0) {
        line[at++] = '-';
    }
    while (k > 0) {
        line[at++] = digits[--k];
    }
    line[at++] = '\n';
    line[at] = '\0';
    tt_out_write(line);
    while ((TT_REG_RD(USART_ISR) & ISR_TC) == 0u) { /* the last byte is still being shifted out */
    }
    TT_UART_HALT(code);
}
