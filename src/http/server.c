/* The HTTP server: libmicrohttpd in external-epoll mode, driven by a uv_poll on its epoll
 * fd and a uv_timer set from MHD_get_timeout(). One thread: the loop's. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/server.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/netaddr.h"

#define SERVER_TICK_MS          250
#define SERVER_IDLE_TICK_MS     1000
#define SERVER_TRIM_INTERVAL_MS 1000

enum request_state {
    REQUEST_READING,   /* headers or body still arriving */
    REQUEST_SUSPENDED, /* handed to the handler, which will reply later */
    REQUEST_ANSWERED,  /* answered while suspended: the answer waits to be queued */
    REQUEST_QUEUED,    /* the response was handed to libmicrohttpd */
};

struct request {
    struct server *server;
    struct MHD_Connection *conn;
    const char *method; /* owned by libmicrohttpd for the request's life */
    const char *path;
    char *body;
    size_t body_len;
    bool body_too_large;
    enum request_state state;
    bool in_access; /* libmicrohttpd's access handler is on the stack */
    unsigned status;
    char *answer; /* a later answer's text, queued when libmicrohttpd calls back */
    size_t answer_len;
    const char *answer_type; /* its Content-Type */
    void (*on_abort)(void *data);
    void *abort_data;
    struct suspend_deadline *deadline; /* while suspended */
    uint64_t timeout_ms;
    struct request *next_suspended, *prev_suspended;
};

/* The deadline of a suspended request: its own allocation, since the timer outlives the
 * request until libuv has closed it. */
struct suspend_deadline {
    uv_timer_t timer;
    struct request *req; /* NULL once the request no longer needs it */
};

struct server {
    uv_loop_t *loop;
    struct MHD_Daemon *mhd;
    uv_poll_t poll;
    uv_timer_t timer;
    int handles_open;
    server_handler_fn handler;
    void *handler_data;
    unsigned port;
    unsigned in_flight;
    unsigned connection_limit;
    unsigned connections; /* after the last run */
    uint64_t trimmed_at;  /* loop time of the last malloc_trim() */
    bool quiesced;
    struct request *suspended; /* list of suspended requests */
};

static void server_run(struct server *s);

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

/* Queues the answer stored while the request was suspended. */
static enum MHD_Result request_queue_stored(struct request *req)
{
    struct MHD_Response *resp;
    enum MHD_Result r;

    resp = MHD_create_response_from_buffer(req->answer_len, req->answer, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        fatal("out of memory (response)");
    req->answer = NULL;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->answer_type);
    r = MHD_queue_response(req->conn, req->status, resp);
    MHD_destroy_response(resp);
    req->state = REQUEST_QUEUED;
    return r;
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
        const char *length =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *encoding =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        req = xcalloc(1, sizeof(*req));
        req->server = s;
        req->conn = conn;
        req->method = method;
        req->path = url;
        *con_cls = req;
        s->in_flight++;
        if (encoding && strcasecmp(encoding, "chunked") != 0) {
            req->in_access = true;
            request_reply_error(req, MHD_HTTP_NOT_IMPLEMENTED, "unsupported_transfer_encoding",
                                "only the chunked transfer encoding is supported");
            req->in_access = false;
        } else if (length && strtoull(length, NULL, 10) > SERVER_BODY_MAX) {
            req->in_access = true;
            request_reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "body_too_large",
                                "the request body is larger than %d bytes", SERVER_BODY_MAX);
            req->in_access = false;
        }
        return MHD_YES;
    }

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
        if (req->state == REQUEST_SUSPENDED)
            MHD_suspend_connection(conn);
        else if (req->state == REQUEST_ANSWERED)
            r = request_queue_stored(req);
        else if (req->state != REQUEST_QUEUED)
            fatal("request %s %s: the handler neither answered nor suspended", method, url);
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
    if (req->state == REQUEST_SUSPENDED) {
        suspended_unlink(req);
        request_abort(req);
    }
    request_drop_deadline(req);
    free(req->answer);
    free(req->body);
    free(req);
    s->in_flight--;
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

static void on_timer(uv_timer_t *t)
{
    server_run(t->data);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    server_run(p->data);
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

    if (!s->mhd)
        return;
    MHD_run(s->mhd);
    info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    connections = info ? info->num_connections : 0;
    if (s->connections >= s->connection_limit && connections < s->connection_limit) {
        /* It stopped accepting at its limit and will listen again only in a run. */
        s->connections = connections;
        uv_timer_start(&s->timer, on_timer, 0, 0);
        return;
    }
    if (connections == 0 && s->connections > 0)
        server_trim(s);
    s->connections = connections;
    if (MHD_get_timeout(s->mhd, &timeout) != MHD_YES)
        timeout = SERVER_IDLE_TICK_MS;
    else if (timeout > SERVER_TICK_MS)
        timeout = SERVER_TICK_MS;
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

int server_new(uv_loop_t *loop, const char *listen_addr, server_handler_fn handler, void *data,
               struct server **ret)
{
    struct server *s;
    const union MHD_DaemonInfo *info;
    int fd = -1, r;
    unsigned port = 0;

    r = listen_socket(listen_addr, &fd, &port);
    if (r < 0)
        return r;

    s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->handler = handler;
    s->handler_data = data;
    s->port = port;
    s->connection_limit = connection_limit();
    s->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_access, s,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)SERVER_HEADER_MEMORY,
        MHD_OPTION_CONNECTION_LIMIT, s->connection_limit, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)SERVER_IDLE_TIMEOUT_S, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, s, MHD_OPTION_END);
    if (!s->mhd) {
        close(fd);
        free(s);
        return -EIO;
    }
    info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!info) {
        MHD_stop_daemon(s->mhd);
        free(s);
        return -EIO;
    }
    uv_poll_init(loop, &s->poll, info->epoll_fd);
    uv_timer_init(loop, &s->timer);
    s->poll.data = s;
    s->timer.data = s;
    s->handles_open = 2;
    uv_poll_start(&s->poll, UV_READABLE, on_poll);
    server_run(s);
    *ret = s;
    return 0;
}

unsigned server_port(const struct server *s)
{
    return s->port;
}

unsigned server_requests_in_flight(const struct server *s)
{
    return s->in_flight;
}

void server_quiesce(struct server *s)
{
    MHD_socket fd;

    if (s->quiesced)
        return;
    s->quiesced = true;
    fd = MHD_quiesce_daemon(s->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct server *s = h->data;

    if (--s->handles_open == 0)
        free(s);
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
    server_run(s);
    server_run(s);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
}

const char *request_method(const struct request *req)
{
    return req->method;
}

const char *request_path(const struct request *req)
{
    return req->path;
}

const char *request_header(struct request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
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
    req->state = REQUEST_QUEUED;
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
    MHD_resume_connection(req->conn);
    /* Let libmicrohttpd pick it up on the next loop pass. */
    uv_timer_start(&req->server->timer, on_timer, 0, 0);
}

void request_reply_json(struct request *req, unsigned status, json_t *body)
{
    struct MHD_Response *resp;
    char *text;

    if (req->state == REQUEST_READING && req->in_access) {
        resp = server_json_response(body);
        json_decref(body);
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

void request_reply_text(struct request *req, unsigned status, const char *text, size_t len)
{
    struct MHD_Response *resp;

    if (req->state != REQUEST_READING || !req->in_access) {
        char *copy = xmalloc(len + 1);
        memcpy(copy, text, len);
        request_answer_later(req, status, copy, len, "text/plain; charset=utf-8");
        return;
    }
    resp = MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        fatal("out of memory (response)");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    request_reply_response(req, status, resp);
    MHD_destroy_response(resp);
}

void request_reply_error(struct request *req, unsigned status, const char *code, const char *fmt,
                         ...)
{
    char message[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    request_reply_json(req, status,
                       json_pack("{s:s, s:o}", "error", code, "message", json_text(message)));
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

void request_set_abort(struct request *req, void (*on_abort)(void *data), void *data)
{
    req->on_abort = on_abort;
    req->abort_data = data;
}
