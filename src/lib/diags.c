/* Diagnostics: a capped list of problems with their lines. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib/alloc.h"
#include "lib/diags.h"
#include "lib/log.h"

void diags_add(struct diags *d, int line, const char *fmt, ...)
{
    va_list ap;
    char *message;

    if (!d)
        return;
    if (d->n >= DIAGS_MAX) {
        d->dropped++;
        return;
    }
    va_start(ap, fmt);
    if (vasprintf(&message, fmt, ap) < 0)
        fatal("out of memory (diagnostic)");
    va_end(ap);
    d->items = xrealloc(d->items, (d->n + 1) * sizeof(*d->items));
    d->items[d->n].line = line;
    d->items[d->n].message = message;
    d->n++;
}

void diags_clear(struct diags *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->items[i].message);
    free(d->items);
    d->items = NULL;
    d->n = 0;
    d->dropped = 0;
}

void diags_limit(struct diags *d, size_t start, size_t max)
{
    size_t kept, more;

    if (!d || start > d->n)
        return;
    kept = d->n - start;
    more = d->dropped;
    if (kept > max) {
        more += kept - max;
        kept = max;
    }
    if (more == 0)
        return;
    for (size_t i = start + kept; i < d->n; i++)
        free(d->items[i].message);
    /* The summary may take the list one past DIAGS_MAX: it stands for what was dropped. */
    d->n = start + kept;
    d->dropped = 0;
    d->items = xrealloc(d->items, (d->n + 1) * sizeof(*d->items));
    d->items[d->n].line = 0;
    d->items[d->n].message = xasprintf("... and %zu more problem%s", more, more == 1 ? "" : "s");
    d->n++;
}
