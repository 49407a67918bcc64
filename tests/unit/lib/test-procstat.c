/* Unit tests for procstat.c: this process's own figures, and another process's stat line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/procstat.h"

static void test_own_process(void **state)
{
    struct procstat ps;
    uint64_t now = (uint64_t)time(NULL);
    volatile uint64_t spin = 0;

    for (uint64_t i = 0; i < 50000000; i++) /* some CPU time to see */
        spin += i;
    assert_int_equal(procstat_read(&ps), 0);
    assert_true(ps.resident_bytes > 0);
    assert_true(ps.virtual_bytes >= ps.resident_bytes);
    assert_true(ps.start_time_s <= now && ps.start_time_s + 3600 > now);
    assert_true(ps.open_fds >= 3); /* stdin, stdout, stderr; not the one that counted */
    assert_true(ps.max_fds >= ps.open_fds);
    assert_true(ps.cpu_us > 0);
}

/* The state field follows the command's name, whatever the name holds. */
static void test_stat_line(void **state)
{
    char buf[1024], *fields = NULL;

    assert_int_equal(procstat_stat(getpid(), buf, sizeof(buf), &fields), 0);
    assert_non_null(fields);
    assert_true(*fields == 'R' || *fields == 'S');
    assert_int_equal(procstat_stat(0x7ffffff0, buf, sizeof(buf), &fields), -ESRCH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_process),
        cmocka_unit_test(test_stat_line),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
