/* Outbound HTTP on the loop: libcurl's multi-socket API driven by libuv. Used by the
 * health checks and the Docker Engine API; the proxy has its own client (upstream.h). */
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

/* Stops a transfer before its end; done is not called. */
void fetch_cancel(struct fetch *t);

/* Transfers running now. */
unsigned fetcher_active(const struct fetcher *f);

#endif
