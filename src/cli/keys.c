/* nanny keys add|ls|rm: the keys file, edited from the command line. Without --keys the
 * file is the one the daemon reads by default, found the same way (config_load()). */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cli/keys.h"
#include "core/config.h"
#include "core/keys.h"
#include "lib/alloc.h"

enum {
    OPT_ROLE = 'r',
    OPT_KEYS = 'k',
    OPT_CONFIG = 'c',
    OPT_HELP = 'h',
    OPT_STATE_DIR = 256,
    OPT_JSON,
};

static const struct option keys_options[] = {
    {"role", required_argument, NULL, OPT_ROLE},
    {"keys", required_argument, NULL, OPT_KEYS},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {0},
};

/* What the command line asked for. */
struct keys_args {
    const char *command; /* add, ls, rm */
    const char *name;
    const char *role;
    const char *keys_file;
    const char *config_file;
    const char *state_dir;
    bool json;
};

static void keys_usage(FILE *out)
{
    fprintf(out,
            "usage: nanny keys add NAME --role user|viewer|operator|admin [options]\n"
            "       nanny keys ls [--json] [options]\n"
            "       nanny keys rm NAME [options]\n"
            "Adds, lists and removes the daemon's API keys. The file keeps each key's name,\n"
            "role and SHA-256, never the key: add prints the new key once, on its last line.\n"
            "The daemon reads the file on start and on SIGHUP.\n"
            "  -r, --role ROLE       the new key's role: user (the proxy and /v1/), viewer\n"
            "                        (every GET), operator (viewer's and user's rights, start,\n"
            "                        stop, restart), admin (everything)\n"
            "  -k, --keys FILE       the keys file (default: the one nanny serve reads, that\n"
            "                        is NANNY_KEYS, keys_file in the config file, or\n"
            "                        STATE_DIR/" CONFIG_KEYS_FILE ")\n"
            "  -c, --config FILE     the daemon's config file (env NANNY_CONFIG)\n"
            "      --state-dir DIR   the daemon's state folder (env NANNY_STATE_DIR)\n"
            "      --json            ls: a JSON object {file, keys: [{name, role}]}\n"
            "  -h, --help            this help\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports bad usage: exit code 2. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("nanny keys: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see nanny keys --help)\n", stderr);
    return 2;
}

/* Reads argv into args; 0, an exit code (2) after an error, or -ECANCELED after --help. */
static int parse_args(int argc, char **argv, struct keys_args *args)
{
    int opt;

    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "r:k:c:h", keys_options, NULL)) != -1) {
        switch (opt) {
        case OPT_ROLE:
            args->role = optarg;
            break;
        case OPT_KEYS:
            if (!*optarg)
                return usage_error("--keys: the file name must not be empty");
            args->keys_file = optarg;
            break;
        case OPT_CONFIG:
            args->config_file = optarg;
            break;
        case OPT_STATE_DIR:
            args->state_dir = optarg;
            break;
        case OPT_JSON:
            args->json = true;
            break;
        case OPT_HELP:
            keys_usage(stdout);
            return -ECANCELED;
        default:
            return usage_error("%.100s: unknown option or missing value", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("give a command: add, ls or rm");
    args->command = argv[optind++];
    if (strcmp(args->command, "add") == 0 || strcmp(args->command, "rm") == 0) {
        if (optind >= argc)
            return usage_error("%s: give the key's NAME", args->command);
        args->name = argv[optind++];
    } else if (strcmp(args->command, "ls") != 0) {
        return usage_error("unknown command '%.100s': add, ls or rm", args->command);
    }
    if (optind < argc)
        return usage_error("unexpected argument '%.100s'", argv[optind]);
    if (args->role && strcmp(args->command, "add") != 0)
        return usage_error("--role is for add");
    if (args->json && strcmp(args->command, "ls") != 0)
        return usage_error("--json is for ls");
    return 0;
}

/* The keys file: --keys, or the one the daemon reads, through config_load() as "nanny
 * serve" does. *ret is owned by the caller; 0 or an exit code. */
static int find_keys_file(const struct keys_args *args, char **ret)
{
    /* --insecure: a config that listens beyond loopback is fine here (its keys may not
     * exist yet: this is how they are made). */
    char *argv[8] = {"serve", "--insecure"};
    struct config config;
    char err[1024];
    int argc = 2, r;

    if (args->config_file) {
        argv[argc++] = "--config";
        argv[argc++] = (char *)args->config_file;
    }
    if (args->state_dir) {
        argv[argc++] = "--state-dir";
        argv[argc++] = (char *)args->state_dir;
    }
    if (args->keys_file) {
        argv[argc++] = "--keys";
        argv[argc++] = (char *)args->keys_file;
    }
    r = config_load(&config, argc, argv, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "nanny keys: %s\n", err);
        config_done(&config);
        return 2;
    }
    *ret = xstrdup(config.keys_file);
    config_done(&config);
    return 0;
}

/* Loads file into *ret; a missing file is zero keys when missing_ok. 0 or an exit code. */
static int load(const char *file, bool missing_ok, struct keys **ret)
{
    char err[1024];
    int r = keys_load(file, ret, err, sizeof(err));

    if (r == -ENOENT && missing_ok) {
        *ret = keys_new();
        return 0;
    }
    if (r == -ENOENT) {
        fprintf(stderr,
                "nanny keys: %s: no keys file (add a key with: nanny keys add NAME --role ROLE)\n",
                file);
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "nanny keys: %s\n", err);
        return 1;
    }
    return 0;
}

static int save(const struct keys *keys, const char *file)
{
    char err[1024];

    if (keys_save(keys, file, err, sizeof(err)) < 0) {
        fprintf(stderr, "nanny keys: %s\n", err);
        return 1;
    }
    return 0;
}

static int keys_add_command(const struct keys_args *args, const char *file)
{
    struct keys *keys = NULL;
    char key[KEY_LEN + 1];
    uint8_t hash[KEY_HASH_LEN];
    enum role role;
    int r;

    if (!args->role)
        return usage_error("add: give the key's role: --role user|viewer|operator|admin");
    if (role_parse(args->role, &role) < 0)
        return usage_error("--role: unknown role '%.100s' (the roles: user, viewer, operator, "
                           "admin)",
                           args->role);
    if (!key_name_valid(args->name))
        return usage_error("'%.100s' is not a valid key name: 1 to %d of the characters A-Z "
                           "a-z 0-9 . _ @ -",
                           args->name, KEY_NAME_MAX);
    r = load(file, true, &keys);
    if (r != 0)
        return r;
    if (keys_by_name(keys, args->name)) {
        fprintf(stderr,
                "nanny keys: %s: a key named '%s' exists already (remove it first with: nanny "
                "keys rm %s)\n",
                file, args->name, args->name);
        keys_free(keys);
        return 1;
    }
    r = key_generate(key);
    if (r < 0) {
        fprintf(stderr, "nanny keys: cannot make a key (getrandom): %s\n", strerror(-r));
        keys_free(keys);
        return 1;
    }
    key_hash(key, KEY_LEN, hash);
    r = keys_add(keys, args->name, role, hash);
    if (r < 0) {
        fprintf(stderr, "nanny keys: %s: cannot add the key: %s\n", file, strerror(-r));
        keys_free(keys);
        explicit_bzero(key, sizeof(key));
        return 1;
    }
    r = save(keys, file);
    if (r == 0)
        printf("added key '%s' (role %s) to %s (the daemon reads it on start or SIGHUP); it is "
               "shown only this once:\n%s\n",
               args->name, role_name(role), file, key);
    explicit_bzero(key, sizeof(key));
    keys_free(keys);
    return r;
}

static int keys_ls_command(const struct keys_args *args, const char *file)
{
    struct keys *keys = NULL;
    int width = 4, r;

    r = load(file, true, &keys);
    if (r != 0)
        return r;
    if (args->json) {
        json_t *list = json_array(), *out;

        for (size_t i = 0; i < keys->n; i++)
            json_array_append_new(list, json_pack("{s:s, s:s}", "name", keys->items[i].name, "role",
                                                  role_name(keys->items[i].role)));
        out = json_pack("{s:s, s:o}", "file", file, "keys", list);
        json_dumpf(out, stdout, JSON_INDENT(2));
        putchar('\n');
        json_decref(out);
    } else {
        for (size_t i = 0; i < keys->n; i++)
            if ((int)strlen(keys->items[i].name) > width)
                width = (int)strlen(keys->items[i].name);
        for (size_t i = 0; i < keys->n; i++)
            printf("%-*s  %s\n", width, keys->items[i].name, role_name(keys->items[i].role));
        if (keys->n == 0)
            fprintf(stderr, "nanny keys: no keys in %s\n", file);
    }
    keys_free(keys);
    return 0;
}

static int keys_rm_command(const struct keys_args *args, const char *file)
{
    struct keys *keys = NULL;
    int r;

    r = load(file, false, &keys);
    if (r != 0)
        return r;
    if (keys_remove(keys, args->name) < 0) {
        fprintf(stderr, "nanny keys: %s: no key named '%s' (see nanny keys ls)\n", file,
                args->name);
        keys_free(keys);
        return 1;
    }
    r = save(keys, file);
    if (r == 0) {
        printf("removed key '%s' from %s (the daemon reads it on start or SIGHUP)\n", args->name,
               file);
        if (keys->n == 0)
            fprintf(stderr,
                    "nanny keys: %s holds no key now: the daemon refuses every request that "
                    "needs one\n",
                    file);
    }
    keys_free(keys);
    return r;
}

int keys_main(int argc, char **argv)
{
    struct keys_args args = {0};
    char *file = NULL;
    int r;

    r = parse_args(argc, argv, &args);
    if (r == -ECANCELED)
        return 0;
    if (r != 0)
        return r;
    r = find_keys_file(&args, &file);
    if (r != 0)
        return r;
    if (strcmp(args.command, "add") == 0)
        r = keys_add_command(&args, file);
    else if (strcmp(args.command, "ls") == 0)
        r = keys_ls_command(&args, file);
    else
        r = keys_rm_command(&args, file);
    free(file);
    return r;
}
