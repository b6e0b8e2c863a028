/*
 * Text output of the firmware: one implementation per channel, chosen by the build
 * (`trady firmware --output semihosting|uart`): tt_out_semihost.c, or the board's UART driver
 * (tt_out_uart_cmsdk.c on the QEMU boards, tt_out_uart_stm32f7.c on the STM32F746G-DISCO).
 */
#ifndef TT_FW_OUTPUT_H
#define TT_FW_OUTPUT_H

#include <stdint.h>

/** Prepare the channel (called once at the start of main). */
void tt_out_init(void);

/** Write a NUL-terminated string. */
void tt_out_write(const char *text);

/** End the program with main's status (tt_startup.c): the emulator's exit status through semihosting, or on a
 * board without a host to exit to, a last "exit STATUS" line and a stop; never returns. */
void tt_out_exit(int32_t code) __attribute__((noreturn));

#endif /* TT_FW_OUTPUT_H */
