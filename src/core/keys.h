/* API keys and roles (SPEC section 6). A key is "nanny_" and 64 lowercase hex digits (256
 * bits from getrandom); the keys file keeps, for each key, a name, a role and the key's
 * SHA-256 (nettle), never the key itself:
 *
 *     # Service Nanny API keys: names, roles and hashes (nanny keys add|ls|rm)
 *     keys:
 *       - name: alice
 *         role: admin
 *         hash: sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
 *
 * The file must be a regular file (not a symlink) that neither group nor others may read
 * or write (like ssh's keys), at most KEYS_FILE_MAX bytes. */
#ifndef NANNY_KEYS_H
#define NANNY_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEY_PREFIX     "nanny_"
#define KEY_PREFIX_LEN 6
#define KEY_LEN        (KEY_PREFIX_LEN + 64) /* characters of a key */
#define KEY_HASH_LEN   32                    /* SHA-256 */
#define KEY_NAME_MAX   64                    /* a name: [A-Za-z0-9._@-]{1,64} */
#define KEYS_FILE_MAX  (256 * 1024)
#define KEYS_MAX       4096

/* What a key may do; see role_allows(). */
enum role { ROLE_USER, ROLE_VIEWER, ROLE_OPERATOR, ROLE_ADMIN, ROLE_COUNT };

/* What a route needs (the gate's question). */
enum need {
    NEED_NOTHING, /* GET /health (shows less without a key) */
    NEED_USE,     /* the proxy and /v1/: user, operator, admin */
    NEED_READ,    /* every GET of the API: viewer, operator, admin */
    NEED_OPERATE, /* start, stop, restart: operator, admin */
    NEED_ADMIN,   /* everything else: rediscover, /audit, keys */
};

const char *role_name(enum role role);            /* "user", "viewer", ... */
int role_parse(const char *s, enum role *ret);    /* 0 or -EINVAL */
bool role_allows(enum role role, enum need need); /* the table of SPEC section 6 */

struct key_entry {
    char *name;
    enum role role;
    uint8_t hash[KEY_HASH_LEN];
};

struct keys {
    struct key_entry *items;
    size_t n;
    struct strmap *by_hash; /* the hex of each entry's hash -> its index + 1 (keys_find) */
};

/* True when key (len bytes, not NUL-terminated) has a key's form: the prefix, then 64
 * lowercase hex digits. */
bool key_well_formed(const char *key, size_t len);

/* True when name is a key's valid name: 1 to KEY_NAME_MAX of A-Z a-z 0-9 . _ @ -. */
bool key_name_valid(const char *name);

/* The SHA-256 of key. */
void key_hash(const char *key, size_t len, uint8_t out[KEY_HASH_LEN]);

/* A new key (KEY_LEN characters and a NUL) from getrandom(); 0 or a negative errno. */
int key_generate(char out[KEY_LEN + 1]);

/* The entry whose hash is key's, or NULL: the key is hashed (SHA-256, about a microsecond),
 * its hash looked up in an index of the entries' hashes (so that many keys cost no more
 * than one; the index holds hashes, never a key), and the entry found compared with it in
 * constant time (nettle's memeql_sec). */
const struct key_entry *keys_find(const struct keys *keys, const char *key, size_t len);

/* The entry named name, or NULL. */
const struct key_entry *keys_by_name(const struct keys *keys, const char *name);

/* Reads and checks a keys file (see the top of this file): opened with O_NOFOLLOW, one
 * read of the open file (a file replaced meanwhile is read whole, old or new), unique
 * names, known roles, well-formed hashes. An empty file or one with only comments is an
 * error; "keys: []" is zero keys (every request with a key is refused). On error returns
 * a negative errno (-ENOENT for a missing file) and writes a message into err:
 * "FILE: message" or "FILE:LINE: message". */
int keys_load(const char *path, struct keys **ret, char *err, size_t err_size);

/* The checks of keys_load() on the text of a keys file (path only names it in messages);
 * pure, so that it can be fuzzed. */
int keys_parse(const char *buf, size_t len, const char *path, struct keys **ret, char *err,
               size_t err_size);

/* Writes keys to path, replacing it atomically (a temporary file in the same folder,
 * mode 0600, fsync, rename). 0, or a negative errno with a message in err. */
int keys_save(const struct keys *keys, const char *path, char *err, size_t err_size);

/* Adds an entry (name copied); -EEXIST when the name is taken. */
int keys_add(struct keys *keys, const char *name, enum role role, const uint8_t hash[KEY_HASH_LEN]);

/* Removes the entry named name; -ENOENT when there is none. */
int keys_remove(struct keys *keys, const char *name);

/* An empty set (keys: []). */
struct keys *keys_new(void);
void keys_free(struct keys *keys);

#endif
