/* GET /events: the event hub as server-sent events (SPEC section 7). Each event is
 *   id: EPOCH-SEQ      (EPOCH: this daemon's start in Unix ms; SEQ: the hub's sequence)
 *   event: state | health | gpu | discovery | reset
 *   data: one JSON object, with "time" (when the hub published it, ISO 8601 in ms) but
 *         in reset events
 * Last-Event-ID resumes from the hub's history; one this daemon cannot resume from gets a
 * reset event first. A comment every SSE_KEEPALIVE_MS keeps proxies from closing an idle
 * stream; a client that lets more than SSE_UNREAD_MAX bytes wait is sent a last reset
 * event and its stream is ended. */
#ifndef NANNY_SSE_H
#define NANNY_SSE_H

#include <stddef.h>

#include <uv.h>

#include "core/events.h"
#include "http/server.h"

#define SSE_KEEPALIVE_MS 15000
#define SSE_UNREAD_MAX   (256 * 1024)

struct sse;

/* Serves the events of hub (borrowed; it outlives the sse). */
struct sse *sse_new(uv_loop_t *loop, struct events *hub);

/* Ends every stream and frees the sse (NULL is fine). */
void sse_free(struct sse *sse);

/* The handler of GET /events (data: the struct sse), behind the gate (api_mount). */
void sse_handle(void *data, struct request *req);

/* How many clients follow the events now. */
size_t sse_clients(const struct sse *sse);

#endif
