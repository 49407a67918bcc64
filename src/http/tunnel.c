/* A protocol upgrade passed through to a service: see tunnel.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <http_parser.h>
#include <microhttpd.h>

#include "http/tunnel.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define TUNNEL_HEAD_MAX  (32 * 1024) /* the service's answer head, at most */
#define TUNNEL_LINES_MAX 128         /* its header lines, at most */

/* RFC 9110 7.6.1: for one connection; libmicrohttpd writes its own Connection. */
static const char *const hop_by_hop[] = {
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Content-Length",
    "Date",
    NULL,
};

struct tunnel {
    uv_loop_t *loop;
    struct request *req; /* until answered (or the caller took it back) */
    const struct tunnel_events *ev;
    void *data;
    uv_tcp_t up; /* the service */
    uv_connect_t connect;
    uv_write_t write; /* one write to the service at a time */
    uv_timer_t timer; /* the connect's, then the answer head's deadline */
    uv_poll_t poll;   /* the client's connection, once handed over */
    bool poll_open;
    unsigned open_handles; /* closed one by one; the last frees the tunnel */
    /* The request head, then the service's answer head. */
    char *head;
    http_parser parser;
    char *names[TUNNEL_LINES_MAX], *values[TUNNEL_LINES_MAX];
    size_t n_lines, head_bytes;
    bool in_value, head_done, failed;
    /* After the 101. */
    struct upgraded *u;
    int fd;
    char *extra; /* what the service sent past its head, for the client first */
    size_t extra_len;
    char to_up[TUNNEL_BUFFER]; /* client to service: one write at a time */
    size_t to_up_len;
    bool up_writing;
    char to_client[TUNNEL_BUFFER]; /* service to client: what the client did not take yet */
    size_t tc_len, tc_off;
    char scratch[TUNNEL_BUFFER];
    bool up_eof, client_eof, closing, told;
    bool silent; /* it never began: closed() is not called */
};

static void tunnel_finish(struct tunnel *t);

static void on_handle_closed(uv_handle_t *h)
{
    struct tunnel *t = h->data;

    if (--t->open_handles > 0)
        return;
    if (!t->silent)
        t->ev->closed(t->data);
    for (size_t i = 0; i < t->n_lines; i++) {
        free(t->names[i]);
        free(t->values[i]);
    }
    free(t->head);
    free(t->extra);
    free(t);
}

/* Tells the caller there is no upgrade, once, and ends. */
static void tunnel_refuse(struct tunnel *t, unsigned status, enum upstream_failure failure,
                          const char *message)
{
    if (!t->told && t->req) {
        t->told = true;
        t->req = NULL;
        t->ev->refused(t->data, status, failure, message);
    }
    tunnel_finish(t);
}

/* --- the service's answer head ------------------------------------------------------- */

static char *append(char *s, const char *at, size_t len)
{
    size_t old = s ? strlen(s) : 0;

    s = xrealloc(s, old + len + 1);
    memcpy(s + old, at, len);
    s[old + len] = '\0';
    return s;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    struct tunnel *t = p->data;

    if (t->in_value || t->n_lines == 0) {
        if (t->n_lines == TUNNEL_LINES_MAX)
            return 1;
        t->names[t->n_lines] = t->values[t->n_lines] = NULL;
        t->n_lines++;
        t->in_value = false;
    }
    t->names[t->n_lines - 1] = append(t->names[t->n_lines - 1], at, len);
    return 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    struct tunnel *t = p->data;

    t->in_value = true;
    t->values[t->n_lines - 1] = append(t->values[t->n_lines - 1], at, len);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct tunnel *t = p->data;

    t->head_done = true;
    return 0;
}

static const http_parser_settings answer_head = {
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
};

static bool is_hop_by_hop(const char *name)
{
    for (size_t i = 0; hop_by_hop[i]; i++)
        if (strcasecmp(hop_by_hop[i], name) == 0)
            return true;
    return false;
}

static void on_client_upgraded(void *data, struct upgraded *u, int fd, const char *extra, size_t n);
static void on_client_ended(void *data);

static const struct request_upgrade_events client_events = {on_client_upgraded, on_client_ended};

/* The service said 101: so is the client told, with the service's headers, when they fit
 * where libmicrohttpd builds the answer's head (else it would close the connection without
 * a word: refused instead, saying why). */
static void tunnel_answer(struct tunnel *t)
{
    const char *headers[2 * TUNNEL_LINES_MAX + 1];
    size_t k = 0, head, room;
    struct request *req = t->req;

    for (size_t i = 0; i < t->n_lines; i++)
        if (t->names[i] && t->values[i] && !is_hop_by_hop(t->names[i])) {
            headers[k++] = t->names[i];
            headers[k++] = t->values[i];
        }
    headers[k] = NULL;
    if (!request_answer_head_fits(req, headers, &head, &room)) {
        char message[256];

        snprintf(message, sizeof(message),
                 "the service's 101 carries %zu bytes of headers; with this request's own, the "
                 "daemon can pass at most %zu (libmicrohttpd builds both in one %d-byte buffer "
                 "a connection)",
                 head, room, SERVER_HEADER_MEMORY);
        tunnel_refuse(t, 0, UPSTREAM_BROKEN, message);
        return;
    }
    uv_timer_stop(&t->timer);
    t->req = NULL;
    t->told = true;
    t->ev->answered(t->data);
    request_reply_upgrade(req, headers, &client_events, t);
}

/* --- bytes both ways ------------------------------------------------------------------ */

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches the client for what the tunnel can take now: reading while nothing waits to go
 * to the service, writing while something waits for the client. */
static void client_watch(struct tunnel *t)
{
    int events = 0;

    if (!t->poll_open || t->closing)
        return;
    if (!t->up_writing && !t->client_eof)
        events |= UV_READABLE;
    if (t->tc_off < t->tc_len)
        events |= UV_WRITABLE;
    if (events)
        uv_poll_start(&t->poll, events, on_poll);
    else
        uv_poll_stop(&t->poll);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct tunnel *t = h->data;

    *buf = uv_buf_init(t->scratch, sizeof(t->scratch));
}

/* Sends what waits for the client; true when all of it went. */
static bool client_flush(struct tunnel *t)
{
    while (t->tc_off < t->tc_len) {
        ssize_t n = send(t->fd, t->to_client + t->tc_off, t->tc_len - t->tc_off, MSG_NOSIGNAL);

        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        if (n <= 0) {
            t->client_eof = true;
            return false;
        }
        t->tc_off += (size_t)n;
    }
    t->tc_off = t->tc_len = 0;
    return true;
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Bytes from the service for the client: sent at once, what does not go waits and the
 * service is not read meanwhile. */
static void to_client(struct tunnel *t, const char *data, size_t len)
{
    memcpy(t->to_client + t->tc_len, data, len);
    t->tc_len += len;
    if (!client_flush(t)) {
        if (t->client_eof) {
            tunnel_finish(t);
            return;
        }
        uv_read_stop((uv_stream_t *)&t->up);
    }
    client_watch(t);
}

static void on_up_written(uv_write_t *w, int status)
{
    struct tunnel *t = w->data;

    t->up_writing = false;
    t->to_up_len = 0;
    if (status < 0 || t->client_eof) {
        tunnel_finish(t);
        return;
    }
    client_watch(t);
}

static void to_up(struct tunnel *t, const char *data, size_t len)
{
    uv_buf_t b;

    memcpy(t->to_up, data, len);
    t->to_up_len = len;
    b = uv_buf_init(t->to_up, (unsigned)len);
    t->write.data = t;
    if (uv_write(&t->write, (uv_stream_t *)&t->up, &b, 1, on_up_written) < 0) {
        tunnel_finish(t);
        return;
    }
    t->up_writing = true;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct tunnel *t = h->data;

    if (status < 0) {
        tunnel_finish(t);
        return;
    }
    if ((events & UV_WRITABLE) && client_flush(t) && !t->closing) {
        if (t->up_eof) {
            tunnel_finish(t);
            return;
        }
        uv_read_start((uv_stream_t *)&t->up, on_alloc, on_up_read);
    } else if (t->client_eof) {
        tunnel_finish(t);
        return;
    }
    if ((events & UV_READABLE) && !t->up_writing) {
        ssize_t n = recv(t->fd, t->scratch, sizeof(t->scratch), 0);

        if (n > 0) {
            to_up(t, t->scratch, (size_t)n);
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            t->client_eof = true;
            if (!t->up_writing) {
                tunnel_finish(t);
                return;
            }
        }
    }
    client_watch(t);
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tunnel *t = s->data;
    size_t parsed;

    if (nread == 0)
        return;
    if (nread < 0) {
        if (!t->head_done) {
            tunnel_refuse(t, 0, UPSTREAM_BROKEN,
                          "the service closed the connection before answering");
            return;
        }
        t->up_eof = true;
        if (t->tc_off == t->tc_len) /* nothing waits for the client: it is over */
            tunnel_finish(t);
        return;
    }
    if (t->u) {
        to_client(t, buf->base, (size_t)nread);
        return;
    }
    t->head_bytes += (size_t)nread;
    parsed = http_parser_execute(&t->parser, &answer_head, buf->base, (size_t)nread);
    if (!t->head_done && (HTTP_PARSER_ERRNO(&t->parser) != HPE_OK ||
                          t->head_bytes > TUNNEL_HEAD_MAX || t->n_lines == TUNNEL_LINES_MAX)) {
        tunnel_refuse(t, 0, UPSTREAM_BROKEN,
                      "the service's answer is not HTTP, or its head is too large");
        return;
    }
    if (!t->head_done)
        return;
    uv_read_stop(s);
    if (t->parser.status_code != 101 || !t->parser.upgrade) {
        char message[160];

        snprintf(message, sizeof(message), "the service answered the upgrade with %u, not 101",
                 t->parser.status_code);
        tunnel_refuse(t, t->parser.status_code, UPSTREAM_OK, message);
        return;
    }
    if (parsed < (size_t)nread) {
        t->extra_len = (size_t)nread - parsed;
        t->extra = xmalloc(t->extra_len);
        memcpy(t->extra, buf->base + parsed, t->extra_len);
    }
    tunnel_answer(t);
}

/* The client has the 101 and its connection is the tunnel's: both ways begin. */
static void on_client_upgraded(void *data, struct upgraded *u, int fd, const char *extra, size_t n)
{
    struct tunnel *t = data;
    int one = 1;

    t->u = u;
    t->fd = fd;
    /* Messages go on as they come, both ways (so does nginx for an upgraded connection):
     * with Nagle's algorithm, the second piece of a message waits for the peer's delayed
     * acknowledgement of the first, up to 40 ms. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (t->closing) { /* the service went meanwhile */
        upgraded_close(u);
        t->u = NULL;
        return;
    }
    if (uv_poll_init(t->loop, &t->poll, fd) < 0) {
        tunnel_finish(t);
        return;
    }
    t->poll.data = t;
    t->poll_open = true;
    t->open_handles++;
    if (n > 0)
        to_up(t, extra, n > TUNNEL_BUFFER ? TUNNEL_BUFFER : n);
    if (t->extra_len > 0 && t->extra_len <= TUNNEL_BUFFER)
        to_client(t, t->extra, t->extra_len);
    if (!t->closing && t->tc_off == t->tc_len)
        uv_read_start((uv_stream_t *)&t->up, on_alloc, on_up_read);
    client_watch(t);
}

/* The client went before its 101 was out, or the server stops: the connection is not the
 * tunnel's (any more). */
static void on_client_ended(void *data)
{
    struct tunnel *t = data;

    t->u = NULL;
    if (t->poll_open)
        uv_poll_stop(&t->poll);
    t->fd = -1;
    tunnel_finish(t);
}

/* --- connecting ------------------------------------------------------------------------ */

static void on_head_written(uv_write_t *w, int status)
{
    struct tunnel *t = w->data;

    if (status < 0)
        tunnel_refuse(t, 0, UPSTREAM_BROKEN,
                      "the service closed the connection before the request");
}

static void on_deadline(uv_timer_t *timer)
{
    struct tunnel *t = timer->data;

    tunnel_refuse(t, 0, UPSTREAM_TIMED_OUT, "the service did not answer the upgrade in time");
}

static void on_connected(uv_connect_t *c, int status)
{
    struct tunnel *t = c->data;
    uv_buf_t b = uv_buf_init(t->head, (unsigned)strlen(t->head));

    if (status == UV_ECANCELED || t->closing)
        return;
    if (status < 0) {
        char message[160];

        snprintf(message, sizeof(message), "the service does not accept connections: %s",
                 uv_strerror(status));
        tunnel_refuse(t, 0, UPSTREAM_REFUSED, message);
        return;
    }
    t->write.data = t;
    uv_tcp_nodelay(&t->up, 1); /* as the client's socket (on_client_upgraded) */
    if (uv_write(&t->write, (uv_stream_t *)&t->up, &b, 1, on_head_written) < 0 ||
        uv_read_start((uv_stream_t *)&t->up, on_alloc, on_up_read) < 0)
        tunnel_refuse(t, 0, UPSTREAM_BROKEN, "the service's connection failed");
}

int tunnel_open(uv_loop_t *loop, struct request *req, const char *ip, unsigned port,
                const char *head, size_t head_len, uint64_t connect_timeout_ms,
                uint64_t head_timeout_ms, const struct tunnel_events *ev, void *data,
                struct tunnel **ret)
{
    struct sockaddr_storage addr;
    struct tunnel *t;
    int r;

    if (uv_ip4_addr(ip, (int)port, (struct sockaddr_in *)&addr) < 0 &&
        uv_ip6_addr(ip, (int)port, (struct sockaddr_in6 *)&addr) < 0)
        return -EINVAL;
    t = xcalloc(1, sizeof(*t));
    t->loop = loop;
    t->req = req;
    t->ev = ev;
    t->data = data;
    t->fd = -1;
    t->head = xstrndup(head, head_len);
    http_parser_init(&t->parser, HTTP_RESPONSE);
    t->parser.data = t;
    uv_tcp_init(loop, &t->up);
    t->up.data = t;
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    t->open_handles = 2;
    t->connect.data = t;
    r = uv_tcp_connect(&t->connect, &t->up, (struct sockaddr *)&addr, on_connected);
    if (r < 0) {
        t->req = NULL;
        t->told = t->silent = true;
        tunnel_finish(t);
        return r;
    }
    uv_timer_start(&t->timer, on_deadline, connect_timeout_ms + head_timeout_ms, 0);
    *ret = t;
    return 0;
}

/* Ends the tunnel: every handle closed, the client's connection given back. */
static void tunnel_finish(struct tunnel *t)
{
    if (t->closing)
        return;
    t->closing = true;
    if (t->u) {
        uv_poll_stop(&t->poll);
        upgraded_close(t->u);
        t->u = NULL;
    }
    if (t->poll_open)
        uv_close((uv_handle_t *)&t->poll, on_handle_closed);
    uv_close((uv_handle_t *)&t->up, on_handle_closed);
    uv_close((uv_handle_t *)&t->timer, on_handle_closed);
}

void tunnel_close(struct tunnel *t)
{
    t->req = NULL; /* the caller has it back */
    t->told = t->silent = true;
    tunnel_finish(t);
}
