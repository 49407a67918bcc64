/* The client core: libcurl's easy API (blocking is fine in a command), the key sent as a
 * bearer token, and a failure told as one sentence with the exit code it maps to. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "cli/client.h"
#include "lib/alloc.h"

void client_defaults(struct client *c)
{
    if (!c->url)
        c->url = getenv("NANNY_URL");
    if (!c->url || !*c->url)
        c->url = CLIENT_DEFAULT_URL;
    if (!c->key)
        c->key = getenv("NANNY_KEY");
    if (!c->cacert)
        c->cacert = getenv("NANNY_CACERT");
}

static size_t on_data(char *data, size_t size, size_t n, void *user)
{
    struct client_response *resp = user;
    size_t len = size * n;

    resp->body = xrealloc(resp->body, resp->len + len + 1);
    memcpy(resp->body + resp->len, data, len);
    resp->len += len;
    resp->body[resp->len] = '\0';
    return len;
}

/* An easy handle for METHOD url+path with the key, the CA and body (JSON or NULL); the
 * headers it sends go to *ret_headers (freed by the caller). */
static CURL *client_easy(const struct client *c, const char *method, const char *path,
                         const char *body, const char *const *extra,
                         struct curl_slist **ret_headers)
{
    struct curl_slist *headers = NULL;
    size_t base_len = strlen(c->url);
    char *url;
    CURL *curl = curl_easy_init();

    if (!curl)
        abort();
    while (base_len > 0 && c->url[base_len - 1] == '/')
        base_len--;
    url = xasprintf("%.*s%s", (int)base_len, c->url, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    free(url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    /* A daemon behind an address that drops packets: say so rather than hang. */
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, CLIENT_CONNECT_TIMEOUT_MS);
    if (c->cacert && *c->cacert)
        curl_easy_setopt(curl, CURLOPT_CAINFO, c->cacert);
    if (c->key && *c->key) {
        char *auth = xasprintf("Authorization: Bearer %s", c->key);
        headers = curl_slist_append(headers, auth);
        free(auth);
    }
    for (size_t i = 0; extra && extra[i]; i++)
        headers = curl_slist_append(headers, extra[i]);
    if (body) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_COPYPOSTFIELDS, body);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    *ret_headers = headers;
    return curl;
}

/* What a transfer's end means: 0 (an answer came, whatever its status), or an exit code
 * with one sentence in why (when not NULL) and, unless quiet, on stderr. */
static int client_outcome(const struct client *c, CURL *curl, CURLcode rc, bool quiet, char *why,
                          size_t why_size)
{
    curl_off_t connected_us = 0;
    char sentence[CLIENT_WHY_MAX];
    int r = CLIENT_EXIT_UNREACHABLE;

    if (rc == CURLE_OK)
        return 0;
    curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connected_us);
    if (rc == CURLE_OPERATION_TIMEDOUT && connected_us == 0) {
        snprintf(sentence, sizeof(sentence), "no nanny answers at %s: no connection within %ld s",
                 c->url, CLIENT_CONNECT_TIMEOUT_MS / 1000);
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(sentence, sizeof(sentence), "timed out waiting for the nanny at %s", c->url);
        r = CLIENT_EXIT_TIMEOUT;
    } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST) {
        snprintf(sentence, sizeof(sentence), "no nanny answers at %s: is it running? (./start.sh)",
                 c->url);
    } else if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
        snprintf(sentence, sizeof(sentence),
                 "the nanny at %s shows a certificate this command does not trust: give its CA "
                 "with --cacert or NANNY_CACERT (%s)",
                 c->url, curl_easy_strerror(rc));
    } else {
        snprintf(sentence, sizeof(sentence), "no nanny answers at %s: %s", c->url,
                 curl_easy_strerror(rc));
    }
    if (!quiet)
        fprintf(stderr, "nanny: %s\n", sentence);
    if (why)
        snprintf(why, why_size, "%s", sentence);
    return r;
}

/* The answer is in: its status, and its body as JSON when it is some. */
static void response_finish(CURL *curl, struct client_response *resp)
{
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
    if (resp->body)
        resp->json = json_loadb(resp->body, resp->len, 0, NULL);
    else
        resp->body = xstrdup("");
}

int client_request(const struct client *c, const char *method, const char *path, const char *body,
                   struct client_response *resp)
{
    struct curl_slist *headers;
    CURL *curl;
    int r;

    memset(resp, 0, sizeof(*resp));
    curl = client_easy(c, method, path, body, NULL, &headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp);
    if (c->timeout_ms > 0)
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    r = client_outcome(c, curl, curl_easy_perform(curl), false, NULL, 0);
    if (r == 0)
        response_finish(curl, resp);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (r)
        client_response_done(resp);
    return r;
}

/* --- transfers side by side ------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* A 2xx answer's body goes to the transfer's function; any other is kept for
 * client_fail(). */
static size_t on_stream_data(char *data, size_t size, size_t n, void *user)
{
    struct client_transfer *t = user;
    size_t len = size * n;
    long status = 0;

    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    if (!t->on_data || status < 200 || status >= 300)
        return on_data(data, size, n, &t->resp);
    return t->on_data(t->data, data, len) ? len : 0;
}

void client_transfer_add(struct client_run *run, struct client_transfer *t)
{
    if (run->in_perform) {
        /* libcurl takes no new handle from inside its callbacks: at the next turn. */
        if (run->n_pending == CLIENT_PENDING_MAX)
            abort();
        run->pending[run->n_pending++] = t;
        return;
    }
    memset(&t->resp, 0, sizeof(t->resp));
    t->result = 0;
    t->why[0] = '\0';
    t->done = false;
    t->stopped = false;
    t->curl = client_easy(run->client, t->method, t->path, t->body, t->headers, &t->slist);
    curl_easy_setopt(t->curl, CURLOPT_WRITEFUNCTION, on_stream_data);
    curl_easy_setopt(t->curl, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->curl, CURLOPT_PRIVATE, t);
    if (t->timeout_ms > 0)
        curl_easy_setopt(t->curl, CURLOPT_TIMEOUT_MS, t->timeout_ms);
    if (!run->multi) {
        run->multi = curl_multi_init();
        if (!run->multi)
            abort();
    }
    curl_multi_add_handle(run->multi, t->curl);
    run->active++;
}

/* A transfer ended: its outcome, its answer, its handle gone. */
static void transfer_end(struct client_run *run, struct client_transfer *t, CURLcode rc)
{
    curl_multi_remove_handle(run->multi, t->curl);
    run->active--;
    t->done = true;
    if (rc == CURLE_WRITE_ERROR && t->on_data) {
        t->stopped = true; /* its function said stop */
        t->result = 0;
    } else {
        t->result = client_outcome(run->client, t->curl, rc, t->quiet, t->why, sizeof(t->why));
    }
    if (t->result == 0)
        response_finish(t->curl, &t->resp);
    else
        client_response_done(&t->resp);
    curl_slist_free_all(t->slist);
    t->slist = NULL;
    curl_easy_cleanup(t->curl);
    t->curl = NULL;
    if (t->on_done)
        t->on_done(t->data, t);
}

void client_transfer_cancel(struct client_run *run, struct client_transfer *t)
{
    if (t->done || !t->curl)
        return;
    t->on_done = NULL;
    transfer_end(run, t, CURLE_OK);
    client_response_done(&t->resp); /* nobody reads a cancelled answer */
    t->stopped = true;
}

int client_run(struct client_run *run, unsigned tick_ms)
{
    struct sigaction sa = {.sa_handler = on_interrupt}, old_int, old_term;
    int r = 0;

    interrupted = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    if (!run->multi) {
        run->multi = curl_multi_init();
        if (!run->multi)
            abort();
    }
    while ((run->active > 0 || run->input_open) && !run->stop && !interrupted) {
        struct curl_waitfd input = {.fd = run->input_fd, .events = CURL_WAIT_POLLIN};
        int running, left;
        CURLMsg *msg;

        run->in_perform = true;
        curl_multi_perform(run->multi, &running);
        run->in_perform = false;
        while ((msg = curl_multi_info_read(run->multi, &left))) {
            struct client_transfer *t;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
            transfer_end(run, t, msg->data.result);
        }
        for (size_t i = 0; i < run->n_pending; i++)
            client_transfer_add(run, run->pending[i]);
        if (run->n_pending) {
            run->n_pending = 0;
            continue;
        }
        if ((run->active == 0 && !run->input_open) || run->stop || interrupted)
            break;
        /* Short waits: a signal does not always cut curl's poll short. */
        curl_multi_poll(run->multi, &input, run->input_open ? 1 : 0,
                        tick_ms && tick_ms < 200 ? (int)tick_ms : 200, NULL);
        if (run->on_pass)
            run->on_pass(run->tick_data);
        if (run->tick && tick_ms) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            uint64_t ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
            if (ms - run->ticked_ms >= tick_ms) {
                run->ticked_ms = ms;
                run->tick(run->tick_data);
            }
        }
    }
    if (interrupted)
        r = -1;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return r;
}

void client_run_done(struct client_run *run)
{
    if (run->multi)
        curl_multi_cleanup(run->multi);
    run->multi = NULL;
}

int client_fail(const char *cmd, const char *name, const struct client_response *resp)
{
    const char *message = json_string_value(json_object_get(resp->json, "message"));
    const char *error = json_string_value(json_object_get(resp->json, "error"));
    const char *holder = json_string_value(json_object_get(resp->json, "holder"));

    if (resp->status >= 200 && resp->status < 300)
        return CLIENT_EXIT_OK;
    if (!message)
        message = "the nanny gave no message";
    if (resp->status == 409 && error && strcmp(error, "gpu_conflict") == 0) {
        fprintf(stderr, "nanny %s: %s\n", cmd, message);
        fprintf(stderr, "%s holds the GPU; to stop it and start %s: nanny start %s --force\n",
                holder ? holder : "another service", name ? name : "this one",
                name ? name : "NAME");
        return CLIENT_EXIT_CONFLICT;
    }
    fprintf(stderr, "nanny %s: %s (HTTP %ld)\n", cmd, message, resp->status);
    if (resp->status == 401 || resp->status == 403)
        return CLIENT_EXIT_UNAUTHORIZED;
    if (resp->status == 504)
        return CLIENT_EXIT_TIMEOUT;
    return CLIENT_EXIT_FAILED;
}

void client_response_done(struct client_response *resp)
{
    free(resp->body);
    json_decref(resp->json);
    memset(resp, 0, sizeof(*resp));
}

char *client_escape(const char *name)
{
    char *e = curl_easy_escape(NULL, name, 0);
    char *r;

    if (!e)
        abort();
    r = xstrdup(e);
    curl_free(e);
    return r;
}
