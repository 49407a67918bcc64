/* GET /metrics: see metrics.h. Each scrape renders a page from a snapshot of what the
 * core holds when its turn comes; only what the core does not keep is kept here: start
 * durations (from the event hub) and the HTTP requests (from the server's done function).
 * Scrapes take turns in one queue, one slice of the loop's time per loop pass in all, so
 * that clients scraping together never hold the loop longer than one alone. */
#include <inttypes.h>
#include <string.h>

#include "core/lifecycle.h"
#include "http/metrics.h"
#include "lib/alloc.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/procstat.h"
#include "lib/promtext.h"
#include "lib/strmap.h"
#include "version.h"

#define ROUTE_OTHER "other" /* a path no route takes, or a request refused before routing */
#define ROUTES_MAX  64      /* patterns are static strings: a handful of routes and mounts */
#define CODES_MAX   64      /* status codes counted per route, the last slot "other" */
#define CODE_OTHER  0       /* the codes of a route past CODES_MAX - 1 */

/* A page is rendered in slices of about SLICE_US of loop time (the clock read every
 * SLICE_CHECK_ROWS rows), the loop serving other requests in between. */
#define SLICE_US          200
#define SLICE_CHECK_ROWS  16
#define SCRAPE_TIMEOUT_MS 30000
#define SCRAPES_MAX       8    /* pages rendered or waiting their turn; more: 503 */
#define SCRAPE_RETRY_S    "1"  /* the Retry-After of that 503 */
#define ROW_BYTES_GUESS   1800 /* what a service takes of a page, before a page was made */

/* Start to healthy: from a process that answers at once to a model that loads for minutes. */
static const struct prom_bucket start_buckets[] = {
    {"0.01", 10000},      {"0.05", 50000},    {"0.1", 100000},      {"0.5", 500000},
    {"1.0", 1000000},     {"2.5", 2500000},   {"5.0", 5000000},     {"10.0", 10000000},
    {"30.0", 30000000},   {"60.0", 60000000}, {"120.0", 120000000}, {"300.0", 300000000},
    {"600.0", 600000000},
};

/* An API request: a status read in well under a millisecond, a start that waits minutes. */
static const struct prom_bucket request_buckets[] = {
    {"0.0005", 500},      {"0.001", 1000},    {"0.005", 5000},    {"0.01", 10000},
    {"0.05", 50000},      {"0.1", 100000},    {"0.5", 500000},    {"1.0", 1000000},
    {"5.0", 5000000},     {"10.0", 10000000}, {"30.0", 30000000}, {"60.0", 60000000},
    {"300.0", 300000000},
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* What one service's start durations were, and when its current start began. */
struct service_stats {
    struct prom_histogram start;
    uint64_t starting_since_us; /* when its "starting" event came (uv_hrtime); 0: none */
};

struct code_count {
    unsigned code;
    uint64_t count;
};

/* The requests of one route. */
struct route_stats {
    const char *route; /* static */
    struct prom_histogram duration;
    struct code_count codes[CODES_MAX];
    size_t n_codes;
};

struct scrape;
struct row;

struct metrics {
    uv_loop_t *loop;
    struct registry *reg;
    struct supervisor *sup;
    struct events *hub;
    struct events_sub *sub;
    struct strmap *services; /* name -> struct service_stats */
    struct route_stats routes[ROUTES_MAX];
    size_t n_routes;
    size_t page_size_hint;           /* the last page's size: the next one's buffer */
    uv_idle_t idle;                  /* while scrapes wait: one slice of the first each loop pass */
    struct prom_histogram no_starts; /* the start durations of a service not seen start */
    /* The snapshot of the scrape being rendered (one at a time: the queue's first), kept
     * from page to page so that taking one allocates nothing. */
    struct row *rows;
    size_t rows_cap;
    char *names; /* the rows' names, one after the other */
    size_t names_cap;
    struct scrape *head, *tail;
    size_t n_scrapes;
};

static struct service_stats *service_stats(struct metrics *m, const char *name)
{
    struct service_stats *s = strmap_get(m->services, name);

    if (!s) {
        s = xcalloc(1, sizeof(*s));
        prom_histogram_init(&s->start, start_buckets, N_OF(start_buckets));
        strmap_put(m->services, name, s);
    }
    return s;
}

/* A start runs from its "starting" event to its "running" one (the first passing check,
 * or the spawn for a service without one); any other state ends it unobserved. The hub
 * delivers events as they are published: the monotonic clock at delivery times them. */
static void on_state(struct metrics *m, const struct event *ev)
{
    const char *to = json_string_value(json_object_get(ev->data, "to"));
    uint64_t now_us = uv_hrtime() / 1000;
    struct service_stats *s;

    if (!to || !registry_find(m->reg, ev->service))
        return; /* a service already gone keeps no stats */
    s = service_stats(m, ev->service);
    if (strcmp(to, "running") == 0 && s->starting_since_us > 0)
        prom_histogram_observe(&s->start, now_us - s->starting_since_us);
    s->starting_since_us = strcmp(to, "starting") == 0 ? now_us : 0;
}

static void on_event(void *data, const struct event *ev)
{
    struct metrics *m = data;
    json_t *name;
    size_t i;

    if (ev->kind == EVENT_STATE && ev->service)
        on_state(m, ev);
    if (ev->kind != EVENT_DISCOVERY)
        return;
    json_array_foreach(json_object_get(ev->data, "removed"), i, name)
    {
        free(strmap_remove(m->services, json_string_value(name)));
    }
}

struct metrics *metrics_new(uv_loop_t *loop, struct registry *reg, struct supervisor *sup,
                            struct events *hub)
{
    struct metrics *m = xcalloc(1, sizeof(*m));

    m->loop = loop;
    m->reg = reg;
    m->sup = sup;
    m->hub = hub;
    m->services = strmap_new();
    m->sub = events_subscribe(hub, on_event, m);
    uv_idle_init(loop, &m->idle);
    m->idle.data = m;
    prom_histogram_init(&m->no_starts, start_buckets, N_OF(start_buckets));
    return m;
}

/* --- requests ------------------------------------------------------------------------ */

static struct route_stats *route_stats(struct metrics *m, const char *route)
{
    for (size_t i = 0; i < m->n_routes; i++)
        if (m->routes[i].route == route || strcmp(m->routes[i].route, route) == 0)
            return &m->routes[i];
    if (m->n_routes == ROUTES_MAX)
        fatal("more than %d routes counted: route patterns must be static", ROUTES_MAX);
    struct route_stats *r = &m->routes[m->n_routes++];
    r->route = route;
    prom_histogram_init(&r->duration, request_buckets, N_OF(request_buckets));
    return r;
}

void metrics_request_done(struct metrics *m, struct request *req, unsigned status)
{
    const char *route = request_route(req) ? request_route(req) : ROUTE_OTHER;
    struct route_stats *r = route_stats(m, route);
    uint64_t ns = uv_hrtime() - request_begun_ns(req);
    size_t i;

    if (status == 0)
        status = SERVER_STATUS_CLIENT_CLOSED;
    for (i = 0; i < r->n_codes && r->codes[i].code != status; i++)
        ;
    if (i == r->n_codes) {
        /* Statuses are the server's own, a few dozen at most: past the table, "other". */
        if (r->n_codes == CODES_MAX - 1)
            status = CODE_OTHER;
        for (i = 0; i < r->n_codes && r->codes[i].code != status; i++)
            ;
        if (i == r->n_codes)
            r->codes[r->n_codes++].code = status;
    }
    r->codes[i].count++;
    prom_histogram_observe(&r->duration, ns / 1000);
}

/* --- the page ------------------------------------------------------------------------ */

/* One service as the page shows it, copied when the scrape's turn comes: a rescan between
 * two slices of the page changes nothing of it. (Its start durations are read when their
 * family is written: each histogram whole.) */
struct row {
    const char *name; /* in the metrics' names */
    enum service_state state;
    bool up;      /* running and healthy; running, without a health check */
    bool healthy; /* is_healthy */
    bool gpu;     /* gpu_required */
    bool holder;  /* it holds the GPU */
    bool checked; /* its health was checked */
    uint64_t restarts_total;
    uint64_t health_latency_us;
};

/* A page being rendered, slice by slice, for one request, or waiting its turn. */
struct scrape {
    struct metrics *m;
    struct request *req;
    struct scrape *next; /* in the metrics' queue */
    bool snapshot_taken;
    struct prom p;
    const struct row *rows; /* the metrics' snapshot, once taken */
    size_t n_rows;
    size_t family, at; /* the next row to render: of which family, which row */
    size_t queue_length, manifest_errors;
    unsigned slices;           /* how many so far */
    uint64_t longest_slice_ns; /* the most loop time one took... */
    uint64_t longest_cpu_ns;   /* ...and the most CPU time (less time preempted) */
};

static void service_sample(struct prom *p, const char *family, const struct row *r)
{
    prom_sample(p, family);
    prom_label(p, "service", r->name);
}

static void write_up(struct prom *p, const char *family, const struct row *r,
                     const struct metrics *m)
{
    service_sample(p, family, r);
    prom_value(p, r->up);
}

static void write_state(struct prom *p, const char *family, const struct row *r,
                        const struct metrics *m)
{
    for (enum service_state s = STATE_STOPPED; s <= STATE_FAILED; s++) {
        service_sample(p, family, r);
        prom_label(p, "state", lifecycle_state_name(s));
        prom_value(p, r->state == s);
    }
}

static void write_healthy(struct prom *p, const char *family, const struct row *r,
                          const struct metrics *m)
{
    service_sample(p, family, r);
    prom_value(p, r->healthy);
}

static void write_restarts(struct prom *p, const char *family, const struct row *r,
                           const struct metrics *m)
{
    service_sample(p, family, r);
    prom_value(p, r->restarts_total);
}

static void write_start_duration(struct prom *p, const char *family, const struct row *r,
                                 const struct metrics *m)
{
    const struct service_stats *stats = strmap_get(m->services, r->name);

    prom_histogram_write(p, family, "service", r->name, stats ? &stats->start : &m->no_starts);
}

static void write_health_latency(struct prom *p, const char *family, const struct row *r,
                                 const struct metrics *m)
{
    service_sample(p, family, r);
    if (r->checked)
        prom_value_us(p, r->health_latency_us);
    else
        prom_value_nan(p);
}

/* Only the GPU services: 1 for the holder. */
static void write_gpu_holder(struct prom *p, const char *family, const struct row *r,
                             const struct metrics *m)
{
    if (!r->gpu)
        return;
    service_sample(p, family, r);
    prom_value(p, r->holder);
}

/* The families with a series (or several) per service, in the page's order. */
static const struct row_family {
    const char *name, *type, *help;
    void (*write)(struct prom *p, const char *family, const struct row *r, const struct metrics *m);
} row_families[] = {
    {"nanny_service_up", "gauge",
     "1 when the service is running and healthy (running, without a health check)", write_up},
    {"nanny_service_state", "gauge", "1 for the state the service is in, 0 for the others",
     write_state},
    {"nanny_service_healthy", "gauge",
     "1 when the service's last health check passed while running", write_healthy},
    {"nanny_service_restarts_total", "counter",
     "Automatic restarts of the service since the daemon began", write_restarts},
    {"nanny_service_start_duration_seconds", "histogram",
     "Time from a start to the service running (its first passing health check)",
     write_start_duration},
    {"nanny_service_health_latency_seconds", "gauge",
     "How long the service's last health check took (NaN before the first)", write_health_latency},
    {"nanny_gpu_holder", "gauge",
     "1 for the GPU service that holds the GPU, 0 for the other GPU services", write_gpu_holder},
};

/* One gauge without labels. */
static void write_gauge(struct prom *p, const char *name, const char *help, uint64_t v)
{
    prom_family(p, name, "gauge", help);
    prom_sample(p, name);
    prom_value(p, v);
}

static void write_daemon(struct prom *p, const struct scrape *sc)
{
    write_gauge(p, "nanny_gpu_queue_length", "Starts waiting for the GPU", sc->queue_length);
    write_gauge(p, "nanny_services", "Services discovered in the services folder", sc->n_rows);
    write_gauge(p, "nanny_manifest_errors",
                "Folders whose service.yaml is invalid (GET /services lists them)",
                sc->manifest_errors);
    prom_family(p, "nanny_build_info", "gauge", "The daemon's version");
    prom_sample(p, "nanny_build_info");
    prom_label(p, "version", NANNY_VERSION);
    prom_value(p, 1);
}

static void write_requests(struct prom *p, const struct metrics *m)
{
    char code[16];

    prom_family(p, "nanny_http_requests_total", "counter",
                "HTTP requests answered, by route pattern and status code");
    for (size_t i = 0; i < m->n_routes; i++)
        for (size_t c = 0; c < m->routes[i].n_codes; c++) {
            if (m->routes[i].codes[c].code == CODE_OTHER)
                snprintf(code, sizeof(code), "other");
            else
                snprintf(code, sizeof(code), "%u", m->routes[i].codes[c].code);
            prom_sample(p, "nanny_http_requests_total");
            prom_label(p, "route", m->routes[i].route);
            prom_label(p, "code", code);
            prom_value(p, m->routes[i].codes[c].count);
        }
    prom_family(p, "nanny_http_request_duration_seconds", "histogram",
                "Time from a request's headers to the end of its answer, by route pattern");
    for (size_t i = 0; i < m->n_routes; i++)
        prom_histogram_write(p, "nanny_http_request_duration_seconds", "route", m->routes[i].route,
                             &m->routes[i].duration);
}

/* Prometheus' standard process metrics, as its client libraries name them. */
static void write_process(struct prom *p)
{
    struct procstat ps;
    int r = procstat_read(&ps);

    if (r < 0)
        log_debug("metrics: cannot read /proc/self: %s", strerror(-r));
    prom_family(p, "process_cpu_seconds_total", "counter", "User and system CPU time spent");
    prom_sample(p, "process_cpu_seconds_total");
    prom_value_us(p, ps.cpu_us);
    write_gauge(p, "process_resident_memory_bytes", "Resident memory size", ps.resident_bytes);
    write_gauge(p, "process_virtual_memory_bytes", "Virtual memory size", ps.virtual_bytes);
    write_gauge(p, "process_open_fds", "Open file descriptors", ps.open_fds);
    write_gauge(p, "process_max_fds", "The limit on open file descriptors", ps.max_fds);
    write_gauge(p, "process_start_time_seconds",
                "When the process began, in seconds since the Unix epoch", ps.start_time_s);
}

/* Makes *buf hold n items of size bytes, growing it (never shrinking) as needed. */
static void *room(void *buf, size_t *cap, size_t n, size_t size)
{
    if (n > *cap) {
        *cap = n + n / 4 + 16;
        buf = xrealloc(buf, *cap * size);
    }
    return buf;
}

/* Copies what the page shows of every service now into the metrics' snapshot, and makes
 * room for the page. */
static void scrape_snapshot(struct scrape *sc)
{
    struct metrics *m = sc->m;
    json_t *gpu = supervisor_gpu(m->sup);
    const char *holder = json_string_value(json_object_get(gpu, "holder"));
    size_t n = registry_count(m->reg), names = 0;
    char *name;

    for (size_t i = 0; i < n; i++)
        names += strlen(registry_at(m->reg, i)->name) + 1;
    m->rows = room(m->rows, &m->rows_cap, n, sizeof(*m->rows));
    m->names = room(m->names, &m->names_cap, names, 1);
    name = m->names;
    for (size_t i = 0; i < n; i++) {
        const struct service *svc = registry_at(m->reg, i);
        const struct service_status *st = supervisor_status(m->sup, svc);
        const struct manifest *mf = svc->manifest;
        size_t len = strlen(svc->name) + 1;

        memcpy(name, svc->name, len);
        m->rows[i] = (struct row){
            .name = name,
            .state = st->state,
            .healthy = st->is_healthy,
            .up = st->state == STATE_RUNNING && (st->is_healthy || (mf && !mf->health_enabled)),
            .gpu = mf && mf->gpu_required,
            .holder = holder && strcmp(holder, svc->name) == 0,
            .checked = st->health.checked,
            .restarts_total = st->restarts_total,
            .health_latency_us = st->health.latency_ms * 1000,
        };
        name += len;
    }
    sc->rows = m->rows;
    sc->n_rows = n;
    sc->queue_length = json_array_size(json_object_get(gpu, "queue"));
    sc->manifest_errors = json_array_size(registry_errors(m->reg));
    json_decref(gpu);
    prom_reserve(&sc->p, m->page_size_hint > 0 ? m->page_size_hint + m->page_size_hint / 8
                                               : (n + 1) * ROW_BYTES_GUESS);
    sc->snapshot_taken = true;
}

static bool over_budget(uint64_t begun)
{
    return uv_hrtime() - begun > SLICE_US * 1000;
}

/* Goes on with the page from where it stopped until SLICE_US after begun: the snapshot
 * first, then the services' families row by row, then the rest. True once it is whole. */
static bool scrape_render(struct scrape *sc, uint64_t begun)
{
    if (!sc->snapshot_taken) {
        scrape_snapshot(sc);
        if (over_budget(begun))
            return false;
    }
    for (; sc->family < N_OF(row_families); sc->family++, sc->at = 0) {
        const struct row_family *f = &row_families[sc->family];
        if (sc->at == 0)
            prom_family(&sc->p, f->name, f->type, f->help);
        for (; sc->at < sc->n_rows; sc->at++) {
            if (sc->at % SLICE_CHECK_ROWS == SLICE_CHECK_ROWS - 1 && over_budget(begun))
                return false;
            f->write(&sc->p, f->name, &sc->rows[sc->at], sc->m);
        }
    }
    if (sc->family == N_OF(row_families)) {
        sc->family++; /* the rest has its own slice when this one is spent */
        if (over_budget(begun))
            return false;
    }
    write_daemon(&sc->p, sc);
    write_requests(&sc->p, sc->m);
    write_process(&sc->p);
    return true;
}

static void scrape_free(struct scrape *sc)
{
    prom_free(&sc->p);
    free(sc);
}

/* Answers with the whole page. */
static void scrape_reply(struct scrape *sc)
{
    size_t len;
    char *text = prom_finish(&sc->p, &len);

    sc->m->page_size_hint = len;
    request_reply_owned(sc->req, MHD_HTTP_OK,
                        sc->p.openmetrics ? PROM_OPENMETRICS_TYPE : PROM_TEXT_TYPE, text, len);
}

/* One slice of the page, answered when it is whole, and timed whole (the snapshot, the
 * rendering, the answer): true once answered. */
static bool scrape_slice(struct scrape *sc)
{
    uint64_t begun = uv_hrtime(), cpu = thread_cpu_ns(), took;
    bool done = scrape_render(sc, begun);

    if (done)
        scrape_reply(sc);
    took = uv_hrtime() - begun;
    cpu = thread_cpu_ns() - cpu;
    sc->slices++;
    if (took > sc->longest_slice_ns)
        sc->longest_slice_ns = took;
    if (cpu > sc->longest_cpu_ns)
        sc->longest_cpu_ns = cpu;
    if (done)
        log_debug("metrics: a page of %zu bytes for %zu services in %u slices, the longest "
                  "%" PRIu64 " us (%" PRIu64 " us on the CPU)",
                  sc->m->page_size_hint, sc->n_rows, sc->slices, sc->longest_slice_ns / 1000,
                  sc->longest_cpu_ns / 1000);
    return done;
}

/* Takes sc out of the queue and frees it. */
static void scrape_remove(struct scrape *sc)
{
    struct metrics *m = sc->m;
    struct scrape **at = &m->head;

    while (*at != sc)
        at = &(*at)->next;
    *at = sc->next;
    if (m->tail == sc) {
        m->tail = NULL;
        for (struct scrape *t = m->head; t; t = t->next)
            m->tail = t;
    }
    m->n_scrapes--;
    if (!m->head)
        uv_idle_stop(&m->idle);
    scrape_free(sc);
}

/* One slice of the first page waiting, each loop pass. */
static void on_idle(uv_idle_t *h)
{
    struct metrics *m = h->data;

    if (scrape_slice(m->head))
        scrape_remove(m->head);
}

/* The client went, its deadline passed, or the daemon stops: the page is dropped. */
static void on_scrape_abort(void *data)
{
    scrape_remove(data);
}

/* 503 with Retry-After: too many pages are being rendered. */
static void reply_busy(struct request *req)
{
    json_t *body = json_pack("{s:s, s:s}", "error", "busy", "message",
                             "too many scrapes of /metrics at once: try again in a second");
    struct MHD_Response *resp = server_json_response(body);

    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, SCRAPE_RETRY_S);
    request_reply_response(req, MHD_HTTP_SERVICE_UNAVAILABLE, resp);
    MHD_destroy_response(resp);
    json_decref(body);
}

void metrics_handle(void *data, struct request *req)
{
    struct metrics *m = data;
    struct scrape *sc;

    if (m->n_scrapes == SCRAPES_MAX) {
        reply_busy(req);
        return;
    }
    sc = xcalloc(1, sizeof(*sc));
    sc->m = m;
    sc->req = req;
    prom_init(
        &sc->p,
        request_header_lists(req, MHD_HTTP_HEADER_ACCEPT, "application/openmetrics-text", false),
        0);
    /* Alone, it begins at once; a page that fits in one slice is answered now. */
    if (!m->head && scrape_slice(sc)) {
        scrape_free(sc);
        return;
    }
    request_suspend(req, SCRAPE_TIMEOUT_MS);
    request_set_abort(req, on_scrape_abort, sc);
    if (m->tail)
        m->tail->next = sc;
    else
        m->head = sc;
    m->tail = sc;
    m->n_scrapes++;
    uv_idle_start(&m->idle, on_idle);
}

static void on_metrics_closed(uv_handle_t *h)
{
    free(h->data);
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    while (m->head) { /* none: the server's end aborted them */
        struct scrape *sc = m->head;
        m->head = sc->next;
        scrape_free(sc);
    }
    events_unsubscribe(m->hub, m->sub);
    strmap_free(m->services, free);
    free(m->rows);
    free(m->names);
    uv_close((uv_handle_t *)&m->idle, on_metrics_closed);
}
