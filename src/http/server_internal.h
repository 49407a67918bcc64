/* What server.c shares with stream.c, and nothing else: the connection under a request and
 * the hooks through which a streamed answer is queued and told of its end. */
#ifndef NANNY_SERVER_INTERNAL_H
#define NANNY_SERVER_INTERNAL_H

#include <microhttpd.h>

#include "http/server.h"
#include "http/stream.h"

/* The libmicrohttpd connection of a request still in flight. */
struct MHD_Connection *request_connection(const struct request *req);

/* n bytes of req's body went to or from it (a stream's piece, an upload's): the server
 * does not slow a transfer under way (server_run_soon). */
void request_moved(struct request *req, size_t n);

/* True while a streamed request body is still coming (server_set_body_streaming): a
 * stream's answer goes out after it, and takes the idle timeout away only then. */
bool request_body_pending(const struct request *req);

/* Queues resp as req's answer, a stream (from the handler at once, or after a suspend,
 * when libmicrohttpd calls back): the request now belongs to st until it ends
 * (stream_request_done). True: resp's reference is taken; false (it cannot be queued):
 * it is still the caller's. */
bool request_queue_stream(struct request *req, unsigned status, struct MHD_Response *resp,
                          struct stream *st);

/* Resumes the suspended connection of a stream: at most SERVER_RESUME_BATCH per loop pass,
 * in the order asked, so that an event written to many streams does not hold the loop. */
void request_resume_soon(struct request *req);

/* The server's side of a stream (stream.c): its request is over (the client went away or
 * the answer was sent), or the server quiesces and ends it. */
void stream_request_done(struct stream *st);
void stream_quiesce(struct stream *st);

#define SERVER_STREAM_END_TIMEOUT_S SERVER_IDLE_TIMEOUT_S

#endif
