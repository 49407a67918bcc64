/* The state folder: an atomically written JSON file and the log files' names. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

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

struct state_writer {
    uv_loop_t *loop;
    char *dir;
    uv_work_t work;
    bool busy;     /* a write is on the worker */
    char *writing; /* its text */
    int result;    /* its outcome, read on the loop */
    char *next;    /* the latest text asked for meanwhile: written after it */
    bool freed;    /* state_writer_free() came: go once the last write is done */
};

static void on_write(uv_work_t *req)
{
    struct state_writer *w = req->data;

    w->result = save_text(w->dir, w->writing);
}

static void writer_start(struct state_writer *w);

static void on_written(uv_work_t *req, int status)
{
    struct state_writer *w = req->data;

    w->busy = false;
    if (status == 0 && w->result < 0)
        log_error("cannot write %s/%s: %s: a daemon restart will not adopt the services", w->dir,
                  STATE_FILE_NAME, strerror(-w->result));
    free(w->writing);
    w->writing = NULL;
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

void state_writer_free(struct state_writer *w)
{
    if (!w)
        return;
    w->freed = true;
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

char *state_log_path(const char *dir, const char *name)
{
    return xasprintf("%s/logs/%s.log", dir, name);
}
