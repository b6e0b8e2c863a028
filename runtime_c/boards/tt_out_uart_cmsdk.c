/*
 * Firmware text output on the Arm CMSDK APB UART (UART0 of the MPS2 boards, QEMU `-serial`).
 * Registers: DATA +0x00, STATE +0x04 (bit 0: TX buffer full, bit 1: RX buffer full), CTRL +0x08
 * (bit 0: TX enable, bit 1: RX enable), BAUDDIV +0x10 (16 is the smallest valid divisor; QEMU does not
 * model the baud rate). Reading DATA empties the one-byte RX buffer; QEMU holds further input back
 * until then, so polling loses no byte. The byte interface (tt_uart.h) serves the streaming firmware. The exit
 * status goes through semihosting (QEMU ends with it).
 */
#include <stdint.h>

#include "tt_fw_output.h"
#include "tt_semihost.h"
#include "tt_uart.h"

#ifndef TT_UART_BASE
#define TT_UART_BASE 0x40004000u /* UART0 on mps2-an385/an386/an500 */
#endif

#define UART_REG(offset) (*(volatile uint32_t *)(TT_UART_BASE + (offset)))
#define UART_DATA UART_REG(0x00u)
#define UART_STATE UART_REG(0x04u)
#define UART_CTRL UART_REG(0x08u)
#define UART_BAUDDIV UART_REG(0x10u)

void tt_out_init(void)
{
    UART_BAUDDIV = 16u;
    UART_CTRL = 1u; /* TX enable */
}

void tt_out_write(const char *text)
{
    for (; *text != '\0'; text++) {
        while ((UART_STATE & 1u) != 0u) { /* TX buffer full */
        }
        UART_DATA = (uint32_t)(uint8_t)*text;
    }
}

void tt_uart_init(void)
{
    UART_BAUDDIV = 16u;
    UART_CTRL = 3u; /* TX and RX enable */
}

void tt_uart_write(const uint8_t *data, uint32_t size)
{
    for (uint32_t i = 0; i < size; i++) {
        while ((UART_STATE & 1u) != 0u) { /* TX buffer full */
        }
        UART_DATA = data[i];
    }
}

uint8_t tt_uart_read(void)
{
    while ((UART_STATE & 2u) == 0u) { /* RX buffer empty */
    }
    return (uint8_t)UART_DATA;
}

void tt_out_exit(int32_t code)
{
    tt_sh_exit(code);
}
