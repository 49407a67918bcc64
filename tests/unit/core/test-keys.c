/* Unit tests for API keys: hashing, generation, lookup, roles and the keys file. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/keys.h"
#include "lib/alloc.h"

#define HASH_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static char err[1024];
static char dir[64];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/nanny-keys-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    char *cmd = xasprintf("rm -rf '%s'", dir);

    assert_int_equal(system(cmd), 0);
    free(cmd);
    return 0;
}

/* Writes text to dir/name with mode; returns the path (the caller frees it). */
static char *write_file(const char *name, const char *text, mode_t mode)
{
    char *path = xasprintf("%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

/* Loads text as a keys file (mode 0600); returns keys_load()'s result, err its message. */
static int load_text(const char *text, struct keys **ret)
{
    char *path = write_file("keys.yaml", text, 0600);
    int r;

    err[0] = '\0';
    r = keys_load(path, ret, err, sizeof(err));
    free(path);
    return r;
}

/* Asserts that text is refused with a message holding want. */
static void assert_refused(const char *text, const char *want)
{
    struct keys *keys = NULL;

    assert_true(load_text(text, &keys) < 0);
    assert_null(keys);
    if (!strstr(err, want))
        fail_msg("message '%s' does not hold '%s'", err, want);
}

static void hex(const uint8_t hash[KEY_HASH_LEN], char out[2 * KEY_HASH_LEN + 1])
{
    for (int i = 0; i < KEY_HASH_LEN; i++)
        sprintf(out + 2 * i, "%02x", hash[i]);
}

static void test_hash(void **state)
{
    uint8_t hash[KEY_HASH_LEN];
    char text[2 * KEY_HASH_LEN + 1];

    key_hash("abc", 3, hash);
    hex(hash, text);
    assert_string_equal(text, HASH_ABC);
    key_hash("password", 8, hash);
    hex(hash, text);
    assert_string_equal(text, "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8");
}

static void test_generate(void **state)
{
    char a[KEY_LEN + 1], b[KEY_LEN + 1];

    assert_int_equal(key_generate(a), 0);
    assert_int_equal(key_generate(b), 0);
    assert_int_equal(strlen(a), KEY_LEN);
    assert_memory_equal(a, "nanny_", 6);
    assert_int_equal(strspn(a + 6, "0123456789abcdef"), 64);
    assert_true(key_well_formed(a, strlen(a)));
    assert_string_not_equal(a, b);
}

static void test_well_formed(void **state)
{
    char key[KEY_LEN + 2];

    memset(key, 'a', sizeof(key));
    memcpy(key, "nanny_", 6);
    key[KEY_LEN] = '\0';
    assert_true(key_well_formed(key, KEY_LEN));
    assert_false(key_well_formed(key, KEY_LEN - 1)); /* short */
    key[KEY_LEN] = 'a';
    assert_false(key_well_formed(key, KEY_LEN + 1)); /* long */
    key[10] = 'A';
    assert_false(key_well_formed(key, KEY_LEN)); /* uppercase */
    key[10] = 'g';
    assert_false(key_well_formed(key, KEY_LEN)); /* not hex */
    key[10] = 'a';
    key[0] = 'N';
    assert_false(key_well_formed(key, KEY_LEN)); /* prefix */
    assert_false(key_well_formed(key + 6, 64));  /* no prefix at all */
    assert_false(key_well_formed("", 0));
}

static void test_name_valid(void **state)
{
    char longest[KEY_NAME_MAX + 2];

    assert_true(key_name_valid("alice"));
    assert_true(key_name_valid("ci.bot_1@host-a"));
    assert_false(key_name_valid(""));
    assert_false(key_name_valid("a b"));
    assert_false(key_name_valid("a/b"));
    assert_false(key_name_valid("é"));
    memset(longest, 'x', sizeof(longest));
    longest[KEY_NAME_MAX] = '\0';
    assert_true(key_name_valid(longest));
    longest[KEY_NAME_MAX] = 'x';
    longest[KEY_NAME_MAX + 1] = '\0';
    assert_false(key_name_valid(longest));
}

static void test_find(void **state)
{
    struct keys *keys = keys_new();
    char a[KEY_LEN + 1], b[KEY_LEN + 1], c[KEY_LEN + 1];
    uint8_t hash[KEY_HASH_LEN];

    assert_null(keys_find(keys, "nanny_x", 7)); /* zero keys */
    assert_int_equal(key_generate(a), 0);
    assert_int_equal(key_generate(b), 0);
    assert_int_equal(key_generate(c), 0);
    key_hash(a, KEY_LEN, hash);
    assert_int_equal(keys_add(keys, "alice", ROLE_ADMIN, hash), 0);
    key_hash(b, KEY_LEN, hash);
    assert_int_equal(keys_add(keys, "bob", ROLE_VIEWER, hash), 0);
    assert_int_equal(keys_add(keys, "bob", ROLE_USER, hash), -EEXIST);

    assert_string_equal(keys_find(keys, a, KEY_LEN)->name, "alice");
    assert_string_equal(keys_find(keys, b, KEY_LEN)->name, "bob");
    assert_int_equal(keys_find(keys, b, KEY_LEN)->role, ROLE_VIEWER);
    assert_null(keys_find(keys, c, KEY_LEN));
    assert_null(keys_find(keys, a, KEY_LEN - 1));
    assert_string_equal(keys_by_name(keys, "bob")->name, "bob");
    assert_null(keys_by_name(keys, "carol"));

    assert_int_equal(keys_remove(keys, "alice"), 0);
    assert_int_equal(keys_remove(keys, "alice"), -ENOENT);
    assert_null(keys_find(keys, a, KEY_LEN));
    assert_string_equal(keys_find(keys, b, KEY_LEN)->name, "bob");
    keys_free(keys);
}

/* As many keys as a file may hold: each found by its key, through the index of hashes,
 * also after entries before it were removed. */
static void test_find_many(void **state)
{
    static char all[KEYS_MAX][KEY_LEN + 1];
    struct keys *keys = keys_new();
    uint8_t hash[KEY_HASH_LEN];
    char name[32];

    for (size_t i = 0; i < KEYS_MAX; i++) {
        assert_int_equal(key_generate(all[i]), 0);
        key_hash(all[i], KEY_LEN, hash);
        snprintf(name, sizeof(name), "k%zu", i);
        assert_int_equal(keys_add(keys, name, (enum role)(i % ROLE_COUNT), hash), 0);
    }
    assert_int_equal(keys_add(keys, "one-more", ROLE_USER, hash), -ENOSPC);
    for (size_t i = 0; i < KEYS_MAX; i++) {
        snprintf(name, sizeof(name), "k%zu", i);
        assert_string_equal(keys_find(keys, all[i], KEY_LEN)->name, name);
    }
    for (size_t i = 0; i < 64; i += 2) {
        snprintf(name, sizeof(name), "k%zu", i);
        assert_int_equal(keys_remove(keys, name), 0);
    }
    for (size_t i = 0; i < KEYS_MAX; i++) {
        const struct key_entry *e = keys_find(keys, all[i], KEY_LEN);
        snprintf(name, sizeof(name), "k%zu", i);
        if (i < 64 && i % 2 == 0) {
            assert_null(e);
        } else {
            assert_non_null(e);
            assert_string_equal(e->name, name);
            assert_int_equal(e->role, (enum role)(i % ROLE_COUNT));
        }
    }
    keys_free(keys);
}

static void test_roles(void **state)
{
    enum role role;
    /* SPEC section 6: rows are roles, columns NOTHING, USE, READ, OPERATE, ADMIN. */
    static const bool table[ROLE_COUNT][5] = {
        [ROLE_USER] = {true, true, false, false, false},
        [ROLE_VIEWER] = {true, false, true, false, false},
        [ROLE_OPERATOR] = {true, true, true, true, false},
        [ROLE_ADMIN] = {true, true, true, true, true},
    };

    for (int r = 0; r < ROLE_COUNT; r++)
        for (int n = NEED_NOTHING; n <= NEED_ADMIN; n++)
            if (role_allows((enum role)r, (enum need)n) != table[r][n])
                fail_msg("role %s, need %d", role_name((enum role)r), n);

    for (int r = 0; r < ROLE_COUNT; r++) {
        assert_int_equal(role_parse(role_name((enum role)r), &role), 0);
        assert_int_equal(role, r);
    }
    assert_string_equal(role_name(ROLE_OPERATOR), "operator");
    assert_int_equal(role_parse("root", &role), -EINVAL);
    assert_int_equal(role_parse("Admin", &role), -EINVAL);
}

static void test_load(void **state)
{
    struct keys *keys = NULL;
    uint8_t hash[KEY_HASH_LEN];

    assert_int_equal(load_text("# a comment\n"
                               "keys:\n"
                               "  - name: alice\n"
                               "    role: admin\n"
                               "    hash: sha256:" HASH_ABC "\n"
                               "  - name: \"@ci\"\n"
                               "    role: user\n"
                               "    hash: sha256:" HASH_ABC "\n",
                               &keys),
                     0);
    assert_int_equal(keys->n, 2);
    assert_string_equal(keys->items[0].name, "alice");
    assert_int_equal(keys->items[0].role, ROLE_ADMIN);
    assert_string_equal(keys->items[1].name, "@ci");
    assert_int_equal(keys->items[1].role, ROLE_USER);
    key_hash("abc", 3, hash);
    assert_memory_equal(keys->items[0].hash, hash, KEY_HASH_LEN);
    assert_string_equal(keys_find(keys, "abc", 3)->name, "alice");
    keys_free(keys);

    keys = NULL;
    assert_int_equal(load_text("keys: []\n", &keys), 0);
    assert_int_equal(keys->n, 0);
    keys_free(keys);
}

static void test_load_refused_file(void **state)
{
    struct keys *keys = NULL;
    char *path = write_file("real.yaml", "keys: []\n", 0600);
    char *link = xasprintf("%s/link.yaml", dir);
    char *big;

    /* A symbolic link, even to a good file. */
    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(keys_load(link, &keys, err, sizeof(err)), -ELOOP);
    assert_non_null(strstr(err, "is a symbolic link; name the file itself"));
    assert_null(keys);

    /* Open to others, or to the group. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(keys_load(path, &keys, err, sizeof(err)), -EPERM);
    assert_non_null(strstr(err, "permissions 0644 are too open"));
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(keys_load(path, &keys, err, sizeof(err)), -EPERM);
    assert_non_null(strstr(err, "permissions 0640 are too open"));
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(keys_load(path, &keys, err, sizeof(err)), 0);
    keys_free(keys);
    keys = NULL;

    /* Missing, and a folder. */
    free(link);
    link = xasprintf("%s/none.yaml", dir);
    assert_int_equal(keys_load(link, &keys, err, sizeof(err)), -ENOENT);
    assert_true(keys_load(dir, &keys, err, sizeof(err)) < 0);
    assert_null(keys);

    /* 1 MiB. */
    big = xmalloc(1024 * 1024 + 1);
    memset(big, '#', 1024 * 1024);
    big[1024 * 1024] = '\0';
    free(path);
    path = write_file("big.yaml", big, 0600);
    assert_int_equal(keys_load(path, &keys, err, sizeof(err)), -EFBIG);
    assert_non_null(strstr(err, "larger than"));
    assert_null(keys);

    free(big);
    free(path);
    free(link);
}

static void test_load_refused_content(void **state)
{
    const char *entry = "keys:\n"
                        "  - name: alice\n"
                        "    role: admin\n"
                        "    hash: sha256:" HASH_ABC "\n";
    char *path = xasprintf("%s/keys.yaml", dir);
    char want[256];

    assert_refused("", "the keys file is empty (add a key with: nanny keys add NAME --role ROLE)");
    assert_refused("# only\n\n# comments\n", "the keys file is empty");
    assert_refused("keys:\n  - name: alice\n    role: admin: x\n",
                   "keys.yaml:3: YAML syntax error");
    assert_refused("keys:\n"
                   "  - name: alice\n"
                   "    role: root\n"
                   "    hash: sha256:" HASH_ABC "\n",
                   "keys.yaml:3: keys[0].role: unknown role 'root' (the roles: user, viewer, "
                   "operator, admin)");
    assert_refused("keys:\n"
                   "  - name: alice\n"
                   "    role: admin\n"
                   "    hash: " HASH_ABC "\n",
                   "keys.yaml:4: keys[0].hash: expected sha256:<64 lowercase hex digits>");
    assert_refused("keys:\n"
                   "  - name: alice\n"
                   "    role: admin\n"
                   "    hash: sha256:abc\n",
                   "keys.yaml:4:");
    assert_refused(
        "keys:\n"
        "  - name: alice\n"
        "    role: admin\n"
        "    hash: sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\n",
        "keys.yaml:4:");
    assert_refused("keys:\n"
                   "  - name: alice\n"
                   "    role: admin\n"
                   "    hash: sha256:" HASH_ABC "\n"
                   "  - name: alice\n"
                   "    role: user\n"
                   "    hash: sha256:" HASH_ABC "\n",
                   "keys.yaml:5: keys[1].name: the name 'alice' is taken already (line 2)");
    assert_refused("keys:\n"
                   "  - name: alice\n"
                   "    hash: sha256:" HASH_ABC "\n",
                   "keys.yaml:2: keys[0]: missing 'role'");
    assert_refused("keys:\n"
                   "  - name: a b\n"
                   "    role: admin\n"
                   "    hash: sha256:" HASH_ABC "\n",
                   "keys.yaml:2: keys[0].name: 'a b' is not a valid name");
    assert_refused("keys:\n"
                   "  - name: alice\n"
                   "    role: admin\n"
                   "    key: nanny_abc\n"
                   "    hash: sha256:" HASH_ABC "\n",
                   "keys.yaml:4: unknown key \"key\" in keys[0]");
    assert_refused("keys: alice\n", "keys.yaml:1: keys: expected a list");
    assert_refused("users: []\n", "keys.yaml:1: unknown key \"users\"");
    assert_refused("- alice\n", "keys.yaml:1:");

    /* The path leads every message. */
    snprintf(want, sizeof(want), "%s:3: ", path);
    assert_refused("keys:\n"
                   "  - name: alice\n"
                   "    role: root\n"
                   "    hash: sha256:" HASH_ABC "\n",
                   want);
    {
        struct keys *keys = NULL;

        assert_int_equal(load_text(entry, &keys), 0); /* and the same file, good, is read */
        keys_free(keys);
    }
    free(path);
}

static void test_save_load(void **state)
{
    struct keys *keys = keys_new(), *back = NULL;
    char *path = xasprintf("%s/new/sub/keys.yaml", dir);
    char *folder = xasprintf("%s/new/sub", dir);
    char key[KEY_LEN + 1], buf[4096];
    uint8_t hash[KEY_HASH_LEN];
    struct stat st;
    ssize_t n;
    int fd;

    assert_int_equal(key_generate(key), 0);
    key_hash(key, KEY_LEN, hash);
    assert_int_equal(keys_add(keys, "alice", ROLE_ADMIN, hash), 0);
    assert_int_equal(keys_add(keys, "@ci", ROLE_USER, hash), 0);
    assert_int_equal(keys_add(keys, "-", ROLE_OPERATOR, hash), 0);
    assert_int_equal(keys_add(keys, ".x", ROLE_VIEWER, hash), 0);
    assert_int_equal(keys_save(keys, path, err, sizeof(err)), 0);

    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(folder, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    fd = open(path, O_RDONLY);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_memory_equal(buf, "# ", 2);
    assert_null(strstr(buf, key));

    assert_int_equal(keys_load(path, &back, err, sizeof(err)), 0);
    assert_int_equal(back->n, 4);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(back->items[i].name, keys->items[i].name);
        assert_int_equal(back->items[i].role, keys->items[i].role);
        assert_memory_equal(back->items[i].hash, hash, KEY_HASH_LEN);
    }
    assert_string_equal(keys_find(back, key, KEY_LEN)->name, "alice");
    keys_free(back);

    /* Down to none: "keys: []", read back as zero keys; no temporary file left. */
    for (size_t i = keys->n; i > 0; i--)
        assert_int_equal(keys_remove(keys, keys->items[i - 1].name), 0);
    assert_int_equal(keys_save(keys, path, err, sizeof(err)), 0);
    back = NULL;
    assert_int_equal(keys_load(path, &back, err, sizeof(err)), 0);
    assert_int_equal(back->n, 0);
    keys_free(back);
    snprintf(buf, sizeof(buf), "test \"$(ls -A '%s')\" = keys.yaml", folder);
    assert_int_equal(system(buf), 0);

    keys_free(keys);
    free(path);
    free(folder);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_well_formed),
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_find_many),
        cmocka_unit_test(test_roles),
        cmocka_unit_test_setup_teardown(test_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refused_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refused_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_load, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
