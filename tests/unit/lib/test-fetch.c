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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
