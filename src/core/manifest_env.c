/* command:, env: and env_pass: of a manifest: the argv or shell line a process service
 * runs, the variables it gets, and the caps on both. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/manifest_internal.h"
#include "lib/alloc.h"

/* Checks that every argument of a command list is at most MANIFEST_VALUE_MAX bytes,
 * reporting each one that is not. */
static bool command_lengths_ok(struct manifest_parser *p, yaml_node_t *node, char **argv,
                               size_t argc)
{
    bool ok = true;

    for (size_t i = 0; i < argc; i++) {
        yaml_node_t *item = yamldoc_node(p->doc, node->data.sequence.items.start[i]);
        char key[32];

        snprintf(key, sizeof(key), "command[%zu]", i);
        if (!manifest_check_length(p, item ? yamldoc_line(item) : yamldoc_line(node), key,
                                   strlen(argv[i]), MANIFEST_VALUE_MAX))
            ok = false;
    }
    return ok;
}

/* Reads command: an argv list run as it is, or a string run by /bin/sh -c. */
void manifest_parse_command(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_COMMAND];
    struct manifest *m = p->m;
    char **argv;
    size_t argc;
    char *text;

    if (!f->value)
        return;
    p->has_command = true;
    switch (f->value->type) {
    case YAML_SEQUENCE_NODE:
        if (manifest_check(p, yamldoc_read_strings(p->doc, f->value, "command", MANIFEST_ARGS_MAX,
                                                   &argv, &argc, p->errors)) < 0)
            return;
        if (!command_lengths_ok(p, f->value, argv, argc)) {
            strv_free(argv);
            return;
        }
        if (argc == 0 || argv[0][0] == '\0') {
            manifest_error(p, yamldoc_line(f->value),
                           "command must start with the program to run, such as [\"python3\", "
                           "\"app.py\"]");
            strv_free(argv);
            return;
        }
        m->command = argv;
        m->command_is_shell = false;
        return;
    case YAML_SCALAR_NODE:
        if (manifest_check(p, yamldoc_read_string(p->doc, f->value, "command", &text, p->errors)) <
            0)
            return;
        if (!manifest_check_length(p, yamldoc_line(f->value), "command", strlen(text),
                                   MANIFEST_VALUE_MAX)) {
            free(text);
            return;
        }
        if (text[strspn(text, " \t\r\n")] == '\0') {
            manifest_error(p, yamldoc_line(f->value),
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
        manifest_type_error(p, f->value,
                            "command must be a list such as [\"python3\", \"app.py\"] or a string");
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
static void env_key_error(struct manifest_parser *p, int line, const char *key, size_t len)
{
    char quoted[TEXT_QUOTE_MAX + 1];

    text_quote(key, len, quoted, sizeof(quoted));
    manifest_error(p, line,
                   "env: %s is not a valid variable name: use letters, digits and '_', not "
                   "starting with a digit",
                   quoted);
}

/* Checks that the value of variable key (key_len bytes) is at most MANIFEST_VALUE_MAX
 * bytes; where names the entry in a message ("env" or "env[3]"). */
static bool env_value_length_ok(struct manifest_parser *p, int line, const char *where,
                                const char *key, size_t key_len, const char *value)
{
    char quoted[TEXT_QUOTE_MAX + 1];
    char *what;
    bool ok;

    text_quote(key, key_len, quoted, sizeof(quoted));
    what = xasprintf("%s: the value of %s", where, quoted);
    ok = manifest_check_length(p, line, what, strlen(value), MANIFEST_VALUE_MAX);
    free(what);
    return ok;
}

/* Reads env: as a mapping, the natural YAML form. A null value means empty. */
static void parse_env_mapping(struct manifest_parser *p, yaml_node_t *node, char **env, size_t *n)
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
                manifest_error(p, line, "env has more than %d entries", MANIFEST_ENV_MAX);
            counted = true;
            continue;
        }
        if (!env_key_valid(key, strlen(key))) {
            env_key_error(p, line, key, strlen(key));
            continue;
        }
        item_key = xasprintf("env.%s", key);
        if (manifest_check(p, yamldoc_read_string(p->doc, value, item_key, &text, p->errors)) ==
            0) {
            if (env_value_length_ok(p, yamldoc_line(value), "env", key, strlen(key), text))
                env[(*n)++] = xasprintf("%s=%s", key, yamldoc_is_null(value) ? "" : text);
            free(text);
        }
        free(item_key);
    }
    manifest_check(p, yamldoc_iter_end(&it));
}

/* Reads env: as a list of "KEY=VALUE" strings, the other form docker compose accepts. */
static void parse_env_list(struct manifest_parser *p, yaml_node_t *node, char **env, size_t *n)
{
    char **items;
    size_t n_items;

    if (manifest_check(p, yamldoc_read_strings(p->doc, node, "env", MANIFEST_ENV_MAX, &items,
                                               &n_items, p->errors)) < 0)
        return;
    for (size_t i = 0; i < n_items; i++) {
        yaml_node_t *item = yamldoc_node(p->doc, node->data.sequence.items.start[i]);
        int line = item ? yamldoc_line(item) : yamldoc_line(node);
        char *eq = strchr(items[i], '=');
        size_t key_len = eq ? (size_t)(eq - items[i]) : 0;
        char quoted[TEXT_QUOTE_MAX + 1], where[32];
        bool repeated = false;

        if (!eq) {
            text_quote(items[i], strlen(items[i]), quoted, sizeof(quoted));
            manifest_error(p, line, "env[%zu]: %s must have the form KEY=VALUE", i, quoted);
            continue;
        }
        if (!env_key_valid(items[i], key_len)) {
            env_key_error(p, line, items[i], key_len);
            continue;
        }
        for (size_t j = 0; j < *n && !repeated; j++)
            repeated = strncmp(env[j], items[i], key_len + 1) == 0;
        if (repeated) {
            text_quote(items[i], key_len, quoted, sizeof(quoted));
            manifest_error(p, line, "env[%zu]: %s is set twice: keep only one", i, quoted);
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

static bool env_pass_name_ok(struct manifest_parser *p, const char *what, const char *name,
                             int line)
{
    char quoted[TEXT_QUOTE_MAX + 1];

    if (env_key_valid(name, strlen(name)))
        return true;
    text_quote(name, strlen(name), quoted, sizeof(quoted));
    manifest_error(p, line,
                   "%s: %s is not a valid variable name: use letters, digits and '_', not "
                   "starting with a digit",
                   what, quoted);
    return false;
}

/* Reads env_pass: a list of names of the daemon's variables that the service gets (its
 * environment is otherwise clean: PATH, LANG, HOME and env). */
static void parse_env_pass(struct manifest_parser *p)
{
    char **kept = manifest_read_names(p, &p->fields[F_ENV_PASS], "env_pass", MANIFEST_ENV_MAX,
                                      "env_pass must be a list of variable names such as "
                                      "[\"CUDA_VISIBLE_DEVICES\", \"HF_TOKEN\"]",
                                      env_pass_name_ok);

    if (!kept)
        return;
    strv_free(p->m->env_pass);
    p->m->env_pass = kept;
}
/* Reads env: in either form into "KEY=VALUE" strings, and env_pass:. */
void manifest_parse_env(struct manifest_parser *p)
{
    struct yamldoc_field *f = &p->fields[F_ENV];
    char **env;
    size_t n = 0;

    parse_env_pass(p);
    if (!f->value)
        return;
    if (f->value->type != YAML_MAPPING_NODE && f->value->type != YAML_SEQUENCE_NODE) {
        manifest_type_error(
            p, f->value, "env must be a mapping (KEY: value) or a list of \"KEY=VALUE\" strings");
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
void manifest_check_env_command_size(struct manifest_parser *p)
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
    manifest_error(p, line,
                   "env and command together are %zu bytes long (env %zu, command %zu); the limit "
                   "is %d bytes (64 KiB): pass large data in a file instead",
                   env + command, env, command, MANIFEST_ENV_COMMAND_MAX);
}
