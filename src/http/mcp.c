/* The MCP transport (see mcp.h): JSON-RPC over POST /mcp, sessions, the checks each
 * protocol revision asks for, and the answers: one JSON document, or a server-sent event
 * stream when a start that waits sends its progress. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "http/gate.h"
#include "http/mcp.h"
#include "http/mcp_internal.h"
#include "http/stream.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strmap.h"
#include "version.h"

/* JSON-RPC's error codes, and those of MCP. */
#define RPC_PARSE_ERROR      (-32700)
#define RPC_INVALID_REQUEST  (-32600)
#define RPC_METHOD_NOT_FOUND (-32601)
#define RPC_INVALID_PARAMS   (-32602)
#define RPC_BAD_REQUEST      (-32000) /* a transport-level refusal (the SDKs' code) */
#define RPC_NO_SESSION       (-32001)
#define RPC_HEADER_MISMATCH  (-32020) /* 2026-07-28 */
#define RPC_BAD_VERSION      (-32022) /* 2026-07-28: UnsupportedProtocolVersion */

#define MODERN_VERSION    "2026-07-28"
#define META_VERSION      "io.modelcontextprotocol/protocolVersion"
#define META_CAPABILITIES "io.modelcontextprotocol/clientCapabilities"
#define META_SERVER_INFO  "io.modelcontextprotocol/serverInfo"
#define SESSION_ID_LEN    32
#define CALL_TIMEOUT_MS   (10 * 60 * 1000) /* plus a start's start_period */
#define STREAM_CAP        (256 * 1024)     /* progress waiting unread; more is dropped */
#define CLIENT_GONE       499 /* audited when the client went before the answer (nginx) */

/* The session revisions, newest first: an initialize asking for another gets the first. */
static const char *const session_versions[] = {"2025-11-25", "2025-06-18", "2025-03-26"};
#define N_SESSION_VERSIONS (sizeof(session_versions) / sizeof(session_versions[0]))

static const char instructions[] =
    "Service Nanny runs the AI services of this machine (model servers and their helpers), "
    "each a folder with a service.yaml. Call list_services first to see them and their "
    "states. start_service, stop_service and restart_service change what runs; "
    "service_status, service_logs and gpu_status read. The GPU rule: only one service that "
    "needs the GPU (gpu_required) runs at a time. Starting a second one fails with an error "
    "naming the holder; force: true stops the holder first, so ask the user before using it. "
    "Use wait_healthy: true to be answered only once the service answers its health check. "
    "After editing service folders, call rediscover.";

struct session {
    char id[SESSION_ID_LEN + 1];
    uint64_t last_used_ms;
    struct session *older, *newer; /* least recently used first */
};

struct mcp {
    uv_loop_t *loop;
    struct registry *reg;
    struct supervisor *sup;
    struct gate *gate;
    struct events *hub;
    unsigned sessions_max;
    uint64_t idle_ms;
    json_t *tools;           /* tools/list's, made once */
    struct strmap *sessions; /* id -> struct session */
    struct session *oldest, *newest;
    size_t n_calls;
};

/* What one POST asks, once read and checked. */
struct message {
    json_t *body;       /* the whole message (borrowed from the parse) */
    json_t *id;         /* NULL for a notification */
    const char *method; /* NULL for a response */
    json_t *params;     /* an object, or NULL */
    bool modern;        /* 2026-07-28: carries its version in _meta */
};

/* A tools/call being run, with how it will be answered. */
struct pending {
    struct mcp_call call; /* first: the tools get &call */
    struct mcp *mcp;
    const struct mcp_tool *tool; /* audited when it ends, if it changes things */
    struct request *audit_req;   /* the request to audit it as (valid until it ends) */
    struct request *req;         /* a JSON answer waits (suspended), or NULL */
    struct stream *st;           /* or an event stream is open, or NULL */
    json_t *id;
    bool modern;
    json_t *progress_token; /* NULL: no progress wanted */
    double progress;
    struct events_sub *sub; /* state events of the service, for the progress */
    bool *answered;         /* set true when answered, while the tool runs */
};

/* --- answers ---------------------------------------------------------------------------- */

/* {"jsonrpc":"2.0","id":id,"error":{"code","message","data"?}}; takes data. New reference. */
static json_t *rpc_error(json_t *id, int code, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static json_t *rpc_error(json_t *id, int code, json_t *data, const char *fmt, ...)
{
    char message[1024];
    json_t *error;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    error = json_pack("{s:i, s:o}", "code", code, "message", json_text(message));
    if (data)
        json_object_set_new(error, "data", data);
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error",
                     error);
}

/* {"jsonrpc":"2.0","id":id,"result":result}; a 2026-07-28 result is marked complete and
 * names the server. Takes result. New reference. */
static json_t *rpc_result(json_t *id, json_t *result, bool modern)
{
    if (modern) {
        json_object_set_new(result, "resultType", json_string("complete"));
        json_object_set_new(result, "_meta",
                            json_pack("{s:{s:s, s:s, s:s}}", META_SERVER_INFO, "name",
                                      "service-nanny", "title", "Service Nanny", "version",
                                      NANNY_VERSION));
    }
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result);
}

/* Answers at once with one JSON-RPC message (taken) and, when session is given, its id. */
static void reply(struct request *req, unsigned status, json_t *msg, const char *session)
{
    struct MHD_Response *resp = server_json_response(msg);

    if (session)
        MHD_add_response_header(resp, "Mcp-Session-Id", session);
    request_reply_response(req, status, resp);
    MHD_destroy_response(resp);
    json_decref(msg);
}

/* Answers a notification or a client's response: 202 and no body. */
static void reply_accepted(struct request *req)
{
    request_reply_text(req, MHD_HTTP_ACCEPTED, "", 0);
}

/* --- sessions --------------------------------------------------------------------------- */

static void session_unlink(struct mcp *mcp, struct session *s)
{
    if (s->older)
        s->older->newer = s->newer;
    else
        mcp->oldest = s->newer;
    if (s->newer)
        s->newer->older = s->older;
    else
        mcp->newest = s->older;
    s->older = s->newer = NULL;
}

static void session_link_newest(struct mcp *mcp, struct session *s)
{
    s->older = mcp->newest;
    s->newer = NULL;
    if (mcp->newest)
        mcp->newest->newer = s;
    else
        mcp->oldest = s;
    mcp->newest = s;
}

static void session_end(struct mcp *mcp, struct session *s)
{
    session_unlink(mcp, s);
    strmap_remove(mcp->sessions, s->id);
    free(s);
}

/* Ends the sessions idle for longer than allowed (the oldest first, so it stops early). */
static void sessions_expire(struct mcp *mcp)
{
    uint64_t now = uv_now(mcp->loop);

    while (mcp->oldest && now - mcp->oldest->last_used_ms > mcp->idle_ms)
        session_end(mcp, mcp->oldest);
}

/* A new session, ending the least recently used one when there are as many as allowed. */
static struct session *session_new(struct mcp *mcp)
{
    struct session *s = xcalloc(1, sizeof(*s));
    unsigned char bytes[SESSION_ID_LEN / 2];
    size_t got = 0;

    sessions_expire(mcp);
    if (strmap_count(mcp->sessions) >= mcp->sessions_max) {
        log_info("mcp: %u sessions open: the least recently used one ends", mcp->sessions_max);
        session_end(mcp, mcp->oldest);
    }
    while (got < sizeof(bytes)) {
        ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
        if (n < 0)
            fatal("getrandom: %s", strerror(errno));
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(bytes); i++)
        snprintf(s->id + 2 * i, 3, "%02x", bytes[i]);
    s->last_used_ms = uv_now(mcp->loop);
    strmap_put(mcp->sessions, s->id, s);
    session_link_newest(mcp, s);
    return s;
}

/* The session id names, now used (NULL: none, or expired). */
static struct session *session_use(struct mcp *mcp, const char *id)
{
    struct session *s;

    sessions_expire(mcp);
    s = strmap_get(mcp->sessions, id);
    if (!s)
        return NULL;
    s->last_used_ms = uv_now(mcp->loop);
    session_unlink(mcp, s);
    session_link_newest(mcp, s);
    return s;
}

/* --- what a client sent ------------------------------------------------------------------ */

/* How many times the request carries the header name (a second copy may disagree). */
static unsigned header_count(struct request *req, const char *name)
{
    const char *const names[] = {name};
    size_t index;
    const char *value;

    return request_headers_find(req, names, 1, &index, &value);
}

static bool is_session_version(const char *v)
{
    for (size_t i = 0; v && i < N_SESSION_VERSIONS; i++)
        if (strcmp(v, session_versions[i]) == 0)
            return true;
    return false;
}

/* Every version this server speaks, newest first. New reference. */
static json_t *supported_versions(void)
{
    json_t *a = json_pack("[s]", MODERN_VERSION);

    for (size_t i = 0; i < N_SESSION_VERSIONS; i++)
        json_array_append_new(a, json_string(session_versions[i]));
    return a;
}

/* Reads the JSON-RPC envelope of body into m: 0, or -1 with *ret_error the error to answer
 * (400). */
static int message_read(json_t *body, struct message *m, json_t **ret_error)
{
    json_t *version = json_object_get(body, "jsonrpc"), *meta;

    *m = (struct message){.body = body};
    if (json_is_array(body)) {
        *ret_error = rpc_error(NULL, RPC_INVALID_REQUEST, NULL,
                               "batches are not supported (MCP rejects them since 2025-06-18): "
                               "send one JSON-RPC message per request");
        return -1;
    }
    if (!json_is_object(body)) {
        *ret_error =
            rpc_error(NULL, RPC_INVALID_REQUEST, NULL, "a JSON-RPC message is a JSON object");
        return -1;
    }
    m->id = json_object_get(body, "id");
    if (m->id && !json_is_string(m->id) && !json_is_integer(m->id)) {
        *ret_error =
            rpc_error(NULL, RPC_INVALID_REQUEST, NULL, "id must be a string or an integer");
        return -1;
    }
    if (!json_is_string(version) || strcmp(json_string_value(version), "2.0") != 0) {
        *ret_error = rpc_error(m->id, RPC_INVALID_REQUEST, NULL, "jsonrpc must be \"2.0\"");
        return -1;
    }
    if (json_object_get(body, "method") && !json_is_string(json_object_get(body, "method"))) {
        *ret_error = rpc_error(m->id, RPC_INVALID_REQUEST, NULL, "method must be a string");
        return -1;
    }
    m->method = json_string_value(json_object_get(body, "method"));
    if (!m->method) {
        if (m->id && (json_object_get(body, "result") || json_object_get(body, "error")))
            return 0; /* a client's response: we never ask, so it is acknowledged */
        *ret_error = rpc_error(m->id, RPC_INVALID_REQUEST, NULL,
                               "a JSON-RPC request has a method (and an id)");
        return -1;
    }
    m->params = json_object_get(body, "params");
    if (m->params && !json_is_object(m->params)) {
        *ret_error = rpc_error(m->id, RPC_INVALID_REQUEST, NULL, "params must be an object");
        return -1;
    }
    if (!m->id && strncmp(m->method, "notifications/", 14) != 0) {
        *ret_error = rpc_error(NULL, RPC_INVALID_REQUEST, NULL,
                               "%.100s is a request: it needs an id (only notifications/... "
                               "go without one)",
                               m->method);
        return -1;
    }
    meta = json_object_get(m->params, "_meta");
    m->modern = json_object_get(meta, META_VERSION) != NULL;
    return 0;
}

/* The checks of a 2026-07-28 request (its _meta, and the headers that mirror its body):
 * 0, or -1 with *ret_error. */
static int modern_check(struct request *req, const struct message *m, json_t **ret_error)
{
    json_t *meta = json_object_get(m->params, "_meta");
    const char *version = json_string_value(json_object_get(meta, META_VERSION));
    const char *header = request_header(req, "MCP-Protocol-Version");
    const char *method = request_header(req, "Mcp-Method");
    const char *name = request_header(req, "Mcp-Name");
    const char *tool = json_string_value(json_object_get(m->params, "name"));
    static const char *const mirrored[] = {"MCP-Protocol-Version", "Mcp-Method", "Mcp-Name"};

    if (!version) {
        *ret_error = rpc_error(m->id, RPC_INVALID_PARAMS, NULL,
                               "_meta[\"" META_VERSION "\"] must be a string");
        return -1;
    }
    for (size_t i = 0; i < sizeof(mirrored) / sizeof(mirrored[0]); i++) {
        if (header_count(req, mirrored[i]) > 1) {
            *ret_error = rpc_error(m->id, RPC_HEADER_MISMATCH, NULL,
                                   "the %s header is sent more than once", mirrored[i]);
            return -1;
        }
    }
    if (m->id && !header) {
        *ret_error = rpc_error(m->id, RPC_HEADER_MISMATCH, NULL,
                               "the MCP-Protocol-Version header is missing");
        return -1;
    }
    if (header && strcmp(header, version) != 0) {
        *ret_error = rpc_error(m->id, RPC_HEADER_MISMATCH, NULL,
                               "the MCP-Protocol-Version header (%.40s) is not the version in "
                               "_meta (%.40s)",
                               header, version);
        return -1;
    }
    if (strcmp(version, MODERN_VERSION) != 0) {
        *ret_error = rpc_error(
            m->id, RPC_BAD_VERSION,
            json_pack("{s:o, s:s}", "supported", supported_versions(), "requested", version),
            "unsupported protocol version %.40s (supported: " MODERN_VERSION
            " statelessly; 2025-11-25, 2025-06-18 and 2025-03-26 after "
            "initialize)",
            version);
        return -1;
    }
    if (!json_is_object(json_object_get(meta, META_CAPABILITIES))) {
        *ret_error = rpc_error(m->id, RPC_INVALID_PARAMS, NULL,
                               "_meta[\"" META_CAPABILITIES "\"] must be an object");
        return -1;
    }
    if (!m->id)
        return 0; /* notifications need no headers */
    if (!method || strcmp(method, m->method) != 0) {
        *ret_error = rpc_error(m->id, RPC_HEADER_MISMATCH, NULL,
                               method ? "the Mcp-Method header (%.60s) is not the body's method"
                                      : "the Mcp-Method header is missing%.0s",
                               method ? method : "");
        return -1;
    }
    if (strcmp(m->method, "tools/call") == 0 && (!name || !tool || strcmp(name, tool) != 0)) {
        *ret_error = rpc_error(m->id, RPC_HEADER_MISMATCH, NULL,
                               name ? "the Mcp-Name header (%.60s) is not the tool the body calls"
                                    : "the Mcp-Name header is missing%.0s",
                               name ? name : "");
        return -1;
    }
    return 0;
}

/* --- tool calls ------------------------------------------------------------------------ */

static void pending_free(struct pending *p)
{
    if (p->sub)
        events_unsubscribe(p->mcp->hub, p->sub);
    json_decref(p->id);
    json_decref(p->progress_token);
    json_decref(p->call.args);
    p->mcp->n_calls--;
    free(p);
}

/* Writes one JSON-RPC message (taken) as an event of the stream. */
static bool stream_message(struct stream *st, json_t *msg, bool past_cap)
{
    char *json = json_dumps(msg, JSON_COMPACT), *text;
    bool ok = true;

    json_decref(msg);
    if (!json)
        fatal("out of memory (json_dumps)");
    text = xasprintf("event: message\ndata: %s\n\n", json);
    if (past_cap)
        stream_write_all(st, text, strlen(text));
    else
        ok = stream_write(st, text, strlen(text));
    free(text);
    free(json);
    return ok;
}

/* A call of a tool that changes things is one line of the audit log, with the status the
 * REST API would have answered. */
static void audit_end(struct pending *p, unsigned status)
{
    if (p->tool && p->tool->changes_things)
        gate_record(p->mcp->gate, p->audit_req, p->tool->action,
                    p->call.service[0] ? p->call.service : NULL, status);
}

void mcp_call_done(struct mcp_call *call, json_t *structured, const char *message)
{
    struct pending *p = (struct pending *)call;
    json_t *result, *msg;
    char *text;

    if (structured) {
        text = json_dumps(structured, JSON_COMPACT);
        if (!text)
            fatal("out of memory (json_dumps)");
        result = json_pack("{s:[{s:s, s:s}], s:o, s:b}", "content", "type", "text", "text", text,
                           "structuredContent", structured, "isError", false);
        free(text);
    } else {
        result = json_pack("{s:[{s:s, s:o}], s:b}", "content", "type", "text", "text",
                           json_text(message), "isError", true);
    }
    msg = rpc_result(p->id, result, p->modern);
    audit_end(p, p->call.status);
    if (p->answered)
        *p->answered = true;
    if (p->st) {
        stream_message(p->st, msg, true);
        stream_end(p->st, NULL, 0);
    } else {
        request_set_abort(p->req, NULL, NULL);
        request_reply_json(p->req, MHD_HTTP_OK, msg);
    }
    pending_free(p);
}

/* The client went away (or the server stops): what the call waits for is let go (an
 * operation goes on without it). */
static void on_call_gone(void *data)
{
    struct pending *p = data;

    audit_end(p, CLIENT_GONE);
    if (p->call.cancel)
        p->call.cancel(&p->call);
    pending_free(p);
}

/* Sends one progress notification: how the waiting start goes. */
static void progress(struct pending *p, const char *message)
{
    p->progress += 1;
    stream_message(p->st,
                   json_pack("{s:s, s:s, s:{s:O, s:f, s:o}}", "jsonrpc", "2.0", "method",
                             "notifications/progress", "params", "progressToken", p->progress_token,
                             "progress", p->progress, "message", json_text(message)),
                   false);
}

/* The events of a waiting start: its service's state changes, and the holders it stops to
 * free the GPU, each a progress notification. */
static void on_call_event(void *data, const struct event *ev)
{
    struct pending *p = data;
    const char *from, *to, *reason;
    char message[512];

    if (!ev->service)
        return;
    if (ev->kind == EVENT_PREEMPT &&
        strcmp(json_string_value(json_object_get(ev->data, "for")) ?: "", p->call.service) == 0) {
        snprintf(message, sizeof(message), "%s is stopped to free the GPU for %s", ev->service,
                 p->call.service);
        progress(p, message);
        return;
    }
    if (ev->kind != EVENT_STATE || strcmp(ev->service, p->call.service) != 0)
        return;
    from = json_string_value(json_object_get(ev->data, "from"));
    to = json_string_value(json_object_get(ev->data, "to"));
    reason = json_string_value(json_object_get(ev->data, "reason"));
    snprintf(message, sizeof(message), "%s: %s -> %s%s%s", ev->service, from ? from : "?",
             to ? to : "?", reason ? ": " : "", reason ? reason : "");
    progress(p, message);
}

/* The inputSchema of tool, as tools/list shows it. */
static const json_t *input_schema(const struct mcp *mcp, const struct mcp_tool *tool)
{
    json_t *t;
    size_t i;

    json_array_foreach(mcp->tools, i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "name")), tool->name) == 0)
            return json_object_get(t, "inputSchema");
    }
    fatal("mcp: the tool %s is not in the list", tool->name);
}

/* Runs the call's tool; a JSON answer that does not come at once is waited for, with a
 * deadline (the service's start_period more for a start). */
static void run(struct pending *p, const struct mcp_tool *tool, struct request *req)
{
    bool answered = false;
    const struct service *svc = registry_find(p->mcp->reg, p->call.service);
    /* Read now: the tool may change the registry (a rescan). */
    uint64_t deadline = CALL_TIMEOUT_MS + (svc ? svc->manifest->health_start_period_ms : 0);

    p->answered = &answered;
    tool->run(&p->call); /* may answer (and free p) at once */
    if (answered)
        return;
    p->answered = NULL;
    if (p->req) {
        request_suspend(req, deadline);
        request_set_abort(req, on_call_gone, p);
    }
}

/* tools/call: the tool, its arguments, the role it needs; then it runs, answered now, later
 * (suspended) or through an event stream with its progress. */
static void tools_call(struct mcp *mcp, struct request *req, const struct message *m)
{
    const char *name = json_string_value(json_object_get(m->params, "name"));
    json_t *args = json_object_get(m->params, "arguments");
    json_t *token = json_object_get(json_object_get(m->params, "_meta"), "progressToken");
    const struct mcp_tool *tool = mcp_tool_find(name);
    struct pending *p;
    char err[512];
    const char *service;

    if (!tool) {
        reply(req, MHD_HTTP_OK,
              name ? rpc_error(m->id, RPC_INVALID_PARAMS, NULL,
                               "unknown tool '%.64s' (tools/list lists them)", name)
                   : rpc_error(m->id, RPC_INVALID_PARAMS, NULL,
                               "params.name must be the name of a tool"),
              NULL);
        return;
    }
    if (args && !json_is_object(args)) {
        reply(req, MHD_HTTP_OK,
              rpc_error(m->id, RPC_INVALID_PARAMS, NULL, "params.arguments must be an object"),
              NULL);
        return;
    }
    args = args ? json_incref(args) : json_object();
    if (mcp_tool_check(tool, input_schema(mcp, tool), args, err, sizeof(err)) < 0) {
        json_decref(args);
        reply(req, MHD_HTTP_OK, rpc_error(m->id, RPC_INVALID_PARAMS, NULL, "%s", err), NULL);
        return;
    }
    p = xcalloc(1, sizeof(*p));
    p->mcp = mcp;
    p->call.reg = mcp->reg;
    p->call.sup = mcp->sup;
    p->call.args = args;
    service = json_string_value(json_object_get(args, "name"));
    snprintf(p->call.service, sizeof(p->call.service), "%s", service ? service : "");
    p->call.status = MHD_HTTP_OK;
    p->id = json_incref(m->id);
    p->modern = m->modern;
    p->audit_req = req;
    mcp->n_calls++;
    if (!gate_allows(mcp->gate, req, tool->need, tool->action, service, err, sizeof(err))) {
        p->req = req; /* audited by the gate: p->tool stays NULL */
        mcp_call_fail(&p->call, MHD_HTTP_FORBIDDEN, "refused: %s", err);
        return;
    }
    p->tool = tool;
    if (token && (json_is_string(token) || json_is_integer(token)) &&
        json_is_true(json_object_get(args, "wait_healthy")) &&
        request_header_lists(req, MHD_HTTP_HEADER_ACCEPT, "text/event-stream", false) &&
        !request_server_stopping(req)) {
        static const char *const headers[] = {"X-Accel-Buffering", "no", NULL};
        p->st = request_stream(req, MHD_HTTP_OK, "text/event-stream", headers, STREAM_CAP,
                               on_call_gone, p);
        if (!p->st) {
            audit_end(p, CLIENT_GONE);
            pending_free(p);
            return;
        }
        p->progress_token = json_incref(token);
        p->sub = events_subscribe(mcp->hub, on_call_event, p);
    } else {
        p->req = req;
    }
    run(p, tool, req);
}

/* --- methods ------------------------------------------------------------------------------ */

/* server/discover (2026-07-28; answered in every era). */
static json_t *discover_result(void)
{
    return json_pack("{s:o, s:{s:{s:b}}, s:{s:s, s:s, s:s}, s:s, s:i, s:s}", "supportedVersions",
                     supported_versions(), "capabilities", "tools", "listChanged", false,
                     "serverInfo", "name", "service-nanny", "title", "Service Nanny", "version",
                     NANNY_VERSION, "instructions", instructions, "ttlMs", 0, "cacheScope",
                     "private");
}

/* initialize (the session revisions): a new session, in the version the client asked for
 * when we speak it, else our newest. */
static void initialize(struct mcp *mcp, struct request *req, const struct message *m)
{
    json_t *asked = json_object_get(m->params, "protocolVersion");
    json_t *caps = json_object_get(m->params, "capabilities");
    json_t *info = json_object_get(m->params, "clientInfo");
    const char *version = json_string_value(asked);
    struct session *s;
    json_t *result;

    if (!json_is_string(asked) || !json_is_object(caps) || !json_is_object(info)) {
        reply(req, MHD_HTTP_BAD_REQUEST,
              rpc_error(m->id, RPC_INVALID_PARAMS, NULL,
                        "initialize needs params.protocolVersion (a string), "
                        "params.capabilities and params.clientInfo (objects)"),
              NULL);
        return;
    }
    if (!is_session_version(version))
        version = session_versions[0];
    s = session_new(mcp);
    result = json_pack("{s:s, s:{s:{s:b}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", version,
                       "capabilities", "tools", "listChanged", false, "serverInfo", "name",
                       "service-nanny", "title", "Service Nanny", "version", NANNY_VERSION,
                       "instructions", instructions);
    log_debug("mcp: session %.8s… begins (%s, client %.60s)", s->id, version,
              json_string_value(json_object_get(info, "name")) ?: "?");
    reply(req, MHD_HTTP_OK, rpc_result(m->id, result, false), s->id);
}

/* A request or notification that passed its era's checks. */
static void dispatch(struct mcp *mcp, struct request *req, const struct message *m)
{
    json_t *result;

    if (!m->id) {
        reply_accepted(req); /* notifications/initialized, cancelled, ...: nothing to do */
        return;
    }
    if (strcmp(m->method, "tools/call") == 0) {
        tools_call(mcp, req, m);
        return;
    }
    if (strcmp(m->method, "tools/list") == 0) {
        result = json_pack("{s:O}", "tools", mcp->tools);
        if (m->modern) {
            json_object_set_new(result, "ttlMs", json_integer(0));
            json_object_set_new(result, "cacheScope", json_string("private"));
        }
    } else if (strcmp(m->method, "ping") == 0) {
        result = json_object();
    } else if (strcmp(m->method, "server/discover") == 0) {
        result = discover_result();
    } else {
        reply(req, MHD_HTTP_OK,
              rpc_error(m->id, RPC_METHOD_NOT_FOUND, NULL,
                        "unknown method '%.100s' (this server offers tools: tools/list, "
                        "tools/call)",
                        m->method),
              NULL);
        return;
    }
    reply(req, MHD_HTTP_OK, rpc_result(m->id, result, m->modern), NULL);
}

/* A session revision's request: initialize begins a session; everything else names one. */
static void session_request(struct mcp *mcp, struct request *req, const struct message *m)
{
    const char *version = request_header(req, "MCP-Protocol-Version");
    const char *id = request_header(req, "Mcp-Session-Id");

    if (header_count(req, "MCP-Protocol-Version") > 1) {
        reply(req, MHD_HTTP_BAD_REQUEST,
              rpc_error(m->id, RPC_BAD_REQUEST, NULL,
                        "Bad Request: the MCP-Protocol-Version header is sent more than once"),
              NULL);
        return;
    }
    if (version && strcmp(version, MODERN_VERSION) == 0) {
        reply(req, MHD_HTTP_BAD_REQUEST,
              rpc_error(m->id, RPC_INVALID_PARAMS, NULL,
                        "a " MODERN_VERSION " request carries _meta[\"" META_VERSION
                        "\"] and _meta[\"" META_CAPABILITIES "\"] in its params"),
              NULL);
        return;
    }
    if (version && !is_session_version(version)) {
        reply(req, MHD_HTTP_BAD_REQUEST,
              rpc_error(m->id, RPC_BAD_REQUEST, NULL,
                        "Bad Request: unsupported protocol version %.40s (supported: "
                        "2025-11-25, 2025-06-18, 2025-03-26; " MODERN_VERSION " statelessly)",
                        version),
              NULL);
        return;
    }
    if (m->method && strcmp(m->method, "initialize") == 0) {
        if (!m->id) {
            reply(req, MHD_HTTP_BAD_REQUEST,
                  rpc_error(NULL, RPC_INVALID_REQUEST, NULL, "initialize needs an id"), NULL);
            return;
        }
        initialize(mcp, req, m);
        return;
    }
    if (!id) {
        reply(req, MHD_HTTP_BAD_REQUEST,
              rpc_error(m->id, RPC_BAD_REQUEST, NULL,
                        "Bad Request: the Mcp-Session-Id header is missing: begin with "
                        "initialize (or send a " MODERN_VERSION " request with its _meta)"),
              NULL);
        return;
    }
    if (!session_use(mcp, id)) {
        reply(req, MHD_HTTP_NOT_FOUND,
              rpc_error(m->id, RPC_NO_SESSION, NULL,
                        "Session not found: it ended or expired; initialize again"),
              NULL);
        return;
    }
    if (!m->method) {
        reply_accepted(req); /* a response to a request we never send */
        return;
    }
    dispatch(mcp, req, m);
}

/* DELETE /mcp: the client ends its session. */
static void delete_session(struct mcp *mcp, struct request *req)
{
    const char *id = request_header(req, "Mcp-Session-Id");
    struct session *s;

    if (!id) {
        reply(req, MHD_HTTP_BAD_REQUEST,
              rpc_error(NULL, RPC_BAD_REQUEST, NULL,
                        "Bad Request: DELETE ends the session its Mcp-Session-Id header names"),
              NULL);
        return;
    }
    s = session_use(mcp, id);
    if (!s) {
        reply(req, MHD_HTTP_NOT_FOUND,
              rpc_error(NULL, RPC_NO_SESSION, NULL, "Session not found: it ended or expired"),
              NULL);
        return;
    }
    session_end(mcp, s);
    request_reply_text(req, MHD_HTTP_OK, "", 0);
}

void mcp_handle(void *data, struct request *req)
{
    struct mcp *mcp = data;
    struct message m;
    json_error_t error;
    json_t *body, *refusal = NULL;
    size_t len;
    const char *text;

    if (strcmp(request_method(req), "DELETE") == 0) {
        delete_session(mcp, req);
        return;
    }
    if (!request_header_lists(req, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json", false)) {
        reply(req, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
              rpc_error(NULL, RPC_BAD_REQUEST, NULL,
                        "Unsupported Media Type: send Content-Type: application/json"),
              NULL);
        return;
    }
    if (request_header(req, MHD_HTTP_HEADER_ACCEPT) &&
        !request_header_lists(req, MHD_HTTP_HEADER_ACCEPT, "application/json", true)) {
        reply(req, MHD_HTTP_NOT_ACCEPTABLE,
              rpc_error(NULL, RPC_BAD_REQUEST, NULL,
                        "Not Acceptable: accept application/json and text/event-stream"),
              NULL);
        return;
    }
    text = request_body(req, &len);
    body = json_loadb(text ? text : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &error);
    if (!body) {
        reply(req, MHD_HTTP_BAD_REQUEST,
              rpc_error(NULL, RPC_PARSE_ERROR, NULL, "Parse error: %s (at byte %d)", error.text,
                        error.position),
              NULL);
        return;
    }
    if (message_read(body, &m, &refusal) < 0 || (m.modern && modern_check(req, &m, &refusal) < 0))
        reply(req, MHD_HTTP_BAD_REQUEST, refusal, NULL);
    else if (m.modern && strcmp(m.method, "initialize") == 0)
        reply(req, MHD_HTTP_OK,
              rpc_error(m.id, RPC_METHOD_NOT_FOUND, NULL,
                        MODERN_VERSION " has no initialize: call server/discover or any method"),
              NULL);
    else if (m.modern)
        dispatch(mcp, req, &m);
    else
        session_request(mcp, req, &m);
    json_decref(body);
}

/* --- the surface -------------------------------------------------------------------------- */

struct mcp *mcp_new(uv_loop_t *loop, struct registry *reg, struct supervisor *sup,
                    struct gate *gate, struct events *hub, const struct config *config)
{
    struct mcp *mcp = xcalloc(1, sizeof(*mcp));

    mcp->loop = loop;
    mcp->reg = reg;
    mcp->sup = sup;
    mcp->gate = gate;
    mcp->hub = hub;
    mcp->sessions_max = config->mcp_sessions ? config->mcp_sessions : CONFIG_MCP_SESSIONS_DEFAULT;
    mcp->idle_ms =
        config->mcp_session_idle_ms ? config->mcp_session_idle_ms : CONFIG_MCP_IDLE_DEFAULT_MS;
    mcp->sessions = strmap_new();
    mcp->tools = mcp_tools_list();
    return mcp;
}

void mcp_free(struct mcp *mcp)
{
    if (!mcp)
        return;
    if (mcp->n_calls)
        log_error("mcp: %zu tool calls outlive the server", mcp->n_calls);
    while (mcp->oldest)
        session_end(mcp, mcp->oldest);
    strmap_free(mcp->sessions, NULL);
    json_decref(mcp->tools);
    free(mcp);
}

size_t mcp_sessions(const struct mcp *mcp)
{
    return strmap_count(mcp->sessions);
}
