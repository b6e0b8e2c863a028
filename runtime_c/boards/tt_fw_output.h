/*
 * Text output of the firmware: one implementation per channel, chosen by the build
 * (`trady firmware --output semihosting|uart`): tt_out_semihost.c or tt_out_uart_cmsdk.c.
 */
#ifndef TT_FW_OUTPUT_H
#define TT_FW_OUTPUT_H

/** Prepare the channel (called once at the start of main). */
void tt_out_init(void);

/** Write a NUL-terminated string. */
void tt_out_write(const char *text);

#endif /* TT_FW_OUTPUT_H */
