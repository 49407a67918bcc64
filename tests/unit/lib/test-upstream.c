/* Unit tests for lib/upstream.c, the proxy's HTTP/1.1 client: real calls on one libuv
 * loop against a scripted server on the loopback, which answers each path with set bytes
 * (whole, chunked, cut, not HTTP...) and echoes the request it got. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <http_parser.h>

#include "lib/alloc.h"
#include "lib/upstream.h"

/* --- the scripted server ------------------------------------------------------------- */

struct fixture {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t tick; /* wakes the loop often: UV_RUN_ONCE never sleeps until a far timer */
    unsigned port;
    struct upstreams *u;
    unsigned connections, requests;
    bool drop_second;     /* a connection's second request is closed at its head, unanswered */
    struct sconn *last;   /* the connection accepted last, while it is open */
    size_t served_len;    /* the bytes of the last request served, head and body... */
    uint64_t served_hash; /* ...and their hash (hash()) */
};

struct sconn {
    struct fixture *f;
    uv_tcp_t tcp;
    http_parser parser;
    char url[256];
    char *raw; /* the request being read, as it came */
    size_t raw_len;
    unsigned requests;
    bool closing;
};

/* FNV-1a: what a request's bytes were, in order, without keeping them. */
static uint64_t hash(uint64_t h, const char *bytes, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)bytes[i]) * 0x100000001b3ULL;
    return h;
}

#define HASH_START 0xcbf29ce484222325ULL

static void on_sconn_closed(uv_handle_t *h)
{
    struct sconn *s = h->data;

    if (s->f->last == s)
        s->f->last = NULL;
    free(s->raw);
    free(s);
}

static void sconn_close(struct sconn *s)
{
    if (s->closing)
        return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->tcp, on_sconn_closed);
}

struct swrite {
    uv_write_t req;
    struct sconn *s;
    bool close_after;
    char bytes[];
};

static void on_swritten(uv_write_t *req, int status)
{
    struct swrite *w = (struct swrite *)req;

    if (w->close_after)
        sconn_close(w->s);
    free(w);
}

static void swrite(struct sconn *s, const char *bytes, size_t len, bool close_after)
{
    struct swrite *w = xmalloc(sizeof(*w) + len);
    uv_buf_t b;

    memcpy(w->bytes, bytes, len);
    w->s = s;
    w->close_after = close_after;
    b = uv_buf_init(w->bytes, (unsigned)len);
    assert_int_equal(uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_swritten), 0);
}

static void sanswer(struct sconn *s, const char *text, bool close_after)
{
    swrite(s, text, strlen(text), close_after);
}

/* A whole request came: its path says what is answered. */
static void serve(struct sconn *s)
{
    const char *path = s->url;

    s->f->served_len = s->raw_len;
    s->f->served_hash = hash(HASH_START, s->raw, s->raw_len);
    if (strncmp(path, "/echo", 5) == 0) {
        char head[128];
        int n =
            snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
                     s->raw_len);
        swrite(s, head, (size_t)n, false);
        swrite(s, s->raw, s->raw_len, false);
    } else if (strcmp(path, "/ok") == 0) {
        sanswer(s, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n",
                false);
        if (s->parser.method != HTTP_HEAD)
            sanswer(s, "hello", false);
    } else if (strcmp(path, "/ok-close") == 0) {
        sanswer(s, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", true);
    } else if (strcmp(path, "/chunked") == 0) {
        sanswer(s,
                "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                false);
    } else if (strcmp(path, "/trailers") == 0) {
        /* 200 trailer lines: more than a head may have, and none of the head's business. */
        char *text =
            xstrdup("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n");
        for (int i = 0; i < 200; i++) {
            char *more = xasprintf("%sX-Trailer-%d: %d\r\n", text, i, i);
            free(text);
            text = more;
        }
        sanswer(s, text, false);
        sanswer(s, "\r\n", false);
        free(text);
    } else if (strcmp(path, "/eof") == 0) {
        sanswer(s, "HTTP/1.1 200 OK\r\n\r\nuntil the end", true);
    } else if (strcmp(path, "/cut") == 0) {
        sanswer(s, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", true);
    } else if (strcmp(path, "/continue") == 0) {
        sanswer(s, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                false);
    } else if (strcmp(path, "/304") == 0) {
        sanswer(s, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", false);
    } else if (strcmp(path, "/garbage") == 0) {
        sanswer(s, "this is not HTTP at all\r\n\r\n", true);
    } else if (strcmp(path, "/silent-close") == 0) {
        sconn_close(s);
    } else if (strcmp(path, "/bighead") == 0) {
        size_t len = UPSTREAM_HEAD_MAX + 1024;
        char *head = xmalloc(len + 64);
        int n = snprintf(head, 64, "HTTP/1.1 200 OK\r\nX-Big: ");
        memset(head + n, 'a', len);
        memcpy(head + n + len, "\r\n\r\n", 4);
        swrite(s, head, (size_t)n + len + 4, false);
        free(head);
    } else if (strcmp(path, "/stall") == 0) { /* one chunk, then nothing, connection open */
        sanswer(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", false);
    } else if (strcmp(path, "/hang") != 0) {
        sanswer(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false);
    }
}

static int on_surl(http_parser *p, const char *at, size_t len)
{
    struct sconn *s = p->data;
    size_t have = strlen(s->url);

    assert_true(have + len < sizeof(s->url));
    memcpy(s->url + have, at, len);
    s->url[have + len] = '\0';
    return 0;
}

static int on_smessage_begin(http_parser *p)
{
    struct sconn *s = p->data;

    s->f->requests++;
    s->requests++;
    return 0;
}

static int on_sheaders_complete(http_parser *p)
{
    struct sconn *s = p->data;

    if (s->f->drop_second && s->requests == 2) {
        sconn_close(s);
        return -1;
    }
    return 0;
}

static int on_smessage_complete(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings request_settings = {
    .on_message_begin = on_smessage_begin,
    .on_url = on_surl,
    .on_headers_complete = on_sheaders_complete,
    .on_message_complete = on_smessage_complete,
};

static void on_salloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[64 * 1024];

    *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_sread(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct sconn *s = stream->data;
    const char *at = buf->base;
    size_t left = nread > 0 ? (size_t)nread : 0;

    if (nread < 0) {
        sconn_close(s);
        return;
    }
    while (left > 0 && !s->closing) {
        size_t n = http_parser_execute(&s->parser, &request_settings, at, left);

        s->raw = xrealloc(s->raw, s->raw_len + n + 1);
        memcpy(s->raw + s->raw_len, at, n);
        s->raw_len += n;
        at += n;
        left -= n;
        if (HTTP_PARSER_ERRNO(&s->parser) == HPE_PAUSED) {
            serve(s);
            http_parser_init(&s->parser, HTTP_REQUEST);
            s->parser.data = s;
            s->url[0] = '\0';
            s->raw_len = 0;
        } else if (HTTP_PARSER_ERRNO(&s->parser) != HPE_OK) {
            sconn_close(s);
        }
    }
}

static void on_sconnection(uv_stream_t *listener, int status)
{
    struct fixture *f = listener->data;
    struct sconn *s = xcalloc(1, sizeof(*s));

    assert_int_equal(status, 0);
    s->f = f;
    uv_tcp_init(&f->loop, &s->tcp);
    s->tcp.data = s;
    assert_int_equal(uv_accept(listener, (uv_stream_t *)&s->tcp), 0);
    http_parser_init(&s->parser, HTTP_REQUEST);
    s->parser.data = s;
    f->connections++;
    f->last = s;
    uv_read_start((uv_stream_t *)&s->tcp, on_salloc, on_sread);
}

static void on_tick(uv_timer_t *t)
{
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    struct sockaddr_in addr;
    struct sockaddr_storage bound;
    int len = sizeof(bound);

    signal(SIGPIPE, SIG_IGN); /* as the daemon: a reset connection's write fails instead */
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_tcp_init(&f->loop, &f->listener);
    f->listener.data = f;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&f->listener, (struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 64, on_sconnection), 0);
    uv_tcp_getsockname(&f->listener, (struct sockaddr *)&bound, &len);
    f->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    assert_int_equal(upstreams_new(&f->loop, &f->u), 0);
    uv_timer_init(&f->loop, &f->tick);
    f->tick.data = f;
    uv_timer_start(&f->tick, on_tick, 5, 5);
    *state = f;
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, h->type == UV_TCP && h->data && h->data != arg ? on_sconn_closed : NULL);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    upstreams_free(f->u);
    uv_walk(&f->loop, close_walk, f); /* the server's connections and listener */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* --- what a call saw ----------------------------------------------------------------- */

struct seen {
    bool done;
    enum upstream_failure failure;
    char error[512];
    unsigned status, heads;
    int64_t length;
    char lines[1024]; /* the header lines, joined by '|' */
    char body[8192];
    size_t body_len, offers;
    bool pause_once, paused, abort_body;
    size_t abort_on_offer; /* the offer (1, 2, ...) answered UPSTREAM_ABORT; 0: none */
    struct upstream_call **timeout_call; /* the head sets a 50 ms read timeout on it */
    /* A streamed body's pieces, then its end; a NULL piece pauses once. */
    const char *const *pieces;
    size_t next_piece;
    bool upload_paused;
};

static enum upstream_take on_head(void *data, unsigned status, char *const *lines, size_t n,
                                  int64_t length)
{
    struct seen *s = data;

    s->heads++;
    s->status = status;
    s->length = length;
    for (size_t i = 0; i < n; i++) {
        strncat(s->lines, lines[i], sizeof(s->lines) - strlen(s->lines) - 2);
        strcat(s->lines, "|");
    }
    if (s->timeout_call)
        upstream_set_read_timeout(*s->timeout_call, 50);
    return UPSTREAM_TAKEN;
}

static enum upstream_take on_body(void *data, const char *buf, size_t len)
{
    struct seen *s = data;

    s->offers++;
    if (s->abort_body || s->offers == s->abort_on_offer)
        return UPSTREAM_ABORT;
    if (s->pause_once && !s->paused) {
        s->paused = true;
        return UPSTREAM_PAUSE;
    }
    assert_true(s->body_len + len < sizeof(s->body));
    memcpy(s->body + s->body_len, buf, len);
    s->body_len += len;
    return UPSTREAM_TAKEN;
}

static ssize_t on_upload(void *data, char *buf, size_t max)
{
    struct seen *s = data;
    const char *piece = s->pieces[s->next_piece];

    if (!piece && !s->upload_paused) {
        s->upload_paused = true;
        return UPSTREAM_UPLOAD_PAUSE;
    }
    if (!piece) {
        s->next_piece++;
        piece = s->pieces[s->next_piece];
    }
    if (strcmp(piece, "") == 0)
        return 0;
    s->next_piece++;
    assert_true(strlen(piece) <= max);
    memcpy(buf, piece, strlen(piece));
    return (ssize_t)strlen(piece);
}

static void on_done(void *data, const struct upstream_result *res)
{
    struct seen *s = data;

    assert_false(s->done);
    s->done = true;
    s->failure = res->failure;
    snprintf(s->error, sizeof(s->error), "%s", res->error ? res->error : "");
    s->body[s->body_len] = '\0';
}

static const struct upstream_events events = {on_head, on_body, on_upload, on_done};

/* Runs the loop until cond holds (it is checked after each pass), 10 s at most. */
#define RUN_UNTIL(f, cond)                                                                         \
    do {                                                                                           \
        uint64_t deadline_ = uv_now(&(f)->loop) + 10000;                                           \
        while (!(cond) && uv_now(&(f)->loop) < deadline_) {                                        \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                       \
            uv_update_time(&(f)->loop);                                                            \
        }                                                                                          \
        assert_true(cond);                                                                         \
    } while (0)

static void run_until(struct fixture *f, bool *flag)
{
    RUN_UNTIL(f, *flag);
}

/* A few loop passes: what is due happens. */
static void spin(struct fixture *f)
{
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static struct upstream_request get(struct fixture *f, const char *target)
{
    return (struct upstream_request){
        .ip = "127.0.0.1", .port = f->port, .method = "GET", .target = target};
}

static void call(struct fixture *f, const struct upstream_request *req, struct seen *s,
                 struct upstream_call **ret)
{
    assert_int_equal(upstream_call(f->u, req, &events, s, ret), 0);
    assert_false(s->done); /* never at once */
}

/* --- the tests ------------------------------------------------------------------------ */

/* The request goes as given, after Host, with a Content-Length for a whole body; the
 * answer's head and body come through the events. */
static void test_request_bytes_and_answer(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    const char headers[] = "X-Test: 42\r\nAccept: */*\r\n";
    struct upstream_request req = {.ip = "127.0.0.1",
                                   .port = f->port,
                                   .method = "PUT",
                                   .target = "/echo?q=a%2Fb",
                                   .headers = headers,
                                   .headers_len = sizeof(headers) - 1,
                                   .body = "a\0c",
                                   .body_len = 3};
    char want[256];

    call(f, &req, &s, NULL);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_OK);
    assert_string_equal(s.error, "");
    assert_int_equal(s.status, 200);
    snprintf(want, sizeof(want), "Content-Type: text/plain|Content-Length: %zu|", s.body_len);
    assert_string_equal(s.lines, want);
    assert_int_equal(s.length, (int64_t)s.body_len);
    snprintf(want, sizeof(want),
             "PUT /echo?q=a%%2Fb HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nX-Test: 42\r\nAccept: "
             "*/*\r\nContent-Length: 3\r\n\r\na",
             f->port);
    assert_int_equal(s.body_len, strlen(want) + 2);
    assert_memory_equal(s.body, want, strlen(want));
    assert_memory_equal(s.body + strlen(want), "\0c", 2);
}

/* A head alone, as the WebSocket tunnel sends it: IPv6 in brackets in Host, the caller's
 * lines and the extra ones as they are, the empty line, and room left after it. */
static void test_request_head(void **state)
{
    const char lines[] = "A: 1\r\nB: 2\r\n";
    const char want6[] = "GET /x?y HTTP/1.1\r\nHost: [::1]:8080\r\nA: 1\r\nB: 2\r\n"
                         "Upgrade: websocket\r\n\r\n";
    const char want4[] = "HEAD / HTTP/1.1\r\nHost: 10.0.0.1:1\r\n\r\n";
    size_t len;
    char *head;

    (void)state;
    head = upstream_request_head("GET", "/x?y", "::1", 8080, lines, sizeof(lines) - 1,
                                 "Upgrade: websocket\r\n", 5, &len);
    assert_int_equal(len, sizeof(want6) - 1);
    assert_memory_equal(head, want6, len);
    memset(head + len, 'x', 5); /* the room is there (ASan says if not) */
    free(head);
    head = upstream_request_head("HEAD", "/", "10.0.0.1", 1, NULL, 0, NULL, 0, &len);
    assert_int_equal(len, sizeof(want4) - 1);
    assert_memory_equal(head, want4, len);
    free(head);
}

/* Two calls one after the other share one connection, kept idle between them. */
static void test_connections_are_kept(void **state)
{
    struct fixture *f = *state;
    struct seen a = {0}, b = {0};
    struct upstream_request req = get(f, "/ok");

    call(f, &req, &a, NULL);
    run_until(f, &a.done);
    assert_int_equal(upstreams_idle(f->u), 1);
    call(f, &req, &b, NULL);
    assert_int_equal(upstreams_idle(f->u), 0); /* taken */
    run_until(f, &b.done);
    assert_int_equal(a.failure, UPSTREAM_OK);
    assert_int_equal(b.failure, UPSTREAM_OK);
    assert_string_equal(b.body, "hello");
    assert_int_equal(f->connections, 1);
    assert_int_equal(f->requests, 2);
    assert_int_equal(upstreams_idle(f->u), 1);
}

/* A kept connection its service closes is dropped as soon as it is; the next call opens
 * another. */
static void test_a_closed_kept_connection_is_dropped(void **state)
{
    struct fixture *f = *state;
    struct seen a = {0}, b = {0};
    struct upstream_request req = get(f, "/ok-close");

    call(f, &req, &a, NULL);
    run_until(f, &a.done);
    assert_int_equal(a.failure, UPSTREAM_OK);
    RUN_UNTIL(f, upstreams_idle(f->u) == 0);
    call(f, &req, &b, NULL);
    run_until(f, &b.done);
    assert_int_equal(b.failure, UPSTREAM_OK);
    assert_int_equal(f->connections, 2);
}

/* A kept connection that breaks before a byte of the answer comes: the call goes again on
 * a new connection, and is answered. */
static void test_a_call_on_a_broken_kept_connection_is_sent_again(void **state)
{
    struct fixture *f = *state;
    struct seen a = {0}, b = {0};
    struct upstream_request req = get(f, "/ok");

    f->drop_second = true;
    call(f, &req, &a, NULL);
    run_until(f, &a.done);
    call(f, &req, &b, NULL);
    run_until(f, &b.done);
    assert_int_equal(b.failure, UPSTREAM_OK);
    assert_string_equal(b.body, "hello");
    assert_int_equal(f->connections, 2);
    assert_int_equal(f->requests, 3);
}

/* A kept connection its service resets, the call made before the loop has seen the reset:
 * the write fails (the first try is a plain write), and the call goes again on a new
 * connection. */
static void test_a_call_on_a_reset_kept_connection_is_sent_again(void **state)
{
    struct fixture *f = *state;
    struct seen a = {0}, b = {0};
    struct upstream_request req = get(f, "/ok");

    call(f, &req, &a, NULL);
    run_until(f, &a.done);
    assert_non_null(f->last);
    f->last->closing = true;
    assert_int_equal(uv_tcp_close_reset(&f->last->tcp, on_sconn_closed), 0);
    call(f, &req, &b, NULL);
    run_until(f, &b.done);
    assert_int_equal(b.failure, UPSTREAM_OK);
    assert_string_equal(b.body, "hello");
    assert_int_equal(f->connections, 2);
    assert_int_equal(f->requests, 2);
}

/* A body larger than a socket's buffer takes: what the first write leaves goes after it,
 * every byte once and in order. */
static void test_a_large_body_is_sent_whole(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    const size_t body_len = 8 * 1024 * 1024;
    char *body = xmalloc(body_len);
    struct upstream_request req = get(f, "/ok");
    char head[128];
    int head_len;

    for (size_t i = 0; i < body_len; i++)
        body[i] = (char)('a' + i % 26 + (i / 4096) % 7);
    req.method = "PUT";
    req.body = body;
    req.body_len = body_len;
    head_len = snprintf(head, sizeof(head),
                        "PUT /ok HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Length: %zu\r\n\r\n",
                        f->port, body_len);
    call(f, &req, &s, NULL);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_OK);
    assert_string_equal(s.body, "hello");
    assert_int_equal(f->served_len, (size_t)head_len + body_len);
    assert_true(f->served_hash == hash(hash(HASH_START, head, (size_t)head_len), body, body_len));
    free(body);
}

/* Not a POST: it may have been acted on (RFC 9110 9.2.2); it ends broken. */
static void test_a_post_on_a_broken_kept_connection_is_not_sent_again(void **state)
{
    struct fixture *f = *state;
    struct seen a = {0}, b = {0};
    struct upstream_request req = get(f, "/ok"), post = get(f, "/echo");

    f->drop_second = true;
    call(f, &req, &a, NULL);
    run_until(f, &a.done);
    post.method = "POST";
    post.body = "x";
    post.body_len = 1;
    call(f, &post, &b, NULL);
    run_until(f, &b.done);
    assert_int_equal(b.failure, UPSTREAM_BROKEN);
    assert_int_equal(b.heads, 0);
    assert_int_equal(f->requests, 2);
    assert_int_equal(f->connections, 1);
}

/* So does a streamed call whose body was not taken from yet; it then streams on the new
 * connection. */
static void test_a_streamed_call_not_begun_is_sent_again(void **state)
{
    struct fixture *f = *state;
    const char *pieces[] = {NULL, "abc", "", NULL};
    struct seen a = {0}, b = {.pieces = pieces};
    struct upstream_request req = get(f, "/ok"), post = get(f, "/echo");
    struct upstream_call *c;

    f->drop_second = true;
    call(f, &req, &a, NULL);
    run_until(f, &a.done);
    post.method = "PUT";
    post.streamed = true;
    post.body_length = -1;
    call(f, &post, &b, &c);
    RUN_UNTIL(f, f->connections >= 2);
    assert_int_equal(f->connections, 2);
    assert_true(b.upload_paused);
    assert_false(b.done);
    upstream_resume_upload(c);
    run_until(f, &b.done);
    assert_int_equal(b.failure, UPSTREAM_OK);
    assert_non_null(strstr(b.body, "\r\n\r\n3\r\nabc\r\n0\r\n\r\n"));
    assert_int_equal(f->requests, 3);
}

/* A chunked answer's body comes without its framing; the length is unknown. */
static void test_a_chunked_answer(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    struct upstream_request req = get(f, "/chunked");

    call(f, &req, &s, NULL);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_OK);
    assert_int_equal(s.status, 201);
    assert_int_equal(s.length, -1);
    assert_string_equal(s.body, "hello world");
    assert_int_equal(upstreams_idle(f->u), 1);
}

/* An answer that ends with its connection is whole; one cut short of its length is not. */
static void test_answers_ending_with_the_connection(void **state)
{
    struct fixture *f = *state;
    struct seen eof = {0}, cut = {0};
    struct upstream_request a = get(f, "/eof"), b = get(f, "/cut");

    call(f, &a, &eof, NULL);
    run_until(f, &eof.done);
    assert_int_equal(eof.failure, UPSTREAM_OK);
    assert_string_equal(eof.body, "until the end");
    call(f, &b, &cut, NULL);
    run_until(f, &cut.done);
    assert_int_equal(cut.failure, UPSTREAM_BROKEN);
    assert_int_equal(cut.heads, 1);
    assert_string_equal(cut.body, "short");
    assert_non_null(strstr(cut.error, "broke off"));
    assert_int_equal(upstreams_idle(f->u), 0);
}

/* 1xx answers are skipped; a 304 has no body whatever its Content-Length; a HEAD's answer
 * has none either, and tells the length its head gives. */
static void test_interim_answers_304_and_head(void **state)
{
    struct fixture *f = *state;
    struct seen a = {0}, b = {0}, c = {0};
    struct upstream_request cont = get(f, "/continue"), nm = get(f, "/304"), head = get(f, "/ok");

    head.method = "HEAD";
    call(f, &cont, &a, NULL);
    run_until(f, &a.done);
    assert_int_equal(a.failure, UPSTREAM_OK);
    assert_int_equal(a.heads, 1);
    assert_int_equal(a.status, 200);
    assert_string_equal(a.body, "ok");
    call(f, &nm, &b, NULL);
    run_until(f, &b.done);
    assert_int_equal(b.failure, UPSTREAM_OK);
    assert_int_equal(b.status, 304);
    assert_int_equal(b.body_len, 0);
    call(f, &head, &c, NULL);
    run_until(f, &c.done);
    assert_int_equal(c.failure, UPSTREAM_OK);
    assert_int_equal(c.length, 5);
    assert_int_equal(c.body_len, 0);
    assert_int_equal(f->connections, 1); /* each left the connection clean */
}

/* What is not HTTP, a head past the cap, a close without an answer: broken, no head. */
static void test_bad_answers(void **state)
{
    struct fixture *f = *state;
    const char *paths[] = {"/garbage", "/bighead", "/silent-close"};

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct seen s = {0};
        struct upstream_request req = get(f, paths[i]);

        call(f, &req, &s, NULL);
        run_until(f, &s.done);
        assert_int_equal(s.failure, UPSTREAM_BROKEN);
        assert_int_equal(s.heads, 0);
        assert_true(strlen(s.error) > 0);
    }
    assert_int_equal(upstreams_idle(f->u), 0);
}

/* A port nobody listens on: refused, with a sentence. */
static void test_refused(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct upstream_request req;

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    req = get(f, "/");
    req.port = ntohs(addr.sin_port);
    call(f, &req, &s, NULL);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_REFUSED);
    assert_non_null(strstr(s.error, "cannot connect"));
    req.ip = "not-an-ip";
    memset(&s, 0, sizeof(s));
    call(f, &req, &s, NULL);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_REFUSED);
}

/* A paused piece is offered again after upstream_resume(), and nothing comes meanwhile; an
 * aborted one ends the call, broken. */
static void test_pause_resume_and_abort(void **state)
{
    struct fixture *f = *state;
    struct seen s = {.pause_once = true}, t = {.abort_body = true};
    struct upstream_request req = get(f, "/chunked");
    struct upstream_call *c;

    call(f, &req, &s, &c);
    RUN_UNTIL(f, s.paused);
    spin(f);
    assert_false(s.done);
    assert_int_equal(s.body_len, 0);
    upstream_resume(c);
    assert_false(s.done); /* never from inside upstream_resume() */
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_OK);
    assert_string_equal(s.body, "hello world");

    call(f, &req, &t, NULL);
    run_until(f, &t.done);
    assert_int_equal(t.failure, UPSTREAM_BROKEN);
    assert_int_equal(t.offers, 1);
}

/* A read timeout ends a call whose service goes silent mid-answer (UPSTREAM_TIMED_OUT,
 * after what came); while its owner pauses it, the silence does not count. Set from the
 * head's callback, as the proxy sets it. */
static void test_a_read_timeout_ends_a_silent_answer(void **state)
{
    struct fixture *f = *state;
    struct upstream_call *c = NULL, *d = NULL;
    struct seen s = {.timeout_call = &c}, t = {.timeout_call = &d, .pause_once = true};
    struct upstream_request req = get(f, "/stall");
    uint64_t until;

    call(f, &req, &s, &c);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_TIMED_OUT);
    assert_non_null(strstr(s.error, "sent nothing for 50 ms"));
    assert_string_equal(s.body, "hello");

    call(f, &req, &t, &d);
    RUN_UNTIL(f, t.paused);
    until = uv_now(&f->loop) + 200; /* paused four times as long: still going */
    RUN_UNTIL(f, uv_now(&f->loop) >= until);
    assert_false(t.done);
    upstream_resume(d); /* the silence counts from now */
    run_until(f, &t.done);
    assert_int_equal(t.failure, UPSTREAM_TIMED_OUT);
    assert_string_equal(t.body, "hello");
}

/* An abort from upstream_resume() holds: a second resume before the end offers nothing. */
static void test_an_abort_on_resume_is_final(void **state)
{
    struct fixture *f = *state;
    struct seen s = {.pause_once = true, .abort_on_offer = 2};
    struct upstream_request req = get(f, "/chunked");
    struct upstream_call *c;

    call(f, &req, &s, &c);
    RUN_UNTIL(f, s.paused);
    upstream_resume(c); /* offer 2: aborted */
    upstream_resume(c); /* nothing more */
    assert_int_equal(s.offers, 2);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_BROKEN);
    assert_int_equal(s.body_len, 0);
}

/* A chunked answer's trailers are not its head: any number of them, and the answer is
 * whole. */
static void test_trailers_are_not_the_head(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    struct upstream_request req = get(f, "/trailers");

    call(f, &req, &s, NULL);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_OK);
    assert_string_equal(s.body, "ok");
    assert_string_equal(s.lines, "Transfer-Encoding: chunked|");
    assert_int_equal(upstreams_idle(f->u), 1);
}

/* A streamed body of unknown length goes chunked, piece by piece, with a pause between;
 * one of known length goes as it is with its Content-Length. */
static void test_streamed_bodies(void **state)
{
    struct fixture *f = *state;
    const char *pieces[] = {"abc", NULL, "defgh", "", NULL};
    struct seen s = {.pieces = pieces}, t = {.pieces = pieces};
    struct upstream_request req = get(f, "/echo");
    struct upstream_call *c;
    const char *at;

    req.method = "POST";
    req.streamed = true;
    req.body_length = -1;
    call(f, &req, &s, &c);
    RUN_UNTIL(f, s.upload_paused);
    spin(f);
    assert_false(s.done); /* the service waits for the rest of the body */
    upstream_resume_upload(c);
    run_until(f, &s.done);
    assert_int_equal(s.failure, UPSTREAM_OK);
    at = strstr(s.body, "\r\n\r\n");
    assert_non_null(strstr(s.body, "Transfer-Encoding: chunked\r\n"));
    assert_string_equal(at, "\r\n\r\n3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n");

    req.body_length = 8;
    call(f, &req, &t, &c);
    RUN_UNTIL(f, t.upload_paused);
    upstream_resume_upload(c);
    run_until(f, &t.done);
    assert_int_equal(t.failure, UPSTREAM_OK);
    assert_non_null(strstr(t.body, "Content-Length: 8\r\n\r\nabcdefgh"));
    assert_int_equal(f->connections, 1);
}

/* A cancelled call is never told; its connection is not kept. */
static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct seen s = {0};
    struct upstream_request req = get(f, "/hang");
    struct upstream_call *c;

    call(f, &req, &s, &c);
    RUN_UNTIL(f, f->requests > 0);
    assert_int_equal(f->requests, 1);
    upstream_cancel(c);
    spin(f);
    assert_false(s.done);
    assert_int_equal(upstreams_idle(f->u), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_bytes_and_answer, setup, teardown),
        cmocka_unit_test(test_request_head),
        cmocka_unit_test_setup_teardown(test_connections_are_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_closed_kept_connection_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_call_on_a_reset_kept_connection_is_sent_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_large_body_is_sent_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_call_on_a_broken_kept_connection_is_sent_again,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_post_on_a_broken_kept_connection_is_not_sent_again,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_streamed_call_not_begun_is_sent_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_chunked_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answers_ending_with_the_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_answers_304_and_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume_and_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_abort_on_resume_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailers_are_not_the_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_bodies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_read_timeout_ends_a_silent_answer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
