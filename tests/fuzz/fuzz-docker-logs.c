/* libFuzzer target for the Docker log-stream demultiplexer and the merge of containers:
 * docker_logs.c is compiled into this target (its exported names renamed, so that they do
 * not clash with the library's copy) to reach its private parts, and each container's
 * answer goes through on_container_logs() as the engine's would.
 *
 * The input: tail (2 bytes, big endian), the number of containers (1 byte, 1 to 4), then
 * for each container one byte (its service: the low 2 bits; 0x80: the engine answers
 * 404) and its body's length (4 bytes, big endian) before the body: multiplexed frames
 * (8-byte headers) or raw text. A short input leaves the last containers empty. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define docker_log_lines   fuzz_docker_log_lines
#define docker_logs        fuzz_docker_logs
#define docker_logs_cancel fuzz_docker_logs_cancel
#include "drivers/docker_logs.c"

#define CONTAINERS_MAX 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const services[] = {"web", "db", "web", "worker-1"};
static const char *const ids[] = {"c0ffee01", "c0ffee02", "c0ffee03", "c0ffee04"};

struct outcome {
    size_t expected; /* min(tail, lines) */
    bool called;
};

/* Each line is "SERVICE | text" of one of the services, and there are as many as the
 * tail asks for, or all of them. */
static void on_done(void *data, char **lines, const char *error)
{
    struct outcome *o = data;
    size_t n = 0;

    if (o->called || !lines || error)
        abort();
    o->called = true;
    for (; lines[n]; n++) {
        bool known = false;

        for (size_t s = 0; s < sizeof(services) / sizeof(services[0]); s++) {
            size_t len = strlen(services[s]);

            if (strncmp(lines[n], services[s], len) == 0 && strncmp(lines[n] + len, " | ", 3) == 0)
                known = true;
        }
        if (!known)
            abort();
    }
    if (n != o->expected)
        abort();
    strv_free(lines);
}

/* Counts the lines of a body, checking that each lies within the body or is a copy. */
struct count {
    const char *body;
    size_t len, lines, bytes;
};

static void count_line(void *data, const char *line, size_t len)
{
    struct count *c = data;

    if (line >= c->body && line <= c->body + c->len && line + len > c->body + c->len)
        abort();
    c->lines++;
    c->bytes += len;
    if (c->bytes > c->len) /* the lines are never more than the body */
        abort();
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct docker_logs *l;
    struct outcome o = {0};
    size_t at = 3, n, lines = 0;
    char *bodies[CONTAINERS_MAX] = {0};

    if (size < 3 || size > 4 * 1024 * 1024)
        return 0;
    l = xcalloc(1, sizeof(*l));
    l->done = on_done;
    l->data = &o;
    l->tail = (unsigned)data[0] << 8 | data[1];
    n = (size_t)(data[2] % CONTAINERS_MAX) + 1;
    l->parts = xcalloc(n, sizeof(*l->parts));
    l->n_parts = l->n_pending = n;

    for (size_t i = 0; i < n; i++) {
        struct logs_part *part = &l->parts[i];
        struct fetch_result res = {.status = 200};
        unsigned which = 0;
        size_t len = 0;

        if (at < size) {
            which = data[at++];
            if (at + 4 <= size) {
                len = be32(data + at);
                at += 4;
            }
            if (len > size - at)
                len = size - at;
        }
        part->l = l;
        part->service = xstrdup(services[which & 3]);
        part->id = xstrdup(ids[i]);
        /* Bodies arrive NUL-terminated (fetch.h). */
        bodies[i] = xmalloc(len + 1);
        memcpy(bodies[i], data + at, len);
        bodies[i][len] = '\0';
        at += len;
        if (which & 0x80) {
            res.status = 404; /* removed meanwhile: no lines */
        } else {
            struct count c = {bodies[i], len, 0, 0};

            docker_log_lines(bodies[i], len, count_line, &c);
            lines += c.lines;
        }
        res.body = bodies[i];
        res.body_len = len;
        o.expected = lines < l->tail ? lines : l->tail;
        /* The last answer merges and frees l. */
        on_container_logs(part, &res);
    }
    if (!o.called)
        abort();
    for (size_t i = 0; i < n; i++)
        free(bodies[i]);
    return 0;
}
