/* nanny new: the command line, the checks on the name and port asked for, and the new
 * folder's way into the services folder. Everything is written into a temporary folder
 * first (by scaffold_template.c) and renamed into place once the manifest parser accepts
 * it, so that the daemon's watcher never sees half a service. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/scaffold_internal.h"
#include "core/config.h"
#include "core/discovery.h"
#include "core/manifest.h"
#include "lib/alloc.h"
#include "lib/units.h"

#define PORT_COUNT 65536

/* What the services of a folder claim, as discovery reads them. */
struct scaffold_services {
    struct scan *scan;
    uint32_t *port_owner; /* PORT_COUNT entries: entry index + 1 of the first claimant */
};

/* Writes the message into err and returns r, the negative errno the caller passes on. */
int scaffold_fail(char *err, size_t err_size, int r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return r;
}

/* The services folder as given, without trailing slashes ("services/" and "services" give
 * the same paths; "/" stays "/"). */
static char *folder_path(const char *dir)
{
    size_t len = strlen(dir);

    while (len > 1 && dir[len - 1] == '/')
        len--;
    return xstrndup(dir, len);
}

/* Records that service index claims port, unless an earlier service did. */
static void services_claim(struct scaffold_services *s, uint16_t port, size_t index)
{
    if (port != 0 && s->port_owner[port] == 0)
        s->port_owner[port] = (uint32_t)index + 1;
}

/* Reads the folder without discovery's cross-manifest rules: a valid manifest that clashes
 * with another still claims its ports and name, as a service someone means to run once
 * the clash is fixed. A broken manifest claims no port. */
int scaffold_services_read(const char *dir, struct scaffold_services **ret, char *err,
                           size_t err_size)
{
    struct scaffold_services *s;
    struct scan *scan;
    int r;

    r = discovery_read(dir, &scan);
    if (r < 0)
        return scaffold_fail(err, err_size, r, "cannot read the services folder %s: %s", dir,
                             strerror(-r));
    s = xcalloc(1, sizeof(*s));
    s->scan = scan;
    s->port_owner = xcalloc(PORT_COUNT, sizeof(*s->port_owner));
    for (size_t i = 0; i < scan->n; i++) {
        const struct manifest *m = scan->entries[i].manifest;

        if (!m)
            continue;
        for (size_t k = 0; k < m->n_ports; k++)
            services_claim(s, m->ports[k].host, i);
        if (m->health_enabled)
            services_claim(s, m->health_port, i);
    }
    *ret = s;
    return 0;
}

void scaffold_services_free(struct scaffold_services *s)
{
    if (!s)
        return;
    discovery_scan_free(s->scan);
    free(s->port_owner);
    free(s);
}

const char *scaffold_name_owner(const struct scaffold_services *s, const char *name)
{
    for (size_t i = 0; i < s->scan->n; i++) {
        const struct scan_entry *e = &s->scan->entries[i];

        if (e->name && strcmp(e->name, name) == 0)
            return e->folder;
    }
    return NULL;
}

const char *scaffold_port_owner(const struct scaffold_services *s, uint16_t port)
{
    const struct scan_entry *e;

    if (s->port_owner[port] == 0)
        return NULL;
    e = &s->scan->entries[s->port_owner[port] - 1];
    return e->name ? e->name : e->folder;
}

int scaffold_pick_port(const struct scaffold_services *s, bool gpu, uint16_t *ret)
{
    unsigned first = gpu ? SCAFFOLD_GPU_PORT_FIRST : SCAFFOLD_CPU_PORT_FIRST;
    unsigned last = gpu ? SCAFFOLD_GPU_PORT_LAST : SCAFFOLD_CPU_PORT_LAST;

    for (unsigned port = first; port <= last; port++) {
        if (s->port_owner[port] == 0) {
            *ret = (uint16_t)port;
            return 0;
        }
    }
    return -ENOSPC;
}

/* A host port of the new manifest that another service already holds is an error. */
static int check_port(uint16_t port, const struct scaffold_services *s, char *err, size_t err_size)
{
    const char *owner = port ? scaffold_port_owner(s, port) : NULL;

    if (!owner)
        return 0;
    return scaffold_fail(err, err_size, -EADDRINUSE,
                         "the template also declares host port %u, which service %s already uses",
                         (unsigned)port, owner);
}

/* Every host port of m, and its health check's, must be free. */
static int check_ports(const struct manifest *m, const struct scaffold_services *s, char *err,
                       size_t err_size)
{
    int r = 0;

    for (size_t k = 0; k < m->n_ports && r == 0; k++)
        r = check_port(m->ports[k].host, s, err, err_size);
    if (r == 0 && m->health_enabled)
        r = check_port(m->health_port, s, err, err_size);
    return r;
}

/* The new service.yaml must be one the daemon accepts, with the name, port and GPU flag
 * asked for, and no host port that another service holds. */
static int check_result(const char *tmp_path, const char *services_dir,
                        const struct scaffold_services *s, const struct scaffold_request *req,
                        uint16_t port, char *err, size_t err_size)
{
    char *path = xasprintf("%s/%s", tmp_path, MANIFEST_FILE_NAME);
    struct diags errors = {0}, warnings = {0};
    struct manifest *m = NULL;
    const char *template_dir = req->template_dir;
    int r;

    r = manifest_load(path, services_dir, &m, NULL, &errors, &warnings);
    if (r < 0)
        r = scaffold_fail(err, err_size, -EINVAL,
                          "the template %s makes a %s the daemon refuses: line %d: %s",
                          template_dir, MANIFEST_FILE_NAME, errors.n ? errors.items[0].line : 0,
                          errors.n ? errors.items[0].message : "unknown error");
    else if (strcmp(m->name, req->name) != 0)
        r = scaffold_fail(err, err_size, -EINVAL, "the template %s must say name: %s in its %s",
                          template_dir, SCAFFOLD_TEMPLATE_NAME, MANIFEST_FILE_NAME);
    else if (m->port != port)
        r = scaffold_fail(err, err_size, -EINVAL,
                          "the template %s must declare host port %s first in its %s (ports: "
                          "[\"%s:8000\"])",
                          template_dir, SCAFFOLD_TEMPLATE_PORT, MANIFEST_FILE_NAME,
                          SCAFFOLD_TEMPLATE_PORT);
    else if (m->gpu_required != req->gpu)
        r = scaffold_fail(err, err_size, -EINVAL,
                          "the template %s must say gpu_required: true in its %s", template_dir,
                          MANIFEST_FILE_NAME);
    else
        r = check_ports(m, s, err, err_size);
    manifest_free(m);
    diags_clear(&errors);
    diags_clear(&warnings);
    free(path);
    return r;
}

/* Removes the temporary folder: it holds only the files this command wrote. */
static void remove_folder(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;

    if (d) {
        while ((de = readdir(d))) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
    }
    rmdir(path);
}

/* Renames the finished folder to its name, never over anything that exists. */
static int move_into_place(const char *tmp_path, const char *path, mode_t mode, char *err,
                           size_t err_size)
{
    struct stat st;
    int r;

    if (chmod(tmp_path, mode) < 0)
        return scaffold_fail(err, err_size, -errno, "cannot set the mode of %s: %s", tmp_path,
                             strerror(errno));
    r = renameat2(AT_FDCWD, tmp_path, AT_FDCWD, path, RENAME_NOREPLACE);
    if (r < 0 && (errno == EINVAL || errno == ENOSYS)) {
        /* A filesystem without RENAME_NOREPLACE: rename() fails on a non-empty folder. */
        if (lstat(path, &st) == 0)
            errno = EEXIST;
        else
            r = rename(tmp_path, path);
    }
    if (r == 0)
        return 0;
    if (errno == EEXIST || errno == ENOTEMPTY)
        return scaffold_fail(err, err_size, -EEXIST, "%s already exists: pick another name", path);
    return scaffold_fail(err, err_size, -errno, "cannot rename %s to %s: %s", tmp_path, path,
                         strerror(errno));
}

/* Fills a temporary folder beside the new one, checks it, renames it into place; removes
 * it on any error. */
static int build_service(const char *services_dir, const char *path,
                         const struct scaffold_services *s, const struct scaffold_request *req,
                         uint16_t port, char *err, size_t err_size)
{
    struct scaffold_params params = {.name = req->name, .port = port, .gpu = req->gpu};
    char *tmp_path = xasprintf("%s/.%s.tmp-XXXXXX", services_dir, req->name);
    mode_t mode = 0755;
    int tmp_fd, r;

    if (!mkdtemp(tmp_path)) {
        r = scaffold_fail(err, err_size, -errno, "cannot create a folder in %s: %s", services_dir,
                          strerror(errno));
        free(tmp_path);
        return r;
    }
    tmp_fd = open(tmp_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tmp_fd < 0)
        r = scaffold_fail(err, err_size, -errno, "cannot open %s: %s", tmp_path, strerror(errno));
    else
        r = scaffold_copy_template(req->template_dir, &params, tmp_fd, tmp_path, &mode, err,
                                   err_size);
    if (tmp_fd >= 0)
        close(tmp_fd);
    if (r == 0)
        r = check_result(tmp_path, services_dir, s, req, port, err, err_size);
    if (r == 0)
        r = move_into_place(tmp_path, path, mode, err, err_size);
    if (r < 0)
        remove_folder(tmp_path);
    free(tmp_path);
    return r;
}

/* The name must be one the manifest parser takes. */
static int check_name_valid(const char *name, char *err, size_t err_size)
{
    char quoted[TEXT_QUOTE_MAX + 1];

    if (manifest_name_valid(name))
        return 0;
    text_quote(name, strlen(name), quoted, sizeof(quoted));
    return scaffold_fail(
        err, err_size, -EINVAL,
        "%s is not a valid service name: use lowercase letters, digits, '.', '_' and "
        "'-', starting with a letter or digit, at most %d characters",
        quoted, MANIFEST_NAME_MAX);
}

/* The name must be free: no folder and no service has it. */
static int check_name_free(const struct scaffold_services *s, const char *name, const char *path,
                           char *err, size_t err_size)
{
    struct stat st;
    const char *owner;

    if (lstat(path, &st) == 0)
        return scaffold_fail(err, err_size, -EEXIST, "%s already exists: pick another name", path);
    if (errno != ENOENT)
        return scaffold_fail(err, err_size, -errno, "cannot check %s: %s", path, strerror(errno));
    owner = scaffold_name_owner(s, name);
    if (owner)
        return scaffold_fail(err, err_size, -EEXIST,
                             "the service in folder %s is already named %s: pick another name",
                             owner, name);
    return 0;
}

/* The port asked for, when it is free, or the first free one of the range. */
static int choose_port(const struct scaffold_services *s, const struct scaffold_request *req,
                       uint16_t *ret, char *err, size_t err_size)
{
    const char *owner;

    if (req->port == 0) {
        if (scaffold_pick_port(s, req->gpu, ret) == 0)
            return 0;
        return scaffold_fail(err, err_size, -ENOSPC,
                             "no free %s port left: services already use every port of %d-%d (give "
                             "one with --port)",
                             req->gpu ? "GPU" : "CPU",
                             req->gpu ? SCAFFOLD_GPU_PORT_FIRST : SCAFFOLD_CPU_PORT_FIRST,
                             req->gpu ? SCAFFOLD_GPU_PORT_LAST : SCAFFOLD_CPU_PORT_LAST);
    }
    if (req->port == SCAFFOLD_DAEMON_PORT)
        return scaffold_fail(
            err, err_size, -EINVAL,
            "port %d is Service Nanny's own: pick another (GPU services use %d-%d, CPU "
            "services %d-%d)",
            SCAFFOLD_DAEMON_PORT, SCAFFOLD_GPU_PORT_FIRST, SCAFFOLD_GPU_PORT_LAST,
            SCAFFOLD_CPU_PORT_FIRST, SCAFFOLD_CPU_PORT_LAST);
    owner = scaffold_port_owner(s, req->port);
    if (owner)
        return scaffold_fail(
            err, err_size, -EADDRINUSE,
            "port %u is already used by service %s: pick another, or leave out --port "
            "for the next free one",
            (unsigned)req->port, owner);
    *ret = req->port;
    return 0;
}

int scaffold_create(const struct scaffold_request *req, char **ret_path, uint16_t *ret_port,
                    char *err, size_t err_size)
{
    struct scaffold_request full = *req;
    struct scaffold_services *s = NULL;
    char *services_dir, *path, *template_dir;
    uint16_t port = 0;
    int r;

    r = check_name_valid(req->name, err, err_size);
    if (r < 0)
        return r;
    services_dir = folder_path(req->services_dir);
    path = xasprintf("%s/%s", services_dir, req->name);
    template_dir = req->template_dir ? xstrdup(req->template_dir)
                                     : xasprintf("%s/%s", services_dir, SCAFFOLD_TEMPLATE_FOLDER);
    full.template_dir = template_dir;
    r = scaffold_services_read(services_dir, &s, err, err_size);
    if (r == 0)
        r = check_name_free(s, req->name, path, err, err_size);
    if (r == 0)
        r = choose_port(s, req, &port, err, err_size);
    if (r == 0)
        r = build_service(services_dir, path, s, &full, port, err, err_size);
    scaffold_services_free(s);
    free(template_dir);
    free(services_dir);
    if (r < 0) {
        free(path);
        return r;
    }
    *ret_path = path;
    *ret_port = port;
    return 0;
}

enum {
    OPT_GPU = 'g',
    OPT_PORT = 'p',
    OPT_SERVICES = 's',
    OPT_TEMPLATE = 't',
    OPT_HELP = 'h',
};

static const struct option new_options[] = {
    {"gpu", no_argument, NULL, OPT_GPU},
    {"port", required_argument, NULL, OPT_PORT},
    {"services", required_argument, NULL, OPT_SERVICES},
    {"template", required_argument, NULL, OPT_TEMPLATE},
    {"help", no_argument, NULL, OPT_HELP},
    {0},
};

static void scaffold_usage(FILE *out)
{
    fprintf(out,
            "usage: nanny new NAME [--gpu] [--port N] [--services DIR] [--template DIR]\n"
            "Creates the service folder SERVICES/NAME from the service template.\n"
            "  -g, --gpu             a GPU service (port %d-%d); else a CPU one (%d-%d)\n"
            "  -p, --port N          its host port (default: the first free one of the range)\n"
            "  -s, --services DIR    the services folder (default %s; env NANNY_SERVICES,\n"
            "                        or services: in the file NANNY_CONFIG names)\n"
            "  -t, --template DIR    the template folder (default SERVICES/%s)\n"
            "  -h, --help            this help\n",
            SCAFFOLD_GPU_PORT_FIRST, SCAFFOLD_GPU_PORT_LAST, SCAFFOLD_CPU_PORT_FIRST,
            SCAFFOLD_CPU_PORT_LAST, CONFIG_DEFAULT_SERVICES, SCAFFOLD_TEMPLATE_FOLDER);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports bad usage: exit code 2. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("nanny new: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see nanny new --help)\n", stderr);
    return 2;
}

/* The services folder as "nanny serve" finds it: the flag, NANNY_SERVICES, the config
 * file's services: (NANNY_CONFIG), or the default. --insecure only keeps a non-loopback
 * NANNY_LISTEN from being refused: this command listens on nothing. */
static int find_services_dir(const char *flag, char **ret)
{
    char *args[] = {"new", "--insecure", "--services", (char *)flag, NULL};
    struct config config;
    char err[1024];
    int r;

    r = config_load(&config, flag ? 4 : 2, args, err, sizeof(err));
    if (r == 0)
        *ret = xstrdup(config.services_dir);
    else
        fprintf(stderr, "nanny new: %s\n", err);
    config_done(&config);
    return r;
}

/* Prints what was made and what to do next. */
static void print_created(const char *path, const char *name, uint16_t port, bool gpu)
{
    char *setup = xasprintf("%s/SETUP.md", path);

    printf("created %s (port %u, %s)\n", path, (unsigned)port, gpu ? "GPU" : "CPU");
    printf("next steps:\n"
           "  1. write the service in %s/app.py%s\n"
           "  2. curl -X POST http://localhost:8080/rediscover\n"
           "  3. curl -X POST http://localhost:8080/services/%s/start\n",
           path, access(setup, F_OK) == 0 ? " (SETUP.md there tells the rest)" : "", name);
    free(setup);
}

int scaffold_main(int argc, char **argv)
{
    struct scaffold_request req = {0};
    const char *services_flag = NULL;
    char *services_dir = NULL, *path = NULL, err[2048];
    uint16_t port;
    int opt, r;

    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "gp:s:t:h", new_options, NULL)) != -1) {
        switch (opt) {
        case OPT_GPU:
            req.gpu = true;
            break;
        case OPT_PORT:
            if (units_parse_port(optarg, &req.port) < 0)
                return usage_error("--port: '%.100s' is not a port number 1..65535", optarg);
            break;
        case OPT_SERVICES:
            services_flag = optarg;
            break;
        case OPT_TEMPLATE:
            if (!*optarg)
                return usage_error("--template: the template folder must not be empty");
            req.template_dir = optarg;
            break;
        case OPT_HELP:
            scaffold_usage(stdout);
            return 0;
        default:
            return usage_error("%.100s: unknown option or missing value", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("give the new service's NAME");
    if (argc - optind > 1)
        return usage_error("unexpected argument '%.100s'", argv[optind + 1]);
    req.name = argv[optind];
    if (find_services_dir(services_flag, &services_dir) < 0)
        return 2;
    req.services_dir = services_dir;

    r = scaffold_create(&req, &path, &port, err, sizeof(err));
    if (r < 0)
        fprintf(stderr, "nanny new: %s\n", err);
    else
        print_created(path, req.name, port, req.gpu);
    free(path);
    free(services_dir);
    return r < 0 ? 1 : 0;
}
