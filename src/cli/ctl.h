/* The daemon's commands from the command line: health, ls (ps), status, start, stop,
 * restart, rediscover, logs (SPEC section 7), through cli/client.h. */
#ifndef NANNY_CLI_CTL_H
#define NANNY_CLI_CTL_H

#include <stdbool.h>

/* True when CMD is one of these commands. */
bool ctl_is_command(const char *cmd);

/* Runs "nanny CMD ...": argv[0] is CMD. Returns SPEC section 7's exit code. */
int ctl_main(int argc, char **argv);

#endif
