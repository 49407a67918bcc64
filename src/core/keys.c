/* API keys and roles: the keys file (read, checked, written), key hashing and lookup. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nettle/memops.h>
#include <nettle/sha2.h>

#include "core/keys.h"
#include "lib/alloc.h"
#include "lib/diags.h"
#include "lib/io.h"
#include "lib/strmap.h"
#include "lib/yamldoc.h"

#define HASH_PREFIX     "sha256:"
#define HASH_PREFIX_LEN 7

static const char *const role_names[ROLE_COUNT] = {
    [ROLE_USER] = "user",
    [ROLE_VIEWER] = "viewer",
    [ROLE_OPERATOR] = "operator",
    [ROLE_ADMIN] = "admin",
};

/* Writes n bytes as 2n lowercase hex digits and a NUL. */
static void to_hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    out[2 * n] = '\0';
}

const char *role_name(enum role role)
{
    return (unsigned)role < ROLE_COUNT ? role_names[role] : "unknown";
}

int role_parse(const char *s, enum role *ret)
{
    for (int r = 0; r < ROLE_COUNT; r++)
        if (strcmp(s, role_names[r]) == 0) {
            *ret = (enum role)r;
            return 0;
        }
    return -EINVAL;
}

bool role_allows(enum role role, enum need need)
{
    switch (need) {
    case NEED_NOTHING:
        return true;
    case NEED_USE:
        return role == ROLE_USER || role == ROLE_OPERATOR || role == ROLE_ADMIN;
    case NEED_READ:
        return role == ROLE_VIEWER || role == ROLE_OPERATOR || role == ROLE_ADMIN;
    case NEED_OPERATE:
        return role == ROLE_OPERATOR || role == ROLE_ADMIN;
    case NEED_ADMIN:
        return role == ROLE_ADMIN;
    }
    return false;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool key_well_formed(const char *key, size_t len)
{
    if (len != KEY_LEN || memcmp(key, KEY_PREFIX, KEY_PREFIX_LEN) != 0)
        return false;
    for (size_t i = KEY_PREFIX_LEN; i < len; i++)
        if (hex_value(key[i]) < 0)
            return false;
    return true;
}

bool key_name_valid(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > KEY_NAME_MAX)
        return false;
    return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@-") ==
           len;
}

void key_hash(const char *key, size_t len, uint8_t out[KEY_HASH_LEN])
{
    struct sha256_ctx ctx;

    sha256_init(&ctx);
    sha256_update(&ctx, len, (const uint8_t *)key);
    sha256_digest(&ctx, KEY_HASH_LEN, out);
}

int key_generate(char out[KEY_LEN + 1])
{
    uint8_t bytes[(KEY_LEN - KEY_PREFIX_LEN) / 2];
    size_t got = 0;

    while (got < sizeof(bytes)) {
        ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        got += (size_t)n;
    }
    memcpy(out, KEY_PREFIX, KEY_PREFIX_LEN);
    to_hex(bytes, sizeof(bytes), out + KEY_PREFIX_LEN);
    explicit_bzero(bytes, sizeof(bytes));
    return 0;
}

/* Adds entry i to the index of the entries' hashes (the first of two equal hashes wins). */
static void keys_index_add(struct keys *keys, size_t i)
{
    char hex[2 * KEY_HASH_LEN + 1];

    if (!keys->by_hash)
        keys->by_hash = strmap_new();
    to_hex(keys->items[i].hash, KEY_HASH_LEN, hex);
    if (!strmap_get(keys->by_hash, hex))
        strmap_put(keys->by_hash, hex, (void *)(uintptr_t)(i + 1));
}

/* Remakes the index (entries moved). */
static void keys_index(struct keys *keys)
{
    strmap_free(keys->by_hash, NULL);
    keys->by_hash = NULL;
    for (size_t i = 0; i < keys->n; i++)
        keys_index_add(keys, i);
}

const struct key_entry *keys_find(const struct keys *keys, const char *key, size_t len)
{
    uint8_t hash[KEY_HASH_LEN];
    char hex[2 * KEY_HASH_LEN + 1];
    uintptr_t at;

    key_hash(key, len, hash);
    to_hex(hash, KEY_HASH_LEN, hex);
    at = keys->by_hash ? (uintptr_t)strmap_get(keys->by_hash, hex) : 0;
    if (at == 0 || at > keys->n || !memeql_sec(hash, keys->items[at - 1].hash, KEY_HASH_LEN))
        return NULL;
    return &keys->items[at - 1];
}

const struct key_entry *keys_by_name(const struct keys *keys, const char *name)
{
    for (size_t i = 0; i < keys->n; i++)
        if (strcmp(keys->items[i].name, name) == 0)
            return &keys->items[i];
    return NULL;
}

struct keys *keys_new(void)
{
    return xcalloc(1, sizeof(struct keys));
}

void keys_free(struct keys *keys)
{
    if (!keys)
        return;
    for (size_t i = 0; i < keys->n; i++)
        free(keys->items[i].name);
    free(keys->items);
    strmap_free(keys->by_hash, NULL);
    free(keys);
}

int keys_add(struct keys *keys, const char *name, enum role role, const uint8_t hash[KEY_HASH_LEN])
{
    struct key_entry *e;

    if (keys_by_name(keys, name))
        return -EEXIST;
    if (keys->n >= KEYS_MAX)
        return -ENOSPC;
    keys->items = xrealloc(keys->items, (keys->n + 1) * sizeof(*keys->items));
    e = &keys->items[keys->n++];
    e->name = xstrdup(name);
    e->role = role;
    memcpy(e->hash, hash, KEY_HASH_LEN);
    keys_index_add(keys, keys->n - 1);
    return 0;
}

int keys_remove(struct keys *keys, const char *name)
{
    for (size_t i = 0; i < keys->n; i++) {
        if (strcmp(keys->items[i].name, name) != 0)
            continue;
        free(keys->items[i].name);
        memmove(&keys->items[i], &keys->items[i + 1], (keys->n - i - 1) * sizeof(*keys->items));
        keys->n--;
        keys_index(keys);
        return 0;
    }
    return -ENOENT;
}

static int fail(int r, char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int r, char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return r;
}

/* Reads "sha256:" and 64 lowercase hex digits into out. */
static int parse_hash(const char *s, uint8_t out[KEY_HASH_LEN])
{
    if (strncmp(s, HASH_PREFIX, HASH_PREFIX_LEN) != 0 ||
        strlen(s) != HASH_PREFIX_LEN + 2 * KEY_HASH_LEN)
        return -EINVAL;
    s += HASH_PREFIX_LEN;
    for (size_t i = 0; i < KEY_HASH_LEN; i++) {
        int high = hex_value(s[2 * i]), low = hex_value(s[2 * i + 1]);

        if (high < 0 || low < 0)
            return -EINVAL;
        out[i] = (uint8_t)(high << 4 | low);
    }
    return 0;
}

/* Reads one entry of the keys list into keys; problems go into errors. */
static void parse_entry(struct yamldoc *doc, yaml_node_t *node, size_t index, struct keys *keys,
                        int *lines, struct diags *errors)
{
    struct yamldoc_field fields[] = {{.key = "name"}, {.key = "role"}, {.key = "hash"}};
    char what[32], key[48];
    char *name = NULL, *role_text = NULL, *hash_text = NULL;
    uint8_t hash[KEY_HASH_LEN];
    enum role role = ROLE_USER;
    bool ok = true;

    snprintf(what, sizeof(what), "keys[%zu]", index);
    if (yamldoc_map_fields(doc, node, what, fields, 3, errors, errors) < 0)
        return;
    for (size_t f = 0; f < 3; f++)
        if (!fields[f].value) {
            diags_add(errors, yamldoc_line(node),
                      "%s: missing '%s' (each key has a name, a role and a hash)", what,
                      fields[f].key);
            ok = false;
        }
    if (!ok)
        return;

    snprintf(key, sizeof(key), "%s.name", what);
    if (yamldoc_read_string(doc, fields[0].value, key, &name, errors) < 0)
        ok = false;
    else if (!key_name_valid(name)) {
        diags_add(errors, yamldoc_line(fields[0].value),
                  "%s: '%.80s' is not a valid name: 1 to %d of the characters A-Z a-z 0-9 . _ @ -",
                  key, name, KEY_NAME_MAX);
        ok = false;
    } else {
        const struct key_entry *other = keys_by_name(keys, name);

        if (other) {
            diags_add(errors, yamldoc_line(fields[0].value),
                      "%s: the name '%s' is taken already (line %d): names must be unique", key,
                      name, lines[other - keys->items]);
            ok = false;
        }
    }

    snprintf(key, sizeof(key), "%s.role", what);
    if (yamldoc_read_string(doc, fields[1].value, key, &role_text, errors) < 0)
        ok = false;
    else if (role_parse(role_text, &role) < 0) {
        diags_add(errors, yamldoc_line(fields[1].value),
                  "%s: unknown role '%.80s' (the roles: user, viewer, operator, admin)", key,
                  role_text);
        ok = false;
    }

    snprintf(key, sizeof(key), "%s.hash", what);
    if (yamldoc_read_string(doc, fields[2].value, key, &hash_text, errors) < 0)
        ok = false;
    else if (parse_hash(hash_text, hash) < 0) {
        diags_add(errors, yamldoc_line(fields[2].value),
                  "%s: expected sha256:<64 lowercase hex digits>, the SHA-256 of the key "
                  "(nanny keys add writes it)",
                  key);
        ok = false;
    }

    if (ok) {
        lines[keys->n] = yamldoc_line(fields[0].value);
        keys_add(keys, name, role, hash);
    }
    free(name);
    free(role_text);
    free(hash_text);
}

/* Reads the document of a keys file into keys; problems go into errors. */
static void parse_keys(struct yamldoc *doc, struct keys *keys, struct diags *errors)
{
    struct yamldoc_field fields[] = {{.key = "keys"}};
    yaml_node_t *list;
    int *lines;
    size_t n;

    if (yamldoc_map_fields(doc, yamldoc_root(doc), "the keys file", fields, 1, errors, errors) < 0)
        return;
    list = fields[0].value;
    if (!list) {
        diags_add(errors, 1, "the keys file has no 'keys:' list (keys: [] for none)");
        return;
    }
    if (list->type != YAML_SEQUENCE_NODE) {
        diags_add(errors, yamldoc_line(list),
                  "keys: expected a list of entries {name, role, hash} (keys: [] for none)");
        return;
    }
    n = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
    if (n > KEYS_MAX) {
        diags_add(errors, yamldoc_line(list), "keys: more than %d keys", KEYS_MAX);
        return;
    }
    lines = xcalloc(n + 1, sizeof(*lines));
    for (size_t i = 0; i < n; i++)
        parse_entry(doc, yamldoc_node(doc, list->data.sequence.items.start[i]), i, keys, lines,
                    errors);
    free(lines);
}

int keys_load(const char *path, struct keys **ret, char *err, size_t err_size)
{
    struct stat st;
    char *buf;
    ssize_t n;
    int fd, r;

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ELOOP)
        return fail(-ELOOP, err, err_size, "%s: is a symbolic link; name the file itself", path);
    if (fd < 0)
        return fail(-errno, err, err_size, "%s: cannot open the keys file: %s", path,
                    strerror(errno));
    if (fstat(fd, &st) < 0) {
        r = -errno;
        close(fd);
        return fail(r, err, err_size, "%s: %s", path, strerror(-r));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(-EINVAL, err, err_size, "%s: the keys file is not a regular file", path);
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        return fail(-EPERM, err, err_size,
                    "%s: permissions %04o are too open: the keys file must not be readable or "
                    "writable by group or others (chmod 600 %s)",
                    path, (unsigned)(st.st_mode & 07777), path);
    }
    if (st.st_size > KEYS_FILE_MAX) {
        close(fd);
        return fail(-EFBIG, err, err_size, "%s: the keys file is larger than %d bytes", path,
                    KEYS_FILE_MAX);
    }
    /* One read, one byte more than allowed: a file that grew meanwhile is seen to. */
    buf = xmalloc(KEYS_FILE_MAX + 1);
    n = read(fd, buf, KEYS_FILE_MAX + 1);
    r = -errno;
    close(fd);
    if (n < 0) {
        free(buf);
        return fail(r, err, err_size, "%s: cannot read the keys file: %s", path, strerror(-r));
    }
    if (n > KEYS_FILE_MAX) {
        free(buf);
        return fail(-EFBIG, err, err_size, "%s: the keys file is larger than %d bytes", path,
                    KEYS_FILE_MAX);
    }

    r = keys_parse(buf, (size_t)n, path, ret, err, err_size);
    explicit_bzero(buf, (size_t)n);
    free(buf);
    return r;
}

int keys_parse(const char *buf, size_t len, const char *path, struct keys **ret, char *err,
               size_t err_size)
{
    struct diags errors = {0};
    struct yamldoc *doc = NULL;
    struct keys *keys = keys_new();
    int r = yamldoc_load(buf, len, &doc, &errors);

    if (r == -ENODATA) {
        r = fail(-EINVAL, err, err_size,
                 "%s: the keys file is empty (add a key with: nanny keys add NAME --role ROLE)",
                 path);
        goto done;
    }
    if (r == 0)
        parse_keys(doc, keys, &errors);
    if (errors.n > 0) {
        r = fail(-EINVAL, err, err_size, "%s:%d: %s", path, errors.items[0].line,
                 errors.items[0].message);
        goto done;
    }
    *ret = keys;
    keys = NULL;
    r = 0;

done:
    keys_free(keys);
    diags_clear(&errors);
    yamldoc_free(doc);
    return r;
}

/* The keys file's text. The caller frees it. */
static char *keys_format(const struct keys *keys)
{
    size_t size = 256 + keys->n * 256, len;
    char *text = xmalloc(size);

    len = (size_t)snprintf(text, size,
                           "# Service Nanny API keys: names, roles and hashes (nanny keys "
                           "add|ls|rm)\n"
                           "# Keep this file private (mode 0600); the daemon reads it on start "
                           "and on SIGHUP.\n"
                           "keys:%s\n",
                           keys->n == 0 ? " []" : "");
    for (size_t i = 0; i < keys->n; i++) {
        const struct key_entry *e = &keys->items[i];
        char hex[2 * KEY_HASH_LEN + 1];
        /* A name that starts with '@', '.' or '-' could read as YAML syntax: quoted. */
        bool quote = strchr("@.-", e->name[0]) != NULL;

        to_hex(e->hash, KEY_HASH_LEN, hex);
        len += (size_t)snprintf(
            text + len, size - len, "  - name: %s%s%s\n    role: %s\n    hash: " HASH_PREFIX "%s\n",
            quote ? "\"" : "", e->name, quote ? "\"" : "", role_name(e->role), hex);
    }
    return text;
}

/* mkdir -p with mode 0700 for the folders that are missing. */
static int make_folders(const char *path)
{
    char *copy = xstrdup(path);
    struct stat st;
    int r = 0;

    for (char *p = copy + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char end = *p;

        *p = '\0';
        if (mkdir(copy, 0700) < 0 && errno != EEXIST)
            r = -errno;
        else if (stat(copy, &st) < 0)
            r = -errno;
        else if (!S_ISDIR(st.st_mode))
            r = -ENOTDIR;
        *p = end;
        if (r < 0 || end == '\0')
            break;
    }
    free(copy);
    return r;
}

int keys_save(const struct keys *keys, const char *path, char *err, size_t err_size)
{
    const char *slash = strrchr(path, '/');
    char *folder =
        slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup(".");
    char *tmp = xasprintf("%s.XXXXXX", path);
    char *text = keys_format(keys);
    int fd = -1, r;

    r = make_folders(folder);
    if (r < 0) {
        fail(r, err, err_size, "%s: cannot create the folder: %s", folder, strerror(-r));
        goto done;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        r = fail(-errno, err, err_size, "%s: cannot create a file there: %s", folder,
                 strerror(errno));
        goto done;
    }
    r = fchmod(fd, 0600) < 0 ? -errno : write_all(fd, text, strlen(text));
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (r < 0) {
        fail(r, err, err_size, "%s: cannot write: %s", tmp, strerror(-r));
        goto fail_tmp;
    }
    if (close(fd) < 0) {
        fd = -1;
        r = fail(-errno, err, err_size, "%s: cannot write: %s", tmp, strerror(errno));
        goto fail_tmp;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        r = fail(-errno, err, err_size, "%s: cannot replace the keys file: %s", path,
                 strerror(errno));
        goto fail_tmp;
    }
    /* The rename itself lasts once the folder is on disk. */
    fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    fd = -1;
    r = 0;
    goto done;

fail_tmp:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
done:
    free(folder);
    free(tmp);
    free(text);
    return r;
}
