/* Unit tests for the process driver's logger and the reader of its files: a real pipe
 * written by a real child process as fast as it can. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/logfile.h"
#include "lib/alloc.h"
#include "lib/io.h"

struct fixture {
    char dir[64];
    char path[96];
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));

    strcpy(f->dir, "/tmp/nanny-logfile-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/svc.log", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* The text of line i of the writer: numbered, of varying length. */
static size_t line_text(unsigned i, char *buf, size_t size)
{
    int n = snprintf(buf, size, "line %06u %.*s\n", i, (int)(i % 97),
                     "xxxxxxxxxxxxxxxxxxxxxxxxx"
                     "xxxxxxxxxxxxxxxxxxxxxxxxx"
                     "xxxxxxxxxxxxxxxxxxxxxxxxx"
                     "xxxxxxxxxxxxxxxxxxxxxxxxx");
    return (size_t)n;
}

/* Runs logfile_copy() on a pipe that a child fills with lines 0..n-1 as fast as it can,
 * each written in one or several write() calls (cut at odd places). */
static void copy_lines(const char *path, unsigned n, uint64_t max_bytes, unsigned keep)
{
    int fds[2];
    pid_t pid;
    int status;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char buf[256];
        close(fds[0]);
        for (unsigned i = 0; i < n; i++) {
            size_t len = line_text(i, buf, sizeof(buf)), cut = i % 3 == 0 ? len / 2 : len;
            if (write_all(fds[1], buf, cut) < 0 || write_all(fds[1], buf + cut, len - cut) < 0)
                _exit(1);
        }
        _exit(0);
    }
    close(fds[1]);
    assert_int_equal(logfile_copy(fds[0], path, max_bytes, keep), 0);
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The whole text of a file, or NULL when it does not exist. */
static char *slurp(const char *path, size_t *ret_len)
{
    struct stat st;
    char *buf;
    int fd = open(path, O_RDONLY);

    if (fd < 0)
        return NULL;
    assert_int_equal(fstat(fd, &st), 0);
    buf = xmalloc((size_t)st.st_size + 1);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    buf[st.st_size] = '\0';
    close(fd);
    *ret_len = (size_t)st.st_size;
    return buf;
}

/* At any write speed the cap holds (every file at most max_bytes: lines are short) and
 * no line is lost, cut or reordered: the oldest file to the newest is the input. */
static void test_copy_rotates_and_keeps_every_line(void **state)
{
    struct fixture *f = *state;
    const unsigned n = 20000, keep = 200;
    const uint64_t max = 16 * 1024;
    size_t expected_len = 0, got_len = 0;
    char *expected, *got, buf[256];
    unsigned files = 0;

    for (unsigned i = 0; i < n; i++)
        expected_len += line_text(i, buf, sizeof(buf));
    expected = xmalloc(expected_len + 1);
    expected_len = 0;
    for (unsigned i = 0; i < n; i++)
        expected_len += line_text(i, expected + expected_len, sizeof(buf));

    copy_lines(f->path, n, max, keep);

    got = xmalloc(expected_len + 1);
    for (int i = (int)keep; i >= 0; i--) {
        char *p = i ? xasprintf("%s.%d", f->path, i) : xstrdup(f->path);
        size_t len;
        char *text = slurp(p, &len);
        free(p);
        if (text) {
            files++;
            assert_true(len <= max);
            assert_true(len > 0 && text[len - 1] == '\n'); /* whole lines only */
            assert_true(got_len + len <= expected_len);
            memcpy(got + got_len, text, len);
            got_len += len;
            free(text);
        }
    }
    assert_true(files > 10);
    assert_int_equal(got_len, expected_len);
    assert_memory_equal(got, expected, expected_len);
    free(got);
    free(expected);
}

/* With few files kept the oldest lines go, whole files at a time, and the cap holds. */
static void test_copy_keeps_only_keep_files(void **state)
{
    struct fixture *f = *state;
    char *p;
    struct stat st;

    copy_lines(f->path, 5000, 8192, 2);
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(st.st_size <= 8192);
    p = xasprintf("%s.2", f->path);
    assert_int_equal(stat(p, &st), 0);
    assert_true(st.st_size <= 8192 && st.st_size > 0);
    free(p);
    p = xasprintf("%s.3", f->path);
    assert_int_equal(stat(p, &st), -1);
    free(p);
}

/* keep 0: a rotation removes the old file. */
static void test_copy_keep_zero(void **state)
{
    struct fixture *f = *state;
    struct stat st;
    char *p = xasprintf("%s.1", f->path);

    copy_lines(f->path, 3000, 4096, 0);
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(st.st_size <= 4096);
    assert_int_equal(stat(p, &st), -1);
    free(p);
}

/* A line longer than the logger's buffer is written whole, in pieces, and what follows it
 * is intact; max_bytes 0 never rotates. */
static void test_copy_long_line(void **state)
{
    struct fixture *f = *state;
    size_t long_len = LOGFILE_LINE_MAX * 2 + 123, len;
    char *input = xmalloc(long_len + 16), *got;
    int fds[2];

    memset(input, 'y', long_len);
    memcpy(input + long_len, "\nafter\n", 8);
    assert_int_equal(pipe(fds), 0);
    if (fork() == 0) {
        close(fds[0]);
        _exit(write_all(fds[1], input, long_len + 7) < 0);
    }
    close(fds[1]);
    assert_int_equal(logfile_copy(fds[0], f->path, 0, 1), 0);
    close(fds[0]);
    assert_true(wait(NULL) > 0);
    got = slurp(f->path, &len);
    assert_non_null(got);
    assert_int_equal(len, long_len + 7);
    assert_memory_equal(got, input, len);
    free(got);
    free(input);
}

/* A file that cannot be written (its folder is a file): the logger still reads to the
 * end (the service never blocks) and says why. */
static void test_copy_unwritable(void **state)
{
    struct fixture *f = *state;
    char *path = xasprintf("%s/not-a-dir", f->dir), *inside;
    int fds[2], fd;

    fd = open(path, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    close(fd);
    inside = xasprintf("%s/svc.log", path);
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "a\nb\n", 4), 4);
    close(fds[1]);
    assert_int_equal(logfile_copy(fds[0], inside, 1024, 1), -ENOTDIR);
    close(fds[0]);
    free(inside);
    free(path);
}

static void write_file(const char *path, const char *text, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(write_all(fd, text, len), 0);
    close(fd);
}

/* The lines just before a rotation are not lost to tail: it reads on into path.1. */
static void test_tail_across_rotation(void **state)
{
    struct fixture *f = *state;
    char *older = xasprintf("%s.1", f->path), **lines;

    write_file(older, "a1\na2\na3\na4\na5\n", 15);
    write_file(f->path, "b1\nb2\n", 6);
    assert_int_equal(logfile_tail(f->path, 4, 65536, &lines), 0);
    assert_string_equal(lines[0], "a4");
    assert_string_equal(lines[1], "a5");
    assert_string_equal(lines[2], "b1");
    assert_string_equal(lines[3], "b2");
    assert_null(lines[4]);
    for (char **l = lines; *l; l++)
        free(*l);
    free(lines);

    /* Enough lines in the newest file: the older one is not read. */
    assert_int_equal(logfile_tail(f->path, 2, 65536, &lines), 0);
    assert_string_equal(lines[0], "b1");
    assert_string_equal(lines[1], "b2");
    assert_null(lines[2]);
    for (char **l = lines; *l; l++)
        free(*l);
    free(lines);

    /* Only the older file (the service has written nothing since the rotation). */
    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(logfile_tail(f->path, 2, 65536, &lines), 0);
    assert_string_equal(lines[0], "a4");
    assert_string_equal(lines[1], "a5");
    assert_null(lines[2]);
    for (char **l = lines; *l; l++)
        free(*l);
    free(lines);
    free(older);
}

/* The byte budget covers both files: a cut first line is dropped, never shown in part. */
static void test_tail_budget(void **state)
{
    struct fixture *f = *state;
    char *older = xasprintf("%s.1", f->path), **lines;

    write_file(older, "aaaaaaaaaa\nbbbbbbbbbb\n", 22);
    write_file(f->path, "cc\n", 3);
    assert_int_equal(logfile_tail(f->path, 10, 3 + 14, &lines), 0);
    assert_string_equal(lines[0], "bbbbbbbbbb");
    assert_string_equal(lines[1], "cc");
    assert_null(lines[2]);
    for (char **l = lines; *l; l++)
        free(*l);
    free(lines);
    free(older);
}

/* A NUL byte does not cut its line. */
static void test_tail_nul(void **state)
{
    struct fixture *f = *state;
    char **lines;

    write_file(f->path, "ab\0cd\nnext\n", 11);
    assert_int_equal(logfile_tail(f->path, 10, 65536, &lines), 0);
    assert_string_equal(lines[0], "ab\xef\xbf\xbd"
                                  "cd");
    assert_string_equal(lines[1], "next");
    assert_null(lines[2]);
    for (char **l = lines; *l; l++)
        free(*l);
    free(lines);
}

/* No file yet: no lines, not an error. */
static void test_tail_missing(void **state)
{
    struct fixture *f = *state;
    char **lines;

    assert_int_equal(logfile_tail(f->path, 10, 65536, &lines), 0);
    assert_null(lines[0]);
    free(lines);
}

/* The logger's command line: bad arguments are exit status 2. */
static void test_main_bad_arguments(void **state)
{
    char *no_args[] = {"log-writer", NULL};
    char *bad_max[] = {"log-writer", "/tmp/x", "-1", "3", NULL};
    char *bad_keep[] = {"log-writer", "/tmp/x", "100", "lots", NULL};

    (void)state;
    assert_int_equal(logfile_main(1, no_args), 2);
    assert_int_equal(logfile_main(4, bad_max), 2);
    assert_int_equal(logfile_main(4, bad_keep), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_copy_rotates_and_keeps_every_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_keeps_only_keep_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_keep_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_long_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy_unwritable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_across_rotation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_nul, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tail_missing, setup, teardown),
        cmocka_unit_test(test_main_bad_arguments),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
