/* Firmware text output through ARM semihosting (SYS_WRITE0): QEMU's chardev, or a debugger on a board; the exit
 * status through SYS_EXIT_EXTENDED. */
#include "tt_fw_output.h"
#include "tt_semihost.h"

void tt_out_init(void)
{
}

void tt_out_write(const char *text)
{
    tt_sh_write0(text);
}

void tt_out_exit(int32_t code)
{
    tt_sh_exit(code);
}
