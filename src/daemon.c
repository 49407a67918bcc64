/* The daemon's wiring: one libuv loop owns the HTTP server, the registry, the folder
 * watcher, the outbound HTTP client and the signal handlers. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/audit.h"
#include "core/demand.h"
#include "core/events.h"
#include "core/inventory.h"
#include "core/keys.h"
#include "core/registry.h"
#include "core/state.h"
#include "core/supervisor.h"
#include "core/watch.h"
#include "daemon.h"
#include "drivers/proc.h"
#include "http/api.h"
#include "http/dashboard.h"
#include "http/gate.h"
#include "http/gpus.h"
#include "http/mcp.h"
#include "http/proxy.h"
#include "http/metrics.h"
#include "http/sse.h"
#include "http/server.h"
#include "lib/alloc.h"
#include "lib/fetch.h"
#include "lib/log.h"
#include "version.h"

#define DRAIN_TIMEOUT_MS         5000
#define DRAIN_CHECK_MS           10
#define SERVICES_STOP_TIMEOUT_MS (5 * 60 * 1000) /* --stop-services-on-exit, at most */

struct daemon {
    uv_loop_t loop;
    const struct config *config;
    struct registry *reg;
    struct api *api;
    struct gate *gate;
    struct audit *audit;
    struct server *server;
    struct watch *watch;
    struct fetcher *fetcher;
    struct supervisor *supervisor;
    struct events *hub;
    struct sse *sse;
    struct mcp *mcp;
    struct proxy *proxy;
    struct demand *demand;
    struct metrics *metrics;
    struct dashboard *dashboard;
    struct inventory *inventory;
    struct gpus_surface gpus;
    struct proc_reaper *reaper;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t drain;
    uint64_t drain_deadline;
    uint64_t services_deadline; /* with --stop-services-on-exit */
    bool stopping;
};

/* GET /events: what the gate asks of it. */
static const struct gate_route events_route = {NEED_READ, "events", false};

/* /mcp: a key that may read; each tool call then needs its tool's role. */
static const struct gate_route mcp_route = {NEED_READ, "mcp", false};
/* /s/NAME/...: the proxy, for user keys and up. */
static const struct gate_route proxy_route = {NEED_USE, "proxy", false};

/* GET /metrics: a key that may read (Prometheus sends one as a bearer token). */
static const struct gate_route metrics_route = {NEED_READ, "metrics", false};

/* The server's done function: the gate audits the request, the metrics count it. */
static void on_request_done(void *data, struct request *req, unsigned status)
{
    struct daemon *d = data;

    gate_on_done(d->gate, req, status);
    if (d->metrics)
        metrics_request_done(d->metrics, req, status);
}

/* GET /gpus: a key that may read. */
static const struct gate_route gpus_route = {NEED_READ, "gpus", false};

/* The box's GPUs as placement counts them, for the supervisor. */
static void daemon_set_gpus(struct daemon *d)
{
    struct placement_gpu box[PLACEMENT_GPUS_MAX];

    supervisor_set_gpus(d->supervisor, box, inventory_box(d->inventory, box, PLACEMENT_GPUS_MAX));
}

/* The inventory read something placement counts differently (a GPU's memory, what
 * foreign processes use). */
static void on_gpus_changed(void *data)
{
    struct daemon *d = data;

    if (d->supervisor)
        daemon_set_gpus(d);
}

/* NVML listed the processes on the GPUs again: what each service uses of them. */
static void on_gpu_procs(void *data, const struct inventory_proc *procs, size_t n)
{
    struct daemon *d = data;

    if (d->supervisor)
        supervisor_gpu_usage(d->supervisor, procs, n);
}

/* GET / and its files: no key (the page then asks for one and sends it to the API). */
static const struct gate_route dashboard_route = {NEED_NOTHING, "dashboard", false};

static void daemon_teardown(struct daemon *d)
{
    uv_timer_stop(&d->drain);
    uv_close((uv_handle_t *)&d->drain, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
    sse_free(d->sse); /* its streams first: they end with the server */
    d->sse = NULL;
    proxy_close_tunnels(d->proxy); /* WebSockets let go of their connections first */
    server_free(d->server);
    d->server = NULL;
    mcp_free(d->mcp); /* after the server: its calls ended with their requests */
    d->mcp = NULL;
    proxy_free(d->proxy); /* after the server: its requests ended with it */
    d->proxy = NULL;
    demand_free(d->demand); /* after the proxy: its held requests were let go of */
    d->demand = NULL;
    metrics_free(d->metrics); /* after the server: its scrapes and requests ended */
    d->metrics = NULL;
    dashboard_free(d->dashboard);
    d->dashboard = NULL;
    watch_free(d->watch);
    d->watch = NULL;
    inventory_free(d->inventory); /* a read in progress ends on its worker */
    d->inventory = NULL;
    supervisor_free(d->supervisor); /* lets go of the services: they keep running */
    d->supervisor = NULL;
    fetcher_free(d->fetcher);
    d->fetcher = NULL;
    proc_reaper_free(d->reaper);
    d->reaper = NULL;
}

/* Waits for the requests in flight to be answered, with a deadline. */
static void on_drain(uv_timer_t *t)
{
    struct daemon *d = t->data;

    uint64_t now = uv_now(&d->loop);
    bool requests_done = server_requests_in_flight(d->server) == 0 || now >= d->drain_deadline;
    bool services_done = !d->config->stop_services_on_exit || !supervisor_busy(d->supervisor) ||
                         now >= d->services_deadline;

    if (requests_done && services_done) {
        if (server_requests_in_flight(d->server) > 0)
            log_warning("stopping with %u requests unanswered",
                        server_requests_in_flight(d->server));
        if (d->config->stop_services_on_exit && supervisor_busy(d->supervisor))
            log_warning("stopping with services still running");
        daemon_teardown(d);
        return;
    }
    uv_timer_start(&d->drain, on_drain, DRAIN_CHECK_MS, 0);
}

/* SIGTERM or SIGINT: stop accepting, answer what is in flight, then close; a second
 * signal closes at once. */
static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;

    if (d->stopping) {
        log_info("second %s: stopping now", strsignal(signum));
        uv_timer_stop(&d->drain);
        d->drain_deadline = 0;
        d->services_deadline = 0;
        on_drain(&d->drain);
        return;
    }
    d->stopping = true;
    if (d->config->stop_services_on_exit)
        log_info("%s: stopping the services, then the daemon", strsignal(signum));
    else
        log_info("%s: stopping (services keep running)", strsignal(signum));
    server_quiesce(d->server);
    supervisor_shutdown(d->supervisor, d->config->stop_services_on_exit);
    d->drain_deadline = uv_now(&d->loop) + DRAIN_TIMEOUT_MS;
    d->services_deadline = uv_now(&d->loop) + SERVICES_STOP_TIMEOUT_MS;
    on_drain(&d->drain);
}

/* Puts the keys file in force: at start (a bad file stops the daemon: -1) or on SIGHUP (a
 * bad file keeps the keys in force). A missing default file means no keys, but never takes
 * keys away once there were some. */
static int daemon_load_keys(struct daemon *d, bool at_start)
{
    const struct config *c = d->config;
    struct keys *keys;
    char err[1024];
    int r = keys_load(c->keys_file, &keys, err, sizeof(err));

    if (r == -ENOENT && !c->keys_file_given && !gate_has_keys(d->gate)) {
        if (at_start)
            log_info("no API keys (%s does not exist): every client that reaches the API may "
                     "do everything",
                     c->keys_file);
        return 0;
    }
    if (r < 0 && at_start) {
        log_error("%s", err);
        return -1;
    }
    if (r < 0) {
        log_error("the API keys were not reloaded, those in force stay: %s", err);
        return 0;
    }
    log_info("%s %zu API keys from %s", at_start ? "loaded" : "reloaded", keys->n, c->keys_file);
    gate_set_keys(d->gate, keys);
    return 0;
}

static void on_hangup(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;

    log_info("SIGHUP: rescanning %s, reloading the API keys", registry_root(d->reg));
    registry_rescan(d->reg, NULL, NULL);
    daemon_load_keys(d, false);
    if (d->config->tls_cert) {
        char err[1024];
        if (server_reload_tls(d->server, err, sizeof(err)) < 0)
            log_error("SIGHUP: %s; still serving the certificate loaded before", err);
        else
            log_info("SIGHUP: reloaded the TLS certificate (%s)", server_tls_describe(d->server));
    }
}

static void on_folder_changed(void *data)
{
    struct daemon *d = data;

    log_debug("services folder changed: rescanning");
    registry_rescan(d->reg, NULL, NULL);
}

static void on_rescanned(void *data, json_t *diff)
{
    struct daemon *d = data;

    if (d->watch)
        watch_sync(d->watch);
    if (d->supervisor) /* a scan may end during the shutdown, after the supervisor */
        supervisor_services_changed(d->supervisor);
}

static void signal_start(struct daemon *d, uv_signal_t *h, uv_signal_cb cb, int signum)
{
    uv_signal_init(&d->loop, h);
    h->data = d;
    uv_signal_start(h, cb, signum);
}

/* "http://127.0.0.1:8080" (https with TLS) for the address we listen on, with the port
 * really bound. */
static char *listen_url(const char *listen, unsigned port, bool tls)
{
    const char *colon = strrchr(listen, ':');

    return xasprintf("%s://%.*s:%u", tls ? "https" : "http", (int)(colon - listen), listen, port);
}

/* Raises the soft limit on open files to the hard one: every connection, watched folder
 * and service log takes one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Undoes a start that failed half-way; returns code. */
static int daemon_abort_start(struct daemon *d, int code)
{
    uv_close((uv_handle_t *)&d->drain, NULL);
    uv_close((uv_handle_t *)&d->sigterm, NULL);
    uv_close((uv_handle_t *)&d->sigint, NULL);
    uv_close((uv_handle_t *)&d->sighup, NULL);
    inventory_free(d->inventory);
    api_free(d->api);
    gate_free(d->gate);
    audit_free(d->audit);
    registry_free(d->reg);
    events_free(d->hub);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    uv_loop_close(&d->loop);
    return code;
}

int daemon_run(const struct config *c)
{
    struct daemon d = {.config = c};
    char root[PATH_MAX];
    char *url, *audit_path;
    int r, code = 0;

    log_setup(c->log_level, c->log_json);
    for (char **w = c->warnings; w && *w; w++)
        log_warning("%s", *w);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    json_object_seed(0);

    if (!realpath(c->services_dir, root)) {
        log_error("services folder %s: %s (set --services or NANNY_SERVICES)", c->services_dir,
                  strerror(errno));
        return 2;
    }
    r = uv_loop_init(&d.loop);
    if (r < 0)
        fatal("uv_loop_init: %s", uv_strerror(r));

    /* The GPUs first, read on a worker thread: placement needs the box before anything
     * is adopted or started (nvidia-smi, where it is the one that answers, may take
     * seconds; a signal meanwhile ends the daemon, which has started nothing yet). */
    d.inventory = inventory_new(&d.loop, c, on_gpus_changed, &d);
    while (!inventory_known(d.inventory))
        uv_run(&d.loop, UV_RUN_ONCE);

    /* Signals first: one that comes while we start waits for the loop, and is then
     * handled like any other. */
    signal_start(&d, &d.sigterm, on_stop_signal, SIGTERM);
    signal_start(&d, &d.sigint, on_stop_signal, SIGINT);
    signal_start(&d, &d.sighup, on_hangup, SIGHUP);
    uv_timer_init(&d.loop, &d.drain);
    d.drain.data = &d;

    d.hub = events_new(EVENTS_HISTORY_DEFAULT);
    d.reg = registry_new(&d.loop, root, d.hub);
    r = registry_scan_now(d.reg);
    if (r < 0) {
        log_error("cannot read the services folder %s: %s", root, strerror(-r));
        return daemon_abort_start(&d, 2);
    }
    r = state_prepare(c->state_dir);
    if (r < 0)
        log_warning("cannot make the state folder %s: %s: services cannot be started", c->state_dir,
                    strerror(-r));
    audit_path = xasprintf("%s/%s", c->state_dir, AUDIT_FILE);
    r = audit_open(&d.loop, audit_path, c->log_max_bytes, c->log_max_files, &d.audit);
    if (r < 0)
        log_warning("cannot open the audit log %s: %s: nothing will be audited", audit_path,
                    strerror(-r));
    free(audit_path);
    d.gate = gate_new(&d.loop, c, d.audit);
    if (daemon_load_keys(&d, true) < 0)
        return daemon_abort_start(&d, 2);
    if (!config_listen_is_loopback(c) && (!gate_has_keys(d.gate) || !c->tls_cert))
        log_warning("--insecure: listening on %s without %s: anyone who reaches it controls "
                    "the services",
                    c->listen, !gate_has_keys(d.gate) ? "API keys" : "TLS");
    d.api = api_new(d.reg, d.gate, d.hub);
    api_set_audit(d.api, d.audit);
    {
        struct server_options options = {.tls_cert = c->tls_cert,
                                         .tls_key = c->tls_key,
                                         .idle_timeout_s = (unsigned)(c->client_timeout_ms / 1000)};
        char err[1024];
        r = server_new_with(&d.loop, c->listen, &options, api_handle, d.api, &d.server, err,
                            sizeof(err));
        if (r < 0) {
            log_error("%s", err);
            /* A TLS file that cannot be used is a configuration error. */
            return daemon_abort_start(&d, r == SERVER_ERROR_TLS ? 2 : 1);
        }
    }
    server_set_per_client_max(d.server, c->max_connections_per_client);
    server_set_trusted_proxies(d.server, c->trusted_proxies, c->trusted_proxies_n);
    server_set_done(d.server, on_request_done, &d);
    server_set_body_streaming(d.server, api_streams_body, d.api);
    d.sse = sse_new(&d.loop, d.hub);
    api_mount(d.api, "/events", "GET", sse_handle, d.sse, &events_route);
    gate_set_port(d.gate, server_port(d.server));
    r = fetcher_new(&d.loop, &d.fetcher);
    if (r < 0)
        fatal("cannot set up the HTTP client");
    r = proc_reaper_new(&d.loop, &d.reaper);
    if (r < 0)
        log_warning("cannot reap the services' orphans: %s: stops may wait for init", strerror(-r));
    d.supervisor = supervisor_new(&d.loop, d.reg, d.fetcher, c, d.hub);
    api_set_supervisor(d.api, d.supervisor);
    daemon_set_gpus(&d);
    inventory_on_procs(d.inventory, on_gpu_procs, &d);
    d.demand = demand_new(&d.loop, d.reg, d.supervisor, c, d.hub);
    d.gpus = (struct gpus_surface){d.supervisor, d.inventory, d.demand, d.reg};
    api_mount(d.api, "/gpus", "GET", gpus_handle, &d.gpus, &gpus_route);
    d.mcp = mcp_new(&d.loop, d.reg, d.supervisor, d.gate, d.hub, c);
    api_mount(d.api, "/mcp", "POST, DELETE", mcp_handle, d.mcp, &mcp_route);
    d.proxy = proxy_new(&d.loop, c, d.reg, d.supervisor, d.demand, d.gate);
    api_mount_prefix(d.api, "/s/", proxy_handle, d.proxy, &proxy_route);
    api_mount_streams_body(d.api, "/s/"); /* uploads of any size, with backpressure */
    api_mount_prefix(d.api, "/v1/", proxy_handle_v1, d.proxy, &proxy_route);
    api_mount_streams_body(d.api, "/v1/"); /* read to route them, then the same */
    api_mount_error_shape(d.api, "/v1/", proxy_openai_shape); /* the gate's refusals too */
    d.metrics = metrics_new(&d.loop, d.reg, d.supervisor, d.hub);
    api_mount(d.api, "/metrics", "GET", metrics_handle, d.metrics, &metrics_route);
    d.dashboard = dashboard_new();
    for (size_t i = 0; dashboard_path(i); i++)
        api_mount(d.api, dashboard_path(i), "GET", dashboard_handle, d.dashboard, &dashboard_route);
    supervisor_adopt(d.supervisor);
    watch_new(&d.loop, root, on_folder_changed, &d, &d.watch);
    registry_on_rescan(d.reg, on_rescanned, &d);

    url = listen_url(c->listen, server_port(d.server), c->tls_cert != NULL);
    log_info("service-nanny %s: %zu services in %s, %zu manifest errors", NANNY_VERSION,
             registry_count(d.reg), root, json_array_size(registry_errors(d.reg)));
    log_info("listening on %s", url);
    free(url);

    uv_run(&d.loop, UV_RUN_DEFAULT);

    /* Everything is closed; a scan still on a worker thread has ended too. */
    registry_free(d.reg);
    api_free(d.api);
    gate_free(d.gate);
    audit_free(d.audit);
    events_free(d.hub);
    uv_run(&d.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&d.loop) != 0) {
        log_error("handles still open at exit");
        code = 1;
    }
    log_info("stopped");
    return code;
}
