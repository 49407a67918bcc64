/* Unit tests for the state folder. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "state.h"

static int setup(void **state)
{
    char *dir = xstrdup("/tmp/nanny-state-XXXXXX");

    assert_non_null(mkdtemp(dir));
    *state = dir;
    return 0;
}

static int teardown(void **state)
{
    char *dir = *state;
    char *file = xasprintf("%s/%s", dir, STATE_FILE_NAME), *logs = xasprintf("%s/logs", dir);

    unlink(file);
    rmdir(logs);
    rmdir(dir);
    free(file);
    free(logs);
    free(dir);
    return 0;
}

static void test_prepare_and_log_path(void **state)
{
    const char *dir = *state;
    char *logs = xasprintf("%s/logs", dir), *log;
    struct stat st;

    assert_int_equal(state_prepare(dir), 0);
    assert_int_equal(state_prepare(dir), 0); /* again: fine */
    assert_int_equal(stat(logs, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    log = state_log_path(dir, "hello");
    assert_non_null(strstr(log, "/logs/hello.log"));
    free(log);
    free(logs);
}

static void test_save_and_load(void **state)
{
    const char *dir = *state;
    json_t *doc = json_pack("{s:i, s:{s:{s:i, s:I}}}", "version", 1, "services", "hello", "pid",
                            1234, "start_time", (json_int_t)98765);
    json_t *back;
    char err[256];
    char *tmp = xasprintf("%s/.%s.tmp", dir, STATE_FILE_NAME);

    /* No file yet: an empty state. */
    assert_int_equal(state_load(dir, &back, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(back), 0);
    json_decref(back);

    assert_int_equal(state_save(dir, doc), 0);
    assert_int_equal(access(tmp, F_OK), -1); /* nothing left aside */
    assert_int_equal(state_load(dir, &back, err, sizeof(err)), 0);
    assert_true(json_equal(doc, back));
    json_decref(back);
    json_decref(doc);
    free(tmp);
}

static void test_broken_file(void **state)
{
    const char *dir = *state;
    char *path = xasprintf("%s/%s", dir, STATE_FILE_NAME);
    FILE *f = fopen(path, "w");
    json_t *back = NULL;
    char err[256];

    fputs("{\"services\": [truncated", f);
    fclose(f);
    assert_int_equal(state_load(dir, &back, err, sizeof(err)), -EINVAL);
    assert_null(back);
    assert_non_null(strstr(err, STATE_FILE_NAME));

    f = fopen(path, "w");
    fputs("[1, 2]", f);
    fclose(f);
    assert_int_equal(state_load(dir, &back, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not a JSON object"));
    free(path);
}

static void test_save_into_missing_folder_fails(void **state)
{
    json_t *doc = json_object();

    assert_true(state_save("/nonexistent/nanny-state", doc) < 0);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prepare_and_log_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_and_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_file, setup, teardown),
        cmocka_unit_test(test_save_into_missing_folder_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
