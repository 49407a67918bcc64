/* The gate: browser safety, the failed-authentication throttle, keys, roles, rate limits
 * and the audit, in that order, for every request before its handler. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http/browser.h"
#include "http/gate.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/ratelimit.h"

#define NEEDS_A_KEY                                                                                \
    "this API needs a key: send Authorization: Bearer KEY or X-API-Key: KEY (see nanny keys "      \
    "add)"

struct gate {
    uv_loop_t *loop;
    const struct config *config;
    struct audit *audit;
    unsigned port;
    struct keys *keys;          /* NULL: no keys, everyone is admin */
    struct ratelimit *rate;     /* rate_limit per key ("k:NAME") or address ("a:ADDR") */
    struct ratelimit *failures; /* wrong keys per client address */
    struct ratelimit *logs;     /* one log line per client and GATE_LOG_INTERVAL */
};

struct gate *gate_new(uv_loop_t *loop, const struct config *config, struct audit *audit)
{
    struct gate *g = xcalloc(1, sizeof(*g));

    g->loop = loop;
    g->config = config;
    g->audit = audit;
    if (config && config->rate_rps > 0)
        g->rate = ratelimit_new(config->rate_rps, config->rate_burst, GATE_BUCKETS_MAX);
    g->failures = ratelimit_new(GATE_FAIL_RATE, GATE_FAIL_BURST, GATE_BUCKETS_MAX);
    g->logs = ratelimit_new(1.0 / GATE_LOG_INTERVAL, 1, GATE_BUCKETS_MAX);
    return g;
}

void gate_free(struct gate *g)
{
    if (!g)
        return;
    keys_free(g->keys);
    ratelimit_free(g->rate);
    ratelimit_free(g->failures);
    ratelimit_free(g->logs);
    free(g);
}

void gate_set_port(struct gate *g, unsigned port)
{
    g->port = port;
}

void gate_set_keys(struct gate *g, struct keys *keys)
{
    keys_free(g->keys);
    g->keys = keys;
}

bool gate_has_keys(const struct gate *g)
{
    return g->keys != NULL;
}

bool gate_known(const struct gate *g, const struct request *req)
{
    return !g->keys || request_user(req) != NULL;
}

/* Who a request is in the audit log and the rate limits: its key's name, or its client. */
static const char *who(const struct request *req)
{
    return request_user(req) ? request_user(req) : request_client(req);
}

static void audit(struct gate *g, struct request *req, const char *action, const char *service,
                  unsigned status)
{
    if (g->audit)
        audit_record(g->audit, who(req), action, service, status);
}

void gate_record(struct gate *g, struct request *req, const char *action, const char *service,
                 unsigned status)
{
    audit(g, req, action, service, status);
}

void gate_on_done(void *data, struct request *req, unsigned status)
{
    struct gate *g = data;

    if (request_action(req))
        audit(g, req, request_action(req), request_service(req),
              status ? status : SERVER_STATUS_CLIENT_CLOSED);
}

/* Logs a line about name at most once per GATE_LOG_INTERVAL: a burst of refusals is one
 * line, not one per request. */
static void log_burst(struct gate *g, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void log_burst(struct gate *g, const char *name, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (ratelimit_take(g->logs, name, uv_now(g->loop)) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    log_warning("%s", line);
}

/* Answers a refusal at once: {"error", "message"} (in the request's error shape: OpenAI's
 * on /v1/) with one extra header (may be NULL). */
static void refuse(struct request *req, unsigned status, const char *code, const char *header,
                   const char *value, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void refuse(struct request *req, unsigned status, const char *code, const char *header,
                   const char *value, const char *fmt, ...)
{
    char message[512];
    struct MHD_Response *resp;
    json_t *body;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    body = request_error_shaped(
        req, status, json_pack("{s:s, s:o}", "error", code, "message", json_text(message)));
    resp = server_json_response(body);
    if (header)
        MHD_add_response_header(resp, header, value);
    request_reply_response(req, status, resp);
    MHD_destroy_response(resp);
    json_decref(body);
}

/* Answers 429 with Retry-After: the whole seconds until wait_ms has passed, at least 1.
 * why says who is refused and for what. */
static void refuse_busy(struct request *req, uint64_t wait_ms, const char *why)
{
    unsigned long secs = (unsigned long)((wait_ms + 999) / 1000);
    char retry[32];

    if (secs < 1)
        secs = 1;
    snprintf(retry, sizeof(retry), "%lu", secs);
    refuse(req, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited", MHD_HTTP_HEADER_RETRY_AFTER, retry,
           "%s; retry in %lu s", why, secs);
}

static void refuse_unauthorized(struct request *req, const char *message)
{
    refuse(req, MHD_HTTP_UNAUTHORIZED, "unauthorized", MHD_HTTP_HEADER_WWW_AUTHENTICATE,
           "Bearer realm=\"service-nanny\"", "%s", message);
}

/* The roles that have need, for a person's message. */
static const char *roles_for(enum need need)
{
    switch (need) {
    case NEED_NOTHING:
        return "any role";
    case NEED_USE:
        return "user, operator or admin";
    case NEED_READ:
        return "viewer, operator or admin";
    case NEED_OPERATE:
        return "operator or admin";
    case NEED_ADMIN:
        break;
    }
    return "admin";
}

/* The key a request carries: 1 (in *ret, *ret_len), 0 when it carries none, -1 when its
 * headers are wrong (*problem says how). */
static int request_key(struct request *req, const char **ret, size_t *ret_len, const char **problem)
{
    static const char *const names[] = {MHD_HTTP_HEADER_AUTHORIZATION, "X-API-Key"};
    const char *v = NULL;
    size_t which = 0;
    unsigned found = request_headers_find(req, names, 2, &which, &v);
    bool api_key = which == 1;

    if (found == 0)
        return 0;
    if (found > 1) {
        *problem = "the request carries more than one key: send one Authorization: Bearer KEY "
                   "or one X-API-Key: KEY header";
        return -1;
    }
    if (!api_key) {
        if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t' && v[6] != '\0')) {
            *problem = "the Authorization header must be 'Bearer KEY'";
            return -1;
        }
        v += 6;
    }
    v += strspn(v, " \t");
    *ret_len = strlen(v);
    while (*ret_len > 0 && (v[*ret_len - 1] == ' ' || v[*ret_len - 1] == '\t'))
        (*ret_len)--;
    if (*ret_len == 0) {
        *problem = api_key ? "the X-API-Key header is empty" : "Bearer without a key";
        return -1;
    }
    *ret = v;
    return 1;
}

/* A wrong key from the request's client: counted, refused 401 and audited. */
static void refuse_wrong_key(struct gate *g, struct request *req, const char *action,
                             const char *service, const char *message)
{
    const char *client = request_client(req);
    uint64_t now = uv_now(g->loop);

    ratelimit_take(g->failures, client, now);
    if (ratelimit_wait(g->failures, client, now) > 0)
        log_burst(g, client,
                  "gate: %s sent %d wrong keys; its requests are refused (429) for a while", client,
                  GATE_FAIL_BURST);
    refuse_unauthorized(req, message);
    audit(g, req, action, service, MHD_HTTP_UNAUTHORIZED);
}

/* Finds the request's key: true with the user set, or false when it was refused. A route
 * that needs nothing lets a request without a key through, unknown. */
static bool authenticate(struct gate *g, struct request *req, const struct gate_route *route,
                         const char *service)
{
    const char *client = request_client(req), *key = NULL, *problem = NULL;
    const struct key_entry *entry;
    uint64_t wait =
        ratelimit_count(g->failures) ? ratelimit_wait(g->failures, client, uv_now(g->loop)) : 0;
    size_t len = 0;
    int r;

    if (wait > 0) {
        log_burst(g, client, "gate: %s is refused: too many wrong keys", client);
        char why[128];
        snprintf(why, sizeof(why), "too many failed authentications from %s", client);
        refuse_busy(req, wait, why);
        audit(g, req, route->action, service, MHD_HTTP_TOO_MANY_REQUESTS);
        return false;
    }
    r = request_key(req, &key, &len, &problem);
    if (r == 0) {
        if (route->need == NEED_NOTHING)
            return true;
        refuse_unauthorized(req, NEEDS_A_KEY);
        audit(g, req, route->action, service, MHD_HTTP_UNAUTHORIZED);
        return false;
    }
    if (r < 0) {
        refuse_wrong_key(g, req, route->action, service, problem);
        return false;
    }
    if (!key_well_formed(key, len)) {
        refuse_wrong_key(g, req, route->action, service,
                         "malformed key: a key is " KEY_PREFIX " and 64 lowercase hex digits");
        return false;
    }
    entry = keys_find(g->keys, key, len);
    if (!entry) {
        refuse_wrong_key(g, req, route->action, service, "unknown key");
        return false;
    }
    request_set_user(req, entry->name, (int)entry->role);
    return true;
}

bool gate_allows(struct gate *g, struct request *req, enum need need, const char *action,
                 const char *service, char *why, size_t why_size)
{
    int role = request_role(req);

    if (role_allows((enum role)role, need)) /* without keys, gate_pass() made everyone admin */
        return true;
    if (role < 0)
        snprintf(why, why_size, "%s", NEEDS_A_KEY);
    else
        snprintf(why, why_size, "key '%s' has the role %s; %s needs %s", request_user(req),
                 role_name((enum role)role), action, roles_for(need));
    audit(g, req, action, service, role < 0 ? MHD_HTTP_UNAUTHORIZED : MHD_HTTP_FORBIDDEN);
    return false;
}

bool gate_require(struct gate *g, struct request *req, enum need need, const char *action,
                  const char *service)
{
    char why[512];

    if (gate_allows(g, req, need, action, service, why, sizeof(why)))
        return true;
    if (request_role(req) < 0)
        refuse_unauthorized(req, why);
    else
        refuse(req, MHD_HTTP_FORBIDDEN, "forbidden", NULL, NULL, "%s", why);
    return false;
}

bool gate_pass(struct gate *g, struct request *req, const struct gate_route *route,
               const char *service)
{
    const char *method = request_method(req);
    bool writes = strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;

    if (browser_safety_refuses(req, g->port, g->config, writes)) {
        audit(g, req, route->action, service, MHD_HTTP_FORBIDDEN);
        return false;
    }
    if (!g->keys)
        request_set_user(req, NULL, ROLE_ADMIN);
    else if (!authenticate(g, req, route, service) ||
             !gate_require(g, req, route->need, route->action, service))
        return false;
    if (g->rate) {
        char name[REQUEST_USER_MAX + 3];
        uint64_t wait;

        snprintf(name, sizeof(name), "%s%s", request_user(req) ? "k:" : "a:", who(req));
        wait = ratelimit_take(g->rate, name, uv_now(g->loop));
        if (wait > 0) {
            log_burst(g, name, "gate: %s is over its rate limit (%u/s, burst %u)", who(req),
                      g->config->rate_rps, g->config->rate_burst);
            char why[128];
            snprintf(why, sizeof(why), "%s is over its rate limit", who(req));
            refuse_busy(req, wait, why);
            audit(g, req, route->action, service, MHD_HTTP_TOO_MANY_REQUESTS);
            return false;
        }
    }
    if (route->changes_things)
        request_set_action(req, route->action, service);
    return true;
}
