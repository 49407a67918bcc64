/* The daemon's table of drivers. */
#ifndef NANNY_DRIVERS_H
#define NANNY_DRIVERS_H

#include "core/driver.h"

extern const struct driver driver_process;
extern const struct driver driver_compose;

/* Every driver the daemon has, NULL-terminated, for drivers_set(). */
extern const struct driver *const drivers_builtin[];

#endif
