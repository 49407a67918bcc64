/* Watches the services folder and its subfolders for changes (inotify through
 * uv_fs_event) and calls back once per burst of changes, after a short quiet delay. */
#ifndef NANNY_WATCH_H
#define NANNY_WATCH_H

#include <uv.h>

#define WATCH_DEBOUNCE_MS   150
#define WATCH_ROOT_CHECK_MS 2000

struct watch;

typedef void (*watch_fn)(void *data);

/* Starts watching root and every subfolder that could hold a service. */
int watch_new(uv_loop_t *loop, const char *root, watch_fn changed, void *data, struct watch **ret);

/* Re-reads root's subfolders and watches new ones, forgets gone ones. */
void watch_sync(struct watch *w);

/* Stops watching; the memory goes once the loop has closed the handles. */
void watch_free(struct watch *w);

#endif
