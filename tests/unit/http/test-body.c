/* Unit tests for request body parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "http/body.h"

static int parse_start(const char *s, struct start_request *ret, char *err)
{
    return body_parse_start(s, strlen(s), ret, err, 256);
}

static void test_start_defaults(void **state)
{
    struct start_request req = {.force = true};
    char err[256];

    assert_int_equal(parse_start("", &req, err), 0);
    assert_false(req.force);
    req.force = true;
    assert_int_equal(parse_start("  \r\n\t", &req, err), 0);
    assert_false(req.force);
    assert_int_equal(parse_start("{}", &req, err), 0);
    assert_false(req.force);
}

static void test_start_force(void **state)
{
    struct start_request req;
    char err[256];

    assert_int_equal(parse_start("{\"force\":true}", &req, err), 0);
    assert_true(req.force);
    assert_int_equal(parse_start(" { \"force\" : false } ", &req, err), 0);
    assert_false(req.force);
}

static void test_start_rejects(void **state)
{
    static const char *const bad[] = {
        "{bad",
        "[]",
        "true",
        "\"force\"",
        "{\"force\":1}",
        "{\"force\":\"true\"}",
        "{\"force\":null}",
        "{\"forse\":true}",
        "{\"force\":true,\"force\":false}",
        "{\"force\":true} x",
        "null",
    };
    struct start_request req = {.force = true};
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(parse_start(bad[i], &req, err), -EINVAL);
        assert_true(strlen(err) > 0);
        /* Nothing is written on failure. */
        assert_true(req.force);
    }
}

static void test_start_embedded_nul(void **state)
{
    struct start_request req;
    char err[256];
    const char body[] = "{\"force\":true}\0garbage";

    assert_int_equal(body_parse_start(body, sizeof(body) - 1, &req, err, sizeof(err)), -EINVAL);
}

static void test_nul_bytes_are_not_blank(void **state)
{
    struct start_request req;
    char err[256];

    assert_int_equal(body_parse_start("\0", 1, &req, err, sizeof(err)), -EINVAL);
    assert_int_equal(body_parse_start(" \0 ", 3, &req, err, sizeof(err)), -EINVAL);
    assert_int_equal(body_parse_empty("\0\0", 2, err, sizeof(err)), -EINVAL);
}

static void test_empty(void **state)
{
    char err[256];

    assert_int_equal(body_parse_empty("", 0, err, sizeof(err)), 0);
    assert_int_equal(body_parse_empty("{}", 2, err, sizeof(err)), 0);
    assert_int_equal(body_parse_empty("{\"a\":1}", 7, err, sizeof(err)), -EINVAL);
    assert_int_equal(body_parse_empty("[1]", 3, err, sizeof(err)), -EINVAL);
    assert_int_equal(body_parse_empty("x", 1, err, sizeof(err)), -EINVAL);
}

static void test_deep_nesting(void **state)
{
    char buf[20001];
    char err[256];
    struct start_request req;

    memset(buf, '[', 10000);
    memset(buf + 10000, ']', 10000);
    buf[20000] = '\0';
    assert_int_equal(parse_start(buf, &req, err), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_defaults),
        cmocka_unit_test(test_start_force),
        cmocka_unit_test(test_start_rejects),
        cmocka_unit_test(test_start_embedded_nul),
        cmocka_unit_test(test_nul_bytes_are_not_blank),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_deep_nesting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
