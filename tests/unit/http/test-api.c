/* Unit tests for the API's routing and status rendering. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "http/api.h"
#include "http/browser.h"
#include "http/render.h"
#include "lib/log.h"
#include "drivers/drivers.h"

/* One routing case: a path, the route it must reach (-1: none) and the name it carries. */
static const struct route_case {
    const char *path;
    int route;
    const char *name;
} route_cases[] = {
    {"/health", 0, NULL},
    {"/health/", 0, NULL},
    {"/services", 1, NULL},
    {"/services/", 1, NULL},
    {"/services/foo", 2, "foo"},
    {"/services/foo/", 2, "foo"},
    {"/services/foo/status", 3, "foo"},
    {"/services/foo/start", 4, "foo"},
    {"/services/foo/stop", 5, "foo"},
    {"/services/foo/restart", 6, "foo"},
    {"/services/foo/logs", 7, "foo"},
    {"/rediscover", 8, NULL},
    {"", -1, NULL},
    {"/", -1, NULL},
    {"health", -1, NULL},
    {"//health", -1, NULL},
    {"/health//", -1, NULL},
    {"/services//status", -1, NULL},
    {"/services/foo/status/extra", -1, NULL},
    {"/services/foo/bar", -1, NULL},
    {"/Services", -1, NULL},
    {"/healthz", -1, NULL},
    {"/services/foo/statusx", -1, NULL},
    {"/rediscover/x", -1, NULL},
    {"/services/../../etc/passwd", -1, NULL},
};

static void test_routes(void **state)
{
    for (size_t i = 0; i < sizeof(route_cases) / sizeof(route_cases[0]); i++) {
        const struct route_case *c = &route_cases[i];
        const char *name = NULL;
        size_t len = 0;
        int r = api_route_match(c->path, &name, &len);

        if (c->route < 0) {
            if (r != -ENOENT)
                fail_msg("%s: expected no route, got %d", c->path, r);
            continue;
        }
        if (r != c->route)
            fail_msg("%s: expected route %d, got %d", c->path, c->route, r);
        if (c->name) {
            assert_non_null(name);
            assert_int_equal(len, strlen(c->name));
            assert_memory_equal(name, c->name, len);
        } else {
            assert_null(name);
        }
    }
}

static void test_route_name_is_not_validated_here(void **state)
{
    const char *name;
    size_t len;

    /* The router only splits; the handler checks the name (so that it can say why). */
    assert_int_equal(api_route_match("/services/..x/status", &name, &len), 3);
    assert_int_equal(len, 3);
}

static void test_status_shape(void **state)
{
    static const char yaml[] = "name: web\n"
                               "description: A web thing\n"
                               "ports: [\"8011:80\"]\n"
                               "gpu_required: true\n"
                               "command: [\"sleep\", \"1\"]\n";
    struct diags errors = {0}, warnings = {0};
    struct service svc = {0};
    struct service_status status = {.state = STATE_STOPPED};
    json_t *st, *h;

    assert_int_equal(manifest_parse(yaml, sizeof(yaml) - 1, "/nonexistent-dir", &svc.manifest, NULL,
                                    &errors, &warnings),
                     0);
    svc.name = "web";
    svc.folder = "web";
    svc.warnings = json_array();

    st = render_status(&svc, &status);
    assert_string_equal(json_string_value(json_object_get(st, "name")), "web");
    assert_string_equal(json_string_value(json_object_get(st, "description")), "A web thing");
    assert_string_equal(json_string_value(json_object_get(st, "driver")), "process");
    assert_true(json_is_true(json_object_get(st, "gpu_required")));
    assert_int_equal(json_integer_value(json_object_get(st, "port")), 8011);
    assert_string_equal(json_string_value(json_array_get(json_object_get(st, "ports"), 0)),
                        "8011:80");
    assert_string_equal(json_string_value(json_object_get(st, "state")), "stopped");
    assert_true(json_is_false(json_object_get(st, "is_healthy")));
    assert_true(json_is_null(json_object_get(st, "started_at")));
    assert_int_equal(json_integer_value(json_object_get(st, "restarts")), 0);
    assert_true(json_is_null(json_object_get(st, "last_error")));
    h = json_object_get(st, "health");
    assert_true(json_is_object(h));
    assert_true(json_is_null(json_object_get(h, "ok")));

    /* A check that ran shows its figures and time. */
    status.health = (struct health_result){.checked = true,
                                           .ok = true,
                                           .status_code = 200,
                                           .latency_ms = 3,
                                           .checked_at_ms = 1764172800123};
    status.state = STATE_RUNNING;
    status.is_healthy = true;
    json_decref(st);
    st = render_status(&svc, &status);
    h = json_object_get(st, "health");
    assert_true(json_is_true(json_object_get(h, "ok")));
    assert_int_equal(json_integer_value(json_object_get(h, "status_code")), 200);
    assert_string_equal(json_string_value(json_object_get(h, "checked_at")),
                        "2025-11-26T16:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(st, "state")), "running");

    json_decref(st);
    json_decref(svc.warnings);
    manifest_free(svc.manifest);
    diags_clear(&errors);
    diags_clear(&warnings);
}

static void test_status_survives_bad_utf8(void **state)
{
    static const char yaml[] = "name: web\ncommand: x\nhealth: false\n";
    struct diags errors = {0}, warnings = {0};
    struct service svc = {0};
    struct service_status status = {.last_error = "bad \xff byte"};
    json_t *st;

    assert_int_equal(manifest_parse(yaml, sizeof(yaml) - 1, "/nonexistent-dir", &svc.manifest, NULL,
                                    &errors, &warnings),
                     0);
    svc.name = "web";
    svc.folder = "caf\xe9";
    svc.warnings = json_array();
    st = render_status(&svc, &status);
    assert_string_equal(json_string_value(json_object_get(st, "folder")), "caf?");
    assert_string_equal(json_string_value(json_object_get(st, "last_error")), "bad ? byte");
    assert_true(json_is_null(json_object_get(st, "port")));
    json_decref(st);
    json_decref(svc.warnings);
    manifest_free(svc.manifest);
    diags_clear(&errors);
    diags_clear(&warnings);
}

static void test_host_rule(void **state)
{
    char *allowed[] = {"gpu-box.local", "other:9000", NULL};

    assert_true(browser_host_allowed("localhost:8080", 8080, NULL));
    assert_true(browser_host_allowed("LocalHost:8080", 8080, NULL));
    assert_true(browser_host_allowed("127.0.0.1:8080", 8080, NULL));
    assert_true(browser_host_allowed("[::1]:8080", 8080, NULL));
    assert_true(browser_host_allowed("localhost", 8080, NULL));
    assert_true(browser_host_allowed("[::1]", 8080, NULL));
    assert_false(browser_host_allowed("localhost:8081", 8080, NULL));
    assert_false(browser_host_allowed("evil.example:8080", 8080, NULL));
    assert_false(browser_host_allowed("localhost.evil.example:8080", 8080, NULL));
    assert_false(browser_host_allowed("127.0.0.1.evil:8080", 8080, NULL));
    assert_false(browser_host_allowed("[::1]x:8080", 8080, NULL));
    assert_false(browser_host_allowed("", 8080, NULL));
    /* The port as "%u" writes it, nothing else. */
    assert_false(browser_host_allowed("localhost:08080", 8080, NULL));
    assert_false(browser_host_allowed("localhost:+8080", 8080, NULL));
    assert_false(browser_host_allowed("localhost:8080x", 8080, NULL));
    assert_false(browser_host_allowed("localhost:", 8080, NULL));
    assert_false(browser_host_allowed("localhost:4294975376", 8080, NULL)); /* 8080 + 2^32 */
    assert_true(browser_host_allowed("localhost:0", 0, NULL));
    assert_true(browser_host_allowed("localhost:65535", 65535, NULL));
    assert_true(browser_host_allowed("gpu-box.local:8080", 8080, allowed));
    assert_true(browser_host_allowed("GPU-BOX.local", 8080, allowed));
    assert_true(browser_host_allowed("other:9000", 8080, allowed));
    assert_false(browser_host_allowed("gpu-box.localx", 8080, allowed));
}

static void test_origin_rule(void **state)
{
    char *allowed[] = {"http://dashboard.local:3000", NULL};

    assert_true(browser_origin_allowed("http://localhost:8080", 8080, NULL));
    assert_true(browser_origin_allowed("http://127.0.0.1:8080", 8080, NULL));
    assert_true(browser_origin_allowed("http://[::1]:8080", 8080, NULL));
    assert_false(browser_origin_allowed("http://localhost:8081", 8080, NULL));
    assert_false(browser_origin_allowed("https://localhost:8080", 8080, NULL));
    assert_false(browser_origin_allowed("null", 8080, NULL));
    assert_false(browser_origin_allowed("http://evil.example", 8080, NULL));
    assert_true(browser_origin_allowed("http://dashboard.local:3000", 8080, allowed));
    assert_false(browser_origin_allowed("http://dashboard.local:3001", 8080, allowed));
}

int main(void)
{
    drivers_set(drivers_builtin);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_route_name_is_not_validated_here),
        cmocka_unit_test(test_status_shape),
        cmocka_unit_test(test_status_survives_bad_utf8),
        cmocka_unit_test(test_host_rule),
        cmocka_unit_test(test_origin_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
