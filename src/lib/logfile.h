/* A process service's log file: written by a small logger of our own binary (the
 * daemontools/runit way), read by the logs API across its rotation.
 *
 * The service writes its stdout and stderr into a pipe; the logger (`nanny log-writer`,
 * a process of the service's own group or cgroup, which outlives a daemon restart) reads
 * the pipe and appends whole lines to the file. Before a write would take the file past
 * its cap it rotates by rename (path.(keep-1) becomes path.keep, ..., path becomes
 * path.1) and opens a new file, so the cap holds at any write speed and no line is lost
 * or cut by the rotation. It ends when every writer of the pipe has gone (the service and
 * all it forked), so the last lines are always written. The audit log (core/audit.c)
 * rotates and is read the same way. */
#ifndef NANNY_LOGFILE_H
#define NANNY_LOGFILE_H

#include <stddef.h>
#include <stdint.h>

#define LOGFILE_LINE_MAX (64 * 1024) /* a longer line is written in pieces of this size */

/* The logger's work: copies what arrives on in_fd to path (created 0644, appended to)
 * until end of file, whole lines at a time, rotating by rename before the file would
 * exceed max_bytes (0: never), keeping keep old files (0: the old file is removed).
 * Returns 0 at end of file, or a negative errno when the file cannot be written (the
 * logger then reads on and drops what it cannot write, so the service never blocks on a
 * full pipe; the error is returned at the end). */
int logfile_copy(int in_fd, const char *path, uint64_t max_bytes, unsigned keep);

/* Rotates path now, by rename, as logfile_copy() does: 0, or a negative errno. */
int logfile_rotate(const char *path, unsigned keep);

/* The last lines of path's output across its rotation: at most max_lines, reading at
 * most max_bytes in all from the end of path and, when path has fewer lines, of path.1.
 * A NUL byte in a line is shown as U+FFFD, so it does not cut the line. Returns a
 * NULL-terminated array the caller frees with strv_free(); a missing file is no lines. */
int logfile_tail(const char *path, unsigned max_lines, size_t max_bytes, char ***ret);

/* logfile_tail() up to a point: the last lines of the bytes of fd (an open log file, or -1
 * for none) before end and, when it has fewer, of the file before it (path.1, or path.2
 * when path.1 is fd's own file, renamed since). For a follower (lib/logfollow.h) that
 * joins a file where its reader stands. */
int logfile_tail_fd(int fd, uint64_t end, const char *path, unsigned max_lines, size_t max_bytes,
                    char ***ret);

/* `nanny log-writer PATH MAX_BYTES KEEP`: the logger's main, reading stdin. It ignores
 * SIGTERM, SIGINT and SIGHUP (a stop signals the whole group: the logger goes on until
 * the service has gone and its last lines are written), then exits with _exit(): 0, or
 * 1 when the file could not be written. Returns 2 only on bad arguments. */
int logfile_main(int argc, char **argv);

#endif
