#include "tt_semihost.h"

enum {
    SYS_WRITE0 = 0x04,
    SYS_EXIT_EXTENDED = 0x20,
    ADP_STOPPED_APPLICATION_EXIT = 0x20026, /* the "reason" word of SYS_EXIT(_EXTENDED) */
};

/* r0 = operation, r1 = argument block; the result comes back in r0. */
static int32_t semihost_call(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void tt_sh_write0(const char *text)
{
    (void)semihost_call(SYS_WRITE0, text);
}

void tt_sh_exit(int32_t code)
{
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    (void)semihost_call(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}
