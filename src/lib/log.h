/* Leveled logging to stderr: one line per event, plain text or JSON lines. */
#ifndef NANNY_LOG_H
#define NANNY_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR = 0, LOG_WARNING, LOG_INFO, LOG_DEBUG };

/* Sets the most verbose level that is printed and the output format. */
void log_setup(enum log_level level, bool json);

/* Parses "error", "warning", "info" or "debug"; returns -EINVAL otherwise. */
int log_level_parse(const char *s, enum log_level *ret);

bool log_enabled(enum log_level level);
void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The level is checked before the arguments are formatted. */
#define log_error(...)   log_at(LOG_ERROR, __VA_ARGS__)
#define log_warning(...) log_at(LOG_WARNING, __VA_ARGS__)
#define log_info(...)    log_at(LOG_INFO, __VA_ARGS__)
#define log_debug(...)   log_at(LOG_DEBUG, __VA_ARGS__)
#define log_at(level, ...)                                                                         \
    do {                                                                                           \
        if (log_enabled(level))                                                                    \
            log_write(level, __VA_ARGS__);                                                         \
    } while (0)

/* Aborts the process: out of memory or a broken invariant only. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
