/* A streamed answer (see stream.h): libmicrohttpd asks for the body through a content
 * reader; with nothing to give, the reader suspends the connection and returns 0, and the
 * next write resumes it. The stream lives until both its request is over and
 * libmicrohttpd has let go of the response. */
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "http/server_internal.h"
#include "http/stream.h"
#include "lib/alloc.h"
#include "lib/log.h"

/* What libmicrohttpd asks for at most per call: a chunked body is taken into its own write
 * buffer (about 32 KiB) whatever this says; a body of known length (a proxied file) into a
 * buffer of this size, allocated with the response, and sent one buffer per loop pass: a
 * 200 MB file came at 570 MB/s with 4 KiB, 960 with 16 KiB, 780 with 64 KiB. */
#define STREAM_BLOCK       4096
#define STREAM_BULK_BLOCK  (16 * 1024)
#define STREAM_SNDBUF      (128 * 1024) /* the socket's send buffer: what lags waits in ours */
#define STREAM_KEEPIDLE_S  60           /* TCP keepalive: first probe after this much silence... */
#define STREAM_KEEPINTVL_S 10           /* ...then one every this many seconds... */
#define STREAM_KEEPCNT     3            /* ...and the peer is gone after this many unanswered */

struct stream {
    struct request *req; /* NULL once the request is over */
    char *buf;           /* unread bytes: [off, len) */
    size_t off, len, size, cap;
    bool ended;          /* stream_end(): the body stops once the buffer is drained */
    bool broken;         /* stream_abort(): ...and then the connection is cut */
    bool suspended;      /* the reader suspended the connection for want of bytes */
    bool response;       /* libmicrohttpd still holds the response */
    bool refused;        /* a write was refused at the cap: drained() is owed */
    stream_gone_fn gone; /* NULL once the owner has let go */
    stream_drained_fn drained;
    void *data;
};

static void stream_release_if_done(struct stream *st)
{
    if (st->req || st->response)
        return;
    free(st->buf);
    free(st);
}

/* Tells the owner, once, that the stream goes on without it. */
static void stream_orphan(struct stream *st)
{
    stream_gone_fn gone = st->gone;

    st->gone = NULL;
    if (gone)
        gone(st->data);
}

static void stream_resume(struct stream *st)
{
    if (!st->suspended || !st->req)
        return;
    st->suspended = false;
    request_resume_soon(st->req);
}

static ssize_t on_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    size_t n = st->len - st->off;

    (void)pos;
    if (n == 0) {
        if (st->broken)
            return MHD_CONTENT_READER_END_WITH_ERROR; /* no last chunk: the client sees a cut */
        if (st->ended || !st->req)
            return MHD_CONTENT_READER_END_OF_STREAM;
        st->suspended = true;
        MHD_suspend_connection(request_connection(st->req));
        return 0;
    }
    if (n > max)
        n = max;
    memcpy(buf, st->buf + st->off, n);
    st->off += n;
    if (st->req)
        request_moved(st->req, n);
    if (st->off == st->len) {
        /* Drained: give a large buffer back rather than keep it per idle client. */
        st->off = st->len = 0;
        if (st->size > STREAM_BLOCK) {
            free(st->buf);
            st->buf = NULL;
            st->size = 0;
        }
        if (st->refused && st->drained && st->gone) {
            /* The writer waits for room: it may write now (into the emptied buffer). */
            st->refused = false;
            st->drained(st->data);
        }
    }
    return (ssize_t)n;
}

static void on_free(void *cls)
{
    struct stream *st = cls;

    st->response = false;
    stream_orphan(st);
    stream_release_if_done(st);
}

/* The kernel's autotuned send buffer would hide megabytes of lag from the cap; and a
 * quiet stream (a log with nothing new) sends nothing, so TCP keepalive finds a client
 * that vanished without closing (the sweep then sees the error). */
static void stream_socket_options(int fd)
{
    int sndbuf = STREAM_SNDBUF, on = 1, idle = STREAM_KEEPIDLE_S, intvl = STREAM_KEEPINTVL_S,
        cnt = STREAM_KEEPCNT;

    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
}

struct stream *request_stream(struct request *req, unsigned status, const char *type,
                              const char *const *headers, size_t cap, stream_gone_fn gone,
                              void *data)
{
    struct stream_options o = {.status = status,
                               .type = type,
                               .headers = headers,
                               .length = MHD_SIZE_UNKNOWN,
                               .no_cache = true,
                               .long_lived = true,
                               .cap = cap,
                               .gone = gone,
                               .data = data};

    return request_stream_with(req, &o);
}

struct stream *request_stream_with(struct request *req, const struct stream_options *o)
{
    struct stream *st = xcalloc(1, sizeof(*st));
    const union MHD_ConnectionInfo *info;
    struct MHD_Response *resp;
    size_t block;

    st->cap = o->cap;
    st->response = true;
    /* libmicrohttpd allocates (and zeroes) the block with the response: no more than the
     * body needs. */
    if (o->length == MHD_SIZE_UNKNOWN)
        block = STREAM_BLOCK;
    else
        block = o->length == 0                  ? 1
                : o->length < STREAM_BULK_BLOCK ? (size_t)o->length
                                                : STREAM_BULK_BLOCK;
    resp = MHD_create_response_from_callback(o->length, block, on_read, st, on_free);
    if (!resp)
        fatal("out of memory (response)");
    if (o->type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, o->type);
    if (o->no_cache)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    for (size_t i = 0; o->headers && o->headers[i] && o->headers[i + 1]; i += 2)
        MHD_add_response_header(resp, o->headers[i], o->headers[i + 1]);
    st->req = req;
    if (!request_queue_stream(req, o->status, resp, st)) {
        st->req = NULL;
        MHD_destroy_response(resp); /* frees st through on_free */
        return NULL;
    }
    info = o->long_lived
               ? MHD_get_connection_info(request_connection(req), MHD_CONNECTION_INFO_CONNECTION_FD)
               : NULL;
    if (info)
        stream_socket_options(info->connect_fd);
    /* No idle timeout while it streams: an idle stream is suspended, not stuck (but while
     * the request's body still comes, a client that stalls is: then at its end). */
    if (!request_body_pending(req))
        MHD_set_connection_option(request_connection(req), MHD_CONNECTION_OPTION_TIMEOUT, 0U);
    st->gone = o->gone;
    st->drained = o->drained;
    st->data = o->data;
    return st;
}

/* Room for len more bytes, or false past the cap. */
static bool stream_reserve(struct stream *st, size_t len, bool past_cap)
{
    size_t unread = st->len - st->off;

    if (!past_cap && unread + len > st->cap)
        return false;
    if (st->off > 0 && st->len + len > st->size) {
        memmove(st->buf, st->buf + st->off, unread);
        st->off = 0;
        st->len = unread;
    }
    if (st->len + len > st->size) {
        size_t size = st->size ? st->size : STREAM_BLOCK;
        while (size < st->len + len)
            size *= 2;
        st->buf = xrealloc(st->buf, size);
        st->size = size;
    }
    return true;
}

/* Appends len bytes unless they would take the unread bytes past the cap (past_cap: even
 * then); false when nothing was appended. */
static bool stream_put(struct stream *st, const void *buf, size_t len, bool past_cap)
{
    if (st->ended)
        fatal("stream written after its end");
    if (len == 0)
        return true;
    if (!st->req)
        return false;
    if (!stream_reserve(st, len, past_cap)) {
        st->refused = true;
        return false;
    }
    memcpy(st->buf + st->len, buf, len);
    st->len += len;
    stream_resume(st);
    return true;
}

bool stream_write(struct stream *st, const void *buf, size_t len)
{
    return stream_put(st, buf, len, false);
}

void stream_write_all(struct stream *st, const void *buf, size_t len)
{
    stream_put(st, buf, len, true);
}

size_t stream_unread(const struct stream *st)
{
    return st->len - st->off;
}

/* Ends the body; a client that does not read the rest gets the usual idle timeout. */
static void stream_finish(struct stream *st)
{
    st->ended = true;
    if (!st->req)
        return;
    MHD_set_connection_option(request_connection(st->req), MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)SERVER_STREAM_END_TIMEOUT_S);
    stream_resume(st);
}

void stream_end(struct stream *st, const void *last, size_t len)
{
    if (st->ended)
        fatal("stream ended twice");
    st->gone = NULL;
    if (last)
        stream_put(st, last, len, true);
    stream_finish(st);
}

void stream_abort(struct stream *st)
{
    if (st->ended)
        fatal("stream ended twice");
    st->gone = NULL;
    st->broken = true;
    stream_finish(st);
}

void stream_request_done(struct stream *st)
{
    st->req = NULL;
    st->suspended = false;
    stream_orphan(st);
    stream_release_if_done(st);
}

void stream_quiesce(struct stream *st)
{
    if (st->ended)
        return;
    stream_orphan(st);
    if (!st->ended) /* the owner may have ended it as it heard */
        stream_finish(st);
}
