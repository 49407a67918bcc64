/* The CLI's client core: one blocking HTTP request to the daemon with libcurl, and the
 * daemon's answers mapped to the exit codes of SPEC section 7. Runs as a command, never
 * in the daemon. */
#ifndef NANNY_CLI_CLIENT_H
#define NANNY_CLI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* SPEC section 7's exit codes. */
enum {
    CLIENT_EXIT_OK = 0,
    CLIENT_EXIT_FAILED = 1,
    CLIENT_EXIT_USAGE = 2,
    CLIENT_EXIT_CONFLICT = 3,
    CLIENT_EXIT_UNREACHABLE = 4,
    CLIENT_EXIT_TIMEOUT = 5,
    CLIENT_EXIT_UNAUTHORIZED = 6,
};

#define CLIENT_DEFAULT_URL        "http://127.0.0.1:8080"
#define CLIENT_CONNECT_TIMEOUT_MS 10000L /* a connection (and TLS handshake) at most */
#define CLIENT_WHY_MAX            512    /* a failure's sentence */

/* Where the daemon is and how to reach it: --url / NANNY_URL, --key / NANNY_KEY,
 * --cacert / NANNY_CACERT. Borrowed strings; key and cacert may be NULL. */
struct client {
    const char *url;
    const char *key;
    const char *cacert;
    long timeout_ms; /* the whole request; 0: none */
};

struct client_response {
    long status;
    char *body; /* NUL-terminated */
    size_t len;
    json_t *json; /* the body as JSON, or NULL */
};

/* Fills the unset fields of c from the environment and the default. */
void client_defaults(struct client *c);

/* Sends METHOD url+path (body JSON or NULL). 0 with *resp filled whatever the status;
 * else an exit code, with one sentence printed on stderr: CLIENT_EXIT_UNREACHABLE or
 * CLIENT_EXIT_TIMEOUT. */
int client_request(const struct client *c, const char *method, const char *path, const char *body,
                   struct client_response *resp);

/* The exit code for a response that is not 2xx, with the daemon's message printed on
 * stderr after "nanny CMD: "; a 409 GPU conflict names the holder and the command that
 * forces it (for NAME). 0 for a 2xx. */
int client_fail(const char *cmd, const char *name, const struct client_response *resp);

void client_response_done(struct client_response *resp);

/* --- transfers side by side (start --wait's live line, logs -f) -------------------- */

struct curl_slist;
struct client_transfer;
/* A piece of a 2xx answer's body as it comes; false stops the transfer (not an error). */
typedef bool (*client_data_fn)(void *data, const char *buf, size_t len);

/* One request among others. The caller fills the first fields; the rest is the outcome. */
struct client_transfer {
    const char *method, *path, *body; /* body: JSON or NULL */
    const char *const *headers;       /* extra "Name: value" lines, NULL-terminated */
    long timeout_ms;                  /* 0: none */
    bool quiet;                       /* a failure is not told on stderr */
    client_data_fn on_data;           /* NULL: the body is kept in resp */
    void (*on_done)(void *data, struct client_transfer *t); /* NULL: none */
    void *data;
    /* the outcome: */
    bool done;
    bool stopped;                /* on_data said stop, or it was cancelled */
    int result;                  /* 0: resp holds the answer; else an exit code (told) */
    char why[CLIENT_WHY_MAX];    /* and its sentence, also when quiet */
    struct client_response resp; /* status; the body when kept or not 2xx */
    /* libcurl's: */
    void *curl;
    struct curl_slist *slist;
};

#define CLIENT_PENDING_MAX 4

/* Transfers run side by side by client_run(). */
struct client_run {
    const struct client *client;
    void (*tick)(void *data); /* called every tick_ms while it runs (NULL: none) */
    void *tick_data;
    bool stop; /* set from a callback: client_run() returns */
    /* Input watched beside the transfers: while input_open, a wait also ends when
     * input_fd has something to read, and the run goes on with no transfer left.
     * on_pass (NULL: none) is called after each wait, with tick_data. */
    int input_fd;
    bool input_open;
    void (*on_pass)(void *data);
    /* its own: */
    void *multi;
    bool in_perform;
    struct client_transfer *pending[CLIENT_PENDING_MAX]; /* added from inside callbacks */
    size_t n_pending;
    unsigned active;
    uint64_t ticked_ms;
};

/* Starts t (it must outlive its transfer); may be called from callbacks. */
void client_transfer_add(struct client_run *run, struct client_transfer *t);

/* Ends t now, its on_done not called and its answer dropped. */
void client_transfer_cancel(struct client_run *run, struct client_transfer *t);

/* Runs until no transfer is left (and the input is closed) or run->stop is set: 0; or -1
 * when SIGINT or SIGTERM came. Transfers not done then are the caller's to cancel. */
int client_run(struct client_run *run, unsigned tick_ms);

/* Frees what the run holds, once every transfer is done or cancelled. */
void client_run_done(struct client_run *run);

/* NAME escaped for a URL path. New string. */
char *client_escape(const char *name);

#endif
