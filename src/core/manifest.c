/* service.yaml: parsing and validation of one manifest (SPEC section 2). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/manifest.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/units.h"

#define DEFAULT_HEALTH_PATH        "/health"
#define DEFAULT_HEALTH_INTERVAL_MS 5000
#define DEFAULT_HEALTH_TIMEOUT_MS  2000
#define DEFAULT_START_PERIOD_MS    300000
#define DEFAULT_STOP_TIMEOUT_MS    10000

/* Longest port item worth reading: "[IPv6]:HOST:CONTAINER/udp" fits easily. */
#define PORT_SPEC_MAX 128

/* The compose files looked for, in this order, when compose_file is not given. */
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

/* Reports an error of the manifest and marks the parse as failed. */
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

/* Reports a value longer than max bytes, naming it by what (a key, or a phrase such as
 * "env: the value of \"A\""): a value that long is a mistake, and each scan would keep
 * a copy. Returns false when len is over the limit. */
static bool check_length(struct parse *p, int line, const char *what, size_t len, size_t max)
{
    if (len <= max)
        return true;
    parse_error(p, line, "%s is %zu bytes long; the limit is %zu bytes", what, len, max);
    return false;
}

const char *manifest_driver_name(enum driver_kind d)
{
    return d == DRIVER_PROCESS ? "process" : "compose";
}

const char *manifest_restart_name(enum restart_policy r)
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

/* Checks a name without reporting, so that callers other than the parser (the API's
 * URLs) apply the same rule. */
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

/* A watcher uses this to tell which files' coming and going may change a service, so it
 * names exactly the files the parser looks at by default. */
bool manifest_file_decides(const char *file_name)
{
    if (strcmp(file_name, MANIFEST_FILE_NAME) == 0)
        return true;
    for (size_t i = 0; i < sizeof(compose_file_names) / sizeof(compose_file_names[0]); i++) {
        if (strcmp(file_name, compose_file_names[i]) == 0)
            return true;
    }
    return false;
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

/* True when path is, or links to, a regular file. */
static bool is_regular_file(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Reads the required name, the key every other service and the API know this one by. */
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

/* Strips an optional "/tcp" or "/udp" from the end of buf; quoted is the whole item for
 * messages. */
static int parse_port_protocol(struct parse *p, int line, const char *key, const char *quoted,
                               char *buf, bool *ret_udp)
{
    char *slash = strrchr(buf, '/');

    *ret_udp = false;
    if (!slash)
        return 0;
    *slash = '\0';
    if (strcmp(slash + 1, "udp") == 0)
        *ret_udp = true;
    else if (strcmp(slash + 1, "tcp") != 0) {
        parse_error(p, line, "%s: %s has an unknown protocol: use /tcp or /udp", key, quoted);
        return -EINVAL;
    }
    return 0;
}

/* Checks the IP part of "IP:HOST:CONTAINER", an IPv4 or IPv6 address, the latter possibly
 * in brackets as docker compose writes it; *ret points into ip, brackets removed. */
static int parse_host_ip(struct parse *p, int line, const char *key, const char *quoted, char *ip,
                         char **ret)
{
    unsigned char addr[sizeof(struct in6_addr)];
    char quoted_ip[YAMLDOC_QUOTE_MAX + 1];
    size_t len = strlen(ip);

    if (len >= 2 && ip[0] == '[' && ip[len - 1] == ']') {
        ip[len - 1] = '\0';
        ip++;
    }
    if (inet_pton(AF_INET, ip, addr) == 1 || inet_pton(AF_INET6, ip, addr) == 1) {
        *ret = ip;
        return 0;
    }
    yamldoc_quote(ip, strlen(ip), quoted_ip, sizeof(quoted_ip));
    parse_error(p, line,
                "%s: %s in %s is not an IP address: use \"IP:HOST:CONTAINER\" such as "
                "\"127.0.0.1:8001:8000\"",
                key, quoted_ip, quoted);
    return -EINVAL;
}

/* Reads "PORT", "HOST:CONTAINER" or "IP:HOST:CONTAINER" with an optional "/tcp" or
 * "/udp", the short syntax of docker compose, minus the ranges it also allows. */
static int parse_port_spec(struct parse *p, int line, const char *key, const char *spec,
                           struct port_map *ret)
{
    char quoted[YAMLDOC_QUOTE_MAX + 1];
    char buf[PORT_SPEC_MAX + 1];
    char *last_colon, *host_text, *ip = NULL;
    struct port_map pm = {.line = line};

    yamldoc_quote(spec, strlen(spec), quoted, sizeof(quoted));
    if (strlen(spec) > PORT_SPEC_MAX) {
        parse_error(p, line, "%s: %s is too long to be a port mapping", key, quoted);
        return -EINVAL;
    }
    strcpy(buf, spec);
    if (parse_port_protocol(p, line, key, quoted, buf, &pm.udp) < 0)
        return -EINVAL;
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
        if (parse_host_ip(p, line, key, quoted, buf, &ip) < 0)
            return -EINVAL;
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

/* Reads ports: every item is checked, and a host port listed twice is an error, so that
 * all the problems of the list show at once. */
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

/* Reads an explicit driver; resolve_driver() settles it against the folder later. */
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
    if (!check_length(p, yamldoc_line(f->value), key, strlen(text), MANIFEST_VALUE_MAX)) {
        free(text);
        return -EINVAL;
    }
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

/* Checks that every argument of a command list is at most MANIFEST_VALUE_MAX bytes,
 * reporting each one that is not. */
static bool command_lengths_ok(struct parse *p, yaml_node_t *node, char **argv, size_t argc)
{
    bool ok = true;

    for (size_t i = 0; i < argc; i++) {
        yaml_node_t *item = yamldoc_node(p->doc, node->data.sequence.items.start[i]);
        char key[32];

        snprintf(key, sizeof(key), "command[%zu]", i);
        if (!check_length(p, item ? yamldoc_line(item) : yamldoc_line(node), key, strlen(argv[i]),
                          MANIFEST_VALUE_MAX))
            ok = false;
    }
    return ok;
}

/* Reads command: an argv list run as it is, or a string run by /bin/sh -c. */
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
        if (!command_lengths_ok(p, f->value, argv, argc)) {
            strv_free(argv);
            return;
        }
        if (argc == 0 || argv[0][0] == '\0') {
            parse_error(p, yamldoc_line(f->value),
                        "command must start with the program to run, such as [\"python3\", "
                        "\"app.py\"]");
            strv_free(argv);
            return;
        }
        m->command = argv;
        m->command_is_shell = false;
        return;
    case YAML_SCALAR_NODE:
        if (check(p, yamldoc_read_string(p->doc, f->value, "command", &text, p->errors)) < 0)
            return;
        if (!check_length(p, yamldoc_line(f->value), "command", strlen(text), MANIFEST_VALUE_MAX)) {
            free(text);
            return;
        }
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

/* True for a portable variable name: what a shell could also set and read. */
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

/* Reports a variable name that env_key_valid() refused. */
static void env_key_error(struct parse *p, int line, const char *key, size_t len)
{
    char quoted[YAMLDOC_QUOTE_MAX + 1];

    yamldoc_quote(key, len, quoted, sizeof(quoted));
    parse_error(p, line,
                "env: %s is not a valid variable name: use letters, digits and '_', not "
                "starting with a digit",
                quoted);
}

/* Checks that the value of variable key (key_len bytes) is at most MANIFEST_VALUE_MAX
 * bytes; where names the entry in a message ("env" or "env[3]"). */
static bool env_value_length_ok(struct parse *p, int line, const char *where, const char *key,
                                size_t key_len, const char *value)
{
    char quoted[YAMLDOC_QUOTE_MAX + 1];
    char *what;
    bool ok;

    yamldoc_quote(key, key_len, quoted, sizeof(quoted));
    what = xasprintf("%s: the value of %s", where, quoted);
    ok = check_length(p, line, what, strlen(value), MANIFEST_VALUE_MAX);
    free(what);
    return ok;
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
            if (env_value_length_ok(p, yamldoc_line(value), "env", key, strlen(key), text))
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
        char quoted[YAMLDOC_QUOTE_MAX + 1], where[32];
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
        snprintf(where, sizeof(where), "env[%zu]", i);
        if (!env_value_length_ok(p, line, where, items[i], key_len, eq + 1))
            continue;
        env[(*n)++] = items[i];
        items[i] = xstrdup("");
    }
    strv_free(items);
}

/* Reads env: in either form into "KEY=VALUE" strings. */
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
    strv_free(p->m->env);
    p->m->env = xrealloc(env, (n + 1) * sizeof(*env));
}

/* Reads health.path, which goes into a request line as it is: it must start with '/'
 * and hold no spaces or control characters. */
static void parse_health_path(struct parse *p, yaml_node_t *node)
{
    char quoted[YAMLDOC_QUOTE_MAX + 1];
    char *path;
    bool ok;

    if (check(p, yamldoc_read_string(p->doc, node, "health.path", &path, p->errors)) < 0)
        return;
    if (!check_length(p, yamldoc_line(node), "health.path", strlen(path), MANIFEST_VALUE_MAX)) {
        free(path);
        return;
    }
    ok = path[0] == '/';
    for (const unsigned char *c = (const unsigned char *)path; ok && *c; c++)
        ok = *c > 0x20 && *c != 0x7f;
    if (!ok) {
        yamldoc_quote(path, strlen(path), quoted, sizeof(quoted));
        parse_error(p, yamldoc_line(node),
                    "health.path must be a URL path starting with '/', without spaces, such "
                    "as /health, not %s",
                    quoted);
        free(path);
        return;
    }
    free(p->m->health_path);
    p->m->health_path = path;
}

/* Reads a duration that must be above zero. */
static int parse_positive_duration(struct parse *p, yaml_node_t *node, const char *key,
                                   uint64_t *ret_ms)
{
    uint64_t ms;

    if (check(p, yamldoc_read_duration(p->doc, node, key, &ms, p->errors)) < 0)
        return -EINVAL;
    if (ms == 0) {
        parse_error(p, yamldoc_line(node), "%s must be longer than 0, such as 5s", key);
        return -EINVAL;
    }
    *ret_ms = ms;
    return 0;
}

/* Writes a duration the way a person would write it in a manifest: "2s", "1500ms". */
static void format_duration(uint64_t ms, char *buf, size_t size)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, size, "%" PRIu64 "h", ms / 3600000);
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, size, "%" PRIu64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, size, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, size, "%" PRIu64 "ms", ms);
}

/* A check still running when the next is due makes the checks pile up on a slow service;
 * it is allowed, but worth a warning. line is where the warning points. */
static void warn_timeout_not_shorter(struct parse *p, int line)
{
    struct manifest *m = p->m;
    char timeout[32], interval[32];

    if (m->health_timeout_ms < m->health_interval_ms)
        return;
    format_duration(m->health_timeout_ms, timeout, sizeof(timeout));
    format_duration(m->health_interval_ms, interval, sizeof(interval));
    diags_add(p->warnings, line,
              "health.timeout %s is not shorter than health.interval %s: a slow check overlaps "
              "the next",
              timeout, interval);
}

/* Reads the settings of a health: mapping. Returns -EINVAL when health.port was given but
 * wrong, so that no second error asks for a port. */
static int parse_health_settings(struct parse *p, yaml_node_t *node)
{
    struct manifest *m = p->m;
    struct yamldoc_field h[H_COUNT] = {
        [H_PATH] = {.key = "path"},
        [H_PORT] = {.key = "port"},
        [H_INTERVAL] = {.key = "interval"},
        [H_TIMEOUT] = {.key = "timeout"},
        [H_START_PERIOD] = {.key = "start_period"},
    };
    bool durations_ok = true;
    int r = 0;

    check(p, yamldoc_map_fields(p->doc, node, "health", h, H_COUNT, p->errors, p->warnings));
    if (h[H_PATH].value)
        parse_health_path(p, h[H_PATH].value);
    if (h[H_PORT].value) {
        uint64_t port;

        r = check(p, yamldoc_read_uint(p->doc, h[H_PORT].value, "health.port", 1, 65535, &port,
                                       p->errors));
        if (r == 0)
            m->health_port = (uint16_t)port;
    }
    if (h[H_INTERVAL].value && parse_positive_duration(p, h[H_INTERVAL].value, "health.interval",
                                                       &m->health_interval_ms) < 0)
        durations_ok = false;
    if (h[H_TIMEOUT].value &&
        parse_positive_duration(p, h[H_TIMEOUT].value, "health.timeout", &m->health_timeout_ms) < 0)
        durations_ok = false;
    if (h[H_START_PERIOD].value)
        check(p, yamldoc_read_duration(p->doc, h[H_START_PERIOD].value, "health.start_period",
                                       &m->health_start_period_ms, p->errors));
    /* A bad duration is already an error: comparing it with a default would mislead. */
    if (durations_ok && (h[H_TIMEOUT].value || h[H_INTERVAL].value))
        warn_timeout_not_shorter(p, h[H_TIMEOUT].value ? h[H_TIMEOUT].line : h[H_INTERVAL].line);
    return r < 0 ? -EINVAL : 0;
}

/* Reads health: false (no check), true (the defaults) or a mapping of settings, then
 * settles the port the check uses: health.port, else the service's port. */
static void parse_health(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_HEALTH];
    struct manifest *m = p->m;
    char found[YAMLDOC_QUOTE_MAX + 1];
    bool port_failed = false;
    bool enabled;

    if (f->value && f->value->type == YAML_SCALAR_NODE &&
        yamldoc_read_bool(p->doc, f->value, "health", &enabled, NULL) == 0) {
        if (!enabled) {
            m->health_enabled = false;
            return;
        }
        /* health: true keeps the defaults. */
    } else if (f->value && f->value->type == YAML_MAPPING_NODE) {
        port_failed = parse_health_settings(p, f->value) < 0;
    } else if (f->value) {
        yamldoc_describe(f->value, found, sizeof(found));
        parse_error(p, yamldoc_line(f->value),
                    "health must be a mapping (path, port, interval, timeout, start_period) or "
                    "false, not %s",
                    found);
        return;
    }

    if (m->health_port == 0)
        m->health_port = m->port;
    if (m->health_port == 0 && !port_failed && !p->ports_failed)
        parse_error(p, f->value ? f->line : p->root_line,
                    "health check needs a port: add ports or health.port, or set health: false");
}

/* Reads restart:, accepting the false that an unquoted no reads as in YAML 1.1. */
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
    strv_free(m->command);
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

/* Reads the optional description; null reads as none. */
static void parse_description(struct parse *p)
{
    struct yamldoc_field *f = &p->fields[F_DESCRIPTION];
    char *description;

    if (!f->value || yamldoc_is_null(f->value))
        return;
    if (check(p, yamldoc_read_string(p->doc, f->value, "description", &description, p->errors)) < 0)
        return;
    if (!check_length(p, yamldoc_line(f->value), "description", strlen(description),
                      MANIFEST_DESCRIPTION_MAX)) {
        free(description);
        return;
    }
    free(p->m->description);
    p->m->description = description;
}

/* Adds up the bytes of strv's strings. */
static size_t strv_bytes(char **strv)
{
    size_t n = 0;

    for (char **s = strv; s && *s; s++)
        n += strlen(*s);
    return n;
}

/* Caps env and command together, as written: each value has its own cap, but a thousand
 * values at that cap would still make a process environment of megabytes. */
static void check_env_command_size(struct parse *p)
{
    struct manifest *m = p->m;
    size_t env = strv_bytes(m->env);
    size_t command = m->command_is_shell ? strlen(m->command[2]) : strv_bytes(m->command);
    const struct yamldoc_field *env_field = &p->fields[F_ENV];
    const struct yamldoc_field *command_field = &p->fields[F_COMMAND];
    int line;

    if (env + command <= MANIFEST_ENV_COMMAND_MAX)
        return;
    /* Point at the one that holds the most; a person trims that one first. */
    line = env >= command ? env_field->line : command_field->line;
    parse_error(p, line,
                "env and command together are %zu bytes long (env %zu, command %zu); the limit "
                "is %d bytes (64 KiB): pass large data in a file instead",
                env + command, env, command, MANIFEST_ENV_COMMAND_MAX);
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
    parse_description(p);
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
    check_env_command_size(p);
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

/* Reports every problem it can find in one pass, sorted by line and capped, so that a
 * person fixes a manifest in one go. */
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
    diags_limit(errors, errors_start, MANIFEST_ERRORS_MAX);

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
    strv_free(m->command);
    free(m->workdir);
    strv_free(m->env);
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

/* Reads at most MANIFEST_SIZE_MAX bytes of a regular file into a buffer sized by fstat()
 * (one byte more, to see the end of the file in the same read). The file may grow while it
 * is read, so the buffer grows up to the limit, and the limit is checked on what was read. */
static int read_manifest_file(const char *real, char **ret, size_t *ret_len, struct diags *errors)
{
    struct stat st;
    char *buf = NULL;
    size_t len = 0, size;
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
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        diags_add(errors, 0, "%s is not a regular file: make it a plain text file",
                  MANIFEST_FILE_NAME);
        r = -EINVAL;
        goto out;
    }
    if (st.st_size > MANIFEST_SIZE_MAX) {
        r = -EFBIG;
        goto out;
    }

    size = (size_t)st.st_size + 1;
    buf = xmalloc(size);
    for (;;) {
        ssize_t n;

        if (len == size) {
            if (size > MANIFEST_SIZE_MAX) {
                r = -EFBIG;
                goto out;
            }
            size = size > MANIFEST_SIZE_MAX / 2 ? MANIFEST_SIZE_MAX + 1 : 2 * size;
            buf = xrealloc(buf, size);
        }
        n = read(fd, buf + len, size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            diags_add(errors, 0, "cannot read %s: %s", MANIFEST_FILE_NAME, errno_text(-r));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *ret = buf;
    *ret_len = len;
    buf = NULL;
    r = 0;

out:
    if (r == -EFBIG)
        diags_add(errors, 0,
                  "%s is larger than the limit of %d bytes (1 MiB): a manifest is a short "
                  "text file",
                  MANIFEST_FILE_NAME, MANIFEST_SIZE_MAX);
    free(buf);
    close(fd);
    return r;
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

/* Checks where the file lies before reading it: a symlink must not carry the daemon
 * outside the services folder. */
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

/* A JSON string, or null for NULL or for text that is not valid UTF-8. */
static json_t *json_string_or_null(const char *s)
{
    json_t *j = s ? json_string(s) : NULL;

    return j ? j : json_null();
}

/* A JSON array of the strings of a NULL-terminated list. */
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

/* Writes every field, defaults included, so that two manifests that read the same give
 * equal JSON however they were written. */
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
    json_object_set_new(o, "driver", json_string(manifest_driver_name(m->driver)));
    json_object_set_new(o, "compose_file", json_string_or_null(m->compose_file));
    json_object_set_new(o, "command", m->command ? strv_to_json(m->command) : json_null());
    json_object_set_new(o, "workdir", json_string_or_null(m->workdir));
    json_object_set_new(o, "env", env);
    json_object_set_new(o, "health", health ? health : json_null());
    json_object_set_new(o, "stop_timeout_ms", json_integer((json_int_t)m->stop_timeout_ms));
    json_object_set_new(o, "restart", json_string(manifest_restart_name(m->restart)));
    json_object_set_new(o, "dir", json_string_or_null(m->dir));
    return o;
}
