/* Unit tests for units.c: durations, sizes and port numbers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lib/units.h"

static void assert_duration(const char *s, uint64_t expected)
{
    uint64_t ms = 12345;

    assert_int_equal(units_parse_duration(s, &ms), 0);
    assert_int_equal(ms, expected);
}

static void assert_duration_fails(const char *s, int expected)
{
    uint64_t ms = 12345;

    assert_int_equal(units_parse_duration(s, &ms), expected);
    assert_int_equal(ms, 12345); /* untouched on failure */
}

static void assert_size(const char *s, uint64_t expected)
{
    uint64_t bytes = 12345;

    assert_int_equal(units_parse_size(s, &bytes), 0);
    assert_int_equal(bytes, expected);
}

static void assert_size_fails(const char *s, int expected)
{
    uint64_t bytes = 12345;

    assert_int_equal(units_parse_size(s, &bytes), expected);
    assert_int_equal(bytes, 12345); /* untouched on failure */
}

static void test_size(void **state)
{
    assert_size("0", 0);
    assert_size("4096", 4096);
    assert_size("10B", 10);
    assert_size("2KiB", 2048);
    assert_size("512MiB", UINT64_C(512) << 20);
    assert_size("12GiB", UINT64_C(12) << 30);
    assert_size("141GiB", UINT64_C(141) << 30);
    assert_size("3TiB", UINT64_C(3) << 40);
    assert_size("2KB", 2000);
    assert_size("500MB", 500000000);
    assert_size("24GB", UINT64_C(24000000000));
    assert_size("1TB", UINT64_C(1000000000000));
    assert_size("1024TiB", UNITS_SIZE_MAX);
    assert_size_fails("", -EINVAL);
    assert_size_fails("GiB", -EINVAL);
    assert_size_fails("12 GiB", -EINVAL);
    assert_size_fails("1.5GiB", -EINVAL);
    assert_size_fails("-1", -EINVAL);
    assert_size_fails("+1", -EINVAL);
    assert_size_fails("12gib", -EINVAL);
    assert_size_fails("12G", -EINVAL);
    assert_size_fails("0x10", -EINVAL);
    assert_size_fails("1025TiB", -ERANGE);
    assert_size_fails("99999999999999999999999999", -ERANGE);
    assert_size_fails("99999999999999999999999999x", -EINVAL);
}

static void test_duration_units(void **state)
{
    assert_duration("500ms", 500);
    assert_duration("5s", 5000);
    assert_duration("2m", 120000);
    assert_duration("1h", 3600000);
    assert_duration("0", 0);
    assert_duration("0s", 0);
    assert_duration("0ms", 0);
    assert_duration("007s", 7000);
}

static void test_duration_plain_seconds(void **state)
{
    assert_duration("5", 5000);
    assert_duration("300", 300000);
    assert_duration("0.5", 500);
    assert_duration("1.25", 1250);
    assert_duration("0.001", 1);
}

static void test_duration_fractions_with_units(void **state)
{
    assert_duration("1.5s", 1500);
    assert_duration("1.5m", 90000);
    assert_duration("0.5h", 1800000);
    assert_duration("2.000ms", 2);
    /* Below a millisecond there is nothing to mean. */
    assert_duration_fails("0.5ms", -EINVAL);
    assert_duration_fails("0.0001", -EINVAL);
    assert_duration_fails("1.0000000001s", -EINVAL);
}

static void test_duration_rejects_garbage(void **state)
{
    static const char *const bad[] = {
        "",      "s",   "ms",  "-5s", "+5s",  " 5s", "5s ", "5 s",   "5S",   "5sec", "5d",
        "1m30s", "1.s", ".5s", "1e3", "0x10", "inf", "nan", "5.5.5", "five", "5ms5", "5\n",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_duration_fails(bad[i], -EINVAL);
}

static void test_duration_limits(void **state)
{
    assert_duration("168h", UNITS_DURATION_MAX_MS);
    assert_duration("604800", UNITS_DURATION_MAX_MS);
    assert_duration("604800000ms", UNITS_DURATION_MAX_MS);
    assert_duration_fails("169h", -ERANGE);
    assert_duration_fails("604801", -ERANGE);
    assert_duration_fails("604800001ms", -ERANGE);
    assert_duration_fails("604800.001", -ERANGE);
    assert_duration_fails("99999999999999999999999999999999s", -ERANGE);
    assert_duration_fails("18446744073709551616h", -ERANGE);
}

static void test_port_valid(void **state)
{
    uint16_t port = 0;

    assert_int_equal(units_parse_port("1", &port), 0);
    assert_int_equal(port, 1);
    assert_int_equal(units_parse_port("8000", &port), 0);
    assert_int_equal(port, 8000);
    assert_int_equal(units_parse_port("65535", &port), 0);
    assert_int_equal(port, 65535);
    assert_int_equal(units_parse_port("08080", &port), 0);
    assert_int_equal(port, 8080);
}

static void test_port_invalid(void **state)
{
    static const char *const bad[] = {"", "-1", "+80", " 80", "80 ", "8o", "0x50", "80.0", "a"};
    uint16_t port = 7;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(units_parse_port(bad[i], &port), -EINVAL);
    assert_int_equal(port, 7);
}

static void test_port_range(void **state)
{
    uint16_t port = 7;

    assert_int_equal(units_parse_port("0", &port), -ERANGE);
    assert_int_equal(units_parse_port("65536", &port), -ERANGE);
    assert_int_equal(units_parse_port("70000", &port), -ERANGE);
    assert_int_equal(units_parse_port("99999999999999999999999", &port), -ERANGE);
    assert_int_equal(port, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_plain_seconds),
        cmocka_unit_test(test_duration_fractions_with_units),
        cmocka_unit_test(test_duration_rejects_garbage),
        cmocka_unit_test(test_duration_limits),
        cmocka_unit_test(test_port_valid),
        cmocka_unit_test(test_port_invalid),
        cmocka_unit_test(test_port_range),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
