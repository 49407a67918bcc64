/* HTTP/1.1 requests to the services on this host over kept connections: see upstream.h.
 *
 * A connection (struct conn) owns its libuv handles: the TCP stream, always read once
 * connected, and a timer (the connect deadline; then the call's read timeout, if it has
 * one, while it reads; an end put off to the next loop pass; then the idle expiry). A call
 * (struct upstream_call) owns the request's bytes and the answer's parser; it sits on one
 * connection at a time, two when its kept connection broke and it is sent again. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "lib/alloc.h"
#include "lib/upstream.h"

#define PIECE_ROOM 16 /* before a streamed body's piece: its chunk size line */

struct conn {
    struct upstreams *u;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect;
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    struct upstream_call *call;         /* NULL while idle */
    struct conn *next, *prev;           /* every open connection of the pool */
    struct conn *next_idle, *prev_idle; /* the idle ones, the last used first */
    char *piece;                        /* a streamed body's piece on its way */
    unsigned open_handles;
    bool connected, idle, closing, reused, reading;
};

/* One write in flight: its request and its connection. The bytes are the call's out or
 * the connection's piece; a call that ends with a write still queued closes the
 * connection, so they are never read after they are freed. */
struct wreq {
    uv_write_t req;
    struct conn *conn;
};

struct upstreams {
    uv_loop_t *loop;
    struct conn *conns;
    struct conn *idle_head, *idle_tail;
    unsigned n_idle;
    bool closing;
    char scratch[UPSTREAM_READ_MAX]; /* every read lands here and is parsed at once */
};

struct upstream_call {
    struct upstreams *u;
    struct conn *conn;
    const struct upstream_events *ev;
    void *data;
    char ip[INET6_ADDRSTRLEN];
    unsigned port;
    uint64_t connect_timeout_ms;
    uint64_t read_timeout_ms; /* upstream_set_read_timeout (0: none) */
    char *out;                /* the request's head, and its body when it goes whole */
    size_t out_len;
    bool streamed, chunked, head_only;
    bool idempotent;      /* may go twice (RFC 9110 9.2.2): not POST, PATCH or LOCK, as nginx */
    struct wreq *writing; /* a write of a streamed call's, until its callback */
    bool upload_paused, upload_done;
    bool pulled; /* a piece of the streamed body was taken: the call cannot go again */
    /* The answer. */
    http_parser parser;
    char *head; /* its header lines, "Name: value" each NUL-terminated */
    size_t head_len, head_size;
    uint32_t line_at[UPSTREAM_LINES_MAX]; /* offsets in head (UPSTREAM_HEAD_MAX at most) */
    size_t n_lines;
    bool in_value, head_over;
    char *held; /* body bytes offered and refused (UPSTREAM_PAUSE): offered again */
    size_t held_len, held_size;
    bool head_told, got_bytes, complete, keep_alive, stray, recv_paused, aborted, retried;
    bool ending; /* an end is put off to the next loop pass: nothing more goes on */
    /* An end put off to the next loop pass (upstream_end_soon). */
    enum upstream_failure end_failure;
    char end_error[192]; /* under 1 KiB in all: a small-bin allocation */
};

static void conn_close(struct conn *c);
static void call_end(struct upstream_call *call, enum upstream_failure failure, const char *fmt,
                     ...) __attribute__((format(printf, 3, 4)));

/* --- connections -------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    if (--c->open_handles > 0)
        return;
    free(c->piece);
    free(c);
}

static void idle_unlink(struct conn *c)
{
    struct upstreams *u = c->u;

    if (!c->idle)
        return;
    if (c->prev_idle)
        c->prev_idle->next_idle = c->next_idle;
    else
        u->idle_head = c->next_idle;
    if (c->next_idle)
        c->next_idle->prev_idle = c->prev_idle;
    else
        u->idle_tail = c->prev_idle;
    c->next_idle = c->prev_idle = NULL;
    c->idle = false;
    u->n_idle--;
}

static void conn_close(struct conn *c)
{
    struct upstreams *u = c->u;

    if (c->closing)
        return;
    c->closing = true;
    idle_unlink(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        u->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->call = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_idle_expired(uv_timer_t *t)
{
    conn_close(t->data);
}

/* The call on c is over and c may carry the next one. */
static void conn_idle(struct conn *c)
{
    struct upstreams *u = c->u;

    c->call = NULL;
    c->idle = true;
    c->prev_idle = NULL;
    c->next_idle = u->idle_head;
    if (u->idle_head)
        u->idle_head->prev_idle = c;
    else
        u->idle_tail = c;
    u->idle_head = c;
    u->n_idle++;
    uv_timer_start(&c->timer, on_idle_expired, UPSTREAM_IDLE_MS, 0);
    if (u->n_idle > UPSTREAM_KEEP)
        conn_close(u->idle_tail);
}

/* An idle connection to ip and port, taken out of the idle list, or NULL. */
static struct conn *conn_take(struct upstreams *u, const char *ip, unsigned port)
{
    for (struct conn *c = u->idle_head; c; c = c->next_idle)
        if (c->port == port && strcmp(c->ip, ip) == 0) {
            idle_unlink(c);
            uv_timer_stop(&c->timer);
            c->reused = true;
            return c;
        }
    return NULL;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;

    *buf = uv_buf_init(c->u->scratch, sizeof(c->u->scratch));
}

static void call_feed(struct upstream_call *call, const char *data, size_t len);
static void call_eof(struct upstream_call *call, ssize_t status);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (nread == 0)
        return;
    if (!c->call) {
        conn_close(c); /* idle, and closed by its service or sent what nobody asked */
        return;
    }
    if (nread < 0)
        call_eof(c->call, nread);
    else
        call_feed(c->call, buf->base, (size_t)nread);
}

/* Reads c, or stops (a paused answer's connection, until the owner takes more). */
static void conn_read(struct conn *c, bool on)
{
    if (on == c->reading)
        return;
    c->reading = on;
    if (on)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    else
        uv_read_stop((uv_stream_t *)&c->tcp);
}

static void call_send(struct upstream_call *call);

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct upstream_call *call = c->call;

    if (c->closing)
        return;
    uv_timer_stop(&c->timer);
    if (status < 0) {
        call_end(call, UPSTREAM_REFUSED, "cannot connect to %s port %u: %s", c->ip, c->port,
                 uv_strerror(status));
        return;
    }
    c->connected = true;
    conn_read(c, true);
    call_send(call);
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct upstream_call *call = c->call;

    call_end(call, UPSTREAM_TIMED_OUT, "no connection to %s port %u within %" PRIu64 " ms", c->ip,
             c->port, call->connect_timeout_ms);
}

/* A new connection for call, on its way; false when it cannot even begin (err says why). */
static bool conn_open(struct upstream_call *call, char *err, size_t err_size)
{
    struct upstreams *u = call->u;
    struct conn *c = xcalloc(1, sizeof(*c));
    struct sockaddr_storage addr;
    int r;

    c->u = u;
    snprintf(c->ip, sizeof(c->ip), "%s", call->ip);
    c->port = call->port;
    uv_tcp_init(u->loop, &c->tcp);
    uv_timer_init(u->loop, &c->timer);
    c->tcp.data = c->timer.data = c->connect.data = c;
    c->open_handles = 2;
    c->next = u->conns;
    if (u->conns)
        u->conns->prev = c;
    u->conns = c;
    c->call = call;
    call->conn = c;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_ip4_addr(c->ip, (int)c->port, (struct sockaddr_in *)&addr) != 0 &&
        uv_ip6_addr(c->ip, (int)c->port, (struct sockaddr_in6 *)&addr) != 0) {
        snprintf(err, err_size, "%s is not an IP address", c->ip);
        return false;
    }
    r = uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&addr, on_connect);
    if (r < 0) {
        snprintf(err, err_size, "cannot connect to %s port %u: %s", c->ip, c->port, uv_strerror(r));
        return false;
    }
    uv_timer_start(&c->timer, on_connect_timeout, call->connect_timeout_ms, 0);
    return true;
}

/* --- the end of a call ---------------------------------------------------------------- */

static void call_free(struct upstream_call *call)
{
    free(call->out);
    free(call->head);
    free(call->held);
    free(call);
}

/* Whether the connection can carry another call: the answer came whole and alone, the
 * service keeps it, and every byte of the request went. */
static bool call_leaves_conn_clean(const struct upstream_call *call, const struct conn *c)
{
    return call->keep_alive && !call->stray && !call->recv_paused &&
           (!call->streamed || call->upload_done) && !call->writing && c->tcp.write_queue_size == 0;
}

/* The call is over: its connection kept or closed, then its owner told. */
static void call_end(struct upstream_call *call, enum upstream_failure failure, const char *fmt,
                     ...)
{
    struct conn *c = call->conn;
    const struct upstream_events *ev = call->ev;
    void *data = call->data;
    struct upstream_result res = {.failure = failure};
    char error[512];
    va_list ap;

    if (failure != UPSTREAM_OK) {
        va_start(ap, fmt);
        vsnprintf(error, sizeof(error), fmt, ap);
        va_end(ap);
        res.error = error;
    }
    if (c) {
        if (failure == UPSTREAM_OK && call_leaves_conn_clean(call, c))
            conn_idle(c);
        else
            conn_close(c);
    }
    call_free(call);
    ev->done(data, &res);
}

static void on_end_soon(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct upstream_call *call = c->call;

    if (call)
        call_end(call, call->end_failure, "%s", call->end_error);
}

/* Ends the call on the next loop pass: for the paths that must not call done at once. */
static void call_end_soon(struct upstream_call *call, enum upstream_failure failure,
                          const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void call_end_soon(struct upstream_call *call, enum upstream_failure failure,
                          const char *fmt, ...)
{
    va_list ap;

    call->ending = true;
    call->end_failure = failure;
    va_start(ap, fmt);
    vsnprintf(call->end_error, sizeof(call->end_error), fmt, ap);
    va_end(ap);
    uv_timer_start(&call->conn->timer, on_end_soon, 0, 0);
}

/* The kept connection broke before a byte of the answer came: the call goes again on a
 * new one (once, for a method that may go twice, and only while all of its body is at
 * hand: whole in call->out, or streamed and not a byte of it taken yet). */
static bool call_retry(struct upstream_call *call)
{
    struct conn *old = call->conn;
    char err[256];

    if (call->retried || call->got_bytes || call->pulled || !call->idempotent || !old ||
        !old->reused)
        return false;
    call->retried = true;
    call->writing = NULL; /* the old connection's write is cancelled with it */
    conn_close(old);
    call->conn = NULL;
    http_parser_init(&call->parser, HTTP_RESPONSE);
    call->parser.data = call;
    if (!conn_open(call, err, sizeof(err)))
        call_end_soon(call, UPSTREAM_REFUSED, "%s", err);
    return true;
}

/* --- the request ---------------------------------------------------------------------- */

static void upload_pump(struct upstream_call *call);

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->conn;
    struct upstream_call *call = c->closing ? NULL : c->call;
    bool mine = call && call->writing == w;

    free(w);
    if (!call)
        return;
    if (mine)
        call->writing = NULL;
    if (status < 0) {
        if (!call_retry(call))
            call_end(call, UPSTREAM_BROKEN, "cannot send the request to %s port %u: %s", c->ip,
                     c->port, uv_strerror(status));
        return;
    }
    if (mine)
        upload_pump(call);
}

/* Writes bufs on the call's connection; false (and the call ended soon) on failure. */
static bool call_write(struct upstream_call *call, const uv_buf_t *bufs, unsigned n)
{
    struct conn *c = call->conn;
    struct wreq *w = xmalloc(sizeof(*w));
    int r;

    w->conn = c;
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_written);
    if (r < 0) {
        free(w);
        call_end_soon(call, UPSTREAM_BROKEN, "cannot send the request to %s port %u: %s", c->ip,
                      c->port, uv_strerror(r));
        return false;
    }
    if (call->streamed)
        call->writing = w; /* the next piece waits for this one */
    return true;
}

/* The request's head (and whole body) goes. A request with its body in hand is tried
 * first with one plain write: what uv_write() writes at once still costs an epoll_ctl on
 * the next loop turn (libuv re-arms the socket once the write is done). What it cannot
 * write yet goes through uv_write(); a write that fails is a broken connection, as in
 * on_written(). */
static void call_send(struct upstream_call *call)
{
    struct conn *c = call->conn;
    uv_buf_t b = uv_buf_init(call->out, (unsigned)call->out_len);

    if (!call->streamed) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);

        if (n == (int)b.len)
            return;
        if (n < 0 && n != UV_EAGAIN) {
            if (!call_retry(call))
                call_end_soon(call, UPSTREAM_BROKEN, "cannot send the request to %s port %u: %s",
                              c->ip, c->port, uv_strerror(n));
            return;
        }
        if (n > 0)
            b = uv_buf_init(b.base + n, b.len - (unsigned)n);
    }
    call_write(call, &b, 1);
}

/* A streamed body, piece by piece as the owner has it, one write in flight at a time.
 * A chunk's size line goes into the room before its piece, its CR LF after, so that the
 * bytes of a write live in the connection until the write is over. */
static void upload_pump(struct upstream_call *call)
{
    static char last_chunk[] = "0\r\n\r\n";

    while (call->conn && call->conn->connected && !call->ending && !call->writing &&
           !call->upload_paused && !call->upload_done) {
        struct conn *c = call->conn;
        char *data, *start;
        size_t len;
        uv_buf_t b;
        ssize_t n;

        if (!c->piece)
            c->piece = xmalloc(PIECE_ROOM + UPSTREAM_PIECE_MAX + 2);
        data = c->piece + PIECE_ROOM;
        n = call->ev->upload(call->data, data, UPSTREAM_PIECE_MAX);
        if (n == UPSTREAM_UPLOAD_PAUSE) {
            call->upload_paused = true;
            return;
        }
        if (n < 0) {
            call_end_soon(call, UPSTREAM_BROKEN, "the request's body broke off");
            return;
        }
        call->pulled = true;
        if (n == 0) {
            call->upload_done = true;
            if (call->chunked) {
                b = uv_buf_init(last_chunk, sizeof(last_chunk) - 1);
                call_write(call, &b, 1);
            }
            return;
        }
        start = data;
        len = (size_t)n;
        if (call->chunked) {
            char line[PIECE_ROOM];
            int k = snprintf(line, sizeof(line), "%zx\r\n", (size_t)n);
            start = data - k;
            memcpy(start, line, (size_t)k);
            memcpy(data + n, "\r\n", 2);
            len += (size_t)k + 2;
        }
        b = uv_buf_init(start, (unsigned)len);
        if (!call_write(call, &b, 1))
            return;
    }
}

static char *put(char *at, const char *s, size_t len)
{
    memcpy(at, s, len);
    return at + len;
}

char *upstream_request_head(const char *method, const char *target, const char *ip, unsigned port,
                            const char *lines, size_t lines_len, const char *extra, size_t room,
                            size_t *len)
{
    bool v6 = strchr(ip, ':') != NULL;
    size_t method_len = strlen(method), target_len = strlen(target), ip_len = strlen(ip);
    size_t extra_len = extra ? strlen(extra) : 0;
    char port_text[16];
    int port_len = snprintf(port_text, sizeof(port_text), "%u", port);
    /* The fixed bytes: " ", " HTTP/1.1\r\nHost: ", "[]", ":" and two "\r\n", 25 in all. */
    char *head = xmalloc(method_len + target_len + ip_len + (size_t)port_len + lines_len +
                         extra_len + room + 25);
    char *at = head;

    at = put(at, method, method_len);
    at = put(at, " ", 1);
    at = put(at, target, target_len);
    at = put(at, " HTTP/1.1\r\nHost: ", 17);
    at = put(at, "[", v6);
    at = put(at, ip, ip_len);
    at = put(at, "]", v6);
    at = put(at, ":", 1);
    at = put(at, port_text, (size_t)port_len);
    at = put(at, "\r\n", 2);
    if (lines_len > 0)
        at = put(at, lines, lines_len);
    if (extra_len > 0)
        at = put(at, extra, extra_len);
    at = put(at, "\r\n", 2);
    *len = (size_t)(at - head);
    return head;
}

/* The request's head (the framing set here), then its body when it goes whole. */
static void request_build(struct upstream_call *call, const struct upstream_request *req)
{
    char framing[64] = "";
    size_t body_len = !req->streamed && req->body ? req->body_len : 0;

    if (req->streamed && req->body_length >= 0)
        snprintf(framing, sizeof(framing), "Content-Length: %" PRId64 "\r\n", req->body_length);
    else if (req->streamed)
        snprintf(framing, sizeof(framing), "Transfer-Encoding: chunked\r\n");
    else if (req->body)
        snprintf(framing, sizeof(framing), "Content-Length: %zu\r\n", req->body_len);
    call->out = upstream_request_head(req->method, req->target, req->ip, req->port, req->headers,
                                      req->headers_len, framing, body_len, &call->out_len);
    if (body_len > 0) {
        memcpy(call->out + call->out_len, req->body, body_len);
        call->out_len += body_len;
    }
}

/* --- the answer ----------------------------------------------------------------------- */

static bool head_append(struct upstream_call *call, const char *at, size_t len)
{
    if (call->head_len + len + 1 > UPSTREAM_HEAD_MAX) {
        call->head_over = true;
        return false;
    }
    if (call->head_len + len + 1 > call->head_size) {
        size_t size = call->head_size ? call->head_size : 1024;
        while (size < call->head_len + len + 1)
            size *= 2;
        call->head = xrealloc(call->head, size);
        call->head_size = size;
    }
    memcpy(call->head + call->head_len, at, len);
    call->head_len += len;
    return true;
}

static int on_message_begin(http_parser *p)
{
    struct upstream_call *call = p->data;

    call->head_len = 0;
    call->n_lines = 0;
    call->in_value = false;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct upstream_call *call = p->data;

    if (call->head_told)
        return 0; /* a chunked answer's trailers: not passed on */
    if (call->in_value || call->n_lines == 0) {
        if (call->n_lines == UPSTREAM_LINES_MAX) {
            call->head_over = true;
            return -1;
        }
        if (call->n_lines > 0 && !head_append(call, "", 1))
            return -1;
        call->line_at[call->n_lines++] = (uint32_t)call->head_len;
        call->in_value = false;
    }
    return head_append(call, at, len) ? 0 : -1;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct upstream_call *call = p->data;

    if (call->head_told)
        return 0;
    if (!call->in_value) {
        call->in_value = true;
        if (!head_append(call, ": ", 2))
            return -1;
    }
    return head_append(call, at, len) ? 0 : -1;
}

static int on_headers_complete(http_parser *p)
{
    struct upstream_call *call = p->data;
    char *lines[UPSTREAM_LINES_MAX];
    int64_t length = -1;

    if (p->status_code == 101)
        return -1; /* no upgrade was asked for */
    if (p->status_code < 200)
        return 0; /* 100 Continue and the like: the real answer follows */
    if (call->n_lines > 0 && !head_append(call, "", 1))
        return -1;
    for (size_t i = 0; i < call->n_lines; i++)
        lines[i] = call->head + call->line_at[i];
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX)
        length = (int64_t)p->content_length;
    call->head_told = true;
    if (call->ev->head(call->data, p->status_code, lines, call->n_lines, length) !=
        UPSTREAM_TAKEN) {
        call->aborted = true;
        return -1;
    }
    /* 1: no body, whatever the head says (RFC 9110 6.4.1; http-parser would wait for a
     * 304's Content-Length) */
    return call->head_only || p->status_code == 204 || p->status_code == 304 ? 1 : 0;
}

static void held_append(struct upstream_call *call, const char *at, size_t len)
{
    if (call->held_len + len > call->held_size) {
        size_t size = call->held_size ? call->held_size : 16 * 1024;
        while (size < call->held_len + len)
            size *= 2;
        call->held = xrealloc(call->held, size);
        call->held_size = size;
    }
    memcpy(call->held + call->held_len, at, len);
    call->held_len += len;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct upstream_call *call = p->data;

    if (!call->head_told)
        return 0;
    if (call->recv_paused) {
        held_append(call, at, len); /* the rest of this read: the next ones wait */
        return 0;
    }
    switch (call->ev->body(call->data, at, len)) {
    case UPSTREAM_TAKEN:
        return 0;
    case UPSTREAM_PAUSE:
        held_append(call, at, len);
        call->recv_paused = true;
        return 0;
    case UPSTREAM_ABORT:
        break;
    }
    call->aborted = true;
    return -1;
}

static int on_message_complete(http_parser *p)
{
    struct upstream_call *call = p->data;

    if (!call->head_told)
        return 0; /* an interim answer's end */
    call->complete = true;
    call->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1); /* what follows is not this answer's */
    return 0;
}

static const http_parser_settings answer = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* The service sent nothing for the call's read timeout while it read. */
static void on_read_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    struct upstream_call *call = c->call;

    if (call && call->read_timeout_ms) /* set to 0 since: none after all */
        call_end(call, UPSTREAM_TIMED_OUT, "%s port %u sent nothing for %" PRIu64 " ms", c->ip,
                 c->port, call->read_timeout_ms);
}

/* The read timeout (if any) runs anew while the call reads, and not while it is paused. */
static void call_watch_reads(struct upstream_call *call)
{
    if (!call->read_timeout_ms || !call->conn || !call->conn->connected || call->ending)
        return;
    if (call->recv_paused)
        uv_timer_stop(&call->conn->timer);
    else
        uv_timer_start(&call->conn->timer, on_read_timeout, call->read_timeout_ms, 0);
}

/* After the parser ran: the call ends, waits for its owner, or reads on. */
static void call_parsed(struct upstream_call *call, size_t parsed, size_t len)
{
    enum http_errno err = HTTP_PARSER_ERRNO(&call->parser);
    struct conn *c = call->conn;

    if (call->aborted) {
        call_end(call, UPSTREAM_BROKEN, "the answer was not wanted any more");
        return;
    }
    if (call->head_over) {
        call_end(call, UPSTREAM_BROKEN, "%s port %u answered a head over %d bytes or %d lines",
                 c->ip, c->port, UPSTREAM_HEAD_MAX, UPSTREAM_LINES_MAX);
        return;
    }
    if (err != HPE_OK && err != HPE_PAUSED) {
        call_end(call, UPSTREAM_BROKEN, "%s port %u did not answer in HTTP (%s)", c->ip, c->port,
                 http_errno_description(err));
        return;
    }
    if (call->complete) {
        call->stray = call->stray || parsed < len;
        if (!call->recv_paused) {
            call_end(call, UPSTREAM_OK, NULL);
            return;
        }
    }
    if (call->recv_paused)
        conn_read(c, false); /* until upstream_resume() */
    call_watch_reads(call);
}

static void call_feed(struct upstream_call *call, const char *data, size_t len)
{
    size_t parsed;

    call->got_bytes = true;
    parsed = http_parser_execute(&call->parser, &answer, data, len);
    call_parsed(call, parsed, len);
}

static void call_eof(struct upstream_call *call, ssize_t status)
{
    struct conn *c = call->conn;

    if (status == UV_EOF && call->got_bytes) {
        /* The end of an answer that ends with its connection, or of a cut one. */
        http_parser_execute(&call->parser, &answer, NULL, 0);
        call->keep_alive = false;
        if (call->complete || call->aborted) {
            call_parsed(call, 0, 0);
            return;
        }
    }
    if (call_retry(call))
        return;
    if (!call->got_bytes)
        call_end(call, UPSTREAM_BROKEN, "%s port %u closed the connection without answering (%s)",
                 c->ip, c->port, uv_strerror((int)status));
    else
        call_end(call, UPSTREAM_BROKEN, "%s port %u broke off its answer (%s)", c->ip, c->port,
                 uv_strerror((int)status));
}

/* --- the API ---------------------------------------------------------------------------- */

int upstreams_new(uv_loop_t *loop, struct upstreams **ret)
{
    struct upstreams *u = xcalloc(1, sizeof(*u));

    u->loop = loop;
    *ret = u;
    return 0;
}

void upstreams_free(struct upstreams *u)
{
    if (!u)
        return;
    u->closing = true;
    while (u->conns) {
        struct conn *c = u->conns;
        if (c->call)
            call_free(c->call);
        conn_close(c);
    }
    free(u);
}

int upstream_call(struct upstreams *u, const struct upstream_request *req,
                  const struct upstream_events *ev, void *data, struct upstream_call **ret)
{
    struct upstream_call *call;
    struct conn *c;
    char err[256];

    if (u->closing)
        return -ECANCELED;
    call = xcalloc(1, sizeof(*call));
    call->u = u;
    call->ev = ev;
    call->data = data;
    snprintf(call->ip, sizeof(call->ip), "%s", req->ip);
    call->port = req->port;
    call->connect_timeout_ms =
        req->connect_timeout_ms ? req->connect_timeout_ms : UPSTREAM_CONNECT_MS;
    call->streamed = req->streamed;
    call->chunked = req->streamed && req->body_length < 0;
    call->head_only = strcmp(req->method, "HEAD") == 0;
    call->idempotent = strcmp(req->method, "POST") != 0 && strcmp(req->method, "PATCH") != 0 &&
                       strcmp(req->method, "LOCK") != 0;
    http_parser_init(&call->parser, HTTP_RESPONSE);
    call->parser.data = call;
    request_build(call, req);
    if (ret)
        *ret = call;
    c = conn_take(u, call->ip, call->port);
    if (c) {
        c->call = call;
        call->conn = c;
        call_send(call);
    } else if (!conn_open(call, err, sizeof(err))) {
        call_end_soon(call, UPSTREAM_REFUSED, "%s", err);
    }
    return 0;
}

void upstream_resume(struct upstream_call *call)
{
    if (!call || !call->recv_paused || !call->conn || call->ending)
        return;
    switch (call->ev->body(call->data, call->held, call->held_len)) {
    case UPSTREAM_TAKEN:
        call->held_len = 0;
        call->recv_paused = false;
        conn_read(call->conn, true);
        if (call->complete)
            call_end_soon(call, UPSTREAM_OK, "%s", "");
        else
            call_watch_reads(call);
        return;
    case UPSTREAM_PAUSE:
        return;
    case UPSTREAM_ABORT:
        break;
    }
    call->aborted = true;
    call->recv_paused = false;
    call->held_len = 0;
    call_end_soon(call, UPSTREAM_BROKEN, "the answer was not wanted any more");
}

void upstream_set_read_timeout(struct upstream_call *call, uint64_t ms)
{
    call->read_timeout_ms = ms;
    if (ms)
        call_watch_reads(call);
}

void upstream_resume_upload(struct upstream_call *call)
{
    if (!call || !call->upload_paused || call->ending)
        return;
    call->upload_paused = false;
    upload_pump(call);
}

void upstream_cancel(struct upstream_call *call)
{
    if (!call)
        return;
    if (call->conn)
        conn_close(call->conn); /* mid-call: its bytes cannot be trusted for another */
    call_free(call);
}

unsigned upstreams_idle(const struct upstreams *u)
{
    return u->n_idle;
}
