/*
 * Firmware text output on the Arm CMSDK APB UART (UART0 of the MPS2 boards, QEMU `-serial`).
 * Registers: DATA +0x00, STATE +0x04 (bit 0: TX buffer full), CTRL +0x08 (bit 0: TX enable),
 * BAUDDIV +0x10 (16 is the smallest valid divisor; QEMU does not model the baud rate).
 */
#include <stdint.h>

#include "tt_fw_output.h"

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
