/* nanny check: every manifest of a services folder validated offline, as discovery
 * would read them, with no daemon (SPEC section 7). Runs as a command, never in the
 * daemon. */
#ifndef NANNY_CLI_CHECK_H
#define NANNY_CLI_CHECK_H

/* The command "nanny check": argv[0] is "check". Returns the exit code: 0 every manifest
 * is valid (warnings allowed), 1 one or more are broken, 2 bad usage or a folder that
 * cannot be read. */
int check_main(int argc, char **argv);

#endif
