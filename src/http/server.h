/* The HTTP server: libmicrohttpd driven from the libuv loop through its epoll fd, with no
 * thread of its own. It reads each request in full (body capped), hands it to one handler,
 * and sends what the handler replies, now or later (a suspended request). */
#ifndef NANNY_SERVER_H
#define NANNY_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>
#include <uv.h>

#include "lib/cidr.h"
#include "lib/netaddr.h"

#define SERVER_BODY_MAX    (64 * 1024)
#define SERVER_DISCARD_MAX (1024 * 1024) /* a larger body without length: hang up */
/* A streamed body nobody wants any more (answered early): dropped up to this, so that the
 * answer, which goes out once the body is in, reaches the client; then hang up. */
#define SERVER_STREAM_DISCARD_MAX (64 * 1024 * 1024)
#define SERVER_HEADER_MEMORY      (32 * 1024) /* per connection: request line and headers */
#define SERVER_CONNECTIONS_MAX    4096
#define SERVER_FD_RESERVE         128 /* file descriptors kept for the rest of the daemon */
#define SERVER_IDLE_TIMEOUT_S     10  /* a connection that sends and reads nothing this long */
#define SERVER_PER_CLIENT_MAX     256 /* connections one client address may hold (default) */
#define SERVER_RESERVE_PART       8   /* 1/8 of the connections is kept for... */
#define SERVER_RESERVE_SHARE      4   /* ...addresses that hold fewer than this many... */
#define SERVER_RESERVE_MIN_LIMIT  64  /* ...when the connection limit is at least this */
#define REQUEST_USER_MAX          64  /* characters of request_set_user()'s and _action()'s names */
/* The status the audit and the metrics give a request whose client went away before the
 * whole answer was sent (nginx's 499). */
#define SERVER_STATUS_CLIENT_CLOSED 499

struct server;
struct request; /* one HTTP request; owned by the server */

/* Called once per request when it has been read in full. The handler must call one of
 * request_reply*() now, or request_suspend() and reply later from the loop. */
typedef void (*server_handler_fn)(void *data, struct request *req);

/* Called once per request when it ends, answered or not (status 0 when the client went
 * away before the whole answer was sent), before it is freed: what the gate audits
 * (request_action()). */
typedef void (*server_done_fn)(void *data, struct request *req, unsigned status);

/* Binds and listens on listen (see netaddr_parse_listen). */
int server_new(uv_loop_t *loop, const char *listen, server_handler_fn handler, void *data,
               struct server **ret);

/* What server_new_with() takes beyond server_new(); NULL or zeroed: plain HTTP. */
struct server_options {
    const char *tls_cert; /* PEM certificate (then its chain): HTTPS, with tls_key */
    const char *tls_key;  /* PEM private key, unencrypted */
    unsigned
        idle_timeout_s; /* a connection silent this long is closed (0: SERVER_IDLE_TIMEOUT_S) */
};

/* server_new() with options. On failure err says why: a TLS file that cannot be read or
 * a key that does not match its certificate (named; SERVER_ERROR_TLS), or an address it
 * cannot listen on (a negative errno). */
#define SERVER_ERROR_TLS (-1000)
int server_new_with(uv_loop_t *loop, const char *listen, const struct server_options *options,
                    server_handler_fn handler, void *data, struct server **ret, char *err,
                    size_t err_size);

/* Reads the certificate and key files again and serves the new pair to new handshakes;
 * connections open now keep theirs. On failure the old pair stays and err says why.
 * -EINVAL without TLS. */
int server_reload_tls(struct server *s, char *err, size_t err_size);

/* The served certificate's subject, serial and end of validity; NULL without TLS. */
const char *server_tls_describe(const struct server *s);

/* How many connections one client address may hold (0: SERVER_PER_CLIENT_MAX); new ones
 * past it are closed at once. */
void server_set_per_client_max(struct server *s, unsigned max);

/* The proxies whose X-Forwarded-For names the client (copied; see http/realip.h): their
 * connections are not capped per address at accept, their requests are, by the client
 * each comes from (over the cap: 503 too_many_connections and the connection closed). */
void server_set_trusted_proxies(struct server *s, const struct cidr *trusted, size_t n);

/* Which requests' bodies are handed over as they come rather than read whole first: fn is
 * asked at the head of each request that has a body (its method, path and headers known).
 * True: the handler is called at once, and the body goes to the sink it sets
 * (request_body_sink), with no SERVER_BODY_MAX cap; a request it answers at once, or
 * suspends without a sink, has its body dropped as it comes (or not read while suspended),
 * and its answer goes out once the body is in. */
void server_set_body_streaming(struct server *s, bool (*fn)(void *data, struct request *req),
                               void *data);

/* A parser of req's form body (multipart/form-data or urlencoded, by its Content-Type)
 * that calls iter with each field as the body is fed to it (MHD_post_process); NULL when
 * the Content-Type names no form it can parse. MHD_destroy_post_processor() frees it. */
struct MHD_PostProcessor *request_form_parser(struct request *req, MHD_PostDataIterator iter,
                                              void *data);

/* A connection handed over after a 101 Switching Protocols (a WebSocket). */
struct upgraded;
struct request_upgrade_events {
    /* The 101 is out: fd is the client's connection (non-blocking) to read and write, never
     * to close; extra holds n bytes the client sent past its request. Until
     * upgraded_close(u). */
    void (*upgraded)(void *data, struct upgraded *u, int fd, const char *extra, size_t n);
    /* It ends without the owner: the client went before the 101 was out (upgraded is never
     * called), or the server stops (u is closed by it: let go of fd now). */
    void (*ended)(void *data);
};
/* False when the server cannot hand connections over well: under its own TLS,
 * libmicrohttpd 0.9.75 relays a handed-over connection's bytes itself, through what is
 * left of the connection's memory pool, and by then the 101's write buffer has taken all
 * of it: the relay gets its 8-byte emergency buffer, 4 bytes each way a run (a 300 KB
 * message took 0.75 s, at the 1 ms pace 29 s). A TLS-terminating proxy in front (nginx)
 * has no such limit. */
bool request_can_upgrade(const struct request *req);

/* Answers a suspended req with 101 and headers (name, value pairs, NULL-terminated; an
 * Upgrade among them), then hands its connection over (ev). */
void request_reply_upgrade(struct request *req, const char *const *headers,
                           const struct request_upgrade_events *ev, void *data);
/* Gives a connection handed over back: libmicrohttpd closes it. */
void upgraded_close(struct upgraded *u);

/* Where a streamed body goes. */
struct request_body_sink {
    /* A piece of the body: returns how much it took; less holds the reading until
     * request_body_resume(), when the rest is offered again. */
    size_t (*data)(void *data, const char *buf, size_t len);
    /* The body is complete (not called when the client goes first: the abort is). */
    void (*end)(void *data);
};
/* True when req's body comes as it arrives (server_set_body_streaming). */
bool request_body_streamed(const struct request *req);
/* The body goes to sink from now on (NULL: it is dropped as it comes); the reading goes
 * on. No-op once the body is in. */
void request_body_sink(struct request *req, const struct request_body_sink *sink, void *data);
/* The sink has room again: the reading goes on. */
void request_body_resume(struct request *req);

/* The function told of every request's end (one; NULL: none). */
void server_set_done(struct server *s, server_done_fn done, void *data);

/* The port actually bound (useful with port 0). */
unsigned server_port(const struct server *s);

/* Stops accepting new connections and closes the listening socket; requests in flight
 * go on. */
void server_quiesce(struct server *s);

/* How many requests are being read, handled or answered right now. */
unsigned server_requests_in_flight(const struct server *s);

/* Closes every connection and frees the server; the memory goes when the loop has closed
 * the server's handles. Suspended requests get their abort callback and a 503 first. */
void server_free(struct server *s);

/* True once the server quiesces (the daemon stops): a long answer (a stream) should not
 * begin. */
bool request_server_stopping(const struct request *req);

const char *request_method(const struct request *req);
/* The request's HTTP version, as its request line says ("HTTP/1.1"). */
const char *request_version(const struct request *req);
const char *request_path(const struct request *req);
/* The request target as the client sent it: the path still escaped, with its query ("?"
 * and after) if any; what a proxy forwards. */
const char *request_uri(const struct request *req);
const char *request_header(struct request *req, const char *name);
/* Calls fn(data, name, value) for each header in the order sent, until it returns false. */
void request_headers_each(struct request *req,
                          bool (*fn)(void *data, const char *name, const char *value), void *data);
/* Whether an answer with these headers (name, value pairs, NULL-terminated) fits where
 * libmicrohttpd 0.9.75 builds its head: in what is left of the connection's
 * SERVER_HEADER_MEMORY after the request's own head (it closes the connection without a
 * word when the head does not fit). An estimate on the safe side; when false, *ret_head
 * and *ret_room are the headers' bytes and the room, for the error that says so. */
bool request_answer_head_fits(struct request *req, const char *const *headers, size_t *ret_head,
                              size_t *ret_room);
/* "https" when the server speaks TLS, else "http". */
const char *request_scheme(const struct request *req);
/* The scheme the client used: through a trusted proxy (server_set_trusted_proxies), its
 * X-Forwarded-Proto when it says http or https; else request_scheme(). */
const char *request_client_scheme(struct request *req);
/* In one pass over the headers: how many of them have one of the n names (any case);
 * when there is one, the last one's name index and value go to *ret_index, *ret_value. */
unsigned request_headers_find(struct request *req, const char *const *names, size_t n,
                              size_t *ret_index, const char **ret_value);
/* Who sent the request, as text ("203.0.113.7"): its peer, or behind a trusted proxy the
 * client its X-Forwarded-For names (http/realip.h). Valid for the request's life. */
const char *request_client(const struct request *req);
/* The same as a socket address, its port zeroed. */
void request_client_address(const struct request *req, struct sockaddr_storage *ret);
/* Who a request is from, as the gate found it (http/gate.h): a key's name (copied) and its
 * role (an enum role of core/keys.h); request_user() is NULL and request_role() -1 while
 * none is known. */
void request_set_user(struct request *req, const char *name, int role);
const char *request_user(const struct request *req);
int request_role(const struct request *req);
/* Marks the request for the done function: what it does (a static verb, "start") and to
 * which service (copied; NULL: none). request_action() is NULL on unmarked requests. */
void request_set_action(struct request *req, const char *action, const char *service);
const char *request_action(const struct request *req);
const char *request_service(const struct request *req);
/* The pattern of the route that took the request ("/services/{name}/start"; a static
 * string), for metrics: NULL until a router sets it. */
void request_set_route(struct request *req, const char *route);
const char *request_route(const struct request *req);
/* When the request began (its headers were read), in uv_hrtime() nanoseconds. */
uint64_t request_begun_ns(const struct request *req);
/* True when the request's header name lists the media type type, whole (parameters after
 * ';' aside, but for q=0: not acceptable); with wildcards, "any/any" ("*" "/" "*") and
 * "application/any" list it too. */
bool request_header_lists(struct request *req, const char *name, const char *type, bool wildcards);
/* A query argument, already unescaped; NULL when absent, "" when given without a value. */
const char *request_query(struct request *req, const char *key);
const char *request_body(const struct request *req, size_t *ret_len);

/* Replies with a JSON document, now or after a suspend; takes the reference to body. */
void request_reply_json(struct request *req, unsigned status, json_t *body);

/* Replies at once with text (Content-Type text/plain; charset=utf-8). */
void request_reply_text(struct request *req, unsigned status, const char *text, size_t len);

/* Replies, now or after a suspend, with text (malloc'd, len bytes; taken over) of
 * Content-Type type (a static string). */
void request_reply_owned(struct request *req, unsigned status, const char *type, char *text,
                         size_t len);

/* Replies {"error": code, "message": ...}. */
void request_reply_error(struct request *req, unsigned status, const char *code, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));

/* The errors the server itself answers req with from now on (request_reply_error: a
 * deadline's 504, a stopping daemon's 503...), {"error": code, "message"}, go through shape
 * first (it takes the body and returns the one sent): a surface whose clients expect
 * another shape (OpenAI's, on /v1/) sets it. */
void request_set_error_shape(struct request *req, json_t *(*shape)(unsigned status, json_t *body));

/* body ({"error": code, "message"}, taken) in req's error shape: the one to send. */
json_t *request_error_shaped(const struct request *req, unsigned status, json_t *body);

/* Replies at once (from the handler, not after a suspend) with a prepared response;
 * libmicrohttpd counts references, so the caller keeps its own and may reuse it. */
void request_reply_response(struct request *req, unsigned status, struct MHD_Response *resp);

/* Replies with a prepared response, at once or after a suspend, taking the caller's
 * reference to it (for an answer with headers of its own, such as Retry-After). */
void request_reply_taken(struct request *req, unsigned status, struct MHD_Response *resp);

/* A response with a copy of a JSON document's compact text, Content-Type set; reusable
 * for many requests. Does not take the reference. */
struct MHD_Response *server_json_response(json_t *body);

/* While suspended, a client that hangs up (its connection shut for sending, or closed) is
 * noticed within half a second and the request aborted (see request_set_abort), as nginx
 * takes a proxied request's client that went away: what it waited for is let go of. Without
 * this a suspended request is answered whatever its client did. */
void request_abort_on_hangup(struct request *req);

/* Keeps the connection waiting without blocking the loop: the reply comes later from a
 * callback via request_reply_json() or request_reply_error(). After timeout_ms the request
 * is aborted (see request_set_abort) and answered 504. */
void request_suspend(struct request *req, uint64_t timeout_ms);

/* A suspended request's deadline starts again: timeout_ms from now. */
void request_set_deadline(struct request *req, uint64_t timeout_ms);

/* A function called, once, when a suspended request ends without the handler's answer:
 * its deadline passed (it is then answered 504), the client went away, or the server is
 * shutting down (503). The owner must forget the request; answering it from on_abort is
 * allowed. */
void request_set_abort(struct request *req, void (*on_abort)(void *data), void *data);

#endif
