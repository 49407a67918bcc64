/* The state folder: an atomically written JSON file and the log files' names. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "state.h"

/* mkdir -p for the two levels we need. */
static int make_folder(const char *path)
{
    struct stat st;

    if (mkdir(path, 0755) == 0)
        return 0;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    return errno == EEXIST ? -ENOTDIR : -errno;
}

int state_prepare(const char *dir)
{
    char *logs = xasprintf("%s/logs", dir);
    int r = make_folder(dir);

    if (r == 0)
        r = make_folder(logs);
    free(logs);
    return r;
}

/* Writes all of buf to fd. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int state_save(const char *dir, json_t *doc)
{
    char *path = xasprintf("%s/%s", dir, STATE_FILE_NAME);
    char *tmp = xasprintf("%s/.%s.tmp", dir, STATE_FILE_NAME);
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);
    int fd, dir_fd, r = 0;

    if (!text)
        fatal("out of memory (json_dumps)");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    r = write_all(fd, text, strlen(text));
    if (r == 0)
        r = write_all(fd, "\n", 1);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        goto out;
    }
    /* The rename itself must reach the disk too. */
    dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
        fsync(dir_fd);
        close(dir_fd);
    }
out:
    free(text);
    free(tmp);
    free(path);
    return r;
}

int state_load(const char *dir, json_t **ret, char *err, size_t err_size)
{
    char *path = xasprintf("%s/%s", dir, STATE_FILE_NAME);
    json_error_t jerr;
    struct stat st;
    json_t *doc;

    if (stat(path, &st) < 0) {
        int r = errno == ENOENT ? 0 : -errno;
        if (r == 0)
            *ret = json_object();
        else
            snprintf(err, err_size, "%s: %s", path, strerror(errno));
        free(path);
        return r;
    }
    if (st.st_size > STATE_SIZE_MAX) {
        snprintf(err, err_size, "%s is larger than %d bytes", path, STATE_SIZE_MAX);
        free(path);
        return -EFBIG;
    }
    doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc || !json_is_object(doc)) {
        snprintf(err, err_size, "%s:%d: %s", path, jerr.line,
                 doc ? "not a JSON object" : jerr.text);
        json_decref(doc);
        free(path);
        return -EINVAL;
    }
    free(path);
    *ret = doc;
    return 0;
}

char *state_log_path(const char *dir, const char *name)
{
    return xasprintf("%s/logs/%s.log", dir, name);
}
