/* service.yaml: parsing and validation of one manifest (SPEC section 2). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "manifest.h"
#include "units.h"

#define DEFAULT_HEALTH_PATH        "/health"
#define DEFAULT_HEALTH_INTERVAL_MS 5000
#define DEFAULT_HEALTH_TIMEOUT_MS  2000
#define DEFAULT_START_PERIOD_MS    300000
#define DEFAULT_STOP_TIMEOUT_MS    10000

/* Longest port item worth reading: "[IPv6]:HOST:CONTAINER/udp" fits easily. */
#define PORT_SPEC_MAX 128

static const char *const compose_file_names[] = {
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
};

enum field {
    F_NAME,
    F_DESCRIPTION,
    F_PORTS,
    F_GPU_REQUIRED,
    F_DRIVER,
    F_COMPOSE_FILE,
    F_COMMAND,
    F_WORKDIR,
    F_ENV,
    F_HEALTH,
    F_STOP_TIMEOUT,
    F_RESTART,
    F_COUNT
};

enum health_field { H_PATH, H_PORT, H_INTERVAL, H_TIMEOUT, H_START_PERIOD, H_COUNT };

/* The state of one manifest_parse() call. */
struct parse {
    struct yamldoc *doc;
    const char *dir;
    struct manifest *m;
    struct diags *errors;
    struct diags *warnings;
    struct yamldoc_field fields[F_COUNT];
    int root_line;
    bool failed;
    bool ports_failed;
    bool driver_failed;
    bool has_driver;
    bool has_command;
    char *compose_file; /* compose_file as given, resolved against dir */
};

static void parse_error(struct parse *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void parse_error(struct parse *p, int line, const char *fmt, ...)
{
    va_list ap;
    char *message;

    va_start(ap, fmt);
    if (vasprintf(&message, fmt, ap) < 0)
        fatal("out of memory (diagnostic)");
    va_end(ap);
    diags_add(p->errors, line, "%s", message);
    free(message);
    p->failed = true;
}

/* Records the outcome of a yamldoc reader, which has already reported its error. */
static int check(struct parse *p, int r)
{
    if (r < 0)
        p->failed = true;
    return r;
}

const char *driver_kind_name(enum driver_kind d)
{
    return d == DRIVER_PROCESS ? "process" : "compose";
}

const char *restart_policy_name(enum restart_policy r)
{
    switch (r) {
    case RESTART_ON_FAILURE:
        return "on-failure";
    case RESTART_ALWAYS:
        return "always";
    default:
        return "no";
    }
}

bool manifest_name_valid(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > MANIFEST_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

/* Joins rel to dir (unless rel is absolute) and drops empty and "." components, so that
 * equal paths compare equal. ".." is kept: it is the user's to write. */
static char *path_join(const char *dir, const char *rel)
{
    char *joined = rel[0] == '/' ? xstrdup(rel) : xasprintf("%s/%s", dir, rel);
    char *out = xmalloc(strlen(joined) + 2);
    size_t n = 0;
    const char *p = joined;

    if (*p == '/')
        out[n++] = '/';
    while (*p) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);

        if (len > 0 && !(len == 1 && p[0] == '.')) {
            if (n > 0 && out[n - 1] != '/')
                out[n++] = '/';
            memcpy(out + n, p, len);
            n += len;
        }
        p = *end ? end + 1 : end;
    }
    if (n == 0)
        out[n++] = '.';
    out[n] = '\0';
    free(joined);
    return out;
}

static bool is_regular_file(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void parse_name(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_NAME];
    char quoted[YAMLDOC_QUOTE_MAX + 1];
    char *name;

    if (!f->value) {
        parse_error(p, p->root_line,
                    "missing \"name\": add a line such as \"name: my-service\" (lowercase "
                    "letters, digits, '.', '_' and '-')");
        return;
    }
    if (check(p, yamldoc_read_string(p->doc, f->value, "name", &name, p->errors)) < 0)
        return;
    yamldoc_quote(name, strlen(name), quoted, sizeof(quoted));
    if (name[0] == '\0')
        parse_error(p, yamldoc_line(f->value),
                    "name is empty: give one such as \"name: my-service\"");
    else if (strlen(name) > MANIFEST_NAME_MAX)
        parse_error(p, yamldoc_line(f->value), "name %s is %zu characters long; the limit is %d",
                    quoted, strlen(name), MANIFEST_NAME_MAX);
    else if (!manifest_name_valid(name))
        parse_error(p, yamldoc_line(f->value),
                    "name %s is not valid: use lowercase letters, digits, '.', '_' and '-', "
                    "starting with a letter or digit",
                    quoted);
    else {
        p->m->name = name;
        p->m->name_line = yamldoc_line(f->value);
        return;
    }
    free(name);
}

/* Reads one port number of a mapping, reporting a bad or out-of-range one. */
static int parse_port_number(struct parse *p, int line, const char *key, const char *spec,
                             const char *text, uint16_t *ret)
{
    char quoted_spec[YAMLDOC_QUOTE_MAX + 1], quoted[YAMLDOC_QUOTE_MAX + 1];
    int r = units_parse_port(text, ret);

    if (r == 0)
        return 0;
    yamldoc_quote(spec, strlen(spec), quoted_spec, sizeof(quoted_spec));
    yamldoc_quote(text, strlen(text), quoted, sizeof(quoted));
    if (r == -ERANGE && strcmp(spec, text) == 0)
        parse_error(p, line, "%s: port %s is out of range: ports go from 1 to 65535", key, quoted);
    else if (r == -ERANGE)
        parse_error(p, line, "%s: port %s in %s is out of range: ports go from 1 to 65535", key,
                    quoted, quoted_spec);
    else
        parse_error(p, line,
                    "%s: %s is not a valid port mapping: use \"PORT\", \"HOST:CONTAINER\" or "
                    "\"IP:HOST:CONTAINER\", optionally followed by /tcp or /udp",
                    key, quoted_spec);
    return -EINVAL;
}

/* Reads "PORT", "HOST:CONTAINER" or "IP:HOST:CONTAINER" with an optional "/tcp" or
 * "/udp", the short syntax of docker compose, minus the ranges it also allows. */
static int parse_port_spec(struct parse *p, int line, const char *key, const char *spec,
                           struct port_map *ret)
{
    char quoted[YAMLDOC_QUOTE_MAX + 1];
    char buf[PORT_SPEC_MAX + 1];
    char *slash, *last_colon, *host_text, *ip = NULL;
    struct port_map pm = {.line = line};

    yamldoc_quote(spec, strlen(spec), quoted, sizeof(quoted));
    if (strlen(spec) > PORT_SPEC_MAX) {
        parse_error(p, line, "%s: %s is too long to be a port mapping", key, quoted);
        return -EINVAL;
    }
    strcpy(buf, spec);

    slash = strrchr(buf, '/');
    if (slash) {
        *slash = '\0';
        if (strcmp(slash + 1, "udp") == 0)
            pm.udp = true;
        else if (strcmp(slash + 1, "tcp") != 0) {
            parse_error(p, line, "%s: %s has an unknown protocol: use /tcp or /udp", key, quoted);
            return -EINVAL;
        }
    }
    if (strchr(buf, '-')) {
        parse_error(p, line,
                    "%s: %s is a port range, and ranges are not supported: list each port on "
                    "its own",
                    key, quoted);
        return -EINVAL;
    }

    last_colon = strrchr(buf, ':');
    if (!last_colon) {
        if (parse_port_number(p, line, key, spec, buf, &pm.host) < 0)
            return -EINVAL;
        pm.container = pm.host;
        *ret = pm;
        return 0;
    }
    *last_colon = '\0';
    host_text = strrchr(buf, ':');
    if (host_text) {
        *host_text++ = '\0';
        ip = buf;
        size_t ip_len = strlen(ip);
        if (ip_len >= 2 && ip[0] == '[' && ip[ip_len - 1] == ']') {
            ip[ip_len - 1] = '\0';
            ip++;
        }
        unsigned char addr[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, ip, addr) != 1 && inet_pton(AF_INET6, ip, addr) != 1) {
            char quoted_ip[YAMLDOC_QUOTE_MAX + 1];

            yamldoc_quote(ip, strlen(ip), quoted_ip, sizeof(quoted_ip));
            parse_error(p, line,
                        "%s: %s in %s is not an IP address: use \"IP:HOST:CONTAINER\" such as "
                        "\"127.0.0.1:8001:8000\"",
                        key, quoted_ip, quoted);
            return -EINVAL;
        }
    } else {
        host_text = buf;
    }
    if (*host_text == '\0') {
        parse_error(p, line,
                    "%s: %s has no host port; a host port chosen by Docker is not supported: "
                    "give it, as in \"8001:8000\"",
                    key, quoted);
        return -EINVAL;
    }
    if (parse_port_number(p, line, key, spec, host_text, &pm.host) < 0 ||
        parse_port_number(p, line, key, spec, last_colon + 1, &pm.container) < 0)
        return -EINVAL;
    if (ip)
        pm.host_ip = xstrdup(ip);
    *ret = pm;
    return 0;
}

static void parse_ports(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_PORTS];
    struct manifest *m = p->m;
    char found[YAMLDOC_QUOTE_MAX + 1];
    size_t n;

    if (!f->value)
        return;
    m->ports_line = f->line;
    if (f->value->type != YAML_SEQUENCE_NODE) {
        yamldoc_describe(f->value, found, sizeof(found));
        parse_error(p, yamldoc_line(f->value),
                    "ports must be a list such as [\"8001:8000\"], not %s", found);
        p->ports_failed = true;
        return;
    }
    n = (size_t)(f->value->data.sequence.items.top - f->value->data.sequence.items.start);
    if (n > MANIFEST_PORTS_MAX) {
        parse_error(p, yamldoc_line(f->value), "ports has %zu items; the limit is %d", n,
                    MANIFEST_PORTS_MAX);
        p->ports_failed = true;
        return;
    }

    m->ports = xcalloc(n, sizeof(*m->ports));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yamldoc_node(p->doc, f->value->data.sequence.items.start[i]);
        char key[32];
        char *spec;
        struct port_map pm;

        snprintf(key, sizeof(key), "ports[%zu]", i);
        if (!item || item->type != YAML_SCALAR_NODE) {
            yamldoc_describe(item, found, sizeof(found));
            parse_error(p, item ? yamldoc_line(item) : f->line,
                        "%s must be a string such as \"8001:8000\" or a number, not %s", key,
                        found);
            p->ports_failed = true;
            continue;
        }
        if (check(p, yamldoc_read_string(p->doc, item, key, &spec, p->errors)) < 0) {
            p->ports_failed = true;
            continue;
        }
        if (parse_port_spec(p, yamldoc_line(item), key, spec, &pm) < 0) {
            p->ports_failed = true;
            free(spec);
            continue;
        }
        free(spec);
        for (size_t j = 0; j < m->n_ports; j++) {
            if (m->ports[j].host == pm.host && m->ports[j].udp == pm.udp) {
                parse_error(p, pm.line,
                            "%s: host port %u is already listed on line %d: list each host "
                            "port once",
                            key, pm.host, m->ports[j].line);
                p->ports_failed = true;
                free(pm.host_ip);
                pm.host_ip = NULL;
                pm.host = 0;
                break;
            }
        }
        if (pm.host != 0)
            m->ports[m->n_ports++] = pm;
    }
    if (m->n_ports > 0)
        m->port = m->ports[0].host;
}

static void parse_driver(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_DRIVER];
    char quoted[YAMLDOC_QUOTE_MAX + 1];
    char *text;

    if (!f->value)
        return;
    if (check(p, yamldoc_read_string(p->doc, f->value, "driver", &text, p->errors)) < 0) {
        p->driver_failed = true;
        return;
    }
    if (strcmp(text, "compose") == 0) {
        p->m->driver = DRIVER_COMPOSE;
        p->has_driver = true;
    } else if (strcmp(text, "process") == 0) {
        p->m->driver = DRIVER_PROCESS;
        p->has_driver = true;
    } else {
        yamldoc_quote(text, strlen(text), quoted, sizeof(quoted));
        parse_error(p, yamldoc_line(f->value), "unknown driver %s: use compose or process", quoted);
        p->driver_failed = true;
    }
    free(text);
}

/* Reads a path field and resolves it against the service folder. */
static int parse_path(struct parse *p, struct yamldoc_field *f, const char *key, char **ret)
{
    char *text;

    if (check(p, yamldoc_read_string(p->doc, f->value, key, &text, p->errors)) < 0)
        return -EINVAL;
    if (text[0] == '\0') {
        parse_error(p, yamldoc_line(f->value), "%s is empty: give a path, such as \".\"", key);
        free(text);
        return -EINVAL;
    }
    char *path = path_join(p->dir, text);
    free(text);
    if (strlen(path) >= PATH_MAX) {
        parse_error(p, yamldoc_line(f->value), "%s is too long (the limit is %d bytes)", key,
                    PATH_MAX - 1);
        free(path);
        return -EINVAL;
    }
    *ret = path;
    return 0;
}

static void parse_command(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_COMMAND];
    struct manifest *m = p->m;
    char found[YAMLDOC_QUOTE_MAX + 1];
    char **argv;
    size_t argc;
    char *text;

    if (!f->value)
        return;
    p->has_command = true;
    switch (f->value->type) {
    case YAML_SEQUENCE_NODE:
        if (check(p, yamldoc_read_strings(p->doc, f->value, "command", MANIFEST_ARGS_MAX, &argv,
                                          &argc, p->errors)) < 0)
            return;
        if (argc == 0 || argv[0][0] == '\0') {
            parse_error(p, yamldoc_line(f->value),
                        "command must start with the program to run, such as [\"python3\", "
                        "\"app.py\"]");
            yamldoc_strv_free(argv);
            return;
        }
        m->command = argv;
        m->command_is_shell = false;
        return;
    case YAML_SCALAR_NODE:
        if (check(p, yamldoc_read_string(p->doc, f->value, "command", &text, p->errors)) < 0)
            return;
        if (text[strspn(text, " \t\r\n")] == '\0') {
            parse_error(p, yamldoc_line(f->value),
                        "command is empty: give a shell command line or a list such as "
                        "[\"python3\", \"app.py\"]");
            free(text);
            return;
        }
        m->command = xcalloc(4, sizeof(*m->command));
        m->command[0] = xstrdup("/bin/sh");
        m->command[1] = xstrdup("-c");
        m->command[2] = text;
        m->command_is_shell = true;
        return;
    default:
        yamldoc_describe(f->value, found, sizeof(found));
        parse_error(p, yamldoc_line(f->value),
                    "command must be a list such as [\"python3\", \"app.py\"] or a string, not "
                    "%s",
                    found);
        return;
    }
}

static bool env_key_valid(const char *s, size_t len)
{
    if (len == 0 || !(s[0] == '_' || (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];

        if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

static void env_key_error(struct parse *p, int line, const char *key, size_t len)
{
    char quoted[YAMLDOC_QUOTE_MAX + 1];

    yamldoc_quote(key, len, quoted, sizeof(quoted));
    parse_error(p, line,
                "env: %s is not a valid variable name: use letters, digits and '_', not "
                "starting with a digit",
                quoted);
}

/* Reads env: as a mapping, the natural YAML form. A null value means empty. */
static void parse_env_mapping(struct parse *p, yaml_node_t *node, char **env, size_t *n)
{
    struct yamldoc_iter it;
    const char *key;
    int line;
    yaml_node_t *value;
    bool counted = false;

    yamldoc_iter_begin(&it, p->doc, node, p->errors);
    while (yamldoc_iter_next(&it, &key, &line, &value)) {
        char *text, *item_key;

        if (*n >= MANIFEST_ENV_MAX) {
            if (!counted)
                parse_error(p, line, "env has more than %d entries", MANIFEST_ENV_MAX);
            counted = true;
            continue;
        }
        if (!env_key_valid(key, strlen(key))) {
            env_key_error(p, line, key, strlen(key));
            continue;
        }
        item_key = xasprintf("env.%s", key);
        if (check(p, yamldoc_read_string(p->doc, value, item_key, &text, p->errors)) == 0) {
            env[(*n)++] = xasprintf("%s=%s", key, yamldoc_is_null(value) ? "" : text);
            free(text);
        }
        free(item_key);
    }
    check(p, yamldoc_iter_end(&it));
}

/* Reads env: as a list of "KEY=VALUE" strings, the other form docker compose accepts. */
static void parse_env_list(struct parse *p, yaml_node_t *node, char **env, size_t *n)
{
    char **items;
    size_t n_items;

    if (check(p, yamldoc_read_strings(p->doc, node, "env", MANIFEST_ENV_MAX, &items, &n_items,
                                      p->errors)) < 0)
        return;
    for (size_t i = 0; i < n_items; i++) {
        yaml_node_t *item = yamldoc_node(p->doc, node->data.sequence.items.start[i]);
        int line = item ? yamldoc_line(item) : yamldoc_line(node);
        char *eq = strchr(items[i], '=');
        size_t key_len = eq ? (size_t)(eq - items[i]) : 0;
        char quoted[YAMLDOC_QUOTE_MAX + 1];
        bool repeated = false;

        if (!eq) {
            yamldoc_quote(items[i], strlen(items[i]), quoted, sizeof(quoted));
            parse_error(p, line, "env[%zu]: %s must have the form KEY=VALUE", i, quoted);
            continue;
        }
        if (!env_key_valid(items[i], key_len)) {
            env_key_error(p, line, items[i], key_len);
            continue;
        }
        for (size_t j = 0; j < *n && !repeated; j++)
            repeated = strncmp(env[j], items[i], key_len + 1) == 0;
        if (repeated) {
            yamldoc_quote(items[i], key_len, quoted, sizeof(quoted));
            parse_error(p, line, "env[%zu]: %s is set twice: keep only one", i, quoted);
            continue;
        }
        env[(*n)++] = items[i];
        items[i] = xstrdup("");
    }
    yamldoc_strv_free(items);
}

static void parse_env(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_ENV];
    char found[YAMLDOC_QUOTE_MAX + 1];
    char **env;
    size_t n = 0;

    if (!f->value)
        return;
    if (f->value->type != YAML_MAPPING_NODE && f->value->type != YAML_SEQUENCE_NODE) {
        yamldoc_describe(f->value, found, sizeof(found));
        parse_error(p, yamldoc_line(f->value),
                    "env must be a mapping (KEY: value) or a list of \"KEY=VALUE\" strings, not "
                    "%s",
                    found);
        return;
    }
    env = xcalloc(MANIFEST_ENV_MAX + 1, sizeof(*env));
    if (f->value->type == YAML_MAPPING_NODE)
        parse_env_mapping(p, f->value, env, &n);
    else
        parse_env_list(p, f->value, env, &n);
    yamldoc_strv_free(p->m->env);
    p->m->env = xrealloc(env, (n + 1) * sizeof(*env));
}

static void parse_health_path(struct parse *p, yaml_node_t *node)
{
    char quoted[YAMLDOC_QUOTE_MAX + 1];
    char *path;
    bool ok;

    if (check(p, yamldoc_read_string(p->doc, node, "health.path", &path, p->errors)) < 0)
        return;
    ok = path[0] == '/' && strlen(path) <= MANIFEST_HEALTH_PATH_MAX;
    for (const unsigned char *c = (const unsigned char *)path; ok && *c; c++)
        ok = *c > 0x20 && *c != 0x7f;
    if (!ok) {
        yamldoc_quote(path, strlen(path), quoted, sizeof(quoted));
        parse_error(p, yamldoc_line(node),
                    "health.path must be a URL path starting with '/', without spaces, such "
                    "as /health (at most %d bytes), not %s",
                    MANIFEST_HEALTH_PATH_MAX, quoted);
        free(path);
        return;
    }
    free(p->m->health_path);
    p->m->health_path = path;
}

/* Reads a duration that must be above zero. */
static void parse_positive_duration(struct parse *p, yaml_node_t *node, const char *key,
                                    uint64_t *ret_ms)
{
    uint64_t ms;

    if (check(p, yamldoc_read_duration(p->doc, node, key, &ms, p->errors)) < 0)
        return;
    if (ms == 0) {
        parse_error(p, yamldoc_line(node), "%s must be longer than 0, such as 5s", key);
        return;
    }
    *ret_ms = ms;
}

static void parse_health(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_HEALTH];
    struct manifest *m = p->m;
    struct yamldoc_field h[H_COUNT] = {
        [H_PATH] = {.key = "path"},
        [H_PORT] = {.key = "port"},
        [H_INTERVAL] = {.key = "interval"},
        [H_TIMEOUT] = {.key = "timeout"},
        [H_START_PERIOD] = {.key = "start_period"},
    };
    char found[YAMLDOC_QUOTE_MAX + 1];
    bool port_failed = false;
    bool enabled;

    if (f->value && f->value->type == YAML_SCALAR_NODE) {
        int r = yamldoc_read_bool(p->doc, f->value, "health", &enabled, NULL);

        if (r == 0 && !enabled) {
            m->health_enabled = false;
            return;
        }
        if (r == 0)
            goto check_port; /* health: true, the defaults */
    }
    if (f->value && f->value->type != YAML_MAPPING_NODE) {
        yamldoc_describe(f->value, found, sizeof(found));
        parse_error(p, yamldoc_line(f->value),
                    "health must be a mapping (path, port, interval, timeout, start_period) or "
                    "false, not %s",
                    found);
        return;
    }
    if (f->value) {
        check(p,
              yamldoc_map_fields(p->doc, f->value, "health", h, H_COUNT, p->errors, p->warnings));
        if (h[H_PATH].value)
            parse_health_path(p, h[H_PATH].value);
        if (h[H_PORT].value) {
            uint64_t port;

            if (check(p, yamldoc_read_uint(p->doc, h[H_PORT].value, "health.port", 1, 65535, &port,
                                           p->errors)) == 0)
                m->health_port = (uint16_t)port;
            else
                port_failed = true;
        }
        if (h[H_INTERVAL].value)
            parse_positive_duration(p, h[H_INTERVAL].value, "health.interval",
                                    &m->health_interval_ms);
        if (h[H_TIMEOUT].value)
            parse_positive_duration(p, h[H_TIMEOUT].value, "health.timeout", &m->health_timeout_ms);
        if (h[H_START_PERIOD].value)
            check(p, yamldoc_read_duration(p->doc, h[H_START_PERIOD].value, "health.start_period",
                                           &m->health_start_period_ms, p->errors));
    }

check_port:
    if (m->health_port == 0)
        m->health_port = m->port;
    if (m->health_port == 0 && !port_failed && !p->ports_failed)
        parse_error(p, f->value ? f->line : p->root_line,
                    "health check needs a port: add ports or health.port, or set health: false");
}

static void parse_restart(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_RESTART];
    char found[YAMLDOC_QUOTE_MAX + 1];
    const char *text = yamldoc_scalar(f->value);

    if (!f->value)
        return;
    if (yamldoc_is_false(f->value))
        p->m->restart = RESTART_NO;
    else if (text && strcmp(text, "no") == 0)
        p->m->restart = RESTART_NO;
    else if (text && strcmp(text, "on-failure") == 0)
        p->m->restart = RESTART_ON_FAILURE;
    else if (text && strcmp(text, "always") == 0)
        p->m->restart = RESTART_ALWAYS;
    else {
        yamldoc_describe(f->value, found, sizeof(found));
        parse_error(p, yamldoc_line(f->value),
                    "restart must be \"no\", on-failure or always, not %s", found);
    }
}

/* Returns the first default compose file found in dir, or NULL. */
static char *find_compose_file(const char *dir)
{
    for (size_t i = 0; i < sizeof(compose_file_names) / sizeof(compose_file_names[0]); i++) {
        char *path = path_join(dir, compose_file_names[i]);

        if (is_regular_file(path))
            return path;
        free(path);
    }
    return NULL;
}

/* Takes the compose file given by compose_file: when it exists. */
static void use_given_compose_file(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_COMPOSE_FILE];
    char quoted[YAMLDOC_QUOTE_MAX + 1];

    if (!is_regular_file(p->compose_file)) {
        const char *text = yamldoc_scalar(f->value);

        yamldoc_quote(text, strlen(text), quoted, sizeof(quoted));
        parse_error(p, yamldoc_line(f->value),
                    "compose_file %s does not exist or is not a file (looked for it relative "
                    "to the service folder): fix the name or add the file",
                    quoted);
        return;
    }
    p->m->compose_file = p->compose_file;
    p->compose_file = NULL;
}

/* A compose service runs what its compose file says; a command would only mislead. */
static void drop_command(struct manifest *m)
{
    yamldoc_strv_free(m->command);
    m->command = NULL;
    m->command_is_shell = false;
}

/* Settles the driver, explicit or inferred, and what it needs: a compose file or a
 * command. */
static void resolve_driver(struct parse *p)
{
    struct manifest *m = p->m;
    struct yamldoc_field *driver = &p->fields[F_DRIVER];
    bool has_compose_field = p->fields[F_COMPOSE_FILE].value != NULL;
    char *found;

    if (p->driver_failed)
        return;
    if (has_compose_field && !p->compose_file)
        return; /* compose_file itself was wrong and reported */

    if (p->has_driver && m->driver == DRIVER_PROCESS) {
        if (!p->has_command)
            parse_error(p, driver->line,
                        "driver is process but there is no command: add one, such as "
                        "command: [\"python3\", \"app.py\"]");
        if (has_compose_field)
            diags_add(p->warnings, p->fields[F_COMPOSE_FILE].line,
                      "compose_file is ignored with driver: process");
        return;
    }
    if (p->has_driver || has_compose_field) {
        m->driver = DRIVER_COMPOSE;
        if (has_compose_field) {
            use_given_compose_file(p);
        } else if ((found = find_compose_file(p->dir))) {
            m->compose_file = found;
        } else {
            parse_error(p, driver->line,
                        "driver is compose but the service folder has no docker-compose.yml, "
                        "docker-compose.yaml, compose.yml or compose.yaml: add one, or name "
                        "it with compose_file");
            return;
        }
        if (p->has_command)
            diags_add(p->warnings, p->fields[F_COMMAND].line,
                      "command is ignored with driver: compose");
        drop_command(m);
        return;
    }
    if ((found = find_compose_file(p->dir))) {
        m->driver = DRIVER_COMPOSE;
        m->compose_file = found;
        if (p->has_command)
            diags_add(p->warnings, p->fields[F_COMMAND].line,
                      "command is ignored: the service folder has a compose file, so the "
                      "driver is compose; add \"driver: process\" to run the command instead");
        drop_command(m);
        return;
    }
    if (p->has_command) {
        m->driver = DRIVER_PROCESS;
        return;
    }
    parse_error(p, p->root_line,
                "cannot tell how to run this service: add a docker-compose.yml to the service "
                "folder, or a command such as command: [\"python3\", \"app.py\"]");
}

/* Fills in every default, so that a field left out reads the same as one written. */
static struct manifest *manifest_new(const char *dir)
{
    struct manifest *m = xcalloc(1, sizeof(*m));

    m->description = xstrdup("");
    m->driver = DRIVER_PROCESS;
    m->workdir = path_join(dir, ".");
    m->env = xcalloc(1, sizeof(*m->env));
    m->health_enabled = true;
    m->health_path = xstrdup(DEFAULT_HEALTH_PATH);
    m->health_interval_ms = DEFAULT_HEALTH_INTERVAL_MS;
    m->health_timeout_ms = DEFAULT_HEALTH_TIMEOUT_MS;
    m->health_start_period_ms = DEFAULT_START_PERIOD_MS;
    m->stop_timeout_ms = DEFAULT_STOP_TIMEOUT_MS;
    m->restart = RESTART_NO;
    m->dir = path_join(dir, ".");
    return m;
}

/* Reads the fields in the order their checks depend on each other: ports before health
 * (its default port), driver, command and compose_file before the driver is settled. */
static void parse_fields(struct parse *p)
{
    struct manifest *m = p->m;
    struct yamldoc_field *f = p->fields;
    char *workdir;

    parse_name(p);
    if (f[F_DESCRIPTION].value && !yamldoc_is_null(f[F_DESCRIPTION].value)) {
        char *description;

        if (check(p, yamldoc_read_string(p->doc, f[F_DESCRIPTION].value, "description",
                                         &description, p->errors)) == 0) {
            free(m->description);
            m->description = description;
        }
    }
    parse_ports(p);
    if (f[F_GPU_REQUIRED].value)
        check(p, yamldoc_read_bool(p->doc, f[F_GPU_REQUIRED].value, "gpu_required",
                                   &m->gpu_required, p->errors));
    parse_driver(p);
    if (f[F_COMPOSE_FILE].value)
        parse_path(p, &f[F_COMPOSE_FILE], "compose_file", &p->compose_file);
    parse_command(p);
    if (f[F_WORKDIR].value && parse_path(p, &f[F_WORKDIR], "workdir", &workdir) == 0) {
        free(m->workdir);
        m->workdir = workdir;
    }
    parse_env(p);
    parse_health(p);
    if (f[F_STOP_TIMEOUT].value)
        check(p, yamldoc_read_duration(p->doc, f[F_STOP_TIMEOUT].value, "stop_timeout",
                                       &m->stop_timeout_ms, p->errors));
    parse_restart(p);
    resolve_driver(p);
}

/* Orders the diagnostics from index start on by line, keeping the order of equal lines, so
 * that a person reads them top to bottom whatever order the checks ran in. */
static void sort_diags_by_line(struct diags *d, size_t start)
{
    if (!d)
        return;
    for (size_t i = start + 1; i < d->n; i++) {
        struct diag item = d->items[i];
        size_t j = i;

        for (; j > start && d->items[j - 1].line > item.line; j--)
            d->items[j] = d->items[j - 1];
        d->items[j] = item;
    }
}

int manifest_parse(const char *buf, size_t len, const char *dir, struct manifest **ret,
                   char **ret_name, struct diags *errors, struct diags *warnings)
{
    struct parse p = {
        .dir = dir,
        .errors = errors,
        .warnings = warnings,
        .fields =
            {
                [F_NAME] = {.key = "name"},
                [F_DESCRIPTION] = {.key = "description"},
                [F_PORTS] = {.key = "ports"},
                [F_GPU_REQUIRED] = {.key = "gpu_required"},
                [F_DRIVER] = {.key = "driver"},
                [F_COMPOSE_FILE] = {.key = "compose_file"},
                [F_COMMAND] = {.key = "command"},
                [F_WORKDIR] = {.key = "workdir"},
                [F_ENV] = {.key = "env"},
                [F_HEALTH] = {.key = "health"},
                [F_STOP_TIMEOUT] = {.key = "stop_timeout"},
                [F_RESTART] = {.key = "restart"},
            },
    };
    size_t errors_start = errors ? errors->n : 0, warnings_start = warnings ? warnings->n : 0;
    yaml_node_t *root;
    char found[YAMLDOC_QUOTE_MAX + 1];

    if (yamldoc_load(buf, len, &p.doc, errors) < 0)
        return -EINVAL;
    root = yamldoc_root(p.doc);
    p.root_line = yamldoc_line(root);
    if (root->type != YAML_MAPPING_NODE) {
        yamldoc_describe(root, found, sizeof(found));
        diags_add(errors, p.root_line,
                  "the manifest must be a mapping of \"key: value\" lines (name: ..., ports: "
                  "...), not %s",
                  found);
        yamldoc_free(p.doc);
        return -EINVAL;
    }

    p.m = manifest_new(dir);
    check(&p, yamldoc_map_fields(p.doc, root, "the manifest", p.fields, F_COUNT, errors, warnings));
    parse_fields(&p);
    sort_diags_by_line(errors, errors_start);
    sort_diags_by_line(warnings, warnings_start);

    if (ret_name && p.m->name)
        *ret_name = xstrdup(p.m->name);
    free(p.compose_file);
    yamldoc_free(p.doc);
    if (p.failed) {
        manifest_free(p.m);
        return -EINVAL;
    }
    *ret = p.m;
    return 0;
}

void manifest_free(struct manifest *m)
{
    if (!m)
        return;
    free(m->name);
    free(m->description);
    for (size_t i = 0; i < m->n_ports; i++)
        free(m->ports[i].host_ip);
    free(m->ports);
    free(m->compose_file);
    yamldoc_strv_free(m->command);
    free(m->workdir);
    yamldoc_strv_free(m->env);
    free(m->health_path);
    free(m->dir);
    free(m);
}

/* Returns a static description of an errno value that is safe on any thread. */
static const char *errno_text(int e)
{
    const char *s = strerrordesc_np(e);

    return s ? s : "unknown error";
}

/* True when real (a resolved path) lies strictly inside root_real. */
static bool path_inside(const char *real, const char *root_real)
{
    size_t len = strlen(root_real);

    if (strcmp(root_real, "/") == 0)
        return real[0] == '/' && real[1] != '\0';
    return strncmp(real, root_real, len) == 0 && real[len] == '/';
}

/* Reads at most MANIFEST_SIZE_MAX bytes of a regular file; the file may grow while it is
 * read, so the limit is checked on what was read, not only on fstat(). */
static int read_manifest_file(const char *real, char **ret, size_t *ret_len, struct diags *errors)
{
    struct stat st;
    char *buf;
    size_t len = 0;
    int fd, r;

    fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        diags_add(errors, 0, "cannot open %s: %s", MANIFEST_FILE_NAME, errno_text(-r));
        return r;
    }
    if (fstat(fd, &st) < 0) {
        r = -errno;
        diags_add(errors, 0, "cannot read %s: %s", MANIFEST_FILE_NAME, errno_text(-r));
        close(fd);
        return r;
    }
    if (!S_ISREG(st.st_mode)) {
        diags_add(errors, 0, "%s is not a regular file: make it a plain text file",
                  MANIFEST_FILE_NAME);
        close(fd);
        return -EINVAL;
    }
    if (st.st_size > MANIFEST_SIZE_MAX)
        goto too_big;

    buf = xmalloc(MANIFEST_SIZE_MAX + 1);
    for (;;) {
        ssize_t n = read(fd, buf + len, MANIFEST_SIZE_MAX + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            diags_add(errors, 0, "cannot read %s: %s", MANIFEST_FILE_NAME, errno_text(-r));
            free(buf);
            close(fd);
            return r;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > MANIFEST_SIZE_MAX) {
            free(buf);
            goto too_big;
        }
    }
    close(fd);
    *ret = buf;
    *ret_len = len;
    return 0;

too_big:
    close(fd);
    diags_add(errors, 0,
              "%s is larger than the limit of %d bytes (1 MiB): a manifest is a short "
              "text file",
              MANIFEST_FILE_NAME, MANIFEST_SIZE_MAX);
    return -EFBIG;
}

/* Returns the resolved folder that holds path (a symlinked manifest keeps its own
 * folder's), or NULL with errno set. */
static char *manifest_folder(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir, *real;

    if (!slash)
        return realpath(".", NULL);
    dir = slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path));
    real = realpath(dir, NULL);
    free(dir);
    return real;
}

int manifest_load(const char *path, const char *root, struct manifest **ret, char **ret_name,
                  struct diags *errors, struct diags *warnings)
{
    char quoted[YAMLDOC_QUOTE_MAX + 1], quoted_root[YAMLDOC_QUOTE_MAX + 1];
    char *root_real = NULL, *real = NULL, *dir = NULL, *buf = NULL;
    size_t len = 0;
    int r;

    root_real = realpath(root, NULL);
    if (!root_real) {
        r = -errno;
        diags_add(errors, 0, "cannot resolve the services folder: %s", errno_text(-r));
        goto out;
    }
    real = realpath(path, NULL);
    if (!real) {
        struct stat st;

        r = -errno;
        diags_add(errors, 0, "cannot open %s: %s%s", MANIFEST_FILE_NAME, errno_text(-r),
                  lstat(path, &st) == 0 && S_ISLNK(st.st_mode)
                      ? " (it is a symlink to a file that does not exist)"
                      : "");
        goto out;
    }
    if (!path_inside(real, root_real)) {
        yamldoc_quote(real, strlen(real), quoted, sizeof(quoted));
        yamldoc_quote(root_real, strlen(root_real), quoted_root, sizeof(quoted_root));
        diags_add(errors, 0,
                  "%s is a symlink to %s, outside the services folder %s: copy the file into "
                  "the service folder instead",
                  MANIFEST_FILE_NAME, quoted, quoted_root);
        r = -EPERM;
        goto out;
    }
    dir = manifest_folder(path);
    if (!dir) {
        r = -errno;
        diags_add(errors, 0, "cannot resolve the service folder: %s", errno_text(-r));
        goto out;
    }
    r = read_manifest_file(real, &buf, &len, errors);
    if (r < 0)
        goto out;
    r = manifest_parse(buf, len, dir, ret, ret_name, errors, warnings);

out:
    free(buf);
    free(dir);
    free(real);
    free(root_real);
    return r;
}

static json_t *json_string_or_null(const char *s)
{
    json_t *j = s ? json_string(s) : NULL;

    return j ? j : json_null();
}

static json_t *strv_to_json(char **strv)
{
    json_t *array = json_array();

    for (char **p = strv; p && *p; p++)
        json_array_append_new(array, json_string_or_null(*p));
    return array;
}

/* Writes a port map the way it would be written in a manifest: "IP:HOST:CONTAINER/udp",
 * each part only when it differs from the default. */
static json_t *port_map_to_json(const struct port_map *pm)
{
    char text[128];
    const char *ip = pm->host_ip;
    bool v6 = ip && strchr(ip, ':');

    snprintf(text, sizeof(text), "%s%s%s%s%u:%u%s", ip && v6 ? "[" : "", ip ? ip : "",
             ip && v6 ? "]" : "", ip ? ":" : "", pm->host, pm->container, pm->udp ? "/udp" : "");
    return json_string(text);
}

json_t *manifest_to_json(const struct manifest *m)
{
    json_t *o = json_object();
    json_t *ports = json_array();
    json_t *env = json_object();
    json_t *health;

    for (size_t i = 0; i < m->n_ports; i++)
        json_array_append_new(ports, port_map_to_json(&m->ports[i]));
    for (char **p = m->env; p && *p; p++) {
        const char *eq = strchr(*p, '=');
        char *key = eq ? xstrndup(*p, (size_t)(eq - *p)) : xstrdup(*p);

        json_object_set_new(env, key, json_string_or_null(eq ? eq + 1 : ""));
        free(key);
    }
    if (m->health_enabled)
        health =
            json_pack("{s:o, s:i, s:I, s:I, s:I}", "path", json_string_or_null(m->health_path),
                      "port", (int)m->health_port, "interval_ms", (json_int_t)m->health_interval_ms,
                      "timeout_ms", (json_int_t)m->health_timeout_ms, "start_period_ms",
                      (json_int_t)m->health_start_period_ms);
    else
        health = json_false();

    json_object_set_new(o, "name", json_string_or_null(m->name));
    json_object_set_new(o, "description", json_string_or_null(m->description));
    json_object_set_new(o, "ports", ports);
    json_object_set_new(o, "port", m->port ? json_integer(m->port) : json_null());
    json_object_set_new(o, "gpu_required", json_boolean(m->gpu_required));
    json_object_set_new(o, "driver", json_string(driver_kind_name(m->driver)));
    json_object_set_new(o, "compose_file", json_string_or_null(m->compose_file));
    json_object_set_new(o, "command", m->command ? strv_to_json(m->command) : json_null());
    json_object_set_new(o, "workdir", json_string_or_null(m->workdir));
    json_object_set_new(o, "env", env);
    json_object_set_new(o, "health", health ? health : json_null());
    json_object_set_new(o, "stop_timeout_ms", json_integer((json_int_t)m->stop_timeout_ms));
    json_object_set_new(o, "restart", json_string(restart_policy_name(m->restart)));
    json_object_set_new(o, "dir", json_string_or_null(m->dir));
    return o;
}
