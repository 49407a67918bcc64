/* The HTTP server: libmicrohttpd in external-epoll mode, driven by a uv_poll on its epoll
 * fd and a uv_timer set from MHD_get_timeout(). One thread: the loop's. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "http/realip.h"
#include "http/server.h"
#include "http/server_internal.h"
#include "http/tls.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/netaddr.h"

#define SERVER_TICK_MS          250
#define SERVER_IDLE_TICK_MS     1000
#define SERVER_TRIM_INTERVAL_MS 1000
#define SERVER_BUSY_RUNS        32  /* runs in a row on the next loop pass... */
#define SERVER_BUSY_DELAY_MS    1   /* ...then this gap, while it still says "now" */
#define SERVER_STALL_MS         200 /* "now" for this long: look for a stuck connection */
#define SERVER_STUCK_TIMEOUT_S  1   /* a stuck connection closes after this inactivity */
#define SERVER_CLIENT_BUCKETS   256
#define SERVER_SWEEP_MS         500 /* how often to look for clients that stopped sending */
#define SERVER_RESUME_BATCH     64  /* streams resumed per loop pass */

enum request_state {
    REQUEST_READING,   /* headers or body still arriving */
    REQUEST_SUSPENDED, /* handed to the handler, which will reply later */
    REQUEST_ANSWERED,  /* answered while suspended: the answer waits to be queued */
    REQUEST_QUEUED,    /* the response was handed to libmicrohttpd */
};

struct connection;

struct request {
    struct server *server;
    struct MHD_Connection *conn;
    const char *method;  /* owned by libmicrohttpd for the request's life */
    const char *version; /* "HTTP/1.1", "HTTP/1.0": libmicrohttpd's too */
    const char *path;
    char *uri; /* the request target as sent (path and query, still escaped), or NULL */
    char *body;
    size_t body_len;
    bool body_too_large;
    bool sending; /* counted in the server's sending (request_set_queued) */
    enum request_state state;
    bool in_access; /* libmicrohttpd's access handler is on the stack */
    bool hang_up;   /* close the connection after the answer: its framing is not trusted */
    unsigned status;
    char *answer; /* a later answer's text, queued when libmicrohttpd calls back */
    struct MHD_Response *answer_resp; /* ...or a later stream's response (a reference) */
    size_t answer_len;
    const char *answer_type; /* its Content-Type */
    void (*on_abort)(void *data);
    void *abort_data;
    struct suspend_deadline *deadline; /* while suspended */
    uint64_t timeout_ms;
    struct request *next_suspended, *prev_suspended;
    struct connection *connection;  /* its connection, while both live */
    struct sockaddr_storage client; /* who sent it: the peer, or the client behind a proxy */
    char client_name[REALIP_NAME_MAX];
    struct client *forwarded;           /* through a trusted proxy: its client's entry, counted */
    char user[REQUEST_USER_MAX + 1];    /* the gate's findings: a key's name ("": none)... */
    int role;                           /* ...its role (-1: none) */
    const char *route;                  /* the route's pattern, for metrics (static) */
    uint64_t begun_ns;                  /* when it began (uv_hrtime) */
    const char *action;                 /* the done callback's: audited as this verb... */
    char service[REQUEST_USER_MAX + 1]; /* ...about this service ("": none) */
    struct stream *stream;              /* a streamed answer (stream.c), while both live */
    bool resume_queued;                 /* in the server's queue of streams to resume */
    struct request *next_resume, *prev_resume;
    /* A body handed over as it comes (server_set_body_streaming): the handler had the
     * request at its head; its sink takes the body, or it is dropped without one. */
    bool body_streamed;
    bool body_done; /* its end was seen (and told to the sink) */
    const struct request_body_sink *sink;
    void *sink_data;
    bool mhd_suspended;  /* libmicrohttpd holds the connection (MHD_suspend_connection) */
    bool body_dropped;   /* request_body_sink(NULL): the rest of the body is not wanted */
    uint64_t moved;      /* body bytes handed to or from it (request_moved)... */
    uint64_t moved_seen; /* ...and as many at the last search for stuck connections */
    bool completing;     /* libmicrohttpd is done with it (on_completed) */
    bool hangup_aborts;  /* suspended, a client that hangs up aborts it (request_abort_on_hangup) */
    struct upgraded *upgrade; /* a 101 answer's hand-over, until it happens or the request ends */
    json_t *(*error_shape)(unsigned status, json_t *body); /* request_set_error_shape */
};

/* A connection handed over after a 101 answer (request_reply_upgrade). */
struct upgraded {
    struct server *server;
    struct request *req; /* until the request ends */
    struct connection *conn;
    struct MHD_UpgradeResponseHandle *urh; /* once handed over */
    const struct request_upgrade_events *ev;
    void *data;
    struct upgraded *next, *prev; /* in the server's list, once handed over */
};

/* The deadline of a suspended request: its own allocation, since the timer outlives the
 * request until libuv has closed it. */
struct suspend_deadline {
    uv_timer_t timer;
    struct request *req; /* NULL once the request no longer needs it */
};

/* One client address and how many connections it holds now. */
struct client {
    struct sockaddr_storage addr; /* the port zeroed */
    char name[REALIP_NAME_MAX];   /* addr as text */
    unsigned connections;
    unsigned forwarded;  /* requests in progress through a trusted proxy, this their client */
    bool refused_logged; /* the cap was hit and said so; again once it has none left */
    struct client *next;
};

/* One connection libmicrohttpd holds (its socket context). */
struct connection {
    struct MHD_Connection *conn;
    struct client *client;
    int fd;
    bool trusted;        /* its peer is a trusted proxy: its requests count by their client */
    bool stuck;          /* found making no progress and given a short timeout */
    bool upgraded;       /* handed over after a 101: its socket is not libmicrohttpd's */
    struct request *req; /* the request being read or answered, if any */
    struct server *server;
    struct tls_identity *tls; /* the identity its handshake took (a reference), if any */
    char *uri;                /* the next request's target as sent, until on_access takes it */
    struct connection *next, *prev;
};

struct server {
    uv_loop_t *loop;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_idle_t idle; /* runs libmicrohttpd again on the next loop pass, after a poll */
    int handles_open;
    server_handler_fn handler;
    void *handler_data;
    struct upgraded *upgraded; /* connections handed over, until given back */
    unsigned idle_timeout_s;   /* a silent connection is closed after this long */
    bool (*streams_body)(void *data, struct request *req); /* server_set_body_streaming */
    void *streams_body_data;
    struct tls_identity *tls; /* HTTPS: the identity new handshakes take (a reference) */
    char *tls_cert, *tls_key; /* the files it was read from, read again on a reload */
    unsigned port;
    unsigned in_flight;
    unsigned connection_limit;
    unsigned connections; /* after the last run */
    uint64_t trimmed_at;  /* loop time of the last malloc_trim() */
    bool quiesced;
    struct request *suspended; /* list of suspended requests */
    unsigned busy_runs;        /* runs in a row after which libmicrohttpd said "now" */
    uint64_t moved;            /* body bytes handed to or from requests (request_moved) */
    unsigned sending;          /* requests whose answer from memory is being sent */
    uint64_t busy_since;       /* loop time of the first of them */
    uint64_t unstuck_at;       /* loop time of the last search for stuck connections */
    uint64_t swept_at;         /* loop time of the last search for half-closed clients */
    unsigned per_client_max;   /* connections one client address may hold */
    unsigned reserve;          /* the last slots, kept for addresses that hold few */
    unsigned open;             /* connections libmicrohttpd holds now */
    struct connection *conns;  /* list of them */
    struct client *clients[SERVER_CLIENT_BUCKETS];
    struct cidr *trusted; /* trusted proxies (server_set_trusted_proxies) */
    size_t trusted_n;
    server_done_fn done; /* told of every request's end (server_set_done) */
    void *done_data;
    struct request *resume_head, *resume_tail; /* streams to resume, oldest first */
};

static void server_run(struct server *s);
static void server_release(struct server *s);
static void request_identify(struct server *s, struct request *req);
static bool request_count_forwarded(struct server *s, struct request *req);
static void request_uncount_forwarded(struct server *s, struct request *req);

static int listen_socket(const char *listen_addr, int *ret_fd, unsigned *ret_port)
{
    struct sockaddr_storage addr;
    socklen_t len;
    int fd, one = 1, r;

    r = netaddr_parse_listen(listen_addr, &addr, &len);
    if (r < 0)
        return r;
    fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, 511) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    len = sizeof(addr);
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    *ret_port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                                 : ((struct sockaddr_in *)&addr)->sin_port);
    *ret_fd = fd;
    return 0;
}

static void suspended_unlink(struct request *req)
{
    struct server *s = req->server;

    if (req->prev_suspended)
        req->prev_suspended->next_suspended = req->next_suspended;
    else
        s->suspended = req->next_suspended;
    if (req->next_suspended)
        req->next_suspended->prev_suspended = req->prev_suspended;
    req->next_suspended = req->prev_suspended = NULL;
}

static void resume_unlink(struct request *req)
{
    struct server *s = req->server;

    if (!req->resume_queued)
        return;
    if (req->prev_resume)
        req->prev_resume->next_resume = req->next_resume;
    else
        s->resume_head = req->next_resume;
    if (req->next_resume)
        req->next_resume->prev_resume = req->prev_resume;
    else
        s->resume_tail = req->prev_resume;
    req->next_resume = req->prev_resume = NULL;
    req->resume_queued = false;
}

static void server_kick(struct server *s);

/* Holds the connection (libmicrohttpd reads and calls nothing more) until conn_resume(). */
static void conn_suspend(struct request *req)
{
    if (req->mhd_suspended)
        return;
    req->mhd_suspended = true;
    MHD_suspend_connection(req->conn);
}

static void conn_resume(struct request *req)
{
    if (!req->mhd_suspended)
        return;
    req->mhd_suspended = false;
    MHD_resume_connection(req->conn);
    server_kick(req->server); /* libmicrohttpd picks it up on the next loop pass */
}

/* Resumes at most max queued streams, oldest first. */
static void server_resume(struct server *s, unsigned max)
{
    for (unsigned i = 0; i < max && s->resume_head; i++) {
        struct request *req = s->resume_head;
        resume_unlink(req);
        MHD_resume_connection(req->conn);
    }
}

static void on_deadline_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Drops a suspended request's deadline; the timer is freed once libuv has closed it. */
static void request_drop_deadline(struct request *req)
{
    struct suspend_deadline *d = req->deadline;

    if (!d)
        return;
    req->deadline = NULL;
    d->req = NULL;
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, on_deadline_closed);
}

/* Tells the owner of a suspended request that it is gone, once. */
static void request_abort(struct request *req)
{
    void (*on_abort)(void *data) = req->on_abort;

    req->on_abort = NULL;
    if (on_abort)
        on_abort(req->abort_data);
}

static void on_deadline(uv_timer_t *t)
{
    struct suspend_deadline *d = t->data;
    struct request *req = d->req;

    if (!req)
        return;
    request_abort(req);
    if (req->state == REQUEST_SUSPENDED)
        request_reply_error(req, MHD_HTTP_GATEWAY_TIMEOUT, "timed_out",
                            "no answer within %" PRIu64 " ms", req->timeout_ms);
}

/* The answer is libmicrohttpd's to send now. One from memory counts as being sent until
 * the request completes: the runs that send it move bytes no callback of ours sees
 * (server_run_soon). */
static void request_set_queued(struct request *req)
{
    req->state = REQUEST_QUEUED;
    if (!req->stream && !req->sending) {
        req->sending = true;
        req->server->sending++;
    }
}

/* Queues the answer stored while the request was suspended. */
static enum MHD_Result request_queue_stored(struct request *req)
{
    struct MHD_Response *resp = req->answer_resp;
    enum MHD_Result r;

    req->answer_resp = NULL;
    if (!resp) {
        resp = MHD_create_response_from_buffer(req->answer_len, req->answer, MHD_RESPMEM_MUST_FREE);
        if (!resp)
            fatal("out of memory (response)");
        req->answer = NULL;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->answer_type);
    }
    r = MHD_queue_response(req->conn, req->status, resp);
    MHD_destroy_response(resp);
    request_set_queued(req);
    return r;
}

/* What a request's headers say about its framing, header by header. */
struct framing {
    unsigned lengths, encodings, hosts;
    const char *first_length;
    bool lengths_differ;
    bool bad_name;  /* empty, or a byte that is not a token character (RFC 9110 5.1) */
    bool bad_value; /* a NUL or a bare CR */
};

static bool is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 32 || ch >= 127 || strchr("\"(),/:;<=>?@[\\]{}", ch))
            return false;
    }
    return true;
}

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    struct framing *f = cls;

    if (!key || !is_token(key, key_size))
        f->bad_name = true;
    if (value && (memchr(value, '\0', value_size) || memchr(value, '\r', value_size)))
        f->bad_value = true;
    if (!key)
        return MHD_YES;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->lengths++ == 0)
            f->first_length = value ? value : "";
        else if (strcmp(f->first_length, value ? value : "") != 0)
            f->lengths_differ = true;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->encodings++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        f->hosts++;
    }
    return MHD_YES;
}

/* Why a request's head cannot be trusted, or NULL: two different Content-Length headers,
 * Content-Length with Transfer-Encoding, Transfer-Encoding twice or in HTTP/1.0, no Host
 * header in HTTP/1.1 or two, a header name that is not a token, a NUL or bare CR in a value. A
 * proxy in front may read such a request one way and libmicrohttpd another (request smuggling, RFC
 * 9112 sections 6.1 and 6.3, RFC 9110 section 7.2), so it is refused and its connection closed. */
static const char *untrusted_head(struct MHD_Connection *conn, const char *version)
{
    struct framing f = {0};

    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, count_framing, &f);
    if (f.lengths_differ)
        return "the request has two different Content-Length headers";
    if (f.lengths > 0 && f.encodings > 0)
        return "the request has both Content-Length and Transfer-Encoding";
    if (f.encodings > 1)
        return "the request has more than one Transfer-Encoding header";
    if (f.encodings > 0 && strcmp(version, MHD_HTTP_VERSION_1_0) == 0)
        return "Transfer-Encoding is not part of HTTP/1.0";
    if (f.hosts > 1)
        return "the request has more than one Host header";
    if (f.hosts == 0 && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
        return "an HTTP/1.1 request must have a Host header";
    if (f.bad_name)
        return "a header name is empty or has a character a name cannot have";
    if (f.bad_value)
        return "a header value holds a NUL byte or a bare CR";
    return NULL;
}

/* What the handler left: a suspended request holds its connection (a streamed body
 * flows only once a sink takes it), an answer is queued. */
static enum MHD_Result request_handed_over(struct request *req)
{
    switch (req->state) {
    case REQUEST_SUSPENDED:
        /* A streamed body still to come is read until it finds no sink (body_stream holds
         * it then): libmicrohttpd resumed from a suspend at the head would call again as
         * if the body were over. */
        if (!req->body_streamed || req->body_done)
            conn_suspend(req);
        return MHD_YES;
    case REQUEST_ANSWERED:
        if (req->body_streamed && !req->body_done)
            return MHD_YES; /* queued once the body is in (libmicrohttpd answers after it) */
        return request_queue_stored(req);
    case REQUEST_QUEUED:
        return MHD_YES;
    case REQUEST_READING:
        break;
    }
    fatal("request %s %s: the handler neither answered nor suspended", req->method, req->path);
}

/* A piece of a streamed body (or its end: *size 0) for the sink; without one it is dropped,
 * up to SERVER_STREAM_DISCARD_MAX (and while the request waits without a sink, it waits too).
 * A sink that takes less holds the connection until
 * request_body_resume(). */
static enum MHD_Result body_stream(struct request *req, const char *data, size_t *size)
{
    const struct request_body_sink *sink = req->sink;
    size_t n = *size, taken = n;

    req->in_access = true;
    if (n > 0) {
        if (sink) {
            taken = sink->data(req->sink_data, data, n);
        } else if (req->state == REQUEST_SUSPENDED && !req->body_dropped) {
            taken = 0; /* no sink yet (the request waits for a start): the body waits too */
        } else if ((req->body_len += n) > SERVER_STREAM_DISCARD_MAX) {
            req->in_access = false;
            return MHD_NO; /* nobody wants a body that goes on and on: hang up */
        }
        *size = n - taken;
        request_moved(req, taken);
        if (*size > 0)
            conn_suspend(req);
        req->in_access = false;
        return MHD_YES;
    }
    req->body_done = true;
    req->sink = NULL;
    if (req->stream) /* its answer streams: no idle timeout from now on (see stream.c) */
        MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT, 0U);
    if (sink)
        sink->end(req->sink_data);
    req->in_access = false;
    return request_handed_over(req);
}

/* Reads a request in full, then hands it to the handler. The handler's answer is queued
 * at once when it comes while we are here, else when the resumed connection calls back. */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct server *s = cls;
    struct request *req = *con_cls;
    enum MHD_Result r = MHD_YES;

    if (!req) {
        const union MHD_ConnectionInfo *info;
        const char *untrusted;
        const char *length =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *encoding =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        req = xcalloc(1, sizeof(*req));
        req->server = s;
        req->conn = conn;
        req->method = method;
        req->version = version;
        req->path = url;
        req->role = -1;
        req->begun_ns = uv_hrtime();
        *con_cls = req;
        s->in_flight++;
        info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        if (info && info->socket_context) {
            req->connection = info->socket_context;
            req->connection->req = req;
            req->uri = req->connection->uri;
            req->connection->uri = NULL;
        }
        request_identify(s, req);
        untrusted = untrusted_head(conn, version);
        if (untrusted) {
            req->in_access = true;
            req->hang_up = true;
            request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", untrusted);
            req->in_access = false;
        } else if (req->connection && req->connection->trusted &&
                   !request_count_forwarded(s, req)) {
            req->in_access = true;
            req->hang_up = true;
            request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "too_many_connections",
                                "%s has %u requests in progress through a proxy; "
                                "max_connections_per_client is %u",
                                req->client_name, s->per_client_max, s->per_client_max);
            req->in_access = false;
        } else if (encoding && strcasecmp(encoding, "chunked") != 0) {
            req->in_access = true;
            request_reply_error(req, MHD_HTTP_NOT_IMPLEMENTED, "unsupported_transfer_encoding",
                                "only the chunked transfer encoding is supported");
            req->in_access = false;
        } else if ((encoding || (length && strtoull(length, NULL, 10) > 0)) &&
                   strcmp(method, "HEAD") != 0 && s->streams_body &&
                   s->streams_body(s->streams_body_data, req)) {
            /* The handler has it at its head; the body goes to the sink it sets. */
            req->body_streamed = true;
            req->in_access = true;
            s->handler(s->handler_data, req);
            r = request_handed_over(req);
            req->in_access = false;
            return r;
        } else if (length && strtoull(length, NULL, 10) > SERVER_BODY_MAX) {
            req->in_access = true;
            request_reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
                                "the request body is larger than %d bytes", SERVER_BODY_MAX);
            req->in_access = false;
        }
        return MHD_YES;
    }

    if (req->body_streamed && !req->body_done)
        return body_stream(req, upload_data, upload_data_size);
    switch (req->state) {
    case REQUEST_READING:
        break;
    case REQUEST_ANSWERED:
        return request_queue_stored(req);
    case REQUEST_SUSPENDED:
    case REQUEST_QUEUED:
        /* The answer is out; whatever the client still sends is dropped. */
        *upload_data_size = 0;
        return MHD_YES;
    }

    req->in_access = true;
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        request_moved(req, n);
        if (req->body_too_large || req->body_len + n > SERVER_BODY_MAX) {
            /* libmicrohttpd answers only once the body is in: drop it as it comes, and
             * hang up on a body that goes on far beyond the cap. */
            free(req->body);
            req->body = NULL;
            req->body_too_large = true;
            req->body_len += n;
            if (req->body_len > SERVER_DISCARD_MAX)
                r = MHD_NO;
        } else {
            req->body = xrealloc(req->body, req->body_len + n + 1);
            memcpy(req->body + req->body_len, upload_data, n);
            req->body_len += n;
            req->body[req->body_len] = '\0';
        }
    } else {
        /* The request is complete: hand it over. */
        if (req->body_too_large)
            request_reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
                                "the request body is larger than %d bytes", SERVER_BODY_MAX);
        else
            s->handler(s->handler_data, req);
        r = request_handed_over(req);
    }
    req->in_access = false;
    return r;
}

/* libmicrohttpd is done with a request (answered, or the client went away): free it. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct server *s = cls;
    struct request *req = *con_cls;

    if (!req)
        return;
    *con_cls = NULL;
    if (s->done)
        s->done(s->done_data, req,
                req->state == REQUEST_QUEUED && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK
                    ? req->status
                    : 0);
    if (req->connection)
        req->connection->req = NULL;
    resume_unlink(req);
    if (req->stream) {
        struct stream *st = req->stream;
        req->stream = NULL;
        stream_request_done(st);
        /* A stream (or a HEAD of one) took the idle timeout away: the connection may go
         * on with other requests. */
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, s->idle_timeout_s);
    }
    req->completing = true;
    if (req->upgrade) {
        struct upgraded *u = req->upgrade;

        req->upgrade = NULL;
        u->req = NULL;
        if (!u->urh) { /* the answer never went out: no hand-over */
            u->ev->ended(u->data);
            free(u);
        }
    }
    if (req->state == REQUEST_SUSPENDED) {
        suspended_unlink(req);
        request_abort(req);
    }
    request_drop_deadline(req);
    request_uncount_forwarded(s, req);
    if (req->sending)
        s->sending--;
    if (req->answer_resp)
        MHD_destroy_response(req->answer_resp); /* a stream's: it is told through on_free */
    free(req->answer);
    free(req->uri);
    free(req->body);
    free(req);
    s->in_flight--;
}

/* The address a client is counted by: its IP address, the port left out. */
static void client_key(const struct sockaddr *addr, socklen_t len, struct sockaddr_storage *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in *in = (struct sockaddr_in *)ret;
        in->sin_family = AF_INET;
        in->sin_addr = ((const struct sockaddr_in *)addr)->sin_addr;
    } else if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ret;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = ((const struct sockaddr_in6 *)addr)->sin6_addr;
    } else {
        ret->ss_family = addr->sa_family;
    }
}

static unsigned client_bucket(const struct sockaddr_storage *key)
{
    const unsigned char *p = (const unsigned char *)key;
    unsigned h = 2166136261u;

    for (size_t i = 0; i < sizeof(*key); i++)
        h = (h ^ p[i]) * 16777619u;
    return h % SERVER_CLIENT_BUCKETS;
}

/* addr as text, as realip_client() would have it for a request from addr (an IPv4-mapped
 * IPv6 address as IPv4). */
static void client_name_of(const struct sockaddr_storage *addr, char name[REALIP_NAME_MAX])
{
    struct sockaddr_storage unmapped = *addr;

    cidr_unmap(&unmapped);
    realip_name(&unmapped, name, REALIP_NAME_MAX);
}

/* The entry of a client address; created (with no connection) when create is set. */
static struct client *client_find(struct server *s, const struct sockaddr_storage *key, bool create)
{
    unsigned b = client_bucket(key);
    struct client *c;

    for (c = s->clients[b]; c; c = c->next)
        if (memcmp(&c->addr, key, sizeof(*key)) == 0)
            return c;
    if (!create)
        return NULL;
    c = xcalloc(1, sizeof(*c));
    c->addr = *key;
    client_name_of(key, c->name);
    c->next = s->clients[b];
    s->clients[b] = c;
    return c;
}

/* Frees the entry of a client address that holds nothing any more. */
static void client_forget_if_idle(struct server *s, struct client *c)
{
    struct client **pp = &s->clients[client_bucket(&c->addr)];

    if (c->connections > 0 || c->forwarded > 0)
        return;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    free(c);
}

static void client_release(struct server *s, struct client *c)
{
    c->connections--;
    client_forget_if_idle(s, c);
}

static const char *client_name(const struct sockaddr_storage *key, char *buf, size_t size)
{
    const void *a = key->ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)key)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)key)->sin_addr;

    if (!inet_ntop(key->ss_family, a, buf, (socklen_t)size))
        snprintf(buf, size, "?");
    return buf;
}

/* The X-Forwarded-For headers of a request, read in two passes: the first counts them
 * and keeps the first value, the second (only when there are more) joins them with ", "
 * into a buffer sized by the first (the headers fit in SERVER_HEADER_MEMORY). */
struct forwarded_for {
    const char *first;
    unsigned count;
    size_t size;  /* of all of them joined, with the NUL */
    char *joined; /* NULL in the first pass */
    size_t len;
};

static enum MHD_Result join_forwarded_for(void *cls, enum MHD_ValueKind kind, const char *key,
                                          size_t key_size, const char *value, size_t value_size)
{
    struct forwarded_for *f = cls;

    if (!key || !value || strcasecmp(key, "X-Forwarded-For") != 0)
        return MHD_YES;
    if (!f->joined) {
        if (f->count++ == 0)
            f->first = value;
        f->size += value_size + 2;
        return MHD_YES;
    }
    if (f->len > 0) {
        memcpy(f->joined + f->len, ", ", 2);
        f->len += 2;
    }
    memcpy(f->joined + f->len, value, value_size);
    f->len += value_size;
    f->joined[f->len] = '\0';
    return MHD_YES;
}

/* Who sent a request: the connection's peer, or when that is a trusted proxy the client
 * its X-Forwarded-For headers name (all of them, joined, as RFC 9110 section 5.3 reads a
 * repeated list header: a proxy that adds its own line after the client's must not be
 * read from the client's). */
static void request_identify(struct server *s, struct request *req)
{
    struct sockaddr_storage peer;
    char *joined = NULL;
    const char *forwarded = NULL;

    if (req->connection) {
        peer = req->connection->client->addr;
    } else {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        memset(&peer, 0, sizeof(peer));
        if (info && info->client_addr)
            client_key(info->client_addr,
                       info->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                : sizeof(struct sockaddr_in),
                       &peer);
    }
    if (req->connection && req->connection->trusted) {
        struct forwarded_for f = {0};
        MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, join_forwarded_for, &f);
        forwarded = f.first;
        if (f.count > 1) {
            f.joined = joined = xmalloc(f.size + 1);
            f.joined[0] = '\0';
            MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, join_forwarded_for, &f);
            forwarded = joined;
        }
    }
    _Static_assert(sizeof(req->client_name) == sizeof(req->connection->client->name),
                   "a client's name fits a request's");
    if (!realip_client(&peer, forwarded, s->trusted, s->trusted_n, &req->client) && req->connection)
        memcpy(req->client_name, req->connection->client->name, sizeof(req->client_name));
    else
        realip_name(&req->client, req->client_name, sizeof(req->client_name));
    free(joined);
}

/* Counts a request through a trusted proxy against its client; false (and not counted)
 * when that client already has per_client_max of them in progress. */
static bool request_count_forwarded(struct server *s, struct request *req)
{
    struct client *c = client_find(s, &req->client, true);
    char proxy[REALIP_NAME_MAX];

    if (c->forwarded < s->per_client_max) {
        c->forwarded++;
        req->forwarded = c;
        return true;
    }
    if (!c->refused_logged) {
        c->refused_logged = true;
        log_warning("http: %s has %u requests in progress through the proxy %s "
                    "(max_connections_per_client); answering its new ones 503",
                    req->client_name, c->forwarded,
                    realip_name(&req->connection->client->addr, proxy, sizeof(proxy)));
    }
    client_forget_if_idle(s, c);
    return false;
}

static void request_uncount_forwarded(struct server *s, struct request *req)
{
    struct client *c = req->forwarded;

    if (!c)
        return;
    req->forwarded = NULL;
    c->forwarded--;
    client_forget_if_idle(s, c);
}

/* Whether to take a new connection: no client address may hold more than per_client_max,
 * and the last `reserve` slots go only to addresses that hold few, so that one address
 * with many idle connections cannot leave the API deaf to the others. A trusted proxy
 * carries many clients: its connections are not capped here, its requests are (by their
 * client, request_count_forwarded()). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t len)
{
    struct server *s = cls;
    struct sockaddr_storage key;
    struct client *c;
    unsigned held;
    char name[INET6_ADDRSTRLEN];

    client_key(addr, len, &key);
    c = client_find(s, &key, false);
    held = c ? c->connections : 0;
    if ((held < s->per_client_max || realip_is_trusted(s->trusted, s->trusted_n, &key)) &&
        (s->open + s->reserve < s->connection_limit || held < SERVER_RESERVE_SHARE))
        return MHD_YES;
    if (c && !c->refused_logged) {
        c->refused_logged = true;
        log_warning("http: %s holds %u connections (%s); closing its new ones",
                    client_name(&key, name, sizeof(name)), held,
                    held >= s->per_client_max ? "max_connections_per_client"
                                              : "the rest is kept for other clients");
    }
    return MHD_NO;
}

/* libmicrohttpd took or closed a connection: keep the count of each client address and
 * the list used to find a stuck connection. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct server *s = cls;
    struct connection *c = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *addr =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const union MHD_ConnectionInfo *fd =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct sockaddr_storage key;

        c = xcalloc(1, sizeof(*c));
        c->conn = conn;
        c->server = s;
        c->fd = fd ? fd->connect_fd : -1;
        if (addr && addr->client_addr)
            client_key(addr->client_addr,
                       addr->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                : sizeof(struct sockaddr_in),
                       &key);
        else
            memset(&key, 0, sizeof(key));
        c->client = client_find(s, &key, true);
        c->client->connections++;
        c->trusted = realip_is_trusted(s->trusted, s->trusted_n, &key);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->open++;
        *socket_context = c;
        return;
    }
    if (!c)
        return;
    *socket_context = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->req)
        c->req->connection = NULL;
    client_release(s, c->client);
    tls_identity_unref(c->tls);
    s->open--;
    free(c->uri);
    free(c);
}

/* Gives a connection that cannot go on a short timeout, so that libmicrohttpd closes it
 * once it has been inactive that long. */
static void connection_cut(struct connection *c)
{
    c->stuck = true;
    MHD_set_connection_option(c->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)SERVER_STUCK_TIMEOUT_S);
}

/* A client that shut its sending side before its request was complete can never complete
 * it, and a stream's client that did so is gone (it reads no more, or has closed), but
 * libmicrohttpd 0.9.75 does not always notice the end of its input (when it came with the last
 * bytes) and waits for the idle timeout: close such connections soon. A suspended request
 * marked request_abort_on_hangup() whose client did so is gone too (as nginx takes it): its
 * owner is told (request_abort), so that what it waits for (a start on demand, a place in
 * the GPU queue) is let go of. That holds whether its body is in or not (one held for a
 * start leaves it unread, and so would not notice the end of its input), an upload on its
 * way to the service included (one whose client half-closed after all of it is cut): with
 * the end of its input seen, libmicrohttpd 0.9.75 closes the connection before any answer
 * anyway. Other requests already handed to the handler are left to be answered (an API
 * stop goes on, and is audited with its outcome). */
static void server_sweep(struct server *s)
{
    for (struct connection *c = s->conns, *next; c; c = next) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLRDHUP};
        bool waits = c->req && c->req->state == REQUEST_SUSPENDED && !c->req->stream &&
                     c->req->hangup_aborts;

        next = c->next;
        if (c->stuck || c->fd < 0 || c->upgraded ||
            (c->req && c->req->state != REQUEST_READING && !waits && !c->req->stream))
            continue;
        if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
            continue;
        if (waits) {
            struct request *req = c->req;

            log_debug("http: the client of a waiting request went away");
            request_abort(req);
            if (req->state == REQUEST_SUSPENDED)
                request_reply_error(req, SERVER_STATUS_CLIENT_CLOSED, "client_closed",
                                    "the client went away");
            continue;
        }
        if (c->req && c->req->stream) {
            /* A stream's client went away: suspended, it would only notice at the next
             * write. End it; libmicrohttpd then finds the socket closed. */
            stream_quiesce(c->req->stream);
            continue;
        }
        log_debug("http: a client stopped sending before its request was complete; "
                  "closing its connection");
        connection_cut(c);
    }
}

/* libmicrohttpd has said "run me now" for SERVER_STALL_MS: a connection it cannot make
 * progress on keeps it busy (0.9.75 does this with a chunk-size line or chunk extension
 * longer than its read buffer, and waits for the connection timeout). Such a connection
 * holds bytes it does not read: give it a short timeout, so that libmicrohttpd closes it
 * once it has been inactive that long. A connection whose request has moved body bytes
 * since the last search is making progress, and always holds unread bytes while its
 * client sends faster than it is read (an upload): it is not stuck, and is left alone (a
 * short timeout would close it at its client's first pause of a second); one that moves
 * nothing from one search to the next is. */
static void server_unstick(struct server *s)
{
    char name[INET6_ADDRSTRLEN];

    for (struct connection *c = s->conns; c; c = c->next) {
        const union MHD_ConnectionInfo *info;
        int unread = 0;

        if (c->stuck || c->fd < 0 || c->upgraded)
            continue;
        if (c->req && c->req->moved != c->req->moved_seen) {
            c->req->moved_seen = c->req->moved;
            continue;
        }
        info = MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_SUSPENDED);
        if (info && info->suspended)
            continue;
        if (ioctl(c->fd, FIONREAD, &unread) < 0 || unread <= 0)
            continue;
        log_warning("http: a connection from %s makes no progress with %d bytes unread "
                    "(a line longer than %d bytes?); closing it",
                    c->req ? c->req->client_name
                           : client_name(&c->client->addr, name, sizeof(name)),
                    unread, SERVER_HEADER_MEMORY);
        connection_cut(c);
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];

    if (!log_enabled(LOG_DEBUG))
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    log_debug("http: %s", line);
}

/* Decodes %HH as libmicrohttpd does, but leaves a value holding "%00" as it is: a NUL
 * would silently cut a path or an argument short, and the router then refuses it. */
static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    if (strstr(s, "%00"))
        return strlen(s);
    return MHD_http_unescape(s);
}

/* The request target as the client sent it, before libmicrohttpd unescapes the path and
 * splits the query off: kept on the connection for the request on_access begins next. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct connection *c = info ? info->socket_context : NULL;

    if (c) {
        free(c->uri);
        c->uri = xstrdup(uri);
    }
    return NULL;
}

static void on_timer(uv_timer_t *t)
{
    server_run(t->data);
}

static void on_idle(uv_idle_t *h)
{
    server_run(h->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    server_run(p->data);
}

/* Runs libmicrohttpd again on the next loop pass, after the loop has polled: never from a
 * timer at 0 ms, which libuv 1.44 runs again in the same pass, without polling, for as
 * long as it is re-armed from its own callback. */
static void server_kick(struct server *s)
{
    uv_timer_stop(&s->timer);
    uv_idle_start(&s->idle, on_idle);
}

/* The last client left: give the memory its connections used back to the system (each
 * connection's pool is SERVER_HEADER_MEMORY), at most once a second. */
static void server_trim(struct server *s)
{
    uint64_t now = uv_now(s->loop);

    if (s->trimmed_at && now - s->trimmed_at < SERVER_TRIM_INTERVAL_MS)
        return;
    s->trimmed_at = now;
    malloc_trim(0);
}

/* libmicrohttpd wants to run again at once: on the next loop pass. A run that moved no
 * body bytes may be one that cannot make progress (see server_unstick): after
 * SERVER_BUSY_RUNS of those in a row, every SERVER_BUSY_DELAY_MS, so that the loop polls
 * and its timers run whatever libmicrohttpd says. A run that moved bytes, or one while an
 * answer from memory is being sent, is a transfer under way (libmicrohttpd carries a
 * large answer or upload one buffer per run, one TLS record for an answer from memory):
 * it is never slowed, and a stuck connection beside it costs runs at that pace until
 * the search below has closed it (SERVER_STALL_MS, then SERVER_STUCK_TIMEOUT_S). Past
 * SERVER_STALL_MS of "now", a stuck connection is looked for. */
static void server_run_soon(struct server *s, bool moved)
{
    uint64_t now = uv_now(s->loop);

    if (s->busy_runs++ == 0) {
        s->busy_since = now;
        s->unstuck_at = now;
    }
    if (now - s->unstuck_at >= SERVER_STALL_MS) {
        s->unstuck_at = now;
        server_unstick(s);
    }
    if (moved)
        s->busy_runs = 1;
    if (s->busy_runs <= SERVER_BUSY_RUNS) {
        server_kick(s);
        return;
    }
    uv_idle_stop(&s->idle);
    uv_timer_start(&s->timer, on_timer, SERVER_BUSY_DELAY_MS, 0);
}

/* Lets libmicrohttpd do its work, then sets the timer for its next deadline, but no
 * later than SERVER_TICK_MS, and SERVER_IDLE_TICK_MS when it has none: libmicrohttpd
 * 0.9.75 can leave a connection it has decided to close (a request whose headers overflow
 * its memory) until a later run, and after it stopped accepting at its connection or fd
 * limit it listens again only at the start of a run, with no deadline reported for
 * either. */
static void server_run(struct server *s)
{
    MHD_UNSIGNED_LONG_LONG timeout;
    const union MHD_DaemonInfo *info;
    unsigned connections;
    uint64_t moved;

    if (!s->mhd)
        return;
    /* One event written to a thousand streams is sent over several loop passes, with other
     * requests served between them. */
    server_resume(s, SERVER_RESUME_BATCH);
    moved = s->moved;
    MHD_run(s->mhd);
    info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    connections = info ? info->num_connections : 0;
    if (s->connections >= s->connection_limit && connections < s->connection_limit) {
        /* It stopped accepting at its limit and will listen again only in a run. */
        s->connections = connections;
        server_run_soon(s, false);
        return;
    }
    if (connections == 0 && s->connections > 0)
        server_trim(s);
    s->connections = connections;
    if (s->conns && uv_now(s->loop) - s->swept_at >= SERVER_SWEEP_MS) {
        s->swept_at = uv_now(s->loop);
        server_sweep(s);
    }
    if (MHD_get_timeout(s->mhd, &timeout) != MHD_YES)
        timeout = SERVER_IDLE_TICK_MS;
    else if (timeout > SERVER_TICK_MS)
        timeout = SERVER_TICK_MS;
    if (timeout == 0) {
        server_run_soon(s, s->moved != moved || s->sending > 0);
        return;
    }
    if (s->resume_head) {
        server_kick(s); /* more streams to resume, on the next pass */
        return;
    }
    s->busy_runs = 0;
    uv_idle_stop(&s->idle);
    uv_timer_start(&s->timer, on_timer, timeout, 0);
}

/* How many connections to take: SERVER_CONNECTIONS_MAX, or fewer when the fd limit would
 * leave too little room for the rest of the daemon (scans, watches, children, logs). */
static unsigned connection_limit(void)
{
    struct rlimit rl;
    rlim_t room;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
        return SERVER_CONNECTIONS_MAX;
    room = rl.rlim_cur > SERVER_FD_RESERVE + 8 ? rl.rlim_cur - SERVER_FD_RESERVE : 8;
    return room < SERVER_CONNECTIONS_MAX ? (unsigned)room : SERVER_CONNECTIONS_MAX;
}

/* GnuTLS asks, in a handshake, which certificate to show: the server's identity of the
 * moment, which the connection then holds a reference to until it closes. A reload swaps
 * the server's identity; a handshake already under way, or a connection that has finished
 * its handshake, keeps the one it took (GnuTLS keeps pointers into it for the session's
 * life), so an identity is freed when the server and the last connection that took it
 * have let it go. libmicrohttpd gives each session its connection as the session pointer. */
static int on_tls_certificate(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                              const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                              gnutls_pcert_st **ret_certs, unsigned *ret_n,
                              gnutls_privkey_t *ret_key)
{
    struct MHD_Connection *conn = gnutls_session_get_ptr(session);
    const union MHD_ConnectionInfo *info;
    struct connection *c;

    info = conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    c = info ? info->socket_context : NULL;
    if (!c || !c->server->tls) {
        log_debug("http: a TLS handshake on a connection we do not know; refusing it");
        return -1;
    }
    if (c->tls != c->server->tls) {
        tls_identity_unref(c->tls);
        c->tls = tls_identity_ref(c->server->tls);
    }
    tls_identity_get(c->tls, ret_certs, ret_n, ret_key);
    return 0;
}

int server_new(uv_loop_t *loop, const char *listen_addr, server_handler_fn handler, void *data,
               struct server **ret)
{
    char err[256];

    return server_new_with(loop, listen_addr, NULL, handler, data, ret, err, sizeof(err));
}

int server_new_with(uv_loop_t *loop, const char *listen_addr, const struct server_options *options,
                    server_handler_fn handler, void *data, struct server **ret, char *err,
                    size_t err_size)
{
    struct server *s;
    struct tls_identity *tls = NULL;
    const union MHD_DaemonInfo *info;
    unsigned flags =
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
    int fd = -1, r;
    unsigned port = 0;

    if (options && options->tls_cert) {
        r = tls_identity_load(options->tls_cert, options->tls_key, &tls, err, err_size);
        if (r < 0)
            return SERVER_ERROR_TLS;
        flags |= MHD_USE_TLS;
    }
    r = listen_socket(listen_addr, &fd, &port);
    if (r < 0) {
        snprintf(err, err_size, "cannot listen on %s: %s", listen_addr, strerror(-r));
        tls_identity_unref(tls);
        return r;
    }

    s = xcalloc(1, sizeof(*s));
    s->tls = tls;
    if (tls) {
        s->tls_cert = xstrdup(options->tls_cert);
        s->tls_key = xstrdup(options->tls_key);
    }
    s->loop = loop;
    s->handler = handler;
    s->handler_data = data;
    s->idle_timeout_s =
        options && options->idle_timeout_s ? options->idle_timeout_s : SERVER_IDLE_TIMEOUT_S;
    s->port = port;
    s->connection_limit = connection_limit();
    /* Under a low fd limit there is no room for a reserve: libmicrohttpd leaves the
     * connections past its limit in the listen backlog instead. */
    if (s->connection_limit >= SERVER_RESERVE_MIN_LIMIT)
        s->reserve = s->connection_limit / SERVER_RESERVE_PART;
    s->per_client_max = SERVER_PER_CLIENT_MAX;
    /* With TLS, the certificate callback is the only TLS option: libmicrohttpd's own
     * priorities and the same limits apply; it reads and writes through GnuTLS, and its
     * epoll set and our loop see only the sockets, as without TLS. */
    s->mhd = MHD_start_daemon(
        flags, 0, on_accept, s, on_access, s, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SERVER_HEADER_MEMORY,
        MHD_OPTION_CONNECTION_LIMIT, s->connection_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        s->idle_timeout_s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s, MHD_OPTION_UNESCAPE_CALLBACK,
        on_unescape, s, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        /* last: without TLS the list ends here */
        tls ? MHD_OPTION_HTTPS_CERT_CALLBACK : MHD_OPTION_END, on_tls_certificate, MHD_OPTION_END);
    if (!s->mhd) {
        snprintf(err, err_size, "cannot start libmicrohttpd on %s%s", listen_addr,
                 tls && !MHD_is_feature_supported(MHD_FEATURE_TLS)
                     ? ": it was built without HTTPS support"
                     : "");
        close(fd);
        server_release(s);
        return -EIO;
    }
    info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info) {
        snprintf(err, err_size, "cannot start libmicrohttpd on %s: no epoll", listen_addr);
        MHD_stop_daemon(s->mhd);
        server_release(s);
        return -EIO;
    }
    uv_poll_init(loop, &s->poll, info->epoll_fd);
    uv_timer_init(loop, &s->timer);
    uv_idle_init(loop, &s->idle);
    s->poll.data = s;
    s->timer.data = s;
    s->idle.data = s;
    s->handles_open = 3;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
    server_run(s);
    *ret = s;
    return 0;
}

void server_set_per_client_max(struct server *s, unsigned max)
{
    s->per_client_max = max ? max : SERVER_PER_CLIENT_MAX;
}

void server_set_trusted_proxies(struct server *s, const struct cidr *trusted, size_t n)
{
    free(s->trusted);
    s->trusted = NULL;
    s->trusted_n = 0;
    if (n == 0)
        return;
    s->trusted = xmalloc(n * sizeof(*trusted));
    memcpy(s->trusted, trusted, n * sizeof(*trusted));
    s->trusted_n = n;
}

unsigned server_port(const struct server *s)
{
    return s->port;
}

unsigned server_requests_in_flight(const struct server *s)
{
    return s->in_flight;
}

/* Ends every stream: they would otherwise go on for as long as their clients stay. */
static void server_end_streams(struct server *s)
{
    for (struct connection *c = s->conns; c; c = c->next)
        if (c->req && c->req->stream)
            stream_quiesce(c->req->stream);
}

void server_quiesce(struct server *s)
{
    MHD_socket fd;

    if (s->quiesced)
        return;
    s->quiesced = true;
    server_end_streams(s);
    fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

int server_reload_tls(struct server *s, char *err, size_t err_size)
{
    struct tls_identity *tls;
    int r;

    if (!s->tls) {
        snprintf(err, err_size, "the server does not serve HTTPS");
        return -EINVAL;
    }
    r = tls_identity_load(s->tls_cert, s->tls_key, &tls, err, err_size);
    if (r < 0)
        return r;
    /* Connections that took the old one keep it until they close (on_tls_certificate). */
    tls_identity_unref(s->tls);
    s->tls = tls;
    return 0;
}

const char *server_tls_describe(const struct server *s)
{
    return s->tls ? tls_identity_describe(s->tls) : NULL;
}

/* Frees what the server owns besides its handles and libmicrohttpd. */
static void server_release(struct server *s)
{
    tls_identity_unref(s->tls);
    free(s->tls_cert);
    free(s->tls_key);
    free(s->trusted);
    free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct server *s = h->data;

    if (--s->handles_open == 0)
        server_release(s);
}

void server_free(struct server *s)
{
    if (!s)
        return;
    /* Suspended requests: tell their owners, then answer them before the end. */
    while (s->suspended) {
        struct request *req = s->suspended;
        request_abort(req);
        if (req->state == REQUEST_SUSPENDED)
            request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                                "the daemon is shutting down");
    }
    server_end_streams(s);
    /* Connections handed over: their owners let go, and libmicrohttpd closes them. */
    while (s->upgraded) {
        struct upgraded *u = s->upgraded;

        u->ev->ended(u->data);
        upgraded_close(u);
    }
    /* Every stream's connection back from suspension, not a batch: libmicrohttpd must not
     * be stopped with a connection still suspended. */
    server_resume(s, UINT_MAX);
    server_run(s);
    server_run(s);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->idle, on_handle_closed);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
}

bool request_server_stopping(const struct request *req)
{
    return req->server->quiesced;
}

const char *request_method(const struct request *req)
{
    return req->method;
}

const char *request_uri(const struct request *req)
{
    return req->uri ? req->uri : req->path;
}

const char *request_path(const struct request *req)
{
    return req->path;
}

const char *request_client(const struct request *req)
{
    return req->client_name;
}

void request_client_address(const struct request *req, struct sockaddr_storage *ret)
{
    *ret = req->client;
}

struct header_walk {
    bool (*fn)(void *data, const char *name, const char *value);
    void *data;
};

static enum MHD_Result walk_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct header_walk *w = cls;

    return w->fn(w->data, key, value ? value : "") ? MHD_YES : MHD_NO;
}

void request_headers_each(struct request *req,
                          bool (*fn)(void *data, const char *name, const char *value), void *data)
{
    struct header_walk w = {fn, data};

    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, walk_header, &w);
}

/* What libmicrohttpd 0.9.75 keeps of each request value besides its bytes: its struct
 * MHD_HTTP_Header (56 bytes), rounded up to the pool's alignment. */
#define SERVER_VALUE_COST 64
/* The answer's status line, Date, framing and Connection (about 200 bytes), and slack for
 * what a client's head holds that its values do not show (spaces around values, a Cookie
 * header's copy with its spaces). */
#define SERVER_ANSWER_RESERVE 1024

static enum MHD_Result count_value(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    size_t *used = cls;

    *used += strlen(key) + (value ? strlen(value) : 0) + 4 + SERVER_VALUE_COST;
    return MHD_YES;
}

/* Tied to 0.9.75's pool (Debian 12's): a later libmicrohttpd may lay it out otherwise. Not
 * counted: a pipelined next request already read with this one, which libmicrohttpd keeps
 * in the pool too (no call tells its size). */
bool request_answer_head_fits(struct request *req, const char *const *headers, size_t *ret_head,
                              size_t *ret_room)
{
    size_t head = 0, used = strlen(req->method) + strlen(req->uri ? req->uri : req->path) +
                            strlen(req->version) + 4 + SERVER_ANSWER_RESERVE;

    /* A query's arguments and the cookies are counted besides the line and the Cookie
     * header they come from: libmicrohttpd copies the cookies; the arguments, on the safe
     * side. */
    MHD_get_connection_values(
        req->conn, MHD_HEADER_KIND | MHD_COOKIE_KIND | MHD_GET_ARGUMENT_KIND | MHD_FOOTER_KIND,
        count_value, &used);
    for (size_t i = 0; headers[i] && headers[i + 1]; i += 2)
        head += strlen(headers[i]) + strlen(headers[i + 1]) + 4;
    *ret_head = head;
    *ret_room = used < SERVER_HEADER_MEMORY ? SERVER_HEADER_MEMORY - used : 0;
    return head <= *ret_room;
}

const char *request_scheme(const struct request *req)
{
    return req->server->tls ? "https" : "http";
}

const char *request_client_scheme(struct request *req)
{
    const char *proto;

    if (!req->connection || !req->connection->trusted)
        return request_scheme(req);
    proto = request_header(req, "X-Forwarded-Proto");
    if (proto && strcasecmp(proto, "https") == 0)
        return "https";
    if (proto && strcasecmp(proto, "http") == 0)
        return "http";
    return request_scheme(req);
}

const char *request_header(struct request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

struct header_search {
    const char *const *names;
    size_t n_names;
    unsigned found;
    size_t index;
    const char *value;
};

static enum MHD_Result search_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct header_search *h = cls;

    for (size_t i = 0; i < h->n_names; i++) {
        if (strcasecmp(key, h->names[i]) == 0) {
            h->found++;
            h->index = i;
            h->value = value ? value : "";
        }
    }
    return MHD_YES;
}

unsigned request_headers_find(struct request *req, const char *const *names, size_t n,
                              size_t *ret_index, const char **ret_value)
{
    struct header_search h = {.names = names, .n_names = n};

    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, search_header, &h);
    if (h.found) {
        *ret_index = h.index;
        *ret_value = h.value;
    }
    return h.found;
}

const char *request_query(struct request *req, const char *key)
{
    const char *v = NULL;

    if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v,
                                      NULL) != MHD_YES)
        return NULL;
    return v ? v : "";
}

const char *request_body(const struct request *req, size_t *ret_len)
{
    *ret_len = req->body_len;
    return req->body ? req->body : "";
}

struct MHD_Response *server_json_response(json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    struct MHD_Response *resp;

    if (!text)
        fatal("out of memory (json_dumps)");
    resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        fatal("out of memory (response)");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return resp;
}

void request_reply_response(struct request *req, unsigned status, struct MHD_Response *resp)
{
    if (!req->in_access || req->state != REQUEST_READING)
        fatal("request %s %s: a prepared response can only answer at once", req->method, req->path);
    if (MHD_queue_response(req->conn, status, resp) != MHD_YES)
        log_debug("http: cannot queue the answer to %s %s", req->method, req->path);
    req->status = status;
    request_set_queued(req);
}

void request_moved(struct request *req, size_t n)
{
    req->server->moved += n;
    req->moved += n;
}

struct MHD_Connection *request_connection(const struct request *req)
{
    return req->conn;
}

/* Keeps resp (its reference taken) as the answer of a suspended request, and resumes it:
 * queued when libmicrohttpd calls back (on_access). */
static void request_answer_response_later(struct request *req, unsigned status,
                                          struct MHD_Response *resp)
{
    req->answer_resp = resp;
    req->status = status;
    req->state = REQUEST_ANSWERED;
    suspended_unlink(req);
    request_drop_deadline(req);
    if (!req->in_access)
        conn_resume(req);
}

void request_reply_taken(struct request *req, unsigned status, struct MHD_Response *resp)
{
    if (req->state == REQUEST_SUSPENDED) {
        request_answer_response_later(req, status, resp);
        return;
    }
    request_reply_response(req, status, resp);
    MHD_destroy_response(resp);
}

bool request_queue_stream(struct request *req, unsigned status, struct MHD_Response *resp,
                          struct stream *st)
{
    if (req->state == REQUEST_SUSPENDED) {
        req->stream = st;
        request_answer_response_later(req, status, resp);
        return true;
    }
    if (!req->in_access || req->state != REQUEST_READING)
        fatal("request %s %s: a stream answers at once or after a suspend", req->method, req->path);
    req->status = status;
    req->state = REQUEST_QUEUED;
    if (MHD_queue_response(req->conn, status, resp) != MHD_YES) {
        log_debug("http: cannot queue the stream answering %s %s", req->method, req->path);
        return false;
    }
    MHD_destroy_response(resp);
    req->stream = st;
    return true;
}

void request_resume_soon(struct request *req)
{
    struct server *s = req->server;

    if (req->resume_queued)
        return;
    req->resume_queued = true;
    req->prev_resume = s->resume_tail;
    if (s->resume_tail)
        s->resume_tail->next_resume = req;
    else
        s->resume_head = req;
    s->resume_tail = req;
    server_kick(s);
}

/* Keeps the answer of a suspended request (text is taken over) and resumes it. */
static void request_answer_later(struct request *req, unsigned status, char *text, size_t len,
                                 const char *type)
{
    if (req->state != REQUEST_SUSPENDED)
        fatal("request %s %s answered twice", req->method, req->path);
    req->answer = text;
    req->answer_len = len;
    req->answer_type = type;
    req->status = status;
    req->state = REQUEST_ANSWERED;
    suspended_unlink(req);
    request_drop_deadline(req);
    if (req->in_access)
        return; /* suspended and answered in one go: on_access queues it */
    conn_resume(req);
}

void request_reply_json(struct request *req, unsigned status, json_t *body)
{
    struct MHD_Response *resp;
    char *text;

    if (req->state == REQUEST_READING && req->in_access) {
        resp = server_json_response(body);
        json_decref(body);
        if (req->hang_up)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        request_reply_response(req, status, resp);
        MHD_destroy_response(resp);
        return;
    }
    text = json_dumps(body, JSON_COMPACT);
    if (!text)
        fatal("out of memory (json_dumps)");
    json_decref(body);
    request_answer_later(req, status, text, strlen(text), "application/json");
}

void request_reply_owned(struct request *req, unsigned status, const char *type, char *text,
                         size_t len)
{
    struct MHD_Response *resp;

    if (req->state != REQUEST_READING || !req->in_access) {
        request_answer_later(req, status, text, len, type);
        return;
    }
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        fatal("out of memory (response)");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    request_reply_response(req, status, resp);
    MHD_destroy_response(resp);
}

void request_reply_text(struct request *req, unsigned status, const char *text, size_t len)
{
    request_reply_owned(req, status, "text/plain; charset=utf-8", xstrndup(text, len), len);
}

void request_reply_error(struct request *req, unsigned status, const char *code, const char *fmt,
                         ...)
{
    char message[1024];
    json_t *body;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    body = json_pack("{s:s, s:o}", "error", code, "message", json_text(message));
    request_reply_json(req, status, request_error_shaped(req, status, body));
}

json_t *request_error_shaped(const struct request *req, unsigned status, json_t *body)
{
    return req->error_shape ? req->error_shape(status, body) : body;
}

void request_set_error_shape(struct request *req, json_t *(*shape)(unsigned status, json_t *body))
{
    req->error_shape = shape;
}

void request_suspend(struct request *req, uint64_t timeout_ms)
{
    struct server *s = req->server;
    struct suspend_deadline *d;

    if (req->state != REQUEST_READING || !req->in_access)
        fatal("request %s %s suspended after its answer", req->method, req->path);
    req->state = REQUEST_SUSPENDED;
    req->timeout_ms = timeout_ms;
    d = xcalloc(1, sizeof(*d));
    d->req = req;
    d->timer.data = d;
    uv_timer_init(s->loop, &d->timer);
    uv_timer_start(&d->timer, on_deadline, timeout_ms, 0);
    req->deadline = d;
    req->next_suspended = s->suspended;
    if (s->suspended)
        s->suspended->prev_suspended = req;
    s->suspended = req;
}

void request_set_deadline(struct request *req, uint64_t timeout_ms)
{
    if (req->state != REQUEST_SUSPENDED || !req->deadline)
        return;
    req->timeout_ms = timeout_ms;
    uv_timer_start(&req->deadline->timer, on_deadline, timeout_ms, 0);
}

void server_set_body_streaming(struct server *s, bool (*fn)(void *data, struct request *req),
                               void *data)
{
    s->streams_body = fn;
    s->streams_body_data = data;
}

bool request_body_streamed(const struct request *req)
{
    return req->body_streamed;
}

bool request_body_pending(const struct request *req)
{
    return req->body_streamed && !req->body_done;
}

void request_body_sink(struct request *req, const struct request_body_sink *sink, void *data)
{
    if (!req->body_streamed || req->body_done || req->completing)
        return;
    req->sink = sink;
    req->sink_data = data;
    req->body_dropped = !sink;
    if (!req->in_access)
        conn_resume(req);
}

void request_body_resume(struct request *req)
{
    if (req->body_streamed && !req->body_done && !req->in_access)
        conn_resume(req);
}

/* libmicrohttpd sent the 101: the connection is the owner's now. */
static void on_mhd_upgrade(void *cls, struct MHD_Connection *connection, void *con_cls,
                           const char *extra_in, size_t extra_in_size, MHD_socket sock,
                           struct MHD_UpgradeResponseHandle *urh)
{
    struct upgraded *u = cls;
    struct server *s = u->server;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    u->urh = urh;
    if (info && info->socket_context) {
        u->conn = info->socket_context;
        u->conn->upgraded = true;
    }
    u->next = s->upgraded;
    if (s->upgraded)
        s->upgraded->prev = u;
    s->upgraded = u;
    u->ev->upgraded(u->data, u, sock, extra_in, extra_in_size);
}

const char *request_version(const struct request *req)
{
    return req->version;
}

bool request_can_upgrade(const struct request *req)
{
    return !req->server->tls;
}

void request_reply_upgrade(struct request *req, const char *const *headers,
                           const struct request_upgrade_events *ev, void *data)
{
    struct upgraded *u = xcalloc(1, sizeof(*u));
    struct MHD_Response *resp = MHD_create_response_for_upgrade(on_mhd_upgrade, u);

    if (!resp)
        fatal("out of memory (upgrade response)");
    u->server = req->server;
    u->req = req;
    u->ev = ev;
    u->data = data;
    req->upgrade = u;
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    request_reply_taken(req, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
}

void upgraded_close(struct upgraded *u)
{
    struct server *s = u->server;

    if (u->prev)
        u->prev->next = u->next;
    else
        s->upgraded = u->next;
    if (u->next)
        u->next->prev = u->prev;
    if (u->req)
        u->req->upgrade = NULL;
    if (u->conn)
        u->conn->upgraded = false;
    MHD_upgrade_action(u->urh, MHD_UPGRADE_ACTION_CLOSE);
    free(u);
    server_kick(s);
}

struct MHD_PostProcessor *request_form_parser(struct request *req, MHD_PostDataIterator iter,
                                              void *data)
{
    return MHD_create_post_processor(req->conn, 1024, iter, data);
}

void request_abort_on_hangup(struct request *req)
{
    req->hangup_aborts = true;
}

void request_set_abort(struct request *req, void (*on_abort)(void *data), void *data)
{
    req->on_abort = on_abort;
    req->abort_data = data;
}

void server_set_done(struct server *s, server_done_fn done, void *data)
{
    s->done = done;
    s->done_data = data;
}

/* Copies text into a field of REQUEST_USER_MAX + 1 bytes; longer text is cut. */
static void set_field(char *field, const char *text)
{
    size_t len = text ? strnlen(text, REQUEST_USER_MAX) : 0;

    memcpy(field, text ? text : "", len);
    field[len] = '\0';
}

void request_set_user(struct request *req, const char *name, int role)
{
    set_field(req->user, name);
    req->role = role;
}

const char *request_user(const struct request *req)
{
    return req->user[0] ? req->user : NULL;
}

int request_role(const struct request *req)
{
    return req->role;
}

void request_set_action(struct request *req, const char *action, const char *service)
{
    req->action = action;
    set_field(req->service, service);
}

const char *request_action(const struct request *req)
{
    return req->action;
}

const char *request_service(const struct request *req)
{
    return req->service[0] ? req->service : NULL;
}

void request_set_route(struct request *req, const char *route)
{
    req->route = route;
}

const char *request_route(const struct request *req)
{
    return req->route;
}

uint64_t request_begun_ns(const struct request *req)
{
    return req->begun_ns;
}

/* True when the parameters of a media range (len bytes from ';') hold q=0: "not
 * acceptable" (RFC 9110 12.4.2). */
static bool refused(const char *params, size_t len)
{
    const char *end = params + len;

    for (const char *p = memchr(params, ';', len); p;
         p = memchr(p + 1, ';', (size_t)(end - p - 1))) {
        const char *q = p + 1 + strspn(p + 1, " \t");
        size_t zeros;

        if (q + 3 > end || strncasecmp(q, "q=0", 3) != 0)
            continue;
        zeros = strspn(q + 3, ".0");
        if (q + 3 + zeros >= end || strchr(" \t;", q[3 + zeros]))
            return true;
    }
    return false;
}

bool request_header_lists(struct request *req, const char *name, const char *type, bool wildcards)
{
    const char *h = request_header(req, name), *slash = strchr(type, '/');

    for (const char *p = h; p && *p;) {
        size_t skip = strspn(p, " \t,"), len;
        p += skip;
        len = strcspn(p, ",;");
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (((len == strlen(type) && strncasecmp(p, type, len) == 0) ||
             (wildcards && len == 3 && strncmp(p, "*/*", 3) == 0) ||
             (wildcards && slash && len == (size_t)(slash - type) + 2 &&
              strncasecmp(p, type, len - 1) == 0 && p[len - 1] == '*')) &&
            !refused(p + len, strcspn(p + len, ",")))
            return true;
        p += strcspn(p, ",");
    }
    return false;
}
