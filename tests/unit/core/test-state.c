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
#include <uv.h>

#include "core/state.h"
#include "lib/alloc.h"
#include "lib/log.h"

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

/* A state folder whose parents are missing too (a fresh ~/.local/state). */
static void test_prepare_makes_parents(void **state)
{
    const char *dir = *state;
    char *deep = xasprintf("%s/a/b/state", dir), *logs = xasprintf("%s/logs", deep);
    char *a = xasprintf("%s/a", dir), *b = xasprintf("%s/a/b", dir);
    struct stat st;

    assert_int_equal(state_prepare(deep), 0);
    assert_int_equal(stat(logs, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(rmdir(logs), 0);
    assert_int_equal(rmdir(deep), 0);
    assert_int_equal(rmdir(b), 0);
    assert_int_equal(rmdir(a), 0);
    free(deep);
    free(logs);
    free(a);
    free(b);
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

/* The writer: saves asked one after the other while writes go on a worker thread end
 * with the latest on disk. */
static void test_writer_keeps_the_latest(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    struct state_writer *w;
    json_t *back;
    char err[256];

    assert_int_equal(uv_loop_init(&loop), 0);
    w = state_writer_new(&loop, dir);
    for (int i = 1; i <= 50; i++) {
        json_t *doc = json_pack("{s:i}", "version", i);
        state_writer_save(w, doc);
        json_decref(doc);
        if (i % 10 == 0)
            uv_run(&loop, UV_RUN_NOWAIT);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(state_load(dir, &back, err, sizeof(err)), 0);
    assert_int_equal(json_integer_value(json_object_get(back, "version")), 50);
    json_decref(back);
    state_writer_free(w);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Freed with a write under way and one waiting: both still happen, then it goes (the
 * ASan build checks that nothing leaks). */
static void test_writer_free_writes_what_waits(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    struct state_writer *w;
    json_t *doc, *back;
    char err[256];

    assert_int_equal(uv_loop_init(&loop), 0);
    w = state_writer_new(&loop, dir);
    doc = json_pack("{s:s}", "which", "first");
    state_writer_save(w, doc); /* on the worker now */
    json_decref(doc);
    doc = json_pack("{s:s}", "which", "last");
    state_writer_save(w, doc); /* waits */
    json_decref(doc);
    state_writer_free(w);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(state_load(dir, &back, err, sizeof(err)), 0);
    assert_string_equal(json_string_value(json_object_get(back, "which")), "last");
    json_decref(back);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A folder that cannot be written: the error is logged on the loop, nothing breaks. */
static void test_writer_into_missing_folder(void **state)
{
    uv_loop_t loop;
    struct state_writer *w;
    json_t *doc = json_pack("{s:i}", "version", 1);
    struct stat st;

    assert_int_equal(uv_loop_init(&loop), 0);
    w = state_writer_new(&loop, "/nonexistent/nanny-state");
    state_writer_save(w, doc);
    json_decref(doc);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(stat("/nonexistent/nanny-state/" STATE_FILE_NAME, &st), -1);
    state_writer_free(w);
    assert_int_equal(uv_loop_close(&loop), 0);
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
        cmocka_unit_test_setup_teardown(test_prepare_makes_parents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_and_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_file, setup, teardown),
        cmocka_unit_test(test_save_into_missing_folder_fails),
        cmocka_unit_test_setup_teardown(test_writer_keeps_the_latest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_free_writes_what_waits, setup, teardown),
        cmocka_unit_test(test_writer_into_missing_folder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
