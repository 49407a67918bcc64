/* Allocation helpers that call fatal() on out-of-memory, and cleanup helpers. */
#ifndef NANNY_ALLOC_H
#define NANNY_ALLOC_H

#include <stdlib.h>

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Frees a NULL-terminated array of strings and the strings (NULL is fine). */
void strv_free(char **strv);

/* The element of the NULL-terminated array strv (NULL: none) equal to s, or NULL. */
const char *strv_find(char *const *strv, const char *s);

static inline void freep(void *p)
{
    free(*(void **)p);
}
#define _cleanup_free_ __attribute__((cleanup(freep)))

#endif
