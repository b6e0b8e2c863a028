/*
 * Host model of the STM32F746G-DISCO's QSPI flash path (tests/test_qspi.py): the QUADSPI registers the board
 * driver uses (CR, DCR, SR, FCR, DLR, CCR, AR, DR, PSMKR, PSMAR, PIR; indirect write, automatic polling and
 * memory-mapped modes), RCC, the GPIO alternate functions, the MPU, and a Micron N25Q128A behind it. Included by
 * runtime_c/boards/tt_qspi_stm32f7.h when built with -DTT_QSPI_HOST_MODEL, so the board driver itself runs on it,
 * and by tt_fw_main.c, whose persistent-state region, stamp and pristine home are the model's.
 *
 * The flash holds the home (the generated model's flash_home array, 4096-byte aligned), then one stamp subsector,
 * then the persistent-state region (QSPI_MODEL_REGION_BYTES), the linker script's layout. The CPU sees them
 * through those arrays only while the window is memory-mapped and the MPU opens it (otherwise mprotect'ed away:
 * a read is a protocol violation). Any protocol violation prints one "qspi-model: violation: ..." line and exits
 * with status 5; a read of the closed window exits with 4. Environment: QSPI_MODEL_FLASH=FILE (the flash
 * contents, read at start if present and written at exit), QSPI_MODEL_CUT=N (power loss after N flash operations:
 * each byte programmed and each subsector erase count one; exit 3), QSPI_MODEL_IMAGE_XOR=K (a new image: the
 * pristine home's first byte xor K).
 */
#ifndef QSPI_MODEL_H
#define QSPI_MODEL_H

#include <stdint.h>

#ifndef QSPI_MODEL_REGION_BYTES
#error "QSPI_MODEL_REGION_BYTES: the persistent-state region's bytes (a multiple of 4096)"
#endif

uint32_t qspi_model_read(uint32_t addr);
void qspi_model_write(uint32_t addr, uint32_t value);
int32_t qspi_model_offset(const volatile void *p);

#define TT_REG_RD(addr) qspi_model_read((uint32_t)(addr))
#define TT_REG_WR(addr, value) qspi_model_write((uint32_t)(addr), (uint32_t)(value))
#define TT_QSPI_WINDOW_OFFSET(p) qspi_model_offset(p)
#define TT_BARRIER() ((void)0)

/* tt_fw_main.c's layout symbols (the linker script's on the board) */
extern int8_t *qspi_model_pristine;
extern uint8_t qspi_model_stamp[4096];
extern uint8_t qspi_model_region[QSPI_MODEL_REGION_BYTES];
#define FW_QSPI_PRISTINE qspi_model_pristine
#define FW_QSPI_STAMP qspi_model_stamp
#define _stt_persist qspi_model_region
#define _ett_persist (qspi_model_region + QSPI_MODEL_REGION_BYTES)

#endif /* QSPI_MODEL_H */
