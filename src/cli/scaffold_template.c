/* The service template filled in for a new service: its text with the name, port and GPU
 * flag of the new service (scaffold_render()), and its files copied that way into the
 * folder being built (scaffold_copy_template()). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/scaffold_internal.h"
#include "core/manifest.h"
#include "lib/alloc.h"
#include "lib/io.h"

/* The lines of docker-compose.yml around what only a GPU service needs. */
#define GPU_BLOCK_BEGIN "# >>> gpu"
#define GPU_BLOCK_END   "# <<< gpu"
#define COMPOSE_FILE    "docker-compose.yml"

/* A growing text; always NUL-terminated once something was added. */
struct text {
    char *data;
    size_t len;
    size_t capacity;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->capacity - t->len < n + 1) {
        size_t want = t->len + n + 1;

        t->capacity = t->capacity * 2 > want ? t->capacity * 2 : want;
        t->data = xrealloc(t->data, t->capacity);
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

/* The state of one file's rendering, line by line. */
struct render {
    const struct scaffold_params *params;
    const char *file_name;
    char port[8];
    bool manifest; /* the file is service.yaml */
    bool compose;  /* the file is docker-compose.yml */
    int line;
    int block_line; /* where the open gpu block began, 0 outside one */
    struct text out;
};

/* Appends s with the template's name and port filled in. One pass looks for both, so
 * that a name that holds the template's port ("api-8001") is left as it is. */
static void render_add(struct render *rd, const char *s, size_t n)
{
    const size_t name_len = strlen(SCAFFOLD_TEMPLATE_NAME),
                 port_len = strlen(SCAFFOLD_TEMPLATE_PORT);
    size_t start = 0, i = 0;

    while (i < n) {
        const char *with = NULL;
        size_t skip = 0;

        if (n - i >= name_len && memcmp(s + i, SCAFFOLD_TEMPLATE_NAME, name_len) == 0) {
            with = rd->params->name;
            skip = name_len;
        } else if (n - i >= port_len && memcmp(s + i, SCAFFOLD_TEMPLATE_PORT, port_len) == 0) {
            with = rd->port;
            skip = port_len;
        }
        if (!with) {
            i++;
            continue;
        }
        text_add(&rd->out, s + start, i - start);
        text_add(&rd->out, with, strlen(with));
        i += skip;
        start = i;
    }
    text_add(&rd->out, s + start, n - start);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* The length of a line's indentation (spaces and tabs). */
static size_t indent_len(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i;
}

/* True when the line, without its surrounding blanks, is want. */
static bool line_is(const char *s, size_t n, const char *want)
{
    size_t start = indent_len(s, n);

    while (n > start && is_blank(s[n - 1]))
        n--;
    return n - start == strlen(want) && memcmp(s + start, want, n - start) == 0;
}

/* Where "true" stands in a line "gpu_required: true" (a comment may follow), or 0. */
static size_t gpu_true_at(const char *s, size_t n)
{
    static const char key[] = "gpu_required:";
    size_t i = indent_len(s, n);

    if (n - i < sizeof(key) - 1 || memcmp(s + i, key, sizeof(key) - 1) != 0)
        return 0;
    i += sizeof(key) - 1;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (n - i < 4 || memcmp(s + i, "true", 4) != 0)
        return 0;
    if (i + 4 < n && !is_blank(s[i + 4]))
        return 0;
    return i;
}

/* Appends one line (without its newline): a gpu marker checked and kept, a line of the
 * gpu block commented out and the GPU flag turned off for a CPU service, the name and
 * port filled in everywhere. */
static int render_line(struct render *rd, const char *s, size_t n, char *err, size_t err_size)
{
    bool cpu = !rd->params->gpu;
    size_t at;

    if (rd->compose && line_is(s, n, GPU_BLOCK_BEGIN)) {
        if (rd->block_line)
            return scaffold_fail(
                err, err_size, -EINVAL,
                "%s:%d: \"%s\" inside the gpu block opened on line %d: close that one "
                "with \"%s\" first",
                rd->file_name, rd->line, GPU_BLOCK_BEGIN, rd->block_line, GPU_BLOCK_END);
        rd->block_line = rd->line;
    } else if (rd->compose && line_is(s, n, GPU_BLOCK_END)) {
        if (!rd->block_line)
            return scaffold_fail(err, err_size, -EINVAL, "%s:%d: \"%s\" without a \"%s\" before it",
                                 rd->file_name, rd->line, GPU_BLOCK_END, GPU_BLOCK_BEGIN);
        rd->block_line = 0;
    } else if (rd->block_line && cpu && !line_is(s, n, "")) {
        at = indent_len(s, n);
        render_add(rd, s, at);
        text_add(&rd->out, "# ", 2);
        render_add(rd, s + at, n - at);
        return 0;
    } else if (rd->manifest && cpu && (at = gpu_true_at(s, n)) != 0) {
        render_add(rd, s, at);
        text_add(&rd->out, "false", 5);
        render_add(rd, s + at + 4, n - at - 4);
        return 0;
    }
    render_add(rd, s, n);
    return 0;
}

int scaffold_render(const char *file_name, const char *text, size_t len,
                    const struct scaffold_params *p, char **ret, size_t *ret_len, char *err,
                    size_t err_size)
{
    struct render rd = {
        .params = p,
        .file_name = file_name,
        .manifest = strcmp(file_name, MANIFEST_FILE_NAME) == 0,
        .compose = strcmp(file_name, COMPOSE_FILE) == 0,
    };
    size_t at = 0;
    int r = 0;

    snprintf(rd.port, sizeof(rd.port), "%u", (unsigned)p->port);
    text_add(&rd.out, "", 0);
    if (memchr(text, '\0', len)) {
        text_add(&rd.out, text, len); /* binary: as it is */
        at = len;
    }
    while (at < len && r == 0) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - (text + at)) : len - at;

        rd.line++;
        r = render_line(&rd, text + at, n, err, err_size);
        if (nl)
            text_add(&rd.out, "\n", 1);
        at += n + (nl ? 1 : 0);
    }
    if (r == 0 && rd.block_line)
        r = scaffold_fail(err, err_size, -EINVAL,
                          "%s:%d: the gpu block opened here has no \"%s\" line", file_name,
                          rd.block_line, GPU_BLOCK_END);
    if (r < 0) {
        free(rd.out.data);
        return r;
    }
    *ret = rd.out.data;
    *ret_len = rd.out.len;
    return 0;
}

/* Reads the regular file name of dir_fd whole (it may not be a symlink), at most
 * SCAFFOLD_FILE_MAX bytes. */
static int read_file(int dir_fd, const char *name, char **ret, size_t *ret_len)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    size_t len = 0;
    char *buf;
    int r = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0)
        r = -errno;
    else if (!S_ISREG(st.st_mode))
        r = -EINVAL;
    else if (st.st_size > SCAFFOLD_FILE_MAX)
        r = -EFBIG;
    if (r < 0) {
        close(fd);
        return r;
    }
    buf = xmalloc((size_t)st.st_size + 1);
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : 0;
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    if (r < 0) {
        free(buf);
        return r;
    }
    *ret = buf;
    *ret_len = len;
    return 0;
}

/* Creates the file name in dir_fd holding buf, with the template file's mode. */
static int write_file(int dir_fd, const char *name, const char *buf, size_t len, mode_t mode)
{
    int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int r;

    if (fd < 0)
        return -errno;
    r = write_all(fd, buf, len);
    if (r == 0 && fchmod(fd, mode) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    return r;
}

/* A new service folder being filled from the template. */
struct build {
    const struct scaffold_params *params;
    const char *template_dir;
    const char *tmp_path;
    int template_fd;
    int tmp_fd;
    bool has_manifest;
};

/* Copies one regular file of the template, filled in. */
static int copy_file(struct build *b, const char *name, mode_t mode, char *err, size_t err_size)
{
    char *text = NULL, *out = NULL, msg[512];
    size_t len = 0, out_len = 0;
    int r;

    r = read_file(b->template_fd, name, &text, &len);
    if (r == -EFBIG)
        return scaffold_fail(err, err_size, r, "%s/%s is larger than %d bytes", b->template_dir,
                             name, SCAFFOLD_FILE_MAX);
    if (r < 0)
        return scaffold_fail(err, err_size, r, "cannot read %s/%s: %s", b->template_dir, name,
                             strerror(-r));
    r = scaffold_render(name, text, len, b->params, &out, &out_len, msg, sizeof(msg));
    free(text);
    if (r < 0)
        return scaffold_fail(err, err_size, r, "%s/%s", b->template_dir, msg);
    r = write_file(b->tmp_fd, name, out, out_len, mode);
    free(out);
    if (r < 0)
        return scaffold_fail(err, err_size, r, "cannot write %s/%s: %s", b->tmp_path, name,
                             strerror(-r));
    if (strcmp(name, MANIFEST_FILE_NAME) == 0)
        b->has_manifest = true;
    return 0;
}

/* Copies one entry of the template: regular files filled in, folders left out, symlinks
 * and anything else refused. */
static int copy_entry(struct build *b, const char *name, char *err, size_t err_size)
{
    struct stat st;

    if (fstatat(b->template_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return scaffold_fail(err, err_size, -errno, "cannot read %s/%s: %s", b->template_dir, name,
                             strerror(errno));
    if (S_ISDIR(st.st_mode))
        return 0;
    if (S_ISLNK(st.st_mode))
        return scaffold_fail(
            err, err_size, -ELOOP,
            "%s/%s is a symlink: a template holds plain files only (copy the file it "
            "points to into the template)",
            b->template_dir, name);
    if (!S_ISREG(st.st_mode))
        return scaffold_fail(err, err_size, -EINVAL, "%s/%s is not a regular file", b->template_dir,
                             name);
    return copy_file(b, name, st.st_mode & 0777, err, err_size);
}

/* Copies every regular file of the template folder into the temporary folder. *ret_mode
 * gets the template folder's mode, for the new folder. */
static int fill_folder(struct build *b, mode_t *ret_mode, char *err, size_t err_size)
{
    DIR *d = opendir(b->template_dir);
    struct dirent *de;
    struct stat st;
    size_t entries = 0;
    int r = 0;

    if (!d)
        return scaffold_fail(
            err, err_size, -errno,
            "cannot read the template folder %s: %s (give another with --template)",
            b->template_dir, strerror(errno));
    b->template_fd = dirfd(d);
    if (fstat(b->template_fd, &st) < 0)
        r = scaffold_fail(err, err_size, -errno, "cannot read the template folder %s: %s",
                          b->template_dir, strerror(errno));
    while (r == 0) {
        errno = 0;
        de = readdir(d);
        if (!de) {
            if (errno)
                r = scaffold_fail(err, err_size, -errno, "cannot read the template folder %s: %s",
                                  b->template_dir, strerror(errno));
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (++entries > SCAFFOLD_ENTRIES_MAX)
            r = scaffold_fail(err, err_size, -E2BIG,
                              "the template folder %s has more than %d entries", b->template_dir,
                              SCAFFOLD_ENTRIES_MAX);
        else
            r = copy_entry(b, de->d_name, err, err_size);
    }
    closedir(d);
    b->template_fd = -1;
    if (r == 0 && !b->has_manifest)
        r = scaffold_fail(err, err_size, -EINVAL, "the template folder %s has no %s",
                          b->template_dir, MANIFEST_FILE_NAME);
    if (r == 0)
        *ret_mode = (st.st_mode & 0777) | S_IRWXU;
    return r;
}

int scaffold_copy_template(const char *template_dir, const struct scaffold_params *params,
                           int dest_fd, const char *dest_path, mode_t *ret_mode, char *err,
                           size_t err_size)
{
    struct build b = {
        .params = params,
        .template_dir = template_dir,
        .tmp_path = dest_path,
        .template_fd = -1,
        .tmp_fd = dest_fd,
    };

    return fill_folder(&b, ret_mode, err, err_size);
}
