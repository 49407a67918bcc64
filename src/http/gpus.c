/* GET /gpus: see gpus.h. What the box has comes from the inventory; where services are,
 * from the supervisor's placements; a page is made from both at once. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "http/gpus.h"
#include "lib/json.h"

/* Bytes, or null when unknown (0). */
static json_t *bytes_or_null(uint64_t bytes)
{
    return bytes ? json_integer((json_int_t)bytes) : json_null();
}

/* True when the placement p (an element of supervisor_gpu()'s "placed") is on GPU index. */
static bool placed_on(const json_t *p, unsigned index)
{
    size_t i;
    json_t *d;

    json_array_foreach(json_object_get(p, "devices"), i, d)
    {
        if (json_integer_value(d) == (json_int_t)index)
            return true;
    }
    return false;
}

/* One GPU: its services from placed, its foreign processes from the inventory, and its
 * memory: as measured where the inventory measures it, else what the services placed
 * there reserve (a whole GPU's service: all of it) and foreign processes use. */
static json_t *gpu_render(const struct inventory_gpu *g, const json_t *placed,
                          const struct inventory *inv, const struct demand *demand)
{
    json_t *services = json_array(), *foreign = json_array(), *in_flight = json_object();
    const struct inventory_proc *procs;
    uint64_t reserved = 0, foreign_bytes = 0, used, free_bytes = 0;
    bool whole = false;
    size_t n, i;
    json_t *p;

    json_array_foreach(placed, i, p)
    {
        json_t *memory = json_object_get(p, "memory");

        if (!placed_on(p, g->index))
            continue;
        json_array_append(services, json_object_get(p, "service"));
        json_object_set_new(
            in_flight, json_string_value(json_object_get(p, "service")),
            json_integer(
                demand ? demand_in_flight(demand, json_string_value(json_object_get(p, "service")))
                       : 0));
        if (json_is_integer(memory))
            reserved += (uint64_t)json_integer_value(memory);
        else
            whole = true;
    }
    procs = inventory_procs(inv, &n);
    for (i = 0; i < n; i++) {
        if (procs[i].gpu != g->index || procs[i].owned)
            continue;
        foreign_bytes += procs[i].memory;
        json_array_append_new(foreign, json_pack("{s:i, s:o}", "pid", procs[i].pid, "memory",
                                                 bytes_or_null(procs[i].memory)));
    }
    if (whole)
        reserved = g->memory;
    used = g->used_known ? g->used : reserved + foreign_bytes;
    if (g->memory && used < g->memory)
        free_bytes = g->memory - used;
    return json_pack("{s:i, s:o, s:o, s:{s:o, s:I, s:o, s:I}, s:o, s:o, s:o, s:o}", "index",
                     (int)g->index, "name", json_text(g->name), "uuid",
                     g->uuid ? json_text(g->uuid) : json_null(), "memory", "total",
                     bytes_or_null(g->memory), "used", (json_int_t)used, "free",
                     g->memory ? json_integer((json_int_t)free_bytes) : json_null(), "reserved",
                     (json_int_t)reserved, "utilization",
                     g->utilization >= 0 ? json_integer(g->utilization) : json_null(), "services",
                     services, "foreign", foreign, "in_flight", in_flight);
}

/* The queue: starts on demand in the order they are served, then forced starts that wait
 * for the holders they stop (from the supervisor's queue). */
static json_t *queue_render(const struct gpus_surface *s, const json_t *names)
{
    json_t *queue = s->demand ? demand_queue(s->demand) : json_array(), *name, *entry;
    size_t i, j;

    json_array_foreach(names, i, name)
    {
        bool listed = false;
        struct service *svc;

        json_array_foreach(queue, j, entry)
        {
            listed = listed || json_equal(json_object_get(entry, "service"), name);
        }
        if (listed || !(svc = registry_find(s->reg, json_string_value(name))))
            continue;
        json_array_append_new(queue, json_pack("{s:O, s:i, s:n, s:n, s:i, s:b, s:[]}", "service",
                                               name, "priority", svc->manifest->priority, "since",
                                               "age_ms", "requests", 0, "swap", true, "holders"));
    }
    return queue;
}

json_t *gpus_render(const struct gpus_surface *s)
{
    json_t *state = supervisor_gpu(s->sup), *gpus = json_array(), *page;
    struct inventory *inv = s->inv;
    const struct inventory_gpu *g;
    size_t n;

    g = inventory_gpus(inv, &n);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(gpus,
                              gpu_render(&g[i], json_object_get(state, "placed"), inv, s->demand));
    page = json_pack("{s:s, s:o, s:o, s:O}", "source", inventory_source(inv), "gpus", gpus, "queue",
                     queue_render(s, json_object_get(state, "queue")), "holders",
                     json_object_get(state, "holders"));
    json_decref(state);
    return page;
}

void gpus_handle(void *data, struct request *req)
{
    struct gpus_surface *s = data;

    request_reply_json(req, MHD_HTTP_OK, gpus_render(s));
}
