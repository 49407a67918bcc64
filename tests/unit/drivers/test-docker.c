/* Unit tests for docker.c: the splitter of log bodies, project names, and the Engine API
 * client on one libuv loop against a fake engine: a small HTTP/1.1 server on a unix socket
 * in a temporary folder, served from the same loop. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/driver.h"
#include "core/manifest.h"
#include "drivers/docker.h"
#include "drivers/drivers.h"
#include "lib/diags.h"
#include "lib/alloc.h"
#include "lib/fetch.h"
#include "lib/log.h"

#define WAIT_MS   5000 /* the bound of every wait: a test that needs it all has failed */
#define MAX_LINES 16

/* --- docker_log_lines ------------------------------------------------------------------ */

/* A log body under construction: frames of the multiplexed stream format, or raw text. */
struct body {
    char buf[4096];
    size_t len;
};

static void append(struct body *b, const void *data, size_t n)
{
    assert_true(b->len + n <= sizeof(b->buf));
    memcpy(b->buf + b->len, data, n);
    b->len += n;
}

/* Appends a frame header: stream, three zero bytes, the size in 4 bytes big-endian. */
static void header(struct body *b, unsigned char stream, uint32_t size)
{
    unsigned char h[8] = {stream, 0, 0, 0};

    h[4] = (unsigned char)(size >> 24);
    h[5] = (unsigned char)(size >> 16);
    h[6] = (unsigned char)(size >> 8);
    h[7] = (unsigned char)size;
    append(b, h, sizeof(h));
}

static void text(struct body *b, const char *s)
{
    append(b, s, strlen(s));
}

/* Appends one whole frame of stream (1 stdout, 2 stderr) holding s. */
static void frame(struct body *b, unsigned char stream, const char *s)
{
    header(b, stream, (uint32_t)strlen(s));
    text(b, s);
}

struct collected {
    char *lines[MAX_LINES];
    size_t n;
};

static void collect(void *data, const char *line, size_t len)
{
    struct collected *c = data;

    assert_true(c->n < MAX_LINES);
    c->lines[c->n++] = len > 0 ? xstrndup(line, len) : xstrdup("");
}

/* A NULL-terminated list of the lines expected. */
#define LINES(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NO_LINES   ((const char *const[]){NULL})

/* Splits body and checks that exactly the expected lines came, in order. */
static void assert_split(const char *body, size_t len, const char *const *expected)
{
    struct collected c = {0};
    size_t n = 0;

    docker_log_lines(body, len, collect, &c);
    while (expected[n])
        n++;
    if (c.n != n) {
        for (size_t i = 0; i < c.n; i++)
            print_error("line %zu: '%s'\n", i, c.lines[i]);
        fail_msg("%zu lines, expected %zu", c.n, n);
    }
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(c.lines[i], expected[i]);
        free(c.lines[i]);
    }
}

static void test_log_lines_multiplexed(void **state)
{
    struct body b = {0};
    char long_line[301];

    frame(&b, 1, "first\nsecond\n");
    frame(&b, 2, "oops\n");
    frame(&b, 1, "\nafter a blank line\n");
    assert_split(b.buf, b.len, LINES("first", "second", "oops", "", "after a blank line"));

    /* A frame past 255 bytes: the size is read big-endian. */
    memset(long_line, 'x', 299);
    long_line[299] = '\n';
    long_line[300] = '\0';
    b.len = 0;
    frame(&b, 1, long_line);
    frame(&b, 1, "after\n");
    {
        struct collected c = {0};
        docker_log_lines(b.buf, b.len, collect, &c);
        assert_int_equal(c.n, 2);
        assert_int_equal(strlen(c.lines[0]), 299);
        assert_string_equal(c.lines[1], "after");
        free(c.lines[0]);
        free(c.lines[1]);
    }
}

static void test_log_lines_cut_across_frames(void **state)
{
    struct body b = {0};

    frame(&b, 1, "hel");
    frame(&b, 1, "lo\nwor");
    frame(&b, 1, "ld\n");
    assert_split(b.buf, b.len, LINES("hello", "world"));
}

/* stdout and stderr frames interleave; each stream keeps its own partial line. */
static void test_log_lines_streams_interleaved(void **state)
{
    struct body b = {0};

    frame(&b, 1, "out ");
    frame(&b, 2, "err ");
    frame(&b, 1, "one\n");
    frame(&b, 2, "two\n");
    frame(&b, 2, "three\n");
    frame(&b, 1, "four\n");
    assert_split(b.buf, b.len, LINES("out one", "err two", "three", "four"));
}

/* A body cut in the middle of a frame (or of a header) gives what there is. */
static void test_log_lines_cut_body(void **state)
{
    struct body b = {0};

    frame(&b, 1, "one\n");
    header(&b, 1, 100); /* says 100 bytes, has 7 */
    text(&b, "two\nthr");
    assert_split(b.buf, b.len, LINES("one", "two", "thr"));

    b.len = 0;
    frame(&b, 2, "whole\n");
    append(&b, "\x01\x00\x00", 3); /* the first 3 bytes of a header */
    assert_split(b.buf, b.len, LINES("whole"));
}

static void test_log_lines_empty_body(void **state)
{
    assert_split("", 0, NO_LINES);
}

/* A container with a TTY: raw text without frame headers. */
static void test_log_lines_raw_text(void **state)
{
    const char *raw = "plain text\nsecond line\n";
    const char *blank = "a\n\nb\n";

    assert_split(raw, strlen(raw), LINES("plain text", "second line"));
    assert_split("hi\n", 3, LINES("hi")); /* shorter than a header */
    assert_split(blank, strlen(blank), LINES("a", "", "b"));
}

static void test_log_lines_last_line_without_newline(void **state)
{
    const char *raw = "a\nlast";
    struct body b = {0};

    assert_split(raw, strlen(raw), LINES("a", "last"));
    frame(&b, 1, "a\nlast");
    assert_split(b.buf, b.len, LINES("a", "last"));

    /* Each stream's unfinished line comes out at the end. */
    b.len = 0;
    frame(&b, 2, "no newline on stderr");
    frame(&b, 1, "nor on stdout");
    {
        struct collected c = {0};
        docker_log_lines(b.buf, b.len, collect, &c);
        assert_int_equal(c.n, 2);
        assert_true((strcmp(c.lines[0], "nor on stdout") == 0 &&
                     strcmp(c.lines[1], "no newline on stderr") == 0) ||
                    (strcmp(c.lines[1], "nor on stdout") == 0 &&
                     strcmp(c.lines[0], "no newline on stderr") == 0));
        free(c.lines[0]);
        free(c.lines[1]);
    }
}

/* A line far longer than its frames, cut into many, with the other stream's frames
 * between them: it comes out whole, as do the other stream's lines. */
static void test_log_lines_long_line_across_many_frames(void **state)
{
    enum { FRAMES = 2000, PIECE = 50 };
    size_t cap = (size_t)FRAMES * 2 * (8 + PIECE) + 64, len = 0;
    char *body = xmalloc(cap), piece[PIECE];
    struct collected c = {0};

    memset(piece, 'x', sizeof(piece));
    for (int i = 0; i < FRAMES; i++) {
        unsigned char h[8] = {1, 0, 0, 0, 0, 0, 0, PIECE};
        unsigned char e[8] = {2, 0, 0, 0, 0, 0, 0, 2};
        memcpy(body + len, h, 8);
        memcpy(body + len + 8, piece, PIECE);
        len += 8 + PIECE;
        if (i % 500 == 0) {
            memcpy(body + len, e, 8);
            memcpy(body + len + 8, "e\n", 2);
            len += 10;
        }
    }
    memcpy(body + len, (unsigned char[]){1, 0, 0, 0, 0, 0, 0, 4}, 8);
    memcpy(body + len + 8, "!\nz\n", 4);
    len += 12;
    assert_true(len <= cap);
    docker_log_lines(body, len, collect, &c);
    assert_int_equal(c.n, 6);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(c.lines[i], "e");
    assert_int_equal(strlen(c.lines[4]), (size_t)FRAMES * PIECE + 1);
    assert_int_equal(strspn(c.lines[4], "x"), (size_t)FRAMES * PIECE);
    assert_string_equal(c.lines[4] + FRAMES * PIECE, "!");
    assert_string_equal(c.lines[5], "z");
    for (size_t i = 0; i < c.n; i++)
        free(c.lines[i]);
    free(body);
}

/* --- docker_project_name --------------------------------------------------------------- */

static void assert_project_name(const char *name, const char *expected)
{
    char *p = docker_project_name(name);

    assert_string_equal(p, expected);
    free(p);
}

static void test_project_name(void **state)
{
    assert_project_name("upscale-api", "upscale-api");
    assert_project_name("Upscale-API", "upscale-api");
    assert_project_name("minimal.sd_api", "minimalsd_api");
    assert_project_name("v1.2-beta_3", "v12-beta_3");
    assert_project_name("a b/c:D", "abcd");
    assert_project_name("", "");
}

/* --- the fake engine ------------------------------------------------------------------- */

#define CONTAINER(id, state, project, service)                                                     \
    "{\"Id\":\"" id "\",\"State\":\"" state "\",\"Labels\":{\"" DOCKER_LABEL_PROJECT               \
    "\":\"" project "\",\"" DOCKER_LABEL_SERVICE "\":\"" service "\"}}"
#define DIE_EVENT(id, project, code)                                                               \
    "{\"Type\":\"container\",\"Action\":\"die\",\"id\":\"" id "\",\"Actor\":{\"ID\":\"" id         \
    "\",\"Attributes\":{\"exitCode\":\"" code "\",\"" DOCKER_LABEL_PROJECT "\":\"" project "\"}}}"
#define START_EVENT(id, project)                                                                   \
    "{\"Type\":\"container\",\"Action\":\"start\",\"id\":\"" id "\",\"Actor\":{\"ID\":\"" id       \
    "\",\"Attributes\":{\"" DOCKER_LABEL_PROJECT "\":\"" project "\"}}}"
/* The fixed-width timestamp of timestamps=1, nanosecond n of one second, and its space. */
#define AT(n) "2026-11-26T19:01:54.00000000" #n "Z "

struct engine;

/* One connection to the fake engine: one request, then an answer (or a held request, or
 * the event stream). */
struct conn {
    uv_pipe_t pipe;
    struct engine *engine;
    char request[8192];
    size_t len;
    char scratch[4096];
    bool seen; /* the request's header block is complete */
    bool held; /* a logs request left unanswered */
    uv_shutdown_t shutdown;
    struct conn *next;
};

struct fake_logs {
    char id[64];
    int status;
    struct body body;
};

struct engine {
    uv_loop_t *loop;
    char dir[64];
    char path[128];
    uv_pipe_t *listener; /* NULL while not listening */
    struct conn *conns;
    struct conn *events; /* the open event stream */
    char *list;          /* the answer to GET /containers/json */
    struct fake_logs logs[4];
    size_t n_logs;
    bool hold_logs;
    bool cut_tail; /* answer tail=N with the last N frames, as the engine does (a frame a line) */
    unsigned n_held;
    unsigned n_lists, n_events, n_logs_requests;
    char list_target[512], events_target[512], logs_targets[4][512];
};

struct write_req {
    uv_write_t req;
    char data[];
};

static void on_written(uv_write_t *req, int status)
{
    free(req); /* the write_req it starts */
}

static void conn_write(struct conn *c, const char *data, size_t len)
{
    struct write_req *w;
    uv_buf_t buf;

    if (uv_is_closing((uv_handle_t *)&c->pipe))
        return;
    w = xmalloc(sizeof(*w) + len);
    memcpy(w->data, data, len);
    buf = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_written) < 0)
        free(w);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct conn **p = &c->engine->conns;

    while (*p != c)
        p = &(*p)->next;
    *p = c->next;
    free(c);
}

static void conn_close(struct conn *c)
{
    if (uv_is_closing((uv_handle_t *)&c->pipe))
        return;
    if (c->engine->events == c)
        c->engine->events = NULL;
    if (c->held)
        c->engine->n_held--;
    uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_close(req->data);
}

/* Ends the answer: the close comes once every byte is written. */
static void conn_finish(struct conn *c)
{
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->pipe, on_shutdown) < 0)
        conn_close(c);
}

static void reply(struct conn *c, int status, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, status == 200 ? "OK" : "Error", len);

    conn_write(c, head, (size_t)n);
    conn_write(c, body, len);
    conn_finish(c);
}

static void reply_text(struct conn *c, int status, const char *body)
{
    reply(c, status, body, strlen(body));
}

/* Where the last n frames of body b start (all of it when it has no more, its end for 0). */
static size_t last_frames(const struct body *b, unsigned n)
{
    size_t starts[64], count = 0;

    for (size_t at = 0; at + 8 <= b->len;) {
        const unsigned char *h = (const unsigned char *)b->buf + at;

        assert_true(count < sizeof(starts) / sizeof(starts[0]));
        starts[count++] = at;
        at += 8 + (((size_t)h[4] << 24) | ((size_t)h[5] << 16) | ((size_t)h[6] << 8) | h[7]);
    }
    if (n == 0)
        return b->len;
    return n >= count ? 0 : starts[count - n];
}

static void answer_logs(struct conn *c, const char *target, const char *id)
{
    struct engine *e = c->engine;
    const char *tail = strstr(target, "tail=");

    if (e->n_logs_requests < sizeof(e->logs_targets) / sizeof(e->logs_targets[0]))
        snprintf(e->logs_targets[e->n_logs_requests], sizeof(e->logs_targets[0]), "%s", target);
    e->n_logs_requests++;
    if (e->hold_logs) {
        c->held = true;
        e->n_held++;
        return;
    }
    for (size_t i = 0; i < e->n_logs; i++) {
        if (strcmp(e->logs[i].id, id) == 0) {
            const struct body *b = &e->logs[i].body;
            unsigned n;
            size_t from = 0;

            if (e->cut_tail && tail && sscanf(tail, "tail=%u", &n) == 1)
                from = last_frames(b, n);
            reply(c, e->logs[i].status, b->buf + from, b->len - from);
            return;
        }
    }
    reply_text(c, 404, "{\"message\":\"No such container\"}");
}

/* Answers the request in c->request, whose header block is complete. */
static void answer(struct conn *c)
{
    static const char events_head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n";
    struct engine *e = c->engine;
    char target[512], id[64];

    if (sscanf(c->request, "GET %511s HTTP/1.1", target) != 1) {
        reply_text(c, 400, "{}");
        return;
    }
    if (strncmp(target, "/containers/json?", 17) == 0) {
        e->n_lists++;
        snprintf(e->list_target, sizeof(e->list_target), "%s", target);
        reply_text(c, 200, e->list);
    } else if (strncmp(target, "/events?", 8) == 0) {
        e->n_events++;
        snprintf(e->events_target, sizeof(e->events_target), "%s", target);
        conn_write(c, events_head, sizeof(events_head) - 1);
        if (e->events)
            conn_close(e->events);
        e->events = c;
    } else if (sscanf(target, "/containers/%63[^/]/logs?", id) == 1) {
        answer_logs(c, target, id);
    } else {
        reply_text(c, 404, "{\"message\":\"page not found\"}");
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;

    *buf = uv_buf_init(c->scratch, sizeof(c->scratch));
}

/* Reads until the blank line that ends the request's headers (the client sends no body). */
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->seen || nread == 0)
        return;
    if (c->len + (size_t)nread >= sizeof(c->request)) {
        conn_close(c);
        return;
    }
    memcpy(c->request + c->len, buf->base, (size_t)nread);
    c->len += (size_t)nread;
    c->request[c->len] = '\0';
    if (strstr(c->request, "\r\n\r\n")) {
        c->seen = true;
        answer(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct engine *e = server->data;
    struct conn *c;

    if (status < 0)
        return;
    c = xcalloc(1, sizeof(*c));
    c->engine = e;
    uv_pipe_init(e->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = e->conns;
    e->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void engine_listen(struct engine *e)
{
    e->listener = xcalloc(1, sizeof(*e->listener));
    assert_int_equal(uv_pipe_init(e->loop, e->listener, 0), 0);
    e->listener->data = e;
    unlink(e->path);
    assert_int_equal(uv_pipe_bind(e->listener, e->path), 0);
    assert_int_equal(uv_listen((uv_stream_t *)e->listener, 16, on_connection), 0);
}

static void on_listener_closed(uv_handle_t *h)
{
    free(h);
}

/* Stops accepting: the socket goes away, connecting fails. */
static void engine_stop_listening(struct engine *e)
{
    if (!e->listener)
        return;
    uv_close((uv_handle_t *)e->listener, on_listener_closed);
    e->listener = NULL;
    unlink(e->path);
}

/* Writes n bytes of s into the event stream as one chunk. */
static void engine_send_bytes(struct engine *e, const char *s, size_t n)
{
    char head[32];
    int len = snprintf(head, sizeof(head), "%zx\r\n", n);

    assert_non_null(e->events);
    conn_write(e->events, head, (size_t)len);
    conn_write(e->events, s, n);
    conn_write(e->events, "\r\n", 2);
}

static void engine_send(struct engine *e, const char *s)
{
    engine_send_bytes(e, s, strlen(s));
}

/* Sends one event: a line of JSON. */
static void engine_event(struct engine *e, const char *json)
{
    char *line = xasprintf("%s\n", json);

    engine_send(e, line);
    free(line);
}

/* Ends the event stream the way HTTP/1.1 does: the last chunk, then the close. */
static void engine_close_events(struct engine *e)
{
    struct conn *c = e->events;

    assert_non_null(c);
    e->events = NULL;
    conn_write(c, "0\r\n\r\n", 5);
    conn_finish(c);
}

/* Sets the containers GET /containers/json answers: CONTAINER()s, NULL-terminated. */
static void engine_set_containers(struct engine *e, ...)
{
    va_list ap;
    const char *c;
    char *list = xstrdup("[");

    va_start(ap, e);
    while ((c = va_arg(ap, const char *))) {
        char *longer = xasprintf("%s%s%s", list, list[1] ? "," : "", c);
        free(list);
        list = longer;
    }
    va_end(ap);
    free(e->list);
    e->list = xasprintf("%s]", list);
    free(list);
}

/* The logs the engine answers for container id (as given, timestamps and frames). */
static void engine_set_logs(struct engine *e, const char *id, int status, const struct body *b)
{
    struct fake_logs *l;

    assert_true(e->n_logs < sizeof(e->logs) / sizeof(e->logs[0]));
    l = &e->logs[e->n_logs++];
    snprintf(l->id, sizeof(l->id), "%s", id);
    l->status = status;
    l->body = *b;
}

/* --- the client against it -------------------------------------------------------------- */

struct fixture {
    uv_loop_t loop;
    uv_timer_t tick; /* wakes the loop while a test waits */
    struct engine engine;
    struct fetcher *fetcher;
    struct docker *docker;
    /* What the watch saw. */
    unsigned n_engine_ok, n_engine_error, n_listed;
    char error[512];
    bool listed_before_engine;
    /* At each listed(): the generation and the running containers of project "alpha". */
    struct {
        uint64_t generation;
        unsigned alpha_running;
    } seen[64];
};

static void on_engine(void *data, const char *error)
{
    struct fixture *f = data;

    if (error) {
        f->n_engine_error++;
        snprintf(f->error, sizeof(f->error), "%s", error);
    } else {
        f->n_engine_ok++;
        f->error[0] = '\0';
    }
}

static void on_listed(void *data)
{
    struct fixture *f = data;
    struct docker_project p;

    if (f->n_engine_ok == 0)
        f->listed_before_engine = true;
    if (f->n_listed < sizeof(f->seen) / sizeof(f->seen[0])) {
        docker_project_get(f->docker, "alpha", &p);
        f->seen[f->n_listed].generation = docker_generation(f->docker);
        f->seen[f->n_listed].alpha_running = p.n_running;
    }
    f->n_listed++;
}

static const struct docker_watch watch = {.engine = on_engine, .listed = on_listed};

static void on_tick(uv_timer_t *t)
{
}

/* Runs the loop until cond holds, for WAIT_MS at most, then asserts it. */
#define RUN_UNTIL(f, cond)                                                                         \
    do {                                                                                           \
        uint64_t deadline_ = uv_now(&(f)->loop) + WAIT_MS;                                         \
        uv_timer_start(&(f)->tick, on_tick, 10, 10);                                               \
        while (!(cond) && uv_now(&(f)->loop) < deadline_)                                          \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                       \
        uv_timer_stop(&(f)->tick);                                                                 \
        if (!(cond))                                                                               \
            fail_msg("still not true after %d ms: %s", WAIT_MS, #cond);                            \
    } while (0)

/* Runs the loop for about ms, so that bytes written so far reach the other side. */
static void run_for(struct fixture *f, uint64_t ms)
{
    uint64_t until = uv_now(&f->loop) + ms;

    uv_timer_start(&f->tick, on_tick, 5, 5);
    while (uv_now(&f->loop) < until)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->tick);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    struct engine *e = &f->engine;

    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(uv_timer_init(&f->loop, &f->tick), 0);
    e->loop = &f->loop;
    snprintf(e->dir, sizeof(e->dir), "/tmp/nanny-docker-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    snprintf(e->path, sizeof(e->path), "%s/docker.sock", e->dir);
    /* Most tests: alpha has two running containers, beta one that exited. */
    engine_set_containers(e, CONTAINER("aaa", "running", "alpha", "web"),
                          CONTAINER("bbb", "running", "alpha", "worker"),
                          CONTAINER("ccc", "exited", "beta", "db"), NULL);
    engine_listen(e);
    assert_int_equal(fetcher_new(&f->loop, &f->fetcher), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    struct engine *e = &f->engine;

    docker_free(f->docker);
    fetcher_free(f->fetcher);
    engine_stop_listening(e);
    for (struct conn *c = e->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(e->list);
    assert_int_equal(rmdir(e->dir), 0);
    free(f);
    return 0;
}

/* Starts the client on the fake engine and waits for its first list. */
static void connect_to_engine(struct fixture *f)
{
    f->docker = docker_new(&f->loop, f->fetcher, f->engine.path, &watch, f);
    RUN_UNTIL(f, f->n_listed >= 1 && f->engine.events != NULL);
}

static const struct docker_container *find(struct fixture *f, const char *id)
{
    for (size_t i = 0; i < docker_count(f->docker); i++)
        if (strcmp(docker_at(f->docker, i)->id, id) == 0)
            return docker_at(f->docker, i);
    fail_msg("no container %s in the list", id);
    return NULL;
}

static void test_connect_and_list(void **state)
{
    struct fixture *f = *state;
    struct docker_project p;
    const struct docker_container *c;

    engine_set_containers(&f->engine, CONTAINER("aaa", "running", "alpha", "web"),
                          CONTAINER("bbb", "exited", "alpha", "worker"),
                          CONTAINER("ccc", "paused", "beta", "db"),
                          "{\"Id\":\"zzz\",\"State\":\"running\",\"Labels\":{}}", NULL);
    f->docker = docker_new(&f->loop, f->fetcher, f->engine.path, &watch, f);
    /* Before its first answer the engine is not known, and counts as reachable. */
    assert_false(docker_known(f->docker));
    assert_true(docker_reachable(f->docker));
    assert_string_equal(docker_socket(f->docker), f->engine.path);
    RUN_UNTIL(f, f->n_listed >= 1 && f->engine.events != NULL);

    assert_int_equal(f->n_engine_ok, 1);
    assert_int_equal(f->n_engine_error, 0);
    assert_false(f->listed_before_engine);
    assert_true(docker_known(f->docker));
    assert_true(docker_reachable(f->docker));
    assert_null(docker_error(f->docker));
    assert_int_equal(docker_generation(f->docker), 1);
    /* Only compose containers were asked for, and the event stream of containers. */
    assert_non_null(strstr(f->engine.list_target, "all=1"));
    assert_non_null(strstr(f->engine.list_target, DOCKER_LABEL_PROJECT));
    assert_non_null(strstr(f->engine.events_target, "filters="));

    /* The container without a project label is not one of ours. */
    assert_int_equal(docker_count(f->docker), 3);
    assert_null(docker_at(f->docker, 3));
    c = find(f, "aaa");
    assert_string_equal(c->project, "alpha");
    assert_string_equal(c->service, "web");
    assert_true(c->running);
    assert_false(find(f, "bbb")->running);
    assert_true(find(f, "ccc")->running); /* paused still holds what it holds */

    docker_project_get(f->docker, "alpha", &p);
    assert_int_equal(p.n_containers, 2);
    assert_int_equal(p.n_running, 1);
    assert_int_equal(p.exit_code, -1);
    docker_project_get(f->docker, "beta", &p);
    assert_int_equal(p.n_containers, 1);
    assert_int_equal(p.n_running, 1);
    docker_project_get(f->docker, "nobody", &p);
    assert_int_equal(p.n_containers, 0);
    assert_int_equal(p.n_running, 0);
    assert_int_equal(p.exit_code, -1);
}

/* docker_refresh() asks for a fresh list and says which generation will hold it. */
static void test_refresh(void **state)
{
    struct fixture *f = *state;
    struct docker_project p;
    uint64_t g;

    connect_to_engine(f);
    engine_set_containers(&f->engine, CONTAINER("ddd", "running", "gamma", "api"), NULL);
    g = docker_refresh(f->docker);
    assert_int_equal(g, docker_generation(f->docker) + 1);
    RUN_UNTIL(f, docker_generation(f->docker) >= g);
    assert_int_equal(docker_count(f->docker), 1);
    docker_project_get(f->docker, "gamma", &p);
    assert_int_equal(p.n_running, 1);
    docker_project_get(f->docker, "alpha", &p);
    assert_int_equal(p.n_containers, 0);
    assert_int_equal(f->engine.n_lists, 2);
}

/* The engine sends "die" before its list shows the container stopped: the container stays
 * dead in every list until a "start" event. */
static void test_die_keeps_a_container_dead_until_start(void **state)
{
    struct fixture *f = *state;
    struct docker_project p;
    uint64_t g0, g1;
    bool told_at_once = false;

    connect_to_engine(f);
    g0 = docker_generation(f->docker);
    docker_project_get(f->docker, "alpha", &p);
    assert_int_equal(p.n_running, 2);

    engine_event(&f->engine, DIE_EVENT("aaa", "alpha", "137"));
    RUN_UNTIL(f, docker_generation(f->docker) > g0);
    /* The fake engine's list still says running. */
    assert_non_null(strstr(f->engine.list, "\"aaa\",\"State\":\"running\""));
    assert_int_equal(f->engine.n_lists, 2);
    assert_false(find(f, "aaa")->running);
    assert_true(find(f, "bbb")->running);
    docker_project_get(f->docker, "alpha", &p);
    assert_int_equal(p.n_containers, 2);
    assert_int_equal(p.n_running, 1);
    assert_int_equal(p.exit_code, 137);
    /* What the die says was told before the new list came. */
    for (unsigned i = 0; i < f->n_listed; i++)
        if (f->seen[i].generation == g0 && f->seen[i].alpha_running == 1)
            told_at_once = true;
    assert_true(told_at_once);

    /* Another list, and still dead. */
    g1 = docker_refresh(f->docker);
    RUN_UNTIL(f, docker_generation(f->docker) >= g1);
    assert_false(find(f, "aaa")->running);

    engine_event(&f->engine, START_EVENT("aaa", "alpha"));
    g1 = docker_generation(f->docker);
    RUN_UNTIL(f, docker_generation(f->docker) > g1);
    assert_true(find(f, "aaa")->running);
    docker_project_get(f->docker, "alpha", &p);
    assert_int_equal(p.n_running, 2);
    /* The other project knows no exit. */
    docker_project_get(f->docker, "beta", &p);
    assert_int_equal(p.exit_code, -1);
}

/* Events cut across chunks, and several in one chunk. */
static void test_events_in_pieces(void **state)
{
    struct fixture *f = *state;
    static const char die[] = DIE_EVENT("aaa", "alpha", "3") "\n";
    size_t cut = 40; /* inside the JSON */
    struct docker_project p;
    uint64_t g0;

    connect_to_engine(f);
    g0 = docker_generation(f->docker);
    engine_send_bytes(&f->engine, die, cut);
    run_for(f, 50);
    assert_int_equal(docker_generation(f->docker), g0); /* half an event is no event */
    engine_send(&f->engine, die + cut);
    RUN_UNTIL(f, docker_generation(f->docker) > g0);
    docker_project_get(f->docker, "alpha", &p);
    assert_int_equal(p.n_running, 1);
    assert_int_equal(p.exit_code, 3);

    g0 = docker_generation(f->docker);
    engine_send(&f->engine, DIE_EVENT("bbb", "alpha", "1") "\n" DIE_EVENT("ccc", "beta", "2") "\n");
    RUN_UNTIL(f, docker_generation(f->docker) > g0);
    docker_project_get(f->docker, "alpha", &p);
    assert_int_equal(p.n_running, 0);
    assert_int_equal(p.exit_code, 1);
    docker_project_get(f->docker, "beta", &p);
    assert_int_equal(p.exit_code, 2);
}

/* The engine goes away: the client says so, keeps the last list, and comes back by itself
 * once the engine accepts again. */
static void test_engine_goes_away_and_comes_back(void **state)
{
    struct fixture *f = *state;

    connect_to_engine(f);
    engine_stop_listening(&f->engine);
    engine_close_events(&f->engine);
    RUN_UNTIL(f, f->n_engine_error >= 1);
    assert_false(docker_reachable(f->docker));
    assert_true(docker_known(f->docker));
    assert_non_null(docker_error(f->docker));
    assert_string_equal(docker_error(f->docker), f->error);
    assert_non_null(strstr(f->error, "closed"));
    assert_int_equal(docker_count(f->docker), 3); /* the last list stays */

    /* It tries again by itself, finds nothing listening, and says so. */
    RUN_UNTIL(f, f->n_engine_error >= 2);
    assert_false(docker_reachable(f->docker));
    assert_int_equal(f->engine.n_events, 1);

    engine_listen(&f->engine);
    RUN_UNTIL(f, f->n_engine_ok >= 2 && f->engine.events != NULL);
    assert_true(docker_reachable(f->docker));
    assert_null(docker_error(f->docker));
    assert_int_equal(f->engine.n_events, 2);
    assert_int_equal(docker_count(f->docker), 3);
}

static void test_no_engine(void **state)
{
    struct fixture *f = *state;
    char *path = xasprintf("%s/nothing.sock", f->engine.dir);

    f->docker = docker_new(&f->loop, f->fetcher, path, &watch, f);
    RUN_UNTIL(f, f->n_engine_error >= 1);
    assert_int_equal(f->n_engine_ok, 0);
    assert_int_equal(f->n_listed, 0);
    assert_true(docker_known(f->docker));
    assert_false(docker_reachable(f->docker));
    assert_non_null(strchr(f->error, ' ')); /* a sentence, not a code */
    assert_string_equal(docker_error(f->docker), f->error);
    assert_int_equal(docker_count(f->docker), 0);
    free(path);
}

/* --- logs ------------------------------------------------------------------------------- */

struct logs_outcome {
    bool done;
    char **lines;
    char error[256];
};

static void on_logs(void *data, char **lines, const char *error)
{
    struct logs_outcome *o = data;

    assert_false(o->done);
    o->done = true;
    o->lines = lines;
    snprintf(o->error, sizeof(o->error), "%s", error ? error : "");
}

static void assert_lines(char **lines, const char *const *expected)
{
    size_t n = 0, got = 0;

    assert_non_null(lines);
    while (expected[n])
        n++;
    while (lines[got])
        got++;
    if (got != n) {
        for (size_t i = 0; i < got; i++)
            print_error("line %zu: '%s'\n", i, lines[i]);
        fail_msg("%zu lines, expected %zu", got, n);
    }
    for (size_t i = 0; i < n; i++)
        assert_string_equal(lines[i], expected[i]);
}

/* Two containers of alpha with interleaved timestamps, one line cut across frames. */
static void set_alpha_logs(struct engine *e)
{
    struct body web = {0}, worker = {0};

    frame(&web, 1, AT(1) "listening\n" AT(3) "GET /");
    frame(&web, 1, "health 200\n");
    frame(&web, 2, AT(5) "warning: slow\n");
    frame(&worker, 2, AT(4) "job 1 done\n");
    frame(&worker, 1, AT(2) "worker ready\n");
    engine_set_logs(e, "aaa", 200, &web);
    engine_set_logs(e, "bbb", 200, &worker);
}

static void test_logs_merged_in_time_order(void **state)
{
    struct fixture *f = *state;
    struct logs_outcome o = {0};
    struct docker_logs *l;

    set_alpha_logs(&f->engine);
    connect_to_engine(f);
    assert_int_equal(docker_logs(f->docker, "alpha", 100, on_logs, &o, &l), 0);
    assert_non_null(l);
    RUN_UNTIL(f, o.done);
    assert_string_equal(o.error, "");
    /* The worker's lines stay in the engine's order (its stderr line came first, though
     * stamped later): the containers are merged by time, each in its own order. */
    assert_lines(o.lines, LINES("web | listening", "worker | job 1 done", "worker | worker ready",
                                "web | GET /health 200", "web | warning: slow"));
    strv_free(o.lines);
    /* One request per container of the project, with timestamps and the tail. */
    assert_int_equal(f->engine.n_logs_requests, 2);
    for (int i = 0; i < 2; i++) {
        assert_non_null(strstr(f->engine.logs_targets[i], "tail=100"));
        assert_non_null(strstr(f->engine.logs_targets[i], "timestamps=1"));
        assert_non_null(strstr(f->engine.logs_targets[i], "stdout=1"));
        assert_non_null(strstr(f->engine.logs_targets[i], "stderr=1"));
        assert_null(strstr(f->engine.logs_targets[i], "ccc"));
    }
}

/* Only the last tail lines of all containers together. */
static void test_logs_tail(void **state)
{
    struct fixture *f = *state;
    struct logs_outcome o = {0};
    struct docker_logs *l;

    set_alpha_logs(&f->engine);
    connect_to_engine(f);
    assert_int_equal(docker_logs(f->docker, "alpha", 2, on_logs, &o, &l), 0);
    RUN_UNTIL(f, o.done);
    assert_lines(o.lines, LINES("web | GET /health 200", "web | warning: slow"));
    strv_free(o.lines);
    assert_non_null(strstr(f->engine.logs_targets[0], "tail=2"));
}

/* Three containers of alpha as the engine answers them: one container's stdout and stderr
 * lines may carry stamps out of order (the engine stamps each stream on its own), lines of
 * two containers may carry the same stamp, and two containers may run the same service. */
static void set_racy_logs(struct engine *e, bool reversed)
{
    struct body web = {0}, worker = {0}, web2 = {0};

    frame(&web, 1, AT(1) "web a\n");
    frame(&web, 2, AT(3) "web b\n");
    frame(&web, 1, AT(2) "web c\n");
    frame(&web, 1, AT(5) "web d\n");
    frame(&worker, 1, AT(2) "worker a\n");
    frame(&worker, 2, AT(5) "worker b\n");
    frame(&worker, 1, AT(4) "worker c\n");
    frame(&web2, 1, AT(5) "web2 a\n");
    engine_set_logs(e, "aaa", 200, &web);
    engine_set_logs(e, "bbb", 200, &worker);
    engine_set_logs(e, "ddd", 200, &web2);
    if (reversed)
        engine_set_containers(e, CONTAINER("ddd", "running", "alpha", "web"),
                              CONTAINER("bbb", "running", "alpha", "worker"),
                              CONTAINER("aaa", "running", "alpha", "web"), NULL);
    else
        engine_set_containers(e, CONTAINER("aaa", "running", "alpha", "web"),
                              CONTAINER("bbb", "running", "alpha", "worker"),
                              CONTAINER("ddd", "running", "alpha", "web"), NULL);
    e->cut_tail = true;
}

/* The lines of alpha for tail, which the fake engine cuts as the real one does. */
static char **alpha_logs(struct fixture *f, unsigned tail)
{
    struct logs_outcome o = {0};
    struct docker_logs *l;

    assert_int_equal(docker_logs(f->docker, "alpha", tail, on_logs, &o, &l), 0);
    RUN_UNTIL(f, o.done);
    assert_string_equal(o.error, "");
    return o.lines;
}

static const char *const racy_merged[] = {
    "web | web a",       "web | web b",       "web | web c",
    "worker | worker a", "worker | worker b", "worker | worker c",
    "web | web d",       "web | web2 a",      NULL,
};

/* One order for every request: ties go by service, then container id, never by which
 * answer came first; each container keeps its own order. */
static void test_logs_order_is_total(void **state)
{
    struct fixture *f = *state;
    char **lines;

    set_racy_logs(&f->engine, false);
    connect_to_engine(f);
    lines = alpha_logs(f, 100);
    assert_lines(lines, racy_merged);
    strv_free(lines);
}

/* The order depends on no container's place in the engine's list. */
static void test_logs_order_does_not_depend_on_the_list(void **state)
{
    struct fixture *f = *state;
    char **lines;

    set_racy_logs(&f->engine, true);
    connect_to_engine(f);
    lines = alpha_logs(f, 100);
    assert_lines(lines, racy_merged);
    strv_free(lines);
}

/* The lines for tail N are the last N of the lines for any bigger tail, though the engine
 * answers each container's own last N lines, out-of-order stamps and all. */
static void test_logs_tail_is_the_end_of_a_bigger_tail(void **state)
{
    struct fixture *f = *state;
    size_t total = sizeof(racy_merged) / sizeof(racy_merged[0]) - 1;

    set_racy_logs(&f->engine, false);
    connect_to_engine(f);
    for (unsigned tail = 0; tail <= total + 1; tail++) {
        char **lines = alpha_logs(f, tail);
        size_t n = tail < total ? tail : total;

        assert_lines(lines, racy_merged + total - n);
        strv_free(lines);
    }
}

static void test_logs_of_a_project_without_containers(void **state)
{
    struct fixture *f = *state;
    struct logs_outcome o = {0};
    static char sentinel;
    struct docker_logs *l = (struct docker_logs *)&sentinel; /* to see it overwritten */

    connect_to_engine(f);
    assert_int_equal(docker_logs(f->docker, "nobody", 100, on_logs, &o, &l), 0);
    /* Answered at once, with no lines and nothing left to cancel. */
    assert_true(o.done);
    assert_null(l);
    assert_string_equal(o.error, "");
    assert_lines(o.lines, NO_LINES);
    strv_free(o.lines);
    assert_int_equal(f->engine.n_logs_requests, 0);
}

/* A container removed meanwhile (404) has no lines; another failure is an error. Lines of a
 * container without a service label carry its id. */
static void test_logs_missing_container_and_failure(void **state)
{
    struct fixture *f = *state;
    struct logs_outcome o = {0}, bad = {0};
    struct docker_logs *l;
    struct body b = {0}, none = {0};

    frame(&b, 1, AT(1) "up\n");
    engine_set_logs(&f->engine, "ddd", 200, &b);
    engine_set_logs(&f->engine, "fff", 500, &none);
    engine_set_containers(&f->engine, CONTAINER("ddd", "running", "gamma", ""),
                          CONTAINER("eee", "running", "gamma", "gone"),
                          CONTAINER("fff", "running", "delta", "broken"), NULL);
    connect_to_engine(f);

    assert_int_equal(docker_logs(f->docker, "gamma", 10, on_logs, &o, &l), 0);
    RUN_UNTIL(f, o.done);
    assert_string_equal(o.error, "");
    assert_lines(o.lines, LINES("ddd | up"));
    strv_free(o.lines);

    assert_int_equal(docker_logs(f->docker, "delta", 10, on_logs, &bad, &l), 0);
    RUN_UNTIL(f, bad.done);
    assert_null(bad.lines);
    assert_non_null(strstr(bad.error, "500"));
}

/* Cancelling before the answer frees everything and calls nothing (ASan checks leaks). */
static void test_logs_cancel(void **state)
{
    struct fixture *f = *state;
    struct logs_outcome o = {0};
    struct docker_logs *l;
    unsigned active;

    connect_to_engine(f);
    f->engine.hold_logs = true;
    active = fetcher_active(f->fetcher);
    assert_int_equal(docker_logs(f->docker, "alpha", 100, on_logs, &o, &l), 0);
    assert_non_null(l);
    assert_int_equal(fetcher_active(f->fetcher), active + 2);
    RUN_UNTIL(f, f->engine.n_held == 2);
    docker_logs_cancel(l);
    assert_int_equal(fetcher_active(f->fetcher), active);
    RUN_UNTIL(f, f->engine.n_held == 0); /* the engine saw both connections close */
    assert_false(o.done);

    /* And before the requests even left. */
    assert_int_equal(docker_logs(f->docker, "alpha", 100, on_logs, &o, &l), 0);
    docker_logs_cancel(l);
    run_for(f, 20);
    assert_false(o.done);
    docker_logs_cancel(NULL);
}

/* --- follow ----------------------------------------------------------------------------- */

struct follow_outcome {
    char *lines[MAX_LINES];
    size_t n;
    char *ended;
    struct docker_follow *handle;
    size_t free_at; /* frees the follow at this many lines (0: never) */
};

static void on_follow_line(void *data, const char *line, size_t len)
{
    struct follow_outcome *o = data;

    assert_null(o->ended);
    assert_true(o->n < MAX_LINES);
    o->lines[o->n++] = xstrndup(line, len);
    if (o->free_at && o->n == o->free_at) {
        docker_follow_free(o->handle);
        o->handle = NULL;
    }
}

static void on_follow_end(void *data, const char *error)
{
    struct follow_outcome *o = data;

    assert_null(o->ended);
    o->ended = xstrdup(error);
    o->handle = NULL;
}

static void follow_outcome_clear(struct follow_outcome *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->lines[i]);
    free(o->ended);
}

/* The lines of o that begin with prefix, in order, are expected. */
static void assert_followed(const struct follow_outcome *o, const char *prefix,
                            const char *const *expected)
{
    size_t k = 0;

    for (size_t i = 0; i < o->n; i++) {
        if (strncmp(o->lines[i], prefix, strlen(prefix)) != 0)
            continue;
        if (!expected[k])
            print_error("extra line: %s\n", o->lines[i]);
        assert_non_null(expected[k]);
        assert_string_equal(o->lines[i], expected[k]);
        k++;
    }
    assert_null(expected[k]);
}

/* Sends bytes to the held logs request (the first one): its head first, then chunks. */
static void held_send(struct engine *e, const char *bytes, size_t n)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream"
                               "\r\nTransfer-Encoding: chunked\r\n\r\n";
    struct conn *c;
    char size[32];
    int len;

    for (c = e->conns; c && !c->held; c = c->next)
        ;
    assert_non_null(c);
    if (!c->seen)
        return;
    if (c->len > 0) {
        conn_write(c, head, sizeof(head) - 1);
        c->len = 0; /* the head went */
    }
    if (n == 0) {
        conn_write(c, "0\r\n\r\n", 5);
        c->held = false;
        e->n_held--;
        conn_finish(c);
        return;
    }
    len = snprintf(size, sizeof(size), "%zx\r\n", n);
    conn_write(c, size, (size_t)len);
    conn_write(c, bytes, n);
    conn_write(c, "\r\n", 2);
}

/* Each container's stream, demultiplexed and prefixed, in its order; then the end once
 * every stream ended. */
static void test_follow_streams(void **state)
{
    struct fixture *f = *state;
    struct follow_outcome o = {0};
    struct body web = {0}, worker = {0};

    frame(&web, 1, "one\ntw");
    frame(&web, 1, "o\r\n");
    frame(&web, 2, "err\n");
    frame(&worker, 1, "w1\nw2");
    engine_set_logs(&f->engine, "aaa", 200, &web);
    engine_set_logs(&f->engine, "bbb", 200, &worker);
    connect_to_engine(f);
    assert_int_equal(docker_follow(f->docker, &f->loop, "alpha", 7, on_follow_line, on_follow_end,
                                   &o, &o.handle),
                     0);
    RUN_UNTIL(f, o.ended != NULL);
    assert_string_equal(o.ended, "its containers stopped");
    assert_followed(&o, "web | ", LINES("web | one", "web | two", "web | err"));
    assert_followed(&o, "worker | ", LINES("worker | w1", "worker | w2"));
    assert_int_equal(o.n, 5);
    assert_int_equal(f->engine.n_logs_requests, 2);
    for (int i = 0; i < 2; i++) {
        assert_non_null(strstr(f->engine.logs_targets[i], "follow=1"));
        assert_non_null(strstr(f->engine.logs_targets[i], "tail=7"));
    }
    follow_outcome_clear(&o);
    /* A project without containers cannot be followed. */
    assert_int_equal(docker_follow(f->docker, &f->loop, "nobody", 7, on_follow_line, on_follow_end,
                                   &o, &o.handle),
                     -ENOENT);
}

/* A stream that comes in pieces, frame headers cut across them; freed from inside a line
 * callback (within libcurl's): nothing more comes, nothing leaks. */
static void test_follow_in_pieces_and_free_inside_line(void **state)
{
    struct fixture *f = *state;
    struct follow_outcome o = {0};
    struct body b = {0};

    engine_set_containers(&f->engine, CONTAINER("aaa", "running", "alpha", "web"), NULL);
    connect_to_engine(f);
    f->engine.hold_logs = true;
    assert_int_equal(docker_follow(f->docker, &f->loop, "alpha", 0, on_follow_line, on_follow_end,
                                   &o, &o.handle),
                     0);
    RUN_UNTIL(f, f->engine.n_held == 1);
    frame(&b, 1, "first\nsec");
    frame(&b, 2, "other\n");
    frame(&b, 1, "ond\nthird\nfourth\n");
    for (size_t at = 0; at < b.len; at += 5) {
        held_send(&f->engine, b.buf + at, b.len - at < 5 ? b.len - at : 5);
        run_for(f, 5);
    }
    RUN_UNTIL(f, o.n >= 5);
    assert_followed(
        &o, "web | ",
        LINES("web | first", "web | other", "web | second", "web | third", "web | fourth"));
    held_send(&f->engine, NULL, 0); /* the container stops */
    RUN_UNTIL(f, o.ended != NULL);
    follow_outcome_clear(&o);
    memset(&o, 0, sizeof(o));
    /* Freed at its first line, which comes with more in the same piece. */
    f->engine.hold_logs = false;
    b.len = 0;
    frame(&b, 1, "a\nb\nc\n");
    engine_set_logs(&f->engine, "aaa", 200, &b);
    docker_follow_free(NULL);
    assert_int_equal(docker_follow(f->docker, &f->loop, "alpha", 0, on_follow_line, on_follow_end,
                                   &o, &o.handle),
                     0);
    o.free_at = 1;
    RUN_UNTIL(f, o.n >= 1);
    run_for(f, 20);
    assert_int_equal(o.n, 1);
    assert_null(o.ended);
    follow_outcome_clear(&o);
}

/* --- the compose driver's follow ------------------------------------------------------------ */

struct compose_outcome {
    struct follow_outcome lines;
    struct driver_follow *handle;
    bool stop_at_l4; /* stops the follow from inside the line "web | l4" */
    bool backend;    /* the driver said it can tell what runs */
    bool answered;   /* a tail came */
    char *tail[MAX_LINES];
    size_t n_tail;
};

static void on_compose_line(void *data, const char *line, size_t len)
{
    struct compose_outcome *o = data;

    on_follow_line(&o->lines, line, len);
    if (o->stop_at_l4 && strcmp(o->lines.lines[o->lines.n - 1], "web | l4") == 0) {
        driver_compose.follow_stop(o->handle);
        o->handle = NULL;
    }
}

static void on_compose_ended(void *data, const char *error)
{
    struct compose_outcome *o = data;

    on_follow_end(&o->lines, error);
    o->handle = NULL;
}

static const struct driver_follow_events compose_events = {.line = on_compose_line,
                                                           .ended = on_compose_ended};

static void on_compose_tail(void *data, char **lines, const char *error)
{
    struct compose_outcome *o = data;

    assert_null(error);
    for (size_t i = 0; i < o->n_tail; i++)
        free(o->tail[i]);
    o->n_tail = 0;
    for (char **l = lines; *l; l++)
        o->tail[o->n_tail++] = xstrdup(*l);
    o->answered = true;
}

static void outside_appeared(void *data, const struct driver *d, const char *key)
{
}

static void outside_backend(void *data, const struct driver *d, const char *error)
{
    struct compose_outcome *o = data;

    o->backend = true;
}

static const struct driver_outside compose_outside = {.appeared = outside_appeared,
                                                      .backend = outside_backend};

/* The compose driver's follow over the fake engine: the stream's lines go out and into
 * the ring; a follower that joins gets its tail from the ring on a later pass, ending with
 * the last line given; a stop from inside a line ends it there. */
#define ALPHA_YAML "name: alpha\ncommand: [\"true\"]\nhealth: false\n"
#define GAMMA_YAML "name: gamma\ncommand: [\"true\"]\nhealth: false\n"

static void test_compose_follow(void **state)
{
    struct fixture *f = *state;
    struct compose_outcome o = {0};
    struct config config = {.docker_host = f->engine.path, .compose_command = "true"};
    struct driver_context ctx = {&f->loop, f->fetcher, &config, &compose_outside, &o};
    struct diags errors = {0}, warnings = {0};
    struct driver_follow_tail *t;
    struct manifest *m;
    struct body b = {0};
    char err[256];

    engine_set_containers(&f->engine, CONTAINER("aaa", "running", "alpha", "web"), NULL);
    f->engine.hold_logs = true;
    assert_int_equal(
        manifest_parse(ALPHA_YAML, strlen(ALPHA_YAML), f->engine.dir, &m, NULL, &errors, &warnings),
        0);
    driver_compose.setup(&ctx);
    driver_compose.in_use();
    RUN_UNTIL(f, o.backend);
    assert_int_equal(driver_compose.follow(&f->loop, m, NULL, 3, &compose_events, &o, &o.handle,
                                           err, sizeof(err)),
                     0);
    RUN_UNTIL(f, f->engine.n_held == 1);
    assert_non_null(strstr(f->engine.logs_targets[0], "tail=3"));
    frame(&b, 1, "l1\nl2\n");
    held_send(&f->engine, b.buf, b.len);
    RUN_UNTIL(f, o.lines.n == 2);
    driver_compose.follow_tail(o.handle, 1, on_compose_tail, &o, &t);
    assert_false(o.answered); /* on a later pass */
    RUN_UNTIL(f, o.answered);
    assert_int_equal(o.n_tail, 1);
    assert_string_equal(o.tail[0], "web | l2");
    b.len = 0;
    frame(&b, 1, "l3\n");
    held_send(&f->engine, b.buf, b.len);
    RUN_UNTIL(f, o.lines.n == 3);
    o.answered = false;
    driver_compose.follow_tail(o.handle, 10, on_compose_tail, &o, &t);
    RUN_UNTIL(f, o.answered);
    assert_int_equal(o.n_tail, 3);
    assert_string_equal(o.tail[2], "web | l3");
    /* A tail cancelled is never answered. */
    o.answered = false;
    driver_compose.follow_tail(o.handle, 10, on_compose_tail, &o, &t);
    driver_compose.follow_tail_cancel(t);
    run_for(f, 20);
    assert_false(o.answered);
    /* Stopped from inside a line, with more in the same piece. */
    o.stop_at_l4 = true;
    b.len = 0;
    frame(&b, 1, "l4\nl5\n");
    held_send(&f->engine, b.buf, b.len);
    RUN_UNTIL(f, o.lines.n == 4);
    run_for(f, 20);
    assert_int_equal(o.lines.n, 4);
    assert_null(o.lines.ended);
    RUN_UNTIL(f, f->engine.n_held == 0); /* the stream was closed */
    /* A project without containers cannot be followed. */
    manifest_free(m);
    assert_int_equal(
        manifest_parse(GAMMA_YAML, strlen(GAMMA_YAML), f->engine.dir, &m, NULL, &errors, &warnings),
        0);
    assert_true(driver_compose.follow(&f->loop, m, NULL, 3, &compose_events, &o, &o.handle, err,
                                      sizeof(err)) < 0);
    assert_string_equal(err, "it has no containers: start it first");
    driver_compose.teardown();
    manifest_free(m);
    diags_clear(&errors);
    diags_clear(&warnings);
    for (size_t i = 0; i < o.n_tail; i++)
        free(o.tail[i]);
    follow_outcome_clear(&o.lines);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_lines_multiplexed),
        cmocka_unit_test(test_log_lines_cut_across_frames),
        cmocka_unit_test(test_log_lines_streams_interleaved),
        cmocka_unit_test(test_log_lines_cut_body),
        cmocka_unit_test(test_log_lines_empty_body),
        cmocka_unit_test(test_log_lines_raw_text),
        cmocka_unit_test(test_log_lines_last_line_without_newline),
        cmocka_unit_test(test_log_lines_long_line_across_many_frames),
        cmocka_unit_test(test_project_name),
        cmocka_unit_test_setup_teardown(test_connect_and_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_die_keeps_a_container_dead_until_start, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_events_in_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_goes_away_and_comes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs_merged_in_time_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs_order_is_total, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs_order_does_not_depend_on_the_list, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_logs_tail_is_the_end_of_a_bigger_tail, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_logs_of_a_project_without_containers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs_missing_container_and_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_streams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follow_in_pieces_and_free_inside_line, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compose_follow, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
