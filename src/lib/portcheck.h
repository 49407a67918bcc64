/* Whether ports are in use on 127.0.0.1, found out on the loop: a non-blocking connect to
 * each, answered by a connection (taken), a refusal (free), or nothing within a timeout
 * (taken: a listener whose queue is full answers nothing). */
#ifndef NANNY_PORTCHECK_H
#define NANNY_PORTCHECK_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct portcheck;

/* taken_port: the first port of the list found taken on 127.0.0.1 (a connection accepted,
 * or no answer within timeout_ms), or 0 when every port is free (connection refused). */
typedef void (*portcheck_fn)(void *data, unsigned taken_port);

/* Checks the n ports with non-blocking connects on the loop (uv_tcp_connect and a
 * uv_timer). done is called exactly once, on a later loop pass (never before this
 * returns), unless cancelled. n may be 0 (then done(data, 0) on a later pass). A port
 * outside 1-65535, or one that cannot be tried (no socket to spare), counts as free. The
 * ports are copied. */
struct portcheck *portcheck_start(uv_loop_t *loop, const unsigned *ports, size_t n,
                                  uint64_t timeout_ms, portcheck_fn done, void *data);

/* done will not be called; the check's handles close and it frees itself. Valid only
 * before done was called. */
void portcheck_cancel(struct portcheck *pc);

#endif
