/* Diagnostics: the problems found in a file a person wrote, each with its line, in a
 * list with a cap. */
#ifndef NANNY_DIAGS_H
#define NANNY_DIAGS_H

#include <stddef.h>

/* One problem found in a file; line is 1-based, 0 when it concerns the whole file. */
struct diag {
    int line;
    char *message;
};

/* A growable list of diagnostics, capped (see diags_add). */
struct diags {
    struct diag *items;
    size_t n;
    size_t dropped; /* entries refused at the cap since the list was last cleared */
};

#define DIAGS_MAX 100

/* Appends a formatted diagnostic; lists are capped at DIAGS_MAX entries (the rest
 * counted in dropped). d may be NULL: nothing is recorded. */
void diags_add(struct diags *d, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void diags_clear(struct diags *d);

/* Keeps at most max of the entries from index start on and, when there were more
 * (dropped ones included), ends the list with one entry "... and N more problems" at
 * line 0, so that a reader sees the first few problems and how many remain. */
void diags_limit(struct diags *d, size_t start, size_t max);

#endif
