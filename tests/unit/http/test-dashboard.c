/* Unit tests for the dashboard's files: the table scripts/embed.py writes, the lookup by
 * path and the If-None-Match rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http/dashboard.h"

/* index.html at "/", the script and the style sheet under /dashboard/, each once. */
static void test_paths(void **state)
{
    const char *want[] = {"/", "/dashboard/app.js", "/dashboard/style.css"};
    size_t n = 0;

    for (size_t i = 0; dashboard_path(i); i++)
        n++;
    assert_int_equal(n, 3);
    for (size_t i = 0; i < 3; i++) {
        const struct dashboard_asset *a = dashboard_find(want[i]);
        assert_non_null(a);
        assert_string_equal(a->path, want[i]);
        assert_true(a->len > 100);
        assert_int_equal(a->data[a->len], '\0'); /* embed.py ends each file with a NUL */
        assert_int_equal(strlen((const char *)a->data), a->len);
    }
    assert_string_equal(dashboard_find("/")->content_type, "text/html; charset=utf-8");
    assert_string_equal(dashboard_find("/dashboard/app.js")->content_type,
                        "text/javascript; charset=utf-8");
    assert_string_equal(dashboard_find("/dashboard/style.css")->content_type,
                        "text/css; charset=utf-8");
}

/* Nothing else is found: no prefix, no folder, no other case. */
static void test_unknown_paths(void **state)
{
    const char *paths[] = {"",
                           "/index.html",
                           "/dashboard",
                           "/dashboard/",
                           "/dashboard/app",
                           "/dashboard/APP.JS",
                           "/dashboard/app.js/",
                           "//",
                           "/services"};

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        assert_null(dashboard_find(paths[i]));
    assert_null(dashboard_path(3));
}

/* The page loads its script and style sheet from the paths served, and no inline script. */
static void test_page_refers_to_its_files(void **state)
{
    const char *page = (const char *)dashboard_find("/")->data;

    assert_non_null(strstr(page, "src=\"/dashboard/app.js\""));
    assert_non_null(strstr(page, "href=\"/dashboard/style.css\""));
    assert_non_null(strstr(page, "name=\"viewport\""));
    assert_null(strstr(page, "<script>"));
    assert_null(strstr(page, "http://"));
    assert_null(strstr(page, "https://"));
}

/* Every ETag is a quoted tag, distinct per file. */
static void test_etags(void **state)
{
    const char *a = dashboard_find("/")->etag, *b = dashboard_find("/dashboard/app.js")->etag;

    assert_int_equal(a[0], '"');
    assert_int_equal(a[strlen(a) - 1], '"');
    assert_int_equal(strlen(a), 18);
    assert_string_not_equal(a, b);
}

static void test_etag_matches(void **state)
{
    const char *etag = dashboard_find("/")->etag;
    char list[128], weak[64];

    snprintf(list, sizeof(list), "\"other\", %s", etag);
    snprintf(weak, sizeof(weak), "W/%s", etag);
    assert_true(dashboard_etag_matches(etag, etag));
    assert_true(dashboard_etag_matches(list, etag));
    assert_true(dashboard_etag_matches(weak, etag));
    assert_true(dashboard_etag_matches("*", etag));
    assert_false(dashboard_etag_matches(NULL, etag));
    assert_false(dashboard_etag_matches("", etag));
    assert_false(dashboard_etag_matches("\"other\"", etag));
    assert_false(dashboard_etag_matches(dashboard_find("/dashboard/app.js")->etag, etag));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_unknown_paths),
        cmocka_unit_test(test_page_refers_to_its_files),
        cmocka_unit_test(test_etags),
        cmocka_unit_test(test_etag_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
