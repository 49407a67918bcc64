/* The reverse proxy (SPEC section 7 "Proxy and on demand"): /s/NAME/PATH?QUERY goes to
 * the service's port on the loopback, the answer streamed back as it comes. One request
 * is one call of lib/upstream.c (HTTP/1.1 over connections kept between requests); the
 * answer's body passes through a stream (http/stream.h) whose cap pauses
 * the upstream while the client reads slowly. See proxy.h for what it does not do yet. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/manifest.h"
#include "http/proxy.h"
#include "http/render.h"
#include "http/stream.h"
#include "http/tunnel.h"
#include "lib/alloc.h"
#include "lib/clock.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/upstream.h"

#define PROXY_PREFIX       "/s/"
#define PROXY_HEADERS_MAX  128 /* request header lines forwarded, at most */
#define PROXY_RESPONSE_MAX 128 /* answer header lines passed back, at most */

struct proxy {
    uv_loop_t *loop;
    const struct config *config;
    struct demand *demand;   /* starts on demand, swaps, requests in flight */
    struct proxied *tunnels; /* WebSockets open (or opening) */
    struct registry *reg;
    struct supervisor *sup;
    struct upstreams *upstreams; /* the connections to the services */
    struct gate *gate;
};

/* One proxied request: from the handler until both the upstream transfer and the
 * client's side are over. */
struct proxied {
    struct proxy *proxy;
    struct request *req;        /* until the answer's head is queued (then the stream has it) */
    struct upstream_call *call; /* until done() */
    struct stream *st;          /* from the head until the client goes or the body ends */
    bool head, in_call, client_gone, suspended;
    bool openai;    /* a /v1/ request: errors in OpenAI's shape */
    bool counted;   /* in its service's requests in flight (usage_begin) */
    size_t rest_at; /* where in its target the upstream's path begins */
    char service[MANIFEST_NAME_MAX + 1];
    struct demand_hold *hold; /* while it waits for its service's start on demand */
    bool websocket;           /* an upgrade to WebSocket: tunnelled, not fetched */
    struct tunnel *tunnel;    /* ...until it is over */
    struct proxied *next_tunnel, *prev_tunnel; /* in the proxy's list, while it is */
    /* A streamed body on its way (request_body_streamed): the request it comes from, while
     * it does, and what the client sent that the upstream has not taken yet. */
    struct request *body_req;
    char *up_buf;
    size_t up_len, up_off, up_cap;
    bool up_end, up_held; /* the body is in; the client's side waits for room */
    /* A small answer of known length (PROXY_SMALL_ANSWER at most) is kept, head and body,
     * until it is whole, then queued as one response: libmicrohttpd sends a response held
     * in memory with its head in one system call, a stream's head and body in two. */
    bool small_ok; /* no streamed body, not HEAD: the answer may be kept */
    struct MHD_Response *small;
    char *small_buf;
    size_t small_len, small_size;
    unsigned small_status;
};

/* A header name, with its length. */
struct name {
    const char *text;
    size_t len;
};

/* clang-format off */
#define NAME(lit) {lit, sizeof(lit) - 1}
/* RFC 9110 7.6.1: meant for one connection, never forwarded (with those Connection
 * names); Host, the framing and the Expect of a body already read are set anew. */
static const struct name hop_by_hop[] = {
    NAME("Connection"), NAME("Keep-Alive"), NAME("Proxy-Connection"), NAME("TE"),
    NAME("Trailer"), NAME("Transfer-Encoding"), NAME("Upgrade"), NAME("Proxy-Authenticate"),
    NAME("Proxy-Authorization"),
};
/* clang-format on */

/* Whether name (len bytes) is the literal lit, ASCII case aside: lengths first, as most
 * names differ in length. */
#define NAME_IS(name, len, lit) ((len) == sizeof(lit) - 1 && strncasecmp(name, lit, len) == 0)

static bool is_hop_by_hop(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
        if (hop_by_hop[i].len == len && strncasecmp(hop_by_hop[i].text, name, len) == 0)
            return true;
    return false;
}

/* Whether a Connection header's value (a comma-separated list) names name (len bytes). */
static bool connection_names(const char *connection, const char *name, size_t len)
{
    for (const char *p = connection; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        if (n == len && strncasecmp(p, name, n) == 0)
            return true;
        p += n;
    }
    return false;
}

/* What of the client's request goes upstream. */
struct forward {
    struct proxied *pr;
    const char *connection; /* the client's Connection header */
    bool drop_authorization;
    bool framed;      /* it sent Content-Length or Transfer-Encoding: a body, maybe empty */
    const char *host; /* its Host */
    /* The lines that go ("Name: value\r\n" each), in one buffer grown as they come. */
    char *lines;
    size_t len, cap;
    size_t n; /* the client's lines among them */
};

static void forward_add(struct forward *f, const char *name, const char *value)
{
    size_t name_len = strlen(name), value_len = strlen(value);
    size_t need = f->len + name_len + value_len + 4;

    if (need > f->cap) {
        f->cap = need > 2 * f->cap ? need : 2 * f->cap;
        f->lines = xrealloc(f->lines, f->cap);
    }
    memcpy(f->lines + f->len, name, name_len);
    memcpy(f->lines + f->len + name_len, ": ", 2);
    memcpy(f->lines + f->len + name_len + 2, value, value_len);
    memcpy(f->lines + f->len + name_len + 2 + value_len, "\r\n", 2);
    f->len = need;
}

static bool forward_header(void *data, const char *name, const char *value)
{
    struct forward *f = data;
    size_t len = strlen(name);

    /* Host and the framing are set anew by the call; kept for X-Forwarded-Host and to know
     * whether a body comes. */
    if (NAME_IS(name, len, "Host")) {
        f->host = value;
        return true;
    }
    if (NAME_IS(name, len, "Content-Length") || NAME_IS(name, len, "Transfer-Encoding")) {
        f->framed = true;
        return true;
    }
    if (is_hop_by_hop(name, len) || connection_names(f->connection, name, len) ||
        NAME_IS(name, len, "Expect") || strncasecmp(name, "X-Forwarded-", 12) == 0 ||
        NAME_IS(name, len, "Forwarded") || NAME_IS(name, len, "X-Real-IP") ||
        (f->drop_authorization &&
         (NAME_IS(name, len, "Authorization") || NAME_IS(name, len, "X-API-Key"))))
        return true;
    if (f->n == PROXY_HEADERS_MAX)
        return true; /* past the cap: left out, the walk goes on for the framing */
    f->n++;
    forward_add(f, name, value);
    return true;
}

/* The client's headers that go upstream (forward_header), then X-Forwarded-For, -Proto and
 * -Host, into f; the caller adds its own and frees f->lines. */
static void forward_collect(struct proxied *pr, struct forward *f)
{
    struct request *req = pr->req;

    f->pr = pr;
    f->connection = request_header(req, "Connection");
    /* With keys, Authorization and X-API-Key carry the daemon's key, not the service's. */
    f->drop_authorization = gate_has_keys(pr->proxy->gate);
    f->cap = 512;
    f->lines = xmalloc(f->cap);
    request_headers_each(req, forward_header, f);
    forward_add(f, "X-Forwarded-For", request_client(req));
    forward_add(f, "X-Forwarded-Proto", request_client_scheme(req));
    if (f->host)
        forward_add(f, "X-Forwarded-Host", f->host);
}

/* The rest of the body, if any, is not wanted: the server drops it as it comes. */
static void proxied_drop_body(struct proxied *pr)
{
    if (pr->body_req)
        request_body_sink(pr->body_req, NULL, NULL);
    pr->body_req = NULL;
}

static void proxied_drop_small(struct proxied *pr)
{
    if (pr->small)
        MHD_destroy_response(pr->small); /* frees small_buf */
    pr->small = NULL;
    pr->small_buf = NULL;
}

static void proxied_free(struct proxied *pr)
{
    proxied_drop_small(pr);
    if (pr->counted)
        demand_end(pr->proxy->demand, pr->service);
    free(pr->up_buf);
    free(pr);
}

/* A request let go of before it was sent on (answered, or its client gone). */
static void proxied_discard(struct proxied *pr)
{
    proxied_drop_body(pr);
    pr->req = NULL;
    free(pr->up_buf);
    free(pr);
}

/* pr's tunnel is over (or not wanted any more): out of the proxy's list. */
static void proxied_end_tunnel(struct proxied *pr)
{
    struct proxy *p = pr->proxy;

    if (!pr->tunnel)
        return;
    tunnel_close(pr->tunnel); /* no-op past its end: see on_tunnel_closed */
    pr->tunnel = NULL;
    if (pr->prev_tunnel)
        pr->prev_tunnel->next_tunnel = pr->next_tunnel;
    else
        p->tunnels = pr->next_tunnel;
    if (pr->next_tunnel)
        pr->next_tunnel->prev_tunnel = pr->prev_tunnel;
}

/* Both sides are over: the request is forgotten. */
static void proxied_release_if_done(struct proxied *pr)
{
    if (!pr->call && !pr->req && !pr->st && !pr->tunnel)
        proxied_free(pr);
}

/* --- the client's side -------------------------------------------------------------- */

/* The client went away (or the server stops) before the answer's head: the upstream
 * transfer is dropped. */
static void on_request_abort(void *data)
{
    struct proxied *pr = data;

    proxied_drop_body(pr);
    proxied_drop_small(pr);
    pr->req = NULL;
    upstream_cancel(pr->call);
    pr->call = NULL;
    proxied_end_tunnel(pr);
    proxied_release_if_done(pr);
}

/* The client went away during the body. */
static void on_stream_gone(void *data)
{
    struct proxied *pr = data;
    struct stream *st = pr->st;

    pr->st = NULL;
    pr->client_gone = true;
    proxied_drop_body(pr);
    /* The server ends streams when it stops or finds the client half gone: an answer
     * whose upstream goes on was not whole, so it must not end as if it were. */
    if (st && pr->call)
        stream_abort(st);
    if (pr->in_call)
        return; /* the transfer is told to stop by the callback's answer */
    upstream_cancel(pr->call);
    pr->call = NULL;
    proxied_release_if_done(pr);
}

/* The client read what waited: the upstream may send more. */
static void on_stream_drained(void *data)
{
    struct proxied *pr = data;

    if (pr->call && !pr->in_call)
        upstream_resume(pr->call);
}

/* --- the upstream's side ------------------------------------------------------------ */

/* Names and values of the answer's headers that go back (pairs, NULL-terminated). */
static size_t answer_headers(char *const *lines, size_t n, const char **out, size_t max)
{
    const char *connection = NULL;
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        if (strncasecmp(lines[i], "Connection:", 11) == 0)
            connection = lines[i] + 11;
    for (size_t i = 0; i < n && k + 2 < max; i++) {
        char *colon = strchr(lines[i], ':');
        const char *value;
        size_t len;

        if (!colon || colon == lines[i])
            continue;
        *colon = '\0';
        len = (size_t)(colon - lines[i]);
        value = colon + 1 + strspn(colon + 1, " \t");
        if (is_hop_by_hop(lines[i], len) || connection_names(connection, lines[i], len) ||
            NAME_IS(lines[i], len, "Content-Length") || NAME_IS(lines[i], len, "Date"))
            continue;
        out[k++] = lines[i];
        out[k++] = value;
    }
    out[k] = NULL;
    return k;
}

/* The small answer is whole: it goes to the client, its head and body in one piece. */
static void small_reply(struct proxied *pr)
{
    struct request *req = pr->req;
    struct MHD_Response *resp = pr->small;

    pr->small = NULL;
    pr->small_buf = NULL;
    pr->req = NULL;
    pr->head = true;
    request_set_abort(req, NULL, NULL);
    request_reply_taken(req, pr->small_status, resp);
}

/* Keeps a small answer's head (the pairs of headers) until its body of length bytes is
 * in. */
static enum upstream_take small_begin(struct proxied *pr, unsigned status,
                                      const char *const *headers, uint64_t length)
{
    char *buf = length > 0 ? xmalloc(length) : NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        length, buf, buf ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);

    if (!resp)
        fatal("out of memory (response)");
    for (size_t i = 0; headers[i] && headers[i + 1]; i += 2)
        MHD_add_response_header(resp, headers[i], headers[i + 1]);
    pr->small = resp;
    pr->small_buf = buf;
    pr->small_len = 0;
    pr->small_size = length;
    pr->small_status = status;
    if (length == 0)
        small_reply(pr);
    else /* the head came: proxy_read_timeout is now how long the body may stay silent */
        request_set_deadline(pr->req, pr->proxy->config->proxy_read_timeout_ms);
    return UPSTREAM_TAKEN;
}

static enum upstream_take small_body(struct proxied *pr, const char *buf, size_t len)
{
    if (len > pr->small_size - pr->small_len)
        return UPSTREAM_ABORT; /* more than its Content-Length said: on_done answers 502 */
    memcpy(pr->small_buf + pr->small_len, buf, len);
    pr->small_len += len;
    if (pr->small_len == pr->small_size)
        small_reply(pr);
    else
        request_set_deadline(pr->req, pr->proxy->config->proxy_read_timeout_ms);
    return UPSTREAM_TAKEN;
}

/* An error answer in SPEC's shape, or OpenAI's (below, with the other answers). */
static void proxy_error(struct request *req, bool openai, unsigned status, unsigned retry_s,
                        const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static enum upstream_take on_head(void *data, unsigned status, char *const *lines, size_t n,
                                  int64_t length)
{
    struct proxied *pr = data;
    const char *headers[2 * PROXY_RESPONSE_MAX + 1];
    size_t head, room;
    struct stream_options o = {.status = status,
                               .headers = headers,
                               .length = length >= 0 ? (uint64_t)length : MHD_SIZE_UNKNOWN,
                               /* a stream of unknown length may stay quiet for long (events,
                                * tokens): keepalive finds a client that vanished */
                               .long_lived = length < 0,
                               .cap = PROXY_BUFFER,
                               .gone = on_stream_gone,
                               .drained = on_stream_drained,
                               .data = pr};

    if (!pr->req)
        return UPSTREAM_ABORT;
    if (status == 204 || status == 304)
        o.length = 0; /* no body, whatever the upstream says */
    answer_headers(lines, n, headers, sizeof(headers) / sizeof(headers[0]));
    if (!request_answer_head_fits(pr->req, headers, &head, &room)) {
        /* libmicrohttpd would close the connection with no answer: say why instead. */
        request_set_abort(pr->req, NULL, NULL);
        proxy_error(pr->req, pr->openai, MHD_HTTP_BAD_GATEWAY, 0, "upstream_error",
                    "%s answered with %zu bytes of headers; with this request's own, the "
                    "daemon can pass at most %zu (libmicrohttpd builds both in one %d-byte "
                    "buffer a connection)",
                    pr->service, head, room, SERVER_HEADER_MEMORY);
        pr->req = NULL;
        return UPSTREAM_ABORT;
    }
    if (pr->small_ok && o.length <= PROXY_SMALL_ANSWER)
        return small_begin(pr, status, headers, o.length);
    request_set_abort(pr->req, NULL, NULL);
    pr->head = true;
    pr->st = request_stream_with(pr->req, &o);
    pr->req = NULL; /* the stream has it now */
    /* A body that stops coming for proxy_read_timeout, while the client takes what comes,
     * is cut (visibly), as nginx does: else its client and the service's count in flight
     * would wait for ever. */
    upstream_set_read_timeout(pr->call, pr->proxy->config->proxy_read_timeout_ms);
    return pr->st ? UPSTREAM_TAKEN : UPSTREAM_ABORT;
}

static enum upstream_take on_body(void *data, const char *buf, size_t len)
{
    struct proxied *pr = data;
    bool taken;

    if (pr->small)
        return small_body(pr, buf, len);
    if (!pr->st)
        return UPSTREAM_ABORT;
    pr->in_call = true;
    if (stream_unread(pr->st) == 0) {
        stream_write_all(pr->st, buf, len); /* one piece of a read always fits */
        taken = true;
    } else {
        taken = stream_write(pr->st, buf, len);
    }
    pr->in_call = false;
    if (pr->client_gone)
        return UPSTREAM_ABORT;
    if (!taken && pr->body_req) {
        /* The answer goes out only once the request's body is in (libmicrohttpd): a
         * service that answers this much before reading all of it would wait forever. */
        log_warning("%s: answered more than %d bytes before reading the whole request body: "
                    "cut (the answer goes out only once the body is in)",
                    pr->service, PROXY_BUFFER);
        return UPSTREAM_ABORT;
    }
    return taken ? UPSTREAM_TAKEN : UPSTREAM_PAUSE;
}

/* --- a streamed request body ----------------------------------------------------------- */

/* A piece of the client's body: into the buffer, as much as fits; the rest waits. */
static size_t on_client_body(void *data, const char *buf, size_t len)
{
    struct proxied *pr = data;
    size_t take;

    if (!pr->up_buf) {
        pr->up_buf = xmalloc(PROXY_UPLOAD_BUFFER);
        pr->up_cap = PROXY_UPLOAD_BUFFER;
    }
    if (pr->up_off > 0) {
        memmove(pr->up_buf, pr->up_buf + pr->up_off, pr->up_len - pr->up_off);
        pr->up_len -= pr->up_off;
        pr->up_off = 0;
    }
    take = pr->up_cap > pr->up_len ? pr->up_cap - pr->up_len : 0;
    if (take > len)
        take = len;
    memcpy(pr->up_buf + pr->up_len, buf, take);
    pr->up_len += take;
    pr->up_held = take < len;
    if (take > 0 && pr->req && pr->call) /* the body moves: the answer's wait starts anew */
        request_set_deadline(pr->req, pr->proxy->config->proxy_read_timeout_ms);
    if (take > 0)
        upstream_resume_upload(pr->call);
    return take;
}

static void on_client_body_end(void *data)
{
    struct proxied *pr = data;

    pr->up_end = true;
    pr->body_req = NULL; /* the server is done with the sink */
    upstream_resume_upload(pr->call);
}

static const struct request_body_sink client_body = {on_client_body, on_client_body_end};

/* The upstream call asks for the body to send: what the client sent, its end, or a pause. */
static ssize_t on_upload(void *data, char *buf, size_t max)
{
    struct proxied *pr = data;
    size_t n = pr->up_len - pr->up_off;

    if (n == 0) {
        if (!pr->up_end)
            return UPSTREAM_UPLOAD_PAUSE;
        free(pr->up_buf); /* all of it went: not held while the answer comes */
        pr->up_buf = NULL;
        pr->up_cap = pr->up_len = pr->up_off = 0;
        return 0;
    }
    if (n > max)
        n = max;
    memcpy(buf, pr->up_buf + pr->up_off, n);
    pr->up_off += n;
    if (pr->up_off == pr->up_len)
        pr->up_off = pr->up_len = 0;
    if (pr->up_held && pr->body_req) {
        pr->up_held = false;
        request_body_resume(pr->body_req); /* room again: the client's side goes on */
    }
    return (ssize_t)n;
}

static void on_done(void *data, const struct upstream_result *res);

static const struct upstream_events upstream_events = {
    .head = on_head, .body = on_body, .upload = on_upload, .done = on_done};

/* --- errors ------------------------------------------------------------------------- */

/* OpenAI's error type for a status: what its clients branch on. */
static const char *openai_type(unsigned status)
{
    switch (status) {
    case MHD_HTTP_UNAUTHORIZED:
        return "authentication_error";
    case MHD_HTTP_FORBIDDEN:
        return "permission_error";
    case MHD_HTTP_TOO_MANY_REQUESTS:
        return "rate_limit_error";
    }
    return status >= 500 ? "server_error" : "invalid_request_error";
}

json_t *proxy_openai_shape(unsigned status, json_t *body)
{
    json_t *inner = json_copy(body);

    json_object_set(inner, "code", json_object_get(body, "error"));
    json_object_del(inner, "error");
    json_object_set_new(inner, "type", json_string(openai_type(status)));
    json_decref(body);
    return json_pack("{s:o}", "error", inner);
}

/* Answers req (at once or after a suspend) with body, an error in SPEC's shape
 * ({"error": code, "message", ...}, taken): for a /v1/ request in OpenAI's instead
 * ({"error": {"message", "type", "code", ...}}), which its clients parse. retry_s: a
 * Retry-After header (0: none). */
static void proxy_reply(struct request *req, bool openai, unsigned status, json_t *body,
                        unsigned retry_s)
{
    struct MHD_Response *resp;
    char retry[16];

    if (openai)
        body = proxy_openai_shape(status, body);
    resp = server_json_response(body);
    json_decref(body);
    if (retry_s) {
        snprintf(retry, sizeof(retry), "%u", retry_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry);
    }
    request_reply_taken(req, status, resp);
}

static void proxy_error(struct request *req, bool openai, unsigned status, unsigned retry_s,
                        const char *code, const char *fmt, ...)
{
    char message[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    proxy_reply(req, openai, status,
                json_pack("{s:s, s:o}", "error", code, "message", json_text(message)), retry_s);
}

/* How a request whose service gave no usable answer is answered, by why: the same for a
 * proxied call (on_done) and a WebSocket's (on_tunnel_refused). */
struct no_answer {
    unsigned status;
    const char *code;
    const char *says; /* on_done's words for it, after the service's name */
};

static const struct no_answer *no_answer(enum upstream_failure failure)
{
    static const struct no_answer timed_out = {MHD_HTTP_GATEWAY_TIMEOUT, "upstream_timeout",
                                               "did not answer in time"},
                                  refused = {MHD_HTTP_BAD_GATEWAY, "upstream_unreachable",
                                             "does not accept connections on its port"},
                                  broken = {MHD_HTTP_BAD_GATEWAY, "upstream_error",
                                            "answered badly"};

    if (failure == UPSTREAM_TIMED_OUT)
        return &timed_out;
    return failure == UPSTREAM_REFUSED ? &refused : &broken;
}

/* The upstream transfer ended: a whole answer ends the body; a cut one cuts the client's;
 * no answer at all is 502 or 504. */
static void on_done(void *data, const struct upstream_result *res)
{
    struct proxied *pr = data;

    pr->call = NULL;
    proxied_drop_body(pr);  /* what the upstream did not read is not wanted */
    proxied_drop_small(pr); /* not whole: the client gets an error instead */
    if (pr->st) {
        if (res->failure == UPSTREAM_OK) {
            stream_end(pr->st, NULL, 0);
        } else {
            log_info("%s: the upstream's answer broke off (%s): the client's is cut too",
                     pr->service, res->error);
            stream_abort(pr->st);
        }
        pr->st = NULL;
    } else if (pr->req) {
        const struct no_answer *a = no_answer(res->failure);

        request_set_abort(pr->req, NULL, NULL);
        proxy_error(pr->req, pr->openai, a->status, 0, a->code, "%s %s: %s", pr->service, a->says,
                    res->error ? res->error : "no answer");
        pr->req = NULL;
    }
    proxied_release_if_done(pr);
}

/* --- forwarding ---------------------------------------------------------------------- */

/* The service's address: "127.0.0.1" unless the manifest binds its port to one. */
static const char *upstream_ip(const struct manifest *m)
{
    return m->n_ports && m->ports[0].host_ip && *m->ports[0].host_ip &&
                   strcmp(m->ports[0].host_ip, "0.0.0.0") != 0 &&
                   strcmp(m->ports[0].host_ip, "::") != 0
               ? m->ports[0].host_ip
               : "127.0.0.1";
}

/* --- a WebSocket ---------------------------------------------------------------------- */

/* A service's answer other than 101 gives its status; no usable answer, a proxied call's
 * code (no_answer). */
static void on_tunnel_refused(void *data, unsigned status, enum upstream_failure failure,
                              const char *message)
{
    struct proxied *pr = data;
    struct request *req = pr->req;
    const struct no_answer *a = no_answer(failure);

    pr->req = NULL;
    request_set_abort(req, NULL, NULL);
    if (failure == UPSTREAM_OK && status != 0)
        proxy_error(req, false, status >= 400 && status <= 599 ? status : MHD_HTTP_BAD_GATEWAY, 0,
                    "upgrade_refused", "%s: %s", pr->service, message);
    else
        proxy_error(req, false, a->status, 0, a->code, "%s: %s", pr->service, message);
}

static void on_tunnel_answered(void *data)
{
    struct proxied *pr = data;

    request_set_abort(pr->req, NULL, NULL);
    pr->req = NULL; /* answered 101: the tunnel has the connection */
}

static void on_tunnel_closed(void *data)
{
    struct proxied *pr = data;

    proxied_end_tunnel(pr);
    proxied_release_if_done(pr);
}

static const struct tunnel_events tunnel_events = {on_tunnel_refused, on_tunnel_answered,
                                                   on_tunnel_closed};

/* True when req asks for a WebSocket (Upgrade: websocket on a GET). */
static bool wants_websocket(struct request *req)
{
    const char *upgrade = request_header(req, "Upgrade");

    return upgrade && strcasecmp(upgrade, "websocket") == 0 &&
           strcmp(request_method(req), "GET") == 0;
}

/* Opens pr's WebSocket to svc: its request head (the client's headers less the hop-by-hop
 * ones, X-Forwarded-* set, Connection and Upgrade anew) over a tunnel. */
static void proxy_tunnel(struct proxied *pr, const struct service *svc)
{
    struct proxy *p = pr->proxy;
    struct request *req = pr->req;
    const char *ip = upstream_ip(svc->manifest);
    uint64_t handshake_ms = p->config->proxy_connect_timeout_ms + p->config->proxy_read_timeout_ms +
                            PROXY_HOLD_SLACK_MS;
    struct forward f = {0};
    char *head;
    size_t len;
    int r;

    forward_collect(pr, &f);
    head = upstream_request_head("GET", request_uri(req) + pr->rest_at, ip, svc->manifest->port,
                                 f.lines, f.len, "Connection: Upgrade\r\nUpgrade: websocket\r\n", 0,
                                 &len);
    free(f.lines);
    if (!pr->suspended) {
        request_suspend(req, handshake_ms);
        request_abort_on_hangup(req);
        pr->suspended = true;
    } else { /* it waited for a start: the handshake gets its whole time from now */
        request_set_deadline(req, handshake_ms);
    }
    request_set_abort(req, on_request_abort, pr);
    r = tunnel_open(p->loop, req, ip, svc->manifest->port, head, len,
                    p->config->proxy_connect_timeout_ms, p->config->proxy_read_timeout_ms,
                    &tunnel_events, pr, &pr->tunnel);
    free(head);
    if (r == 0) {
        pr->next_tunnel = p->tunnels;
        if (p->tunnels)
            p->tunnels->prev_tunnel = pr;
        p->tunnels = pr;
    } else {
        request_set_abort(req, NULL, NULL);
        proxied_discard(pr);
        proxy_error(req, false, MHD_HTTP_BAD_GATEWAY, 0, "upstream_unreachable",
                    "%s cannot be reached: %s", svc->name, strerror(-r));
        return;
    }
    pr->counted = true;
    demand_begin(p->demand, pr->service); /* in flight while it is open: swaps wait */
}

/* Sends pr's request on to svc, now running: the request is (or stays) suspended until the
 * answer's head comes. */
static void proxy_forward(struct proxied *pr, const struct service *svc)
{
    struct proxy *p = pr->proxy;
    struct request *req = pr->req;
    const char *body;
    const char *rest = request_uri(req) + pr->rest_at;
    struct forward f = {0};
    struct upstream_request up;
    size_t body_len;
    bool framed;
    int r;

    if (pr->websocket) {
        proxy_tunnel(pr, svc);
        return;
    }
    forward_collect(pr, &f);
    body = request_body(req, &body_len);
    /* A body the client framed, even an empty one, goes with a Content-Length. */
    framed = body_len > 0 || f.framed;
    up = (struct upstream_request){.ip = upstream_ip(svc->manifest),
                                   .port = svc->manifest->port,
                                   .method = request_method(req),
                                   .target = rest,
                                   .headers = f.lines,
                                   .headers_len = f.len,
                                   .body = framed ? (body ? body : "") : NULL,
                                   .body_len = body_len,
                                   .connect_timeout_ms = p->config->proxy_connect_timeout_ms};
    if (request_body_streamed(req)) {
        const char *length = request_header(req, "Content-Length");

        up.body = NULL;
        up.streamed = true;
        up.body_length = length && !request_header(req, "Transfer-Encoding")
                             ? (int64_t)strtoull(length, NULL, 10)
                             : -1;
    }
    pr->small_ok = !up.streamed && strcmp(up.method, "HEAD") != 0;
    r = upstream_call(p->upstreams, &up, &upstream_events, pr, &pr->call);
    free(f.lines);
    if (r < 0) {
        bool openai = pr->openai;
        proxied_discard(pr);
        proxy_error(req, openai, MHD_HTTP_SERVICE_UNAVAILABLE, 5, "unavailable",
                    "the daemon is stopping");
        return;
    }
    if (!pr->suspended) {
        request_suspend(req, p->config->proxy_read_timeout_ms);
        request_abort_on_hangup(req);
        pr->suspended = true;
    } else {
        request_set_deadline(req, p->config->proxy_read_timeout_ms); /* it waited for a start */
    }
    request_set_abort(req, on_request_abort, pr);
    if (up.streamed && !pr->up_end) {
        pr->body_req = req;
        request_body_sink(req, &client_body, pr);
    }
    pr->counted = true;
    demand_begin(p->demand, pr->service);
}

/* --- requests held for a start on demand ---------------------------------------------- */

/* The client of a held request went away (or the server stops): it leaves the queue. */
static void on_held_abort(void *data)
{
    struct proxied *pr = data;

    demand_hold_cancel(pr->hold);
    proxied_discard(pr);
}

/* The held request's service runs, or will not: it goes on, or is told why. */
static void on_held(void *data, struct service *svc, const struct demand_answer *a)
{
    struct proxied *pr = data;
    struct request *req = pr->req;
    bool openai = pr->openai;
    json_t *body;
    unsigned status;

    pr->hold = NULL;
    request_set_abort(req, NULL, NULL);
    if (a->outcome == DEMAND_READY) {
        proxy_forward(pr, svc);
        return;
    }
    proxied_discard(pr);
    switch (a->outcome) {
    case DEMAND_REFUSED:
        status = render_outcome(svc, a->res, &body);
        if (a->res->outcome == SUPERVISOR_TIMED_OUT) {
            /* Not healthy within start_period: stopped, and the client may try again. */
            json_object_set_new(body, "error", json_string("service_starting"));
            proxy_reply(req, openai, MHD_HTTP_SERVICE_UNAVAILABLE, body, 5);
        } else {
            proxy_reply(req, openai, status, body, 0);
        }
        break;
    case DEMAND_TIMED_OUT:
        proxy_error(req, openai, MHD_HTTP_SERVICE_UNAVAILABLE, 5, "service_starting", "%s",
                    a->message);
        break;
    case DEMAND_FULL:
        proxy_error(req, openai, MHD_HTTP_TOO_MANY_REQUESTS, 5, "queue_full", "%s", a->message);
        break;
    case DEMAND_READY:
    case DEMAND_GONE:
        proxy_error(req, openai, MHD_HTTP_NOT_FOUND, 0, "not_found", "%s", a->message);
        break;
    }
}

/* pr's service does not run (or a swap holds new requests for it back): pr waits for its
 * start, which the first such request makes. */
static void proxy_hold(struct proxy *p, struct proxied *pr, struct service *svc)
{
    enum service_state state = supervisor_status(p->sup, svc)->state;

    if (!demand_held(p->demand, svc->name) && (state == STATE_STOPPED || state == STATE_FAILED)) {
        log_info("%s: started on demand by a proxied request from %s", svc->name,
                 request_client(pr->req));
        gate_record(p->gate, pr->req, "start", svc->name, MHD_HTTP_ACCEPTED);
    }
    if (pr->suspended) {
        request_set_deadline(pr->req, demand_hold_max_ms(p->demand, svc) + PROXY_HOLD_SLACK_MS);
    } else {
        request_suspend(pr->req, demand_hold_max_ms(p->demand, svc) + PROXY_HOLD_SLACK_MS);
        request_abort_on_hangup(pr->req);
        pr->suspended = true;
    }
    request_set_abort(pr->req, on_held_abort, pr);
    pr->hold = demand_hold(p->demand, svc, on_held, pr);
}

/* --- the request -------------------------------------------------------------------- */

/* The service the path names and where its rest begins; NULL when answered. */
static struct service *proxy_target(struct proxy *p, struct request *req, char *name,
                                    size_t name_size)
{
    const char *uri = request_uri(req), *seg = uri + strlen(PROXY_PREFIX);
    size_t len = strcspn(seg, "/?");
    struct service *svc;
    json_t *err;

    if (strncmp(uri, PROXY_PREFIX, strlen(PROXY_PREFIX)) != 0) {
        /* /%73/... reached /s/ once unescaped: the target as sent names no service. */
        request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "send the proxy's prefix as it is: /s/NAME/...");
        return NULL;
    }
    if (len < name_size) {
        memcpy(name, seg, len);
        name[len] = '\0';
    }
    if (len == 0 || len >= name_size || !manifest_name_valid(name)) {
        request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_name",
                            "service names match ^[a-z0-9][a-z0-9._-]{0,62}$");
        return NULL;
    }
    if (seg[len] != '/') {
        /* /s/NAME: relative links of the service's pages need the slash, as nginx does. */
        char *location = xasprintf(PROXY_PREFIX "%s/%s", name, seg + len);
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
        request_reply_response(req, MHD_HTTP_PERMANENT_REDIRECT, resp);
        MHD_destroy_response(resp);
        free(location);
        return NULL;
    }
    svc = registry_find(p->reg, name);
    if (!svc && (err = registry_find_error(p->reg, name))) {
        request_reply_json(req, MHD_HTTP_UNPROCESSABLE_CONTENT, render_invalid_manifest(err));
        return NULL;
    }
    if (!svc) {
        request_reply_error(req, MHD_HTTP_NOT_FOUND, "not_found",
                            "no service named '%s' (GET /services lists them)", name);
        return NULL;
    }
    return svc;
}

/* Sends req on to svc (its upstream path from rest_at in its target), starting it first
 * when it is not running and may be started on demand. openai: errors in OpenAI's shape. */
/* Answers req when svc cannot take it now (returns false): no supervisor, an upgrade, no
 * port, a broken manifest of a stopped service, on_demand: reject. */
/* Whether a target can go on a request line as it is: no space, no control character
 * (libmicrohttpd 0.9.75 takes "GET /a b HTTP/1.1" as the target "/a b"). */
static bool target_sendable(const char *target)
{
    for (const unsigned char *c = (const unsigned char *)target; *c; c++)
        if (*c <= ' ' || *c == 0x7f)
            return false;
    return true;
}

static bool proxy_route_allowed(struct proxy *p, struct request *req, struct service *svc,
                                bool openai)
{
    const char *name = svc->name;
    const struct service_status *st;
    bool runs;

    if (!target_sendable(request_uri(req))) {
        proxy_error(req, openai, MHD_HTTP_BAD_REQUEST, 0, "bad_request",
                    "the request target holds a space or a control character: escape it "
                    "(%%20)");
        return false;
    }
    if (!p->sup) {
        proxy_error(req, openai, MHD_HTTP_SERVICE_UNAVAILABLE, 0, "unavailable",
                    "this daemon runs no services");
        return false;
    }
    /* Another upgrade (h2c, of curl --http2) is ignored (RFC 9110 7.8): the request goes
     * on as HTTP/1.1, without its Upgrade and what its Connection names. */
    if (wants_websocket(req) && strcmp(request_version(req), MHD_HTTP_VERSION_1_0) == 0) {
        proxy_error(req, openai, MHD_HTTP_BAD_REQUEST, 0, "bad_request",
                    "a WebSocket's handshake needs HTTP/1.1 (RFC 6455 4.1); this one came as "
                    "HTTP/1.0");
        return false;
    }
    if (wants_websocket(req) && !request_can_upgrade(req)) {
        proxy_error(req, openai, MHD_HTTP_NOT_IMPLEMENTED, 0, "upgrade_not_supported",
                    "WebSockets are not passed over the daemon's own HTTPS (libmicrohttpd "
                    "0.9.75 relays them 4 bytes at a time): terminate TLS in a proxy in "
                    "front (nginx), or use plain HTTP on the loopback");
        return false;
    }
    if (!svc->manifest->port) {
        proxy_error(req, openai, MHD_HTTP_CONFLICT, 0, "no_port",
                    "%s has no port to proxy to (its manifest lists no ports)", name);
        return false;
    }
    st = supervisor_status(p->sup, svc);
    runs = st->state == STATE_RUNNING || st->state == STATE_UNHEALTHY;
    if (!runs && svc->manifest_error) {
        /* Nothing starts from a broken manifest. */
        proxy_reply(req, openai, MHD_HTTP_UNPROCESSABLE_CONTENT,
                    render_invalid_manifest(svc->manifest_error), 0);
        return false;
    }
    if (!(runs && demand_admits(p->demand, svc)) && svc->manifest->on_demand_reject) {
        /* Not running, or being swapped out: nothing would start it again. */
        proxy_error(req, openai, MHD_HTTP_SERVICE_UNAVAILABLE, 5, "service_not_running",
                    "%s is %s%s and its manifest says on_demand: reject: start it first (POST "
                    "/services/%s/start)",
                    name, lifecycle_state_name(st->state), runs ? " (being swapped out)" : "",
                    name);
        return false;
    }
    return true;
}

static struct proxied *proxied_new(struct proxy *p, struct request *req, bool openai,
                                   size_t rest_at)
{
    struct proxied *pr = xcalloc(1, sizeof(*pr));

    pr->proxy = p;
    pr->req = req;
    pr->openai = openai;
    pr->rest_at = rest_at;
    return pr;
}

static void proxy_route_with(struct proxy *p, struct request *req, struct service *svc, bool openai,
                             size_t rest_at, struct proxied *pr);

static void proxy_route(struct proxy *p, struct request *req, struct service *svc, bool openai,
                        size_t rest_at)
{
    proxy_route_with(p, req, svc, openai, rest_at, NULL);
}

/* proxy_route() with the request's record made already (pr: a /v1/ request whose body was
 * read in part to route it), or NULL. */
static void proxy_route_with(struct proxy *p, struct request *req, struct service *svc, bool openai,
                             size_t rest_at, struct proxied *pr)
{
    const char *name = svc->name;
    const struct service_status *st;
    bool runs, admitted;

    if (pr && !proxy_route_allowed(p, req, svc, openai)) {
        proxied_discard(pr);
        return;
    }
    if (!pr && !proxy_route_allowed(p, req, svc, openai))
        return;
    st = supervisor_status(p->sup, svc);
    runs = st->state == STATE_RUNNING || st->state == STATE_UNHEALTHY;
    admitted = runs && demand_admits(p->demand, svc);
    if (!pr)
        pr = proxied_new(p, req, openai, rest_at);
    pr->websocket = !openai && wants_websocket(req);
    snprintf(pr->service, sizeof(pr->service), "%s", name);
    if (admitted)
        proxy_forward(pr, svc);
    else
        proxy_hold(p, pr, svc);
}

void proxy_handle(void *data, struct request *req)
{
    struct proxy *p = data;
    char name[MANIFEST_NAME_MAX + 1];
    struct service *svc;

    request_set_route(req, "/s/{name}/{path}");
    svc = proxy_target(p, req, name, sizeof(name));
    if (svc)
        proxy_route(p, req, svc, false, strlen(PROXY_PREFIX) + strlen(name));
}

/* --- OpenAI-style routing: /v1/ ----------------------------------------------------- */

/* The service that lists model (by name or alias), the first in name order; NULL when
 * none does. */
static struct service *model_owner(struct proxy *p, const char *model, const char **ret_model)
{
    size_t n = registry_count(p->reg);

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(p->reg, i);
        const char *found = manifest_model_for(svc->manifest, model);
        if (found) {
            *ret_model = found;
            return svc;
        }
    }
    return NULL;
}

/* One entry of GET /v1/models. */
static json_t *model_entry(const char *id, const struct service *svc)
{
    return json_pack("{s:s, s:s, s:i, s:s}", "id", id, "object", "model", "created", 0, "owned_by",
                     svc->name);
}

/* GET /v1/models: every model of every service (aliases too), starting nothing; GET
 * /v1/models/ID: one. */
static void list_models(struct proxy *p, struct request *req, const char *one)
{
    size_t n = registry_count(p->reg);
    json_t *data = json_array();

    for (size_t i = 0; i < n; i++) {
        const struct service *svc = registry_at(p->reg, i);
        const struct manifest *m = svc->manifest;

        for (size_t k = 0; m->models && m->models[k]; k++)
            if (!one || strcmp(one, m->models[k]) == 0)
                json_array_append_new(data, model_entry(m->models[k], svc));
        for (size_t k = 0; m->model_aliases && m->model_aliases[k]; k += 2)
            if (!one || strcmp(one, m->model_aliases[k]) == 0)
                json_array_append_new(data, model_entry(m->model_aliases[k], svc));
    }
    if (!one) {
        request_reply_json(req, MHD_HTTP_OK,
                           json_pack("{s:s, s:o}", "object", "list", "data", data));
        return;
    }
    if (json_array_size(data) == 0) {
        json_decref(data);
        proxy_error(req, true, MHD_HTTP_NOT_FOUND, 0, "model_not_found",
                    "no service lists the model '%s' (GET /v1/models lists them)", one);
        return;
    }
    request_reply_json(req, MHD_HTTP_OK, json_incref(json_array_get(data, 0)));
    json_decref(data);
}

/* The "model" of a JSON body, into model (NUL-terminated): 0, or answered. */
/* Checks a model name as the body gave it (len bytes) into model; else answers 400. */
static int model_check(struct request *req, const char *text, size_t len, char *model, size_t size)
{
    if (len == 0) {
        proxy_error(req, true, MHD_HTTP_BAD_REQUEST, 0, "model_missing",
                    "the body's \"model\" must be a non-empty string (GET /v1/models lists "
                    "them)");
        return -1;
    }
    if (len >= size || memchr(text, '\0', len)) {
        proxy_error(req, true, MHD_HTTP_BAD_REQUEST, 0, "invalid_model",
                    "a \"model\" has at most %zu bytes and no NUL", size - 1);
        return -1;
    }
    memcpy(model, text, len);
    model[len] = '\0';
    return 0;
}

/* The model a JSON body (text, len bytes) names; else answers 400. */
static int body_model(struct request *req, const char *text, size_t len, char *model, size_t size)
{
    json_t *doc, *value;
    json_error_t jerr;
    int r;

    doc = len > 0 ? json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!json_is_object(doc)) {
        json_decref(doc);
        proxy_error(req, true, MHD_HTTP_BAD_REQUEST, 0, "invalid_body",
                    "the body must be a JSON object with a \"model\" (it names the service "
                    "that answers)");
        return -1;
    }
    value = json_object_get(doc, "model");
    if (!json_is_string(value)) {
        json_decref(doc);
        return model_check(req, "", 0, model, size);
    }
    r = model_check(req, json_string_value(value), json_string_length(value), model, size);
    json_decref(doc);
    return r;
}

/* --- a /v1/ body read to find its model ------------------------------------------------ */

/* A /v1/ request whose body is read to route it: a JSON body whole (up to
 * PROXY_V1_BODY_MAX), a form's up to its "model" field (within PROXY_V1_FORM_PEEK, so that
 * an upload is never held whole). What was read goes on to the service first. */
struct routing {
    struct proxy *proxy;
    struct request *req;
    char *buf;
    size_t len;
    struct MHD_PostProcessor *form; /* multipart/form-data or urlencoded: its parser */
    char model[MANIFEST_MODEL_MAX + 2];
    size_t model_len;
    bool model_seen, model_done;
};

static void routing_free(struct routing *r)
{
    if (r->form)
        MHD_destroy_post_processor(r->form);
    free(r->buf);
    free(r);
}

/* The form's fields as libmicrohttpd's parser finds them: "model" is kept; the field after
 * it ends it. */
static enum MHD_Result on_form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data, uint64_t off,
                                     size_t size)
{
    struct routing *r = cls;

    if (!key || strcmp(key, "model") != 0) {
        r->model_done = r->model_seen;
        return r->model_done ? MHD_NO : MHD_YES;
    }
    r->model_seen = true;
    if (r->model_len + size > MANIFEST_MODEL_MAX) {
        r->model_len = sizeof(r->model); /* over the cap: model_check says so */
        return MHD_YES;
    }
    memcpy(r->model + r->model_len, data, size);
    r->model_len += size;
    return MHD_YES;
}

/* Answers a routing that failed (in the sink: its body's rest is dropped). */
static void routing_end_here(struct routing *r)
{
    request_set_abort(r->req, NULL, NULL);
    request_body_sink(r->req, NULL, NULL);
    routing_free(r);
}

static void on_routing_abort(void *data)
{
    struct routing *r = data;

    request_body_sink(r->req, NULL, NULL);
    routing_free(r);
}

/* The model is known: the request goes on to its service, with what was read of its body
 * first (body_done: all of it). */
static void routing_route(struct routing *r, bool body_done)
{
    struct proxy *p = r->proxy;
    struct request *req = r->req;
    char model[MANIFEST_MODEL_MAX + 1];
    const char *found;
    struct service *svc;
    struct proxied *pr;

    if (model_check(req, r->model, r->model_len > MANIFEST_MODEL_MAX ? sizeof(model) : r->model_len,
                    model, sizeof(model)) < 0) {
        routing_end_here(r);
        return;
    }
    svc = model_owner(p, model, &found);
    if (!svc) {
        proxy_error(req, true, MHD_HTTP_NOT_FOUND, 0, "model_not_found",
                    "no service lists the model '%s' (GET /v1/models lists them)", model);
        routing_end_here(r);
        return;
    }
    pr = proxied_new(p, req, true, 0);
    pr->suspended = true;
    pr->up_cap = r->len > PROXY_UPLOAD_BUFFER || body_done ? r->len : PROXY_UPLOAD_BUFFER;
    pr->up_buf = xrealloc(r->buf, pr->up_cap);
    pr->up_len = r->len;
    r->buf = NULL;
    pr->up_end = body_done;
    if (!body_done) {
        pr->body_req = req;
        request_body_sink(req, &client_body, pr);
    }
    request_set_abort(req, NULL, NULL);
    routing_free(r);
    proxy_route_with(p, req, svc, true, 0, pr);
}

static size_t on_routing_body(void *data, const char *buf, size_t len)
{
    struct routing *r = data;
    size_t limit = r->form ? PROXY_V1_FORM_PEEK : PROXY_V1_BODY_MAX;

    if (r->len + len > limit) {
        if (r->form) {
            proxy_error(r->req, true, MHD_HTTP_BAD_REQUEST, 0, "model_missing",
                        "a form is routed by its \"model\" field, which must come within its "
                        "first %d bytes",
                        PROXY_V1_FORM_PEEK);
        } else {
            proxy_error(r->req, true, MHD_HTTP_CONTENT_TOO_LARGE, 0, "body_too_large",
                        "a /v1/ JSON body is read whole to route it, up to %d bytes",
                        PROXY_V1_BODY_MAX);
        }
        routing_end_here(r);
        return len;
    }
    r->buf = xrealloc(r->buf, r->len + len);
    memcpy(r->buf + r->len, buf, len);
    r->len += len;
    if (r->form && !r->model_done)
        MHD_post_process(r->form, buf, len);
    if (r->model_done)
        routing_route(r, false);
    return len;
}

static void on_routing_body_end(void *data)
{
    struct routing *r = data;
    char model[MANIFEST_MODEL_MAX + 1];

    if (r->form) {
        MHD_destroy_post_processor(r->form); /* what it still held is told */
        r->form = NULL;
        if (!r->model_seen) {
            model_check(r->req, "", 0, model, sizeof(model));
            routing_end_here(r);
            return;
        }
    } else if (body_model(r->req, r->buf, r->len, model, sizeof(model)) < 0) {
        routing_end_here(r);
        return;
    } else {
        r->model_len = strlen(model);
        memcpy(r->model, model, r->model_len);
    }
    routing_route(r, true);
}

static const struct request_body_sink routing_body = {on_routing_body, on_routing_body_end};

/* Reads req's body (it streams) to route it by its model. */
static void routing_begin(struct proxy *p, struct request *req)
{
    const char *type = request_header(req, "Content-Type"), *length;
    struct routing *r = xcalloc(1, sizeof(*r));

    r->proxy = p;
    r->req = req;
    if (type && (strncasecmp(type, "multipart/form-data", 19) == 0 ||
                 strncasecmp(type, "application/x-www-form-urlencoded", 33) == 0)) {
        r->form = request_form_parser(req, on_form_field, r);
        if (!r->form) {
            routing_free(r);
            proxy_error(req, true, MHD_HTTP_BAD_REQUEST, 0, "invalid_body",
                        "this form cannot be read (its Content-Type's boundary?)");
            return;
        }
    }
    length = request_header(req, "Content-Length");
    if (!r->form && length && strtoull(length, NULL, 10) > PROXY_V1_BODY_MAX) {
        routing_free(r);
        proxy_error(req, true, MHD_HTTP_CONTENT_TOO_LARGE, 0, "body_too_large",
                    "a /v1/ JSON body is read whole to route it, up to %d bytes",
                    PROXY_V1_BODY_MAX);
        return;
    }
    request_suspend(req, p->config->proxy_read_timeout_ms);
    request_abort_on_hangup(req);
    request_set_abort(req, on_routing_abort, r);
    request_body_sink(req, &routing_body, r);
}

/* A load or unload: its request, and the operation it waits for. */
struct model_op {
    struct request *req;
    struct supervisor_op *op;
    char model[MANIFEST_MODEL_MAX + 1];
};

static void on_model_op_abort(void *data)
{
    struct model_op *m = data;

    supervisor_op_cancel(m->op); /* the operation goes on */
    free(m);
}

/* Answers a load or unload: the model with its service's status, or why not. */
static void on_model_op_done(void *data, struct service *svc, const struct supervisor_result *res)
{
    struct model_op *m = data;
    json_t *body;
    unsigned status = render_outcome(svc, res, &body);

    request_set_abort(m->req, NULL, NULL);
    if (status == MHD_HTTP_OK) {
        json_t *entry = model_entry(m->model, svc);
        json_object_set_new(entry, "service", body);
        request_reply_json(m->req, status, entry);
    } else {
        proxy_reply(m->req, true, status, body, 0);
    }
    free(m);
}

/* POST /v1/models/ID/load (start its service, answered once healthy) and /unload (stop
 * it: an operator's key). */
static void load_model(struct proxy *p, struct request *req, const char *id, size_t id_len,
                       bool load)
{
    struct model_op *m;
    struct supervisor_op *op;
    struct service *svc;
    const char *found;

    if (strcmp(request_method(req), "POST") != 0) {
        proxy_error(req, true, MHD_HTTP_METHOD_NOT_ALLOWED, 0, "method_not_allowed",
                    "a model is loaded or unloaded with POST");
        return;
    }
    if (id_len == 0 || id_len > MANIFEST_MODEL_MAX) {
        proxy_error(req, true, MHD_HTTP_BAD_REQUEST, 0, "invalid_model",
                    "a model name has 1 to %d bytes", MANIFEST_MODEL_MAX);
        return;
    }
    m = xcalloc(1, sizeof(*m));
    memcpy(m->model, id, id_len);
    svc = model_owner(p, m->model, &found);
    if (!svc || !p->sup) {
        proxy_error(req, true, svc ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_NOT_FOUND, 0,
                    svc ? "unavailable" : "model_not_found",
                    svc ? "this daemon runs no services"
                        : "no service lists the model '%s' (GET /v1/models lists them)",
                    m->model);
        free(m);
        return;
    }
    if (!load && !gate_require(p->gate, req, NEED_OPERATE, "stop", svc->name)) {
        free(m);
        return;
    }
    if (load && svc->manifest_error) {
        proxy_reply(req, true, MHD_HTTP_UNPROCESSABLE_CONTENT,
                    render_invalid_manifest(svc->manifest_error), 0);
        free(m);
        return;
    }
    m->req = req;
    request_set_action(req, load ? "start" : "stop", svc->name);
    request_suspend(req, p->config->proxy_read_timeout_ms + svc->manifest->health_start_period_ms);
    request_set_abort(req, on_model_op_abort, m);
    /* done may come before supervisor_start() returns (it runs already): m is gone then. */
    op = load ? supervisor_start(p->sup, svc, false, true, false, on_model_op_done, m)
              : supervisor_stop(p->sup, svc, on_model_op_done, m);
    if (op)
        m->op = op;
}

void proxy_handle_v1(void *data, struct request *req)
{
    struct proxy *p = data;
    const char *path = request_path(req), *found, *text;
    char model[MANIFEST_MODEL_MAX + 1];
    struct service *svc;
    size_t len = strlen(path), text_len;

    request_set_route(req, "/v1/{path}");
    if (strncmp(path, "/v1/models/", 11) == 0 && len > 16 && strcmp(path + len - 5, "/load") == 0) {
        load_model(p, req, path + 11, len - 16, true);
        return;
    }
    if (strncmp(path, "/v1/models/", 11) == 0 && len > 18 &&
        strcmp(path + len - 7, "/unload") == 0) {
        load_model(p, req, path + 11, len - 18, false);
        return;
    }
    if (strcmp(path, "/v1/models") == 0 || strncmp(path, "/v1/models/", 11) == 0) {
        if (strcmp(request_method(req), "GET") != 0 && strcmp(request_method(req), "HEAD") != 0) {
            proxy_error(req, true, MHD_HTTP_METHOD_NOT_ALLOWED, 0, "method_not_allowed",
                        "the models are read with GET");
            return;
        }
        list_models(p, req, path[10] == '/' ? path + 11 : NULL);
        return;
    }
    if (wants_websocket(req)) {
        proxy_error(req, true, MHD_HTTP_NOT_IMPLEMENTED, 0, "upgrade_not_supported",
                    "the proxy passes WebSockets under /s/NAME/ only, not routed by model");
        return;
    }
    if (request_body_streamed(req)) {
        routing_begin(p, req);
        return;
    }
    text = request_body(req, &text_len); /* a request without a body */
    if (body_model(req, text, text_len, model, sizeof(model)) < 0)
        return;
    svc = model_owner(p, model, &found);
    if (!svc) {
        proxy_error(req, true, MHD_HTTP_NOT_FOUND, 0, "model_not_found",
                    "no service lists the model '%s' (GET /v1/models lists them)", model);
        return;
    }
    proxy_route(p, req, svc, true, 0);
}

struct proxy *proxy_new(uv_loop_t *loop, const struct config *config, struct registry *reg,
                        struct supervisor *sup, struct demand *demand, struct gate *gate)
{
    struct proxy *p = xcalloc(1, sizeof(*p));

    p->loop = loop;
    p->config = config;
    p->demand = demand;
    p->reg = reg;
    p->sup = sup;
    p->gate = gate;
    upstreams_new(loop, &p->upstreams);
    return p;
}

void proxy_close_tunnels(struct proxy *p)
{
    while (p && p->tunnels) {
        struct proxied *pr = p->tunnels;

        proxied_end_tunnel(pr);
        proxied_release_if_done(pr);
    }
}

void proxy_free(struct proxy *p)
{
    if (!p)
        return;
    upstreams_free(p->upstreams);
    free(p);
}
