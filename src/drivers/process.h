/* The process driver's setup, which the driver interface (core/driver.h) leaves out. */
#ifndef NANNY_PROCESS_H
#define NANNY_PROCESS_H

#include <uv.h>

/* Gives the process driver the loop on whose worker threads its logs() reads log files,
 * so that a tail of many megabytes never holds up the loop. Call it once, before the first
 * logs request; without it logs() answers with an error. */
void driver_process_setup(uv_loop_t *loop);

#endif
