/* The daemon's state folder: what it started (so that a restarted daemon adopts its
 * services) kept in one JSON file written atomically, and the services' log files. */
#ifndef NANNY_STATE_H
#define NANNY_STATE_H

#include <jansson.h>
#include <uv.h>

#define STATE_FILE_NAME "state.json"
#define STATE_SIZE_MAX  (16 * 1024 * 1024)

/* Creates the state folder (with the folders above it) and its logs/ subfolder (mode
 * 0755) if missing. */
int state_prepare(const char *dir);

/* Writes doc to DIR/state.json so that a crash at any moment leaves the old or the new
 * file whole: a temporary file, fsync, rename over, fsync of the folder. */
int state_save(const char *dir, json_t *doc);

/* The same writes on a libuv worker thread, so that the loop never waits for the disk:
 * the document is serialized at once; a save asked while one is being written replaces
 * any other still waiting (only the latest matters), and is written after it. Errors
 * are logged. free() lets go; a write under way, and the one waiting, still happen (the
 * loop runs until they are done). */
struct state_writer;
struct state_writer *state_writer_new(uv_loop_t *loop, const char *dir);
void state_writer_save(struct state_writer *w, json_t *doc);
void state_writer_free(struct state_writer *w);

/* Reads DIR/state.json: *ret gets the object, or an empty object when there is no file.
 * A file that is not a JSON object (a disk that lied, a person's edit) is -EINVAL with
 * a sentence in err; the caller logs it and starts afresh. */
int state_load(const char *dir, json_t **ret, char *err, size_t err_size);

/* DIR/logs/NAME.log, for a service's output. */
char *state_log_path(const char *dir, const char *name);

#endif
