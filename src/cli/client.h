/* The CLI's client core: one blocking HTTP request to the daemon with libcurl, and the
 * daemon's answers mapped to the exit codes of SPEC section 7. Runs as a command, never
 * in the daemon. */
#ifndef NANNY_CLI_CLIENT_H
#define NANNY_CLI_CLIENT_H

#include <stddef.h>

#include <jansson.h>

/* SPEC section 7's exit codes. */
enum {
    CLIENT_EXIT_OK = 0,
    CLIENT_EXIT_FAILED = 1,
    CLIENT_EXIT_USAGE = 2,
    CLIENT_EXIT_CONFLICT = 3,
    CLIENT_EXIT_UNREACHABLE = 4,
    CLIENT_EXIT_TIMEOUT = 5,
    CLIENT_EXIT_UNAUTHORIZED = 6,
};

#define CLIENT_DEFAULT_URL "http://127.0.0.1:8080"

/* Where the daemon is and how to reach it: --url / NANNY_URL, --key / NANNY_KEY,
 * --cacert / NANNY_CACERT. Borrowed strings; key and cacert may be NULL. */
struct client {
    const char *url;
    const char *key;
    const char *cacert;
    long timeout_ms; /* the whole request; 0: none */
};

struct client_response {
    long status;
    char *body; /* NUL-terminated */
    size_t len;
    json_t *json; /* the body as JSON, or NULL */
};

/* Fills the unset fields of c from the environment and the default. */
void client_defaults(struct client *c);

/* Sends METHOD url+path (body JSON or NULL). 0 with *resp filled whatever the status;
 * else an exit code, with one sentence printed on stderr: CLIENT_EXIT_UNREACHABLE or
 * CLIENT_EXIT_TIMEOUT. */
int client_request(const struct client *c, const char *method, const char *path, const char *body,
                   struct client_response *resp);

/* The exit code for a response that is not 2xx, with the daemon's message printed on
 * stderr after "nanny CMD: "; a 409 GPU conflict names the holder and the command that
 * forces it (for NAME). 0 for a 2xx. */
int client_fail(const char *cmd, const char *name, const struct client_response *resp);

void client_response_done(struct client_response *resp);

/* NAME escaped for a URL path. New string. */
char *client_escape(const char *name);

#endif
