/*
 * Text output of the bare-metal kernel tests (tests/c/conv_qemu.c, tests/c/bwd_qemu.c) through semihosting:
 * decimal numbers without printf, and a line in up to five parts.
 */
#ifndef QEMU_SAY_H
#define QEMU_SAY_H

#include <stddef.h>
#include <stdint.h>

#include "tt_semihost.h"

/* Decimal text of v into buf (at least 12 bytes). */
static const char *dec(int32_t v, char *buf)
{
    char *p = buf + 11;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    *p = '\0';
    do {
        *--p = (char)('0' + u % 10u);
        u /= 10u;
    } while (u != 0u);
    if (v < 0) {
        *--p = '-';
    }
    return p;
}

/* The non-NULL parts in order. */
static void say(const char *a, const char *b, const char *c, const char *d, const char *e)
{
    const char *parts[5] = {a, b, c, d, e};
    for (int i = 0; i < 5; i++) {
        if (parts[i] != NULL) {
            tt_sh_write0(parts[i]);
        }
    }
}

#endif /* QEMU_SAY_H */
