/* Request bodies: the JSON documents clients send, parsed and checked into plain structs.
 * Pure functions, so that they can be fuzzed. */
#ifndef NANNY_BODY_H
#define NANNY_BODY_H

#include <stdbool.h>
#include <stddef.h>

/* The body of POST /services/NAME/start and /restart. */
struct start_request {
    bool force;
};

/* Parses a start body: empty (or only whitespace) means the defaults; otherwise a JSON
 * object whose only known member is "force" (a boolean). Returns 0, or -EINVAL with a
 * sentence for the client in err. */
int body_parse_start(const char *buf, size_t len, struct start_request *ret, char *err,
                     size_t err_size);

/* Checks that a body is empty or an empty JSON object, for endpoints that take none. */
int body_parse_empty(const char *buf, size_t len, char *err, size_t err_size);

#endif
