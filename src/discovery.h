/* Discovery: scans a services folder and parses every manifest in it. Touches no
 * daemon state, so it may run on a worker thread. */
#ifndef NANNY_DISCOVERY_H
#define NANNY_DISCOVERY_H

#include "manifest.h"

#define DISCOVERY_MAX_SERVICES 100000

/* One subfolder that holds a service.yaml. */
struct scan_entry {
    char *folder;              /* the subfolder's name */
    char *path;                /* the manifest's path, as found under root */
    struct manifest *manifest; /* NULL when the manifest is broken */
    char *name;                /* the name read from it, or NULL; set even when broken */
    struct diags errors;       /* empty when manifest != NULL */
    struct diags warnings;
};

struct scan {
    struct scan_entry *entries; /* sorted by folder name */
    size_t n;
    bool truncated; /* root has more than DISCOVERY_MAX_SERVICES subfolders: some unread */
};

/* Scans root: every direct subfolder not starting with '_' or '.' that holds a
 * service.yaml (folder names that are not printable UTF-8 are skipped). Cross-manifest
 * rules (duplicate names, two services on one host port) make the later folder (by name
 * order) an error; only valid manifests take part, so a broken copy hides nothing.
 * Returns -errno when root cannot be read. */
int discovery_scan(const char *root, struct scan **ret);

void scan_free(struct scan *s);

#endif
