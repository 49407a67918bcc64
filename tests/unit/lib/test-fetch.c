/* Unit tests for the outbound HTTP client: real transfers on one libuv loop against the
 * daemon's own HTTP server module. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/server.h"
#include "lib/alloc.h"
#include "lib/fetch.h"
#include "lib/log.h"

struct fixture {
    uv_loop_t loop;
    struct server *server;
    struct fetcher *fetcher;
    unsigned requests;
    struct request *held; /* a request left suspended */
};

struct outcome {
    bool done;
    int curl_code;
    long status;
    char body[256];
    bool had_error;
};

static void handler(void *data, struct request *req)
{
    struct fixture *f = data;

    f->requests++;
    if (strcmp(request_path(req), "/hang") == 0) {
        request_suspend(req, 60000);
        f->held = req;
        return;
    }
    if (strcmp(request_path(req), "/proxied") == 0) {
        size_t len;
        const char *body = request_body(req, &len);
        request_reply_json(req, 201,
                           json_pack("{s:s, s:s%, s:s?, s:s}", "method", request_method(req),
                                     "body", body ? body : "", len, "x",
                                     request_header(req, "X-Test"), "uri", request_uri(req)));
        return;
    }
    if (strcmp(request_path(req), "/missing") == 0) {
        request_reply_error(req, 404, "not_found", "nothing here");
        return;
    }
    request_reply_json(req, 200, json_pack("{s:s}", "path", request_path(req)));
}

static void on_done(void *data, const struct fetch_result *res)
{
    struct outcome *o = data;

    o->done = true;
    o->curl_code = res->curl_code;
    o->status = res->status;
    o->had_error = res->error != NULL;
    snprintf(o->body, sizeof(o->body), "%s", res->body);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(server_new(&f->loop, "127.0.0.1:0", handler, f, &f->server), 0);
    assert_int_equal(fetcher_new(&f->loop, &f->fetcher), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    fetcher_free(f->fetcher);
    server_free(f->server);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* Runs the loop until o is done, bounded by a guard timer. */
static void run_until(struct fixture *f, struct outcome *o)
{
    uint64_t deadline = uv_now(&f->loop) + 10000;

    while (!o->done && uv_now(&f->loop) < deadline) {
        uv_run(&f->loop, UV_RUN_ONCE);
        uv_update_time(&f->loop);
    }
    assert_true(o->done);
}

static char *url(struct fixture *f, const char *path)
{
    return xasprintf("http://127.0.0.1:%u%s", server_port(f->server), path);
}

static void test_get_ok(void **state)
{
    struct fixture *f = *state;
    struct outcome o = {0};
    char *u = url(f, "/hello");

    assert_int_equal(fetcher_get(f->fetcher, u, NULL, 5000, on_done, &o, NULL), 0);
    assert_int_equal(fetcher_active(f->fetcher), 1);
    run_until(f, &o);
    assert_int_equal(o.curl_code, 0);
    assert_int_equal(o.status, 200);
    assert_false(o.had_error);
    assert_string_equal(o.body, "{\"path\":\"/hello\"}");
    assert_int_equal(f->requests, 1);
    assert_int_equal(fetcher_active(f->fetcher), 0);
    free(u);
}

static void test_get_404_is_an_answer(void **state)
{
    struct fixture *f = *state;
    struct outcome o = {0};
    char *u = url(f, "/missing");

    assert_int_equal(fetcher_get(f->fetcher, u, NULL, 5000, on_done, &o, NULL), 0);
    run_until(f, &o);
    assert_int_equal(o.curl_code, 0);
    assert_int_equal(o.status, 404);
    assert_non_null(strstr(o.body, "not_found"));
    free(u);
}

static void test_many_parallel(void **state)
{
    struct fixture *f = *state;
    struct outcome o[20] = {0};
    char *u = url(f, "/p");

    for (int i = 0; i < 20; i++)
        assert_int_equal(fetcher_get(f->fetcher, u, NULL, 5000, on_done, &o[i], NULL), 0);
    for (int i = 0; i < 20; i++) {
        run_until(f, &o[i]);
        assert_int_equal(o[i].status, 200);
    }
    assert_int_equal(f->requests, 20);
    free(u);
}

static void test_connection_refused(void **state)
{
    struct fixture *f = *state;
    struct outcome o = {0};
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char *u;

    /* A port that was free a moment ago and has nobody listening. */
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    u = xasprintf("http://127.0.0.1:%u/", ntohs(addr.sin_port));
    assert_int_equal(fetcher_get(f->fetcher, u, NULL, 5000, on_done, &o, NULL), 0);
    run_until(f, &o);
    assert_int_not_equal(o.curl_code, 0);
    assert_int_equal(o.status, 0);
    assert_true(o.had_error);
    free(u);
}

static void test_timeout(void **state)
{
    struct fixture *f = *state;
    struct outcome o = {0};
    char *u = url(f, "/hang");

    assert_int_equal(fetcher_get(f->fetcher, u, NULL, 200, on_done, &o, NULL), 0);
    run_until(f, &o);
    assert_int_equal(o.curl_code, 28); /* CURLE_OPERATION_TIMEDOUT */
    assert_true(o.had_error);
    assert_non_null(f->held);
    /* The suspended request is still ours to answer. */
    request_reply_json(f->held, 200, json_object());
    free(u);
}

/* A proxied transfer's answer as the events saw it. */
struct proxied {
    struct outcome o;
    long status;
    int64_t length;
    bool type_seen, pause_once, paused, abort_body;
    char body[256];
    size_t body_len, offers;
};

static enum fetch_take on_proxy_head(void *data, long status, char *const *lines, size_t n,
                                     int64_t length)
{
    struct proxied *p = data;

    p->status = status;
    p->length = length;
    for (size_t i = 0; i < n; i++)
        p->type_seen = p->type_seen || strcmp(lines[i], "Content-Type: application/json") == 0;
    return FETCH_TAKEN;
}

static enum fetch_take on_proxy_body(void *data, const char *buf, size_t len)
{
    struct proxied *p = data;

    p->offers++;
    if (p->abort_body)
        return FETCH_ABORT;
    if (p->pause_once && !p->paused) {
        p->paused = true;
        return FETCH_PAUSE;
    }
    assert_true(p->body_len + len < sizeof(p->body));
    memcpy(p->body + p->body_len, buf, len);
    p->body_len += len;
    return FETCH_TAKEN;
}

static const struct fetch_proxy_events proxy_events = {on_proxy_head, on_proxy_body, NULL};

/* Any method with headers and a body goes as given; the answer's head and body come
 * through the events; a paused piece is offered again after fetch_resume(). */
static void test_proxy_transfer(void **state)
{
    struct fixture *f = *state;
    struct proxied p = {.pause_once = true};
    const char *headers[] = {"X-Test: 42", "Accept:", NULL};
    char *u = url(f, "/proxied?q=a%2Fb");
    struct fetch_proxy_request req = {
        .url = u, .method = "PUT", .headers = headers, .body = "a\0c", .body_len = 3};
    struct fetch *t;

    assert_int_equal(fetcher_proxy(f->fetcher, &req, &proxy_events, on_done, &p.o, &t), 0);
    for (int i = 0; i < 1000 && !p.paused; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_true(p.paused);
    assert_int_equal(p.status, 201);
    assert_true(p.type_seen);
    assert_true(p.length > 0);
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(p.o.done); /* paused: nothing more comes */
    fetch_resume(t);
    run_until(f, &p.o);
    assert_int_equal(p.o.curl_code, 0);
    assert_int_equal(p.o.status, 201);
    assert_int_equal((int64_t)p.body_len, p.length);
    p.body[p.body_len] = '\0';
    assert_string_equal(p.body, "{\"method\":\"PUT\",\"body\":\"a\\u0000c\",\"x\":\"42\","
                                "\"uri\":\"/proxied?q=a%2Fb\"}");
    free(u);
}

/* FETCH_ABORT ends the transfer with an error; a refused connection is an error before any
 * head. */
static void test_proxy_abort_and_refused(void **state)
{
    struct fixture *f = *state;
    struct proxied p = {.abort_body = true}, q = {0};
    char *u = url(f, "/proxied");
    struct fetch_proxy_request req = {.url = u, .method = "GET"};
    struct fetch_proxy_request refused = {.url = "http://127.0.0.1:1/", .method = "GET"};

    assert_int_equal(fetcher_proxy(f->fetcher, &req, &proxy_events, on_done, &p.o, NULL), 0);
    run_until(f, &p.o);
    assert_int_equal(p.status, 201);
    assert_int_equal(p.offers, 1);
    assert_int_not_equal(p.o.curl_code, 0);
    assert_true(p.o.had_error);

    assert_int_equal(fetcher_proxy(f->fetcher, &refused, &proxy_events, on_done, &q.o, NULL), 0);
    run_until(f, &q.o);
    assert_int_equal(q.o.curl_code, 7); /* CURLE_COULDNT_CONNECT */
    assert_int_equal(q.status, 0);      /* no head was told */
    free(u);
}

static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct outcome o = {0};
    struct fetch *t;
    char *u = url(f, "/hang");

    assert_int_equal(fetcher_get(f->fetcher, u, NULL, 5000, on_done, &o, &t), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    fetch_cancel(t);
    assert_int_equal(fetcher_active(f->fetcher), 0);
    for (int i = 0; i < 10; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(o.done);
    free(u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_404_is_an_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_parallel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_abort_and_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
