/* The daemon's configuration. Every bad value stops the daemon at start, with a message
 * naming where the value came from. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "lib/alloc.h"
#include "lib/gpuinfo.h"
#include "lib/netaddr.h"
#include "lib/yamldoc.h"

static void set_str(char **dst, const char *value)
{
    free(*dst);
    *dst = value ? xstrdup(value) : NULL;
}

/* The state folder when none is given: /var/lib for root, the XDG state folder else. */
static char *default_state_dir(void)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

    if (geteuid() == 0)
        return xstrdup("/var/lib/service-nanny");
    if (xdg && *xdg)
        return xasprintf("%s/service-nanny", xdg);
    if (home && *home)
        return xasprintf("%s/.local/state/service-nanny", home);
    return xstrdup("./state");
}

/* A compose command is one or more words, the first a program: "docker compose". */
static int parse_compose_command(const char *s)
{
    s += strspn(s, " \t");
    return *s && strlen(s) < 256 ? 0 : -EINVAL;
}

/* The socket path of a Docker host setting: "unix://PATH" or "PATH"; NULL for anything
 * else (tcp:// is not supported: the engine's API is root-equivalent, keep it local). */
static const char *docker_host_path(const char *s)
{
    if (!s)
        return NULL;
    if (strncmp(s, "unix://", 7) == 0)
        s += 7;
    return s[0] == '/' && strlen(s) < 108 ? s : NULL;
}

static void config_defaults(struct config *c)
{
    const char *docker = docker_host_path(getenv("DOCKER_HOST"));

    *c = (struct config){0};
    c->listen = xstrdup(CONFIG_DEFAULT_LISTEN);
    c->services_dir = xstrdup(CONFIG_DEFAULT_SERVICES);
    c->state_dir = default_state_dir();
    c->log_level = LOG_INFO;
    c->gpu_conflict = GPU_CONFLICT_REFUSE;
    c->log_max_bytes = CONFIG_LOG_MAX_BYTES;
    c->log_max_files = CONFIG_LOG_MAX_FILES;
    c->max_connections_per_client = CONFIG_PER_CLIENT_DEFAULT;
    c->mcp_sessions = CONFIG_MCP_SESSIONS_DEFAULT;
    c->mcp_session_idle_ms = CONFIG_MCP_IDLE_DEFAULT_MS;
    c->docker_host = xstrdup(docker ? docker : CONFIG_DEFAULT_DOCKER_HOST);
    c->nvml_library = xstrdup(GPUINFO_NVML_DEFAULT);
    c->nvidia_smi = xstrdup(GPUINFO_SMI_DEFAULT);
    c->swap_grace_ms = CONFIG_SWAP_GRACE_DEFAULT;
    c->swap_max_wait_ms = CONFIG_SWAP_MAX_WAIT_DEFAULT;
    c->gpu_queue_max = CONFIG_GPU_QUEUE_DEFAULT;
    c->proxy_connect_timeout_ms = CONFIG_PROXY_CONNECT_DEFAULT;
    c->proxy_read_timeout_ms = CONFIG_PROXY_READ_DEFAULT;
    c->client_timeout_ms = CONFIG_CLIENT_TIMEOUT_DEFAULT;
}

static void gpus_free(struct config_gpu *gpus, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(gpus[i].name);
    free(gpus);
}

void config_done(struct config *c)
{
    free(c->listen);
    free(c->services_dir);
    free(c->state_dir);
    free(c->config_file);
    free(c->compose_command);
    free(c->docker_host);
    strv_free(c->allowed_hosts);
    strv_free(c->allowed_origins);
    strv_free(c->warnings);
    free(c->trusted_proxies);
    free(c->keys_file);
    free(c->tls_cert);
    free(c->tls_key);
    gpus_free(c->gpus, c->n_gpus);
    free(c->nvml_library);
    free(c->nvidia_smi);
    *c = (struct config){0};
}

static int fail(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int parse_log_format(const char *s, bool *ret_json)
{
    if (strcmp(s, "text") == 0)
        *ret_json = false;
    else if (strcmp(s, "json") == 0)
        *ret_json = true;
    else
        return -EINVAL;
    return 0;
}

static int parse_gpu_conflict(const char *s, enum gpu_conflict *ret)
{
    if (strcmp(s, "refuse") == 0)
        *ret = GPU_CONFLICT_REFUSE;
    else if (strcmp(s, "preempt") == 0)
        *ret = GPU_CONFLICT_PREEMPT;
    else
        return -EINVAL;
    return 0;
}

/* A path from the config file is relative to the file's folder. */
static char *path_from_file(const char *file, const char *value)
{
    char *copy, *dir, *path;

    if (value[0] == '/')
        return xstrdup(value);
    copy = xstrdup(file);
    dir = dirname(copy);
    path = xasprintf("%s/%s", dir, value);
    free(copy);
    return path;
}

/* Why an entry of trusted_proxies is not a range (cidr_parse()'s error r). */
static const char *trusted_proxy_problem(int r)
{
    if (r == -ERANGE)
        return "has a prefix longer than its address (32 bits for IPv4, 128 for IPv6)";
    if (r == -EDOM)
        return "has bits set past its prefix (a range is written from its first address, "
               "like 10.0.0.0/8)";
    return "is not an IP address or a CIDR range (like 127.0.0.1, 10.0.0.0/8 or ::1)";
}

static void set_trusted_proxies(struct config *c, struct cidr *list, size_t n)
{
    free(c->trusted_proxies);
    c->trusted_proxies = list;
    c->trusted_proxies_n = n;
}

/* Reads --trusted-proxies or NANNY_TRUSTED_PROXIES: ranges separated by commas (spaces
 * around them allowed); an empty value means none. */
static int parse_trusted_proxies(struct config *c, const char *value, const char *from, char *err,
                                 size_t err_size)
{
    struct cidr *list = NULL;
    size_t n = 0;
    const char *p = value;

    if (value[strspn(value, " \t")] == '\0') {
        set_trusted_proxies(c, NULL, 0);
        return 0;
    }
    for (;;) {
        size_t len = strcspn(p, ",");
        char text[CIDR_TEXT_MAX];
        size_t first = strspn(p, " \t"), last = len;
        int r = -EINVAL;

        while (last > first && (p[last - 1] == ' ' || p[last - 1] == '\t'))
            last--;
        if (n >= CONFIG_LIST_MAX) {
            free(list);
            return fail(err, err_size, "%s: more than %d trusted proxies", from, CONFIG_LIST_MAX);
        }
        if (last - first < sizeof(text)) {
            memcpy(text, p + first, last - first);
            text[last - first] = '\0';
            list = xrealloc(list, (n + 1) * sizeof(*list));
            r = cidr_parse(text, &list[n]);
        }
        if (r < 0) {
            free(list);
            if (last == first)
                return fail(err, err_size,
                            "%s: an empty entry in '%.100s' (ranges are separated "
                            "by commas)",
                            from, value);
            return fail(err, err_size, "%s: '%.*s' %s", from,
                        (int)(last - first > 100 ? 100 : last - first), p + first,
                        trusted_proxy_problem(r));
        }
        n++;
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    set_trusted_proxies(c, list, n);
    return 0;
}

/* Keeps a warning (taken) for the daemon to log once logging is set up. */
static void config_add_warning(struct config *c, char *warning)
{
    size_t n = 0;

    while (c->warnings && c->warnings[n])
        n++;
    if (n >= CONFIG_LIST_MAX) {
        free(warning);
        return;
    }
    c->warnings = xrealloc(c->warnings, (n + 2) * sizeof(*c->warnings));
    c->warnings[n] = warning;
    c->warnings[n + 1] = NULL;
}

/* The keys of the config file. */
enum {
    FILE_LISTEN,
    FILE_SERVICES,
    FILE_STATE_DIR,
    FILE_LOG_LEVEL,
    FILE_LOG_FORMAT,
    FILE_INSECURE,
    FILE_GPU_CONFLICT,
    FILE_COMPOSE_COMMAND,
    FILE_DOCKER_HOST,
    FILE_ALLOWED_HOSTS,
    FILE_ALLOWED_ORIGINS,
    FILE_STOP_SERVICES_ON_EXIT,
    FILE_LOG_MAX_SIZE,
    FILE_LOG_MAX_FILES,
    FILE_MAX_CONNECTIONS_PER_CLIENT,
    FILE_NO_RESUME,
    FILE_TRUSTED_PROXIES,
    FILE_KEYS_FILE,
    FILE_TLS_CERT,
    FILE_TLS_KEY,
    FILE_RATE_LIMIT,
    FILE_MCP,
    FILE_GPUS,
    FILE_NVML_LIBRARY,
    FILE_NVIDIA_SMI,
    FILE_SWAP_GRACE,
    FILE_SWAP_MAX_WAIT,
    FILE_SWAP_DRAIN,
    FILE_MIN_RESIDENT,
    FILE_GPU_QUEUE_MAX,
    FILE_PROXY_CONNECT_TIMEOUT,
    FILE_PROXY_READ_TIMEOUT,
    FILE_CLIENT_TIMEOUT,
    FILE_KEYS,
};

/* Reads rate_limit: {rps: N, burst: M}; burst defaults to rps. */
static void file_read_rate_limit(struct config *c, struct yamldoc *doc,
                                 const struct yamldoc_field *f, struct diags *errors)
{
    struct yamldoc_field fields[] = {{.key = "rps"}, {.key = "burst"}};
    uint64_t rps, burst;

    if (yamldoc_map_fields(doc, f->value, "rate_limit", fields, 2, errors, errors) < 0)
        return;
    if (!fields[0].value) {
        diags_add(errors, f->line, "rate_limit needs rps: the requests per second allowed");
        return;
    }
    if (yamldoc_read_uint(doc, fields[0].value, "rps", 1, CONFIG_RATE_MAX, &rps, errors) < 0)
        return;
    burst = rps;
    if (fields[1].value &&
        yamldoc_read_uint(doc, fields[1].value, "burst", 1, CONFIG_RATE_MAX, &burst, errors) < 0)
        return;
    c->rate_rps = (unsigned)rps;
    c->rate_burst = (unsigned)burst;
}

/* Reads mcp: {sessions: N, session_idle: DURATION}. */
static void file_read_mcp(struct config *c, struct yamldoc *doc, const struct yamldoc_field *f,
                          struct diags *errors)
{
    struct yamldoc_field fields[] = {{.key = "sessions"}, {.key = "session_idle"}};
    uint64_t n, ms;

    if (yamldoc_map_fields(doc, f->value, "mcp", fields, 2, errors, errors) < 0)
        return;
    if (fields[0].value && yamldoc_read_uint(doc, fields[0].value, "sessions", 1,
                                             CONFIG_MCP_SESSIONS_LIMIT, &n, errors) == 0)
        c->mcp_sessions = (unsigned)n;
    if (fields[1].value &&
        yamldoc_read_duration(doc, fields[1].value, "session_idle", &ms, errors) == 0) {
        if (ms < 1000)
            diags_add(errors, f->line, "mcp.session_idle must be at least 1s");
        else
            c->mcp_session_idle_ms = ms;
    }
}

/* Reads one item of gpus: {index, name, memory} into gpu (index i of the list, the
 * items before it in gpus); false when it is bad (reported). */
static bool file_read_gpu(struct yamldoc *doc, yaml_node_t *node, size_t i,
                          const struct config_gpu *gpus, struct config_gpu *gpu,
                          struct diags *errors)
{
    struct yamldoc_field fields[] = {{.key = "index"}, {.key = "name"}, {.key = "memory"}};
    char key[32], sub[48];
    int line = yamldoc_line(node);
    uint64_t index = 0;
    bool ok = true;

    snprintf(key, sizeof(key), "gpus[%zu]", i);
    if (yamldoc_map_fields(doc, node, key, fields, 3, errors, errors) < 0)
        return false;
    snprintf(sub, sizeof(sub), "%s.index", key);
    if (!fields[0].value) {
        diags_add(errors, line, "%s needs index: the GPU's number, 0 to %d", key,
                  CONFIG_GPUS_MAX - 1);
        ok = false;
    } else if (yamldoc_read_uint(doc, fields[0].value, sub, 0, CONFIG_GPUS_MAX - 1, &index,
                                 errors) < 0) {
        ok = false;
    } else {
        for (size_t j = 0; j < i; j++)
            if (gpus[j].index == index) {
                diags_add(errors, fields[0].line, "%s is %u, as gpus[%zu].index is already", sub,
                          (unsigned)index, j);
                ok = false;
            }
    }
    gpu->index = (unsigned)index;
    snprintf(sub, sizeof(sub), "%s.memory", key);
    if (!fields[2].value) {
        diags_add(errors, line, "%s needs memory: the GPU's memory, like 24GiB", key);
        ok = false;
    } else if (yamldoc_read_size(doc, fields[2].value, sub, &gpu->memory, errors) < 0) {
        ok = false;
    } else if (gpu->memory == 0) {
        diags_add(errors, fields[2].line, "%s must be more than 0, like 24GiB", sub);
        ok = false;
    }
    snprintf(sub, sizeof(sub), "%s.name", key);
    if (fields[1].value && yamldoc_read_string(doc, fields[1].value, sub, &gpu->name, errors) < 0)
        ok = false;
    if (gpu->name && !gpu->name[0]) {
        free(gpu->name);
        gpu->name = NULL;
    }
    if (!gpu->name)
        gpu->name = xasprintf("GPU %u", gpu->index);
    return ok;
}

static int gpu_compare(const void *a, const void *b)
{
    const struct config_gpu *x = a, *y = b;

    return (x->index > y->index) - (x->index < y->index);
}

/* Reads gpus: a list of {index, name, memory}; every bad item is reported at its line. */
static void file_read_gpus(struct config *c, struct yamldoc *doc, const struct yamldoc_field *f,
                           struct diags *errors)
{
    struct config_gpu *gpus;
    size_t n;
    bool ok = true;

    if (yamldoc_is_null(f->value)) {
        gpus_free(c->gpus, c->n_gpus);
        c->gpus = NULL;
        c->n_gpus = 0;
        return;
    }
    if (f->value->type != YAML_SEQUENCE_NODE) {
        diags_add(errors, f->line,
                  "gpus must be a list of {index, name, memory}, like [{index: 0, name: A100, "
                  "memory: 80GiB}]");
        return;
    }
    n = (size_t)(f->value->data.sequence.items.top - f->value->data.sequence.items.start);
    if (n > CONFIG_GPUS_MAX) {
        diags_add(errors, f->line, "gpus lists %zu GPUs, more than %d", n, CONFIG_GPUS_MAX);
        return;
    }
    gpus = xcalloc(n ? n : 1, sizeof(*gpus));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yamldoc_node(doc, f->value->data.sequence.items.start[i]);
        if (!item || !file_read_gpu(doc, item, i, gpus, &gpus[i], errors))
            ok = false;
    }
    if (!ok) {
        gpus_free(gpus, n);
        return;
    }
    qsort(gpus, n, sizeof(*gpus), gpu_compare);
    /* Indexes are what CUDA_VISIBLE_DEVICES names: 0 to n - 1, as NVIDIA numbers them. */
    for (size_t i = 0; i < n; i++) {
        if (gpus[i].index != i) {
            diags_add(errors, f->line,
                      "gpus must number the GPUs 0 to %zu, as nvidia-smi does: %zu is missing",
                      n - 1, i);
            gpus_free(gpus, n);
            return;
        }
    }
    gpus_free(c->gpus, c->n_gpus);
    c->gpus = n ? gpus : NULL;
    c->n_gpus = n;
    if (!n)
        free(gpus);
}

/* Reads trusted_proxies from the config file: a list of ranges; a bad one is reported at
 * its own line. */
static void file_read_trusted_proxies(struct config *c, struct yamldoc *doc,
                                      const struct yamldoc_field *f, struct diags *errors)
{
    struct cidr *list;
    char **strv;
    size_t n;
    bool failed = false;

    if (yamldoc_read_strings(doc, f->value, f->key, CONFIG_LIST_MAX, &strv, &n, errors) < 0)
        return;
    list = xcalloc(n ? n : 1, sizeof(*list));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yamldoc_node(doc, f->value->data.sequence.items.start[i]);
        int r = cidr_parse(strv[i], &list[i]);
        if (r < 0) {
            diags_add(errors, item ? yamldoc_line(item) : f->line, "%s[%zu]: '%.100s' %s", f->key,
                      i, strv[i], trusted_proxy_problem(r));
            failed = true;
        }
    }
    strv_free(strv);
    if (failed || n == 0) {
        free(list);
        list = NULL;
    }
    if (!failed)
        set_trusted_proxies(c, list, n);
}

/* Applies one key of the config file to c; problems go to errors with the key's line. */
static void file_apply(struct config *c, const char *file, struct yamldoc *doc, int key,
                       const struct yamldoc_field *f, struct diags *errors)
{
    char *s = NULL, **list;
    size_t n;

    switch (key) {
    case FILE_INSECURE:
        yamldoc_read_bool(doc, f->value, f->key, &c->insecure, errors);
        return;
    case FILE_STOP_SERVICES_ON_EXIT:
        yamldoc_read_bool(doc, f->value, f->key, &c->stop_services_on_exit, errors);
        return;
    case FILE_NO_RESUME:
        yamldoc_read_bool(doc, f->value, f->key, &c->no_resume, errors);
        return;
    case FILE_SWAP_GRACE:
        yamldoc_read_duration(doc, f->value, f->key, &c->swap_grace_ms, errors);
        return;
    case FILE_SWAP_MAX_WAIT:
        yamldoc_read_duration(doc, f->value, f->key, &c->swap_max_wait_ms, errors);
        return;
    case FILE_SWAP_DRAIN:
        yamldoc_read_bool(doc, f->value, f->key, &c->swap_drain, errors);
        return;
    case FILE_MIN_RESIDENT:
        yamldoc_read_duration(doc, f->value, f->key, &c->min_resident_ms, errors);
        return;
    case FILE_GPU_QUEUE_MAX: {
        uint64_t max;
        if (yamldoc_read_uint(doc, f->value, f->key, 1, 65536, &max, errors) == 0)
            c->gpu_queue_max = (unsigned)max;
        return;
    }
    case FILE_CLIENT_TIMEOUT: {
        uint64_t ms;
        if (yamldoc_read_duration(doc, f->value, f->key, &ms, errors) < 0)
            return;
        if (ms < 1000 || ms > 24ULL * 3600 * 1000)
            diags_add(errors, f->line, "client_timeout must be from 1s to 24h");
        else
            c->client_timeout_ms = ms;
        return;
    }
    case FILE_PROXY_CONNECT_TIMEOUT:
    case FILE_PROXY_READ_TIMEOUT: {
        uint64_t ms;
        if (yamldoc_read_duration(doc, f->value, f->key, &ms, errors) < 0)
            return;
        if (ms == 0)
            diags_add(errors, f->line, "%s must be at least 1ms", f->key);
        else
            *(key == FILE_PROXY_CONNECT_TIMEOUT ? &c->proxy_connect_timeout_ms
                                                : &c->proxy_read_timeout_ms) = ms;
        return;
    }
    case FILE_LOG_MAX_SIZE:
        yamldoc_read_uint(doc, f->value, f->key, 4096, UINT64_C(1) << 40, &c->log_max_bytes,
                          errors);
        return;
    case FILE_LOG_MAX_FILES: {
        uint64_t files;
        if (yamldoc_read_uint(doc, f->value, f->key, 0, 100, &files, errors) == 0)
            c->log_max_files = (unsigned)files;
        return;
    }
    case FILE_MAX_CONNECTIONS_PER_CLIENT: {
        uint64_t max;
        if (yamldoc_read_uint(doc, f->value, f->key, 1, CONFIG_PER_CLIENT_LIMIT, &max, errors) == 0)
            c->max_connections_per_client = (unsigned)max;
        return;
    }
    case FILE_TRUSTED_PROXIES:
        file_read_trusted_proxies(c, doc, f, errors);
        return;
    case FILE_RATE_LIMIT:
        file_read_rate_limit(c, doc, f, errors);
        return;
    case FILE_MCP:
        file_read_mcp(c, doc, f, errors);
        return;
    case FILE_GPUS:
        file_read_gpus(c, doc, f, errors);
        return;
    case FILE_ALLOWED_HOSTS:
    case FILE_ALLOWED_ORIGINS:
        if (yamldoc_read_strings(doc, f->value, f->key, CONFIG_LIST_MAX, &list, &n, errors) < 0)
            return;
        if (key == FILE_ALLOWED_HOSTS) {
            strv_free(c->allowed_hosts);
            c->allowed_hosts = list;
        } else {
            strv_free(c->allowed_origins);
            c->allowed_origins = list;
        }
        return;
    }

    if (yamldoc_read_string(doc, f->value, f->key, &s, errors) < 0)
        return;
    switch (key) {
    case FILE_LISTEN:
        if (netaddr_parse_listen(s, &(struct sockaddr_storage){0}, &(socklen_t){0}) < 0)
            diags_add(errors, f->line, "listen must be HOST:PORT, like 127.0.0.1:8080");
        else
            set_str(&c->listen, s);
        break;
    case FILE_SERVICES:
        free(c->services_dir);
        c->services_dir = path_from_file(file, s);
        break;
    case FILE_STATE_DIR:
        free(c->state_dir);
        c->state_dir = path_from_file(file, s);
        break;
    case FILE_KEYS_FILE:
        free(c->keys_file);
        c->keys_file = path_from_file(file, s);
        c->keys_file_given = true;
        break;
    case FILE_TLS_CERT:
        free(c->tls_cert);
        c->tls_cert = path_from_file(file, s);
        break;
    case FILE_TLS_KEY:
        free(c->tls_key);
        c->tls_key = path_from_file(file, s);
        break;
    case FILE_LOG_LEVEL:
        if (log_level_parse(s, &c->log_level) < 0)
            diags_add(errors, f->line, "log_level must be error, warning, info or debug");
        break;
    case FILE_LOG_FORMAT:
        if (parse_log_format(s, &c->log_json) < 0)
            diags_add(errors, f->line, "log_format must be text or json");
        break;
    case FILE_GPU_CONFLICT:
        if (parse_gpu_conflict(s, &c->gpu_conflict) < 0)
            diags_add(errors, f->line, "gpu_conflict must be refuse or preempt");
        break;
    case FILE_COMPOSE_COMMAND:
        if (parse_compose_command(s) < 0)
            diags_add(errors, f->line, "compose_command must name a program, like docker-compose");
        else
            set_str(&c->compose_command, s);
        break;
    case FILE_NVML_LIBRARY:
    case FILE_NVIDIA_SMI:
        /* A name is looked up as the system does; a relative path is the file's. */
        free(key == FILE_NVML_LIBRARY ? c->nvml_library : c->nvidia_smi);
        *(key == FILE_NVML_LIBRARY ? &c->nvml_library : &c->nvidia_smi) =
            strchr(s, '/') ? path_from_file(file, s) : xstrdup(s);
        break;
    case FILE_DOCKER_HOST:
        if (docker_host_path(s) == NULL)
            diags_add(errors, f->line, "docker_host must be a unix socket path or unix://PATH");
        else
            set_str(&c->docker_host, docker_host_path(s));
        break;
    }
    free(s);
}

/* Applies the YAML config file to c. */
static int config_load_file(struct config *c, const char *file, char *err, size_t err_size)
{
    struct yamldoc_field fields[FILE_KEYS] = {
        [FILE_LISTEN] = {.key = "listen"},
        [FILE_SERVICES] = {.key = "services"},
        [FILE_STATE_DIR] = {.key = "state_dir"},
        [FILE_LOG_LEVEL] = {.key = "log_level"},
        [FILE_LOG_FORMAT] = {.key = "log_format"},
        [FILE_INSECURE] = {.key = "insecure"},
        [FILE_GPU_CONFLICT] = {.key = "gpu_conflict"},
        [FILE_COMPOSE_COMMAND] = {.key = "compose_command"},
        [FILE_DOCKER_HOST] = {.key = "docker_host"},
        [FILE_ALLOWED_HOSTS] = {.key = "allowed_hosts"},
        [FILE_ALLOWED_ORIGINS] = {.key = "allowed_origins"},
        [FILE_STOP_SERVICES_ON_EXIT] = {.key = "stop_services_on_exit"},
        [FILE_LOG_MAX_SIZE] = {.key = "log_max_size"},
        [FILE_LOG_MAX_FILES] = {.key = "log_max_files"},
        [FILE_MAX_CONNECTIONS_PER_CLIENT] = {.key = "max_connections_per_client"},
        [FILE_NO_RESUME] = {.key = "no_resume"},
        [FILE_TRUSTED_PROXIES] = {.key = "trusted_proxies"},
        [FILE_KEYS_FILE] = {.key = "keys_file"},
        [FILE_TLS_CERT] = {.key = "tls_cert"},
        [FILE_TLS_KEY] = {.key = "tls_key"},
        [FILE_RATE_LIMIT] = {.key = "rate_limit"},
        [FILE_MCP] = {.key = "mcp"},
        [FILE_GPUS] = {.key = "gpus"},
        [FILE_NVML_LIBRARY] = {.key = "nvml_library"},
        [FILE_NVIDIA_SMI] = {.key = "nvidia_smi"},
        [FILE_SWAP_GRACE] = {.key = "swap_grace"},
        [FILE_SWAP_MAX_WAIT] = {.key = "swap_max_wait"},
        [FILE_SWAP_DRAIN] = {.key = "swap_drain"},
        [FILE_MIN_RESIDENT] = {.key = "min_resident"},
        [FILE_GPU_QUEUE_MAX] = {.key = "gpu_queue_max"},
        [FILE_PROXY_CONNECT_TIMEOUT] = {.key = "proxy_connect_timeout"},
        [FILE_PROXY_READ_TIMEOUT] = {.key = "proxy_read_timeout"},
        [FILE_CLIENT_TIMEOUT] = {.key = "client_timeout"},
    };
    struct diags errors = {0}, warnings = {0};
    struct yamldoc *doc = NULL;
    struct stat st;
    char *buf = NULL;
    ssize_t n;
    int fd, r = -EINVAL;

    fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, err_size, "%s: cannot open the config file: %s", file, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, err_size, "%s: the config file is not a regular file", file);
    }
    if (st.st_size > CONFIG_SIZE_MAX) {
        close(fd);
        return fail(err, err_size, "%s: the config file is larger than %d bytes", file,
                    CONFIG_SIZE_MAX);
    }
    buf = xmalloc((size_t)st.st_size + 1);
    n = read(fd, buf, (size_t)st.st_size);
    close(fd);
    if (n < 0) {
        free(buf);
        return fail(err, err_size, "%s: cannot read the config file: %s", file, strerror(errno));
    }

    r = yamldoc_load(buf, (size_t)n, &doc, &errors);
    if (r == -ENODATA) {
        /* Only comments, say a shipped example: every setting keeps its default. */
        diags_clear(&errors);
        r = 0;
        goto done;
    }
    r = -EINVAL;
    if (!doc)
        goto done;
    if (yamldoc_map_fields(doc, yamldoc_root(doc), "the config file", fields,
                           sizeof(fields) / sizeof(fields[0]), &errors, &warnings) < 0)
        goto done;

    for (int k = 0; k < FILE_KEYS; k++)
        if (fields[k].value)
            file_apply(c, file, doc, k, &fields[k], &errors);

done:
    for (size_t i = 0; i < warnings.n; i++)
        config_add_warning(
            c, xasprintf("%s:%d: %s", file, warnings.items[i].line, warnings.items[i].message));
    if (errors.n > 0) {
        fail(err, err_size, "%s:%d: %s", file, errors.items[0].line, errors.items[0].message);
        r = -EINVAL;
    } else {
        r = 0;
    }
    diags_clear(&errors);
    diags_clear(&warnings);
    yamldoc_free(doc);
    free(buf);
    return r;
}

enum {
    OPT_LISTEN = 'l',
    OPT_SERVICES = 's',
    OPT_CONFIG = 'c',
    OPT_HELP = 'h',
    OPT_STATE_DIR = 256,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_INSECURE,
    OPT_STOP_SERVICES_ON_EXIT,
    OPT_COMPOSE_COMMAND,
    OPT_DOCKER_HOST,
    OPT_MAX_CONNECTIONS_PER_CLIENT,
    OPT_NO_RESUME,
    OPT_TRUSTED_PROXIES,
    OPT_KEYS,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_NVML_LIBRARY,
    OPT_NVIDIA_SMI,
};

static const struct option options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"services", required_argument, NULL, OPT_SERVICES},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"stop-services-on-exit", no_argument, NULL, OPT_STOP_SERVICES_ON_EXIT},
    {"compose-command", required_argument, NULL, OPT_COMPOSE_COMMAND},
    {"docker-host", required_argument, NULL, OPT_DOCKER_HOST},
    {"max-connections-per-client", required_argument, NULL, OPT_MAX_CONNECTIONS_PER_CLIENT},
    {"no-resume", no_argument, NULL, OPT_NO_RESUME},
    {"trusted-proxies", required_argument, NULL, OPT_TRUSTED_PROXIES},
    {"keys", required_argument, NULL, OPT_KEYS},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"nvml-library", required_argument, NULL, OPT_NVML_LIBRARY},
    {"nvidia-smi", required_argument, NULL, OPT_NVIDIA_SMI},
    {"help", no_argument, NULL, OPT_HELP},
    {0},
};

void config_usage(FILE *out)
{
    fprintf(
        out,
        "usage: nanny serve [options]\n"
        "  -l, --listen HOST:PORT    address of the HTTP API (default %s; env NANNY_LISTEN)\n"
        "  -s, --services DIR        the services folder (default %s; env NANNY_SERVICES)\n"
        "  -c, --config FILE         a YAML config file (env NANNY_CONFIG)\n"
        "      --state-dir DIR       where logs and state are kept (env NANNY_STATE_DIR)\n"
        "      --log-level LEVEL     error, warning, info (default) or debug\n"
        "      --log-format FORMAT   text (default) or json\n"
        "      --insecure            allow a non-loopback listen address without keys\n"
        "                            and TLS (a warning at every start)\n"
        "      --keys FILE           the API keys (default STATE_DIR/" CONFIG_KEYS_FILE
        ", used when\n"
        "                            it exists; env NANNY_KEYS; see nanny keys)\n"
        "      --tls-cert FILE       serve HTTPS with this PEM certificate (chain)...\n"
        "      --tls-key FILE        ...and its PEM private key (env NANNY_TLS_CERT,\n"
        "                            NANNY_TLS_KEY; both reloaded on SIGHUP)\n"
        "      --stop-services-on-exit  stop managed services when the daemon stops\n"
        "      --compose-command CMD  docker compose or docker-compose (default: found at\n"
        "                            start; env NANNY_COMPOSE_COMMAND)\n"
        "      --docker-host PATH    the Docker engine's socket (default $DOCKER_HOST or\n"
        "                            " CONFIG_DEFAULT_DOCKER_HOST "; env NANNY_DOCKER_HOST)\n"
        "      --max-connections-per-client N  HTTP connections one client address may\n"
        "                            hold (default %d; env NANNY_MAX_CONNECTIONS_PER_CLIENT)\n"
        "      --no-resume           after a host reboot, start nothing of what ran before\n"
        "                            (env NANNY_NO_RESUME=1)\n"
        "      --trusted-proxies LIST  proxies whose X-Forwarded-For names the client:\n"
        "                            addresses or CIDR ranges, comma-separated (default\n"
        "                            none; env NANNY_TRUSTED_PROXIES)\n"
        "      --nvml-library LIB    NVIDIA's library for the GPU inventory (default\n"
        "                            " GPUINFO_NVML_DEFAULT "; \"\" switches it off; env\n"
        "                            NANNY_NVML_LIBRARY)\n"
        "      --nvidia-smi PROGRAM  read where NVML does not answer (default " GPUINFO_SMI_DEFAULT
        ";\n"
        "                            \"\" switches it off; env NANNY_NVIDIA_SMI); where\n"
        "                            neither answers, the config file's gpus: describe the box\n"
        "  -h, --help                this help\n",
        CONFIG_DEFAULT_LISTEN, CONFIG_DEFAULT_SERVICES, CONFIG_PER_CLIENT_DEFAULT);
}

/* Applies one flag (or the same setting from the environment, where from names it). */
static int apply_setting(struct config *c, int opt, const char *value, const char *from, char *err,
                         size_t err_size)
{
    switch (opt) {
    case OPT_LISTEN:
        if (netaddr_parse_listen(value, &(struct sockaddr_storage){0}, &(socklen_t){0}) < 0)
            return fail(err, err_size, "%s: '%.100s' is not HOST:PORT, like 127.0.0.1:8080", from,
                        value);
        set_str(&c->listen, value);
        return 0;
    case OPT_SERVICES:
        if (!*value)
            return fail(err, err_size, "%s: the services folder must not be empty", from);
        set_str(&c->services_dir, value);
        return 0;
    case OPT_STATE_DIR:
        if (!*value)
            return fail(err, err_size, "%s: the state folder must not be empty", from);
        set_str(&c->state_dir, value);
        return 0;
    case OPT_LOG_LEVEL:
        if (log_level_parse(value, &c->log_level) < 0)
            return fail(err, err_size, "%s: '%.100s' is not error, warning, info or debug", from,
                        value);
        return 0;
    case OPT_LOG_FORMAT:
        if (parse_log_format(value, &c->log_json) < 0)
            return fail(err, err_size, "%s: '%.100s' is not text or json", from, value);
        return 0;
    case OPT_INSECURE:
        c->insecure = true;
        return 0;
    case OPT_STOP_SERVICES_ON_EXIT:
        c->stop_services_on_exit = true;
        return 0;
    case OPT_NO_RESUME:
        /* The flag has no value; the variable says 1 or 0. */
        if (value && strcmp(value, "1") != 0 && strcmp(value, "0") != 0)
            return fail(err, err_size, "%s: '%.100s' is not 1 or 0", from, value);
        c->no_resume = !value || strcmp(value, "1") == 0;
        return 0;
    case OPT_COMPOSE_COMMAND:
        if (parse_compose_command(value) < 0)
            return fail(err, err_size, "%s: '%.100s' does not name a program", from, value);
        set_str(&c->compose_command, value);
        return 0;
    case OPT_DOCKER_HOST:
        if (!docker_host_path(value))
            return fail(err, err_size, "%s: '%.100s' is not a socket path or unix://PATH", from,
                        value);
        set_str(&c->docker_host, docker_host_path(value));
        return 0;
    case OPT_MAX_CONNECTIONS_PER_CLIENT: {
        char *end;
        unsigned long n;
        errno = 0;
        n = strtoul(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-' || n < 1 ||
            n > CONFIG_PER_CLIENT_LIMIT)
            return fail(err, err_size, "%s: '%.100s' is not a number from 1 to %d", from, value,
                        CONFIG_PER_CLIENT_LIMIT);
        c->max_connections_per_client = (unsigned)n;
        return 0;
    }
    case OPT_TRUSTED_PROXIES:
        return parse_trusted_proxies(c, value, from, err, err_size);
    case OPT_NVML_LIBRARY:
        set_str(&c->nvml_library, value);
        return 0;
    case OPT_NVIDIA_SMI:
        set_str(&c->nvidia_smi, value);
        return 0;
    case OPT_KEYS:
    case OPT_TLS_CERT:
    case OPT_TLS_KEY:
        if (!*value)
            return fail(err, err_size, "%s: the file name must not be empty", from);
        set_str(opt == OPT_KEYS       ? &c->keys_file
                : opt == OPT_TLS_CERT ? &c->tls_cert
                                      : &c->tls_key,
                value);
        if (opt == OPT_KEYS)
            c->keys_file_given = true;
        return 0;
    }
    return fail(err, err_size, "%s: unknown setting", from);
}

int config_load(struct config *c, int argc, char **argv, char *err, size_t err_size)
{
    static const struct {
        const char *name;
        int opt;
        bool empty_counts; /* set but empty is a value ("" switches a probe off) */
    } env[] = {
        {"NANNY_LISTEN", OPT_LISTEN, false},
        {"NANNY_SERVICES", OPT_SERVICES, false},
        {"NANNY_STATE_DIR", OPT_STATE_DIR, false},
        {"NANNY_COMPOSE_COMMAND", OPT_COMPOSE_COMMAND, false},
        {"NANNY_DOCKER_HOST", OPT_DOCKER_HOST, false},
        {"NANNY_MAX_CONNECTIONS_PER_CLIENT", OPT_MAX_CONNECTIONS_PER_CLIENT, false},
        {"NANNY_NO_RESUME", OPT_NO_RESUME, false},
        {"NANNY_TRUSTED_PROXIES", OPT_TRUSTED_PROXIES, false},
        {"NANNY_KEYS", OPT_KEYS, false},
        {"NANNY_TLS_CERT", OPT_TLS_CERT, false},
        {"NANNY_TLS_KEY", OPT_TLS_KEY, false},
        {"NANNY_NVML_LIBRARY", OPT_NVML_LIBRARY, true},
        {"NANNY_NVIDIA_SMI", OPT_NVIDIA_SMI, true},
    };
    const char *file = getenv("NANNY_CONFIG");
    struct sockaddr_storage addr;
    socklen_t len;
    int opt, r;

    config_defaults(c);

    /* First pass: only --config (and --help), so that the file comes before the rest. */
    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "+l:s:c:h", options, NULL)) != -1) {
        if (opt == OPT_CONFIG)
            file = optarg;
        else if (opt == OPT_HELP) {
            config_usage(stdout);
            return -ECANCELED;
        } else if (opt == '?' || opt == ':') {
            return fail(err, err_size, "%.100s: unknown option or missing value (see --help)",
                        argv[optind - 1]);
        }
    }
    if (optind < argc)
        return fail(err, err_size, "unexpected argument '%.100s' (see --help)", argv[optind]);
    if (file && *file) {
        set_str(&c->config_file, file);
        r = config_load_file(c, file, err, err_size);
        if (r < 0)
            return r;
    }

    for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++) {
        const char *v = getenv(env[i].name);
        if (v && (*v || env[i].empty_counts)) {
            r = apply_setting(c, env[i].opt, v, env[i].name, err, err_size);
            if (r < 0)
                return r;
        }
    }

    optind = 0;
    while ((opt = getopt_long(argc, argv, "+l:s:c:h", options, NULL)) != -1) {
        char from[64] = "";
        if (opt == OPT_CONFIG)
            continue;
        for (const struct option *o = options; o->name; o++)
            if (o->val == opt)
                snprintf(from, sizeof(from), "--%s", o->name);
        r = apply_setting(c, opt, optarg, from, err, err_size);
        if (r < 0)
            return r;
    }

    if (!c->keys_file)
        c->keys_file = xasprintf("%s/%s", c->state_dir, CONFIG_KEYS_FILE);
    if (!c->tls_cert != !c->tls_key)
        return fail(err, err_size,
                    "%s is set without %s: HTTPS needs both the certificate and "
                    "its private key",
                    c->tls_cert ? "tls_cert (--tls-cert)" : "tls_key (--tls-key)",
                    c->tls_cert ? "tls_key (--tls-key)" : "tls_cert (--tls-cert)");
    if (netaddr_parse_listen(c->listen, &addr, &len) < 0)
        return fail(err, err_size, "listen: '%.100s' is not HOST:PORT", c->listen);
    if (!netaddr_is_loopback(&addr) && !c->insecure &&
        (!c->tls_cert || (!c->keys_file_given && access(c->keys_file, F_OK) < 0)))
        return fail(err, err_size,
                    "listen address %.100s is not loopback: it needs API keys (--keys, see "
                    "nanny keys add) and HTTPS (--tls-cert and --tls-key), or anyone who can "
                    "reach it controls your services; pass --insecure (or insecure: true in "
                    "the config file) to allow it without",
                    c->listen);
    return 0;
}

bool config_listen_is_loopback(const struct config *c)
{
    struct sockaddr_storage addr;
    socklen_t len;

    return netaddr_parse_listen(c->listen, &addr, &len) == 0 && netaddr_is_loopback(&addr);
}
