/* The audit log: JSON lines appended on the loop, one write() each, rotated by size as
 * the service logs are (lib/logfile.h); its tail read and parsed on a worker thread. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/audit.h"
#include "lib/alloc.h"
#include "lib/clock.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/logfile.h"

/* The most a tail reads from the files: ample for AUDIT_TAIL_MAX lines of a few hundred
 * bytes, and a bound on the worker's memory whatever the files hold. */
#define AUDIT_TAIL_BYTES_MAX (8 * 1024 * 1024)

struct audit {
    uv_loop_t *loop;
    char *path;
    uint64_t max_bytes;
    unsigned keep;
    int fd;                   /* -1 until (re)opened */
    bool failing;             /* a failed write was logged: quiet until one succeeds */
    bool rotate_failing;      /* the same for a rotation */
    struct audit_tail *tails; /* in flight, for audit_free() */
};

/* A tail being read. Cancelled (done NULL, off the audit's list), it frees itself when its
 * work has ended, without an answer. */
struct audit_tail {
    uv_work_t work;
    struct audit *audit; /* NULL once cancelled */
    struct audit_tail *prev, *next;
    char *path;
    unsigned n;
    audit_tail_fn done;
    void *data;
    json_t *entries; /* the worker's result */
    int result;
};

/* Opens the file for appending, 0600 (an older file made more open is closed down). */
static int audit_reopen(struct audit *a)
{
    struct stat st;

    if (a->fd >= 0)
        close(a->fd);
    a->fd = open(a->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (a->fd < 0)
        return -errno;
    if (fstat(a->fd, &st) == 0 && (st.st_mode & 0077))
        (void)fchmod(a->fd, 0600);
    return 0;
}

int audit_open(uv_loop_t *loop, const char *path, uint64_t max_bytes, unsigned keep,
               struct audit **ret)
{
    struct audit *a = xcalloc(1, sizeof(*a));
    int r;

    a->loop = loop;
    a->path = xstrdup(path);
    a->max_bytes = max_bytes;
    a->keep = keep;
    a->fd = -1;
    r = audit_reopen(a);
    if (r < 0) {
        free(a->path);
        free(a);
        return r;
    }
    *ret = a;
    return 0;
}

/* The size of the file the next write goes to, reopening it first when it is not the
 * file at path any more (removed or renamed from outside). */
static int audit_prepare(struct audit *a, uint64_t *ret_size)
{
    struct stat st, at_path;
    int r;

    if (a->fd < 0 && (r = audit_reopen(a)) < 0)
        return r;
    if (fstat(a->fd, &st) < 0)
        return -errno;
    if (st.st_nlink == 0 || stat(a->path, &at_path) < 0 || at_path.st_ino != st.st_ino ||
        at_path.st_dev != st.st_dev) {
        if ((r = audit_reopen(a)) < 0)
            return r;
        if (fstat(a->fd, &st) < 0)
            return -errno;
    }
    *ret_size = (uint64_t)st.st_size;
    return 0;
}

/* Appends line (len bytes, '\n' included) with one write(), rotating first when it would
 * take the file past max_bytes. */
static int audit_append(struct audit *a, const char *line, size_t len)
{
    uint64_t size;
    ssize_t wrote;
    int r;

    if ((r = audit_prepare(a, &size)) < 0)
        return r;
    if (a->max_bytes && size > 0 && size + len > a->max_bytes) {
        close(a->fd);
        a->fd = -1;
        r = logfile_rotate(a->path, a->keep);
        if (r < 0 && !a->rotate_failing)
            log_warning("audit: cannot rotate %s: %s (it grows past its cap until it can)", a->path,
                        strerror(-r));
        a->rotate_failing = r < 0;
        if ((r = audit_reopen(a)) < 0)
            return r;
    }
    do
        wrote = write(a->fd, line, len);
    while (wrote < 0 && errno == EINTR);
    if (wrote < 0)
        return -errno;
    if ((size_t)wrote < len)
        return -ENOSPC; /* a cut line; the next write starts a line of its own anyway */
    return 0;
}

void audit_record(struct audit *a, const char *who, const char *action, const char *service,
                  unsigned status)
{
    json_t *entry;
    char *text, *line;
    size_t len;
    int r;

    entry = json_pack("{s:o, s:o, s:o, s:o, s:I}", "time", json_time_ms(unix_ms()), "who",
                      json_text(who ? who : ""), "action", json_text(action), "service",
                      service ? json_text(service) : json_null(), "status", (json_int_t)status);
    if (!entry)
        fatal("out of memory (audit entry)");
    text = json_dumps(entry, JSON_COMPACT);
    json_decref(entry);
    if (!text)
        fatal("out of memory (audit entry)");
    len = strlen(text);
    line = xmalloc(len + 2);
    memcpy(line, text, len);
    line[len++] = '\n';
    line[len] = '\0';
    free(text);

    r = audit_append(a, line, len);
    free(line);
    if (r < 0 && !a->failing) {
        log_warning("audit: cannot write %s: %s (entries are lost until it can)", a->path,
                    strerror(-r));
        a->failing = true;
    } else if (r == 0 && a->failing) {
        log_info("audit: writing %s again", a->path);
        a->failing = false;
    }
    if (r < 0 && a->fd >= 0) {
        close(a->fd); /* opened again for the next entry */
        a->fd = -1;
    }
}

static void tail_unlink(struct audit_tail *t)
{
    if (!t->audit)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        t->audit->tails = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->audit = NULL;
}

/* On the worker thread: the last lines, each parsed; what is not a JSON object is
 * skipped. */
static void on_tail_work(uv_work_t *work)
{
    struct audit_tail *t = work->data;
    char **lines = NULL;

    t->result = logfile_tail(t->path, t->n, AUDIT_TAIL_BYTES_MAX, &lines);
    if (t->result < 0)
        return;
    t->entries = json_array();
    if (!t->entries)
        fatal("out of memory (audit tail)");
    for (char **l = lines; *l; l++) {
        json_t *entry = json_loads(*l, 0, NULL);

        if (json_is_object(entry))
            json_array_append(t->entries, entry);
        json_decref(entry);
    }
    strv_free(lines);
}

static void on_tail_read(uv_work_t *work, int status)
{
    struct audit_tail *t = work->data;
    int r = status < 0 ? status : t->result;

    tail_unlink(t);
    if (t->done && r < 0) {
        char *error = xasprintf("cannot read %s: %s", t->path, strerror(-r));
        t->done(t->data, NULL, error);
        free(error);
    } else if (t->done) {
        t->done(t->data, t->entries, NULL);
    }
    json_decref(t->entries);
    free(t->path);
    free(t);
}

struct audit_tail *audit_tail(struct audit *a, unsigned n, audit_tail_fn done, void *data)
{
    struct audit_tail *t = xcalloc(1, sizeof(*t));
    int r;

    t->audit = a;
    t->path = xstrdup(a->path);
    t->n = n < AUDIT_TAIL_MAX ? n : AUDIT_TAIL_MAX;
    t->done = done;
    t->data = data;
    t->work.data = t;
    r = uv_queue_work(a->loop, &t->work, on_tail_work, on_tail_read);
    if (r < 0) {
        char *error = xasprintf("cannot read %s: %s", a->path, uv_strerror(r));
        done(data, NULL, error);
        free(error);
        free(t->path);
        free(t);
        return NULL;
    }
    t->next = a->tails;
    if (a->tails)
        a->tails->prev = t;
    a->tails = t;
    return t;
}

void audit_tail_cancel(struct audit_tail *t)
{
    if (!t)
        return;
    tail_unlink(t);
    t->done = NULL;
    uv_cancel((uv_req_t *)&t->work);
}

void audit_free(struct audit *a)
{
    if (!a)
        return;
    while (a->tails)
        audit_tail_cancel(a->tails);
    if (a->fd >= 0)
        close(a->fd);
    free(a->path);
    free(a);
}
