/* A small layer over libyaml's document API for files people write by hand (service.yaml,
 * the daemon's config file): loading with clear errors, mapping iteration that rejects
 * duplicate keys, and typed readers whose errors name the key, the line and the type that
 * was expected. Problems are reported into a struct diags, never logged. */
#ifndef NANNY_YAMLDOC_H
#define NANNY_YAMLDOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yaml.h>

#include "lib/alloc.h"
#include "lib/diags.h"
#include "lib/text.h"

/* Limits on what a file may hold, far above what a person writes: beyond them libyaml
 * turns slow (see yamldoc_load()). */
#define YAMLDOC_DEPTH_MAX      64  /* nesting of lists and mappings */
#define YAMLDOC_ANCHORS_MAX    256 /* &anchors */
#define YAMLDOC_DIRECTIVES_MAX 16  /* %TAG directives, and "---" document starts */

/* A loaded YAML document holding exactly one node tree. Opaque. */
struct yamldoc;

/* Parses buf (len bytes, need not be NUL-terminated) as exactly one YAML document. On
 * failure adds one error (a syntax error with its line and libyaml's text, a limit above
 * passed, or more than one document) and returns -EINVAL; for a document with no
 * content (only blanks or comments) it adds an error and returns -ENODATA, so that a
 * caller for whom that is fine can tell. */
int yamldoc_load(const char *buf, size_t len, struct yamldoc **ret, struct diags *errors);

void yamldoc_free(struct yamldoc *doc);

/* The root node; never NULL for a loaded document. */
yaml_node_t *yamldoc_root(struct yamldoc *doc);

/* The node with this id (from a sequence item or a mapping pair), or NULL. */
yaml_node_t *yamldoc_node(struct yamldoc *doc, yaml_node_item_t id);

/* The 1-based line where node starts. */
int yamldoc_line(const yaml_node_t *node);

/* The scalar's text, or NULL when node is not a scalar. */
const char *yamldoc_scalar(const yaml_node_t *node);

/* True for a scalar written without quotes (only those can be booleans or numbers). */
bool yamldoc_is_plain(const yaml_node_t *node);

/* True for a plain scalar that YAML reads as null: nothing, ~ or null, in any case. */
bool yamldoc_is_null(const yaml_node_t *node);

/* True for a plain scalar that YAML reads as false: false, no or off, in any case. */
bool yamldoc_is_false(const yaml_node_t *node);

/* Describes node for a message: a quoted scalar, "nothing", "a list" or "a mapping".
 * Same buffer rules as yamldoc_quote(). */
void yamldoc_describe(const yaml_node_t *node, char *buf, size_t size);

/* Iteration over a mapping in document order. Keys that are not scalars and repeated keys
 * are reported into errors and skipped:
 *
 *     struct yamldoc_iter it;
 *     yamldoc_iter_begin(&it, doc, node, errors);
 *     while (yamldoc_iter_next(&it, &key, &key_line, &value))
 *         ...;
 *     r = yamldoc_iter_end(&it);
 *
 * The caller has checked that node is a mapping. Fields are private. */
struct yamldoc_iter {
    struct yamldoc *doc;
    yaml_node_t *map;
    size_t index;
    size_t n;
    size_t *first; /* per pair: index of the first pair with the same key */
    struct diags *errors;
    bool failed;
};

void yamldoc_iter_begin(struct yamldoc_iter *it, struct yamldoc *doc, yaml_node_t *map,
                        struct diags *errors);
bool yamldoc_iter_next(struct yamldoc_iter *it, const char **ret_key, int *ret_line,
                       yaml_node_t **ret_value);
/* Frees the iterator; -EINVAL when a bad or repeated key was reported, else 0. */
int yamldoc_iter_end(struct yamldoc_iter *it);

/* One key a mapping may hold, for yamldoc_map_fields(). */
struct yamldoc_field {
    const char *key;
    yaml_node_t *value; /* set when the key is present, else NULL */
    int line;           /* the key's line when present */
};

/* Fills fields from the mapping node named what (for messages: "the manifest",
 * "health"). A key not in fields is reported into unknown (errors or warnings, the
 * caller's choice; NULL to ignore) with the list of known keys. Returns -EINVAL when
 * node is not a mapping or a bad or repeated key was reported; fields are filled
 * as far as possible all the same, so that the caller can go on and find more
 * problems. */
int yamldoc_map_fields(struct yamldoc *doc, yaml_node_t *node, const char *what,
                       struct yamldoc_field *fields, size_t n_fields, struct diags *errors,
                       struct diags *unknown);

/* Typed readers of a value node. key names the value in messages ("health.port",
 * "ports[2]"). On a wrong type or value they add an error naming the key, at the node's
 * line, saying what was expected, and return -EINVAL. */

/* Any scalar, as written; a scalar holding a NUL character is refused. The caller frees
 * *ret. */
int yamldoc_read_string(struct yamldoc *doc, yaml_node_t *node, const char *key, char **ret,
                        struct diags *errors);

/* A plain true/false/yes/no/on/off in any case; a quoted "true" is a string. */
int yamldoc_read_bool(struct yamldoc *doc, yaml_node_t *node, const char *key, bool *ret,
                      struct diags *errors);

/* A plain decimal integer from min to max. */
int yamldoc_read_uint(struct yamldoc *doc, yaml_node_t *node, const char *key, uint64_t min,
                      uint64_t max, uint64_t *ret, struct diags *errors);

/* A duration as units_parse_duration() reads it, in milliseconds. */
int yamldoc_read_duration(struct yamldoc *doc, yaml_node_t *node, const char *key, uint64_t *ret_ms,
                          struct diags *errors);

/* A size in bytes as units_parse_size() reads it ("12GiB"). */
int yamldoc_read_size(struct yamldoc *doc, yaml_node_t *node, const char *key, uint64_t *ret,
                      struct diags *errors);

/* A list of at most max scalars, as a NULL-terminated array that the caller frees with
 * strv_free(); *ret_n gets the count. Every bad item is reported. */
int yamldoc_read_strings(struct yamldoc *doc, yaml_node_t *node, const char *key, size_t max,
                         char ***ret, size_t *ret_n, struct diags *errors);

#endif
