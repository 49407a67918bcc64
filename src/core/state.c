/* The state folder: an atomically written JSON file and the log files' names. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "core/crash_point.h"
#include "core/state.h"
#include "lib/alloc.h"
#include "lib/io.h"
#include "lib/log.h"

/* mkdir -p for the two levels we need. */
static int make_folder(const char *path)
{
    struct stat st;

    if (mkdir(path, 0755) == 0)
        return 0;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    return errno == EEXIST ? -ENOTDIR : -errno;
}

/* make_folder() for path and every missing folder above it (mkdir -p). */
static int make_folders(const char *path)
{
    char *copy = xstrdup(path);
    int r = 0;

    for (char *p = copy + 1; *p && r == 0; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        r = make_folder(copy);
        *p = '/';
    }
    if (r == 0)
        r = make_folder(copy);
    free(copy);
    return r;
}

int state_prepare(const char *dir)
{
    char *logs = xasprintf("%s/logs", dir);
    int r = make_folders(dir);

    if (r == 0)
        r = make_folder(logs);
    free(logs);
    return r;
}

static char *state_text(json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);

    if (!text)
        fatal("out of memory (json_dumps)");
    return text;
}

/* The atomic write itself; thread-safe (it logs nothing). */
static int save_text(const char *dir, const char *text)
{
    char *path = xasprintf("%s/%s", dir, STATE_FILE_NAME);
    char *tmp = xasprintf("%s/.%s.tmp", dir, STATE_FILE_NAME);
    int fd, dir_fd, r = 0;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    r = write_all(fd, text, strlen(text));
    if (r == 0)
        r = write_all(fd, "\n", 1);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        goto out;
    }
    /* The rename itself must reach the disk too. */
    dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
        fsync(dir_fd);
        close(dir_fd);
    }
out:
    free(tmp);
    free(path);
    return r;
}

int state_save(const char *dir, json_t *doc)
{
    char *text = state_text(doc);
    int r = save_text(dir, text);

    free(text);
    return r;
}

/* --- the writer: the same writes on a worker thread ------------------------------------ */

/* Someone waiting for a write (state_writer_save_then). */
struct state_waiter {
    state_written_fn done;
    void *data;
    struct state_waiter *next;
};

struct state_writer {
    uv_loop_t *loop;
    char *dir;
    uv_work_t work;
    bool busy;     /* a write is on the worker */
    char *writing; /* its text */
    int result;    /* its outcome, read on the loop */
    int last;      /* the outcome of the last write that ended */
    char *next;    /* the latest text asked for meanwhile: written after it */
    struct state_waiter *writing_waiters, *next_waiters; /* of each */
    bool freed; /* state_writer_free() came: go once the last write is done */
};

static void waiters_free(struct state_waiter *w)
{
    while (w) {
        struct state_waiter *next = w->next;
        free(w);
        w = next;
    }
}

static void on_write(uv_work_t *req)
{
    struct state_writer *w = req->data;

    w->result = save_text(w->dir, w->writing);
}

static void writer_start(struct state_writer *w);

static void on_written(uv_work_t *req, int status)
{
    struct state_writer *w = req->data;
    struct state_waiter *waiters = w->writing_waiters;
    int result = status < 0 ? status : w->result;

    w->writing_waiters = NULL;
    if (result < 0 && w->last == 0)
        log_error("cannot write %s/%s: %s: starts are refused until it can be written", w->dir,
                  STATE_FILE_NAME, strerror(-result));
    else if (result == 0 && w->last < 0)
        log_info("%s/%s can be written again", w->dir, STATE_FILE_NAME);
    w->last = result;
    free(w->writing);
    w->writing = NULL;
    /* In order; still busy meanwhile: a save a waiter asks for is the next write. */
    for (struct state_waiter *p = waiters; p; p = p->next)
        p->done(p->data, w->freed ? -ECANCELED : result);
    waiters_free(waiters);
    w->busy = false;
    if (w->next) {
        writer_start(w);
        return;
    }
    if (w->freed) {
        free(w->dir);
        free(w);
    }
}

static void writer_start(struct state_writer *w)
{
    w->writing = w->next;
    w->next = NULL;
    w->writing_waiters = w->next_waiters;
    w->next_waiters = NULL;
    w->busy = true;
    w->work.data = w;
    if (uv_queue_work(w->loop, &w->work, on_write, on_written) < 0) {
        /* No worker: write here rather than lose it. */
        w->result = save_text(w->dir, w->writing);
        on_written(&w->work, 0);
    }
}

struct state_writer *state_writer_new(uv_loop_t *loop, const char *dir)
{
    struct state_writer *w = xcalloc(1, sizeof(*w));

    w->loop = loop;
    w->dir = xstrdup(dir);
    return w;
}

void state_writer_save(struct state_writer *w, json_t *doc)
{
    free(w->next);
    w->next = state_text(doc);
    if (!w->busy)
        writer_start(w);
}

void state_writer_save_then(struct state_writer *w, json_t *doc, state_written_fn done, void *data)
{
    struct state_waiter *waiter = xcalloc(1, sizeof(*waiter)), **tail = &w->next_waiters;

    waiter->done = done;
    waiter->data = data;
    while (*tail)
        tail = &(*tail)->next;
    *tail = waiter; /* answered in the order asked */
    state_writer_save(w, doc);
}

bool state_writer_busy(const struct state_writer *w)
{
    return w && (w->busy || w->next);
}

int state_writer_error(const struct state_writer *w)
{
    return w ? w->last : 0;
}

void state_writer_free(struct state_writer *w)
{
    if (!w)
        return;
    w->freed = true;
    for (struct state_waiter *p = w->next_waiters; p; p = p->next)
        p->done(p->data, -ECANCELED);
    waiters_free(w->next_waiters);
    w->next_waiters = NULL;
    if (w->busy)
        return; /* on_written() frees it, after writing what is still asked */
    free(w->dir);
    free(w);
}

int state_load(const char *dir, json_t **ret, char *err, size_t err_size)
{
    char *path = xasprintf("%s/%s", dir, STATE_FILE_NAME);
    json_error_t jerr;
    struct stat st;
    json_t *doc;

    if (stat(path, &st) < 0) {
        int r = errno == ENOENT ? 0 : -errno;
        if (r == 0)
            *ret = json_object();
        else
            snprintf(err, err_size, "%s: %s", path, strerror(errno));
        free(path);
        return r;
    }
    if (st.st_size > STATE_SIZE_MAX) {
        snprintf(err, err_size, "%s is larger than %d bytes", path, STATE_SIZE_MAX);
        free(path);
        return -EFBIG;
    }
    doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc || !json_is_object(doc)) {
        snprintf(err, err_size, "%s:%d: %s", path, jerr.line,
                 doc ? "not a JSON object" : jerr.text);
        json_decref(doc);
        free(path);
        return -EINVAL;
    }
    free(path);
    *ret = doc;
    return 0;
}

int state_set_aside(const char *dir, char *path, size_t size)
{
    char *from = xasprintf("%s/%s", dir, STATE_FILE_NAME);
    int r = 0;

    snprintf(path, size, "%s/%s.corrupt-%lld", dir, STATE_FILE_NAME, (long long)time(NULL));
    if (rename(from, path) < 0)
        r = -errno;
    free(from);
    return r;
}

char *state_boot_id(void)
{
    char buf[128] = "";
    ssize_t n;
    int fd;

#ifdef NANNY_CRASH_POINTS
    const char *fake = getenv("NANNY_TEST_BOOT_ID");
    if (fake && *fake)
        return xstrdup(fake);
#endif
    fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return xstrdup("");
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return xstrdup(buf);
}

#ifdef NANNY_CRASH_POINTS
void crash_point(const char *name)
{
    const char *at = getenv("NANNY_TEST_CRASH_AT");

    if (at && strcmp(at, name) == 0) {
        log_warning("crash point %s: killing the daemon (a test build)", name);
        raise(SIGKILL);
    }
}
#endif

char *state_log_path(const char *dir, const char *name)
{
    return xasprintf("%s/logs/%s.log", dir, name);
}
