/* Leveled logging: one line per event, plain text or JSON lines; fatal(). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "lib/json.h"
#include "lib/log.h"

static enum log_level max_level = LOG_INFO;
static bool json_lines;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void log_setup(enum log_level level, bool json)
{
    max_level = level;
    json_lines = json;
}

int log_level_parse(const char *s, enum log_level *ret)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *ret = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool log_enabled(enum log_level level)
{
    return level <= max_level;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    if (json_lines) {
        json_t *o =
            json_pack("{s:s, s:o}", "level", level_names[level], "message", json_text(line));
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s)
            fprintf(stderr, "%s\n", s);
        free(s);
        json_decref(o);
    } else {
        fprintf(stderr, "nanny: %s: %s\n", level_names[level], line);
    }
}

void fatal(const char *fmt, ...)
{
    va_list ap;

    fputs("nanny: fatal: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}
