/*
 * Cortex-M startup: the vector table and the reset handler (copy .data from flash, zero .bss,
 * enable the FPU, paint the stack, run main, and end with main's status through the firmware's output channel
 * (tt_fw_output.h: semihosting's exit in QEMU, a last line and a stop on a board's UART). A fault reports through
 * the same channel. Symbols come from the board's linker script (tt_sections.ld).
 */
#include <stdint.h>

#include "tt_fw_output.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
extern int main(void);

#define STACK_PAINT 0x5AA55AA5u

void tt_reset_handler(void) __attribute__((noreturn));
void tt_fault_handler(void) __attribute__((noreturn));

/** Bytes of stack used so far: the painted region's words that were overwritten (call after main's work). */
uint32_t tt_stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)((const uint8_t *)&_estack - (const uint8_t *)p);
}

void tt_fault_handler(void)
{
    tt_out_write("fault: the core took a fault exception\n");
    tt_out_exit(3);
}

/* Paints the stack up to 64 bytes below its own frame (the reset handler's few bytes stay unpainted). */
static void __attribute__((noinline)) paint_stack(void)
{
    volatile uint32_t here = 0;
    const uintptr_t limit = (uintptr_t)&here - 64u;
    for (uint32_t *p = &_sstack; (uintptr_t)p < limit; p++) {
        *p = STACK_PAINT;
    }
}

void tt_reset_handler(void)
{
    for (uint32_t *src = &_sidata, *dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
#if defined(__ARM_FP)
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u; /* CP10, CP11 full access */
    *cpacr |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    paint_stack();
    tt_out_exit(main());
}

typedef void (*tt_vector)(void);

/* Initial SP, reset, then NMI .. SysTick (14 system exceptions); external IRQs are not used. */
__attribute__((section(".vectors"), used)) static const tt_vector vectors[16] = {
    (tt_vector)(uintptr_t)&_estack,
    tt_reset_handler,
    tt_fault_handler, /* NMI */
    tt_fault_handler, /* HardFault */
    tt_fault_handler, /* MemManage */
    tt_fault_handler, /* BusFault */
    tt_fault_handler, /* UsageFault */
    0, 0, 0, 0,
    tt_fault_handler, /* SVCall */
    tt_fault_handler, /* DebugMon */
    0,
    tt_fault_handler, /* PendSV */
    tt_fault_handler, /* SysTick */
};
