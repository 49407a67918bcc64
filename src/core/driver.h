/* The driver interface: how the supervisor starts, stops, watches and reads a service
 * without knowing what runs it. Two drivers: process (driver_process.c) and Docker
 * Compose (driver_compose.c). */
#ifndef NANNY_DRIVER_H
#define NANNY_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "lib/fetch.h"
#include "core/manifest.h"

struct driver_run;  /* one run of one service, the driver's own */
struct driver_logs; /* a logs request still in flight */

/* What a run tells the supervisor, on the loop. */
struct driver_events {
    /* A start that answered 1 (in progress) finished: error NULL, or a sentence (the run
     * then ends by itself and gone() follows). */
    void (*started)(void *data, struct driver_run *r, const char *error);
    /* It ended by itself (not after stop): exit status (-1 when unknown) or signal. */
    void (*exited)(void *data, struct driver_run *r, int exit_status, int term_signal);
    /* After stop or an exit: nothing of it runs any more (for compose: the engine lists
     * none of the project's containers running, or it is unreachable). release() may be
     * called from here. */
    void (*gone)(void *data, struct driver_run *r);
};

/* The last lines of a service's output, NULL-terminated and valid during the call only;
 * or NULL and a sentence. */
typedef void (*driver_logs_fn)(void *data, char **lines, const char *error);

struct driver {
    const char *name;
    /* 0 when the driver can start m now; else a negative errno and a sentence (no Docker
     * engine...): the backend is unavailable, nothing was tried. */
    int (*available)(const struct manifest *m, char *err, size_t err_size);
    /* Starts m, its output appended to log_path: 0 when started, 1 when the start goes on
     * (started() tells its end); on failure a negative errno and a sentence for last_error
     * in err. */
    int (*start)(uv_loop_t *loop, const struct manifest *m, const char *log_path,
                 const struct driver_events *events, void *data, struct driver_run **ret, char *err,
                 size_t err_size);
    /* Stops it: asks it to end, forces it after timeout_ms, calls gone() when nothing is
     * left. Harmless when called again. */
    void (*stop)(struct driver_run *r, uint64_t timeout_ms);
    /* What the state file keeps of a run, for a later daemon to adopt it (new reference,
     * NULL when there is nothing to keep). */
    json_t *(*record)(const struct driver_run *r);
    /* Takes over a run of m that the daemon did not start (recorded by an earlier daemon,
     * or seen by the driver); -ESRCH when it no longer runs. */
    int (*adopt)(uv_loop_t *loop, const struct manifest *m, json_t *record,
                 const struct driver_events *events, void *data, struct driver_run **ret);
    /* A stop of a service that does not run: what its last run left (a compose project's
     * exited containers) is removed by a run that only stops (gone() when done). 0 and
     * *ret NULL when nothing is left. NULL when the driver leaves nothing. */
    int (*leftovers)(const struct manifest *m, const struct driver_events *events, void *data,
                     struct driver_run **ret);
    /* Forgets a run without stopping it (the daemon stops; the service keeps running). */
    void (*release)(struct driver_run *r);
    /* The last tail lines of m's output; done may be called before this returns, and is
     * then the answer (*ret NULL). Otherwise *ret can be cancelled until done. */
    void (*logs)(const struct manifest *m, const char *log_path, unsigned tail, driver_logs_fn done,
                 void *data, struct driver_logs **ret);
    void (*logs_cancel)(struct driver_logs *l);
    /* Keeps the output's size in bounds (rotation); 1 when it rotated. NULL when the
     * driver keeps no log file. */
    int (*rotate)(const char *log_path, uint64_t max_bytes, unsigned keep);
};

extern const struct driver driver_process;
extern const struct driver driver_compose;

/* The driver of a manifest. */
const struct driver *driver_for(const struct manifest *m);

/* What the compose driver sees happen outside the daemon. */
struct driver_outside {
    /* Containers of the compose project of service `name` run, but no run of the daemon
     * has them (started by hand, or before the daemon): adopt() them with a record
     * {"project": name}. Called again after each change of the engine's containers. */
    void (*appeared)(void *data, const char *name);
    /* The backend (Docker engine) became unavailable (error says why) or came back (NULL). */
    void (*backend)(void *data, const char *error);
};

/* Sets up the compose driver: finds the compose command (command, when not NULL,
 * overrides), and watches the engine at docker_socket. */
void driver_compose_setup(uv_loop_t *loop, struct fetcher *fetcher, const char *command,
                          const char *docker_socket, const struct driver_outside *outside,
                          void *data);
void driver_compose_teardown(void);
/* Starts watching the engine (first used by a compose service): a daemon without compose
 * services does not load libcurl for it. */
void driver_compose_watch(void);
/* {"command": "docker-compose" | null, "docker_host": path,
 *  "engine": "reachable" | "unreachable" | "unwatched", "error": …} */
json_t *driver_compose_info(void);

#endif
