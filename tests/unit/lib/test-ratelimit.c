/* Unit tests for the token buckets: the time is the test's, so nothing here sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "lib/ratelimit.h"

#define T0 1000000 /* any start: the clock is the caller's */

/* A burst of five passes, the sixth is refused with the wait until the next token
 * (10/s: 100 ms), and refusing takes nothing: the wait does not grow. */
static void test_burst_then_refusal(void **state)
{
    struct ratelimit *rl = ratelimit_new(10, 5, 16);

    for (int i = 0; i < 5; i++)
        assert_int_equal(ratelimit_take(rl, "a", T0), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0), 100);
    assert_int_equal(ratelimit_take(rl, "a", T0), 100);
    assert_int_equal(ratelimit_take(rl, "a", T0 + 40), 60);
    assert_int_equal(ratelimit_take(rl, "a", T0 + 99), 1); /* at least 1, never 0 */
    assert_int_equal(ratelimit_take(rl, "a", T0 + 100), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0 + 100), 100);
    ratelimit_free(rl);
}

/* Tokens come back at the rate, up to the burst and no further. */
static void test_refill(void **state)
{
    struct ratelimit *rl = ratelimit_new(10, 5, 16);
    int passed = 0;

    for (int i = 0; i < 5; i++)
        assert_int_equal(ratelimit_take(rl, "a", T0), 0);
    /* 300 ms: three tokens. */
    while (ratelimit_take(rl, "a", T0 + 300) == 0)
        passed++;
    assert_int_equal(passed, 3);
    /* An hour idle: the bucket is full again, and holds only the burst. */
    passed = 0;
    while (passed < 100 && ratelimit_take(rl, "a", T0 + 3600000) == 0)
        passed++;
    assert_int_equal(passed, 5);
    ratelimit_free(rl);
}

/* 0.5/s: a token every two seconds; the wait is exact, and waiting it is enough. */
static void test_fractional_rate(void **state)
{
    struct ratelimit *rl = ratelimit_new(0.5, 1, 16);
    uint64_t now = T0, wait;

    assert_int_equal(ratelimit_take(rl, "a", now), 0);
    assert_int_equal(ratelimit_take(rl, "a", now), 2000);
    now += 1999;
    assert_int_equal(ratelimit_take(rl, "a", now), 1);
    for (int i = 0; i < 50; i++) {
        wait = ratelimit_take(rl, "a", now);
        assert_true(wait >= 1);
        now += wait;
        assert_int_equal(ratelimit_take(rl, "a", now), 0);
    }
    ratelimit_free(rl);

    /* A rate whose period is no whole number of ms (3/s: 333.3 ms): the wait rounds up,
     * and one ms less is not enough. */
    rl = ratelimit_new(3, 1, 16);
    assert_int_equal(ratelimit_take(rl, "a", T0), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0), 334);
    assert_int_equal(ratelimit_take(rl, "a", T0 + 333), 1);
    assert_int_equal(ratelimit_take(rl, "a", T0 + 334), 0);
    ratelimit_free(rl);
}

/* Two names have two buckets: a drained one never slows the other. */
static void test_names_independent(void **state)
{
    struct ratelimit *rl = ratelimit_new(1, 3, 16);

    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_take(rl, "a", T0), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0), 1000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_take(rl, "b", T0), 0);
    assert_int_equal(ratelimit_take(rl, "b", T0), 1000);
    assert_int_equal(ratelimit_wait(rl, "a", T0 + 500), 500);
    assert_int_equal(ratelimit_count(rl), 2);
    ratelimit_free(rl);
}

/* Ten times max names: the table never holds more than max; a name used all along keeps
 * its drained bucket (no fresh burst for it), while the stale names are dropped. */
static void test_bound(void **state)
{
    enum { MAX = 64 };
    struct ratelimit *rl = ratelimit_new(1, 2, MAX);
    char name[32];

    assert_int_equal(ratelimit_take(rl, "hot", T0), 0);
    assert_int_equal(ratelimit_take(rl, "hot", T0), 0);
    assert_int_equal(ratelimit_take(rl, "hot", T0), 1000);
    for (int i = 0; i < MAX * 10; i++) {
        snprintf(name, sizeof(name), "client-%d", i);
        assert_int_equal(ratelimit_take(rl, name, T0), 0);
        assert_true(ratelimit_count(rl) <= MAX);
        /* The hot name keeps being refused: its state was kept. */
        assert_int_equal(ratelimit_take(rl, "hot", T0), 1000);
    }
    assert_int_equal(ratelimit_count(rl), MAX);
    /* The first names are long gone: wait() knows nothing of them. */
    assert_int_equal(ratelimit_wait(rl, "client-0", T0), 0);
    assert_int_equal(ratelimit_wait(rl, "hot", T0), 1000);
    ratelimit_free(rl);
}

/* At the bound, a full bucket among the least recently used goes before a drained one:
 * the drained name keeps its state even though it is the least recently used. */
static void test_evicts_full_first(void **state)
{
    struct ratelimit *rl = ratelimit_new(1, 2, 2);

    assert_int_equal(ratelimit_take(rl, "drained", T0), 0);
    assert_int_equal(ratelimit_take(rl, "drained", T0), 0);       /* 0 of 2 left */
    assert_int_equal(ratelimit_take(rl, "refilled", T0 + 10), 0); /* 1 of 2 left */
    /* At T0 + 1010 "refilled" is full again, "drained" holds 1.01 and is the least
     * recently used: the full one goes. */
    assert_int_equal(ratelimit_take(rl, "new", T0 + 1010), 0);
    assert_int_equal(ratelimit_count(rl), 2);
    assert_int_equal(ratelimit_take(rl, "drained", T0 + 1010), 0);
    assert_int_equal(ratelimit_take(rl, "drained", T0 + 1010), 990); /* not a fresh one */
    /* Now none is full: the least recently used ("new") goes. */
    assert_int_equal(ratelimit_take(rl, "newer", T0 + 1010), 0);
    assert_int_equal(ratelimit_count(rl), 2);
    assert_int_equal(ratelimit_take(rl, "drained", T0 + 1010), 990);
    ratelimit_free(rl);
}

/* wait() takes nothing and adds no bucket. */
static void test_wait_adds_nothing(void **state)
{
    struct ratelimit *rl = ratelimit_new(1, 2, 16);

    assert_int_equal(ratelimit_wait(rl, "a", T0), 0);
    assert_int_equal(ratelimit_count(rl), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(ratelimit_wait(rl, "a", T0), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0), 0);
    assert_int_equal(ratelimit_wait(rl, "a", T0), 1000);
    assert_int_equal(ratelimit_wait(rl, "a", T0 + 250), 750);
    assert_int_equal(ratelimit_count(rl), 1);
    ratelimit_free(rl);
}

/* A clock read earlier than the last one (two callers' reads) adds no tokens, takes no
 * more than one, and does not lose the time already counted. */
static void test_time_backwards(void **state)
{
    struct ratelimit *rl = ratelimit_new(10, 2, 16);

    assert_int_equal(ratelimit_take(rl, "a", T0), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0 - 500), 100);
    assert_int_equal(ratelimit_take(rl, "a", 0), 100);
    assert_int_equal(ratelimit_wait(rl, "a", 0), 100);
    assert_int_equal(ratelimit_take(rl, "a", T0 + 100), 0);
    assert_int_equal(ratelimit_take(rl, "a", T0 + 100), 100);
    /* A new name first seen at an earlier time than the others is fine too. */
    assert_int_equal(ratelimit_take(rl, "b", 5), 0);
    ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refusal),
        cmocka_unit_test(test_refill),
        cmocka_unit_test(test_fractional_rate),
        cmocka_unit_test(test_names_independent),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_evicts_full_first),
        cmocka_unit_test(test_wait_adds_nothing),
        cmocka_unit_test(test_time_backwards),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
