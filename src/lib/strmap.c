/* A map from strings to pointers: a hash table with chaining (FNV-1a), doubled when it
 * holds more entries than buckets. */
#include <stdint.h>
#include <string.h>

#include "lib/alloc.h"
#include "lib/strmap.h"

#define STRMAP_BUCKETS_MIN 16

struct entry {
    char *key;
    void *value;
    struct entry *next;
};

struct strmap {
    struct entry **buckets;
    size_t n_buckets; /* a power of two */
    size_t count;
};

static uint64_t hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

struct strmap *strmap_new(void)
{
    struct strmap *m = xcalloc(1, sizeof(*m));

    m->n_buckets = STRMAP_BUCKETS_MIN;
    m->buckets = xcalloc(m->n_buckets, sizeof(*m->buckets));
    return m;
}

void strmap_free(struct strmap *m, void (*free_value)(void *value))
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        for (struct entry *e = m->buckets[i], *next; e; e = next) {
            next = e->next;
            if (free_value)
                free_value(e->value);
            free(e->key);
            free(e);
        }
    }
    free(m->buckets);
    free(m);
}

static struct entry **slot(const struct strmap *m, const char *key)
{
    struct entry **p = &m->buckets[hash(key) & (m->n_buckets - 1)];

    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->next;
    return p;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    struct entry *e = *slot(m, key);

    return e ? e->value : NULL;
}

/* Doubles the buckets and rehashes every entry into them. */
static void grow(struct strmap *m)
{
    size_t n = m->n_buckets * 2;
    struct entry **buckets = xcalloc(n, sizeof(*buckets));

    for (size_t i = 0; i < m->n_buckets; i++) {
        for (struct entry *e = m->buckets[i], *next; e; e = next) {
            struct entry **b = &buckets[hash(e->key) & (n - 1)];
            next = e->next;
            e->next = *b;
            *b = e;
        }
    }
    free(m->buckets);
    m->buckets = buckets;
    m->n_buckets = n;
}

void strmap_put(struct strmap *m, const char *key, void *value)
{
    struct entry **p = slot(m, key), *e;

    if (*p) {
        (*p)->value = value;
        return;
    }
    e = xcalloc(1, sizeof(*e));
    e->key = xstrdup(key);
    e->value = value;
    *p = e;
    if (++m->count > m->n_buckets)
        grow(m);
}

void *strmap_remove(struct strmap *m, const char *key)
{
    struct entry **p = slot(m, key), *e = *p;
    void *value;

    if (!e)
        return NULL;
    *p = e->next;
    value = e->value;
    free(e->key);
    free(e);
    m->count--;
    return value;
}

size_t strmap_count(const struct strmap *m)
{
    return m->count;
}
