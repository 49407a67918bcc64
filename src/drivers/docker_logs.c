/* The logs of a compose project's containers through the Docker Engine API: each
 * container's stream demultiplexed into lines, the containers merged by timestamp. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/docker.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define DOCKER_LOGS_MS   30000              /* one container's logs */
#define DOCKER_LOGS_MAX  (32 * 1024 * 1024) /* one container's logs (tail is capped too) */
#define DOCKER_TIMESTAMP 30                 /* "2026-11-26T19:01:54.673456871Z", fixed width */

/* --- logs ------------------------------------------------------------------------------ */

struct log_line {
    char *text; /* "SERVICE | line" */
    char stamp[DOCKER_TIMESTAMP + 1];
};

/* One container's part of a logs request. */
struct logs_part {
    struct docker_logs *l;
    struct fetch *fetch;
    char *service;
    char *id;
    size_t first, n_lines; /* its lines in l->lines, in the order the engine sent them */
};

struct docker_logs {
    docker_logs_fn done;
    void *data;
    unsigned tail;
    struct logs_part *parts;
    size_t n_parts, n_pending;
    struct log_line *lines;
    size_t n_lines, cap_lines;
    char *error;
};

/* A stream's line that a frame cut, kept until its end comes. */
struct partial_line {
    char *buf;
    size_t len, size;
};

/* Appends n bytes, growing the buffer by doubling up to limit (the body's length, which
 * no line of it can pass). */
static void partial_append(struct partial_line *pl, const char *p, size_t n, size_t limit)
{
    if (pl->len + n > pl->size) {
        size_t size = pl->size ? pl->size : 256;
        while (size < pl->len + n)
            size *= 2;
        if (size > limit)
            size = limit;
        pl->buf = xrealloc(pl->buf, size);
        pl->size = size;
    }
    memcpy(pl->buf + pl->len, p, n);
    pl->len += n;
}

/* The size of a multiplexed frame, from its 8-byte header: [stream, 0, 0, 0, size (4
 * bytes, big endian)]. */
static size_t frame_size(const unsigned char *header)
{
    return ((size_t)header[4] << 24) | ((size_t)header[5] << 16) | ((size_t)header[6] << 8) |
           header[7];
}

void docker_log_lines(const char *body, size_t len,
                      void (*fn)(void *data, const char *line, size_t len), void *data)
{
    /* Multiplexed: frames of [stream 0|1|2, 0, 0, 0, size (4 bytes, big endian)]. Each
     * stream is split into lines on its own, as frames may cut lines. */
    bool muxed =
        len >= 8 && (unsigned char)body[0] <= 2 && body[1] == 0 && body[2] == 0 && body[3] == 0;
    struct partial_line acc[3] = {{NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}};

    if (!muxed) {
        size_t start = 0;
        for (size_t i = 0; i < len; i++) {
            if (body[i] == '\n') {
                fn(data, body + start, i - start);
                start = i + 1;
            }
        }
        if (start < len)
            fn(data, body + start, len - start);
        return;
    }
    for (size_t at = 0; at + 8 <= len;) {
        unsigned stream = (unsigned char)body[at] > 2 ? 1 : (unsigned char)body[at];
        size_t size = frame_size((const unsigned char *)body + at);
        const char *p = body + at + 8, *end, *nl;
        struct partial_line *pl = &acc[stream];

        if (size > len - at - 8)
            size = len - at - 8; /* a cut body: take what there is */
        end = p + size;
        /* Whole lines go out from the body itself; only a cut one is copied. */
        while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
            if (pl->len == 0) {
                fn(data, p, (size_t)(nl - p));
            } else {
                partial_append(pl, p, (size_t)(nl - p), len);
                fn(data, pl->buf, pl->len);
                pl->len = 0;
            }
            p = nl + 1;
        }
        if (p < end)
            partial_append(pl, p, (size_t)(end - p), len);
        at += 8 + size;
    }
    for (unsigned s = 0; s < 3; s++) {
        if (acc[s].len > 0)
            fn(data, acc[s].buf, acc[s].len);
        free(acc[s].buf);
    }
}

struct line_sink {
    struct docker_logs *l;
    const char *service;
};

static void add_line(void *data, const char *line, size_t len)
{
    struct line_sink *sink = data;
    struct docker_logs *l = sink->l;
    struct log_line *ll;
    size_t skip = 0;

    if (len > 0 && line[len - 1] == '\r')
        len--; /* a TTY's line end */
    if (l->n_lines == l->cap_lines) {
        l->cap_lines = l->cap_lines ? l->cap_lines * 2 : 64;
        l->lines = xrealloc(l->lines, l->cap_lines * sizeof(*l->lines));
    }
    ll = &l->lines[l->n_lines];
    memset(ll->stamp, 0, sizeof(ll->stamp));
    /* timestamps=1 puts "STAMP " before each line. */
    if (len > DOCKER_TIMESTAMP && line[DOCKER_TIMESTAMP] == ' ') {
        memcpy(ll->stamp, line, DOCKER_TIMESTAMP);
        skip = DOCKER_TIMESTAMP + 1;
    } else if (len == DOCKER_TIMESTAMP && line[len - 1] == 'Z') {
        memcpy(ll->stamp, line, DOCKER_TIMESTAMP);
        skip = len; /* an empty line: just its stamp */
    }
    ll->text = xasprintf("%s | %.*s", sink->service, (int)(len - skip), line + skip);
    l->n_lines++;
}

/* Whether line a of container pa goes after line b of container pb: the later timestamp,
 * and for equal ones the container later in (service, id) order, so that the merge never
 * depends on which container's answer came first. */
static bool line_after(const struct log_line *a, const struct logs_part *pa,
                       const struct log_line *b, const struct logs_part *pb)
{
    int c = strcmp(a->stamp, b->stamp);

    if (c == 0)
        c = strcmp(pa->service, pb->service);
    if (c == 0)
        c = strcmp(pa->id, pb->id);
    return c > 0;
}

static void logs_free(struct docker_logs *l)
{
    for (size_t i = 0; i < l->n_parts; i++) {
        fetch_cancel(l->parts[i].fetch);
        free(l->parts[i].service);
        free(l->parts[i].id);
    }
    for (size_t i = 0; i < l->n_lines; i++)
        free(l->lines[i].text);
    free(l->lines);
    free(l->parts);
    free(l->error);
    free(l);
}

/* Answers the last tail lines of all containers together. Each container's lines keep
 * the engine's order: its stdout and stderr lines may carry stamps a little out of order,
 * and the engine's tail counts in its own order. The containers are merged by timestamp
 * from the newest line back, so the answer for tail N only ever looks at the last N lines
 * of each container, which the engine answers alike for any tail of N or more: the lines
 * for tail N are always the end of the lines for a bigger tail. */
static void logs_finish(struct docker_logs *l)
{
    size_t n, *left;
    char **out;

    if (l->error) {
        l->done(l->data, NULL, l->error);
        logs_free(l);
        return;
    }
    n = l->n_lines < l->tail ? l->n_lines : l->tail;
    out = xcalloc(n + 1, sizeof(*out));
    left = xcalloc(l->n_parts + 1, sizeof(*left));
    for (size_t p = 0; p < l->n_parts; p++)
        left[p] = l->parts[p].n_lines;
    for (size_t k = n; k > 0; k--) {
        const struct log_line *best_line = NULL;
        size_t best = 0;

        for (size_t p = 0; p < l->n_parts; p++) {
            const struct log_line *last;

            if (left[p] == 0)
                continue;
            last = &l->lines[l->parts[p].first + left[p] - 1];
            if (!best_line || line_after(last, &l->parts[p], best_line, &l->parts[best])) {
                best_line = last;
                best = p;
            }
        }
        left[best]--;
        out[k - 1] = l->lines[l->parts[best].first + left[best]].text; /* taken */
        l->lines[l->parts[best].first + left[best]].text = NULL;
    }
    free(left);
    l->done(l->data, out, NULL);
    logs_free(l);
}

static void on_container_logs(void *data, const struct fetch_result *res)
{
    struct logs_part *part = data;
    struct docker_logs *l = part->l;

    part->fetch = NULL;
    if (res->error || (res->status != 200 && res->status != 404)) {
        /* A container removed meanwhile (404) just has no lines. */
        if (!l->error)
            l->error = res->error ? xasprintf("cannot read the logs: %s", res->error)
                                  : xasprintf("cannot read the logs: the engine answered %ld",
                                              res->status);
    } else if (res->status == 200) {
        struct line_sink sink = {l, part->service};
        /* One body is split in one go: a container's lines lie together, in its order. */
        part->first = l->n_lines;
        docker_log_lines(res->body, res->body_len, add_line, &sink);
        part->n_lines = l->n_lines - part->first;
    }
    if (--l->n_pending == 0)
        logs_finish(l);
}

int docker_logs(struct docker *d, const char *project, unsigned tail, docker_logs_fn done,
                void *data, struct docker_logs **ret)
{
    struct docker_logs *l = xcalloc(1, sizeof(*l));

    l->done = done;
    l->data = data;
    l->tail = tail;
    l->parts = xcalloc(docker_count(d) + 1, sizeof(*l->parts));
    *ret = NULL;
    for (size_t i = 0; i < docker_count(d); i++) {
        const struct docker_container *c = docker_at(d, i);
        struct logs_part *part = &l->parts[l->n_parts];
        struct fetch_request req = {.unix_socket = docker_socket(d),
                                    .timeout_ms = DOCKER_LOGS_MS,
                                    .body_max = DOCKER_LOGS_MAX};
        char *u;
        int r;

        if (strcmp(c->project, project) != 0)
            continue;
        u = xasprintf("http://docker/containers/%s/logs?stdout=1&stderr=1&timestamps=1&tail=%u",
                      c->id, tail);
        req.url = u;
        part->l = l;
        part->service = xstrdup(*c->service ? c->service : c->id);
        part->id = xstrdup(c->id);
        r = fetcher_request(docker_fetcher(d), &req, on_container_logs, part, &part->fetch);
        free(u);
        l->n_parts++;
        if (r < 0) {
            l->error = xstrdup("cannot start a request to the engine");
            break;
        }
        l->n_pending++;
    }
    if (l->error || l->n_pending == 0) {
        /* Nothing in flight: answer now (no containers: no lines). */
        logs_finish(l);
        return 0;
    }
    *ret = l;
    return 0;
}

void docker_logs_cancel(struct docker_logs *l)
{
    if (l)
        logs_free(l);
}

/* --- follow ----------------------------------------------------------------------------- */

/* A stream's line that has not ended yet, behind its "SERVICE | " prefix. */
struct follow_line {
    char *buf; /* prefix_len + DOCKER_FOLLOW_LINE_MAX */
    size_t len;
};

/* One container's stream. */
struct follow_part {
    struct docker_follow *f;
    struct fetch *fetch; /* NULL once ended */
    size_t prefix_len;
    int muxed;               /* -1 until the first byte says */
    unsigned char header[8]; /* a frame header being read */
    size_t header_len;
    size_t frame_left; /* bytes of the current frame still to come */
    unsigned stream;   /* the current frame's: 0 stdin, 1 stdout, 2 stderr */
    struct follow_line lines[3];
};

struct docker_follow {
    docker_follow_line_fn line;
    docker_follow_end_fn end;
    void *data;
    struct follow_part *parts;
    size_t n_parts, n_open;
    char *error;       /* the first stream that failed */
    bool in_data;      /* in libcurl's write callback: transfers cannot be cancelled */
    bool stopping;     /* freed, or ended: no callback any more */
    uv_timer_t closer; /* closed to free it outside libcurl's callbacks */
};

/* Gives the line of stream s out and empties it; false when the callback freed f. */
static bool follow_emit(struct follow_part *part, unsigned s)
{
    struct follow_line *fl = &part->lines[s];
    size_t len = fl->len;

    if (len > part->prefix_len && fl->buf[len - 1] == '\r')
        len--; /* a TTY's line end */
    fl->len = part->prefix_len;
    part->f->line(part->f->data, fl->buf, len);
    return !part->f->stopping;
}

/* Adds n bytes of stream s, giving out each line that ends (a longer line in pieces). */
static void follow_text(struct follow_part *part, unsigned s, const char *p, size_t n)
{
    struct follow_line *fl = &part->lines[s];

    while (n > 0 && !part->f->stopping) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        size_t room = part->prefix_len + DOCKER_FOLLOW_LINE_MAX - fl->len;

        if (take > room) {
            memcpy(fl->buf + fl->len, p, room);
            fl->len += room;
            p += room;
            n -= room;
            follow_emit(part, s);
            continue;
        }
        memcpy(fl->buf + fl->len, p, take);
        fl->len += take;
        if (!nl)
            return;
        p += take + 1;
        n -= take + 1;
        follow_emit(part, s);
    }
}

/* A piece of a container's stream: the multiplexed format's frames (8-byte headers) or,
 * for a TTY, raw text. */
static void on_follow_data(void *data, const char *buf, size_t len)
{
    struct follow_part *part = data;
    struct docker_follow *f = part->f;

    if (f->stopping)
        return;
    f->in_data = true;
    if (part->muxed < 0 && len > 0)
        part->muxed = (unsigned char)buf[0] <= 2;
    while (len > 0 && !f->stopping) {
        size_t take;

        if (!part->muxed) {
            follow_text(part, 1, buf, len);
            break;
        }
        if (part->frame_left == 0) {
            take = 8 - part->header_len < len ? 8 - part->header_len : len;
            memcpy(part->header + part->header_len, buf, take);
            part->header_len += take;
            buf += take;
            len -= take;
            if (part->header_len < 8)
                break;
            part->header_len = 0;
            part->stream = part->header[0] > 2 ? 1 : part->header[0];
            part->frame_left = frame_size(part->header);
            continue;
        }
        take = part->frame_left < len ? part->frame_left : len;
        follow_text(part, part->stream, buf, take);
        part->frame_left -= take;
        buf += take;
        len -= take;
    }
    f->in_data = false;
}

static void on_follow_closed(uv_handle_t *h)
{
    struct docker_follow *f = h->data;

    for (size_t i = 0; i < f->n_parts; i++) {
        fetch_cancel(f->parts[i].fetch);
        for (unsigned s = 0; s < 3; s++)
            free(f->parts[i].lines[s].buf);
    }
    free(f->parts);
    free(f->error);
    free(f);
}

/* No callback after this; the memory goes once the loop has closed the timer. */
static void follow_release(struct docker_follow *f)
{
    f->stopping = true;
    if (!f->in_data)
        for (size_t i = 0; i < f->n_parts; i++) {
            fetch_cancel(f->parts[i].fetch);
            f->parts[i].fetch = NULL;
        }
    uv_close((uv_handle_t *)&f->closer, on_follow_closed);
}

/* A container's stream ended (the container stopped, or the engine went): its last line
 * goes out, and when it was the last stream, the follow ends. */
static void on_follow_end(void *data, const struct fetch_result *res)
{
    struct follow_part *part = data;
    struct docker_follow *f = part->f;

    part->fetch = NULL;
    if (f->stopping)
        return;
    if (!f->error && (res->error || res->status != 200))
        f->error = res->error
                       ? xasprintf("its logs stream failed: %s", res->error)
                       : xasprintf("its logs stream failed: the engine answered %ld", res->status);
    for (unsigned s = 0; s < 3 && !f->stopping; s++)
        if (part->lines[s].len > part->prefix_len)
            follow_emit(part, s);
    if (f->stopping || --f->n_open > 0)
        return;
    f->stopping = true;
    f->end(f->data, f->error ? f->error : "its containers stopped");
    follow_release(f);
}

int docker_follow(struct docker *d, uv_loop_t *loop, const char *project, unsigned tail,
                  docker_follow_line_fn line, docker_follow_end_fn end, void *data,
                  struct docker_follow **ret)
{
    struct docker_follow *f = xcalloc(1, sizeof(*f));
    int r = 0;

    f->line = line;
    f->end = end;
    f->data = data;
    f->parts = xcalloc(docker_count(d) + 1, sizeof(*f->parts));
    uv_timer_init(loop, &f->closer);
    f->closer.data = f;
    for (size_t i = 0; i < docker_count(d) && r == 0; i++) {
        const struct docker_container *c = docker_at(d, i);
        struct follow_part *part = &f->parts[f->n_parts];
        struct fetch_request req = {.unix_socket = docker_socket(d), .on_data = on_follow_data};
        const char *service = *c->service ? c->service : c->id;
        char *u;

        if (strcmp(c->project, project) != 0)
            continue;
        part->f = f;
        part->muxed = -1;
        part->prefix_len = strlen(service) + 3;
        for (unsigned s = 0; s < 3; s++) {
            part->lines[s].buf = xmalloc(part->prefix_len + DOCKER_FOLLOW_LINE_MAX);
            memcpy(part->lines[s].buf, service, part->prefix_len - 3);
            memcpy(part->lines[s].buf + part->prefix_len - 3, " | ", 3);
            part->lines[s].len = part->prefix_len;
        }
        f->n_parts++;
        u = xasprintf("http://docker/containers/%s/logs?follow=1&stdout=1&stderr=1&tail=%u", c->id,
                      tail);
        req.url = u;
        r = fetcher_request(docker_fetcher(d), &req, on_follow_end, part, &part->fetch);
        free(u);
        if (r == 0)
            f->n_open++;
    }
    if (r < 0 || f->n_open == 0) {
        follow_release(f);
        return r < 0 ? r : -ENOENT;
    }
    *ret = f;
    return 0;
}

void docker_follow_free(struct docker_follow *f)
{
    if (f && !f->stopping)
        follow_release(f);
}
