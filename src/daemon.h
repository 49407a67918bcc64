/* The daemon: builds the loop and everything on it from a configuration, runs until
 * SIGTERM or SIGINT, and takes it all down cleanly. */
#ifndef NANNY_DAEMON_H
#define NANNY_DAEMON_H

#include "core/config.h"

/* Runs the daemon; returns the process exit code (0 after a clean stop, 1 when it could
 * not start, 2 for a bad configuration). */
int daemon_run(const struct config *c);

#endif
