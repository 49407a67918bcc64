/* The registry: every service the daemon knows, by name, and the manifests that are
 * broken. It lives on the loop; rescans read the disk on a worker thread and are merged
 * here, keeping each surviving service's runtime state. */
#ifndef NANNY_REGISTRY_H
#define NANNY_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "core/discovery.h"
#include "core/events.h"
#include "core/manifest.h"

struct service {
    char *name;
    char *folder;
    struct manifest *manifest;
    char *canonical;        /* the manifest as sorted compact JSON, for change detection */
    json_t *warnings;       /* array of {line, message} */
    json_t *manifest_error; /* {path, line, message} when the manifest broke, else NULL */
    /* Changes whenever anything above changes, and is never reused by another service:
     * lets a surface reuse what it rendered. */
    uint64_t generation;
    /* The manifest on disk when it differs from the one in force (manifest): a held
     * service runs on the manifest it was started with; a newer one waits here until the
     * service is let go or started again (registry_apply_pending). NULL when none. */
    struct manifest *pending;
    char *pending_canonical;
    bool held; /* registry_hold(): kept though its folder is gone; its manifest stays */
    bool gone; /* its folder (or manifest) is gone: kept only while held */
    bool seen; /* registry-internal: found by the scan being merged */
};

struct registry;

/* Called on the loop after each rescan was merged, with its diff. */
typedef void (*registry_rescan_fn)(void *data, json_t *diff);

/* Each merge that changes the services is published on hub (may be NULL) as an
 * EVENT_DISCOVERY with its diff. */
struct registry *registry_new(uv_loop_t *loop, const char *root, struct events *hub);

/* While held, a service whose folder is gone stays, marked with a manifest_error, instead
 * of leaving at the next merge: the supervisor holds what runs or is being worked on (as
 * systemd keeps a unit whose file was removed). A held service also keeps the manifest it
 * runs with: a changed one waits as pending. Its folder is claimed: a new folder that
 * takes its name (or a host port of it) is the error, whatever the folder order. When let
 * go with a pending manifest or a folder gone, a rescan merges what the disk says. */
void registry_hold(struct registry *reg, struct service *svc, bool held);

/* Makes svc's pending manifest the one in force (a start of a service at rest: what
 * changed on disk while it ran applies now), published as changed. Returns whether there
 * was one. */
bool registry_apply_pending(struct registry *reg, struct service *svc);

/* Makes m (taken) the manifest svc runs on: the one it was started with, as an earlier
 * daemon recorded it, adopted with what runs. When the manifest on disk (the one svc had)
 * says otherwise, that one waits as pending, as if it had changed while the service ran.
 * The caller holds svc (registry_hold), or the next rescan puts the disk's back. */
void registry_set_running(struct registry *reg, struct service *svc, struct manifest *m);

/* Adds a service for m (taken), the manifest an earlier daemon recorded of a run that
 * still goes on, though no valid manifest on disk names it any more (its manifest broke,
 * or its folder went, while no daemon watched); its folder is m's. The caller adopts the
 * run and holds it (registry_hold), or lets it go; either way a rescan follows, which
 * shows the problem on it (manifest_error) as for a manifest that broke while it ran, and
 * drops it once it is let go. Returns the service, or NULL when the name is taken. */
struct service *registry_add_running(struct registry *reg, struct manifest *m);

/* What the pending manifest would change, {field: {"running": v, "new": v}} over the
 * fields of manifest_to_json(); NULL when nothing is pending. New reference. */
json_t *registry_pending_changes(const struct service *svc);

/* Frees the registry, now or, when a scan is running on a worker thread, when it ends. */
void registry_free(struct registry *reg);

const char *registry_root(const struct registry *reg);

/* Merges a scan (taken) into the registry; *ret_diff, when not NULL, gets
 * {"added":[names], "removed":[names], "changed":[names]}. Logs new problems once. */
void registry_apply_scan(struct registry *reg, struct scan *scan, json_t **ret_diff);

/* Scans the disk synchronously: for start-up, before the loop runs. */
int registry_scan_now(struct registry *reg);

/* Rescans on a worker thread and calls done (if not NULL) on the loop when merged, with
 * the diff; when the folder could not be read the diff has an "error" member. A request
 * made while a scan runs is served by the next scan, so that it sees every change made
 * before it was asked. Returns a handle for registry_rescan_cancel(), NULL without done. */
struct rescan_waiter *registry_rescan(struct registry *reg, registry_rescan_fn done, void *data);
void registry_rescan_cancel(struct registry *reg, struct rescan_waiter *w);

/* Called after every merge, for whoever watches (the fs watcher resyncs its folders). */
void registry_on_rescan(struct registry *reg, registry_rescan_fn fn, void *data);

size_t registry_count(const struct registry *reg);
struct service *registry_at(const struct registry *reg, size_t i); /* sorted by name */
struct service *registry_find(const struct registry *reg, const char *name);

/* The broken manifests: a JSON array of {folder, path, name, line, message}. Borrowed. */
json_t *registry_errors(const struct registry *reg);

/* The first error of a broken manifest that carries this name, or NULL. Borrowed. */
json_t *registry_find_error(const struct registry *reg, const char *name);

/* Bumped whenever any service or the error list changes. */
uint64_t registry_generation(const struct registry *reg);

#endif
