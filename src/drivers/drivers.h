/* The daemon's table of drivers. */
#ifndef NANNY_DRIVERS_H
#define NANNY_DRIVERS_H

#include "core/driver.h"

extern const struct driver driver_process;
extern const struct driver driver_compose;

/* Every driver the daemon has, NULL-terminated, for drivers_set(). */
extern const struct driver *const drivers_builtin[];

/* The daemon's own binary, for the helpers it runs (the process driver's logger): set by
 * main() ("/proc/self/exe"); NULL in the unit tests, whose binaries are not the daemon. */
void drivers_set_self(const char *exe);
const char *drivers_self(void);

#endif
