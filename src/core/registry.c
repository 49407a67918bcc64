/* The registry of services, kept sorted by name, and the rescans that refresh it. */
#include <errno.h>
#include <malloc.h>
#include <string.h>

#include "core/registry.h"
#include "lib/alloc.h"
#include "lib/json.h"
#include "lib/log.h"

#define REGISTRY_FREE_ASIDE_MIN 1000 /* smaller scans are freed at once */

struct rescan_waiter {
    registry_rescan_fn done;
    void *data;
    struct rescan_waiter *next;
};

struct registry {
    uv_loop_t *loop;
    char *root;
    struct service **services; /* sorted by name */
    size_t n_services;
    json_t *errors;      /* array of error objects */
    json_t *error_names; /* name -> first error object, for 422 answers */
    json_t *error_keys;  /* "path:line:message" set, to log each problem once */
    uint64_t generation;
    struct events *hub;
    registry_rescan_fn on_rescan;
    void *on_rescan_data;

    /* The scan on the worker thread, and who waits for it or for the next one. */
    uv_work_t work;
    struct discovery_claim *work_claims; /* the held services' names and folders */
    size_t n_work_claims;
    struct scan *work_result;
    int work_error;
    bool scanning;
    bool freeing;      /* registry_free() came while scanning */
    bool pending_next; /* a rescan nobody waits for was asked during this one */
    struct rescan_waiter *waiting_now, *waiting_next;
    struct rescan_waiter *calling; /* the waiters being answered right now */
};

struct registry *registry_new(uv_loop_t *loop, const char *root, struct events *hub)
{
    struct registry *reg = xcalloc(1, sizeof(*reg));

    reg->loop = loop;
    reg->root = xstrdup(root);
    reg->errors = json_array();
    reg->error_names = json_object();
    reg->error_keys = json_object();
    reg->hub = hub;
    reg->work.data = reg;
    return reg;
}

static void service_free(struct service *svc)
{
    free(svc->name);
    free(svc->folder);
    manifest_free(svc->manifest);
    free(svc->canonical);
    manifest_free(svc->pending);
    free(svc->pending_canonical);
    json_decref(svc->warnings);
    json_decref(svc->manifest_error);
    free(svc);
}

static void waiters_free(struct rescan_waiter *w)
{
    while (w) {
        struct rescan_waiter *next = w->next;
        free(w);
        w = next;
    }
}

static void registry_destroy(struct registry *reg)
{
    for (size_t i = 0; i < reg->n_services; i++)
        service_free(reg->services[i]);
    free(reg->services);
    json_decref(reg->errors);
    json_decref(reg->error_names);
    json_decref(reg->error_keys);
    waiters_free(reg->waiting_now);
    waiters_free(reg->waiting_next);
    free(reg->root);
    free(reg);
}

void registry_free(struct registry *reg)
{
    if (!reg)
        return;
    if (reg->scanning) {
        reg->freeing = true;
        return;
    }
    registry_destroy(reg);
}

void registry_hold(struct registry *reg, struct service *svc, bool held)
{
    bool let_go = svc->held && !held;

    svc->held = held;
    /* What waited for it (a newer manifest, a folder gone) is merged by a rescan. */
    if (let_go && (svc->pending || svc->gone) && reg->loop)
        registry_rescan(reg, NULL, NULL);
}

const char *registry_root(const struct registry *reg)
{
    return reg->root;
}

static int service_cmp(const void *a, const void *b)
{
    const struct service *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int service_key_cmp(const void *key, const void *elem)
{
    const struct service *const *s = elem;
    return strcmp(key, (*s)->name);
}

struct service *registry_find(const struct registry *reg, const char *name)
{
    struct service **found;

    if (reg->n_services == 0)
        return NULL;
    found = bsearch(name, reg->services, reg->n_services, sizeof(*reg->services), service_key_cmp);
    return found ? *found : NULL;
}

size_t registry_count(const struct registry *reg)
{
    return reg->n_services;
}

struct service *registry_at(const struct registry *reg, size_t i)
{
    return i < reg->n_services ? reg->services[i] : NULL;
}

json_t *registry_errors(const struct registry *reg)
{
    return reg->errors;
}

json_t *registry_find_error(const struct registry *reg, const char *name)
{
    return json_object_get(reg->error_names, name);
}

uint64_t registry_generation(const struct registry *reg)
{
    return reg->generation;
}

/* Marks a service changed: a generation no service had before. */
static void registry_touch(struct registry *reg, struct service *svc)
{
    svc->generation = ++reg->generation;
}

static json_t *diags_to_json(const struct diags *d)
{
    json_t *a = json_array();

    for (size_t i = 0; i < d->n; i++)
        json_array_append_new(a, json_pack("{s:i, s:o}", "line", d->items[i].line, "message",
                                           json_text(d->items[i].message)));
    return a;
}

/* Turns the scan's broken manifests into the error list, logging the new ones. */
static void registry_take_errors(struct registry *reg, const struct scan *scan)
{
    json_t *errors = json_array(), *names = json_object(), *keys = json_object();

    for (size_t i = 0; i < scan->n; i++) {
        const struct scan_entry *e = &scan->entries[i];
        for (size_t j = 0; j < e->errors.n; j++) {
            const struct diag *d = &e->errors.items[j];
            json_t *err =
                json_pack("{s:o, s:o, s:o, s:i, s:o}", "folder", json_text(e->folder), "path",
                          json_text(e->path), "name", e->name ? json_text(e->name) : json_null(),
                          "line", d->line, "message", json_text(d->message));
            char *key = xasprintf("%s:%d:%s", e->path, d->line, d->message);

            if (!json_object_get(reg->error_keys, key))
                log_error("%s:%d: %s", e->path, d->line, d->message);
            json_object_set_new(keys, key, json_true());
            free(key);
            if (e->name && !json_object_get(names, e->name))
                json_object_set(names, e->name, err);
            json_array_append_new(errors, err);
        }
    }
    if (!json_equal(errors, reg->errors))
        reg->generation++;
    json_decref(reg->errors);
    json_decref(reg->error_names);
    json_decref(reg->error_keys);
    reg->errors = errors;
    reg->error_names = names;
    reg->error_keys = keys;
}

/* Logs an entry's warnings, when it is new or changed. */
static void log_warnings(const struct scan_entry *e)
{
    if (log_enabled(LOG_WARNING))
        for (size_t j = 0; j < e->warnings.n; j++)
            log_warning("%s:%d: %s", e->path, e->warnings.items[j].line,
                        e->warnings.items[j].message);
}

static void service_drop_pending(struct registry *reg, struct service *svc)
{
    manifest_free(svc->pending);
    svc->pending = NULL;
    free(svc->pending_canonical);
    svc->pending_canonical = NULL;
    registry_touch(reg, svc);
}

/* Moves an entry's manifest into svc as its pending one: svc runs on its own. */
static void service_take_pending(struct registry *reg, struct service *svc, struct scan_entry *e)
{
    service_drop_pending(reg, svc);
    svc->pending = e->manifest;
    e->manifest = NULL;
    svc->pending_canonical = e->canonical;
    e->canonical = NULL;
}

/* Moves an entry's manifest into svc; the caller decided it is new or changed. */
static void service_take_manifest(struct registry *reg, struct service *svc, struct scan_entry *e)
{
    if (svc->pending)
        service_drop_pending(reg, svc);
    manifest_free(svc->manifest);
    svc->manifest = e->manifest;
    e->manifest = NULL;
    free(svc->canonical);
    svc->canonical = e->canonical;
    e->canonical = NULL;
    registry_touch(reg, svc);
}

/* Sets what svc shows of its folder, warnings and manifest problem, marking it changed
 * when any of them differs. */
static void service_update_extras(struct registry *reg, struct service *svc,
                                  const struct scan_entry *e, json_t *manifest_error)
{
    /* Most manifests have no warnings: then there is nothing to build or compare. */
    bool same_warnings = svc->warnings && e->warnings.n == 0 && json_array_size(svc->warnings) == 0;
    json_t *warnings = same_warnings ? json_incref(svc->warnings) : diags_to_json(&e->warnings);
    bool changed = false;

    if (!svc->folder || strcmp(svc->folder, e->folder) != 0) {
        free(svc->folder);
        svc->folder = xstrdup(e->folder);
        changed = true;
    }
    if (!same_warnings && (!svc->warnings || !json_equal(svc->warnings, warnings))) {
        json_decref(svc->warnings);
        svc->warnings = json_incref(warnings);
        changed = true;
        if (e->manifest || manifest_error == NULL)
            log_warnings(e);
    }
    json_decref(warnings);
    if (!json_equal(svc->manifest_error, manifest_error) &&
        (svc->manifest_error || manifest_error)) {
        json_decref(svc->manifest_error);
        svc->manifest_error = json_incref(manifest_error);
        changed = true;
    }
    if (changed)
        registry_touch(reg, svc);
}

/* The service a broken entry stands for: by the name it carries, else by its folder. */
static struct service *registry_find_broken(struct registry *reg, const struct scan_entry *e)
{
    if (e->name)
        return registry_find(reg, e->name);
    for (size_t i = 0; i < reg->n_services; i++)
        if (reg->services[i]->folder && strcmp(reg->services[i]->folder, e->folder) == 0)
            return reg->services[i];
    return NULL;
}

static int compare_entry_folder(const void *key, const void *elem)
{
    return strcmp(key, ((const struct scan_entry *)elem)->folder);
}

/* True when a valid entry takes the name of held svc from another folder while svc's own
 * folder still carries the name (or none it could read): the scan ran before svc was held (it did
 * not know the claim), and the next one, which does, makes the new folder the error. */
static bool entry_steals_name(const struct scan *scan, const struct service *svc,
                              const struct scan_entry *e)
{
    const struct scan_entry *own;

    if (!svc->held || !svc->folder || strcmp(svc->folder, e->folder) == 0)
        return false;
    own =
        bsearch(svc->folder, scan->entries, scan->n, sizeof(*scan->entries), compare_entry_folder);
    return own && (!own->name || strcmp(own->name, svc->name) == 0);
}

static void on_free_work(uv_work_t *work)
{
    discovery_scan_free(work->data);
}

static void on_free_done(uv_work_t *work, int status)
{
    free(work);
}

/* What the merge did not take of a scan is freed on a worker thread: for 10,000
 * services that is tens of thousands of free() calls the loop need not make. */
static void registry_free_scan_later(struct registry *reg, struct scan *scan)
{
    uv_work_t *work;

    if (!reg->loop || scan->n < REGISTRY_FREE_ASIDE_MIN) {
        discovery_scan_free(scan);
        return;
    }
    work = xcalloc(1, sizeof(*work));
    work->data = scan;
    if (uv_queue_work(reg->loop, work, on_free_work, on_free_done) < 0) {
        free(work);
        discovery_scan_free(scan);
    }
}

void registry_apply_scan(struct registry *reg, struct scan *scan, json_t **ret_diff)
{
    struct service **next = xcalloc(scan->n + reg->n_services + 1, sizeof(*next));
    json_t *added = json_array(), *removed = json_array(), *changed = json_array();
    size_t n = 0;

    registry_take_errors(reg, scan);
    if (scan->truncated)
        log_warning("%s holds more than %d folders: only the first %d were read", reg->root,
                    DISCOVERY_MAX_SERVICES, DISCOVERY_MAX_SERVICES);

    /* Valid manifests first: they win a name over a broken copy. */
    for (size_t i = 0; i < scan->n; i++) {
        struct scan_entry *e = &scan->entries[i];
        struct service *svc;

        if (!e->manifest)
            continue;
        svc = registry_find(reg, e->manifest->name);
        if (svc && !svc->seen && entry_steals_name(scan, svc, e)) {
            reg->pending_next = true; /* kept as it is until the next scan */
            svc->gone = false;        /* which claims its folder */
            svc->seen = true;
            next[n++] = svc;
            continue;
        }
        if (!svc) {
            svc = xcalloc(1, sizeof(*svc));
            svc->name = xstrdup(e->manifest->name);
            json_array_append_new(added, json_string(svc->name));
            service_take_manifest(reg, svc, e);
        } else if (svc->held && strcmp(svc->canonical, e->canonical) != 0) {
            /* It runs on the manifest it was started with; the new one waits. */
            if (!svc->pending_canonical || strcmp(svc->pending_canonical, e->canonical) != 0) {
                json_array_append_new(changed, json_string(svc->name));
                service_take_pending(reg, svc, e);
            }
        } else if (strcmp(svc->canonical, e->canonical) != 0) {
            json_array_append_new(changed, json_string(svc->name));
            service_take_manifest(reg, svc, e);
        } else if (svc->pending) {
            /* The disk says again what runs: nothing waits any more. */
            json_array_append_new(changed, json_string(svc->name));
            service_drop_pending(reg, svc);
        }
        service_update_extras(reg, svc, e, NULL);
        svc->gone = false;
        svc->seen = true;
        next[n++] = svc;
    }

    /* A known service whose manifest broke keeps its last good manifest and its state,
     * with the problem attached: a typo must not make a running service vanish. */
    for (size_t i = 0; i < scan->n; i++) {
        struct scan_entry *e = &scan->entries[i];
        struct service *svc;
        json_t *err;

        if (e->manifest || e->errors.n == 0)
            continue;
        svc = registry_find_broken(reg, e);
        if (!svc || svc->seen)
            continue;
        /* A copy elsewhere (a folder that took its name) does not speak for it. */
        if (svc->folder && strcmp(svc->folder, e->folder) != 0 &&
            bsearch(svc->folder, scan->entries, scan->n, sizeof(*scan->entries),
                    compare_entry_folder))
            continue;
        err = json_pack("{s:o, s:i, s:o}", "path", json_text(e->path), "line",
                        e->errors.items[0].line, "message", json_text(e->errors.items[0].message));
        service_update_extras(reg, svc, e, err);
        json_decref(err);
        svc->gone = false;
        svc->seen = true;
        next[n++] = svc;
    }

    /* Whatever the scan did not find is gone, but for a service still running: it stays,
     * marked, until it is stopped (as systemd keeps a unit whose file was removed). */
    for (size_t i = 0; i < reg->n_services; i++) {
        struct service *svc = reg->services[i];
        if (svc->seen)
            continue;
        if (svc->held) {
            svc->gone = true;
            json_t *err =
                json_pack("{s:o, s:i, s:s}", "path", json_text(svc->folder), "line", 0, "message",
                          "the manifest was removed; stop the service to "
                          "forget it");
            if (!json_equal(svc->manifest_error, err)) {
                json_decref(svc->manifest_error);
                svc->manifest_error = json_incref(err);
                registry_touch(reg, svc);
            }
            json_decref(err);
            next[n++] = svc;
            continue;
        }
        json_array_append_new(removed, json_string(svc->name));
        service_free(svc);
        reg->generation++;
    }
    for (size_t i = 0; i < n; i++)
        next[i]->seen = false;

    qsort(next, n, sizeof(*next), service_cmp);
    free(reg->services);
    reg->services = next;
    reg->n_services = n;
    registry_free_scan_later(reg, scan);

    json_t *diff =
        json_pack("{s:o, s:o, s:o}", "added", added, "removed", removed, "changed", changed);
    if (json_array_size(added) || json_array_size(removed) || json_array_size(changed)) {
        log_info("services: %zu (added %zu, removed %zu, changed %zu), %zu manifest errors", n,
                 json_array_size(added), json_array_size(removed), json_array_size(changed),
                 json_array_size(reg->errors));
        if (reg->hub)
            events_publish(reg->hub, EVENT_DISCOVERY, NULL, json_incref(diff));
    }
    if (ret_diff)
        *ret_diff = diff;
    else
        json_decref(diff);
}

static int compare_claims(const void *a, const void *b)
{
    return strcmp(((const struct discovery_claim *)a)->folder,
                  ((const struct discovery_claim *)b)->folder);
}

/* The names and folders of the held services, copied for a scan (sorted by folder). */
static struct discovery_claim *claims_make(const struct registry *reg, size_t *ret_n)
{
    struct discovery_claim *claims = xcalloc(reg->n_services + 1, sizeof(*claims));
    size_t n = 0;

    for (size_t i = 0; i < reg->n_services; i++) {
        const struct service *svc = reg->services[i];
        if (svc->held && !svc->gone && svc->folder)
            claims[n++] = (struct discovery_claim){xstrdup(svc->name), xstrdup(svc->folder)};
    }
    qsort(claims, n, sizeof(*claims), compare_claims);
    *ret_n = n;
    return claims;
}

static void claims_free(struct discovery_claim *claims, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)claims[i].name);
        free((char *)claims[i].folder);
    }
    free(claims);
}

int registry_scan_now(struct registry *reg)
{
    struct scan *scan;
    size_t n_claims;
    struct discovery_claim *claims = claims_make(reg, &n_claims);
    int r = discovery_scan_claimed(reg->root, claims, n_claims, &scan);

    claims_free(claims, n_claims);
    if (r < 0)
        return r;
    registry_apply_scan(reg, scan, NULL);
    /* The start-up scan allocates much and keeps little: give the freed pages back. */
    malloc_trim(0);
    return 0;
}

static void rescan_start(struct registry *reg);

static void on_scan_work(uv_work_t *work)
{
    struct registry *reg = work->data;

    reg->work_result = NULL;
    reg->work_error =
        discovery_scan_claimed(reg->root, reg->work_claims, reg->n_work_claims, &reg->work_result);
}

/* Merges a finished scan and answers those who waited for it. */
static void on_scan_done(uv_work_t *work, int status)
{
    struct registry *reg = work->data;
    int error = status ? status : reg->work_error;
    json_t *diff = NULL;

    reg->scanning = false;
    claims_free(reg->work_claims, reg->n_work_claims);
    reg->work_claims = NULL;
    if (reg->freeing) {
        if (reg->work_result)
            discovery_scan_free(reg->work_result);
        registry_destroy(reg);
        return;
    }
    if (error == 0) {
        registry_apply_scan(reg, reg->work_result, &diff);
    } else {
        log_error("cannot read the services folder %s: %s", reg->root, strerror(-error));
        diff = json_pack("{s:[], s:[], s:[], s:s+}", "added", "removed", "changed", "error",
                         "cannot read the services folder: ", strerror(-error));
    }
    reg->work_result = NULL;

    /* Those who asked during this scan wait for the next one; callbacks may ask again. */
    reg->calling = reg->waiting_now;
    reg->waiting_now = reg->waiting_next;
    reg->waiting_next = NULL;
    if (!reg->scanning && (reg->waiting_now || reg->pending_next)) {
        /* (Not when the merge's own subscribers began one: it serves them.) */
        reg->pending_next = false;
        rescan_start(reg);
    }
    if (reg->on_rescan)
        reg->on_rescan(reg->on_rescan_data, diff);
    while (reg->calling) {
        struct rescan_waiter *w = reg->calling;
        reg->calling = w->next;
        w->done(w->data, diff);
        free(w);
    }
    json_decref(diff);
}

static void rescan_start(struct registry *reg)
{
    reg->scanning = true;
    reg->work_claims = claims_make(reg, &reg->n_work_claims);
    if (uv_queue_work(reg->loop, &reg->work, on_scan_work, on_scan_done) < 0)
        fatal("uv_queue_work failed");
}

struct rescan_waiter *registry_rescan(struct registry *reg, registry_rescan_fn done, void *data)
{
    struct rescan_waiter *w, **list;

    if (!done) {
        /* Nobody waits: one flag, however often it is asked. */
        if (!reg->scanning)
            rescan_start(reg);
        else
            reg->pending_next = true;
        return NULL;
    }
    w = xcalloc(1, sizeof(*w));
    list = reg->scanning ? &reg->waiting_next : &reg->waiting_now;
    w->done = done;
    w->data = data;
    w->next = *list;
    *list = w;
    if (!reg->scanning)
        rescan_start(reg);
    return w;
}

/* Removes w from list if it is there. */
static bool waiter_unlink(struct rescan_waiter **list, struct rescan_waiter *w)
{
    for (; *list; list = &(*list)->next) {
        if (*list == w) {
            *list = w->next;
            free(w);
            return true;
        }
    }
    return false;
}

void registry_rescan_cancel(struct registry *reg, struct rescan_waiter *w)
{
    if (!w)
        return;
    if (!waiter_unlink(&reg->waiting_now, w) && !waiter_unlink(&reg->waiting_next, w))
        waiter_unlink(&reg->calling, w);
}

void registry_on_rescan(struct registry *reg, registry_rescan_fn fn, void *data)
{
    reg->on_rescan = fn;
    reg->on_rescan_data = data;
}

bool registry_apply_pending(struct registry *reg, struct service *svc)
{
    if (!svc->pending)
        return false;
    manifest_free(svc->manifest);
    svc->manifest = svc->pending;
    svc->pending = NULL;
    free(svc->canonical);
    svc->canonical = svc->pending_canonical;
    svc->pending_canonical = NULL;
    registry_touch(reg, svc);
    log_info("%s: starts with the manifest changed on disk while it ran", svc->name);
    if (reg->hub)
        events_publish(reg->hub, EVENT_DISCOVERY, NULL,
                       json_pack("{s:[], s:[], s:[s]}", "added", "removed", "changed", svc->name));
    return true;
}

void registry_set_running(struct registry *reg, struct service *svc, struct manifest *m)
{
    char *canonical = discovery_canonical_text(m);
    bool differs;

    if (!svc->pending) {
        /* The one in force is the disk's: it waits, unless it says what runs. */
        svc->pending = svc->manifest;
        svc->pending_canonical = svc->canonical;
    } else {
        manifest_free(svc->manifest);
        free(svc->canonical);
    }
    svc->manifest = m;
    svc->canonical = canonical;
    differs = strcmp(svc->canonical, svc->pending_canonical) != 0;
    if (!differs)
        service_drop_pending(reg, svc);
    registry_touch(reg, svc);
    if (differs)
        log_info("%s: runs on the manifest it was started with; the one on disk waits until "
                 "it is started again",
                 svc->name);
}

struct service *registry_add_running(struct registry *reg, struct manifest *m)
{
    const char *slash = strrchr(m->dir, '/');
    struct service *svc;

    if (registry_find(reg, m->name))
        return NULL;
    svc = xcalloc(1, sizeof(*svc));
    svc->name = xstrdup(m->name);
    svc->folder = xstrdup(slash && slash[1] ? slash + 1 : m->dir);
    svc->manifest = m;
    svc->canonical = discovery_canonical_text(m);
    svc->warnings = json_array();
    svc->held = true; /* until the caller says: a rescan asked meanwhile must keep it */
    svc->gone = true; /* the disk does not name it: a rescan tells why */
    reg->services = xrealloc(reg->services, (reg->n_services + 1) * sizeof(*reg->services));
    reg->services[reg->n_services++] = svc;
    qsort(reg->services, reg->n_services, sizeof(*reg->services), service_cmp);
    registry_touch(reg, svc);
    log_warning("%s: it runs, but no manifest on disk names it any more (broken or removed): "
                "kept on the manifest it was started with until it is stopped",
                svc->name);
    if (reg->hub)
        events_publish(reg->hub, EVENT_DISCOVERY, NULL,
                       json_pack("{s:[s], s:[], s:[]}", "added", svc->name, "removed", "changed"));
    if (reg->loop)
        registry_rescan(reg, NULL, NULL);
    return svc;
}

json_t *registry_pending_changes(const struct service *svc)
{
    json_t *running, *next, *changes, *v;
    const char *key;

    if (!svc->pending_canonical)
        return NULL;
    running = json_loads(svc->canonical, 0, NULL);
    next = json_loads(svc->pending_canonical, 0, NULL);
    changes = json_object();
    json_object_foreach(running, key, v)
    {
        json_t *w = json_object_get(next, key);
        if (!w || !json_equal(v, w))
            json_object_set_new(changes, key,
                                json_pack("{s:O, s:O}", "running", v, "new", w ? w : json_null()));
    }
    json_object_foreach(next, key, v)
    {
        if (!json_object_get(running, key))
            json_object_set_new(changes, key,
                                json_pack("{s:O, s:O}", "running", json_null(), "new", v));
    }
    json_decref(running);
    json_decref(next);
    return changes;
}
