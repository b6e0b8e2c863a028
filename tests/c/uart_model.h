/*
 * Host model of the STM32F746G-DISCO's console UART (tests/test_uart.py): USART1 (CR1, CR2, CR3, BRR, ISR, ICR,
 * RDR, TDR), the RCC clock enables and GPIOA/GPIOB, with the line on the other side (the ST-LINK's virtual COM
 * port). Included by runtime_c/boards/tt_out_uart_stm32f7.c when built with -DTT_UART_HOST_MODEL, so the board
 * driver itself runs on it.
 *
 * Time is counted in register accesses: a byte takes UART_MODEL_BYTE_TICKS of them on the line, each way. The
 * transmitter has TDR and a shift register (TXE: TDR empty; TC: both empty); the receiver has RDR: a byte that
 * arrives while RXNE is set sets ORE and is lost, and while ORE is set no byte reaches RDR (so a driver that never
 * clears ORE stops receiving). Any misuse (a register of an unclocked peripheral, BRR or the frame format changed
 * while UE is set, TDR written while TXE is clear or with the transmitter off, RDR read while RXNE is clear, a
 * line not 8N1 at UART_MODEL_BAUD within 2 %, a pin not in alternate function 7, a halt before the last byte left)
 * prints one "uart-model: violation: ..." line and exits with status 5; ISR polled without end (nothing left to
 * arrive or to send) prints "uart-model: stuck: ..." and exits with 6. TT_UART_HALT prints "uart-model: halt
 * STATUS after "TEXT"" (the bytes sent since the last uart_model_sent) and exits with 0.
 */
#ifndef UART_MODEL_H
#define UART_MODEL_H

#include <stdint.h>

#ifndef UART_MODEL_BAUD
#define UART_MODEL_BAUD 115200 /* what the host side of the line is set to */
#endif
#define UART_MODEL_BYTE_TICKS 20

uint32_t uart_model_read(uint32_t addr);
void uart_model_write(uint32_t addr, uint32_t value);
void uart_model_halt(int32_t code) __attribute__((noreturn));

#define TT_REG_RD(addr) uart_model_read((uint32_t)(addr))
#define TT_REG_WR(addr, value) uart_model_write((uint32_t)(addr), (uint32_t)(value))
#define TT_UART_HALT(code) uart_model_halt(code)

/* ---- the test's side ---- */

/** A register's value without the side effects of a read (RDR's clears RXNE). */
uint32_t uart_model_peek(uint32_t addr);

/** The host sends `n` bytes: the first `gap` ticks from now, each further one `gap` ticks after the last;
 * `framing_error` marks them as received with a bad stop bit. */
void uart_model_send(const uint8_t *data, int32_t n, uint32_t gap, int framing_error);

/** Time passes without register accesses (the core is busy elsewhere, e.g. training). */
void uart_model_idle(uint32_t ticks);

/** Moves the bytes the host received since the last call into `out` (at most `cap`); returns their count. */
int32_t uart_model_sent(uint8_t *out, int32_t cap);

/** Received bytes lost so far: overruns (ORE) and bytes that reached a disabled receiver. */
int32_t uart_model_lost(void);

#endif /* UART_MODEL_H */
