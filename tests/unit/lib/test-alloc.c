/* Unit tests for alloc.c's helpers for NULL-terminated arrays of strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lib/alloc.h"

static void test_strv_find_gives_the_element_equal_to_the_string(void **state)
{
    char *a = xstrdup("llama-3-8b"), *b = xstrdup("bge-small");
    char *list[] = {a, b, NULL};

    assert_ptr_equal(strv_find(list, "bge-small"), b);
    assert_ptr_equal(strv_find(list, "llama-3-8b"), a);
    free(a);
    free(b);
}

static void test_strv_find_is_exact(void **state)
{
    char *list[] = {"llama-3-8b", "bge-small", NULL};

    assert_null(strv_find(list, "llama-3"));
    assert_null(strv_find(list, "LLAMA-3-8B"));
    assert_null(strv_find(list, "bge-small "));
    assert_null(strv_find(list, ""));
}

static void test_strv_find_stops_at_the_first_null(void **state)
{
    char *list[] = {"one", NULL, "two", NULL};

    assert_non_null(strv_find(list, "one"));
    assert_null(strv_find(list, "two"));
}

static void test_strv_find_in_no_list_finds_nothing(void **state)
{
    char *empty[] = {NULL};

    assert_null(strv_find(NULL, "one"));
    assert_null(strv_find(empty, "one"));
}

static void test_strv_free_takes_null_and_a_list(void **state)
{
    char **list = xcalloc(3, sizeof(*list));

    list[0] = xstrdup("one");
    list[1] = xstrdup("two");
    strv_free(list); /* under ASan: nothing leaks */
    strv_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strv_find_gives_the_element_equal_to_the_string),
        cmocka_unit_test(test_strv_find_is_exact),
        cmocka_unit_test(test_strv_find_stops_at_the_first_null),
        cmocka_unit_test(test_strv_find_in_no_list_finds_nothing),
        cmocka_unit_test(test_strv_free_takes_null_and_a_list),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
