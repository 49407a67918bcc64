/* start --wait's live line and logs -f (see live.c). */
#ifndef NANNY_CLI_LIVE_H
#define NANNY_CLI_LIVE_H

#include "cli/client.h"

/* client_request() for a start or restart that waits, showing on stdout (a terminal) one
 * line that follows NAME's state, the seconds elapsed and its last health result from
 * GET /events, cleared before it returns. Ctrl-C: exit 1, the service left as it is. */
int live_request(const struct client *c, const char *method, const char *path, const char *body,
                 const char *name, struct client_response *resp);

/* GET path (a followed log) copied to stdout as it comes, until the daemon ends it, stdout
 * closes or Ctrl-C (exit 0); an error answer is told as client_fail() does for NAME. */
int live_logs(const struct client *c, const char *path, const char *name);

#endif
