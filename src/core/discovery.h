/* Discovery: scans a services folder and parses every manifest in it. Touches no
 * daemon state, so it may run on a worker thread. */
#ifndef NANNY_DISCOVERY_H
#define NANNY_DISCOVERY_H

#include "core/manifest.h"

#define DISCOVERY_MAX_SERVICES 100000

/* One subfolder that holds a service.yaml. */
struct scan_entry {
    char *folder;              /* the subfolder's name */
    char *path;                /* the manifest's path, as found under root */
    struct manifest *manifest; /* NULL when the manifest is broken */
    char *canonical;           /* manifest_to_json() as compact JSON with sorted keys, to
                                  tell a changed manifest with strcmp(); NULL when broken */
    char *name;                /* the name read from it, or NULL; set even when broken */
    struct diags errors;       /* empty when manifest != NULL */
    struct diags warnings;
};

struct scan {
    struct scan_entry *entries; /* sorted by folder name */
    size_t n;
    bool truncated; /* root has more than DISCOVERY_MAX_SERVICES subfolders: some unread */
};

/* Scans root: every direct subfolder whose name passes discovery_folder_is_candidate()
 * and that holds a service.yaml. Cross-manifest rules (duplicate names, two services on
 * one host port) make the later folder (by name order) an error; only valid manifests take
 * part, so a broken copy hides nothing. Each entry reports at most MANIFEST_ERRORS_MAX
 * errors and a last "... and N more problems". Returns -errno when root cannot be read. */
int discovery_scan(const char *root, struct scan **ret);

/* A name a running service holds, and the folder it runs from. */
struct discovery_claim {
    const char *name;
    const char *folder;
};

/* discovery_scan(), where the folders of the claims (sorted by folder, strcmp) come first
 * in every cross-manifest rule when their manifest still carries the claimed name: a new
 * folder that takes the name (or a host port) of a running service is the error, whatever
 * the folder order. */
int discovery_scan_claimed(const char *root, const struct discovery_claim *claims, size_t n_claims,
                           struct scan **ret);

/* Reads root as discovery_scan() does (the same folders, each manifest checked on its
 * own) but applies no cross-manifest rule and makes no canonical text: every valid
 * manifest stays, clashing or not, and canonical is NULL. For a caller that wants to know
 * what the folders claim (nanny new), not which services run. Returns -errno when root
 * cannot be read. */
int discovery_read(const char *root, struct scan **ret);

/* Frees the scan and whatever its entries still own: a caller may take an entry's
 * manifest or canonical text first by setting the pointer to NULL. */
void discovery_scan_free(struct scan *s);

/* The canonical text of a manifest, as a scan makes it for scan_entry.canonical. New
 * string. */
char *discovery_canonical_text(const struct manifest *m);

/* True for a subfolder name that can be a service: not starting with '_' or '.', and
 * printable UTF-8 (a name that is not could be neither shown in an error nor sent as JSON). */
bool discovery_folder_is_candidate(const char *name);

#endif
