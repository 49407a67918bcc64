/* The services folder watcher. Linux's inotify does not recurse, so each subfolder gets
 * its own uv_fs_event; changes inside a subfolder count only when they touch a file that
 * decides a service (its manifest or a compose file), so that a service writing files
 * into its own folder does not cause endless rescans. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "core/discovery.h"
#include "core/manifest.h"
#include "core/watch.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define WATCH_FOLDERS_MAX 100000

struct folder_watch {
    uv_fs_event_t handle;
    struct watch *watch;
    char *name; /* NULL for the root */
    dev_t dev;  /* the folder watched: inotify follows the inode, not the name */
    ino_t ino;
    bool dead; /* the folder went (deleted or moved): the watch sees nothing any more */
    bool seen; /* found by the current sync */
};

struct watch {
    uv_loop_t *loop;
    char *root;
    watch_fn changed;
    void *data;
    uv_timer_t debounce;
    uv_timer_t root_check; /* notices the services folder itself replaced */
    struct folder_watch *root_watch;
    struct folder_watch **folders; /* sorted by name */
    size_t n_folders;
    bool warned_limit;
    int timers_open; /* while closing */
};

static void on_debounce(uv_timer_t *t)
{
    struct watch *w = t->data;

    w->changed(w->data);
}

static void watch_add_folder(struct watch *w, const char *name);

/* inotify saw a change: start the quiet delay, or ride along a running one. */
static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    struct folder_watch *fw = h->data;
    struct watch *w = fw->watch;

    /* The folder's own removal or move: libuv then names the folder itself. A folder
     * made anew under the name (even on the same inode number) needs a new watch. */
    if (fw->name && filename && strcmp(filename, fw->name) == 0 && (events & UV_RENAME))
        fw->dead = true;
    /* In a subfolder only the files that decide a service count. */
    else if (fw->name && filename && !manifest_file_decides(filename))
        return;
    /* A new subfolder is watched at once, before the scan: a manifest written into it
     * while the scan runs is then seen either by the scan or by the new watch. */
    if (!fw->name && filename)
        watch_add_folder(w, filename);
    /* The first change of a burst arms the timer; later ones ride along. */
    if (!uv_is_active((uv_handle_t *)&w->debounce))
        uv_timer_start(&w->debounce, on_debounce, WATCH_DEBOUNCE_MS, 0);
}

static void on_folder_closed(uv_handle_t *h)
{
    struct folder_watch *fw = h->data;

    free(fw->name);
    free(fw);
}

static void folder_unwatch(struct folder_watch *fw)
{
    uv_fs_event_stop(&fw->handle);
    uv_close((uv_handle_t *)&fw->handle, on_folder_closed);
}

/* Starts watching root/name (root itself for NULL); NULL when it cannot be watched. */
static struct folder_watch *folder_watch(struct watch *w, const char *name)
{
    struct folder_watch *fw = xcalloc(1, sizeof(*fw));
    char *path = name ? xasprintf("%s/%s", w->root, name) : xstrdup(w->root);
    struct stat st;
    int r;

    fw->watch = w;
    fw->name = name ? xstrdup(name) : NULL;
    if (stat(path, &st) == 0) {
        fw->dev = st.st_dev;
        fw->ino = st.st_ino;
    }
    uv_fs_event_init(w->loop, &fw->handle);
    fw->handle.data = fw;
    r = uv_fs_event_start(&fw->handle, on_fs_event, path, 0);
    if (r < 0) {
        if (!w->warned_limit || !name)
            log_warning("cannot watch %s for changes (%s): changes there need POST /rediscover "
                        "or SIGHUP; for many services raise fs.inotify.max_user_watches",
                        path, uv_strerror(r));
        if (name)
            w->warned_limit = true;
        folder_unwatch(fw);
        fw = NULL;
    }
    free(path);
    return fw;
}

static int folder_cmp(const void *a, const void *b)
{
    const struct folder_watch *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int folder_key_cmp(const void *key, const void *elem)
{
    const struct folder_watch *const *fw = elem;
    return strcmp(key, (*fw)->name);
}

/* Watches root/name if it is a folder that could hold a service and is not watched yet
 * (or was replaced by another folder of the same name). */
static void watch_add_folder(struct watch *w, const char *name)
{
    struct folder_watch *fw, **found;
    struct stat st;
    char *path;
    size_t i;

    if (!discovery_folder_is_candidate(name) || w->n_folders >= WATCH_FOLDERS_MAX)
        return;
    path = xasprintf("%s/%s", w->root, name);
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        free(path);
        return;
    }
    free(path);
    found = w->n_folders
                ? bsearch(name, w->folders, w->n_folders, sizeof(*w->folders), folder_key_cmp)
                : NULL;
    if (found) {
        if (!(*found)->dead && (*found)->dev == st.st_dev && (*found)->ino == st.st_ino)
            return;
        /* Same name, another folder (rm -rf b && cp -r ... b): watch the new one. */
        fw = folder_watch(w, name);
        if (!fw)
            return;
        folder_unwatch(*found);
        *found = fw;
        return;
    }
    fw = folder_watch(w, name);
    if (!fw)
        return;
    /* Keep the list sorted: find the place and shift the tail. */
    for (i = w->n_folders; i > 0 && strcmp(w->folders[i - 1]->name, name) > 0; i--)
        ;
    w->folders = xrealloc(w->folders, (w->n_folders + 1) * sizeof(*w->folders));
    memmove(&w->folders[i + 1], &w->folders[i], (w->n_folders - i) * sizeof(*w->folders));
    w->folders[i] = fw;
    w->n_folders++;
}

void watch_sync(struct watch *w)
{
    struct folder_watch **next;
    size_t n = 0, cap = w->n_folders + 16;
    DIR *dir = opendir(w->root);
    struct dirent *de;

    if (!dir)
        return;
    next = xcalloc(cap, sizeof(*next));
    while ((de = readdir(dir)) && n < WATCH_FOLDERS_MAX) {
        struct folder_watch **found, *fw;
        struct stat st;

        if (!discovery_folder_is_candidate(de->d_name))
            continue;
        if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN && de->d_type != DT_LNK)
            continue;
        if (de->d_type != DT_DIR &&
            (fstatat(dirfd(dir), de->d_name, &st, 0) < 0 || !S_ISDIR(st.st_mode)))
            continue;
        found = w->n_folders ? bsearch(de->d_name, w->folders, w->n_folders, sizeof(*w->folders),
                                       folder_key_cmp)
                             : NULL;
        if (found && !(*found)->dead) {
            fw = *found;
        } else {
            fw = folder_watch(w, de->d_name);
            if (!fw)
                continue;
        }
        fw->seen = true;
        if (n == cap)
            next = xrealloc(next, (cap *= 2) * sizeof(*next));
        next[n++] = fw;
    }
    closedir(dir);

    for (size_t i = 0; i < w->n_folders; i++)
        if (!w->folders[i]->seen)
            folder_unwatch(w->folders[i]);
    for (size_t i = 0; i < n; i++)
        next[i]->seen = false;
    qsort(next, n, sizeof(*next), folder_cmp);
    free(w->folders);
    w->folders = next;
    w->n_folders = n;
}

/* Every WATCH_ROOT_CHECK_MS: if the services folder was replaced (moved away and made
 * anew), the root watch still follows the old one; watch the new one and rescan. */
static void on_root_check(uv_timer_t *t)
{
    struct watch *w = t->data;
    struct stat st;

    if (stat(w->root, &st) < 0 || !S_ISDIR(st.st_mode))
        return;
    if (w->root_watch && w->root_watch->dev == st.st_dev && w->root_watch->ino == st.st_ino)
        return;
    log_info("the services folder %s was replaced: watching the new one", w->root);
    if (w->root_watch)
        folder_unwatch(w->root_watch);
    w->root_watch = folder_watch(w, NULL);
    for (size_t i = 0; i < w->n_folders; i++)
        folder_unwatch(w->folders[i]);
    w->n_folders = 0;
    watch_sync(w);
    w->changed(w->data);
}

int watch_new(uv_loop_t *loop, const char *root, watch_fn changed, void *data, struct watch **ret)
{
    struct watch *w = xcalloc(1, sizeof(*w));

    w->loop = loop;
    w->root = xstrdup(root);
    w->changed = changed;
    w->data = data;
    uv_timer_init(loop, &w->debounce);
    w->debounce.data = w;
    uv_timer_init(loop, &w->root_check);
    w->root_check.data = w;
    uv_timer_start(&w->root_check, on_root_check, WATCH_ROOT_CHECK_MS, WATCH_ROOT_CHECK_MS);
    w->root_watch = folder_watch(w, NULL);
    watch_sync(w);
    *ret = w;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct watch *w = h->data;

    if (--w->timers_open > 0)
        return;
    free(w->root);
    free(w);
}

void watch_free(struct watch *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_folders; i++)
        folder_unwatch(w->folders[i]);
    free(w->folders);
    if (w->root_watch)
        folder_unwatch(w->root_watch);
    w->timers_open = 2;
    uv_close((uv_handle_t *)&w->debounce, on_timer_closed);
    uv_close((uv_handle_t *)&w->root_check, on_timer_closed);
}
