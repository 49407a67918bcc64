/* The driver interface: how the supervisor starts, stops, watches and reads a service
 * without knowing what runs it. The process driver (driver_process.c) is the one there
 * is; the Docker Compose driver is the second. */
#ifndef NANNY_DRIVER_H
#define NANNY_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "manifest.h"

struct driver_run; /* one run of one service, the driver's own */

/* What a run tells the supervisor, on the loop. */
struct driver_events {
    /* It ended by itself (not after stop): exit status (-1 when unknown) or signal. */
    void (*exited)(void *data, struct driver_run *r, int exit_status, int term_signal);
    /* After stop or an exit: nothing of it is left. release() may be called from here. */
    void (*gone)(void *data, struct driver_run *r);
};

struct driver {
    const char *name;
    /* Starts m, its output appended to log_path; on failure a negative errno and a
     * sentence for last_error in err. */
    int (*start)(uv_loop_t *loop, const struct manifest *m, const char *log_path,
                 const struct driver_events *events, void *data, struct driver_run **ret, char *err,
                 size_t err_size);
    /* Stops it: asks it to end, forces it after timeout_ms, calls gone() when nothing is
     * left. Harmless when called again. */
    void (*stop)(struct driver_run *r, uint64_t timeout_ms);
    /* True until it ended. */
    bool (*running)(const struct driver_run *r);
    /* What the state file keeps of a run, for a later daemon to adopt it (new reference,
     * NULL when there is nothing to keep). */
    json_t *(*record)(const struct driver_run *r);
    /* Takes over a run that an earlier daemon recorded; -ESRCH when it no longer runs. */
    int (*adopt)(uv_loop_t *loop, json_t *record, const struct driver_events *events, void *data,
                 struct driver_run **ret);
    /* Forgets a run without stopping it (the daemon stops; the service keeps running). */
    void (*release)(struct driver_run *r);
    /* The last lines of the service's output, NULL-terminated, freed by lines_free(). */
    int (*logs)(const char *log_path, unsigned tail, char ***ret);
    void (*lines_free)(char **lines);
    /* Keeps the output's size in bounds (rotation); 1 when it rotated. */
    int (*rotate)(const char *log_path, uint64_t max_bytes, unsigned keep);
};

extern const struct driver driver_process;

/* The driver of a manifest, or NULL when this build has none for it (compose). */
const struct driver *driver_for(const struct manifest *m);

#endif
