/* Following a log file across its rotation: see logfollow.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/alloc.h"
#include "lib/logfile.h"
#include "lib/logfollow.h"
#include "lib/log.h"

struct logfollow {
    uv_loop_t *loop;
    char *path;
    char *base; /* path's last part, as the folder's events name it */
    logfollow_line_fn line;
    void *data;
    int fd;          /* the file being read, -1 while path names none */
    uint64_t offset; /* what was read of it */
    char *buf;       /* one read */
    char *partial;   /* a line whose end has not come yet */
    size_t partial_len;
    uv_fs_event_t watch; /* the folder: its files' writes, creations and renames */
    uv_timer_t again;    /* another pass: the last one spent its budget, or a tail ended */
    int handles_open;
    unsigned tails;                   /* tails in flight: nothing is read meanwhile */
    struct logfollow_tail *tail_list; /* ...and which */
    bool closing;
};

struct logfollow_tail {
    uv_work_t work;
    struct logfollow *lf; /* NULL once it no longer holds the follower */
    int fd;               /* a copy of the follower's, or -1 */
    uint64_t end;
    char *path;
    unsigned max_lines;
    size_t max_bytes;
    logfollow_tail_fn done; /* NULL once cancelled */
    void *data;
    char **lines; /* the worker's result */
    int result;
    struct logfollow_tail *next, *prev;
};

/* Gives a line to the follower; false when the callback freed it. */
static bool emit(struct logfollow *lf, const char *p, size_t len)
{
    lf->line(lf->data, p, len);
    return !lf->closing;
}

/* Splits n bytes into lines: whole ones go out from p itself, a line cut by the end of p
 * waits in partial, and a line longer than LOGFOLLOW_LINE_MAX goes out in pieces. */
static void split(struct logfollow *lf, const char *p, size_t n)
{
    while (n > 0 && !lf->closing) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n, room = LOGFOLLOW_LINE_MAX - lf->partial_len;

        if (take > room) {
            /* A piece of a line too long. */
            if (lf->partial_len == 0) {
                emit(lf, p, room);
            } else {
                memcpy(lf->partial + lf->partial_len, p, room);
                lf->partial_len = 0;
                emit(lf, lf->partial, LOGFOLLOW_LINE_MAX);
            }
            p += room;
            n -= room;
            continue;
        }
        if (!nl) {
            memcpy(lf->partial + lf->partial_len, p, take);
            lf->partial_len += take;
            return;
        }
        if (lf->partial_len == 0) {
            emit(lf, p, take);
        } else {
            size_t len = lf->partial_len + take;
            memcpy(lf->partial + lf->partial_len, p, take);
            lf->partial_len = 0;
            emit(lf, lf->partial, len);
        }
        p += take + 1;
        n -= take + 1;
    }
}

/* The end of a file whose last line had no '\n' (the writer went, or the file was
 * truncated): that line goes out as it is. */
static void flush_partial(struct logfollow *lf)
{
    size_t len = lf->partial_len;

    if (len > 0) {
        lf->partial_len = 0;
        emit(lf, lf->partial, len);
    }
}

/* Reads the open file on from offset, at most *budget bytes. Returns true when it reached
 * the end of what is there. */
static bool read_on(struct logfollow *lf, size_t *budget)
{
    while (*budget > 0 && !lf->closing) {
        size_t want = *budget < LOGFOLLOW_LINE_MAX ? *budget : LOGFOLLOW_LINE_MAX;
        ssize_t got = pread(lf->fd, lf->buf, want, (off_t)lf->offset);

        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return true;
        lf->offset += (uint64_t)got;
        *budget -= (size_t)got;
        split(lf, lf->buf, (size_t)got);
    }
    return false;
}

/* Where a follow begins in a file already there: after its last '\n' (a line still being
 * written comes whole), looked for in its last LOGFOLLOW_LINE_MAX bytes. */
static uint64_t start_offset(struct logfollow *lf, uint64_t size)
{
    uint64_t from = size > LOGFOLLOW_LINE_MAX ? size - LOGFOLLOW_LINE_MAX : 0;
    ssize_t got = pread(lf->fd, lf->buf, (size_t)(size - from), (off_t)from);
    const char *nl = got > 0 ? memrchr(lf->buf, '\n', (size_t)got) : NULL;

    if (nl)
        return from + (uint64_t)(nl - lf->buf) + 1;
    return from > 0 ? size : 0;
}

/* Moves to the file at path (the followed path, or a rotated file it missed), from its
 * start (at_end: from its end, for the first one). False when there is none. */
static bool open_file(struct logfollow *lf, const char *path, bool at_end)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return false;
    if (lf->fd >= 0)
        close(lf->fd);
    lf->fd = fd;
    lf->offset = 0;
    if (at_end && fstat(fd, &st) == 0)
        lf->offset = start_offset(lf, (uint64_t)st.st_size);
    return true;
}

/* The path has moved on from the open file. When path.1 is not the open file but one
 * written after it, the path was rotated twice before a look: path.1, complete, is read
 * next (the open file is path.2 now, or gone). True when it moved to path.1. */
static bool open_missed(struct logfollow *lf)
{
    char *older = xasprintf("%s.1", lf->path);
    struct stat open_one, at_older;
    bool missed = false;

    if (lf->fd >= 0 && fstat(lf->fd, &open_one) == 0 && stat(older, &at_older) == 0 &&
        (at_older.st_dev != open_one.st_dev || at_older.st_ino != open_one.st_ino) &&
        (at_older.st_mtim.tv_sec > open_one.st_mtim.tv_sec ||
         (at_older.st_mtim.tv_sec == open_one.st_mtim.tv_sec &&
          at_older.st_mtim.tv_nsec >= open_one.st_mtim.tv_nsec)))
        missed = open_file(lf, older, false);
    free(older);
    return missed;
}

/* Whether path names another file than the one open (or one where none is). */
static bool path_moved(struct logfollow *lf)
{
    struct stat at_path, open_one;

    if (stat(lf->path, &at_path) < 0)
        return false; /* none (yet): the folder's watch tells when one comes */
    if (lf->fd < 0 || fstat(lf->fd, &open_one) < 0)
        return true;
    return at_path.st_dev != open_one.st_dev || at_path.st_ino != open_one.st_ino;
}

static void on_again(uv_timer_t *t);

/* Looks again: reads what is new and follows the path to a new file. */
static void pass(struct logfollow *lf)
{
    size_t budget = LOGFOLLOW_PASS_BYTES;

    while (lf->tails == 0 && !lf->closing) {
        if (lf->fd >= 0) {
            struct stat st;
            if (fstat(lf->fd, &st) == 0 && (uint64_t)st.st_size < lf->offset) {
                /* Truncated: what it holds now is new. */
                flush_partial(lf);
                lf->offset = 0;
            }
            if (!read_on(lf, &budget)) {
                if (!lf->closing)
                    uv_timer_start(&lf->again, on_again, 0, 0);
                return;
            }
        }
        if (lf->closing || !path_moved(lf))
            return;
        /* The old file was read to its end: its writer closed it before the rename. */
        flush_partial(lf);
        if (lf->closing)
            return;
        if (!open_missed(lf) && !open_file(lf, lf->path, false))
            return;
    }
}

static void on_again(uv_timer_t *t)
{
    pass(t->data);
}

static void on_closed(uv_handle_t *h)
{
    struct logfollow *lf = h->data;

    if (--lf->handles_open > 0)
        return;
    free(lf->buf);
    free(lf->partial);
    free(lf->path);
    free(lf);
}

/* An event in the folder: one of path's name (a write, a truncation, a rename, a new file
 * of that name) means a look. */
static void on_folder_event(uv_fs_event_t *handle, const char *filename, int events, int status)
{
    struct logfollow *lf = handle->data;

    if (status < 0 || !filename || strcmp(filename, lf->base) == 0)
        pass(lf);
}

int logfollow_new(uv_loop_t *loop, const char *path, logfollow_line_fn line, void *data,
                  struct logfollow **ret)
{
    struct logfollow *lf = xcalloc(1, sizeof(*lf));
    const char *slash = strrchr(path, '/');
    char *dir = slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup(".");
    int r;

    lf->loop = loop;
    lf->path = xstrdup(path);
    lf->base = slash ? lf->path + (slash - path) + 1 : lf->path;
    lf->line = line;
    lf->data = data;
    lf->fd = -1;
    lf->buf = xmalloc(LOGFOLLOW_LINE_MAX);
    lf->partial = xmalloc(LOGFOLLOW_LINE_MAX);
    uv_fs_event_init(loop, &lf->watch);
    uv_timer_init(loop, &lf->again);
    lf->watch.data = lf->again.data = lf;
    lf->handles_open = 2;
    r = uv_fs_event_start(&lf->watch, on_folder_event, dir, 0);
    free(dir);
    if (r < 0) {
        lf->closing = true;
        uv_close((uv_handle_t *)&lf->watch, on_closed);
        uv_close((uv_handle_t *)&lf->again, on_closed);
        return r;
    }
    open_file(lf, lf->path, true);
    *ret = lf;
    return 0;
}

void logfollow_free(struct logfollow *lf)
{
    if (!lf || lf->closing)
        return;
    lf->closing = true;
    for (struct logfollow_tail *t = lf->tail_list; t; t = t->next) {
        t->lf = NULL;
        t->done = NULL;
        uv_cancel((uv_req_t *)&t->work);
    }
    lf->tail_list = NULL;
    if (lf->fd >= 0)
        close(lf->fd);
    lf->fd = -1;
    uv_close((uv_handle_t *)&lf->watch, on_closed);
    uv_close((uv_handle_t *)&lf->again, on_closed);
}

/* --- tails ------------------------------------------------------------------------------ */

static void tail_unlink(struct logfollow_tail *t)
{
    struct logfollow *lf = t->lf;

    if (!lf)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        lf->tail_list = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->lf = NULL;
    /* Reading goes on, on a loop pass of its own. */
    if (--lf->tails == 0 && !lf->closing)
        uv_timer_start(&lf->again, on_again, 0, 0);
}

static void on_tail_work(uv_work_t *work)
{
    struct logfollow_tail *t = work->data;

    if (t->result == 0)
        t->result = logfile_tail_fd(t->fd, t->end, t->path, t->max_lines, t->max_bytes, &t->lines);
}

static void on_tail_done(uv_work_t *work, int status)
{
    struct logfollow_tail *t = work->data;
    int r = status < 0 ? -ECANCELED : t->result;

    /* The follower reads on only after done: no line of it comes before the tail. */
    if (t->done)
        t->done(t->data, r < 0 ? NULL : t->lines, r);
    tail_unlink(t);
    if (r == 0)
        strv_free(t->lines);
    if (t->fd >= 0)
        close(t->fd);
    free(t->path);
    free(t);
}

void logfollow_tail(struct logfollow *lf, unsigned max_lines, size_t max_bytes,
                    logfollow_tail_fn done, void *data, struct logfollow_tail **ret)
{
    struct logfollow_tail *t = xcalloc(1, sizeof(*t));

    t->fd = -1;
    if (lf->fd >= 0 && (t->fd = fcntl(lf->fd, F_DUPFD_CLOEXEC, 0)) < 0)
        t->result = -errno;                /* told by done, as the work's */
    t->end = lf->offset - lf->partial_len; /* where the next line begins */
    t->path = xstrdup(lf->path);
    t->max_lines = max_lines;
    t->max_bytes = max_bytes;
    t->done = done;
    t->data = data;
    t->work.data = t;
    if (uv_queue_work(lf->loop, &t->work, on_tail_work, on_tail_done) < 0)
        fatal("uv_queue_work failed"); /* only for a NULL callback: a broken invariant */
    t->lf = lf;
    t->next = lf->tail_list;
    if (t->next)
        t->next->prev = t;
    lf->tail_list = t;
    lf->tails++;
    *ret = t;
}

void logfollow_tail_cancel(struct logfollow_tail *t)
{
    if (!t)
        return;
    t->done = NULL;
    tail_unlink(t);
    uv_cancel((uv_req_t *)&t->work); /* it frees itself when its work ends */
}
