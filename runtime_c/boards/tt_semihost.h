/*
 * ARM semihosting (the `bkpt 0xab` interface of Cortex-M) for the firmware: text output and exit.
 * Under QEMU with `-semihosting-config enable=on` the text goes to the configured chardev and
 * tt_sh_exit(code) ends QEMU with that exit status (SYS_EXIT_EXTENDED). On a board the calls need
 * a debugger attached (pyOCD serves semihosting); without one the core stops at the breakpoint.
 */
#ifndef TT_SEMIHOST_H
#define TT_SEMIHOST_H

#include <stdint.h>

/** Write a NUL-terminated string (SYS_WRITE0). */
void tt_sh_write0(const char *text);

/** End the program with `code` as the emulator's exit status (SYS_EXIT_EXTENDED); never returns. */
void tt_sh_exit(int32_t code) __attribute__((noreturn));

#endif /* TT_SEMIHOST_H */
