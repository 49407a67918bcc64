/* The table of drivers, and the calls that go through a handle's own driver. */
#include <string.h>

#include "core/driver.h"
#include "lib/alloc.h"
#include "lib/log.h"

static const struct driver *const no_drivers[] = {NULL};
static const struct driver *const *table = no_drivers;

void drivers_set(const struct driver *const *drivers)
{
    for (size_t i = 0; drivers[i]; i++) {
        const struct driver *d = drivers[i];
        if (!d->name || !d->available || !d->start || !d->stop || !d->release)
            fatal("driver %zu (%s) lacks a required slot", i, d->name ? d->name : "unnamed");
        if (!d->instance_key != !d->instance_clash)
            fatal("driver %s: instance_key and instance_clash go together", d->name);
    }
    table = drivers;
}

const struct driver *const *drivers_all(void)
{
    return table;
}

const struct driver *driver_find(const char *name)
{
    for (size_t i = 0; table[i]; i++)
        if (strcmp(table[i]->name, name) == 0)
            return table[i];
    return NULL;
}

const struct driver *driver_for(const struct manifest *m)
{
    return driver_find(manifest_driver_name(m));
}

void driver_run_stop(struct driver_run *r, uint64_t timeout_ms)
{
    r->driver->stop(r, timeout_ms);
}

void driver_run_release(struct driver_run *r)
{
    if (r)
        r->driver->release(r);
}

json_t *driver_run_record(const struct driver_run *r)
{
    return r->driver->record ? r->driver->record(r) : NULL;
}

void driver_logs_cancel(struct driver_logs *l)
{
    if (l && l->driver->logs_cancel)
        l->driver->logs_cancel(l);
}

char *driver_instance_key(const struct driver *d, const char *name)
{
    return d->instance_key ? d->instance_key(name) : xstrdup(name);
}
