/* A streamed answer: a body of unknown length (chunked), written piece by piece from the
 * loop for as long as the client stays (server-sent events, followed logs). What is
 * written waits in a buffer with a cap until the client reads it; when the buffer is
 * empty the connection is suspended, so an idle stream costs no loop time and has no
 * idle timeout. */
#ifndef NANNY_STREAM_H
#define NANNY_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "http/server.h"

struct stream;

/* Called once when the stream ends without its owner: the client went away, or the server
 * is quiescing or shutting down. The stream is then ended and the owner must forget it. */
typedef void (*stream_gone_fn)(void *data);

/* Answers req (from its handler, at once) with status and Content-Type type, and a body
 * written later with stream_write(); at most cap bytes wait unread. Extra headers: pairs
 * of name and value, NULL-terminated (NULL: none). NULL when the answer cannot be queued
 * (the client is already gone). */
struct stream *request_stream(struct request *req, unsigned status, const char *type,
                              const char *const *headers, size_t cap, stream_gone_fn gone,
                              void *data);

/* Called when a write refused at the cap may be tried again: the client has read every
 * byte that waited (a proxy resumes its upstream). Not called once the owner let go. */
typedef void (*stream_drained_fn)(void *data);

/* request_stream() in full. */
struct stream_options {
    unsigned status;
    const char *type;           /* Content-Type (a static string); NULL: none */
    const char *const *headers; /* pairs of name and value, NULL-terminated; NULL: none */
    uint64_t length;            /* the body's length when known (Content-Length), else
                                 * MHD_SIZE_UNKNOWN (chunked) */
    bool no_cache;              /* Cache-Control: no-cache */
    bool long_lived;            /* a stream that may stay quiet for long (events, logs):
                                 * TCP keepalive and a small send buffer on its socket */
    size_t cap;
    stream_gone_fn gone;
    stream_drained_fn drained; /* NULL: a refused write is never told */
    void *data;
};

/* Answers req with a stream as o says: from its handler at once, or after
 * request_suspend() (a proxy answers once its upstream's head came). NULL as for
 * request_stream(). */
struct stream *request_stream_with(struct request *req, const struct stream_options *o);

/* Appends len bytes: false (nothing appended) when they would take the unread bytes past
 * the cap. */
bool stream_write(struct stream *st, const void *buf, size_t len);

/* Appends len bytes even past the cap: for what is bounded by other means (a replay of the
 * event history). */
void stream_write_all(struct stream *st, const void *buf, size_t len);

/* The bytes written and not yet handed to the socket. */
size_t stream_unread(const struct stream *st);

/* Ends the body after what is buffered and the last len bytes of last (NULL: none; it may
 * go past the cap). The owner must forget the stream; gone is not called. A client that
 * does not read the rest is closed after the server's idle timeout. */
void stream_end(struct stream *st, const void *last, size_t len);

/* Ends the body badly after what is buffered: the connection is cut without the last
 * chunk (or short of Content-Length), so the client sees the answer is incomplete, never
 * a whole one (an upstream that died mid-answer). The owner must forget the stream. */
void stream_abort(struct stream *st);

#endif
