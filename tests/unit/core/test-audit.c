/* Unit tests for the audit log: real files in a temporary folder, tails read on libuv's
 * worker threads. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/audit.h"
#include "lib/alloc.h"
#include "lib/log.h"

struct fixture {
    char *dir;
    char *path;
    uv_loop_t loop;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    f->dir = xstrdup("/tmp/nanny-audit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->path = xasprintf("%s/%s", f->dir, AUDIT_FILE);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->path);
    free(f->dir);
    free(f);
    return 0;
}

/* What a tail answered. */
struct answer {
    int calls;
    json_t *entries; /* a reference of our own */
    char *error;
};

static void on_tail(void *data, json_t *entries, const char *error)
{
    struct answer *an = data;

    an->calls++;
    an->entries = json_incref(entries);
    an->error = error ? xstrdup(error) : NULL;
}

/* The last n entries, read as the API will (the loop runs until the answer). */
static json_t *tail(struct fixture *f, struct audit *a, unsigned n)
{
    struct answer an = {0};

    assert_non_null(audit_tail(a, n, on_tail, &an));
    for (int i = 0; i < 1000 && an.calls == 0; i++)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(an.calls, 1);
    assert_null(an.error);
    assert_true(json_is_array(an.entries));
    return an.entries;
}

static const char *entry_string(json_t *entries, size_t i, const char *key)
{
    return json_string_value(json_object_get(json_array_get(entries, i), key));
}

static int count_lines(const char *path)
{
    FILE *fp = fopen(path, "r");
    int lines = 0, c;

    if (!fp)
        return -1;
    while ((c = fgetc(fp)) != EOF)
        lines += c == '\n';
    fclose(fp);
    return lines;
}

static void append_raw(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Entries come back oldest first with every field: the time in ISO 8601 UTC with ms, the
 * service null when there is none, the status a number. */
static void test_record_then_tail(void **state)
{
    struct fixture *f = *state;
    struct audit *a;
    json_t *entries, *e;
    const char *time;
    char line[512];
    FILE *fp;

    assert_int_equal(audit_open(&f->loop, f->path, 0, 0, &a), 0);
    audit_record(a, "alice", "start", "sd", 200);
    audit_record(a, "10.0.0.7", "rediscover", NULL, 202);
    audit_record(a, "bob", "stop", "llm", 403);
    entries = tail(f, a, 10);
    assert_int_equal(json_array_size(entries), 3);

    e = json_array_get(entries, 0);
    assert_int_equal(json_object_size(e), 5);
    assert_string_equal(entry_string(entries, 0, "who"), "alice");
    assert_string_equal(entry_string(entries, 0, "action"), "start");
    assert_string_equal(entry_string(entries, 0, "service"), "sd");
    assert_true(json_is_integer(json_object_get(e, "status")));
    assert_int_equal(json_integer_value(json_object_get(e, "status")), 200);
    time = entry_string(entries, 0, "time");
    assert_non_null(time);
    assert_int_equal(strlen(time), strlen("2026-12-05T11:20:38.123Z"));
    assert_int_equal(time[10], 'T');
    assert_int_equal(time[19], '.');
    assert_int_equal(time[23], 'Z');

    e = json_array_get(entries, 1);
    assert_string_equal(entry_string(entries, 1, "who"), "10.0.0.7");
    assert_string_equal(entry_string(entries, 1, "action"), "rediscover");
    assert_true(json_is_null(json_object_get(e, "service")));
    assert_int_equal(json_integer_value(json_object_get(e, "status")), 202);

    assert_string_equal(entry_string(entries, 2, "who"), "bob");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(entries, 2), "status")),
                     403);
    json_decref(entries);

    /* On disk: compact JSON lines, in the order of the header's example. */
    fp = fopen(f->path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(line, sizeof(line), fp));
    assert_true(strncmp(line, "{\"time\":\"", 9) == 0);
    assert_non_null(strstr(line, "\",\"who\":\"alice\",\"action\":\"start\",\"service\":\"sd\","
                                 "\"status\":200}\n"));
    fclose(fp);

    /* The last one only. */
    entries = tail(f, a, 1);
    assert_int_equal(json_array_size(entries), 1);
    assert_string_equal(entry_string(entries, 0, "who"), "bob");
    json_decref(entries);
    audit_free(a);
}

/* A small cap: the file rotates before a write would pass it, keeping keep old files, and
 * a tail reads across the last rotation. */
static void test_rotation(void **state)
{
    struct fixture *f = *state;
    char *old1 = xasprintf("%s.1", f->path), *old2 = xasprintf("%s.2", f->path);
    char *old3 = xasprintf("%s.3", f->path), action[16];
    struct audit *a;
    struct stat st;
    json_t *entries;

    /* A line is about 90 bytes: three to a file. */
    assert_int_equal(audit_open(&f->loop, f->path, 300, 2, &a), 0);
    for (int i = 0; i < 10; i++) {
        snprintf(action, sizeof(action), "a%d", i);
        audit_record(a, "alice", action, "sd", 200);
        assert_int_equal(stat(f->path, &st), 0);
        assert_true(st.st_size <= 300);
    }
    assert_int_equal(stat(old1, &st), 0);
    assert_true(st.st_size <= 300);
    assert_int_equal(stat(old2, &st), 0);
    assert_int_equal(stat(old3, &st), -1); /* keep 2 */

    entries = tail(f, a, 4);
    assert_true(count_lines(f->path) < 4); /* so the tail did read path.1 */
    assert_int_equal(json_array_size(entries), 4);
    for (int i = 0; i < 4; i++) {
        snprintf(action, sizeof(action), "a%d", 6 + i);
        assert_string_equal(entry_string(entries, i, "action"), action);
    }
    json_decref(entries);
    audit_free(a);
    free(old1);
    free(old2);
    free(old3);
}

/* More than there is: what there is; none at all: an empty array. */
static void test_tail_more_than_there_is(void **state)
{
    struct fixture *f = *state;
    struct audit *a;
    json_t *entries;

    assert_int_equal(audit_open(&f->loop, f->path, 0, 0, &a), 0);
    entries = tail(f, a, 100);
    assert_int_equal(json_array_size(entries), 0);
    json_decref(entries);
    audit_record(a, "alice", "start", "sd", 200);
    audit_record(a, "alice", "stop", "sd", 200);
    entries = tail(f, a, AUDIT_TAIL_MAX);
    assert_int_equal(json_array_size(entries), 2);
    assert_string_equal(entry_string(entries, 0, "action"), "start");
    assert_string_equal(entry_string(entries, 1, "action"), "stop");
    json_decref(entries);
    entries = tail(f, a, 0);
    assert_int_equal(json_array_size(entries), 0);
    json_decref(entries);
    audit_free(a);
}

/* A line that is not a JSON object (written by someone else, or cut) is skipped. */
static void test_non_json_skipped(void **state)
{
    struct fixture *f = *state;
    struct audit *a;
    json_t *entries;

    assert_int_equal(audit_open(&f->loop, f->path, 0, 0, &a), 0);
    audit_record(a, "alice", "start", "sd", 200);
    append_raw(f->path, "not json\n42\n{\"cut\":\n\n");
    audit_record(a, "alice", "stop", "sd", 200);
    entries = tail(f, a, 10);
    assert_int_equal(json_array_size(entries), 2);
    assert_string_equal(entry_string(entries, 0, "action"), "start");
    assert_string_equal(entry_string(entries, 1, "action"), "stop");
    json_decref(entries);
    audit_free(a);
}

/* The file is the owner's alone, whatever the umask, and an older, more open one is
 * closed down. */
static void test_mode_0600(void **state)
{
    struct fixture *f = *state;
    mode_t old_umask = umask(0);
    struct audit *a;
    struct stat st;
    int fd;

    assert_int_equal(audit_open(&f->loop, f->path, 0, 0, &a), 0);
    audit_record(a, "alice", "start", "sd", 200);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    audit_free(a);

    assert_int_equal(unlink(f->path), 0);
    fd = open(f->path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(audit_open(&f->loop, f->path, 0, 0, &a), 0);
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    audit_free(a);
    umask(old_umask);
}

/* A cancelled tail never answers (whether its work had begun or not). */
static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct answer an = {0};
    struct audit_tail *t;
    struct audit *a;
    json_t *entries;

    assert_int_equal(audit_open(&f->loop, f->path, 0, 0, &a), 0);
    audit_record(a, "alice", "start", "sd", 200);
    for (int i = 0; i < 20; i++) {
        t = audit_tail(a, 10, on_tail, &an);
        assert_non_null(t);
        if (i % 2)
            uv_run(&f->loop, UV_RUN_NOWAIT); /* perhaps begun by now */
        if (an.calls == 0)
            audit_tail_cancel(t);
        else
            json_decref(an.entries); /* it was done before we could cancel */
        an.calls = 0;
    }
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(an.calls, 0);
    audit_tail_cancel(NULL);
    /* The audit log still answers. */
    entries = tail(f, a, 10);
    assert_int_equal(json_array_size(entries), 1);
    json_decref(entries);
    audit_free(a);
}

/* Freed with tails in flight: they never answer, and free themselves when their work ends
 * (no leak under ASan). */
static void test_free_with_tail_in_flight(void **state)
{
    struct fixture *f = *state;
    struct answer an = {0};
    struct audit *a;

    assert_int_equal(audit_open(&f->loop, f->path, 0, 0, &a), 0);
    for (int i = 0; i < 50; i++)
        audit_record(a, "alice", "start", "sd", 200);
    for (int i = 0; i < 5; i++)
        assert_non_null(audit_tail(a, 50, on_tail, &an));
    audit_free(a);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(an.calls, 0);
    audit_free(NULL);
}

/* The file removed, or renamed, from outside: the next entry goes to a new file at the
 * path, not to the lost one. */
static void test_removed_from_outside(void **state)
{
    struct fixture *f = *state;
    char *moved = xasprintf("%s.moved", f->path);
    struct audit *a;
    json_t *entries;

    assert_int_equal(audit_open(&f->loop, f->path, 0, 0, &a), 0);
    audit_record(a, "alice", "start", "sd", 200);
    assert_int_equal(unlink(f->path), 0);
    audit_record(a, "alice", "stop", "sd", 200);
    assert_int_equal(count_lines(f->path), 1);
    entries = tail(f, a, 10);
    assert_int_equal(json_array_size(entries), 1);
    assert_string_equal(entry_string(entries, 0, "action"), "stop");
    json_decref(entries);

    assert_int_equal(rename(f->path, moved), 0);
    audit_record(a, "alice", "restart", "sd", 200);
    assert_int_equal(count_lines(f->path), 1);
    assert_int_equal(count_lines(moved), 1);
    audit_free(a);
    free(moved);
}

/* Writes that fail (a full disk) are logged once, not once per entry. */
static void test_failed_write_logged_once(void **state)
{
    struct fixture *f = *state;
    char *log_path = xasprintf("%s/stderr", f->dir), buf[4096];
    int saved, fd, warnings = 0;
    struct audit *a;
    ssize_t got;

    if (access("/dev/full", W_OK) < 0)
        skip();
    log_setup(LOG_INFO, false);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, STDERR_FILENO);
    close(fd);

    assert_int_equal(audit_open(&f->loop, "/dev/full", 0, 0, &a), 0);
    for (int i = 0; i < 5; i++)
        audit_record(a, "alice", "start", "sd", 200);
    audit_free(a);

    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    fd = open(log_path, O_RDONLY | O_CLOEXEC);
    got = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(got > 0);
    buf[got] = '\0';
    for (const char *p = buf; (p = strstr(p, "audit: cannot write")); p++)
        warnings++;
    assert_int_equal(warnings, 1);
    free(log_path);
}

/* A folder that cannot hold the file: an error at open. */
static void test_open_error(void **state)
{
    struct fixture *f = *state;
    char *path = xasprintf("%s/missing/%s", f->dir, AUDIT_FILE);
    struct audit *a = NULL;

    assert_int_equal(audit_open(&f->loop, path, 0, 0, &a), -ENOENT);
    assert_null(a);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_record_then_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_more_than_there_is, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_json_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mode_0600, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_tail_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removed_from_outside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_logged_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_error, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
