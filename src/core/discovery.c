/* Discovery: scans a services folder and parses every manifest in it. It keeps no global
 * state and logs nothing, so that it can run on a worker thread. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/discovery.h"
#include "core/driver.h"
#include "lib/alloc.h"
#include "lib/log.h"

/* Host ports are tracked per protocol: 8000/tcp and 8000/udp do not collide. */
#define PORT_SLOTS (2 * 65536)

/* Orders C strings for qsort() by their bytes, as strcmp() does. */
static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The rule on names alone, shared with the folder watcher so that both agree on what
 * can be a service. */
bool discovery_folder_is_candidate(const char *name)
{
    if (name[0] == '\0' || name[0] == '.' || name[0] == '_')
        return false;
    return text_printable(name, strlen(name));
}

/* True for a subfolder that may be a service: a directory, or a symlink to one, with a
 * name that discovery_folder_is_candidate() accepts. */
static bool is_candidate(int dir_fd, const struct dirent *de)
{
    struct stat st;

    if (!discovery_folder_is_candidate(de->d_name))
        return false;
    if (de->d_type == DT_DIR)
        return true;
    if (de->d_type != DT_LNK && de->d_type != DT_UNKNOWN)
        return false;
    return fstatat(dir_fd, de->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode);
}

/* Lists the candidate subfolders of root, sorted by name. */
static int list_folders(const char *root, char ***ret, size_t *ret_n, bool *ret_truncated)
{
    DIR *dir = opendir(root);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, capacity = 0;
    bool truncated = false;
    int r = 0;

    if (!dir)
        return -errno;
    for (;;) {
        errno = 0;
        de = readdir(dir);
        if (!de) {
            r = -errno;
            break;
        }
        if (!is_candidate(dirfd(dir), de))
            continue;
        if (n >= DISCOVERY_MAX_SERVICES) {
            truncated = true;
            break;
        }
        if (n == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            names = xrealloc(names, capacity * sizeof(*names));
        }
        names[n++] = xstrdup(de->d_name);
    }
    closedir(dir);
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return r;
    }
    if (n > 1)
        qsort(names, n, sizeof(*names), compare_strings);
    *ret = names;
    *ret_n = n;
    *ret_truncated = truncated;
    return 0;
}

/* Makes an entry broken: its manifest goes, its name stays for the error list. */
static void entry_reject(struct scan_entry *e)
{
    manifest_free(e->manifest);
    e->manifest = NULL;
}

/* A valid entry's name, and where the entry stands in the scan. */
struct name_ref {
    const char *name;
    size_t index;
    bool claimed; /* the folder a running service of this name runs from */
};

/* Orders by name, then a running service's folder first, then by entry index, so that
 * the first holder of a name sorts first. */
static int compare_name_refs(const void *a, const void *b)
{
    const struct name_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    if (c != 0)
        return c;
    if (x->claimed != y->claimed)
        return x->claimed ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* A name may appear once: every later folder (a running service's folder first, then by
 * name order) that repeats it is an error. Only valid manifests take part, so that a broken copy
 * never hides a working service. */
static void reject_duplicate_names(struct scan *s, const bool *claimed)
{
    struct name_ref *refs = xmalloc((s->n ? s->n : 1) * sizeof(*refs));
    size_t n = 0;

    for (size_t i = 0; i < s->n; i++) {
        if (s->entries[i].manifest)
            refs[n++] = (struct name_ref){s->entries[i].manifest->name, i, claimed[i]};
    }
    qsort(refs, n, sizeof(*refs), compare_name_refs);
    for (size_t j = 0, first = 0; j < n; j++) {
        /* Compare with the first holder of the name: it is kept, while refs[j - 1] may
         * have been rejected (and its name freed) on the previous pass. */
        if (j == 0 || strcmp(refs[j].name, refs[first].name) != 0) {
            first = j;
            continue;
        }

        struct scan_entry *e = &s->entries[refs[j].index];
        const char *owner = s->entries[refs[first].index].folder;
        char quoted_name[TEXT_QUOTE_MAX + 1], quoted_folder[TEXT_QUOTE_MAX + 1];

        text_quote(e->name, strlen(e->name), quoted_name, sizeof(quoted_name));
        text_quote(owner, strlen(owner), quoted_folder, sizeof(quoted_folder));
        diags_add(&e->errors, e->manifest->name_line,
                  "name %s is already used by the %sservice in folder %s: give this one "
                  "another name",
                  quoted_name, refs[first].claimed ? "running " : "", quoted_folder);
        entry_reject(e);
    }
    free(refs);
}

static int compare_claim_folder(const void *key, const void *elem)
{
    return strcmp(key, ((const struct discovery_claim *)elem)->folder);
}

static int compare_name_ref_names(const void *key, const void *elem)
{
    return strcmp(key, ((const struct name_ref *)elem)->name);
}

/* A valid manifest that takes a running service's name from another folder is the error
 * while the running service's folder still carries the name, its manifest valid or not, or
 * too broken to say a name (a typo there must not hand the name over): the running service
 * keeps its name whatever the folder order. */
static void reject_claimed_names(struct scan *s, const struct discovery_claim *claims,
                                 size_t n_claims)
{
    struct name_ref *held;
    size_t n = 0;

    if (n_claims == 0)
        return;
    held = xmalloc(n_claims * sizeof(*held));
    for (size_t i = 0; i < s->n; i++) {
        const struct discovery_claim *c =
            bsearch(s->entries[i].folder, claims, n_claims, sizeof(*claims), compare_claim_folder);
        /* A manifest too broken to say its name still says nothing else. */
        if (c && (!s->entries[i].name || strcmp(s->entries[i].name, c->name) == 0))
            held[n++] = (struct name_ref){c->name, i, true};
    }
    qsort(held, n, sizeof(*held), compare_name_refs);
    for (size_t i = 0; i < s->n && n > 0; i++) {
        struct scan_entry *e = &s->entries[i];
        const struct name_ref *owner;
        char quoted_name[TEXT_QUOTE_MAX + 1], quoted_folder[TEXT_QUOTE_MAX + 1];

        if (!e->manifest)
            continue;
        owner = bsearch(e->manifest->name, held, n, sizeof(*held), compare_name_ref_names);
        if (!owner || owner->index == i)
            continue;
        text_quote(e->name, strlen(e->name), quoted_name, sizeof(quoted_name));
        text_quote(s->entries[owner->index].folder, strlen(s->entries[owner->index].folder),
                   quoted_folder, sizeof(quoted_folder));
        diags_add(&e->errors, e->manifest->name_line,
                  "name %s is already used by the running service in folder %s: give this one "
                  "another name",
                  quoted_name, quoted_folder);
        entry_reject(e);
    }
    free(held);
}

/* Two services that their driver's backend would know by one name (compose drops '.'
 * from project names: `a.b` and `ab` would be one project, each service starting and
 * stopping the other's containers). The later folder is the error. */
static void reject_shared_instances(struct scan *s, const bool *claimed)
{
    struct name_ref *refs = xmalloc((s->n ? s->n : 1) * sizeof(*refs));
    size_t n = 0;

    for (size_t i = 0; i < s->n; i++) {
        const struct manifest *m = s->entries[i].manifest;
        const struct driver *d = m ? driver_for(m) : NULL;
        if (d && d->instance_key) {
            /* The driver's name first: keys of two drivers never clash. */
            char *key = d->instance_key(m->name);
            refs[n++] = (struct name_ref){xasprintf("%s\n%s", d->name, key), i, claimed[i]};
            free(key);
        }
    }
    qsort(refs, n, sizeof(*refs), compare_name_refs);
    for (size_t j = 0, first = 0; j < n; j++) {
        if (j == 0 || strcmp(refs[j].name, refs[first].name) != 0) {
            first = j;
            continue;
        }
        struct scan_entry *e = &s->entries[refs[j].index];
        const struct scan_entry *owner = &s->entries[refs[first].index];
        const struct driver *d = driver_for(e->manifest);
        char why[512];

        d->instance_clash(strchr(refs[j].name, '\n') + 1, owner->manifest->name, why, sizeof(why));
        diags_add(&e->errors, e->manifest->name_line, "%s", why);
        entry_reject(e);
    }
    for (size_t j = 0; j < n; j++)
        free((char *)refs[j].name);
    free(refs);
}

/* A host port belongs to the first valid service (running services' folders first, then
 * by folder name) that claims it; a later one claiming any of its ports is an error,
 * reported for each port it shares. */
static void reject_shared_ports(struct scan *s, const bool *claimed)
{
    uint32_t *owner = xcalloc(PORT_SLOTS, sizeof(*owner)); /* entry index + 1 */
    size_t *order = xmalloc((s->n ? s->n : 1) * sizeof(*order)), n = 0;

    for (size_t i = 0; i < s->n; i++)
        if (claimed[i])
            order[n++] = i;
    for (size_t i = 0; i < s->n; i++)
        if (!claimed[i])
            order[n++] = i;
    for (size_t j = 0; j < s->n; j++) {
        size_t i = order[j];
        struct scan_entry *e = &s->entries[i];
        bool shared = false;

        if (!e->manifest)
            continue;
        for (size_t k = 0; k < e->manifest->n_ports; k++) {
            const struct port_map *pm = &e->manifest->ports[k];
            uint32_t o = owner[(pm->udp ? 65536 : 0) + pm->host];
            char quoted_name[TEXT_QUOTE_MAX + 1], quoted_folder[TEXT_QUOTE_MAX + 1];

            if (o == 0 || o - 1 == i)
                continue;
            const struct scan_entry *other = &s->entries[o - 1];
            text_quote(other->name, strlen(other->name), quoted_name, sizeof(quoted_name));
            text_quote(other->folder, strlen(other->folder), quoted_folder, sizeof(quoted_folder));
            diags_add(&e->errors, pm->line,
                      "host port %u%s is already used by service %s (folder %s): pick another "
                      "host port",
                      pm->host, pm->udp ? "/udp" : "", quoted_name, quoted_folder);
            shared = true;
        }
        if (shared) {
            /* The entry was valid, so these are its only errors: cap them as a
             * manifest's own are. */
            diags_limit(&e->errors, 0, MANIFEST_ERRORS_MAX);
            entry_reject(e);
            continue;
        }
        for (size_t k = 0; k < e->manifest->n_ports; k++) {
            const struct port_map *pm = &e->manifest->ports[k];

            owner[(pm->udp ? 65536 : 0) + pm->host] = (uint32_t)i + 1;
        }
    }
    free(order);
    free(owner);
}

/* The text a manifest is compared by between scans: built here, on the worker thread,
 * so that the loop only compares strings. */
char *discovery_canonical_text(const struct manifest *m)
{
    json_t *j = manifest_to_json(m);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

    json_decref(j);
    if (!text)
        fatal("out of memory (manifest JSON)");
    return text;
}

/* Reads in folder-name order so that which of two clashing services wins never depends
 * on the order the filesystem lists them in. */
int discovery_read(const char *root, struct scan **ret)
{
    struct scan *s;
    char **folders = NULL;
    size_t n_folders = 0;
    bool truncated = false;
    int r;

    r = list_folders(root, &folders, &n_folders, &truncated);
    if (r < 0)
        return r;

    /* "services/" and "services" give the same paths. */
    size_t root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/')
        root_len--;

    s = xcalloc(1, sizeof(*s));
    s->truncated = truncated;
    s->entries = xcalloc(n_folders ? n_folders : 1, sizeof(*s->entries));
    for (size_t i = 0; i < n_folders; i++) {
        char *path = xasprintf("%.*s/%s/%s", (int)root_len, root, folders[i], MANIFEST_FILE_NAME);
        struct scan_entry *e;
        struct stat st;

        if (lstat(path, &st) < 0 && (errno == ENOENT || errno == ENOTDIR)) {
            free(path);
            free(folders[i]);
            continue;
        }
        e = &s->entries[s->n++];
        e->folder = folders[i];
        e->path = path;
        manifest_load(path, root, &e->manifest, &e->name, &e->errors, &e->warnings);
    }
    free(folders);
    *ret = s;
    return 0;
}

/* The cross-manifest rules run on the whole read, so that each sees every valid
 * manifest; only the survivors get a canonical text. */
int discovery_scan_claimed(const char *root, const struct discovery_claim *claims, size_t n_claims,
                           struct scan **ret)
{
    struct scan *s;
    bool *claimed;
    int r;

    r = discovery_read(root, &s);
    if (r < 0)
        return r;
    claimed = xcalloc(s->n ? s->n : 1, sizeof(*claimed));
    for (size_t i = 0; i < s->n && n_claims > 0; i++) {
        const struct discovery_claim *c =
            bsearch(s->entries[i].folder, claims, n_claims, sizeof(*claims), compare_claim_folder);
        claimed[i] =
            c && s->entries[i].manifest && strcmp(s->entries[i].manifest->name, c->name) == 0;
    }
    reject_claimed_names(s, claims, n_claims);
    reject_duplicate_names(s, claimed);
    reject_shared_instances(s, claimed);
    reject_shared_ports(s, claimed);
    free(claimed);
    for (size_t i = 0; i < s->n; i++) {
        if (s->entries[i].manifest)
            s->entries[i].canonical = discovery_canonical_text(s->entries[i].manifest);
    }
    *ret = s;
    return 0;
}

int discovery_scan(const char *root, struct scan **ret)
{
    return discovery_scan_claimed(root, NULL, 0, ret);
}

/* Frees every entry's folder, path, manifest, texts and diagnostics, then the scan. */
void discovery_scan_free(struct scan *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        struct scan_entry *e = &s->entries[i];

        free(e->folder);
        free(e->path);
        manifest_free(e->manifest);
        free(e->canonical);
        free(e->name);
        diags_clear(&e->errors);
        diags_clear(&e->warnings);
    }
    free(s->entries);
    free(s);
}
