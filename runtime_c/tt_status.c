/* trady runtime: status names. */
#include "tt_types.h"

static const char *const status_names[TT_STATUS_COUNT] = {
    [TT_OK] = "ok",
    [TT_ERR_ARG] = "bad argument",
    [TT_ERR_RANGE] = "parameter out of range",
    [TT_ERR_UNSUPPORTED] = "not supported on this target",
};

const char *tt_status_name(tt_status status)
{
    /* unsigned: also rejects negative values, and stays meaningful where enums are 8-bit (ARM EABI) */
    const unsigned index = (unsigned)status;
    if (index >= (unsigned)TT_STATUS_COUNT) {
        return "unknown status";
    }
    return status_names[index];
}
