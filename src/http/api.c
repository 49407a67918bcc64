/* The HTTP API: a route table, one function per endpoint, JSON in and out. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/supervisor.h"
#include "http/api.h"
#include "http/body.h"
#include "http/gate.h"
#include "http/logs_follow.h"
#include "http/query.h"
#include "http/render.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strmap.h"
#include "version.h"

#define LOGS_TAIL_DEFAULT     100
#define LOGS_TAIL_MAX         10000
#define ROUTE_SEGMENTS        3
#define REDISCOVER_TIMEOUT_MS 30000
#define AUDIT_TAIL_DEFAULT    100
#define AUDIT_TIMEOUT_MS      30000
#define OPERATION_TIMEOUT_MS  (10 * 60 * 1000) /* plus the service's start_period */
#define API_MOUNTS_MAX        16

/* A route another surface serves (api_mount). */
struct mount {
    const char *path;
    bool prefix;       /* path is a prefix ("/s/"): every path under it */
    bool streams_body; /* its requests' bodies are handed over as they come */
    json_t *(*error_shape)(unsigned status, json_t *body); /* NULL: SPEC's */
    const char *method;                                    /* NULL: any */
    server_handler_fn fn;
    void *data;
    struct gate_route gate;
};

struct api {
    struct registry *reg;
    struct supervisor *supervisor; /* NULL: no lifecycle (answers 503) */
    struct gate *gate;             /* every request passes it first */
    struct audit *audit;           /* NULL: GET /audit answers 503 */
    time_t started;
    struct MHD_Response *list_cache; /* GET /services, valid for these generations: */
    uint64_t list_registry_generation, list_status_generation;
    struct strmap *renders; /* service name -> struct render */
    struct events *hub;
    struct events_sub *sub;
    struct mount mounts[API_MOUNTS_MAX];
    size_t n_mounts;
};

/* A service's status as a ready answer, good while its generations are these. */
struct render {
    uint64_t generation, status_generation;
    struct MHD_Response *response;
};

typedef void (*endpoint_fn)(struct api *api, struct request *req, const char *name);

static void get_health(struct api *api, struct request *req, const char *name);
static void get_services(struct api *api, struct request *req, const char *name);
static void get_service(struct api *api, struct request *req, const char *name);
static void post_start(struct api *api, struct request *req, const char *name);
static void post_restart(struct api *api, struct request *req, const char *name);
static void post_stop(struct api *api, struct request *req, const char *name);
static void get_logs(struct api *api, struct request *req, const char *name);
static void post_rediscover(struct api *api, struct request *req, const char *name);
static void get_audit(struct api *api, struct request *req, const char *name);

/* "*" stands for a service name. Each route says what the gate asks of its requests: the
 * role (README's table lists them), its verb in the audit log, whether it is audited. */
static const struct route {
    const char *pattern; /* what metrics call it */
    const char *segments[ROUTE_SEGMENTS];
    const char *method;
    endpoint_fn fn;
    struct gate_route gate;
} routes[] = {
    {"/health", {"health"}, "GET", get_health, {NEED_NOTHING, "health", false}},
    {"/services", {"services"}, "GET", get_services, {NEED_READ, "list", false}},
    {"/services/{name}", {"services", "*"}, "GET", get_service, {NEED_READ, "status", false}},
    {"/services/{name}/status",
     {"services", "*", "status"},
     "GET",
     get_service,
     {NEED_READ, "status", false}},
    {"/services/{name}/start",
     {"services", "*", "start"},
     "POST",
     post_start,
     {NEED_OPERATE, "start", true}},
    {"/services/{name}/stop",
     {"services", "*", "stop"},
     "POST",
     post_stop,
     {NEED_OPERATE, "stop", true}},
    {"/services/{name}/restart",
     {"services", "*", "restart"},
     "POST",
     post_restart,
     {NEED_OPERATE, "restart", true}},
    {"/services/{name}/logs",
     {"services", "*", "logs"},
     "GET",
     get_logs,
     {NEED_READ, "logs", false}},
    {"/rediscover", {"rediscover"}, "POST", post_rediscover, {NEED_ADMIN, "rediscover", true}},
    {"/audit", {"audit"}, "GET", get_audit, {NEED_ADMIN, "audit", false}},
};

/* What the gate asks of a path no route takes: a key that may read, before the 404. */
static const struct gate_route unknown_route = {NEED_READ, "unknown", false};

static void render_free(void *value)
{
    struct render *r = value;

    MHD_destroy_response(r->response);
    free(r);
}

/* What was rendered of services that left the registry goes with them. */
static void on_event(void *data, const struct event *ev)
{
    struct api *api = data;
    json_t *name;
    size_t i;

    if (ev->kind != EVENT_DISCOVERY)
        return;
    json_array_foreach(json_object_get(ev->data, "removed"), i, name)
    {
        struct render *r = strmap_remove(api->renders, json_string_value(name));
        if (r)
            render_free(r);
    }
}

struct api *api_new(struct registry *reg, struct gate *gate, struct events *hub)
{
    struct api *api = xcalloc(1, sizeof(*api));

    api->reg = reg;
    api->gate = gate;
    api->started = time(NULL);
    api->renders = strmap_new();
    api->hub = hub;
    if (hub)
        api->sub = events_subscribe(hub, on_event, api);
    return api;
}

void api_set_supervisor(struct api *api, struct supervisor *supervisor)
{
    api->supervisor = supervisor;
}

void api_set_audit(struct api *api, struct audit *audit)
{
    api->audit = audit;
}

void api_free(struct api *api)
{
    if (!api)
        return;
    if (api->list_cache)
        MHD_destroy_response(api->list_cache);
    if (api->hub)
        events_unsubscribe(api->hub, api->sub);
    strmap_free(api->renders, render_free);
    free(api);
}

int api_route_match(const char *path, const char **ret_name, size_t *ret_name_len)
{
    const char *seg[ROUTE_SEGMENTS + 1];
    size_t len[ROUTE_SEGMENTS + 1], n = 0;
    const char *p = path;

    if (*p != '/')
        return -ENOENT;
    p++;
    /* Split on '/', allowing one trailing slash. */
    while (*p) {
        const char *end = strchrnul(p, '/');
        if (end == p || n == ROUTE_SEGMENTS)
            return -ENOENT;
        seg[n] = p;
        len[n] = (size_t)(end - p);
        n++;
        p = *end ? end + 1 : end;
    }
    if (n == 0)
        return -ENOENT;

    for (size_t r = 0; r < sizeof(routes) / sizeof(routes[0]); r++) {
        const struct route *route = &routes[r];
        size_t i;

        for (i = 0; i < n; i++) {
            const char *want = route->segments[i];
            if (!want)
                break;
            if (strcmp(want, "*") == 0)
                continue;
            if (strlen(want) != len[i] || memcmp(want, seg[i], len[i]) != 0)
                break;
        }
        if (i == n && (n == ROUTE_SEGMENTS || !route->segments[n])) {
            if (n >= 2) {
                *ret_name = seg[1];
                *ret_name_len = len[1];
            } else {
                *ret_name = NULL;
                *ret_name_len = 0;
            }
            return (int)r;
        }
    }
    return -ENOENT;
}

/* The service's status as a ready answer, made once per change of the service: only its
 * text is kept, not the JSON tree. */
static struct MHD_Response *service_render(struct api *api, const struct service *svc)
{
    const struct service_status *st = supervisor_status(api->supervisor, svc);
    struct render *r = strmap_get(api->renders, svc->name);
    json_t *status;

    if (r && r->generation == svc->generation && r->status_generation == st->generation)
        return r->response;
    if (!r) {
        r = xcalloc(1, sizeof(*r));
        strmap_put(api->renders, svc->name, r);
    } else {
        MHD_destroy_response(r->response);
    }
    status = render_status(svc, st);
    r->response = server_json_response(status);
    r->generation = svc->generation;
    r->status_generation = st->generation;
    json_decref(status);
    return r->response;
}

/* GET /health: the daemon's own state ("degraded" with a reason while its state cannot be
 * trusted to disk), and each driver's view of its backend ("compose"). */
static void get_health(struct api *api, struct request *req, const char *name)
{
    char problem[768];
    const char *reason = supervisor_state_problem(api->supervisor, problem, sizeof(problem));
    json_t *health;

    if (!gate_known(api->gate, req)) {
        /* Without a key: only whether it runs. */
        request_reply_json(req, MHD_HTTP_OK,
                           json_pack("{s:s, s:s}", "status", reason ? "degraded" : "ok", "version",
                                     NANNY_VERSION));
        return;
    }
    health = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:o}", "status", reason ? "degraded" : "ok",
                       "version", NANNY_VERSION, "services", (json_int_t)registry_count(api->reg),
                       "manifest_errors", (json_int_t)json_array_size(registry_errors(api->reg)),
                       "uptime_s", (json_int_t)(time(NULL) - api->started), "pid",
                       (json_int_t)getpid(), "services_dir", json_text(registry_root(api->reg)));

    if (reason)
        json_object_set_new(health, "reason", json_string(reason));
    json_object_update_missing_new(health, supervisor_drivers_info());
    request_reply_json(req, MHD_HTTP_OK, health);
}

/* GET /services: the rendered list, remade only when a service or its status changed.
 * The server gives the pages of the short-lived trees back when its clients are gone. */
static void get_services(struct api *api, struct request *req, const char *name)
{
    uint64_t generation = registry_generation(api->reg);
    uint64_t status_generation = supervisor_generation(api->supervisor);

    if (!api->list_cache || api->list_registry_generation != generation ||
        api->list_status_generation != status_generation) {
        json_t *body =
            json_pack("{s:o, s:O}", "services", render_services(api->reg, api->supervisor),
                      "errors", registry_errors(api->reg));
        if (api->list_cache)
            MHD_destroy_response(api->list_cache);
        api->list_cache = server_json_response(body);
        api->list_registry_generation = generation;
        api->list_status_generation = status_generation;
        json_decref(body);
    }
    request_reply_response(req, MHD_HTTP_OK, api->list_cache);
}

/* Finds the service a request names, or answers 404 (unknown) or 422 (broken manifest). */
static struct service *find_or_reply(struct api *api, struct request *req, const char *name)
{
    struct service *svc = registry_find(api->reg, name);
    json_t *err;

    if (svc)
        return svc;
    err = registry_find_error(api->reg, name);
    if (err) {
        request_reply_json(req, MHD_HTTP_UNPROCESSABLE_CONTENT, render_invalid_manifest(err));
        return NULL;
    }
    request_reply_error(req, MHD_HTTP_NOT_FOUND, "not_found",
                        "no service named '%s' (GET /services lists them)", name);
    return NULL;
}

/* find_or_reply() for the endpoints that need the supervisor: 503 when this daemon has
 * none (it runs no services). */
static struct service *find_runnable(struct api *api, struct request *req, const char *name)
{
    struct service *svc = find_or_reply(api, req, name);

    if (svc && !api->supervisor) {
        request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "backend_unavailable",
                            "this daemon runs no services");
        return NULL;
    }
    return svc;
}

/* GET /services/NAME and /services/NAME/status: the service's rendered status. */
static void get_service(struct api *api, struct request *req, const char *name)
{
    struct service *svc = find_or_reply(api, req, name);

    if (svc)
        request_reply_response(req, MHD_HTTP_OK, service_render(api, svc));
}

/* Answers a start, restart or stop with what the supervisor did. */
static void on_operation_done(void *data, struct service *svc, const struct supervisor_result *res)
{
    struct request *req = data;
    json_t *body;
    unsigned status;

    request_set_abort(req, NULL, NULL);
    status = render_outcome(svc, res, &body);
    request_reply_json(req, status, body);
}

static void on_operation_abort(void *data)
{
    supervisor_op_cancel(data);
}

/* Keeps the request waiting for a pending operation, with a generous deadline. */
static void wait_for(struct request *req, struct supervisor_op *op, const struct service *svc)
{
    if (!op)
        return; /* already answered */
    request_suspend(req, OPERATION_TIMEOUT_MS + svc->manifest->health_start_period_ms);
    request_set_abort(req, on_operation_abort, op);
}

/* The manifest of a known service broke: it keeps its last good one, but nothing starts
 * from a broken manifest. Answers 422 and returns true then. */
static bool refuse_broken(struct request *req, const struct service *svc)
{
    if (!svc->manifest_error)
        return false;
    request_reply_json(req, MHD_HTTP_UNPROCESSABLE_CONTENT,
                       render_invalid_manifest(svc->manifest_error));
    return true;
}

/* POST /services/NAME/start and /restart: the GPU rule, then the start, answered when the
 * process is spawned or, with ?wait=healthy, when it is healthy. */
static void start_or_restart(struct api *api, struct request *req, const char *name, bool restart)
{
    struct start_request start;
    struct service *svc;
    const char *wait = request_query(req, "wait");
    char err[256];
    size_t len;
    const char *body = request_body(req, &len);

    if (body_parse_start(body, len, &start, err, sizeof(err)) < 0) {
        request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", err);
        return;
    }
    if (wait && strcmp(wait, "healthy") != 0) {
        request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "wait must be \"healthy\" (or left out)");
        return;
    }
    svc = find_runnable(api, req, name);
    if (!svc || refuse_broken(req, svc))
        return;
    wait_for(req,
             supervisor_start(api->supervisor, svc, start.force, wait != NULL, restart,
                              on_operation_done, req),
             svc);
}

static void post_start(struct api *api, struct request *req, const char *name)
{
    start_or_restart(api, req, name, false);
}

static void post_restart(struct api *api, struct request *req, const char *name)
{
    start_or_restart(api, req, name, true);
}

/* For endpoints that take no parameters: answers 400 unless the body is empty or {};
 * returns whether it answered. */
static bool refuse_body(struct request *req)
{
    char err[256];
    size_t len;
    const char *body = request_body(req, &len);

    if (body_parse_empty(body, len, err, sizeof(err)) == 0)
        return false;
    request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", err);
    return true;
}

/* POST /services/NAME/stop: answered once nothing of the service is left. */
static void post_stop(struct api *api, struct request *req, const char *name)
{
    struct service *svc;

    if (refuse_body(req))
        return;
    svc = find_runnable(api, req, name);
    if (!svc)
        return;
    wait_for(req, supervisor_stop(api->supervisor, svc, on_operation_done, req), svc);
}

/* True when the client asked for JSON (Accept: application/json). */
static bool wants_json(struct request *req)
{
    return request_header_lists(req, MHD_HTTP_HEADER_ACCEPT, "application/json", false);
}

/* A logs request waiting for the driver (Docker's logs come from the engine). */
struct logs_wait {
    struct request *req;
    bool json;
    struct supervisor_logs *pending;
};

static void on_logs_abort(void *data)
{
    struct logs_wait *w = data;

    supervisor_logs_cancel(w->pending);
    free(w);
}

/* Answers a logs request with the lines, text or JSON. */
static void on_logs(void *data, char **lines, const char *error)
{
    struct logs_wait *w = data;
    struct request *req = w->req;

    if (w->pending)
        request_set_abort(req, NULL, NULL);
    if (!lines) {
        request_reply_error(req, MHD_HTTP_BAD_GATEWAY, "logs_unreadable", "%s", error);
    } else if (w->json) {
        json_t *a = json_array();
        for (char **l = lines; *l; l++)
            json_array_append_new(a, json_text(*l));
        request_reply_json(req, MHD_HTTP_OK, json_pack("{s:o}", "lines", a));
    } else {
        size_t total = 0, at = 0;
        char *text;
        for (char **l = lines; *l; l++)
            total += strlen(*l) + 1;
        text = xmalloc(total + 1);
        for (char **l = lines; *l; l++) {
            size_t n = strlen(*l);
            memcpy(text + at, *l, n);
            text[at + n] = '\n';
            at += n + 1;
        }
        request_reply_text(req, MHD_HTTP_OK, text, at);
        free(text);
    }
    if (w->pending)
        free(w);
    else
        w->req = NULL; /* answered at once: get_logs frees w */
}

/* Reads ?tail= (dflt when absent, max at most): true, or false when it was answered 400. */
static bool read_tail(struct request *req, unsigned dflt, unsigned max, const char *what,
                      unsigned *ret)
{
    if (query_count(request_query(req, "tail"), dflt, max, ret) == 0)
        return true;
    request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                        "tail must be a whole number of %s, 0 to %u", what, max);
    return false;
}

/* GET /services/NAME/logs?tail=N: the last lines of its output, text or JSON; with
 * follow=1 then its new lines as they are written (logs_follow.c). */
static void get_logs(struct api *api, struct request *req, const char *name)
{
    const char *follow;
    struct service *svc;
    struct logs_wait *w;
    unsigned tail;

    if (!read_tail(req, LOGS_TAIL_DEFAULT, LOGS_TAIL_MAX, "lines", &tail))
        return;
    svc = find_runnable(api, req, name);
    if (!svc)
        return;
    follow = request_query(req, "follow");
    if (follow && strcmp(follow, "0") != 0 && strcmp(follow, "false") != 0) {
        if (strcmp(follow, "1") != 0 && strcmp(follow, "true") != 0 && *follow) {
            request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                                "follow is 1 (true) or 0 (false)");
            return;
        }
        logs_follow_reply(api->supervisor, svc, tail, req);
        return;
    }
    w = xcalloc(1, sizeof(*w));
    w->req = req;
    w->json = wants_json(req);
    w->pending = supervisor_logs(api->supervisor, svc, tail, on_logs, w);
    if (!w->pending) {
        free(w);
        return;
    }
    request_suspend(req, OPERATION_TIMEOUT_MS);
    request_set_abort(req, on_logs_abort, w);
}

struct rediscover_wait {
    struct api *api;
    struct request *req;
    struct rescan_waiter *waiter;
};

/* Answers a POST /rediscover with the scan's diff, or 503 when the folder was unreadable. */
static void on_rediscovered(void *data, json_t *diff)
{
    struct rediscover_wait *w = data;
    struct api *api = w->api;
    json_t *error = json_object_get(diff, "error");

    request_set_abort(w->req, NULL, NULL);
    if (error)
        request_reply_error(w->req, MHD_HTTP_SERVICE_UNAVAILABLE, "services_unreadable", "%s",
                            json_string_value(error));
    else
        request_reply_json(w->req, MHD_HTTP_OK,
                           render_rediscovered(api->reg, api->supervisor, diff));
    free(w);
}

static void on_rediscover_abort(void *data)
{
    struct rediscover_wait *w = data;

    registry_rescan_cancel(w->api->reg, w->waiter);
    free(w);
}

/* POST /rediscover: suspends the request until a rescan that began after it merged. */
static void post_rediscover(struct api *api, struct request *req, const char *name)
{
    struct rediscover_wait *w;

    if (refuse_body(req))
        return;
    w = xcalloc(1, sizeof(*w));
    w->api = api;
    w->req = req;
    request_suspend(req, REDISCOVER_TIMEOUT_MS);
    request_set_abort(req, on_rediscover_abort, w);
    w->waiter = registry_rescan(api->reg, on_rediscovered, w);
}

/* An audit tail waiting for its worker thread. */
struct audit_wait {
    struct request *req;
    struct audit_tail *tail;
};

static void on_audit_tail(void *data, json_t *entries, const char *error)
{
    struct audit_wait *w = data;

    request_set_abort(w->req, NULL, NULL);
    if (!entries)
        request_reply_error(w->req, MHD_HTTP_INTERNAL_SERVER_ERROR, "audit_unreadable", "%s",
                            error);
    else
        request_reply_json(w->req, MHD_HTTP_OK, json_pack("{s:O}", "entries", entries));
    free(w);
}

static void on_audit_abort(void *data)
{
    struct audit_wait *w = data;

    audit_tail_cancel(w->tail);
    free(w);
}

/* GET /audit?tail=N: the last entries of the audit log, oldest first. */
static void get_audit(struct api *api, struct request *req, const char *name)
{
    struct audit_wait *w;
    struct audit_tail *t;
    unsigned tail;

    if (!read_tail(req, AUDIT_TAIL_DEFAULT, AUDIT_TAIL_MAX, "entries", &tail))
        return;
    if (!api->audit) {
        request_reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "audit_unavailable",
                            "the audit log could not be opened (see the daemon's log)");
        return;
    }
    w = xcalloc(1, sizeof(*w));
    w->req = req;
    request_suspend(req, AUDIT_TIMEOUT_MS);
    request_set_abort(req, on_audit_abort, w);
    t = audit_tail(api->audit, tail, on_audit_tail, w);
    if (t) /* else w was answered and freed already */
        w->tail = t;
}

void api_mount(struct api *api, const char *path, const char *method, server_handler_fn fn,
               void *data, const struct gate_route *gate)
{
    if (api->n_mounts == API_MOUNTS_MAX)
        fatal("more than %d routes mounted on the API", API_MOUNTS_MAX);
    api->mounts[api->n_mounts++] =
        (struct mount){.path = path, .method = method, .fn = fn, .data = data, .gate = *gate};
}

void api_mount_prefix(struct api *api, const char *prefix, server_handler_fn fn, void *data,
                      const struct gate_route *gate)
{
    api_mount(api, prefix, NULL, fn, data, gate);
    api->mounts[api->n_mounts - 1].prefix = true;
}

static const struct mount *mount_find(const struct api *api, const char *path)
{
    for (size_t i = 0; i < api->n_mounts; i++) {
        const struct mount *m = &api->mounts[i];
        if (m->prefix ? strncmp(m->path, path, strlen(m->path)) == 0 : strcmp(m->path, path) == 0)
            return m;
    }
    return NULL;
}

static struct mount *mount_at(struct api *api, const char *prefix)
{
    for (size_t i = 0; i < api->n_mounts; i++)
        if (strcmp(api->mounts[i].path, prefix) == 0)
            return &api->mounts[i];
    fatal("api: %s is not mounted", prefix);
}

void api_mount_streams_body(struct api *api, const char *prefix)
{
    mount_at(api, prefix)->streams_body = true;
}

void api_mount_error_shape(struct api *api, const char *prefix,
                           json_t *(*shape)(unsigned status, json_t *body))
{
    mount_at(api, prefix)->error_shape = shape;
}

bool api_streams_body(void *data, struct request *req)
{
    const struct api *api = data;
    const char *name;
    size_t name_len;
    const struct mount *m = api_route_match(request_path(req), &name, &name_len) < 0
                                ? mount_find(api, request_path(req))
                                : NULL;

    return m && m->streams_body;
}

/* Answers 405 with the methods the path does take. */
static void reply_method_not_allowed(struct request *req, const char *allow)
{
    json_t *body = json_pack("{s:s, s:s+}", "error", "method_not_allowed", "message",
                             "this path takes ", allow);
    struct MHD_Response *resp = server_json_response(body);

    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    request_reply_response(req, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
    MHD_destroy_response(resp);
    json_decref(body);
}

/* True when the request's method is one of want (methods separated by ", "; HEAD where
 * GET is one); else it is answered 405 with the methods the path takes. */
static bool method_allowed(struct request *req, const char *want)
{
    const char *method = request_method(req);
    bool takes_get = false;
    size_t len = strlen(method);

    for (const char *p = want; *p; p += strspn(p, ", ")) {
        size_t n = strcspn(p, ", ");
        if (n == len && memcmp(p, method, n) == 0)
            return true;
        takes_get = takes_get || (n == 3 && memcmp(p, "GET", 3) == 0);
        p += n;
    }
    if (takes_get && strcmp(method, "HEAD") == 0)
        return true;
    reply_method_not_allowed(req, strcmp(want, "GET") == 0 ? "GET, HEAD" : want);
    return false;
}

/* Routes one request: the gate (with the route's role), 404, 405, the name rule, then the
 * endpoint. */
void api_handle(void *data, struct request *req)
{
    struct api *api = data;
    const char *name_seg;
    char name[MANIFEST_NAME_MAX + 1];
    size_t name_len;
    int r = api_route_match(request_path(req), &name_seg, &name_len);
    const struct route *route;
    const struct mount *mount;
    bool name_ok;

    if (r < 0 && (mount = mount_find(api, request_path(req)))) {
        request_set_route(req, mount->path);
        if (mount->error_shape)
            request_set_error_shape(req, mount->error_shape);
        if (gate_pass(api->gate, req, &mount->gate, NULL) &&
            (!mount->method || method_allowed(req, mount->method)))
            mount->fn(mount->data, req);
        return;
    }
    if (r < 0) {
        if (gate_pass(api->gate, req, &unknown_route, NULL))
            request_reply_error(req, MHD_HTTP_NOT_FOUND, "not_found",
                                "no such endpoint (see GET /services, GET /health)");
        return;
    }
    route = &routes[r];
    request_set_route(req, route->pattern);
    name[0] = '\0';
    if (name_seg && name_len <= MANIFEST_NAME_MAX) {
        memcpy(name, name_seg, name_len);
        name[name_len] = '\0';
    }
    name_ok = name_seg && name_len <= MANIFEST_NAME_MAX && manifest_name_valid(name);
    if (!gate_pass(api->gate, req, &route->gate, name_ok ? name : NULL))
        return;
    if (!method_allowed(req, route->method))
        return;
    if (name_seg && !name_ok) {
        request_reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_name",
                            "service names match ^[a-z0-9][a-z0-9._-]{0,62}$");
        return;
    }
    route->fn(api, req, name);
}
