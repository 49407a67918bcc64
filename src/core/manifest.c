/* service.yaml: parsing and validation of one manifest (SPEC section 2): the field table,
 * the order the fields are read in, the name, driver and restart policy, the defaults, and
 * the canonical JSON. ports:, command: and env:, and health: have files of their own
 * (manifest_ports.c, manifest_env.c, manifest_health.c), as has reading the file from disk
 * (manifest_load.c). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/driver.h"
#include "core/manifest_internal.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define DEFAULT_HEALTH_PATH        "/health"
#define DEFAULT_HEALTH_INTERVAL_MS 5000
#define DEFAULT_HEALTH_TIMEOUT_MS  2000
#define DEFAULT_START_PERIOD_MS    300000
#define DEFAULT_STOP_TIMEOUT_MS    10000

/* The compose files looked for, in this order, when compose_file is not given. */
static const char *const compose_file_names[] = {
    "docker-compose.yml",
    "docker-compose.yaml",
    "compose.yml",
    "compose.yaml",
};

/* Reports an error of the manifest and marks the parse as failed. */
void manifest_error(struct manifest_parser *p, int line, const char *fmt, ...)
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
int manifest_check(struct manifest_parser *p, int r)
{
    if (r < 0)
        p->failed = true;
    return r;
}

/* Reports a value longer than max bytes: a value that long is a mistake, and each scan
 * would keep a copy. */
bool manifest_check_length(struct manifest_parser *p, int line, const char *what, size_t len,
                           size_t max)
{
    if (len <= max)
        return true;
    manifest_error(p, line, "%s is %zu bytes long; the limit is %zu bytes", what, len, max);
    return false;
}

/* One wording for every value of the wrong kind, showing what was found instead. */
void manifest_type_error(struct manifest_parser *p, const yaml_node_t *node, const char *expected)
{
    char found[TEXT_QUOTE_MAX + 1];

    yamldoc_describe(node, found, sizeof(found));
    manifest_error(p, yamldoc_line(node), "%s, not %s", expected, found);
}

char **manifest_read_names(struct manifest_parser *p, const struct yamldoc_field *f,
                           const char *key, size_t max, const char *expected, manifest_name_ok ok)
{
    char **names, **kept, what[64], quoted[TEXT_QUOTE_MAX + 1];
    size_t n_names, n = 0;

    if (!f->value)
        return NULL;
    if (f->value->type != YAML_SEQUENCE_NODE) {
        manifest_type_error(p, f->value, expected);
        return NULL;
    }
    if (manifest_check(
            p, yamldoc_read_strings(p->doc, f->value, key, max, &names, &n_names, p->errors)) < 0)
        return NULL;
    kept = xcalloc(n_names + 1, sizeof(*kept));
    for (size_t i = 0; i < n_names; i++) {
        yaml_node_t *item = yamldoc_node(p->doc, f->value->data.sequence.items.start[i]);
        int line = item ? yamldoc_line(item) : yamldoc_line(f->value);

        snprintf(what, sizeof(what), "%s[%zu]", key, i);
        if (!ok(p, what, names[i], line))
            continue;
        if (strv_find(kept, names[i])) { /* kept is NULL past its n names */
            text_quote(names[i], strlen(names[i]), quoted, sizeof(quoted));
            manifest_error(p, line, "%s: %s is listed twice: keep only one", what, quoted);
            continue;
        }
        kept[n++] = xstrdup(names[i]);
    }
    strv_free(names);
    return kept;
}

const char *manifest_driver_name(const struct manifest *m)
{
    switch (m->driver) {
    case DRIVER_PROCESS:
        return "process";
    case DRIVER_COMPOSE:
        return "compose";
    case DRIVER_OTHER:
        break;
    }
    return m->driver_other;
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
static void parse_name(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_NAME];
    char quoted[TEXT_QUOTE_MAX + 1];
    char *name;

    if (!f->value) {
        manifest_error(p, p->root_line,
                       "missing \"name\": add a line such as \"name: my-service\" (lowercase "
                       "letters, digits, '.', '_' and '-')");
        return;
    }
    if (manifest_check(p, yamldoc_read_string(p->doc, f->value, "name", &name, p->errors)) < 0)
        return;
    text_quote(name, strlen(name), quoted, sizeof(quoted));
    if (name[0] == '\0')
        manifest_error(p, yamldoc_line(f->value),
                       "name is empty: give one such as \"name: my-service\"");
    else if (strlen(name) > MANIFEST_NAME_MAX)
        manifest_error(p, yamldoc_line(f->value), "name %s is %zu characters long; the limit is %d",
                       quoted, strlen(name), MANIFEST_NAME_MAX);
    else if (!manifest_name_valid(name))
        manifest_error(p, yamldoc_line(f->value),
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

/* Reads an explicit driver; resolve_driver() settles it against the folder later. */
static void parse_driver(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_DRIVER];
    char quoted[TEXT_QUOTE_MAX + 1];
    char *text;

    if (!f->value)
        return;
    if (manifest_check(p, yamldoc_read_string(p->doc, f->value, "driver", &text, p->errors)) < 0) {
        p->driver_failed = true;
        return;
    }
    if (strcmp(text, "compose") == 0) {
        p->m->driver = DRIVER_COMPOSE;
        p->has_driver = true;
    } else if (strcmp(text, "process") == 0) {
        p->m->driver = DRIVER_PROCESS;
        p->has_driver = true;
    } else if (driver_find(text)) {
        /* A driver of the table whose fields the manifest does not know: all is its own. */
        p->m->driver = DRIVER_OTHER;
        p->m->driver_other = driver_find(text)->name;
        p->has_driver = true;
    } else {
        text_quote(text, strlen(text), quoted, sizeof(quoted));
        manifest_error(p, yamldoc_line(f->value), "unknown driver %s: use compose or process",
                       quoted);
        p->driver_failed = true;
    }
    free(text);
}

/* Reads a path field and resolves it against the service folder. */
static int parse_path(struct manifest_parser *p, struct yamldoc_field *f, const char *key,
                      char **ret)
{
    char *text;

    if (manifest_check(p, yamldoc_read_string(p->doc, f->value, key, &text, p->errors)) < 0)
        return -EINVAL;
    if (!manifest_check_length(p, yamldoc_line(f->value), key, strlen(text), MANIFEST_VALUE_MAX)) {
        free(text);
        return -EINVAL;
    }
    if (text[0] == '\0') {
        manifest_error(p, yamldoc_line(f->value), "%s is empty: give a path, such as \".\"", key);
        free(text);
        return -EINVAL;
    }
    char *path = path_join(p->dir, text);
    free(text);
    if (strlen(path) >= PATH_MAX) {
        manifest_error(p, yamldoc_line(f->value), "%s is too long (the limit is %d bytes)", key,
                       PATH_MAX - 1);
        free(path);
        return -EINVAL;
    }
    *ret = path;
    return 0;
}

/* Reads restart:, accepting the false that an unquoted no reads as in YAML 1.1. */
static void parse_restart(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_RESTART];
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
    else
        manifest_type_error(p, f->value, "restart must be \"no\", on-failure or always");
}

/* Holds a compose file to the manifest's own rule (manifest_load()): its real path, symlinks
 * and ".." resolved, must lie inside the services folder. what names the file for the
 * message. Reports at line and returns false otherwise; the file is never read, so no error
 * can quote a line of it. */
static bool compose_file_inside(struct manifest_parser *p, const char *path, const char *what,
                                int line)
{
    char quoted_real[TEXT_QUOTE_MAX + 1], quoted_root[TEXT_QUOTE_MAX + 1];
    char *real;
    bool inside;

    if (!p->root)
        return true;
    real = realpath(path, NULL);
    if (!real) {
        const char *reason = strerrordesc_np(errno);

        manifest_error(p, line, "cannot resolve %s: %s", what, reason ? reason : "unknown error");
        return false;
    }
    inside = manifest_path_inside(real, p->root);
    if (!inside) {
        text_quote(real, strlen(real), quoted_real, sizeof(quoted_real));
        text_quote(p->root, strlen(p->root), quoted_root, sizeof(quoted_root));
        manifest_error(p, line,
                       "%s leads to %s, outside the services folder %s: copy the file into the "
                       "service folder instead",
                       what, quoted_real, quoted_root);
    }
    free(real);
    return inside;
}

/* Looks for the default compose files in the service folder, in order. Returns 1 with
 * *ret set to the first one found, 0 when there is none, or -EPERM when the one found
 * leads outside the services folder (reported at line). */
static int find_compose_file(struct manifest_parser *p, int line, char **ret)
{
    for (size_t i = 0; i < sizeof(compose_file_names) / sizeof(compose_file_names[0]); i++) {
        char *path = path_join(p->dir, compose_file_names[i]);

        if (is_regular_file(path)) {
            if (!compose_file_inside(p, path, compose_file_names[i], line)) {
                free(path);
                return -EPERM;
            }
            *ret = path;
            return 1;
        }
        free(path);
    }
    return 0;
}

/* Takes the compose file given by compose_file: when it exists and lies inside the
 * services folder. */
static void use_given_compose_file(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_COMPOSE_FILE];
    char quoted[TEXT_QUOTE_MAX + 1];
    const char *text = yamldoc_scalar(f->value);
    char *what;

    text_quote(text, strlen(text), quoted, sizeof(quoted));
    if (!is_regular_file(p->compose_file)) {
        manifest_error(p, yamldoc_line(f->value),
                       "compose_file %s does not exist or is not a file (looked for it relative "
                       "to the service folder): fix the name or add the file",
                       quoted);
        return;
    }
    what = xasprintf("compose_file %s", quoted);
    if (compose_file_inside(p, p->compose_file, what, yamldoc_line(f->value))) {
        p->m->compose_file = p->compose_file;
        p->compose_file = NULL;
    }
    free(what);
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
static void resolve_driver(struct manifest_parser *p)
{
    struct manifest *m = p->m;
    struct yamldoc_field *driver = &p->fields[F_DRIVER];
    bool has_compose_field = p->fields[F_COMPOSE_FILE].value != NULL;
    char *found = NULL;
    int r;

    if (p->driver_failed)
        return;
    if (has_compose_field && !p->compose_file)
        return; /* compose_file itself was wrong and reported */
    if (p->has_driver && m->driver == DRIVER_OTHER)
        return;

    if (p->has_driver && m->driver == DRIVER_PROCESS) {
        if (!p->has_command)
            manifest_error(p, driver->line,
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
        } else if ((r = find_compose_file(p, driver->line, &found)) > 0) {
            m->compose_file = found;
        } else if (r < 0) {
            return;
        } else {
            manifest_error(p, driver->line,
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
    if ((r = find_compose_file(p, p->root_line, &found)) < 0)
        return;
    if (r > 0) {
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
    manifest_error(p, p->root_line,
                   "cannot tell how to run this service: add a docker-compose.yml to the service "
                   "folder, or a command such as command: [\"python3\", \"app.py\"]");
}

/* Reads the optional description; null reads as none. */
static void parse_description(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_DESCRIPTION];
    char *description;

    if (!f->value || yamldoc_is_null(f->value))
        return;
    if (manifest_check(
            p, yamldoc_read_string(p->doc, f->value, "description", &description, p->errors)) < 0)
        return;
    if (!manifest_check_length(p, yamldoc_line(f->value), "description", strlen(description),
                               MANIFEST_DESCRIPTION_MAX)) {
        free(description);
        return;
    }
    free(p->m->description);
    p->m->description = description;
}

/* on_demand: start (the default) or reject. */
static void parse_on_demand(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_ON_DEMAND];
    const char *text = yamldoc_scalar(f->value);

    if (!f->value)
        return;
    if (text && yamldoc_is_plain(f->value) && strcmp(text, "start") == 0)
        p->m->on_demand_reject = false;
    else if (text && yamldoc_is_plain(f->value) && strcmp(text, "reject") == 0)
        p->m->on_demand_reject = true;
    else
        manifest_type_error(p, f->value,
                            "on_demand must be start (a proxied request starts it) or reject");
}

/* priority: a plain integer, negative or not, within +-MANIFEST_PRIORITY_MAX. */
static void parse_priority(struct manifest_parser *p)
{
    yaml_node_t *node = p->fields[F_PRIORITY].value;
    const char *text = yamldoc_scalar(node);
    char found[TEXT_QUOTE_MAX + 1];
    char *end;
    long value;

    if (!node)
        return;
    errno = 0;
    value = text && yamldoc_is_plain(node) ? strtol(text, &end, 10) : 0;
    if (!text || !yamldoc_is_plain(node) || !*text || *end || errno ||
        value < -MANIFEST_PRIORITY_MAX || value > MANIFEST_PRIORITY_MAX) {
        yamldoc_describe(node, found, sizeof(found));
        manifest_error(p, yamldoc_line(node),
                       "priority must be a whole number from %d to %d (higher starts first "
                       "after a reboot), not %s",
                       -MANIFEST_PRIORITY_MAX, MANIFEST_PRIORITY_MAX, found);
        return;
    }
    p->m->priority = (int)value;
}

/* A duration of a swap's terms, when the manifest gives it (else *ret stays -1). */
static void parse_swap_duration(struct manifest_parser *p, int field, const char *key, int64_t *ret)
{
    uint64_t ms;

    if (p->fields[field].value &&
        manifest_check(
            p, yamldoc_read_duration(p->doc, p->fields[field].value, key, &ms, p->errors)) == 0)
        *ret = ms > INT64_MAX ? INT64_MAX : (int64_t)ms;
}

static void parse_swap(struct manifest_parser *p)
{
    bool drain;

    parse_swap_duration(p, F_SWAP_GRACE, "swap_grace", &p->m->swap_grace_ms);
    parse_swap_duration(p, F_SWAP_MAX_WAIT, "swap_max_wait", &p->m->swap_max_wait_ms);
    parse_swap_duration(p, F_MIN_RESIDENT, "min_resident", &p->m->min_resident_ms);
    if (p->fields[F_SWAP_DRAIN].value &&
        manifest_check(p, yamldoc_read_bool(p->doc, p->fields[F_SWAP_DRAIN].value, "swap_drain",
                                            &drain, p->errors)) == 0)
        p->m->swap_drain = drain;
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
    m->swap_grace_ms = m->swap_max_wait_ms = m->min_resident_ms = -1;
    m->swap_drain = -1;
    m->dir = path_join(dir, ".");
    return m;
}

/* Reads the fields in the order their checks depend on each other: ports before health
 * (its default port), driver, command and compose_file before the driver is settled. */
static void parse_fields(struct manifest_parser *p)
{
    struct manifest *m = p->m;
    struct yamldoc_field *f = p->fields;
    char *workdir;

    parse_name(p);
    parse_description(p);
    manifest_parse_ports(p);
    manifest_parse_gpu(p);
    parse_driver(p);
    if (f[F_COMPOSE_FILE].value)
        parse_path(p, &f[F_COMPOSE_FILE], "compose_file", &p->compose_file);
    manifest_parse_command(p);
    if (f[F_WORKDIR].value && parse_path(p, &f[F_WORKDIR], "workdir", &workdir) == 0) {
        free(m->workdir);
        m->workdir = workdir;
    }
    manifest_parse_env(p);
    manifest_check_env_command_size(p);
    manifest_parse_health(p);
    if (f[F_STOP_TIMEOUT].value)
        manifest_check(p, yamldoc_read_duration(p->doc, f[F_STOP_TIMEOUT].value, "stop_timeout",
                                                &m->stop_timeout_ms, p->errors));
    parse_restart(p);
    parse_priority(p);
    parse_on_demand(p);
    manifest_parse_models(p);
    if (f[F_IDLE_TIMEOUT].value && !yamldoc_is_false(f[F_IDLE_TIMEOUT].value))
        manifest_check(p, yamldoc_read_duration(p->doc, f[F_IDLE_TIMEOUT].value, "idle_timeout",
                                                &m->idle_timeout_ms, p->errors));
    parse_swap(p);
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

/* Holds files to no services folder: the manifest is not read from one. */
int manifest_parse(const char *buf, size_t len, const char *dir, struct manifest **ret,
                   char **ret_name, struct diags *errors, struct diags *warnings)
{
    return manifest_parse_within(buf, len, dir, NULL, ret, ret_name, errors, warnings);
}

/* Reports every problem it can find in one pass, sorted by line and capped, so that a
 * person fixes a manifest in one go. */
int manifest_parse_within(const char *buf, size_t len, const char *dir, const char *root_real,
                          struct manifest **ret, char **ret_name, struct diags *errors,
                          struct diags *warnings)
{
    struct manifest_parser p = {
        .dir = dir,
        .root = root_real,
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
                [F_ENV_PASS] = {.key = "env_pass"},
                [F_HEALTH] = {.key = "health"},
                [F_STOP_TIMEOUT] = {.key = "stop_timeout"},
                [F_RESTART] = {.key = "restart"},
                [F_PRIORITY] = {.key = "priority"},
                [F_GPU] = {.key = "gpu"},
                [F_DEVICES] = {.key = "devices"},
                [F_ON_DEMAND] = {.key = "on_demand"},
                [F_MODELS] = {.key = "models"},
                [F_MODEL_ALIASES] = {.key = "model_aliases"},
                [F_IDLE_TIMEOUT] = {.key = "idle_timeout"},
                [F_SWAP_GRACE] = {.key = "swap_grace"},
                [F_SWAP_MAX_WAIT] = {.key = "swap_max_wait"},
                [F_SWAP_DRAIN] = {.key = "swap_drain"},
                [F_MIN_RESIDENT] = {.key = "min_resident"},
            },
    };
    size_t errors_start = errors ? errors->n : 0, warnings_start = warnings ? warnings->n : 0;
    yaml_node_t *root;
    char found[TEXT_QUOTE_MAX + 1];

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
    manifest_check(
        &p, yamldoc_map_fields(p.doc, root, "the manifest", p.fields, F_COUNT, errors, warnings));
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
    p.m->source = xmalloc(len + 1);
    memcpy(p.m->source, buf, len);
    p.m->source[len] = '\0';
    p.m->source_len = len;
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
    strv_free(m->env_pass);
    strv_free(m->models);
    strv_free(m->model_aliases);
    free(m->health_path);
    free(m->dir);
    free(m->source);
    free(m);
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
    json_t *health, *aliases;

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
    json_object_set_new(o, "gpu", manifest_gpu_to_json(m));
    json_object_set_new(o, "driver", json_string(manifest_driver_name(m)));
    json_object_set_new(o, "compose_file", json_string_or_null(m->compose_file));
    json_object_set_new(o, "command", m->command ? strv_to_json(m->command) : json_null());
    json_object_set_new(o, "workdir", json_string_or_null(m->workdir));
    json_object_set_new(o, "env", env);
    json_object_set_new(o, "env_pass", strv_to_json(m->env_pass));
    json_object_set_new(o, "health", health ? health : json_null());
    json_object_set_new(o, "stop_timeout_ms", json_integer((json_int_t)m->stop_timeout_ms));
    json_object_set_new(o, "restart", json_string(manifest_restart_name(m->restart)));
    json_object_set_new(o, "priority", json_integer(m->priority));
    json_object_set_new(o, "on_demand", json_string(m->on_demand_reject ? "reject" : "start"));
    json_object_set_new(o, "models", strv_to_json(m->models));
    json_object_set_new(o, "idle_timeout_ms",
                        m->idle_timeout_ms ? json_integer((json_int_t)m->idle_timeout_ms)
                                           : json_null());
    json_object_set_new(o, "swap_grace_ms",
                        m->swap_grace_ms >= 0 ? json_integer(m->swap_grace_ms) : json_null());
    json_object_set_new(o, "swap_max_wait_ms",
                        m->swap_max_wait_ms >= 0 ? json_integer(m->swap_max_wait_ms) : json_null());
    json_object_set_new(o, "min_resident_ms",
                        m->min_resident_ms >= 0 ? json_integer(m->min_resident_ms) : json_null());
    json_object_set_new(o, "swap_drain",
                        m->swap_drain >= 0 ? json_boolean(m->swap_drain) : json_null());
    aliases = json_object();
    for (size_t i = 0; m->model_aliases && m->model_aliases[i]; i += 2)
        json_object_set_new(aliases, m->model_aliases[i], json_string(m->model_aliases[i + 1]));
    json_object_set_new(o, "model_aliases", aliases);
    json_object_set_new(o, "dir", json_string_or_null(m->dir));
    return o;
}
