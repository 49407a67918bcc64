/* nanny check [DIR]: scans the folder with discovery_scan(), the daemon's own reading
 * (cross-manifest rules included), and prints one "PATH:LINE: message" per problem, so
 * that it fits a pre-commit hook or a CI step. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli/check.h"
#include "core/config.h"
#include "core/discovery.h"
#include "lib/alloc.h"

enum {
    OPT_CONFIG = 'c',
    OPT_HELP = 'h',
};

static const struct option check_options[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"help", no_argument, NULL, OPT_HELP},
    {0},
};

static void check_usage(FILE *out)
{
    fprintf(out,
            "usage: nanny check [options] [DIR]\n"
            "Validates every service.yaml in the services folder DIR without a daemon, as\n"
            "discovery reads them (two services on one name or host port included). Prints\n"
            "one line per problem, DIR/FOLDER/service.yaml:LINE: message; a warning reads\n"
            "DIR/FOLDER/service.yaml:LINE: warning: message and fails nothing.\n"
            "Exit code: 0 all valid, 1 a manifest is broken, 2 bad usage or DIR unreadable.\n"
            "options:\n"
            "  -c, --config FILE     the daemon's config file (env NANNY_CONFIG), for the\n"
            "                        default DIR\n"
            "  -h, --help            this help\n"
            "DIR defaults to the folder \"nanny serve\" would use (NANNY_SERVICES, services:\n"
            "in the config file, or %s).\n"
            "example, in .git/hooks/pre-commit:\n"
            "  nanny check services || exit 1\n",
            CONFIG_DEFAULT_SERVICES);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports bad usage: exit code 2. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("nanny check: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see nanny check --help)\n", stderr);
    return 2;
}

/* The services folder as "nanny serve" finds it; *ret is the caller's. 0 or exit code 2.
 * --insecure only keeps a non-loopback NANNY_LISTEN from being refused: this command
 * listens on nothing. */
static int find_services_dir(const char *config_file, char **ret)
{
    char *argv[] = {"serve", "--insecure", "--config", (char *)config_file, NULL};
    struct config config;
    char err[1024];
    int r;

    r = config_load(&config, config_file ? 4 : 2, argv, err, sizeof(err));
    if (r == 0)
        *ret = xstrdup(config.services_dir);
    else
        fprintf(stderr, "nanny check: %s\n", err);
    config_done(&config);
    return r < 0 ? 2 : 0;
}

/* One line per diagnostic; a line 0 concerns the whole file. */
static void print_diags(const char *path, const struct diags *d, const char *kind)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->items[i].line > 0)
            printf("%s:%d: %s%s\n", path, d->items[i].line, kind, d->items[i].message);
        else
            printf("%s: %s%s\n", path, kind, d->items[i].message);
    }
}

int check_main(int argc, char **argv)
{
    const char *config_file = NULL;
    char *dir = NULL;
    struct scan *scan;
    size_t broken = 0, warnings = 0;
    int opt, r;

    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "c:h", check_options, NULL)) != -1) {
        switch (opt) {
        case OPT_CONFIG:
            config_file = optarg;
            break;
        case OPT_HELP:
            check_usage(stdout);
            return 0;
        default:
            return usage_error("%.100s: unknown option or missing value", argv[optind - 1]);
        }
    }
    if (argc - optind > 1)
        return usage_error("unexpected argument '%.100s'", argv[optind + 1]);
    if (optind < argc)
        dir = xstrdup(argv[optind]);
    else if (find_services_dir(config_file, &dir) != 0)
        return 2;

    r = discovery_scan(dir, &scan);
    if (r < 0) {
        fprintf(stderr, "nanny check: cannot read the services folder %s: %s\n", dir, strerror(-r));
        free(dir);
        return 2;
    }
    for (size_t i = 0; i < scan->n; i++) {
        const struct scan_entry *e = &scan->entries[i];

        print_diags(e->path, &e->errors, "");
        print_diags(e->path, &e->warnings, "warning: ");
        if (!e->manifest)
            broken++;
        warnings += e->warnings.n;
    }
    if (scan->truncated)
        printf("%s: more than %d service folders: the rest were not read\n", dir,
               DISCOVERY_MAX_SERVICES);
    if (broken)
        printf("%zu services, %zu broken", scan->n, broken);
    else
        printf("%zu services, no problems", scan->n);
    if (warnings)
        printf(" (%zu warnings)", warnings);
    putchar('\n');
    r = broken || scan->truncated ? 1 : 0;
    discovery_scan_free(scan);
    free(dir);
    return r;
}
