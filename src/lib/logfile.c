/* A process service's log file: the logger that writes it (whole lines, rotation by
 * rename before the cap) and the reader of its last lines across the rotation. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/logfile.h"
#include "lib/alloc.h"
#include "lib/io.h"

/* The file being written. */
struct writer {
    const char *path;
    uint64_t max_bytes;
    unsigned keep;
    int fd;        /* -1 while it cannot be opened */
    uint64_t size; /* bytes in the file now */
    int error;     /* the first write error, kept for the end */
};

static void writer_fail(struct writer *w, int error)
{
    if (!w->error)
        w->error = error;
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

/* Opens the file for appending (again after a rotation or an error). */
static void writer_open(struct writer *w)
{
    struct stat st;

    w->fd = open(w->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        writer_fail(w, -errno);
        return;
    }
    w->size = fstat(w->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

int logfile_rotate(const char *path, unsigned keep)
{
    int r = 0;

    for (unsigned i = keep; i > 1; i--) {
        char *older = xasprintf("%s.%u", path, i), *newer = xasprintf("%s.%u", path, i - 1);
        if (rename(newer, older) < 0 && errno != ENOENT && r == 0)
            r = -errno;
        free(older);
        free(newer);
    }
    if (keep > 0) {
        char *first = xasprintf("%s.1", path);
        if (rename(path, first) < 0 && errno != ENOENT && r == 0)
            r = -errno;
        free(first);
    } else if (unlink(path) < 0 && errno != ENOENT && r == 0) {
        r = -errno;
    }
    return r;
}

static void writer_rotate(struct writer *w)
{
    int r;

    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    r = logfile_rotate(w->path, w->keep);
    if (r < 0 && !w->error)
        w->error = r;
    writer_open(w);
}

/* Appends n bytes as they are; what cannot be written is dropped (the error is kept). */
static void writer_put(struct writer *w, const char *buf, size_t n)
{
    if (w->fd < 0)
        writer_open(w);
    if (w->fd < 0)
        return;
    if (write_all(w->fd, buf, n) < 0) {
        writer_fail(w, -errno);
        return;
    }
    w->size += n;
}

/* Writes buf (whole lines, but for a last piece of a line longer than the buffer),
 * rotating first whenever the next lines would take the file past its cap. */
static void writer_write(struct writer *w, const char *buf, size_t n)
{
    bool rotated = false; /* at most one rotation per piece, should renames fail */

    while (n > 0) {
        size_t take = n;

        if (w->fd < 0)
            writer_open(w);
        if (w->max_bytes && w->size + n > w->max_bytes) {
            size_t room = w->size < w->max_bytes ? (size_t)(w->max_bytes - w->size) : 0;
            const char *cut = room ? memrchr(buf, '\n', room < n ? room : n) : NULL;

            if (cut) {
                take = (size_t)(cut - buf) + 1; /* the lines that still fit */
            } else if (w->size > 0 && !rotated) {
                writer_rotate(w);
                rotated = true;
                continue;
            } else {
                /* One line longer than the cap, alone in a new file. */
                const char *nl = memchr(buf, '\n', n);
                take = nl ? (size_t)(nl - buf) + 1 : n;
            }
        }
        writer_put(w, buf, take);
        rotated = false;
        buf += take;
        n -= take;
    }
}

int logfile_copy(int in_fd, const char *path, uint64_t max_bytes, unsigned keep)
{
    struct writer w = {.path = path, .max_bytes = max_bytes, .keep = keep, .fd = -1};
    char *buf = xmalloc(LOGFILE_LINE_MAX);
    size_t len = 0;

    writer_open(&w);
    for (;;) {
        ssize_t got = read(in_fd, buf + len, LOGFILE_LINE_MAX - len);
        const char *nl;

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* end of file: every writer has gone (or the pipe broke) */
        len += (size_t)got;
        nl = memrchr(buf, '\n', len);
        if (nl) {
            size_t whole = (size_t)(nl - buf) + 1;
            writer_write(&w, buf, whole);
            memmove(buf, buf + whole, len - whole);
            len -= whole;
        } else if (len == LOGFILE_LINE_MAX) {
            writer_write(&w, buf, len); /* a line longer than the buffer: in pieces */
            len = 0;
        }
    }
    if (len > 0)
        writer_write(&w, buf, len);
    free(buf);
    if (w.fd >= 0 && close(w.fd) < 0 && !w.error)
        w.error = -errno;
    return w.error;
}

/* A copy of a line of n bytes, each NUL byte shown as U+FFFD. */
static char *line_dup(const char *p, size_t n)
{
    static const char replacement[] = "\xef\xbf\xbd";
    size_t nuls = 0, at = 0;
    char *s;

    for (size_t i = 0; i < n; i++)
        nuls += p[i] == '\0';
    s = xmalloc(n + nuls * (sizeof(replacement) - 2) + 1);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\0') {
            memcpy(s + at, replacement, sizeof(replacement) - 1);
            at += sizeof(replacement) - 1;
        } else {
            s[at++] = p[i];
        }
    }
    s[at] = '\0';
    return s;
}

/* Adds to lines (last first, *n of them so far) at most max_lines - *n lines from the bytes
 * of fd before end, reading at most *budget bytes, which it lowers by what it read. */
static int tail_fd(int fd, off_t end, char **lines, size_t *n, size_t max_lines, size_t *budget)
{
    char *buf;
    size_t len, start = 0;
    off_t offset;
    ssize_t got;

    offset = end > (off_t)*budget ? end - (off_t)*budget : 0;
    len = (size_t)(end - offset);
    buf = xmalloc(len + 1);
    got = len ? pread(fd, buf, len, offset) : 0;
    if (got < 0) {
        int r = -errno;
        free(buf);
        return r;
    }
    len = (size_t)got;
    *budget -= len;
    /* A first line cut by the window is dropped. */
    if (offset > 0) {
        char *nl = memchr(buf, '\n', len);
        start = nl ? (size_t)(nl - buf) + 1 : len;
    }
    if (len > start && buf[len - 1] == '\n')
        len--;
    while (*n < max_lines && len > start) {
        size_t begin = len;
        while (begin > start && buf[begin - 1] != '\n')
            begin--;
        lines[(*n)++] = line_dup(buf + begin, len - begin);
        len = begin > start ? begin - 1 : start;
    }
    free(buf);
    return 0;
}

/* tail_fd() over the whole of path; a missing file has no lines. skip_dev and skip_ino,
 * when not 0, name a file that is not read (the caller read it already). */
static int tail_file(const char *path, dev_t skip_dev, ino_t skip_ino, char **lines, size_t *n,
                     size_t max_lines, size_t *budget)
{
    struct stat st;
    int fd, r;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    if (fstat(fd, &st) < 0)
        r = -errno;
    else if (skip_ino && st.st_dev == skip_dev && st.st_ino == skip_ino)
        r = 1;
    else
        r = tail_fd(fd, st.st_size, lines, n, max_lines, budget);
    close(fd);
    return r;
}

/* Lines gathered last first: freed on error, else turned oldest first into *ret. */
static int tail_finish(int r, char **lines, size_t n, char ***ret)
{
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(lines[i]);
        free(lines);
        return r;
    }
    for (size_t i = 0; i < n / 2; i++) {
        char *t = lines[i];
        lines[i] = lines[n - 1 - i];
        lines[n - 1 - i] = t;
    }
    *ret = lines;
    return 0;
}

int logfile_tail(const char *path, unsigned max_lines, size_t max_bytes, char ***ret)
{
    char **lines = xcalloc((size_t)max_lines + 1, sizeof(*lines));
    size_t n = 0, budget = max_bytes;
    int r;

    r = tail_file(path, 0, 0, lines, &n, max_lines, &budget);
    if (r == 0 && n < max_lines && budget > 0) {
        /* The lines just before the last rotation. */
        char *older = xasprintf("%s.1", path);
        r = tail_file(older, 0, 0, lines, &n, max_lines, &budget);
        free(older);
    }
    return tail_finish(r, lines, n, ret);
}

int logfile_tail_fd(int fd, uint64_t end, const char *path, unsigned max_lines, size_t max_bytes,
                    char ***ret)
{
    char **lines = xcalloc((size_t)max_lines + 1, sizeof(*lines));
    size_t n = 0, budget = max_bytes;
    struct stat st = {0};
    int r = 0;

    if (fd >= 0) {
        r = fstat(fd, &st) < 0 ? -errno : 0;
        if (r == 0)
            r = tail_fd(fd, (off_t)end, lines, &n, max_lines, &budget);
    }
    /* The lines before it: path.1 or, when path.1 is fd's own file (renamed since it was
     * opened), path.2. */
    for (unsigned i = 1; r >= 0 && i <= 2 && n < max_lines && budget > 0; i++) {
        char *older = xasprintf("%s.%u", path, i);
        r = tail_file(older, st.st_dev, fd >= 0 ? st.st_ino : 0, lines, &n, max_lines, &budget);
        free(older);
        if (r == 0)
            break;
    }
    return tail_finish(r < 0 ? r : 0, lines, n, ret);
}

/* A whole number from a command-line argument, or -EINVAL. */
static int parse_u64(const char *s, uint64_t *ret)
{
    char *end;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *ret = v;
    return 0;
}

int logfile_main(int argc, char **argv)
{
    uint64_t max_bytes, keep;
    int r;

    if (argc != 4 || parse_u64(argv[2], &max_bytes) < 0 || parse_u64(argv[3], &keep) < 0 ||
        keep > 1000) {
        fprintf(stderr, "usage: nanny log-writer PATH MAX_BYTES KEEP (the process driver's "
                        "logger: copies stdin to PATH, rotating before MAX_BYTES)\n");
        return 2;
    }
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    r = logfile_copy(STDIN_FILENO, argv[1], max_bytes, (unsigned)keep);
    if (r < 0)
        fprintf(stderr, "nanny log-writer: cannot write %s: %s\n", argv[1], strerror(-r));
    /* At once: the service's run (and its GPU hold) ends with the logger, so nothing runs
     * at exit (no atexit handler, no sanitizer's leak scan: logfile_copy freed its
     * buffer, and test-logfile checks it for leaks). */
    _exit(r < 0 ? 1 : 0);
}
