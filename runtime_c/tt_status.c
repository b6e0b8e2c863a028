/* trady runtime: status names. */
#include "tt_types.h"

static const char *const status_names[TT_STATUS_COUNT] = {
    [TT_OK] = "ok",
    [TT_ERR_ARG] = "bad argument",
    [TT_ERR_RANGE] = "parameter out of range",
};

const char *tt_status_name(tt_status status)
{
    if ((int)status < 0 || status >= TT_STATUS_COUNT) {
        return "unknown status";
    }
    return status_names[status];
}
