/* HTTP/1.1 requests to the services on this host, on the loop, over connections kept
 * between requests: the proxy's side towards its services. libuv's TCP and Debian's
 * http-parser, not libcurl: libcurl 7.88 polls a kept connection before each reuse and
 * again after each send, which made those two polls a fifth of a proxied request's system
 * calls. A call costs one send and one receive on a kept connection.
 *
 * Kept connections are read while idle, so one its service closes is seen and dropped at
 * once; a call whose kept connection breaks before a byte of its answer came is sent
 * again on a new one, once, when its method may go twice (not POST, PATCH or LOCK, as
 * nginx) and all of its body is at hand (whole, or streamed and not a byte of it taken
 * yet).
 *
 * Writes to a connection its service has closed raise SIGPIPE: the process ignores it (as
 * the daemon does), and the write's error ends or retries the call. */
#ifndef NANNY_UPSTREAM_H
#define NANNY_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#define UPSTREAM_KEEP       256         /* idle connections kept, in all */
#define UPSTREAM_IDLE_MS    60000       /* an idle connection is closed after this */
#define UPSTREAM_HEAD_MAX   (64 * 1024) /* an answer's head, at most */
#define UPSTREAM_LINES_MAX  128         /* its header lines, at most */
#define UPSTREAM_CONNECT_MS 10000       /* the connect deadline when the caller gives none */
#define UPSTREAM_READ_MAX   (64 * 1024) /* one read from a service */
#define UPSTREAM_PIECE_MAX  (64 * 1024) /* one piece of a streamed body */

struct upstreams;
struct upstream_call;

/* What a callback does with a piece of the answer. */
enum upstream_take {
    UPSTREAM_TAKEN, /* taken */
    UPSTREAM_PAUSE, /* no room now: the call waits; upstream_resume() offers it again */
    UPSTREAM_ABORT, /* nobody wants the rest: the call ends (done gets UPSTREAM_BROKEN) */
};

enum upstream_failure {
    UPSTREAM_OK,        /* the answer came whole */
    UPSTREAM_REFUSED,   /* no connection: refused or unreachable */
    UPSTREAM_TIMED_OUT, /* no connection within the connect deadline */
    UPSTREAM_BROKEN,    /* the answer was not HTTP, broke off, or was aborted */
};

struct upstream_result {
    enum upstream_failure failure;
    const char *error; /* a sentence, NULL on UPSTREAM_OK */
};

#define UPSTREAM_UPLOAD_PAUSE (-2)

struct upstream_events {
    /* The answer's head (after any 1xx): its status, its header lines ("Name: value",
     * writable, valid during the call) and its body's length (-1: unknown). PAUSE is taken
     * as ABORT. */
    enum upstream_take (*head)(void *data, unsigned status, char *const *lines, size_t n,
                               int64_t length);
    /* A piece of the body, chunked framing removed. */
    enum upstream_take (*body)(void *data, const char *buf, size_t len);
    /* A streamed body (upstream_request.streamed): fills buf with at most max bytes and
     * returns how many, 0 at its end, UPSTREAM_UPLOAD_PAUSE when none is there yet (the
     * call waits for upstream_resume_upload()), or -1 to end the call. */
    ssize_t (*upload)(void *data, char *buf, size_t max);
    /* The end, once, never from inside upstream_call(), upstream_resume() or
     * upstream_resume_upload(); the call is gone by then. It may start and cancel other
     * calls. */
    void (*done)(void *data, const struct upstream_result *res);
};

struct upstream_request {
    const char *ip; /* numeric, IPv4 or IPv6 */
    unsigned port;
    const char *method;
    const char *target;  /* the path and query, as they go */
    const char *headers; /* "Name: value\r\n" lines, sent as they are after Host; none
                            of the framing (it is set here); NULL: none */
    size_t headers_len;
    const char *body; /* sent whole with a Content-Length (NULL: no body) */
    size_t body_len;
    bool streamed;               /* the body comes from ev->upload instead, as it arrives... */
    int64_t body_length;         /* ...this long (-1: unknown, sent chunked) */
    uint64_t connect_timeout_ms; /* 0: UPSTREAM_CONNECT_MS */
};

int upstreams_new(uv_loop_t *loop, struct upstreams **ret);

/* Ends every call (their done is not called) and closes every connection. */
void upstreams_free(struct upstreams *u);

/* Starts a call; ret (may be NULL) is its handle until done. -ECANCELED once freeing. */
int upstream_call(struct upstreams *u, const struct upstream_request *req,
                  const struct upstream_events *ev, void *data, struct upstream_call **ret);

/* From now on the call ends, UPSTREAM_TIMED_OUT, when its service sends nothing for ms
 * while the call reads (a call paused by its owner does not count), as nginx's
 * proxy_read_timeout between two reads; 0 (the default): never. From a callback too. */
void upstream_set_read_timeout(struct upstream_call *c, uint64_t ms);

/* A call paused by UPSTREAM_PAUSE goes on (from outside its callbacks). */
void upstream_resume(struct upstream_call *c);

/* A streamed body paused by UPSTREAM_UPLOAD_PAUSE goes on: there is more, or its end. */
void upstream_resume_upload(struct upstream_call *c);

/* Ends a call before its end; done is not called. Not from inside its own callbacks. */
void upstream_cancel(struct upstream_call *c);

/* A request's head for a service at ip:port (IPv6 in brackets in Host): "METHOD target
 * HTTP/1.1", Host, lines (lines_len bytes of "Name: value\r\n" lines, as they are), extra
 * (more such lines; NULL: none), then the empty line. The head is allocated with room more
 * bytes free after it (for a body); its length goes in *len. */
char *upstream_request_head(const char *method, const char *target, const char *ip, unsigned port,
                            const char *lines, size_t lines_len, const char *extra, size_t room,
                            size_t *len);

/* Idle connections kept now. */
unsigned upstreams_idle(const struct upstreams *u);

#endif
