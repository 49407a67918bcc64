/* The daemon's table of drivers: a new driver is one file and one row here. */
#include "drivers/drivers.h"

const struct driver *const drivers_builtin[] = {
    &driver_process,
    &driver_compose,
    NULL,
};

static const char *self_exe;

void drivers_set_self(const char *exe)
{
    self_exe = exe;
}

const char *drivers_self(void)
{
    return self_exe;
}
