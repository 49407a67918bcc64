/* What the pieces of the manifest parser share: the state of one manifest_parse() call
 * and the helpers that report into it. Private to manifest*.c; the rest of the code sees
 * only manifest.h. */
#ifndef NANNY_MANIFEST_INTERNAL_H
#define NANNY_MANIFEST_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/manifest.h"
#include "lib/yamldoc.h"

/* The top-level keys of a manifest, in the order yamldoc_map_fields() is given them. */
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
    F_ENV_PASS,
    F_HEALTH,
    F_STOP_TIMEOUT,
    F_RESTART,
    F_PRIORITY,
    F_GPU,
    F_DEVICES,
    F_ON_DEMAND,
    F_MODELS,
    F_MODEL_ALIASES,
    F_IDLE_TIMEOUT,
    F_SWAP_GRACE,
    F_SWAP_MAX_WAIT,
    F_SWAP_DRAIN,
    F_MIN_RESIDENT,
    F_COUNT
};

/* The state of one manifest_parse() call. */
struct manifest_parser {
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
    const char *root;   /* the resolved services folder files must lie in; NULL: no check */
};

/* True when real (a resolved path) lies strictly inside root_real (resolved too): the one
 * rule for every file a manifest brings in (manifest_load.c). */
bool manifest_path_inside(const char *real, const char *root_real);

/* manifest_parse() with the rule above applied to the compose file, given or found, with
 * symlinks and ".." resolved: one that leads outside root_real is an error of the
 * manifest. manifest_load() reads files through it. */
int manifest_parse_within(const char *buf, size_t len, const char *dir, const char *root_real,
                          struct manifest **ret, char **ret_name, struct diags *errors,
                          struct diags *warnings);

/* Reports an error of the manifest and marks the parse as failed. */
void manifest_error(struct manifest_parser *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the outcome of a yamldoc reader, which has already reported its error; returns
 * r. */
int manifest_check(struct manifest_parser *p, int r);

/* Reports a value longer than max bytes, naming it by what (a key, or a phrase such as
 * "env: the value of \"A\""). Returns false when len is over the limit. */
bool manifest_check_length(struct manifest_parser *p, int line, const char *what, size_t len,
                           size_t max);

/* Reports a value of the wrong kind at its line: expected (the rule, such as "ports must be
 * a list such as [\"8001:8000\"]"), then ", not " and what node is instead. */
void manifest_type_error(struct manifest_parser *p, const yaml_node_t *node, const char *expected);

/* Checks one name of a list read by manifest_read_names(), named what ("key[i]") at line:
 * reports what is wrong and returns false. */
typedef bool (*manifest_name_ok)(struct manifest_parser *p, const char *what, const char *name,
                                 int line);

/* Reads the field f (the manifest's key) as a list of at most max strings, each checked by
 * ok and listed once (a repeated one is an error). Returns those that pass (NULL-terminated;
 * the caller frees them), or NULL when the field is absent or not such a list (reported as
 * expected: the rule, for manifest_type_error()). */
char **manifest_read_names(struct manifest_parser *p, const struct yamldoc_field *f,
                           const char *key, size_t max, const char *expected, manifest_name_ok ok);

/* ports: (manifest_ports.c). Sets m->ports, m->port and m->ports_line, or ports_failed. */
void manifest_parse_ports(struct manifest_parser *p);

/* command: and env: (manifest_env.c), and the cap on both together. */
void manifest_parse_command(struct manifest_parser *p);
void manifest_parse_env(struct manifest_parser *p); /* env_pass: as well */
void manifest_check_env_command_size(struct manifest_parser *p);

/* gpu_required:, gpu: and devices: (manifest_gpu.c): m->gpu_required and m->gpu. */
void manifest_parse_gpu(struct manifest_parser *p);
/* manifest_models.c: models: and model_aliases:. */
void manifest_parse_models(struct manifest_parser *p);

/* health: (manifest_health.c). Runs after ports: its port defaults to the service's. */
void manifest_parse_health(struct manifest_parser *p);

#endif
