/* The MCP tools (SPEC section 7): what an agent may do with the services, each over the
 * core, answering the same JSON the REST API does (http/render.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "http/mcp_internal.h"
#include "http/render.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"

#define LOGS_TAIL_DEFAULT 100

/* --- schemas ---------------------------------------------------------------------------- */

#define NAME_ARG                                                                                   \
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":63,"                              \
    "\"description\":\"The service's name, as list_services shows it.\"}"
#define FORCE_ARG                                                                                  \
    "\"force\":{\"type\":\"boolean\",\"default\":false,\"description\":\"When another GPU "        \
    "service holds the GPU, stop it first. Only set this when the user agreed to stop the "        \
    "holder.\"}"
#define WAIT_ARG                                                                                   \
    "\"wait_healthy\":{\"type\":\"boolean\",\"default\":false,\"description\":\"Answer only "      \
    "once the service passes its health check (it is stopped if it does not within its "           \
    "start_period); progress notifications tell its state changes meanwhile.\"}"
#define NO_ARGS "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}"
#define NAME_ONLY                                                                                  \
    "{\"type\":\"object\",\"properties\":{" NAME_ARG "},\"required\":[\"name\"],"                  \
    "\"additionalProperties\":false}"
#define START_ARGS                                                                                 \
    "{\"type\":\"object\",\"properties\":{" NAME_ARG "," FORCE_ARG "," WAIT_ARG "},"               \
    "\"required\":[\"name\"],\"additionalProperties\":false}"
#define LOGS_ARGS                                                                                  \
    "{\"type\":\"object\",\"properties\":{" NAME_ARG ",\"tail\":{\"type\":\"integer\","            \
    "\"minimum\":0,\"maximum\":10000,\"default\":100,\"description\":\"How many of the last "      \
    "lines to return.\"}},\"required\":[\"name\"],\"additionalProperties\":false}"

/* The status of one service, as GET /services/NAME/status shows it. */
#define STATUS_PROPERTIES                                                                          \
    "\"name\":{\"type\":\"string\"},\"description\":{\"type\":\"string\"},"                        \
    "\"driver\":{\"type\":\"string\"},\"gpu_required\":{\"type\":\"boolean\"},"                    \
    "\"state\":{\"type\":\"string\",\"enum\":[\"stopped\",\"starting\",\"running\","               \
    "\"unhealthy\",\"stopping\",\"failed\"]},\"is_healthy\":{\"type\":\"boolean\"},"               \
    "\"port\":{\"type\":[\"integer\",\"null\"]},\"restarts\":{\"type\":\"integer\"},"              \
    "\"last_error\":{\"type\":[\"string\",\"null\"]},\"health\":{\"type\":\"object\"}"
#define STATUS_REQUIRED "\"required\":[\"name\",\"state\",\"is_healthy\",\"driver\"]"
#define STATUS_SCHEMA                                                                              \
    "{\"type\":\"object\",\"properties\":{" STATUS_PROPERTIES "}," STATUS_REQUIRED "}"
#define STARTED_SCHEMA                                                                             \
    "{\"type\":\"object\",\"properties\":{" STATUS_PROPERTIES ",\"preempted\":{\"type\":"          \
    "\"array\",\"items\":{\"type\":\"string\"}}}," STATUS_REQUIRED "}"
#define LIST_SCHEMA                                                                                \
    "{\"type\":\"object\",\"properties\":{\"services\":{\"type\":\"array\","                       \
    "\"items\":" STATUS_SCHEMA                                                                     \
    "},\"errors\":{\"type\":\"array\",\"items\":{\"type\":\"object\"}}},"                          \
    "\"required\":[\"services\",\"errors\"]}"
#define LOGS_SCHEMA                                                                                \
    "{\"type\":\"object\",\"properties\":{\"lines\":{\"type\":\"array\",\"items\":{\"type\":"      \
    "\"string\"}}},\"required\":[\"lines\"]}"
#define NAMES "{\"type\":\"array\",\"items\":{\"type\":\"string\"}}"
#define REDISCOVER_SCHEMA                                                                          \
    "{\"type\":\"object\",\"properties\":{\"services\":{\"type\":\"array\","                       \
    "\"items\":" STATUS_SCHEMA "},\"added\":" NAMES ",\"removed\":" NAMES ",\"changed\":" NAMES    \
    ","                                                                                            \
    "\"errors\":{\"type\":\"array\"}},\"required\":[\"services\",\"added\",\"removed\","           \
    "\"changed\",\"errors\"]}"
#define GPU_SCHEMA                                                                                 \
    "{\"type\":\"object\",\"properties\":{\"holder\":{\"type\":[\"string\",\"null\"]},"            \
    "\"holders\":" NAMES ",\"queue\":" NAMES ",\"gpu_services\":{\"type\":\"array\",\"items\":"    \
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"state\":{\"type\":"     \
    "\"string\"}},\"required\":[\"name\",\"state\"]}}},\"required\":[\"holder\",\"holders\","      \
    "\"queue\",\"gpu_services\"]}"

/* --- answers ---------------------------------------------------------------------------- */

void mcp_call_fail(struct mcp_call *call, unsigned status, const char *fmt, ...)
{
    char message[1024];
    va_list ap;

    call->status = status;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    mcp_call_done(call, NULL, message);
}

/* The service the call names, or NULL after answering why there is none. */
static struct service *find_service(struct mcp_call *call)
{
    const char *name = json_string_value(json_object_get(call->args, "name"));
    struct service *svc = registry_find(call->reg, name);
    json_t *err;

    if (svc)
        return svc;
    err = registry_find_error(call->reg, name);
    if (err)
        mcp_call_fail(call, 422, "the manifest of %s is invalid: %s (fix its service.yaml)", name,
                      json_string_value(json_object_get(err, "message")) ?: "?");
    else
        mcp_call_fail(call, 404, "there is no service named '%s' (list_services lists them)", name);
    return NULL;
}

/* find_service() for the tools that run services: also refuses when this daemon runs none
 * or (broken) the service's manifest is broken now. */
static struct service *find_runnable(struct mcp_call *call, bool refuse_broken)
{
    struct service *svc = find_service(call);

    if (!svc)
        return NULL;
    if (!call->sup) {
        mcp_call_fail(call, 503, "this daemon runs no services");
        return NULL;
    }
    if (refuse_broken && svc->manifest_error) {
        mcp_call_fail(call, 422, "the manifest of %s is invalid: %s (fix its service.yaml)",
                      svc->name,
                      json_string_value(json_object_get(svc->manifest_error, "message")));
        return NULL;
    }
    return svc;
}

static bool arg_true(const struct mcp_call *call, const char *key)
{
    return json_is_true(json_object_get(call->args, key));
}

/* --- the tools -------------------------------------------------------------------------- */

static void run_list(struct mcp_call *call)
{
    mcp_call_done(call,
                  json_pack("{s:o, s:O}", "services", render_services(call->reg, call->sup),
                            "errors", registry_errors(call->reg)),
                  NULL);
}

static void run_status(struct mcp_call *call)
{
    struct service *svc = find_service(call);

    if (svc)
        mcp_call_done(call, render_status(svc, supervisor_status(call->sup, svc)), NULL);
}

/* Ends a start, restart or stop with what the supervisor did. */
static void on_operation_done(void *data, struct service *svc, const struct supervisor_result *res)
{
    struct mcp_call *call = data;
    json_t *status;

    call->cancel = NULL;
    switch (res->outcome) {
    case SUPERVISOR_OK:
    case SUPERVISOR_ALREADY:
        status = render_status(svc, res->status);
        json_object_set_new(status, "preempted",
                            res->preempted ? json_incref(res->preempted) : json_array());
        mcp_call_done(call, status, NULL);
        return;
    case SUPERVISOR_CONFLICT:
        mcp_call_fail(call, 409,
                      "GPU conflict: %s holds the GPU, so %s was not started. Calling the tool "
                      "again with force: true would stop %s first; do that only if the user "
                      "agrees.",
                      res->holder, svc->name, res->holder);
        return;
    case SUPERVISOR_IMPOSSIBLE:
        mcp_call_fail(call, 422, "%s was not started: %s. Force would not help.", svc->name,
                      res->message);
        return;
    case SUPERVISOR_TIMED_OUT:
        mcp_call_fail(call, 504, "%s: %s is not healthy within its start_period and was stopped",
                      res->message, svc->name);
        return;
    case SUPERVISOR_CANCELLED:
        mcp_call_fail(call, 409, "%s: %s is now %s", res->message, svc->name,
                      lifecycle_state_name(res->status->state));
        return;
    case SUPERVISOR_DRIVER_FAILED:
        mcp_call_fail(call, 502, "%s could not be handled: %s", svc->name, res->message);
        return;
    case SUPERVISOR_UNAVAILABLE:
    case SUPERVISOR_UNRECORDED:
        mcp_call_fail(call, 503, "%s could not be handled: %s", svc->name, res->message);
        return;
    }
}

static void cancel_operation(struct mcp_call *call)
{
    supervisor_op_cancel(call->pending);
}

/* Keeps the call waiting for op (NULL: it was answered already). */
static void wait_operation(struct mcp_call *call, struct supervisor_op *op)
{
    if (!op)
        return;
    call->pending = op;
    call->cancel = cancel_operation;
}

static void start_or_restart(struct mcp_call *call, bool restart)
{
    struct service *svc = find_runnable(call, true);

    if (svc)
        wait_operation(call, supervisor_start(call->sup, svc, arg_true(call, "force"),
                                              arg_true(call, "wait_healthy"), restart,
                                              on_operation_done, call));
}

static void run_start(struct mcp_call *call)
{
    start_or_restart(call, false);
}

static void run_restart(struct mcp_call *call)
{
    start_or_restart(call, true);
}

static void run_stop(struct mcp_call *call)
{
    struct service *svc = find_runnable(call, false);

    if (svc)
        wait_operation(call, supervisor_stop(call->sup, svc, on_operation_done, call));
}

static void on_logs(void *data, char **lines, const char *error)
{
    struct mcp_call *call = data;
    json_t *a;

    call->cancel = NULL;
    if (!lines) {
        mcp_call_fail(call, 502, "the logs could not be read: %s", error);
        return;
    }
    a = json_array();
    for (char **l = lines; *l; l++)
        json_array_append_new(a, json_text(*l));
    mcp_call_done(call, json_pack("{s:o}", "lines", a), NULL);
}

static void cancel_logs(struct mcp_call *call)
{
    supervisor_logs_cancel(call->pending);
}

static void run_logs(struct mcp_call *call)
{
    struct service *svc = find_runnable(call, false);
    json_t *tail = json_object_get(call->args, "tail");
    struct supervisor_logs *l;

    if (!svc)
        return;
    call->cancel = cancel_logs; /* set first: on_logs may come at once */
    l = supervisor_logs(call->sup, svc,
                        tail ? (unsigned)json_integer_value(tail) : LOGS_TAIL_DEFAULT, on_logs,
                        call);
    if (l)
        call->pending = l;
}

static void on_rediscovered(void *data, json_t *diff)
{
    struct mcp_call *call = data;
    json_t *error = json_object_get(diff, "error");

    call->cancel = NULL;
    if (error)
        mcp_call_fail(call, 503, "the services folder could not be read: %s",
                      json_string_value(error));
    else
        mcp_call_done(call, render_rediscovered(call->reg, call->sup, diff), NULL);
}

static void cancel_rescan(struct mcp_call *call)
{
    registry_rescan_cancel(call->reg, call->pending);
}

static void run_rediscover(struct mcp_call *call)
{
    call->cancel = cancel_rescan;
    call->pending = registry_rescan(call->reg, on_rediscovered, call);
}

static void run_gpu(struct mcp_call *call)
{
    json_t *gpu = call->sup ? supervisor_gpu(call->sup)
                            : json_pack("{s:n, s:[], s:[]}", "holder", "holders", "queue");
    json_t *services = json_array();
    size_t n = registry_count(call->reg);

    for (size_t i = 0; i < n; i++) {
        struct service *svc = registry_at(call->reg, i);
        if (svc->manifest->gpu_required)
            json_array_append_new(
                services,
                json_pack("{s:s, s:s}", "name", svc->name, "state",
                          lifecycle_state_name(supervisor_status(call->sup, svc)->state)));
    }
    json_object_set_new(gpu, "gpu_services", services);
    mcp_call_done(call, gpu, NULL);
}

static const struct mcp_tool tools[] = {
    {"list_services", "List services",
     "Lists every service this daemon manages, with its state (stopped, starting, running, "
     "unhealthy, stopping, failed), health, port, whether it needs the GPU, and the manifest "
     "errors of folders that could not be loaded. Start here.",
     NO_ARGS, LIST_SCHEMA, NEED_READ, "list", false, run_list},
    {"service_status", "Service status",
     "The status of one service: its state, is_healthy, its last health check, port, "
     "restarts and last_error.",
     NAME_ONLY, STATUS_SCHEMA, NEED_READ, "status", false, run_status},
    {"start_service", "Start a service",
     "Starts a service (a no-op when it already runs). Only one GPU service may run at a time: "
     "when another holds the GPU the result is an error naming the holder, and nothing "
     "changes; calling again with force: true stops the holder first. With wait_healthy the "
     "answer comes once the service is healthy.",
     START_ARGS, STARTED_SCHEMA, NEED_OPERATE, "start", true, run_start},
    {"stop_service", "Stop a service",
     "Stops a service and answers once nothing of it runs (a no-op when it is stopped).", NAME_ONLY,
     STATUS_SCHEMA, NEED_OPERATE, "stop", true, run_stop},
    {"restart_service", "Restart a service",
     "Stops a service if it runs, then starts it with its current manifest; the GPU rule "
     "applies as for start_service.",
     START_ARGS, STARTED_SCHEMA, NEED_OPERATE, "restart", true, run_restart},
    {"service_logs", "Service logs",
     "The last lines of a service's output (stdout and stderr), oldest first.", LOGS_ARGS,
     LOGS_SCHEMA, NEED_READ, "logs", false, run_logs},
    {"rediscover", "Rediscover services",
     "Rescans the services folder now and answers what was added, removed or changed (the "
     "daemon also rescans by itself when the folder changes).",
     NO_ARGS, REDISCOVER_SCHEMA, NEED_ADMIN, "rediscover", true, run_rediscover},
    {"gpu_status", "GPU status",
     "Who holds the GPU (holder, null when free), which starts wait for it (queue), and the "
     "state of every service that needs the GPU.",
     NO_ARGS, GPU_SCHEMA, NEED_READ, "gpu", false, run_gpu},
};

#define N_TOOLS (sizeof(tools) / sizeof(tools[0]))

const struct mcp_tool *mcp_tool_find(const char *name)
{
    for (size_t i = 0; name && i < N_TOOLS; i++)
        if (strcmp(tools[i].name, name) == 0)
            return &tools[i];
    return NULL;
}

/* A schema of the table as JSON (its text is ours: a broken one is a bug). */
static json_t *schema_json(const char *text)
{
    json_error_t error;
    json_t *schema = json_loads(text, 0, &error);

    if (!schema)
        fatal("MCP tool schema: %s at %d: %s", error.text, error.position, text);
    return schema;
}

json_t *mcp_tools_list(void)
{
    json_t *list = json_array();

    for (size_t i = 0; i < N_TOOLS; i++) {
        const struct mcp_tool *t = &tools[i];
        json_array_append_new(list,
                              json_pack("{s:s, s:s, s:s, s:o, s:o, s:{s:b, s:b, s:b}}", "name",
                                        t->name, "title", t->title, "description", t->description,
                                        "inputSchema", schema_json(t->input_schema), "outputSchema",
                                        schema_json(t->output_schema), "annotations",
                                        "readOnlyHint", !t->changes_things, "destructiveHint",
                                        t->run == run_stop || t->run == run_restart,
                                        "idempotentHint", t->run != run_restart));
    }
    return list;
}

/* --- checking arguments ------------------------------------------------------------------ */

/* True when value has the JSON Schema type named type. */
static bool type_matches(const json_t *value, const char *type)
{
    if (strcmp(type, "string") == 0)
        return json_is_string(value);
    if (strcmp(type, "boolean") == 0)
        return json_is_boolean(value);
    if (strcmp(type, "integer") == 0)
        return json_is_integer(value);
    return false;
}

/* Checks one argument against its property schema (the subset our schemas use: type,
 * minLength, maxLength, minimum, maximum). */
static int check_value(const char *key, json_t *value, const json_t *schema, char *err, size_t size)
{
    const char *type = json_string_value(json_object_get(schema, "type"));
    json_t *min = json_object_get(schema, "minimum"), *max = json_object_get(schema, "maximum");
    json_t *min_len = json_object_get(schema, "minLength");
    json_t *max_len = json_object_get(schema, "maxLength");

    if (!type_matches(value, type)) {
        snprintf(err, size, "arguments.%s must be %s %s", key,
                 strcmp(type, "integer") == 0 ? "an" : "a", type);
        return -1;
    }
    if (json_is_string(value) &&
        ((min_len && json_string_length(value) < (size_t)json_integer_value(min_len)) ||
         (max_len && json_string_length(value) > (size_t)json_integer_value(max_len)))) {
        snprintf(err, size, "arguments.%s must be %lld to %lld characters long", key,
                 (long long)json_integer_value(min_len), (long long)json_integer_value(max_len));
        return -1;
    }
    if (json_is_integer(value) && ((min && json_integer_value(value) < json_integer_value(min)) ||
                                   (max && json_integer_value(value) > json_integer_value(max)))) {
        snprintf(err, size, "arguments.%s must be from %lld to %lld", key,
                 (long long)json_integer_value(min), (long long)json_integer_value(max));
        return -1;
    }
    return 0;
}

int mcp_tool_check(const struct mcp_tool *tool, const json_t *schema, json_t *args, char *err,
                   size_t err_size)
{
    json_t *properties = json_object_get(schema, "properties"), *value, *req;
    const char *key;
    size_t i;

    json_array_foreach(json_object_get(schema, "required"), i, req)
    {
        if (!json_object_get(args, json_string_value(req))) {
            snprintf(err, err_size, "arguments.%s is missing: %s needs it", json_string_value(req),
                     tool->name);
            return -1;
        }
    }
    json_object_foreach(args, key, value)
    {
        json_t *property = json_object_get(properties, key);
        if (!property) {
            snprintf(err, err_size,
                     "arguments.%.64s is not an argument of %s (its inputSchema lists them)", key,
                     tool->name);
            return -1;
        }
        if (check_value(key, value, property, err, err_size) < 0)
            return -1;
    }
    return 0;
}
