/*
 * Byte I/O on the board's UART (CMSDK APB UART0 on the MPS2 boards: tt_out_uart_cmsdk.c; USART1 on the
 * STM32F746G-DISCO: tt_out_uart_stm32f7.c), for the streaming firmware (tt_fw_stream.c). Polling, blocking.
 */
#ifndef TT_UART_H
#define TT_UART_H

#include <stdint.h>

/** Enable transmit and receive. */
void tt_uart_init(void);

/** Send `size` bytes. */
void tt_uart_write(const uint8_t *data, uint32_t size);

/** Wait for and return the next received byte. */
uint8_t tt_uart_read(void);

#endif /* TT_UART_H */
