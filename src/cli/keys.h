/* nanny keys: add, list and remove the daemon's API keys (SPEC section 6). Runs as a
 * command, never in the daemon; writes the file the daemon reads (core/keys.h). */
#ifndef NANNY_CLI_KEYS_H
#define NANNY_CLI_KEYS_H

/* The command "nanny keys": argv[0] is "keys". Returns the exit code: 0 done, 1 refused
 * or failed, 2 bad usage. */
int keys_main(int argc, char **argv);

#endif
