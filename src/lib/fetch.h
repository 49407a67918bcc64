/* Outbound HTTP on the loop: libcurl's multi-socket API driven by libuv. Used by the
 * health checks (and later the Docker Engine API). */
#ifndef NANNY_FETCH_H
#define NANNY_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#define FETCH_BODY_MAX                                                                             \
    (64 * 1024) /* the default cap: a larger body is cut and the transfer                          \
                   ended there, which is not an error */

/* Idle connections to upstreams kept open for reuse. */
#define FETCH_KEEP_CONNECTIONS 256

struct fetcher;
struct fetch;

struct fetch_result {
    int curl_code;       /* CURLcode; 0 on a transfer that completed */
    long status;         /* HTTP status, 0 when no answer came */
    uint64_t latency_ms; /* from start to end of the transfer */
    const char *error;   /* NULL on success, else a sentence */
    const char *body;    /* NUL-terminated, cut at the request's body_max */
    size_t body_len;
    bool truncated; /* the body reached the cap: the rest was not read */
};

/* Called once per fetch, on the loop, after the transfer has ended (its handle is no
 * longer valid); the result is valid during the call only. It may start or cancel other
 * transfers, but not free the fetcher. */
typedef void (*fetch_done_fn)(void *data, const struct fetch_result *res);

/* Creates a fetcher; libcurl itself is started by the first transfer. */
int fetcher_new(uv_loop_t *loop, struct fetcher **ret);

/* Cancels every transfer still running (their callbacks are not called) and frees the
 * fetcher once the loop has closed its handles. */
void fetcher_free(struct fetcher *f);

/* Starts GET url with a timeout; unix_socket, when not NULL, is the path of a unix socket
 * to connect to instead of the URL's host. Returns a handle that fetch_cancel() takes until
 * done is called. */
int fetcher_get(struct fetcher *f, const char *url, const char *unix_socket, uint64_t timeout_ms,
                fetch_done_fn done, void *data, struct fetch **ret);

/* A stream's body, piece by piece as it arrives, on the loop. */
typedef void (*fetch_data_fn)(void *data, const char *buf, size_t len);

struct fetch_request {
    const char *url;
    const char *unix_socket; /* NULL: connect to the URL's host */
    uint64_t timeout_ms;     /* 0: none (a stream) */
    size_t body_max;         /* 0: FETCH_BODY_MAX */
    fetch_data_fn on_data;   /* not NULL: the body is passed here, done() gets none */
    bool post;               /* POST with an empty body instead of GET */
};

/* Starts a GET as req says (fetcher_get is the common case). */
int fetcher_request(struct fetcher *f, const struct fetch_request *req, fetch_done_fn done,
                    void *data, struct fetch **ret);

/* A proxied transfer (fetcher_proxy): the upstream's answer as it comes. */
enum fetch_take {
    FETCH_TAKEN, /* the piece was taken */
    FETCH_PAUSE, /* no room now: the transfer waits; fetch_resume() offers the piece again */
    FETCH_ABORT, /* nobody wants the rest: the transfer ends (done gets an error) */
};
struct fetch_proxy_events {
    /* The answer's head (after any 1xx): status, its header lines ("Name: value", without
     * CR LF; valid during the call) and the body's length (-1 unknown). */
    enum fetch_take (*head)(void *data, long status, char *const *lines, size_t n, int64_t length);
    /* A piece of the body. */
    enum fetch_take (*body)(void *data, const char *buf, size_t len);
    /* A streamed request's body (fetch_proxy_request.streamed): fills buf with at most max
     * bytes and returns how many, 0 at its end, FETCH_UPLOAD_PAUSE when none is there yet
     * (the transfer waits for fetch_resume_upload()), or -1 to end the transfer. */
    ssize_t (*upload)(void *data, char *buf, size_t max);
};

#define FETCH_UPLOAD_PAUSE (-2)

struct fetch_proxy_request {
    const char *url;
    const char *method;
    const char *const *headers; /* "Name: value" lines sent as they are, NULL-terminated */
    const char *body;           /* sent whole (NULL: none) */
    size_t body_len;
    bool streamed;               /* the body comes from ev->upload instead, as it arrives... */
    int64_t body_length;         /* ...this long (-1: unknown, sent chunked) */
    uint64_t connect_timeout_ms; /* 0: libcurl's */
};

/* Starts a proxied transfer: req's method, headers and body to req->url, the answer given
 * to ev as it comes; done (with an empty body) tells the end: curl_code 0 when the answer
 * came whole. In the callbacks, no fetch_cancel() of this transfer (return FETCH_ABORT). */
int fetcher_proxy(struct fetcher *f, const struct fetch_proxy_request *req,
                  const struct fetch_proxy_events *ev, fetch_done_fn done, void *data,
                  struct fetch **ret);

/* A proxied transfer paused by FETCH_PAUSE goes on (from outside its callbacks). */
void fetch_resume(struct fetch *t);

/* A streamed body paused by FETCH_UPLOAD_PAUSE goes on: there is more, or its end. */
void fetch_resume_upload(struct fetch *t);

/* Stops a transfer before its end; done is not called. */
void fetch_cancel(struct fetch *t);

/* Transfers running now. */
unsigned fetcher_active(const struct fetcher *f);

#endif
