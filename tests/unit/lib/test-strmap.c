/* Unit tests for the string map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "lib/alloc.h"
#include "lib/strmap.h"

static void test_put_get_remove(void **state)
{
    struct strmap *m = strmap_new();
    int a = 1, b = 2;

    assert_null(strmap_get(m, "a"));
    strmap_put(m, "a", &a);
    strmap_put(m, "b", &b);
    assert_ptr_equal(strmap_get(m, "a"), &a);
    assert_ptr_equal(strmap_get(m, "b"), &b);
    assert_int_equal(strmap_count(m), 2);
    strmap_put(m, "a", &b); /* replaces */
    assert_ptr_equal(strmap_get(m, "a"), &b);
    assert_int_equal(strmap_count(m), 2);
    assert_ptr_equal(strmap_remove(m, "a"), &b);
    assert_null(strmap_get(m, "a"));
    assert_null(strmap_remove(m, "a"));
    assert_int_equal(strmap_count(m), 1);
    assert_null(strmap_get(m, "")); /* the empty key is a key like any other */
    strmap_put(m, "", &a);
    assert_ptr_equal(strmap_get(m, ""), &a);
    strmap_free(m, NULL);
}

/* Thousands of keys: every one is found after the table grew, and removing half keeps
 * the other half. */
static void test_many_keys(void **state)
{
    struct strmap *m = strmap_new();
    enum { N = 5000 };
    char key[32];

    for (uintptr_t i = 1; i <= N; i++) {
        snprintf(key, sizeof(key), "service-%lu", (unsigned long)i);
        strmap_put(m, key, (void *)i);
    }
    assert_int_equal(strmap_count(m), N);
    for (uintptr_t i = 1; i <= N; i += 2) {
        snprintf(key, sizeof(key), "service-%lu", (unsigned long)i);
        assert_ptr_equal(strmap_remove(m, key), (void *)i);
    }
    assert_int_equal(strmap_count(m), N / 2);
    for (uintptr_t i = 1; i <= N; i++) {
        snprintf(key, sizeof(key), "service-%lu", (unsigned long)i);
        if (i % 2)
            assert_null(strmap_get(m, key));
        else
            assert_ptr_equal(strmap_get(m, key), (void *)i);
    }
    strmap_free(m, NULL);
}

static int freed;

static void count_free(void *value)
{
    freed++;
    free(value);
}

static void test_free_values(void **state)
{
    struct strmap *m = strmap_new();

    strmap_put(m, "x", xstrdup("1"));
    strmap_put(m, "y", xstrdup("2"));
    freed = 0;
    strmap_free(m, count_free);
    assert_int_equal(freed, 2);
    strmap_free(NULL, count_free);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_remove),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_free_values),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
