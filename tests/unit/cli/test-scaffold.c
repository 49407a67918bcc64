/* Unit tests for scaffold.c (nanny new): names, ports, filling in the template, refusals,
 * and that the result is a manifest the daemon accepts. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/scaffold.h"
#include "core/manifest.h"
#include "lib/alloc.h"
#include "lib/log.h"

/* A template that keeps the contract of services/_template. */
static const char template_manifest[] = "# The manifest of my-service.\n"
                                        "name: my-service\n"
                                        "description: my-service from the template\n"
                                        "ports: [\"8001:8000\"]\n"
                                        "gpu_required: true   # the GPU one-of rule\n"
                                        "driver: compose\n"
                                        "health:\n"
                                        "  path: /health\n"
                                        "  # port: 8001\n"
                                        "stop_timeout: 10s\n";

static const char template_compose[] = "services:\n"
                                       "  my-service:\n"
                                       "    build: .\n"
                                       "    ports:\n"
                                       "      - \"8001:8000\"\n"
                                       "    # >>> gpu\n"
                                       "    deploy:\n"
                                       "      resources:\n"
                                       "\n"
                                       "        reservations:\n"
                                       "    # <<< gpu\n"
                                       "    restart: \"no\"\n";

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

/* The whole of a file, NUL-terminated. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = xcalloc(1, 65536);
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Writes DIR/FILE. */
static void put(const char *dir, const char *file, const char *text, mode_t mode)
{
    char *path = xasprintf("%s/%s", dir, file);

    write_file(path, text, mode);
    free(path);
}

/* Makes a template folder at dir holding the contract's six files. */
static void make_template(const char *dir)
{
    assert_int_equal(mkdir(dir, 0755), 0);
    put(dir, "service.yaml", template_manifest, 0644);
    put(dir, "docker-compose.yml", template_compose, 0644);
    put(dir, "Dockerfile", "FROM scratch\nEXPOSE 8000\n", 0644);
    put(dir, "app.py", "#!/usr/bin/env python3\nprint('my-service on 8001')\n", 0755);
    put(dir, "SETUP.md", "# Setting up my-service\n", 0644);
    put(dir, "README.md", "# my-service\n\ngpu_required: true\n", 0600);
}

/* Adds the service ROOT/FOLDER with a manifest (a process service, so that no compose
 * file is needed). */
static void add_service(const char *root, const char *folder, const char *name, const char *ports)
{
    char *dir = xasprintf("%s/%s", root, folder);
    char *text = xasprintf("name: %s\ncommand: [\"sleep\", \"1000\"]\nports: %s\n", name, ports);

    assert_int_equal(mkdir(dir, 0755), 0);
    put(dir, "service.yaml", text, 0644);
    free(text);
    free(dir);
}

/* Each test gets a services folder holding the fixture template as _template. */
static int setup(void **state)
{
    char *root = xstrdup("/tmp/nanny-test-scaffold-XXXXXX");
    char *template;

    if (!mkdtemp(root)) {
        free(root);
        return -1;
    }
    template = xasprintf("%s/_template", root);
    make_template(template);
    free(template);
    *state = root;
    return 0;
}

static int teardown(void **state)
{
    char *root = *state;
    int r = nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);

    free(root);
    return r;
}

/* How many entries of root start with '.', our temporary folders included. */
static int hidden_entries(const char *root)
{
    DIR *d = opendir(root);
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] == '.' && strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static bool exists(const char *root, const char *name)
{
    char *path = xasprintf("%s/%s", root, name);
    struct stat st;
    bool r = lstat(path, &st) == 0;

    free(path);
    return r;
}

/* Runs scaffold_create for name in root; returns its result, the port in *ret_port. */
static int create(const char *root, const char *name, bool gpu, uint16_t port, uint16_t *ret_port,
                  char *err, size_t err_size)
{
    struct scaffold_request req = {.name = name, .services_dir = root, .gpu = gpu, .port = port};
    char *path = NULL;
    uint16_t got = 0;
    int r;

    err[0] = '\0';
    r = scaffold_create(&req, &path, &got, err, err_size);
    if (r == 0) {
        char *want = xasprintf("%s/%s", root, name);
        assert_string_equal(path, want);
        free(want);
        if (ret_port)
            *ret_port = got;
    }
    free(path);
    return r;
}

/* Loads ROOT/NAME/service.yaml with the daemon's parser; fails the test when it refuses. */
static struct manifest *load(const char *root, const char *name)
{
    char *path = xasprintf("%s/%s/service.yaml", root, name);
    struct diags errors = {0}, warnings = {0};
    struct manifest *m = NULL;
    int r = manifest_load(path, root, &m, NULL, &errors, &warnings);

    if (r < 0)
        fail_msg("%s: line %d: %s", path, errors.items[0].line, errors.items[0].message);
    assert_int_equal(warnings.n, 0);
    diags_clear(&errors);
    diags_clear(&warnings);
    free(path);
    return m;
}

static void test_name_validation(void **state)
{
    const char *root = *state;
    const char *bad[] = {"",  "Foo", "_x",   ".x", "-x", "a/b", "a b",
                         "ü", "..",  "a\nb", "A1", "x/", "foo$"};
    char long_name[MANIFEST_NAME_MAX + 2], err[1024];
    uint16_t port;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(create(root, bad[i], false, 0, NULL, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "is not a valid service name"));
    }
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(create(root, long_name, false, 0, NULL, err, sizeof(err)), -EINVAL);
    long_name[MANIFEST_NAME_MAX] = '\0'; /* 63 characters: fine */
    assert_int_equal(create(root, long_name, false, 0, &port, err, sizeof(err)), 0);
    assert_int_equal(create(root, "0.a_b-c", false, 0, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8011);
    assert_int_equal(hidden_entries(root), 0);
}

static void test_pick_first_free(void **state)
{
    const char *root = *state;
    struct scaffold_services *s;
    char err[256];
    uint16_t port;

    /* _template declares 8001 but is no service. */
    assert_int_equal(scaffold_services_read(root, &s, err, sizeof(err)), 0);
    assert_int_equal(scaffold_pick_port(s, true, &port), 0);
    assert_int_equal(port, SCAFFOLD_GPU_PORT_FIRST);
    assert_int_equal(scaffold_pick_port(s, false, &port), 0);
    assert_int_equal(port, SCAFFOLD_CPU_PORT_FIRST);
    assert_null(scaffold_port_owner(s, 8001));
    scaffold_services_free(s);
}

static void test_pick_skips_taken(void **state)
{
    const char *root = *state;
    struct scaffold_services *s;
    char err[256], *dir;
    uint16_t port;

    add_service(root, "a", "alpha", "[\"8010\", \"8012:80\"]");
    add_service(root, "b", "beta", "[\"8011/udp\", \"127.0.0.1:8001:8000\"]");
    add_service(root, "c", "gamma", "[\"8002\"]");
    add_service(root, "_old", "old", "[\"8013\"]"); /* not a service */
    add_service(root, ".hidden", "hidden", "[\"8013\"]");
    add_service(root, "d", "delta", "[\"8014\"]\nbroken: [\n"); /* broken: skipped */
    dir = xasprintf("%s/empty", root);                          /* no service.yaml */
    assert_int_equal(mkdir(dir, 0755), 0);
    free(dir);

    assert_int_equal(scaffold_services_read(root, &s, err, sizeof(err)), 0);
    assert_int_equal(scaffold_pick_port(s, false, &port), 0);
    assert_int_equal(port, 8013);
    assert_int_equal(scaffold_pick_port(s, true, &port), 0);
    assert_int_equal(port, 8003);
    assert_string_equal(scaffold_port_owner(s, 8012), "alpha");
    assert_string_equal(scaffold_port_owner(s, 8011), "beta");
    assert_string_equal(scaffold_port_owner(s, 8001), "beta");
    assert_null(scaffold_port_owner(s, 8014));
    assert_string_equal(scaffold_name_owner(s, "gamma"), "c");
    assert_null(scaffold_name_owner(s, "old"));
    scaffold_services_free(s);
}

/* Services that discovery would refuse for a clash with another still hold their name and
 * every port they list: each is meant to run once its clash is fixed. */
static void test_pick_counts_clashing_services(void **state)
{
    const char *root = *state;
    struct scaffold_services *s;
    char err[256];
    uint16_t port;

    add_service(root, "a", "alpha", "[\"8010\"]");
    add_service(root, "b", "alpha", "[\"8011\"]");           /* the name of a */
    add_service(root, "c", "gamma", "[\"8010\", \"8012\"]"); /* the port of a */

    assert_int_equal(scaffold_services_read(root, &s, err, sizeof(err)), 0);
    assert_int_equal(scaffold_pick_port(s, false, &port), 0);
    assert_int_equal(port, 8013);
    assert_string_equal(scaffold_port_owner(s, 8010), "alpha");
    assert_string_equal(scaffold_port_owner(s, 8011), "alpha");
    assert_string_equal(scaffold_port_owner(s, 8012), "gamma");
    assert_string_equal(scaffold_name_owner(s, "alpha"), "a");
    assert_string_equal(scaffold_name_owner(s, "gamma"), "c");
    scaffold_services_free(s);
}

static void test_pick_exhausted(void **state)
{
    const char *root = *state;
    char err[1024], folder[16], ports[16];
    uint16_t port;

    for (int p = SCAFFOLD_GPU_PORT_FIRST; p <= SCAFFOLD_GPU_PORT_LAST; p++) {
        snprintf(folder, sizeof(folder), "gpu%d", p);
        snprintf(ports, sizeof(ports), "[\"%d\"]", p);
        add_service(root, folder, folder, ports);
    }
    assert_int_equal(create(root, "one-more", true, 0, NULL, err, sizeof(err)), -ENOSPC);
    assert_non_null(strstr(err, "no free GPU port left"));
    assert_non_null(strstr(err, "8001-8009"));
    assert_false(exists(root, "one-more"));
    /* A CPU service still finds its port, and --port still works for a GPU one. */
    assert_int_equal(create(root, "cpu", false, 0, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8010);
    assert_int_equal(create(root, "gpu-extra", true, 8100, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8100);
    assert_int_equal(hidden_entries(root), 0);
}

/* Renders text as file for params, expecting success. */
static char *render(const char *file, const char *text, const char *name, uint16_t port, bool gpu)
{
    struct scaffold_params p = {.name = name, .port = port, .gpu = gpu};
    char *out = NULL, err[512];
    size_t len = 0;

    if (scaffold_render(file, text, strlen(text), &p, &out, &len, err, sizeof(err)) < 0)
        fail_msg("render %s: %s", file, err);
    assert_int_equal(len, strlen(out));
    return out;
}

static void test_render_name_and_port(void **state)
{
    char *out = render("app.py", "my-service listens on 8001; my-service8001\nmy-servic 800\n",
                       "foo", 8042, false);

    assert_string_equal(out, "foo listens on 8042; foo8042\nmy-servic 800\n");
    free(out);
    /* A name holding the template's port is not replaced again. */
    out = render("README.md", "my-service at 8001", "api-8001", 8015, true);
    assert_string_equal(out, "api-8001 at 8015");
    free(out);
    /* No newline at the end, and an empty file. */
    out = render("x", "", "foo", 8010, false);
    assert_string_equal(out, "");
    free(out);
}

static void test_render_gpu_line(void **state)
{
    const char *text = "name: my-service\ngpu_required: true   # one-of\nx: 1\n";
    char *out = render("service.yaml", text, "foo", 8010, false);

    assert_string_equal(out, "name: foo\ngpu_required: false   # one-of\nx: 1\n");
    free(out);
    out = render("service.yaml", text, "foo", 8001, true);
    assert_string_equal(out, "name: foo\ngpu_required: true   # one-of\nx: 1\n");
    free(out);
    /* Only service.yaml, and only that exact value. */
    out = render("README.md", "gpu_required: true\n", "foo", 8010, false);
    assert_string_equal(out, "gpu_required: true\n");
    free(out);
    out =
        render("service.yaml", "gpu_required: trueish\n# gpu_required: true\n", "foo", 8010, false);
    assert_string_equal(out, "gpu_required: trueish\n# gpu_required: true\n");
    free(out);
    out = render("service.yaml", "gpu_required:true\r\n", "foo", 8010, false);
    assert_string_equal(out, "gpu_required:false\r\n");
    free(out);
}

static void test_render_gpu_block(void **state)
{
    char *out = render("docker-compose.yml", template_compose, "foo", 8010, false);

    assert_string_equal(out, "services:\n"
                             "  foo:\n"
                             "    build: .\n"
                             "    ports:\n"
                             "      - \"8010:8000\"\n"
                             "    # >>> gpu\n"
                             "    # deploy:\n"
                             "      # resources:\n"
                             "\n"
                             "        # reservations:\n"
                             "    # <<< gpu\n"
                             "    restart: \"no\"\n");
    free(out);
    /* A GPU service keeps the block as it is. */
    out = render("docker-compose.yml", template_compose, "foo", 8001, true);
    assert_non_null(strstr(out, "    # >>> gpu\n    deploy:\n      resources:\n"));
    free(out);
    /* Markers with other indentation or trailing blanks, and two blocks. */
    out = render("docker-compose.yml",
                 "# >>> gpu  \r\na: 1\r\n\t# <<< gpu\nb: 2\n# >>> gpu\nc\n# <<< gpu\n", "foo", 8010,
                 false);
    assert_string_equal(out,
                        "# >>> gpu  \r\n# a: 1\r\n\t# <<< gpu\nb: 2\n# >>> gpu\n# c\n# <<< gpu\n");
    free(out);
    /* Only docker-compose.yml has blocks. */
    out = render("compose.yaml", "# >>> gpu\na: 1\n# <<< gpu\n", "foo", 8010, false);
    assert_string_equal(out, "# >>> gpu\na: 1\n# <<< gpu\n");
    free(out);
}

static void test_render_bad_blocks(void **state)
{
    struct scaffold_params p = {.name = "foo", .port = 8010, .gpu = false};
    const char *bad[] = {"a\n# >>> gpu\nb\n", "# <<< gpu\n", "# >>> gpu\n# >>> gpu\n# <<< gpu\n"};
    const char *why[] = {"docker-compose.yml:2: the gpu block opened here has no",
                         "docker-compose.yml:1: \"# <<< gpu\" without", "docker-compose.yml:2:"};
    char *out = NULL, err[512];
    size_t len;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(scaffold_render("docker-compose.yml", bad[i], strlen(bad[i]), &p, &out,
                                         &len, err, sizeof(err)),
                         -EINVAL);
        assert_non_null(strstr(err, why[i]));
        /* The rule holds for a GPU service too. */
        p.gpu = true;
        assert_int_equal(scaffold_render("docker-compose.yml", bad[i], strlen(bad[i]), &p, &out,
                                         &len, err, sizeof(err)),
                         -EINVAL);
        p.gpu = false;
    }
}

static void test_render_binary(void **state)
{
    struct scaffold_params p = {.name = "foo", .port = 8010, .gpu = false};
    const char bin[] = "my-service\0008001";
    char *out = NULL, err[64];
    size_t len = 0;

    assert_int_equal(
        scaffold_render("model.bin", bin, sizeof(bin) - 1, &p, &out, &len, err, sizeof(err)), 0);
    assert_int_equal(len, sizeof(bin) - 1);
    assert_memory_equal(out, bin, len);
    free(out);
}

static void test_create_cpu(void **state)
{
    const char *root = *state;
    char err[1024], *path, *text;
    struct manifest *m;
    struct stat st;
    uint16_t port = 0;

    assert_int_equal(create(root, "foo", false, 0, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8010);
    assert_int_equal(hidden_entries(root), 0);

    /* The daemon's parser accepts it, as a CPU service on the port. */
    m = load(root, "foo");
    assert_string_equal(m->name, "foo");
    assert_string_equal(m->description, "foo from the template");
    assert_int_equal(m->port, 8010);
    assert_int_equal(m->ports[0].container, 8000);
    assert_false(m->gpu_required);
    assert_int_equal(m->driver, DRIVER_COMPOSE);
    manifest_free(m);

    path = xasprintf("%s/foo/docker-compose.yml", root);
    text = read_text(path);
    assert_non_null(strstr(text, "  foo:\n"));
    assert_non_null(strstr(text, "\"8010:8000\""));
    assert_non_null(strstr(text, "    # >>> gpu\n    # deploy:\n"));
    free(text);
    free(path);

    /* Every file, with its mode; the folder takes the template's. */
    path = xasprintf("%s/foo/app.py", root);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    text = read_text(path);
    assert_string_equal(text, "#!/usr/bin/env python3\nprint('foo on 8010')\n");
    free(text);
    free(path);
    path = xasprintf("%s/foo/README.md", root);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    text = read_text(path);
    assert_string_equal(text, "# foo\n\ngpu_required: true\n"); /* only service.yaml */
    free(text);
    free(path);
    assert_true(exists(root, "foo/Dockerfile"));
    assert_true(exists(root, "foo/SETUP.md"));
    path = xasprintf("%s/foo", root);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0755);
    free(path);
}

static void test_create_gpu(void **state)
{
    const char *root = *state;
    char err[1024], *path, *text;
    struct manifest *m;
    uint16_t port = 0;

    assert_int_equal(create(root, "big", true, 0, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8001);
    m = load(root, "big");
    assert_string_equal(m->name, "big");
    assert_int_equal(m->port, 8001);
    assert_true(m->gpu_required);
    manifest_free(m);
    path = xasprintf("%s/big/docker-compose.yml", root);
    text = read_text(path);
    assert_string_equal(strstr(text, "    # >>> gpu\n"), "    # >>> gpu\n"
                                                         "    deploy:\n"
                                                         "      resources:\n"
                                                         "\n"
                                                         "        reservations:\n"
                                                         "    # <<< gpu\n"
                                                         "    restart: \"no\"\n");
    free(text);
    free(path);

    /* The next ones take the next ports, read back from the manifests just written. */
    assert_int_equal(create(root, "big2", true, 0, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8002);
    assert_int_equal(create(root, "small", false, 0, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8010);
    assert_int_equal(create(root, "small2", false, 0, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8011);
    assert_int_equal(create(root, "chosen", false, 8070, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8070);
}

static void test_refuse_existing_name(void **state)
{
    const char *root = *state;
    char err[1024], *path;

    add_service(root, "hello", "hello", "[\"8010\"]");
    add_service(root, "folder", "named", "[\"8011\"]");
    assert_int_equal(create(root, "hello", false, 0, NULL, err, sizeof(err)), -EEXIST);
    assert_non_null(strstr(err, "/hello already exists"));
    assert_int_equal(create(root, "named", false, 0, NULL, err, sizeof(err)), -EEXIST);
    assert_non_null(strstr(err, "the service in folder folder is already named named"));
    /* Any entry of that name, even a plain file. */
    put(root, "plain", "", 0644);
    assert_int_equal(create(root, "plain", false, 0, NULL, err, sizeof(err)), -EEXIST);
    path = xasprintf("%s/hello/app.py", root);
    assert_int_equal(access(path, F_OK), -1); /* nothing written into it */
    free(path);
    assert_int_equal(hidden_entries(root), 0);
}

static void test_refuse_taken_port(void **state)
{
    const char *root = *state;
    char err[1024];

    add_service(root, "hello", "hello", "[\"8010\", \"9000\"]");
    assert_int_equal(create(root, "foo", false, 8010, NULL, err, sizeof(err)), -EADDRINUSE);
    assert_non_null(strstr(err, "port 8010 is already used by service hello"));
    assert_int_equal(create(root, "foo", true, 9000, NULL, err, sizeof(err)), -EADDRINUSE);
    assert_int_equal(create(root, "foo", false, 8080, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "port 8080 is Service Nanny's own"));
    assert_false(exists(root, "foo"));
    assert_int_equal(hidden_entries(root), 0);
}

/* A template that declares another host port, held by a service, is refused. */
static void test_refuse_template_port_taken(void **state)
{
    const char *root = *state;
    char err[1024], *template = xasprintf("%s/_template", root);

    put(template, "service.yaml",
        "name: my-service\nports: [\"8001:8000\", \"9100:9100\"]\ngpu_required: true\n", 0644);
    add_service(root, "metrics", "metrics", "[\"9100\"]");
    assert_int_equal(create(root, "foo", false, 0, NULL, err, sizeof(err)), -EADDRINUSE);
    assert_non_null(strstr(err, "host port 9100, which service metrics already uses"));
    assert_false(exists(root, "foo"));
    assert_int_equal(hidden_entries(root), 0);
    free(template);
}

static void test_refuse_symlink(void **state)
{
    const char *root = *state;
    char err[1024], *link = xasprintf("%s/_template/extra.txt", root);

    assert_int_equal(symlink("/etc/passwd", link), 0);
    assert_int_equal(create(root, "foo", false, 0, NULL, err, sizeof(err)), -ELOOP);
    assert_non_null(strstr(err, "extra.txt is a symlink"));
    assert_false(exists(root, "foo"));
    assert_int_equal(hidden_entries(root), 0);
    free(link);
}

/* Subfolders of the template are left out; other regular files are copied. */
static void test_subfolders_skipped(void **state)
{
    const char *root = *state;
    char err[1024], *sub = xasprintf("%s/_template/models", root);

    assert_int_equal(mkdir(sub, 0755), 0);
    put(sub, "weights.txt", "x", 0644);
    put(root, "_template/.dockerignore", "my-service.tar\n", 0644);
    assert_int_equal(create(root, "foo", false, 0, NULL, err, sizeof(err)), 0);
    assert_false(exists(root, "foo/models"));
    assert_true(exists(root, "foo/.dockerignore"));
    free(sub);
}

/* Errors found while the temporary folder is being filled or checked leave nothing. */
static void test_no_temp_after_error(void **state)
{
    const char *root = *state;
    char err[1024], *template = xasprintf("%s/_template", root);
    char *other = xasprintf("%s/other-template", root);

    /* Unbalanced gpu markers. */
    put(template, "docker-compose.yml", "services:\n  # >>> gpu\n  x: 1\n", 0644);
    assert_int_equal(create(root, "foo", false, 0, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "_template/docker-compose.yml:2: the gpu block"));
    assert_int_equal(hidden_entries(root), 0);
    assert_false(exists(root, "foo"));
    put(template, "docker-compose.yml", template_compose, 0644);

    /* A service.yaml the parser refuses. */
    put(template, "service.yaml", "name: my-service\nports: [\"8001:8000\"]\nrestart: maybe\n",
        0644);
    assert_int_equal(create(root, "foo", false, 0, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "the daemon refuses: line 3:"));
    assert_int_equal(hidden_entries(root), 0);
    assert_false(exists(root, "foo"));

    /* A service.yaml without the template's name or port, or the GPU flag. */
    put(template, "service.yaml", "name: fixed\nports: [\"8001:8000\"]\ngpu_required: true\n",
        0644);
    assert_int_equal(create(root, "foo", true, 0, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "must say name: my-service"));
    put(template, "service.yaml", "name: my-service\nports: [\"8000:8000\"]\n", 0644);
    assert_int_equal(create(root, "foo", true, 0, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "must declare host port 8001 first"));
    put(template, "service.yaml", "name: my-service\nports: [\"8001:8000\"]\n", 0644);
    assert_int_equal(create(root, "foo", true, 0, NULL, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "must say gpu_required: true"));
    assert_int_equal(hidden_entries(root), 0);
    assert_false(exists(root, "foo"));

    /* No service.yaml at all, and no template folder. */
    assert_int_equal(mkdir(other, 0755), 0);
    put(other, "app.py", "", 0644);
    {
        struct scaffold_request req = {.name = "foo", .services_dir = root, .template_dir = other};
        char *path = NULL;
        uint16_t port;

        assert_int_equal(scaffold_create(&req, &path, &port, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "has no service.yaml"));
        req.template_dir = "/nonexistent/template";
        assert_int_equal(scaffold_create(&req, &path, &port, err, sizeof(err)), -ENOENT);
        assert_non_null(strstr(err, "cannot read the template folder /nonexistent/template"));
    }
    assert_int_equal(hidden_entries(root), 0);
    assert_false(exists(root, "foo"));
    free(other);
    free(template);
}

/* --template names any folder; SERVICES may end with a slash. */
static void test_template_elsewhere(void **state)
{
    const char *root = *state;
    char *template = xasprintf("%s/_template", root), *services = xasprintf("%s/svc", root);
    char *slashed = xasprintf("%s/", services), *path = NULL, *want, err[1024];
    struct scaffold_request req = {
        .name = "foo", .services_dir = slashed, .template_dir = template};
    uint16_t port;
    struct manifest *m;

    assert_int_equal(mkdir(services, 0755), 0);
    assert_int_equal(scaffold_create(&req, &path, &port, err, sizeof(err)), 0);
    want = xasprintf("%s/foo", services);
    assert_string_equal(path, want);
    free(want);
    assert_int_equal(port, 8010);
    m = load(services, "foo");
    assert_string_equal(m->name, "foo");
    manifest_free(m);
    free(path);
    free(slashed);
    free(services);
    free(template);
}

static void test_services_folder_missing(void **state)
{
    const char *root = *state;
    char *missing = xasprintf("%s/nope", root), err[1024];

    assert_int_equal(create(missing, "foo", false, 0, NULL, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "cannot read the services folder"));
    free(missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_name_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_first_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_skips_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_counts_clashing_services, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_exhausted, setup, teardown),
        cmocka_unit_test(test_render_name_and_port),
        cmocka_unit_test(test_render_gpu_line),
        cmocka_unit_test(test_render_gpu_block),
        cmocka_unit_test(test_render_bad_blocks),
        cmocka_unit_test(test_render_binary),
        cmocka_unit_test_setup_teardown(test_create_cpu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_gpu, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_existing_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_taken_port, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_template_port_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_symlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subfolders_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_temp_after_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_template_elsewhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_services_folder_missing, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
