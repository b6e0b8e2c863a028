/*
 * The DISCO's USART1 driver (runtime_c/boards/tt_out_uart_stm32f7.c) on the host model (uart_model.h), for
 * tests/test_uart.py: the set-up after init, a string and raw bytes sent, bytes received, an overrun recovered
 * from, bytes received while sending, a framing error, then tt_out_exit(EXIT_CODE), whose halt line the model
 * prints. Each stage prints one "uart-check: ..." line; a failed expectation prints "uart-check: FAIL ..." and
 * exits with 1. With -DUART_CHECK_NO_INIT_VALUES the register values after init are not compared (a mutated
 * driver's test: the model's own checks must catch it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tt_fw_output.h"
#include "tt_uart.h"
#include "uart_model.h"

#ifndef TT_UART_BAUD
#define TT_UART_BAUD 115200u
#endif
#ifndef EXIT_CODE
#define EXIT_CODE 3
#endif

#define CHECK(cond, ...)                  \
    do {                                  \
        if (!(cond)) {                    \
            printf("uart-check: FAIL ");  \
            printf(__VA_ARGS__);          \
            printf("\n");                 \
            exit(1);                      \
        }                                 \
    } while (0)

#define GPIOA 0x40020000u
#define GPIOB 0x40020400u
#define USART1 0x40011000u

static uint32_t bits(uint32_t v, int lo, int n)
{
    return (v >> lo) & ((1u << n) - 1u);
}

/* the set-up after init: clocks, pins (and no other pin touched), the line */
static void check_init(void)
{
    tt_out_init();
#if defined(UART_CHECK_NO_INIT_VALUES) /* a mutated driver: what the model itself catches */
    printf("uart-check: init\n");
    return;
#endif
    const uint32_t ahb1 = uart_model_peek(0x40023830u), apb2 = uart_model_peek(0x40023844u);
    CHECK(ahb1 == (0x00100000u | 3u), "AHB1ENR %08x: GPIOA and GPIOB on, the rest as at reset", (unsigned)ahb1);
    CHECK(apb2 == 1u << 4, "APB2ENR %08x: USART1EN only", (unsigned)apb2);
    /* PA9: MODER 2 (AF), PUPDR 1 (pull-up), AFRH[7:4] 7; PB7: the same in AFRL[31:28]; the debug pins as at reset */
    const uint32_t amoder = uart_model_peek(GPIOA), apupd = uart_model_peek(GPIOA + 0x0Cu);
    const uint32_t aafrh = uart_model_peek(GPIOA + 0x24u), aafrl = uart_model_peek(GPIOA + 0x20u);
    const uint32_t bmoder = uart_model_peek(GPIOB), bpupd = uart_model_peek(GPIOB + 0x0Cu);
    const uint32_t bafrl = uart_model_peek(GPIOB + 0x20u), bafrh = uart_model_peek(GPIOB + 0x24u);
    CHECK(amoder == (0xA8000000u | 2u << 18), "GPIOA MODER %08x", (unsigned)amoder);
    CHECK(apupd == (0x64000000u | 1u << 18), "GPIOA PUPDR %08x", (unsigned)apupd);
    CHECK(aafrh == 7u << 4 && aafrl == 0u, "GPIOA AFRH %08x AFRL %08x", (unsigned)aafrh, (unsigned)aafrl);
    CHECK(bmoder == (0x00000280u | 2u << 14), "GPIOB MODER %08x", (unsigned)bmoder);
    CHECK(bpupd == (0x00000100u | 1u << 14), "GPIOB PUPDR %08x", (unsigned)bpupd);
    CHECK(bafrl == 7u << 28 && bafrh == 0u, "GPIOB AFRL %08x AFRH %08x", (unsigned)bafrl, (unsigned)bafrh);
    const uint32_t cr1 = uart_model_peek(USART1), brr = uart_model_peek(USART1 + 0x0Cu);
    const uint32_t want_brr = (16000000u + TT_UART_BAUD / 2u) / TT_UART_BAUD;
    CHECK(cr1 == 0xDu, "CR1 %08x: UE|TE|RE only", (unsigned)cr1);
    CHECK(uart_model_peek(USART1 + 0x04u) == 0u && uart_model_peek(USART1 + 0x08u) == 0u, "CR2/CR3 not 0");
    CHECK(brr == want_brr, "BRR %u, want %u", (unsigned)brr, (unsigned)want_brr);
    printf("uart-check: init BRR %u CR1 %08x PA9 AF%u PB7 AF%u\n", (unsigned)brr, (unsigned)cr1,
           (unsigned)bits(aafrh, 4, 4), (unsigned)bits(bafrl, 28, 4));
}

static void drain(void)
{
    uart_model_idle(4 * UART_MODEL_BYTE_TICKS); /* the last byte leaves */
}

static void check_transmit(void)
{
    uint8_t got[256];
    const char *text = "hello from the DISCO\n";
    tt_out_write(text);
    const uint8_t raw[] = {0xA5, 0x5A, 0x00, 0xFF, 0x13, 0x80};
    tt_uart_write(raw, sizeof raw);
    drain();
    const int32_t n = uart_model_sent(got, sizeof got);
    const int32_t len = (int32_t)strlen(text);
    CHECK(n == len + (int32_t)sizeof raw, "sent %ld bytes, want %ld", (long)n, (long)(len + (int32_t)sizeof raw));
    CHECK(memcmp(got, text, (size_t)len) == 0 && memcmp(got + len, raw, sizeof raw) == 0, "sent bytes differ");
    printf("uart-check: transmit %ld bytes in order\n", (long)n);
}

static void check_receive(void)
{
    const uint8_t in[] = {'a', 0x00, 0xFF, 0xA5, '\n'};
    uart_model_send(in, sizeof in, UART_MODEL_BYTE_TICKS, 0);
    for (size_t i = 0; i < sizeof in; i++) {
        const uint8_t b = tt_uart_read();
        CHECK(b == in[i], "received byte %ld: %02x, want %02x", (long)i, b, in[i]);
    }
    CHECK(uart_model_lost() == 0, "%ld bytes lost with a reader waiting", (long)uart_model_lost());
    printf("uart-check: receive %ld bytes in order\n", (long)sizeof in);
}

/* Four bytes arrive while the core trains: the first waits in RDR, the second overruns, the rest are lost while ORE
 * is set; the next bytes must come through. */
static void check_overrun(void)
{
    const int32_t before = uart_model_lost();
    uart_model_send((const uint8_t *)"WXYZ", 4, UART_MODEL_BYTE_TICKS, 0);
    uart_model_idle(8 * UART_MODEL_BYTE_TICKS);
    CHECK(uart_model_peek(USART1 + 0x1Cu) & (1u << 3), "no overrun (ORE) after bytes sent to a busy core");
    uart_model_send((const uint8_t *)"ok", 2, UART_MODEL_BYTE_TICKS, 0);
    const uint8_t a = tt_uart_read(), b = tt_uart_read(), c = tt_uart_read();
    CHECK(a == 'W' && b == 'o' && c == 'k', "after an overrun: read %c%c%c, want Wok", a, b, c);
    CHECK(!(uart_model_peek(USART1 + 0x1Cu) & (1u << 3)), "ORE still set after the reads");
    printf("uart-check: overrun: %ld bytes lost, the link goes on\n", (long)(uart_model_lost() - before));
}

/* The host keeps sending while the firmware writes (the rest of a cut frame while the NAK goes out): nothing lost. */
static void check_full_duplex(void)
{
    const int32_t before = uart_model_lost();
    uint8_t in[40], got[64];
    for (size_t i = 0; i < sizeof in; i++) {
        in[i] = (uint8_t)(i * 37u + 1u);
    }
    uart_model_send(in, sizeof in, UART_MODEL_BYTE_TICKS, 0);
    tt_out_write("a 48-byte answer while the host still sends ...\n");
    drain();
    CHECK(uart_model_sent(got, sizeof got) == 48, "the answer was not sent whole");
    CHECK(uart_model_lost() == before, "full duplex: %ld bytes lost while transmitting",
          (long)(uart_model_lost() - before));
    for (size_t i = 0; i < sizeof in; i++) {
        const uint8_t b = tt_uart_read();
        CHECK(b == in[i], "full duplex: received byte %ld: %02x, want %02x", (long)i, b, in[i]);
    }
    printf("uart-check: full duplex: %ld bytes received while sending, none lost\n", (long)sizeof in);
}

static void check_framing_error(void)
{
    uart_model_send((const uint8_t *)"?", 1, UART_MODEL_BYTE_TICKS, 1);
    uart_model_send((const uint8_t *)"!", 1, UART_MODEL_BYTE_TICKS, 0);
    const uint8_t a = tt_uart_read(), b = tt_uart_read();
    CHECK(a == '?' && b == '!', "after a framing error: read %c%c, want ?!", a, b);
    CHECK(!(uart_model_peek(USART1 + 0x1Cu) & (1u << 1)), "FE still set");
    printf("uart-check: framing error cleared\n");
}

int main(void)
{
    check_init();
    check_transmit();
    check_receive();
    check_overrun();
    check_full_duplex();
    check_framing_error();
    fflush(stdout);
    uint8_t flush[64];
    (void)uart_model_sent(flush, sizeof flush);
    tt_out_exit(EXIT_CODE);
}
