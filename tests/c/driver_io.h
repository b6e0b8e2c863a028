/*
 * Case-file input helpers shared by the C test drivers (kernel_driver.c, backward_driver.c).
 * A case file is little-endian int32 fields and length-prefixed arrays (tests/tt_support.py Payload).
 * Define DRIVER_NAME before including. Buffers are allocated to their exact size so the sanitizer
 * build catches any out-of-bounds access by a kernel.
 */
#ifndef DRIVER_IO_H
#define DRIVER_IO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tt_types.h"

static void die(const char *what)
{
    fprintf(stderr, DRIVER_NAME ": %s\n", what);
    exit(2);
}

static int32_t read_i32(FILE *f)
{
    int32_t v;
    if (fread(&v, sizeof v, 1, f) != 1) {
        die("truncated case file");
    }
    return v;
}

static void read_dims(FILE *f, tt_dims *d)
{
    d->n = read_i32(f);
    d->h = read_i32(f);
    d->w = read_i32(f);
    d->c = read_i32(f);
}

/* A buffer of exactly `count` elements, filled with 0x5A so bytes a kernel leaves untouched are visible. */
static void *alloc_exact(size_t elem, int32_t count)
{
    if (count < 0) {
        die("negative count");
    }
    void *buf = malloc(count > 0 ? (size_t)count * elem : 1);
    if (buf == NULL) {
        die("out of memory");
    }
    memset(buf, 0x5A, count > 0 ? (size_t)count * elem : 1);
    return buf;
}

/* Reads an element count and the elements into a buffer of exactly that many elements. */
static void *read_array(FILE *f, size_t elem, int32_t *count)
{
    *count = read_i32(f);
    void *buf = alloc_exact(elem, *count);
    if (*count > 0 && fread(buf, elem, (size_t)*count, f) != (size_t)*count) {
        die("truncated array");
    }
    return buf;
}

/* NULL when bit `bit` of the case's null mask is set (argument-check tests), else p. */
static void *nul(uint32_t mask, int bit, void *p)
{
    return (mask >> bit) & 1u ? NULL : p;
}

#endif /* DRIVER_IO_H */
