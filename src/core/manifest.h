/* service.yaml: parsing and validation of one manifest (SPEC section 2). Pure but for
 * the stat() calls that find the default compose file. */
#ifndef NANNY_MANIFEST_H
#define NANNY_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "lib/yamldoc.h" /* struct diags, diags_add(), diags_clear() */

#define MANIFEST_NAME_MAX  63
#define MANIFEST_SIZE_MAX  (1024 * 1024)
#define MANIFEST_FILE_NAME "service.yaml"
/* Caps on what a manifest may list. */
#define MANIFEST_PORTS_MAX  1024
#define MANIFEST_ENV_MAX    1024
#define MANIFEST_MODELS_MAX 1024 /* models: and model_aliases: entries */
#define MANIFEST_MODEL_MAX  256  /* bytes of a model name */
#define MANIFEST_ARGS_MAX   1024
/* Caps on the size of what a manifest holds, in bytes. */
#define MANIFEST_DESCRIPTION_MAX 1024
#define MANIFEST_VALUE_MAX       4096        /* an env value, a command argument, a path */
#define MANIFEST_ENV_COMMAND_MAX (64 * 1024) /* env and command together */
/* Errors reported per manifest; past them one entry "... and N more problems". */
#define MANIFEST_ERRORS_MAX 10

/* The drivers whose fields the manifest knows (a command, a compose file), and any other
 * driver of the table (drivers_set) named by an explicit `driver:`. */
enum driver_kind { DRIVER_COMPOSE, DRIVER_PROCESS, DRIVER_OTHER };
enum restart_policy { RESTART_NO, RESTART_ON_FAILURE, RESTART_ALWAYS };

/* One "HOST:CONTAINER" (or "PORT", or "IP:HOST:CONTAINER", optional "/tcp" or "/udp"). */
struct port_map {
    char *host_ip; /* NULL when not given */
    uint16_t host;
    uint16_t container;
    bool udp;
    int line; /* where it stands in the manifest */
};

/* What a service needs of the box's GPUs (SPEC section 7 "GPUs"). */
#define MANIFEST_GPUS_MAX 64 /* devices is a bit set */
struct manifest_gpu {
    unsigned count;   /* how many GPUs; 0: none (gpu_required is false) */
    uint64_t memory;  /* bytes on each, shareable; 0: whole GPUs, exclusive */
    uint64_t devices; /* devices: the GPUs it may use (bit i: GPU i); 0: any */
    bool enforce;     /* gpu.enforce: stopped when it uses more memory than it declares */
};

/* priority: from -MANIFEST_PRIORITY_MAX to MANIFEST_PRIORITY_MAX. */
#define MANIFEST_PRIORITY_MAX 1000000

struct manifest {
    char *name;
    char *description; /* "" when not given */
    struct port_map *ports;
    size_t n_ports;
    uint16_t port;     /* the first host port, 0 when there is none */
    bool gpu_required; /* it needs a GPU: gpu_required: true, or gpu: */
    struct manifest_gpu gpu;
    enum driver_kind driver;
    const char *driver_other; /* DRIVER_OTHER: its name (the driver's own string) */
    char *compose_file;       /* absolute path; NULL unless driver is compose */
    char **command;           /* NULL-terminated argv; for the string form {"/bin/sh","-c",s} */
    bool command_is_shell;
    char *workdir;   /* absolute path; the service folder by default */
    char **env;      /* NULL-terminated "KEY=VALUE" strings, possibly empty */
    char **env_pass; /* NULL-terminated names of the daemon's variables a service gets */
    bool health_enabled;
    char *health_path; /* starts with '/' */
    uint16_t health_port;
    uint64_t health_interval_ms;
    uint64_t health_timeout_ms;
    uint64_t health_start_period_ms;
    uint64_t stop_timeout_ms;
    enum restart_policy restart;
    int priority;             /* after a host reboot, higher starts first; a GPU conflict stops the
                               * lowest first (0 by default) */
    bool on_demand_reject;    /* on_demand: reject: a proxied request never starts it */
    char **models;            /* models: the names /v1/ requests are routed by (NULL: none) */
    char **model_aliases;     /* model_aliases: alias, model, alias, model, ..., NULL */
    uint64_t idle_timeout_ms; /* idle_timeout: stopped after this long with no proxied
                               * request (0: never) */
    /* The terms of a swap that stops it for another service, each -1 for the config's:
     * how long its requests in flight are waited for, how long new ones are still let in,
     * whether none are (swap_drain), and how long it runs before it may be swapped out. */
    int64_t swap_grace_ms, swap_max_wait_ms, min_resident_ms;
    int swap_drain; /* -1, 0 or 1 */
    char *dir;      /* absolute service folder */
    int name_line;  /* where name: and ports: stand, for cross-manifest errors */
    int ports_line;
    /* The text it was parsed from (NUL-terminated; at most MANIFEST_SIZE_MAX): the state
     * file records what a service was started with, for the next daemon to adopt. */
    char *source;
    size_t source_len;
};

/* Parses and validates a manifest held in memory. dir is the service folder (used for
 * relative paths and to look for a compose file). On success *ret gets a manifest owned by
 * the caller and 0 is returned; on failure errors gets at least one entry (at most
 * MANIFEST_ERRORS_MAX and a last "... and N more problems") and -EINVAL is returned.
 * Warnings (unknown keys, a health timeout not shorter than its interval) are added in
 * both cases. *ret_name, when not NULL, gets a copy of the name when a valid one could be
 * read, even if the manifest is broken (and is left alone otherwise). */
int manifest_parse(const char *buf, size_t len, const char *dir, struct manifest **ret,
                   char **ret_name, struct diags *errors, struct diags *warnings);

/* Reads path (at most MANIFEST_SIZE_MAX bytes, a regular file whose real path lies
 * inside root) and parses it as manifest_parse() does; its compose file, given or found,
 * must lie inside root too (symlinks and ".." resolved), or the manifest is broken. */
int manifest_load(const char *path, const char *root, struct manifest **ret, char **ret_name,
                  struct diags *errors, struct diags *warnings);

void manifest_free(struct manifest *m);

/* The manifest as JSON, with every default filled in: used for the API and to tell
 * whether a manifest changed between two scans. New reference. */
json_t *manifest_to_json(const struct manifest *m);

/* gpu: as JSON, {count, memory (null: whole GPUs), exclusive, devices}; null for a
 * service that needs no GPU or one whole GPU, any (gpu_required alone). New reference. */
json_t *manifest_gpu_to_json(const struct manifest *m);

/* The model of m that name names (one of models:, or through model_aliases:), or NULL. */
const char *manifest_model_for(const struct manifest *m, const char *name);

/* The names a manifest spells the driver and the restart policy with. Static strings. */
const char *manifest_driver_name(const struct manifest *m);
const char *manifest_restart_name(enum restart_policy r);

/* True when s matches ^[a-z0-9][a-z0-9._-]{0,62}$. */
bool manifest_name_valid(const char *s);

/* True for a file name whose presence in a service folder decides what the service is:
 * service.yaml or one of the default compose file names. */
bool manifest_file_decides(const char *file_name);

#endif
