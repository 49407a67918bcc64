/* Unit tests for promtext.c: both text formats, escaping, values and histograms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/promtext.h"

static const struct prom_bucket buckets[] = {{"0.1", 100000}, {"1.0", 1000000}};

/* The page written so far; the prom starts over. */
static char *page(struct prom *p)
{
    size_t len;
    char *text = prom_finish(p, &len);

    assert_int_equal(strlen(text), len);
    return text;
}

static void test_gauge_and_labels(void **state)
{
    struct prom p;
    char *text;

    prom_init(&p, false, 0);
    prom_family(&p, "x_up", "gauge", "1 when up");
    prom_sample(&p, "x_up");
    prom_value(&p, 1);
    prom_sample(&p, "x_up");
    prom_label(&p, "service", "a");
    prom_label(&p, "state", "running");
    prom_value(&p, 18446744073709551615ULL);
    text = page(&p);
    assert_string_equal(text, "# HELP x_up 1 when up\n# TYPE x_up gauge\nx_up 1\n"
                              "x_up{service=\"a\",state=\"running\"} 18446744073709551615\n");
    free(text);
}

/* Label values escape backslash, quote and newline; HELP escapes backslash and newline. */
static void test_escaping(void **state)
{
    struct prom p;
    char *text;

    prom_init(&p, false, 16); /* a small hint: the buffer grows */
    prom_family(&p, "x", "gauge", "a \\ b\nc \"d\"");
    prom_sample(&p, "x");
    prom_label(&p, "l", "q\"b\\n\nz");
    prom_value_nan(&p);
    text = page(&p);
    assert_string_equal(text, "# HELP x a \\\\ b\\nc \"d\"\n# TYPE x gauge\n"
                              "x{l=\"q\\\"b\\\\n\\nz\"} NaN\n");
    free(text);
}

static void test_microseconds(void **state)
{
    struct prom p;
    char *text;

    prom_init(&p, false, 0);
    prom_sample(&p, "t");
    prom_value_us(&p, 0);
    prom_sample(&p, "t");
    prom_value_us(&p, 1);
    prom_sample(&p, "t");
    prom_value_us(&p, 12345678);
    text = page(&p);
    assert_string_equal(text, "t 0.000000\nt 0.000001\nt 12.345678\n");
    free(text);
}

/* OpenMetrics: a counter's family drops _total, and the page ends with # EOF. */
static void test_openmetrics(void **state)
{
    struct prom p;
    char *text;

    prom_init(&p, true, 0);
    prom_family(&p, "x_requests_total", "counter", "requests");
    prom_sample(&p, "x_requests_total");
    prom_value(&p, 3);
    prom_family(&p, "x_total_size", "gauge", "not a \"counter\"");
    text = page(&p);
    assert_string_equal(text, "# HELP x_requests requests\n# TYPE x_requests counter\n"
                              "x_requests_total 3\n# HELP x_total_size not a \\\"counter\\\"\n"
                              "# TYPE x_total_size gauge\n# EOF\n");
    free(text);
    prom_free(&p);
}

/* Buckets are cumulative, le as given, +Inf last; a value on a bound falls in it. */
static void test_histogram(void **state)
{
    struct prom p;
    struct prom_histogram h;
    char *text;

    prom_histogram_init(&h, buckets, 2);
    prom_histogram_observe(&h, 100000);  /* 0.1: on the bound */
    prom_histogram_observe(&h, 500000);  /* 0.5 */
    prom_histogram_observe(&h, 2000000); /* 2: only +Inf */
    prom_init(&p, false, 0);
    prom_histogram_write(&p, "d", "route", "/x", &h);
    prom_histogram_init(&h, buckets, 2);
    prom_histogram_write(&p, "e", NULL, NULL, &h);
    text = page(&p);
    assert_string_equal(text,
                        "d_bucket{route=\"/x\",le=\"0.1\"} 1\n"
                        "d_bucket{route=\"/x\",le=\"1.0\"} 2\n"
                        "d_bucket{route=\"/x\",le=\"+Inf\"} 3\n"
                        "d_sum{route=\"/x\"} 2.600000\n"
                        "d_count{route=\"/x\"} 3\n"
                        "e_bucket{le=\"0.1\"} 0\ne_bucket{le=\"1.0\"} 0\ne_bucket{le=\"+Inf\"} 0\n"
                        "e_sum 0.000000\ne_count 0\n");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gauge_and_labels), cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_microseconds),     cmocka_unit_test(test_openmetrics),
        cmocka_unit_test(test_histogram),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
