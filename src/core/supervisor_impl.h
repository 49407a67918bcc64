/* The supervisor's own parts, shared by its files and by nobody else: supervisor.c
 * (operations and settling), run.c (one service's run), adopt.c (what was started before
 * or outside the daemon), logs.c (logs and their rotation). */
#ifndef NANNY_SUPERVISOR_IMPL_H
#define NANNY_SUPERVISOR_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "core/driver.h"
#include "core/events.h"
#include "core/gpu.h"
#include "core/lifecycle.h"
#include "core/op.h"
#include "core/registry.h"
#include "core/state.h"
#include "core/supervisor.h"
#include "lib/clock.h"
#include "lib/strmap.h"

#define RUN_RETIRED_MAX 8

/* One service's run: everything the supervisor keeps for it. Made on first use, freed
 * when its service leaves the registry (which it does not while the run holds it). */
struct run {
    struct supervisor *sup;
    struct service *svc; /* the registry's: valid while the run lives */
    struct lifecycle lc;
    struct service_status status; /* what surfaces read (supervisor_status) */
    char *last_error;             /* status.last_error's text */
    char *health_error;           /* status.health.error's text */
    enum lifecycle_cause failure; /* why it last went to failed */
    struct driver_run *instance;  /* the running instance, NULL when none */
    struct health_probe *probe;
    struct portcheck *portcheck; /* a start's check of its ports, until it answers */
    uv_timer_t start_timer;      /* start_period */
    uv_timer_t restart_timer;    /* the backoff of an automatic restart */
    int handles_open;
    bool reserved;        /* waits for preempted holders to go: holds the GPU already */
    bool driver_starting; /* the driver's start goes on (compose up): not answered yet */
    /* The instance, and the retired ones, were started (or adopted) needing the GPU: while
     * they are there they hold it, whatever the manifest says now (a restart took a new
     * one). */
    bool instance_gpu, retired_gpu;
    /* Where they are (bit i: GPU i), and what the instance asked for: they hold it. */
    uint64_t gpu_devices, retired_devices;
    struct placement_need gpu_need;
    uint64_t reserved_devices; /* while reserved: where it goes once the holders are gone */
    bool gpu_enforce;          /* gpu.enforce of the manifest the instance started with */
    bool gpu_over;             /* the instance uses more than gpu_need.memory (gpu_use.c) */
    unsigned gpu_over_index;   /* ...on this GPU */
    char *gpu_warning;         /* status.gpu_warning's text, while gpu_over */
    uint64_t last_used_ms;     /* its last start (Unix ms): the least recent is stopped first */
    uint64_t stop_timeout_ms;  /* from the manifest the run started with */
    char *log_path;
    struct driver_run *retired[RUN_RETIRED_MAX]; /* earlier runs whose end still comes */
    size_t n_retired;
};

enum op_kind { OP_START, OP_STOP };

struct supervisor_op {
    struct supervisor *sup;
    struct service *svc;
    enum op_kind kind;
    enum op_phase phase;
    bool force;
    bool wait_healthy;
    json_t *holders; /* a GPU conflict's: the names whose stop would make room */
    json_t *detail;  /* gpu_impossible's numbers */
    bool cancelled;  /* nobody waits for the answer any more */
    bool restart;    /* a restart: stops first */
    uint64_t id;     /* finds it again when a write of its intent ends */
    supervisor_done_fn done;
    void *data;
    json_t *preempted;
    struct supervisor_op *next;
};

struct supervisor {
    uv_loop_t *loop;
    struct registry *reg;
    struct fetcher *fetcher;
    const struct config *config;
    struct events *hub;
    struct events_sub *sub;
    struct strmap *runs;             /* service name -> struct run */
    struct supervisor_op *ops;       /* pending operations */
    struct supervisor_op *answering; /* done: their answer waits for the state on disk */
    uint64_t op_ids;
    /* Each service's last intent, written ahead of what is done (state.json "intents"):
     * name -> {"intent": "starting" | "running" | "stopped", "force": bool, "for": NAME}. */
    json_t *intents;
    /* What an earlier daemon recorded of runs that no driver record names (a compose
     * project: the engine tells whether it runs), name -> record: the manifest it was
     * started with is taken when the driver finds it running, and forgotten at this
     * daemon's first intent for it. */
    json_t *recorded;
    char *boot_id;              /* this boot of the host, recorded with the state */
    char *state_problem;        /* a state file found corrupt, until a good one is written */
    uint64_t generation;        /* of every status (supervisor_generation) */
    char *gpu_holder;           /* the holder last published, NULL when none */
    char *gpu_published;        /* the GPU event last published (its text), NULL before the first */
    struct placement_gpu *gpus; /* the box (supervisor_set_gpus): one GPU of unknown size */
    size_t n_gpus;
    uv_timer_t log_timer;
    struct state_writer *state_writer;
    struct log_rotation *rotating; /* a pass of rotation on a worker thread */
    struct follow_feed *feeds;     /* the services followed (follow.c) */
    bool shutting_down;
    bool settling;     /* ops_settle() is on the stack */
    bool adopting;     /* a driver cannot yet say what runs: adoption and operations wait */
    json_t *adopt_doc; /* while adopting: the state file as read at start (or NULL) */
    bool settle_again; /* ...and was asked again meanwhile */
};

/* gpu_use.c: the instance is gone; what it used is forgotten. */
void run_gpu_usage_clear(struct run *run);

/* run.c */
extern const struct driver_events run_driver_events;
struct run *run_of(struct supervisor *sup, struct service *svc); /* made on first use */
struct run *run_find(const struct supervisor *sup, const struct service *svc);
void run_free(struct run *run); /* lets go of its instance without stopping it */
void run_event(struct run *run, enum lifecycle_event ev);
void run_apply(struct run *run, const struct lifecycle_step *step);
/* Marks the status changed: a new generation, is_healthy, the events, the hold. */
void run_changed(struct run *run);
void run_set_error(struct run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool run_lingers(const struct run *run);
/* Takes over what runs of the service (adopted: instance set, and instance_gpu): running,
 * probes begin. */
void run_adopted(struct run *run, int64_t started_at_ms);
void runs_record(struct supervisor *sup); /* state.json: every run that has a process */
/* runs_record(), then done(data, result) once it is on disk (state_writer_save_then). */
void runs_record_then(struct supervisor *sup, state_written_fn done, void *data);
/* The intent of a service (NULL when none recorded), and setting it (force and for_name
 * for a start, for_name for a stop that frees the GPU for that service). */
const char *intent_of(const struct supervisor *sup, const char *name);
void intent_set(struct supervisor *sup, const char *name, const char *intent, bool force,
                const char *for_name);

/* supervisor.c */
void ops_settle(struct supervisor *sup);
/* The adoption is done: the operations asked meanwhile (OP_ADOPT_WAIT) go on. */
void supervisor_adopted(struct supervisor *sup);
void op_finish(struct supervisor_op *op, enum supervisor_outcome outcome, const char *holder,
               const char *message);
/* The operations still waiting on svc are answered (outcome, message); kind_only selects
 * those of one kind (pass -1 for all), gpu_waiters_only those waiting for the GPU. */
void ops_finish_where(struct supervisor *sup, const struct service *svc, int kind,
                      bool gpu_waiters_only, enum supervisor_outcome outcome, const char *holder,
                      const char *message);
/* A stop ended straight into a start asked meanwhile. */
void ops_stops_superseded(struct supervisor *sup, struct service *svc);
/* True when target's start would go now: no holder keeps it out (a service that needs no
 * GPU: always). */
bool supervisor_gpu_free_for(struct supervisor *sup, const struct service *target);
/* Where target goes now if it needs GPUs (its reservation's devices first): true and
 * *ret_devices, or false when holders keep it out or the box cannot take it (why, a
 * sentence, in err). A service that needs no GPU goes anywhere (0). */
bool supervisor_gpu_place(struct supervisor *sup, const struct service *target,
                          uint64_t *ret_devices, char *err, size_t err_size);
/* The need a manifest states, as placement reads it. */
struct placement_need supervisor_gpu_need(const struct manifest *m);
/* The registry holds svc while the supervisor still needs it. */
void supervisor_hold_sync(struct supervisor *sup, struct service *svc);
/* Publishes the GPU holder when it changed. */
void supervisor_gpu_publish(struct supervisor *sup);

/* adopt.c */
extern const struct driver_outside supervisor_outside;
/* What runs_record() keeps of the manifest a run was started with ({"source", "dir"}), NULL
 * when nothing is kept (too large for what is left of budget, which it lowers). */
json_t *recorded_manifest_new(const struct manifest *m, size_t *budget);

/* follow.c */
/* The followers of a service that left the registry end. */
void follow_service_removed(struct supervisor *sup, const char *name);
/* Every follower ends: the supervisor is freed. */
void follow_free_all(struct supervisor *sup);

/* logs.c */
void logs_rotation_start(struct supervisor *sup);
void logs_rotation_stop(struct supervisor *sup);
/* The last of the supervisor: frees it once its timer is closed. */
void logs_rotation_free(struct supervisor *sup);

#endif
