/* GET /services/NAME/logs?follow=1: the tail, then each line as it is written, as one
 * streamed text/plain answer until the client goes (the core's supervisor_follow() does
 * the watching, shared by every follower of a service). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/logs_follow.h"
#include "http/stream.h"
#include "lib/alloc.h"
#include "lib/log.h"

struct follower {
    struct supervisor_follow *follow; /* NULL once ended or cancelled */
    struct stream *stream;            /* NULL once ended */
    char name[64];
};

static void follower_end(struct follower *f, const char *last, size_t len)
{
    stream_end(f->stream, last, len);
    f->stream = NULL;
    free(f);
}

static void on_line(void *data, const char *line, size_t len)
{
    struct follower *f = data;
    char last[200];
    int n;

    if (stream_write(f->stream, line, len) && stream_write(f->stream, "\n", 1))
        return;
    log_info("logs: a follower of %s read too slowly (%zu bytes unread); ending its stream",
             f->name, stream_unread(f->stream));
    n = snprintf(last, sizeof(last),
                 "\n[nanny: this client read too slowly: more than %zu bytes waited unread; "
                 "the follow ended]\n",
                 stream_unread(f->stream));
    supervisor_follow_cancel(f->follow);
    f->follow = NULL;
    follower_end(f, last, (size_t)n);
}

static void on_end(void *data, const char *error)
{
    struct follower *f = data;
    char last[300];
    int n = snprintf(last, sizeof(last), "[nanny: the follow ended: %s]\n",
                     error ? error : "no more output");

    f->follow = NULL;
    follower_end(f, last, (size_t)n);
}

/* The client went, or the server is stopping. */
static void on_gone(void *data)
{
    struct follower *f = data;

    supervisor_follow_cancel(f->follow);
    free(f);
}

void logs_follow_reply(struct supervisor *sup, struct service *svc, unsigned tail,
                       struct request *req)
{
    static const char *const headers[] = {"X-Content-Type-Options", "nosniff", "X-Accel-Buffering",
                                          "no", NULL};
    struct follower *f;
    const char *error = NULL;
    size_t cap;

    if (request_server_stopping(req)) {
        request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                            "the daemon is stopping");
        return;
    }
    f = xcalloc(1, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", svc->name);
    /* No callback comes before it returns: the stream is set up after it. */
    f->follow = supervisor_follow(sup, svc, tail, on_line, on_end, f, &error);
    if (!f->follow) {
        free(f);
        request_reply_error(req, MHD_HTTP_CONFLICT, "cannot_follow", "cannot follow %s: %s",
                            svc->name, error ? error : "no reason given");
        return;
    }
    /* The tail comes all at once, before the client has read anything: room for it on top
     * of what may lag behind (a KiB a line, up to the 16 MiB a tail is read in at most). */
    cap = (size_t)tail * 1024;
    cap = LOGS_FOLLOW_UNREAD_MAX + (cap < LOGS_FOLLOW_TAIL_MAX ? cap : LOGS_FOLLOW_TAIL_MAX);
    f->stream =
        request_stream(req, MHD_HTTP_OK, "text/plain; charset=utf-8", headers, cap, on_gone, f);
    if (!f->stream) {
        supervisor_follow_cancel(f->follow);
        free(f);
    }
}
