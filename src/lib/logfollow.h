/* Following a log file as it grows (tail -F), on the loop: each new line once, in order,
 * across rotation by rename (lib/logfile.h: path becomes path.1 and a new path is made) or
 * by truncation, and from its creation when it does not exist yet.
 *
 * One watch of the file's folder (uv_fs_event: inotify, on the loop's one inotify
 * instance, which libuv shares among the handles of a folder): the folder tells of each
 * write, truncation, rename and creation of a file of path's name. Each makes it look
 * again: it reads the open file from where it stopped to its end and, when the path names
 * another file now, moves to that one from its start, having read the old one to its end
 * (the logger closes a file before it renames it, so the old file is complete). Two
 * rotations before a look are caught up on (path.1, written between, is read too); lines
 * of a third within one look are lost.
 * A file shorter than where it stopped was truncated: it reads on from the start.
 * New bytes come from the page cache, just written: they are read on the loop, at most
 * LOGFOLLOW_PASS_BYTES a loop pass, so a flood of output never holds the loop. */
#ifndef NANNY_LOGFOLLOW_H
#define NANNY_LOGFOLLOW_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define LOGFOLLOW_LINE_MAX   (64 * 1024) /* a longer line comes in pieces of this size */
#define LOGFOLLOW_PASS_BYTES (1024 * 1024)

/* One line without its '\n' (any byte but '\n'), valid during the call only. The callback
 * may free the follower (logfollow_free). */
typedef void (*logfollow_line_fn)(void *data, const char *line, size_t len);

struct logfollow;

/* Follows path from its current end (the end of its last whole line: a line still being
 * written comes whole). Fails with a negative errno when its folder cannot be watched. */
int logfollow_new(uv_loop_t *loop, const char *path, logfollow_line_fn line, void *data,
                  struct logfollow **ret);

/* Stops at once (no callback after this) and frees it once the loop has closed its
 * handles. NULL is fine; safe inside line(). */
void logfollow_free(struct logfollow *lf);

/* The last max_lines lines before the next line line() will give (logfile_tail_fd(), at
 * most max_bytes read), read on a worker thread: no line comes through line() from this
 * call until done() has been called, so the tail and the lines after it join with no gap
 * and nothing twice. done gets lines (NULL-terminated, valid during the call) or NULL and
 * a negative errno. *ret is a handle for logfollow_tail_cancel() until done. */
typedef void (*logfollow_tail_fn)(void *data, char **lines, int error);
struct logfollow_tail;
void logfollow_tail(struct logfollow *lf, unsigned max_lines, size_t max_bytes,
                    logfollow_tail_fn done, void *data, struct logfollow_tail **ret);
/* done will not be called; the follower reads on. NULL is fine. */
void logfollow_tail_cancel(struct logfollow_tail *t);

#endif
