/* Unit tests for the follower of a log file: appends, a line written in two parts, a file
 * that does not exist yet, rotation by rename (logfile_rotate, as the logger does) and by
 * truncation, long lines, the tail's join with the lines after it, and a free from inside
 * the line callback. Every line the follower gives is recorded, in order, with the tails. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/alloc.h"
#include "lib/logfile.h"
#include "lib/logfollow.h"

#define SEEN_MAX 64

struct fixture {
    char dir[64];
    char path[96];
    uv_loop_t loop;
    uv_timer_t guard; /* ends a wait that would never end */
    bool guard_fired;
    struct logfollow *lf;
    char *seen[SEEN_MAX]; /* each line, and "TAIL:line" for a tail's */
    size_t n_seen;
    size_t free_at; /* frees the follower at this many lines (0: never) */
    bool numbered;  /* lines are "n NUMBER ...", checked in order, counted, not kept */
    unsigned next;  /* ...the number expected next */
    bool tail_done;
};

static void on_line(void *data, const char *line, size_t len)
{
    struct fixture *f = data;

    assert_null(memchr(line, '\n', len));
    if (f->numbered) {
        char *text = xstrndup(line, len);
        unsigned n;
        assert_int_equal(sscanf(text, "n %u", &n), 1);
        assert_int_equal(n, f->next);
        f->next++;
        free(text);
        return;
    }
    assert_true(f->n_seen < SEEN_MAX);
    f->seen[f->n_seen++] = xstrndup(line, len);
    if (f->free_at && f->n_seen == f->free_at) {
        logfollow_free(f->lf);
        f->lf = NULL;
    }
}

static void on_tail(void *data, char **lines, int error)
{
    struct fixture *f = data;

    assert_int_equal(error, 0);
    for (char **l = lines; *l; l++)
        f->seen[f->n_seen++] = xasprintf("TAIL:%s", *l);
    f->tail_done = true;
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    strcpy(f->dir, "/tmp/nanny-logfollow-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/svc.log", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->guard);
    f->guard.data = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    logfollow_free(f->lf);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    for (size_t i = 0; i < f->n_seen; i++)
        free(f->seen[i]);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void on_guard(uv_timer_t *t)
{
    struct fixture *f = t->data;

    f->guard_fired = true;
}

/* Runs the loop until n things were seen (and the tail asked is in, when want_tail). */
static void wait_for(struct fixture *f, size_t n, bool want_tail)
{
    f->guard_fired = false;
    uv_timer_start(&f->guard, on_guard, 10000, 0);
    while ((f->n_seen < n || (want_tail && !f->tail_done)) && !f->guard_fired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_timer_stop(&f->guard);
    assert_false(f->guard_fired);
}

/* Lets the loop see whatever is pending (nothing more must come of it). */
static void drain(struct fixture *f)
{
    for (int i = 0; i < 5; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void append(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void expect(struct fixture *f, const char *const *lines)
{
    size_t n = 0;

    for (; lines[n]; n++) {
        assert_true(n < f->n_seen);
        assert_string_equal(f->seen[n], lines[n]);
    }
    assert_int_equal(f->n_seen, n);
}

static void follow(struct fixture *f)
{
    assert_int_equal(logfollow_new(&f->loop, f->path, on_line, f, &f->lf), 0);
}

static void tail(struct fixture *f, unsigned n)
{
    struct logfollow_tail *t;

    f->tail_done = false;
    logfollow_tail(f->lf, n, 1 << 20, on_tail, f, &t);
}

/* The tail, then lines as they come, a line written in two parts whole. */
static void test_appends(void **state)
{
    struct fixture *f = *state;

    append(f->path, "old 1\nold 2\nold 3\n");
    follow(f);
    tail(f, 2);
    wait_for(f, 2, true);
    append(f->path, "new 1\nnew ");
    wait_for(f, 3, false);
    append(f->path, "2\n\nnew 3\n");
    wait_for(f, 6, false);
    drain(f);
    expect(f,
           (const char *const[]){"TAIL:old 2", "TAIL:old 3", "new 1", "new 2", "", "new 3", NULL});
}

/* Lines written while the tail is read come after it, once each. */
static void test_tail_join(void **state)
{
    struct fixture *f = *state;

    append(f->path, "a\nb\n");
    follow(f);
    append(f->path, "c\n"); /* not yet read: it comes after the tail */
    tail(f, 5);
    append(f->path, "d\n");
    wait_for(f, 4, true);
    drain(f);
    expect(f, (const char *const[]){"TAIL:a", "TAIL:b", "c", "d", NULL});
    /* A second tail now ends where the follower stands. */
    tail(f, 2);
    wait_for(f, 6, true);
    expect(f, (const char *const[]){"TAIL:a", "TAIL:b", "c", "d", "TAIL:c", "TAIL:d", NULL});
}

/* A file that does not exist yet is followed from its start once it comes. */
static void test_missing_file(void **state)
{
    struct fixture *f = *state;

    follow(f);
    tail(f, 10);
    wait_for(f, 0, true);
    append(f->path, "first\nsecond\n");
    wait_for(f, 2, false);
    drain(f);
    expect(f, (const char *const[]){"first", "second", NULL});
}

/* Rotation by rename: the old file is read to its end, the new one from its start, even
 * when the follower sees both only after the rotation; nothing lost or twice. */
static void test_rename_rotation(void **state)
{
    struct fixture *f = *state;

    append(f->path, "before\n");
    follow(f);
    append(f->path, "x1\n");
    wait_for(f, 1, false);
    append(f->path, "x2\n"); /* not yet read when the file is renamed */
    assert_int_equal(logfile_rotate(f->path, 3), 0);
    append(f->path, "y1\n");
    wait_for(f, 3, false);
    append(f->path, "y2\n");
    wait_for(f, 4, false);
    /* And again. */
    assert_int_equal(logfile_rotate(f->path, 3), 0);
    append(f->path, "z1\n");
    wait_for(f, 5, false);
    drain(f);
    expect(f, (const char *const[]){"x1", "x2", "y1", "y2", "z1", NULL});
    /* A tail across the rotation: the current file, then the one before it. */
    tail(f, 3);
    wait_for(f, 8, true);
    expect(f, (const char *const[]){"x1", "x2", "y1", "y2", "z1", "TAIL:y1", "TAIL:y2", "TAIL:z1",
                                    NULL});
}

/* Two rotations before the follower looks: the file written between is read too. */
static void test_two_rotations_at_once(void **state)
{
    struct fixture *f = *state;

    follow(f);
    append(f->path, "a1\n");
    wait_for(f, 1, false);
    append(f->path, "a2\n");
    assert_int_equal(logfile_rotate(f->path, 3), 0);
    append(f->path, "b1\n");
    assert_int_equal(logfile_rotate(f->path, 3), 0);
    append(f->path, "c1\n");
    wait_for(f, 4, false);
    drain(f);
    expect(f, (const char *const[]){"a1", "a2", "b1", "c1", NULL});
}

struct copier {
    int fd;
    const char *path;
    int result;
};

static void copy_thread(void *arg)
{
    struct copier *c = arg;

    c->result = logfile_copy(c->fd, c->path, 4096, 3);
}

/* The real logger (logfile_copy() on a thread, rotating every 4 KiB) fed in bursts, each
 * waited for: every line once, in order, across some 20 rotations. */
static void test_logger_rotations(void **state)
{
    struct fixture *f = *state;
    struct copier c = {.path = f->path};
    uv_thread_t thread;
    int pipe_fds[2];
    unsigned n = 0;
    char line[160];

    assert_int_equal(pipe(pipe_fds), 0);
    c.fd = pipe_fds[0];
    f->numbered = true;
    follow(f);
    assert_int_equal(uv_thread_create(&thread, copy_thread, &c), 0);
    for (unsigned burst = 0; burst < 60; burst++) {
        for (unsigned i = 0; i < 15; i++, n++) {
            int len = snprintf(line, sizeof(line), "n %u %.*s\n", n, (int)(n % 90),
                               "...................................................."
                               "......................................");
            assert_int_equal(write(pipe_fds[1], line, (size_t)len), len);
        }
        f->guard_fired = false;
        uv_timer_start(&f->guard, on_guard, 10000, 0);
        while (f->next < n && !f->guard_fired)
            uv_run(&f->loop, UV_RUN_ONCE);
        uv_timer_stop(&f->guard);
        assert_int_equal(f->next, n);
    }
    close(pipe_fds[1]);
    uv_thread_join(&thread);
    close(pipe_fds[0]);
    assert_int_equal(c.result, 0);
    drain(f);
    assert_int_equal(f->next, n);
}

/* Truncation: what the file holds afterwards is new. */
static void test_truncation(void **state)
{
    struct fixture *f = *state;

    append(f->path, "a long first line, longer than what comes after\n");
    follow(f);
    append(f->path, "one\n");
    wait_for(f, 1, false);
    assert_int_equal(truncate(f->path, 0), 0);
    append(f->path, "two\n");
    wait_for(f, 2, false);
    drain(f);
    expect(f, (const char *const[]){"one", "two", NULL});
}

/* A line longer than LOGFOLLOW_LINE_MAX comes in pieces; none is longer. */
static void test_long_line(void **state)
{
    struct fixture *f = *state;
    size_t n = 2 * LOGFOLLOW_LINE_MAX + 100;
    char *text = xmalloc(n + 2);

    follow(f);
    memset(text, 'x', n);
    text[n] = '\n';
    text[n + 1] = '\0';
    append(f->path, "short\n");
    append(f->path, text);
    append(f->path, "after\n");
    wait_for(f, 5, false);
    drain(f);
    assert_int_equal(f->n_seen, 5);
    assert_string_equal(f->seen[0], "short");
    assert_int_equal(strlen(f->seen[1]), LOGFOLLOW_LINE_MAX);
    assert_int_equal(strlen(f->seen[2]), LOGFOLLOW_LINE_MAX);
    assert_int_equal(strlen(f->seen[3]), 100);
    assert_string_equal(f->seen[4], "after");
    free(text);
}

/* The line callback frees the follower: nothing comes after. */
static void test_free_inside_line(void **state)
{
    struct fixture *f = *state;

    follow(f);
    f->free_at = 2;
    append(f->path, "1\n2\n3\n4\n");
    wait_for(f, 2, false);
    drain(f);
    append(f->path, "5\n");
    drain(f);
    expect(f, (const char *const[]){"1", "2", NULL});
}

/* A tail cancelled, and a follower freed with a tail in flight: no callback, no leak. */
static void test_tail_cancel(void **state)
{
    struct fixture *f = *state;
    struct logfollow_tail *t;

    append(f->path, "a\n");
    follow(f);
    logfollow_tail(f->lf, 5, 1 << 20, on_tail, f, &t);
    logfollow_tail_cancel(t);
    append(f->path, "b\n");
    wait_for(f, 1, false); /* reading goes on */
    logfollow_tail(f->lf, 5, 1 << 20, on_tail, f, &t);
    logfollow_free(f->lf);
    f->lf = NULL;
    drain(f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    expect(f, (const char *const[]){"b", NULL});
}

/* A folder that cannot be watched: an error at once, and nothing left behind. */
static void test_no_folder(void **state)
{
    struct fixture *f = *state;
    struct logfollow *lf = NULL;
    char path[160];

    snprintf(path, sizeof(path), "%s/missing/svc.log", f->dir);
    assert_true(logfollow_new(&f->loop, path, on_line, f, &lf) < 0);
    assert_null(lf);
    drain(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_appends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_join, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_rotations_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logger_rotations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_inside_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_folder, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
