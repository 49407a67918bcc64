/* Unit tests for the health probes, against the daemon's own HTTP server on one loop. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/health.h"
#include "http/server.h"
#include "lib/alloc.h"
#include "lib/log.h"

struct fixture {
    uv_loop_t loop;
    struct server *server;
    struct fetcher *fetcher;
    struct health_probe *probe;
    unsigned served;
    unsigned results;
    struct health_check last;
    char last_error[256];
};

static void handler(void *data, struct request *req)
{
    struct fixture *f = data;
    const char *path = request_path(req);

    f->served++;
    if (strcmp(path, "/hang") == 0) {
        request_suspend(req, 60000);
        return;
    }
    if (strcmp(path, "/fail") == 0)
        request_reply_error(req, 503, "unavailable", "not ready");
    else
        request_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

static void on_check(void *data, const struct health_check *check)
{
    struct fixture *f = data;

    f->results++;
    f->last = *check;
    snprintf(f->last_error, sizeof(f->last_error), "%s", check->error ? check->error : "");
    f->last.error = f->last_error;
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

    health_probe_free(f->probe);
    fetcher_free(f->fetcher);
    server_free(f->server);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* Runs the loop for about ms milliseconds, or until results reach want. */
static void run_for(struct fixture *f, uint64_t ms, unsigned want)
{
    uint64_t deadline = uv_now(&f->loop) + ms;

    while (uv_now(&f->loop) < deadline && f->results < want) {
        uv_run(&f->loop, UV_RUN_ONCE);
        uv_update_time(&f->loop);
    }
}

static void probe(struct fixture *f, const char *path, uint64_t interval, uint64_t timeout,
                  bool fast)
{
    char *url = xasprintf("http://127.0.0.1:%u%s", server_port(f->server), path);

    f->probe = health_probe_new(&f->loop, f->fetcher, url, interval, timeout, fast, on_check, f);
    free(url);
}

static void test_ok(void **state)
{
    struct fixture *f = *state;

    probe(f, "/health", 5000, 2000, false);
    run_for(f, 5000, 1);
    assert_int_equal(f->results, 1);
    assert_true(f->last.ok);
    assert_int_equal(f->last.status_code, 200);
    assert_string_equal(f->last.error, "");
}

static void test_503_is_a_failure(void **state)
{
    struct fixture *f = *state;

    probe(f, "/fail", 5000, 2000, false);
    run_for(f, 5000, 1);
    assert_false(f->last.ok);
    assert_int_equal(f->last.status_code, 503);
    assert_non_null(strstr(f->last.error, "503"));
}

static void test_refused(void **state)
{
    struct fixture *f = *state;

    f->probe = health_probe_new(&f->loop, f->fetcher, "http://127.0.0.1:1/health", 5000, 2000,
                                false, on_check, f);
    run_for(f, 5000, 1);
    assert_false(f->last.ok);
    assert_int_equal(f->last.status_code, 0);
    assert_true(strlen(f->last.error) > 0);
}

static void test_timeout(void **state)
{
    struct fixture *f = *state;

    probe(f, "/hang", 5000, 200, false);
    run_for(f, 5000, 1);
    assert_int_equal(f->results, 1);
    assert_false(f->last.ok);
    assert_true(strlen(f->last.error) > 0);
}

static void test_fast_while_starting_then_the_interval(void **state)
{
    struct fixture *f = *state;
    unsigned fast_results;

    /* Fast: every 10 ms for 2 s, then up to every 100 ms: at least 4 within 3 s (where the
     * interval would give 1), with room for a slow sanitizer build. */
    probe(f, "/health", 60000, 2000, true);
    run_for(f, 3000, 4);
    fast_results = f->results;
    assert_true(fast_results >= 4);
    /* At the interval: nothing more within a second. */
    health_probe_set_fast(f->probe, false);
    run_for(f, 1000, 100);
    assert_true(f->results <= fast_results + 1);
}

static void test_free_while_in_flight(void **state)
{
    struct fixture *f = *state;

    probe(f, "/hang", 5000, 5000, false);
    run_for(f, 200, 1);
    assert_int_equal(f->results, 0);
    health_probe_free(f->probe);
    f->probe = NULL;
    run_for(f, 300, 1);
    assert_int_equal(f->results, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_503_is_a_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_while_starting_then_the_interval, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_free_while_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
