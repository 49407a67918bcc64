/* What gpuinfo.c and gpuinfo_smi.c share; not for other modules. */
#ifndef NANNY_GPUINFO_INTERNAL_H
#define NANNY_GPUINFO_INTERNAL_H

#include <stddef.h>

/* Writes a message into err and returns r. */
int gpuinfo_fail(char *err, size_t err_size, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A copy of the first len bytes of s (up to a NUL) with every byte outside printable
 * ASCII turned into '?': names end up in JSON and in log lines. */
char *gpuinfo_printable(const char *s, size_t len);

#endif
