/* nanny health|ls|ps|status|start|stop|restart|rediscover|logs: one request each (start
 * --wait is one long request with ?wait=healthy, with a live line on a terminal; logs -f
 * one streamed answer: live.c), the answer printed for a person or, with --json, as the
 * API's JSON. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/ctl.h"
#include "cli/live.h"
#include "lib/alloc.h"
#include "lib/units.h"

enum {
    OPT_HELP = 'h',
    OPT_LINES = 'n',
    OPT_FOLLOW = 'f',
    OPT_URL = 256,
    OPT_KEY,
    OPT_CACERT,
    OPT_JSON,
    OPT_FORCE,
    OPT_WAIT,
    OPT_TIMEOUT,
};

static const struct option ctl_options[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"key", required_argument, NULL, OPT_KEY},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"json", no_argument, NULL, OPT_JSON},
    {"force", no_argument, NULL, OPT_FORCE},
    {"wait", no_argument, NULL, OPT_WAIT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"lines", required_argument, NULL, OPT_LINES},
    {"follow", no_argument, NULL, OPT_FOLLOW},
    {"help", no_argument, NULL, OPT_HELP},
    {0},
};

/* One command: its name, whether it takes NAME, the options it accepts, its help. */
struct ctl_command {
    const char *name;
    bool takes_name;
    unsigned options; /* bits: 1 json, 2 force, 4 wait, 8 timeout, 16 lines, 32 follow */
    const char *summary;
    const char *example;
};

enum { O_JSON = 1, O_FORCE = 2, O_WAIT = 4, O_TIMEOUT = 8, O_LINES = 16, O_FOLLOW = 32 };

static const struct ctl_command commands[] = {
    {"health", false, O_JSON, "the daemon's own health", "nanny health"},
    {"ls", false, O_JSON, "every service: state, health, GPU, port, uptime, restarts, error",
     "nanny ls"},
    {"ps", false, O_JSON, "the same as ls", "nanny ps --json"},
    {"status", true, O_JSON, "one service's status", "nanny status my-service"},
    {"start", true, O_FORCE | O_WAIT | O_TIMEOUT,
     "starts a service; --force stops the GPU holder, --wait waits until healthy, --timeout "
     "DUR is how long this command waits (exit 5, the service left as it is); on a "
     "terminal one live line shows its state, the seconds elapsed and its last health "
     "result",
     "nanny start my-service --wait --timeout 2m"},
    {"stop", true, 0, "stops a service", "nanny stop my-service"},
    {"restart", true, 0, "stops then starts a service", "nanny restart my-service"},
    {"rediscover", false, O_JSON, "rescans the services folder", "nanny rediscover"},
    {"logs", true, O_LINES | O_FOLLOW,
     "the last N lines of a service's log (-n N, default 50); -f then prints new lines as "
     "they are written, until Ctrl-C",
     "nanny logs my-service -n 100 -f"},
};

struct ctl_args {
    const struct ctl_command *cmd;
    struct client client;
    const char *name;
    bool json, force, wait, follow;
    uint64_t timeout_ms;
    const char *lines;
};

static const struct ctl_command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

bool ctl_is_command(const char *cmd)
{
    return find_command(cmd) != NULL;
}

static void ctl_usage(const struct ctl_command *cmd, FILE *out)
{
    fprintf(out, "usage: nanny %s%s [options]\n%s.\noptions:\n", cmd->name,
            cmd->takes_name ? " NAME" : "", cmd->summary);
    if (cmd->options & O_JSON)
        fprintf(out, "      --json            the API's JSON as it is\n");
    if (cmd->options & O_FORCE)
        fprintf(out, "      --force           stop the service that holds the GPU first\n");
    if (cmd->options & O_WAIT)
        fprintf(out, "      --wait            wait until the service is healthy\n");
    if (cmd->options & O_TIMEOUT)
        fprintf(out, "      --timeout DUR     how long to wait (30s, 2m); exit 5 past it\n");
    if (cmd->options & O_LINES)
        fprintf(out, "  -n, --lines N         how many lines (default 50)\n");
    if (cmd->options & O_FOLLOW)
        fprintf(out, "  -f, --follow          then print new lines as they come, until Ctrl-C\n");
    fprintf(out,
            "      --url URL         the daemon (env NANNY_URL; default %s)\n"
            "      --key KEY         the API key (env NANNY_KEY)\n"
            "      --cacert FILE     trust this CA for an HTTPS daemon (env NANNY_CACERT)\n"
            "  -h, --help            this help\n"
            "exit codes: 0 ok, 1 failed, 2 usage, 3 GPU conflict, 4 unreachable, 5 timed "
            "out, 6 unauthorized\n"
            "example:\n  %s\n",
            CLIENT_DEFAULT_URL, cmd->example);
}

static int usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports bad usage: exit code 2. */
static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "nanny %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see nanny %s --help)\n", cmd);
    return CLIENT_EXIT_USAGE;
}

/* Reads the command line into *a; -1 when --help was printed, else 0 or an exit code. */
static int parse(int argc, char **argv, struct ctl_args *a)
{
    const char *cmd = argv[0];
    unsigned seen = 0;
    int opt;

    a->cmd = find_command(cmd);
    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "hn:f", ctl_options, NULL)) != -1) {
        switch (opt) {
        case OPT_URL:
            a->client.url = optarg;
            break;
        case OPT_KEY:
            a->client.key = optarg;
            break;
        case OPT_CACERT:
            a->client.cacert = optarg;
            break;
        case OPT_JSON:
            a->json = true;
            seen |= O_JSON;
            break;
        case OPT_FORCE:
            a->force = true;
            seen |= O_FORCE;
            break;
        case OPT_WAIT:
            a->wait = true;
            seen |= O_WAIT;
            break;
        case OPT_TIMEOUT:
            if (units_parse_duration(optarg, &a->timeout_ms) < 0 || a->timeout_ms == 0)
                return usage_error(cmd, "--timeout: '%.100s' is not a duration (30s, 2m)", optarg);
            seen |= O_TIMEOUT;
            break;
        case OPT_LINES:
            if (strspn(optarg, "0123456789") != strlen(optarg) || !*optarg || strlen(optarg) > 6)
                return usage_error(cmd, "-n: '%.100s' is not a number of lines", optarg);
            a->lines = optarg;
            seen |= O_LINES;
            break;
        case OPT_FOLLOW:
            a->follow = true;
            seen |= O_FOLLOW;
            break;
        case OPT_HELP:
            ctl_usage(a->cmd, stdout);
            return -1;
        default:
            return usage_error(cmd, "%.100s: unknown option or missing value", argv[optind - 1]);
        }
    }
    if (seen & ~a->cmd->options)
        return usage_error(cmd, "an option this command does not take");
    if (a->cmd->takes_name) {
        if (optind >= argc)
            return usage_error(cmd, "give the service's NAME");
        a->name = argv[optind++];
    }
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%.100s'", argv[optind]);
    client_defaults(&a->client);
    a->client.timeout_ms = (long)a->timeout_ms;
    return 0;
}

/* Prints JSON as the API gave it, indented. */
static void print_json(const json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    putchar('\n');
}

static const char *text(const json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));

    return s ? s : dflt;
}

/* "3d4h", "2h5m", "4m10s", "12s" from started_at (ISO 8601, UTC), or "-". */
static void uptime(const json_t *st, char *buf, size_t size)
{
    const char *at = json_string_value(json_object_get(st, "started_at"));
    struct tm tm = {0};
    long s;

    snprintf(buf, size, "-");
    if (!at || !strptime(at, "%Y-%m-%dT%H:%M:%S", &tm))
        return;
    s = (long)(time(NULL) - timegm(&tm));
    if (s < 0)
        s = 0;
    if (s >= 86400)
        snprintf(buf, size, "%ldd%ldh", s / 86400, s % 86400 / 3600);
    else if (s >= 3600)
        snprintf(buf, size, "%ldh%ldm", s / 3600, s % 3600 / 60);
    else if (s >= 60)
        snprintf(buf, size, "%ldm%lds", s / 60, s % 60);
    else
        snprintf(buf, size, "%lds", s);
}

static const char *state_colour(const char *state)
{
    if (strcmp(state, "running") == 0)
        return "\033[32m";
    if (strcmp(state, "failed") == 0 || strcmp(state, "unhealthy") == 0)
        return "\033[31m";
    if (strcmp(state, "starting") == 0 || strcmp(state, "stopping") == 0)
        return "\033[33m";
    return "";
}

static void print_table(const json_t *services)
{
    bool colour = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
    const json_t *st;
    size_t i;

    printf("%-24s %-10s %-8s %-4s %-6s %-8s %-8s %s\n", "NAME", "STATE", "HEALTH", "GPU", "PORT",
           "UPTIME", "RESTARTS", "LAST ERROR");
    json_array_foreach(services, i, st)
    {
        const char *state = text(st, "state", "?");
        const char *error = text(st, "last_error", "");
        const json_t *port = json_object_get(st, "port");
        char up[32], port_text[16] = "-";

        uptime(st, up, sizeof(up));
        if (json_is_integer(port))
            snprintf(port_text, sizeof(port_text), "%lld", (long long)json_integer_value(port));
        printf("%-24s %s%-10s%s %-8s %-4s %-6s %-8s ", text(st, "name", "?"),
               colour ? state_colour(state) : "", state,
               colour && *state_colour(state) ? "\033[0m" : "",
               json_is_true(json_object_get(st, "is_healthy")) ? "ok" : "-",
               json_is_true(json_object_get(st, "gpu_required")) ? "yes" : "no", port_text, up);
        if (*error) /* no blanks at the end of a line without one */
            printf("%-8lld %.50s%s\n",
                   (long long)json_integer_value(json_object_get(st, "restarts")), error,
                   strlen(error) > 50 ? "..." : "");
        else
            printf("%lld\n", (long long)json_integer_value(json_object_get(st, "restarts")));
    }
}

static void print_status(const json_t *st)
{
    char up[32];

    uptime(st, up, sizeof(up));
    printf("%s: %s%s\n", text(st, "name", "?"), text(st, "state", "?"),
           json_is_true(json_object_get(st, "is_healthy")) ? ", healthy" : "");
    printf("  gpu: %s  restarts: %lld  uptime: %s\n",
           json_is_true(json_object_get(st, "gpu_required")) ? "yes" : "no",
           (long long)json_integer_value(json_object_get(st, "restarts")), up);
    if (json_string_value(json_object_get(st, "last_error")))
        printf("  last error: %s\n", text(st, "last_error", ""));
    if (json_string_value(json_object_get(st, "gpu_warning")))
        printf("  gpu warning: %s\n", text(st, "gpu_warning", ""));
}

static int run(const struct ctl_args *a)
{
    const char *cmd = a->cmd->name;
    struct client_response resp;
    char *name = a->name ? client_escape(a->name) : NULL, *path;
    const char *method = "GET", *body = NULL;
    int r;

    if (strcmp(cmd, "health") == 0)
        path = xstrdup("/health");
    else if (strcmp(cmd, "ls") == 0 || strcmp(cmd, "ps") == 0)
        path = xstrdup("/services");
    else if (strcmp(cmd, "status") == 0)
        path = xasprintf("/services/%s/status", name);
    else if (strcmp(cmd, "logs") == 0 && a->follow) {
        path = xasprintf("/services/%s/logs?tail=%s&follow=1", name, a->lines ? a->lines : "50");
        r = live_logs(&a->client, path, a->name);
        free(path);
        free(name);
        return r;
    } else if (strcmp(cmd, "logs") == 0)
        path = xasprintf("/services/%s/logs?tail=%s", name, a->lines ? a->lines : "50");
    else if (strcmp(cmd, "rediscover") == 0) {
        path = xstrdup("/rediscover");
        method = "POST";
    } else {
        path = xasprintf("/services/%s/%s%s", name, cmd, a->wait ? "?wait=healthy" : "");
        method = "POST";
        body = a->force ? "{\"force\":true}" : NULL;
    }
    if (a->wait && isatty(STDOUT_FILENO))
        r = live_request(&a->client, method, path, body, a->name, &resp);
    else
        r = client_request(&a->client, method, path, body, &resp);
    free(path);
    if (r) {
        if (r == CLIENT_EXIT_TIMEOUT && a->name)
            fprintf(stderr, "nanny %s: %s was left as it is\n", cmd, a->name);
        free(name);
        return r;
    }
    r = client_fail(cmd, a->name, &resp);
    if (r == CLIENT_EXIT_TIMEOUT && resp.status == 504)
        fprintf(stderr, "nanny %s: %s did not become healthy in time and was stopped\n", cmd,
                a->name ? a->name : "the service");
    if (r == 0) {
        if (strcmp(cmd, "logs") == 0)
            fwrite(resp.body, 1, resp.len, stdout);
        else if (a->json && resp.json)
            print_json(resp.json);
        else if (strcmp(cmd, "health") == 0)
            printf("%s: nanny %s, %lld services\n", text(resp.json, "status", "?"),
                   text(resp.json, "version", "?"),
                   (long long)json_integer_value(json_object_get(resp.json, "services")));
        else if (strcmp(cmd, "ls") == 0 || strcmp(cmd, "ps") == 0)
            print_table(json_object_get(resp.json, "services"));
        else if (strcmp(cmd, "status") == 0)
            print_status(resp.json);
        else if (strcmp(cmd, "rediscover") == 0)
            printf("%zu services: %zu added, %zu removed, %zu changed, %zu errors\n",
                   json_array_size(json_object_get(resp.json, "services")),
                   json_array_size(json_object_get(resp.json, "added")),
                   json_array_size(json_object_get(resp.json, "removed")),
                   json_array_size(json_object_get(resp.json, "changed")),
                   json_array_size(json_object_get(resp.json, "errors")));
        else
            printf("%s: %s%s\n", a->name, text(resp.json, "state", "done"),
                   a->wait && json_is_true(json_object_get(resp.json, "is_healthy")) ? ", healthy"
                                                                                     : "");
    }
    client_response_done(&resp);
    free(name);
    return r;
}

int ctl_main(int argc, char **argv)
{
    struct ctl_args a = {0};
    int r = parse(argc, argv, &a);

    if (r < 0)
        return 0;
    if (r > 0)
        return r;
    return run(&a);
}
