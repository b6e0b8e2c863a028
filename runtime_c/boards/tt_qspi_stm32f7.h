/*
 * STM32F746G-DISCO: the flash weight home and the persistent-state region in the board's 16 MB Micron N25Q128A
 * QSPI NOR flash (docs/PERSIST.md, "The STM32F746G-DISCO: QSPI flash").
 *
 * The QUADSPI peripheral (registers at 0xA0001000) reads the flash through its memory-mapped window at
 * 0x90000000, which is where the linker script puts the home's VMA (.tt_flash), the stamp subsector after it and
 * the region after the stamp; the kernels read the weights there. Writing leaves memory-mapped mode for indirect
 * mode (WRITE ENABLE, SUBSECTOR ERASE of 4 KB, PAGE PROGRAM of 256 B, status polling), then re-enters it.
 * Single-line commands only (FAST READ 0x0B with 8 dummy cycles for the window), clocked from the 16 MHz HSI.
 *
 * Every register access goes through TT_REG_RD / TT_REG_WR, and the window through TT_QSPI_WINDOW_OFFSET, so
 * the same driver compiles on the host against a register-level model of the QUADSPI, RCC, GPIO and MPU and of
 * the N25Q128A (tests/c/qspi_model.c, built with -DTT_QSPI_HOST_MODEL).
 */
#ifndef TT_QSPI_STM32F7_H
#define TT_QSPI_STM32F7_H

#include <stdint.h>

#include "tt_types.h"

#if defined(TT_QSPI_HOST_MODEL)
#include "qspi_model.h" /* TT_REG_RD, TT_REG_WR, TT_QSPI_WINDOW_OFFSET, TT_BARRIER */
#else
#define TT_REG_RD(addr) (*(volatile uint32_t *)(uintptr_t)(addr))
#define TT_REG_WR(addr, value) (*(volatile uint32_t *)(uintptr_t)(addr) = (uint32_t)(value))
/** Offset of a CPU address in the flash (the memory-mapped window), or -1 outside it. */
#define TT_QSPI_WINDOW_OFFSET(p)                                                                   \
    ((uintptr_t)(p) >= 0x90000000u && (uintptr_t)(p) < 0x90000000u + TT_QSPI_FLASH_BYTES \
         ? (int32_t)((uintptr_t)(p) - 0x90000000u)                                            \
         : -1)
#define TT_BARRIER() __asm__ volatile("dsb\n\tisb" ::: "memory")
#endif

#define TT_QSPI_FLASH_BYTES (16 * 1024 * 1024) /* N25Q128A: 128 Mbit */
#define TT_QSPI_SUBSECTOR 4096                 /* the erase unit (SUBSECTOR ERASE 0x20) */
#define TT_QSPI_PROGRAM_PAGE 256               /* PAGE PROGRAM 0x02 never crosses one */
#define TT_QSPI_STAMP_MAGIC 0x53515454u        /* "TTQS" */
#define TT_QSPI_STAMP_VERSION 1u

/** The image's flash home: where it lives in QSPI, its pristine copy in internal flash, and the stamp subsector. */
typedef struct {
    int8_t *home;           /**< the home's VMA in the window, subsector aligned */
    const int8_t *pristine; /**< the weights the image carries (its LMA, internal flash) */
    int32_t bytes;          /**< a multiple of TT_QSPI_SUBSECTOR */
    uint8_t *stamp;         /**< one subsector in the window, outside the home */
    uint32_t model_id;
} tt_qspi_image;

/** What tt_qspi_boot found. */
typedef enum {
    TT_QSPI_KEPT = 0,   /**< the stamp names this image: the (trained) home in QSPI is kept */
    TT_QSPI_FRESH = 1,  /**< no valid stamp (a fresh board, or a copy cut by a power loss): the home was copied */
    TT_QSPI_OTHER = 2   /**< the stamp of another image: the home was copied */
} tt_qspi_outcome;

/** Name of an outcome ("kept", "fresh", "other"). */
const char *tt_qspi_outcome_name(tt_qspi_outcome outcome);

/**
 * Bring up the QUADSPI (clocks, pins, MPU, reset of the flash) and enter memory-mapped mode. Call once at boot,
 * before anything reads the window.
 */
tt_status tt_qspi_init(void);

/**
 * Check the stamp against `image` (magic, version, model id, length, CRC32 of the pristine home). On a mismatch:
 * erase the stamp, copy the pristine home into QSPI subsector by subsector, program the stamp last (a power loss
 * before that only means the copy is redone). Leaves the window memory-mapped. `crc` (optional) gets the CRC32 of
 * the pristine home.
 */
tt_status tt_qspi_boot(const tt_qspi_image *image, tt_qspi_outcome *outcome, uint32_t *crc);

/* tt_flash_program_page (tt_flash.h) is this driver's: a subsector-aligned range of the window, whole
 * subsectors, from a source outside the window (SRAM or internal flash). */

#endif /* TT_QSPI_STM32F7_H */
