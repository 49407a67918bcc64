/* The audit log (SPEC section 6): one JSON line per state-changing request and per
 * refused one, in STATE_DIR/audit.log, rotated by size like the service logs:
 *
 *   {"time":"2026-12-05T11:20:38.123Z","who":"alice","action":"start","service":"sd","status":200}
 *
 * Lines are appended on the loop with one write() each (O_APPEND: a line is never cut
 * or interleaved); reading the tail runs on a worker thread. */
#ifndef NANNY_AUDIT_H
#define NANNY_AUDIT_H

#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#define AUDIT_FILE     "audit.log"
#define AUDIT_TAIL_MAX 10000 /* ?tail= at most */

struct audit;
struct audit_tail;

/* Opens (creating, mode 0600) path for appending; rotated past max_bytes keeping keep
 * old files (path.1 ...). 0, or a negative errno. */
int audit_open(uv_loop_t *loop, const char *path, uint64_t max_bytes, unsigned keep,
               struct audit **ret);

/* Appends one entry: who (a key's name or a client address), action (the verb: "start",
 * "stop", "rediscover", "status", ...), service (NULL: none), status (the HTTP code).
 * A failed write is logged (once until writes succeed again), never fatal. A file removed
 * or renamed from outside is created again at path. */
void audit_record(struct audit *a, const char *who, const char *action, const char *service,
                  unsigned status);

/* Reads the last n entries (oldest first, across the last rotation) on a worker thread
 * and calls done on the loop with a JSON array (borrowed for the call) or NULL and an
 * error. A line that is not JSON is skipped. Returns a handle for audit_tail_cancel(), or
 * NULL when done was called before this returned (the work could not be queued). */
typedef void (*audit_tail_fn)(void *data, json_t *entries, const char *error);
struct audit_tail *audit_tail(struct audit *a, unsigned n, audit_tail_fn done, void *data);

/* done will not be called. */
void audit_tail_cancel(struct audit_tail *t);

/* Closes the file; tails in flight are cancelled. */
void audit_free(struct audit *a);

#endif
