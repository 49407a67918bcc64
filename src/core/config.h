/* The daemon's configuration: defaults, then the YAML config file, then the environment,
 * then the command line (each wins over the one before). */
#ifndef NANNY_CONFIG_H
#define NANNY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lib/cidr.h"
#include "lib/log.h"

#define CONFIG_DEFAULT_LISTEN         "127.0.0.1:8080"
#define CONFIG_DEFAULT_SERVICES       "./services"
#define CONFIG_DEFAULT_DOCKER_HOST    "/var/run/docker.sock"
#define CONFIG_SIZE_MAX               (1024 * 1024)
#define CONFIG_LIST_MAX               64
#define CONFIG_LOG_MAX_BYTES          (10 * 1024 * 1024)
#define CONFIG_LOG_MAX_FILES          3
#define CONFIG_PER_CLIENT_DEFAULT     256         /* HTTP connections one client address may hold */
#define CONFIG_PER_CLIENT_LIMIT       65536       /* the most that may be configured */
#define CONFIG_KEYS_FILE              "keys.yaml" /* in the state folder, when none is given */
#define CONFIG_MCP_SESSIONS_DEFAULT   1024        /* MCP sessions held at once... */
#define CONFIG_MCP_SESSIONS_LIMIT     65536
#define CONFIG_MCP_IDLE_DEFAULT_MS    (30 * 60 * 1000) /* ...each until idle this long */
#define CONFIG_RATE_MAX               1000000          /* rate_limit's rps and burst, at most */
#define CONFIG_GPUS_MAX               64              /* gpus: at most this many, indices 0 to 63 */
#define CONFIG_SWAP_GRACE_DEFAULT     (5 * 60 * 1000) /* swap_grace */
#define CONFIG_SWAP_MAX_WAIT_DEFAULT  (30 * 1000)     /* swap_max_wait */
#define CONFIG_GPU_QUEUE_DEFAULT      256             /* gpu_queue_max: requests held for the GPU */
#define CONFIG_PROXY_CONNECT_DEFAULT  (5 * 1000)      /* proxy_connect_timeout */
#define CONFIG_PROXY_READ_DEFAULT     (10 * 60 * 1000) /* proxy_read_timeout */
#define CONFIG_CLIENT_TIMEOUT_DEFAULT (10 * 1000)      /* client_timeout */

enum gpu_conflict { GPU_CONFLICT_REFUSE, GPU_CONFLICT_PREEMPT };

/* A GPU as the config file's gpus: describes it, for a box where no NVIDIA library
 * answers (tests, or a driver the daemon cannot see). */
struct config_gpu {
    unsigned index;  /* 0..63, unique */
    char *name;      /* "GPU N" when none is given */
    uint64_t memory; /* bytes, > 0 */
};

struct config {
    char *listen;
    char *services_dir;
    char *state_dir;
    char *config_file;     /* NULL when none */
    char *compose_command; /* NULL: found at start */
    char *docker_host;     /* the Docker engine's unix socket path */
    enum log_level log_level;
    bool log_json;
    bool insecure; /* allow a non-loopback listen address without keys and TLS */
    bool stop_services_on_exit;
    bool no_resume; /* after a host reboot, start nothing of what ran before */
    enum gpu_conflict gpu_conflict;
    char **allowed_hosts; /* NULL-terminated; extra Host names besides loopback */
    char **allowed_origins;
    char **warnings;        /* NULL-terminated "file:line: message", logged by the daemon */
    uint64_t log_max_bytes; /* a service's log is rotated past this size... */
    unsigned log_max_files; /* ...keeping this many old files */
    unsigned max_connections_per_client; /* HTTP connections one client address may hold */
    struct cidr *trusted_proxies;        /* whose X-Forwarded-For names the client; NULL: none */
    size_t trusted_proxies_n;
    char *keys_file;          /* the API keys (core/keys.h); STATE_DIR/keys.yaml when none given */
    bool keys_file_given;     /* named by --keys, NANNY_KEYS or keys_file: it must exist */
    char *tls_cert, *tls_key; /* PEM files: HTTPS on the listener; both or neither */
    unsigned rate_rps;        /* rate_limit: {rps, burst}; 0: no rate limit */
    unsigned rate_burst;
    unsigned mcp_sessions;        /* mcp: {sessions, session_idle}: at most this many... */
    uint64_t mcp_session_idle_ms; /* ...each ended when idle this long */
    struct config_gpu *gpus;      /* gpus:, sorted by index; NULL when not given */
    size_t n_gpus;
    char *nvml_library; /* dlopen()ed for the GPU inventory; "" switches NVML off */
    char *nvidia_smi;   /* the fallback's program; "" switches it off */
    /* Starts on demand and swaps (core/demand.h); a manifest may say otherwise for its
     * service as the one swapped out. */
    uint64_t swap_grace_ms;    /* longest a swap waits for the holder's requests in flight */
    uint64_t swap_max_wait_ms; /* longest a pending swap still lets new requests in */
    bool swap_drain;           /* a pending swap lets no new request in */
    uint64_t min_resident_ms;  /* a service runs this long before a swap may stop it */
    unsigned gpu_queue_max;    /* proxied requests held for the GPU at once; more get 429 */
    uint64_t proxy_connect_timeout_ms; /* the proxy's connect to a service... */
    uint64_t proxy_read_timeout_ms;    /* ...and its wait for the answer's head */
    uint64_t client_timeout_ms; /* a client connection silent this long is closed (whole s) */
};

/* True when the listen address is a loopback one (127.0.0.0/8, ::1). */
bool config_listen_is_loopback(const struct config *c);

/* Fills c from defaults, the config file (--config or NANNY_CONFIG), the environment and
 * argv (the arguments after "serve"). On a bad value returns -EINVAL and writes a message
 * naming the flag, variable or file:line into err; -ECANCELED after --help (printed). */
int config_load(struct config *c, int argc, char **argv, char *err, size_t err_size);

void config_done(struct config *c);

/* Prints the usage of "nanny serve". */
void config_usage(FILE *out);

#endif
