/* The daemon's state folder: what it started (so that a restarted daemon adopts its
 * services) kept in one JSON file written atomically, and the services' log files. */
#ifndef NANNY_STATE_H
#define NANNY_STATE_H

#include <stdbool.h>

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

/* A write ahead: state_writer_save(), then done(data, 0 or -errno) on the loop once doc
 * (or a later document, which holds what it holds) is on disk, or could not be written.
 * After state_writer_free() the callbacks still waiting get -ECANCELED (and must not touch
 * what the caller freed since). */
typedef void (*state_written_fn)(void *data, int result);
void state_writer_save_then(struct state_writer *w, json_t *doc, state_written_fn done, void *data);

/* The outcome of the last write that ended: 0, or -errno while the disk cannot be
 * written (GET /health shows it). */
int state_writer_error(const struct state_writer *w);

/* True while a write is under way or asked for. */
bool state_writer_busy(const struct state_writer *w);

/* Reads DIR/state.json: *ret gets the object, or an empty object when there is no file.
 * A file that is not a JSON object (a disk that lied, a person's edit) is -EINVAL with
 * a sentence in err; the caller logs it and starts afresh. */
int state_load(const char *dir, json_t **ret, char *err, size_t err_size);

/* Moves a state.json that state_load() refused aside, to DIR/state.json.corrupt-<unix time>
 * (so that nothing overwrites what a person may want to read); its new path in path. */
int state_set_aside(const char *dir, char *path, size_t size);

/* This boot of the host (/proc/sys/kernel/random/boot_id), new string, "" when unknown.
 * A crash-points build takes NANNY_TEST_BOOT_ID instead when it is set (tests fake a
 * reboot with it). */
char *state_boot_id(void);

/* DIR/logs/NAME.log, for a service's output. */
char *state_log_path(const char *dir, const char *name);

#endif
