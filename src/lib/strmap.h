/* A map from strings to pointers: a hash table with chaining that grows with its
 * entries. It owns copies of its keys, never its values. */
#ifndef NANNY_STRMAP_H
#define NANNY_STRMAP_H

#include <stddef.h>

struct strmap;

struct strmap *strmap_new(void);
/* Frees the map; free_value (when not NULL) is called on every value first. */
void strmap_free(struct strmap *m, void (*free_value)(void *value));

/* The value of key, or NULL. */
void *strmap_get(const struct strmap *m, const char *key);
/* Sets key to value (not NULL), replacing any earlier value. */
void strmap_put(struct strmap *m, const char *key, void *value);
/* Removes key; returns its value, or NULL when it had none. */
void *strmap_remove(struct strmap *m, const char *key);
size_t strmap_count(const struct strmap *m);

#endif
