/*
 * tt_flash_program_page for the STM32F746: not available yet, so a project with a flash weight home stops
 * with TT_ERR_UNSUPPORTED at its first write-back (the first resampling) instead of storing to flash
 * addresses, which faults on the chip. The F7's erase units are sectors of 32, 128 and 256 KB, larger than
 * a page buffer can be in 320 KB of SRAM: its write-back needs a double-buffered scheme (program the
 * merged copy into an erased spare sector, then switch), not the page read-modify-write of tt_flash.c.
 */
#include "tt_flash.h"

tt_status tt_flash_program_page(int8_t *page, const uint8_t *data, int32_t bytes)
{
    (void)page;
    (void)data;
    (void)bytes;
    return TT_ERR_UNSUPPORTED;
}
