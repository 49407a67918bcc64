/* libcurl's multi-socket API on the libuv loop, after curl's docs/examples/multi-uv.c, with
 * finished transfers read after every action (the timer path included) and poll errors
 * passed on as CURL_CSELECT_ERR. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "lib/alloc.h"
#include "lib/fetch.h"
#include "lib/log.h"

struct fetcher {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    struct fetch *active; /* list of running transfers */
    unsigned n_active;
    bool closing;
};

/* The poll handle for one of curl's sockets; freed in its close callback. */
struct socket_watch {
    uv_poll_t poll;
    curl_socket_t fd;
    struct fetcher *fetcher;
};

struct fetch {
    struct fetcher *fetcher;
    CURL *easy;
    fetch_done_fn done;
    void *data;
    uint64_t started_ns;
    char *body;
    size_t body_len, body_max;
    bool cut;              /* the body reached body_max: the transfer was ended there */
    fetch_data_fn on_data; /* a stream: the body goes here as it comes, not into body */
    char error[CURL_ERROR_SIZE];
    struct fetch *next, *prev;
};

static void fetch_unlink(struct fetch *t)
{
    struct fetcher *f = t->fetcher;

    if (t->prev)
        t->prev->next = t->next;
    else
        f->active = t->next;
    if (t->next)
        t->next->prev = t->prev;
    f->n_active--;
}

/* Ends a transfer: out of the list and the multi handle, and freed. */
static void fetch_destroy(struct fetch *t)
{
    fetch_unlink(t);
    curl_multi_remove_handle(t->fetcher->multi, t->easy);
    curl_easy_cleanup(t->easy);
    free(t->body);
    free(t);
}

/* Reports every finished transfer; must run after each curl_multi_socket_action(). */
static void fetcher_read_finished(struct fetcher *f)
{
    CURLMsg *msg;
    int pending;
    char error[CURL_ERROR_SIZE];
    char *body;
    fetch_done_fn done;
    void *data;

    while ((msg = curl_multi_info_read(f->multi, &pending))) {
        struct fetch *t;
        struct fetch_result res = {0};

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        res.curl_code = msg->data.result;
        if (t->cut && res.curl_code == CURLE_WRITE_ERROR)
            res.curl_code = CURLE_OK; /* ended by us at the cap: the answer is what came */
        res.truncated = t->cut;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &res.status);
        res.latency_ms = (uv_hrtime() - t->started_ns) / 1000000;
        if (res.curl_code != CURLE_OK) {
            snprintf(error, sizeof(error), "%s",
                     t->error[0] ? t->error : curl_easy_strerror(msg->data.result));
            res.error = error;
        }
        /* The transfer ends before its callback runs, so that the callback may start new
         * ones or cancel others freely; the body lives on until the callback returns. */
        body = t->body;
        t->body = NULL;
        res.body = body ? body : "";
        res.body_len = t->body_len;
        done = t->done;
        data = t->data;
        fetch_destroy(t);
        done(data, &res);
        free(body);
    }
}

static void on_socket_closed(uv_handle_t *h)
{
    free(h->data);
}

/* One of curl's sockets is ready (or failed): let curl act on it. */
static void on_socket_ready(uv_poll_t *p, int status, int events)
{
    struct socket_watch *w = p->data;
    struct fetcher *f = w->fetcher;
    int flags = 0, running;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(f->multi, w->fd, flags, &running);
    fetcher_read_finished(f);
}

/* curl tells which events it wants on a socket: start, change or end its uv_poll. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
    struct fetcher *f = userp;
    struct socket_watch *w = socketp;
    int events = 0;

    if (action == CURL_POLL_REMOVE) {
        if (w) {
            uv_poll_stop(&w->poll);
            uv_close((uv_handle_t *)&w->poll, on_socket_closed);
            curl_multi_assign(f->multi, fd, NULL);
        }
        return 0;
    }
    if (!w) {
        w = xcalloc(1, sizeof(*w));
        w->fd = fd;
        w->fetcher = f;
        if (uv_poll_init_socket(f->loop, &w->poll, fd) < 0) {
            free(w);
            return -1;
        }
        w->poll.data = w;
        curl_multi_assign(f->multi, fd, w);
    }
    if (action & CURL_POLL_IN)
        events |= UV_READABLE;
    if (action & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&w->poll, events, on_socket_ready);
    return 0;
}

/* curl's timer expired: let it act on timeouts. */
static void on_timeout(uv_timer_t *timer)
{
    struct fetcher *f = timer->data;
    int running;

    curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    fetcher_read_finished(f);
}

/* curl asks for its timer to be set (or stopped, for -1). */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct fetcher *f = userp;

    if (f->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&f->timer);
    else
        uv_timer_start(&f->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

int fetcher_new(uv_loop_t *loop, struct fetcher **ret)
{
    struct fetcher *f = xcalloc(1, sizeof(*f));

    f->loop = loop;
    uv_timer_init(loop, &f->timer);
    f->timer.data = f;
    *ret = f;
    return 0;
}

/* Starts libcurl on the first transfer: its TLS and SSH libraries cost about 2 MiB of
 * memory once initialized, which an idle daemon need not pay. */
static int fetcher_start_curl(struct fetcher *f)
{
    static bool curl_ready;

    if (f->multi)
        return 0;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return -EIO;
        curl_ready = true;
    }
    f->multi = curl_multi_init();
    if (!f->multi)
        fatal("out of memory (curl_multi_init)");
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
    /* Idle connections kept for reuse (health checks, the Docker Engine API). */
    curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, (long)FETCH_KEEP_CONNECTIONS);
    return 0;
}

static void on_fetcher_closed(uv_handle_t *h)
{
    free(h->data);
}

void fetcher_free(struct fetcher *f)
{
    if (!f)
        return;
    while (f->active)
        fetch_destroy(f->active);
    f->closing = true;
    if (f->multi)
        curl_multi_cleanup(f->multi);
    uv_close((uv_handle_t *)&f->timer, on_fetcher_closed);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct fetch *t = userdata;
    size_t n = size * nmemb, room = t->body_max - t->body_len;
    size_t take = n < room ? n : room;

    if (t->on_data) {
        t->on_data(t->data, ptr, n);
        return n;
    }
    if (take > 0) {
        t->body = xrealloc(t->body, t->body_len + take + 1);
        memcpy(t->body + t->body_len, ptr, take);
        t->body_len += take;
        t->body[t->body_len] = '\0';
    }
    if (take < n || t->body_len == t->body_max) {
        /* The cap is reached: end the transfer here rather than read the rest (a body
         * may never end); a short return makes libcurl stop with CURLE_WRITE_ERROR. */
        t->cut = true;
        return take < n ? take : 0;
    }
    return n;
}

int fetcher_get(struct fetcher *f, const char *url, const char *unix_socket, uint64_t timeout_ms,
                fetch_done_fn done, void *data, struct fetch **ret)
{
    struct fetch_request req = {.url = url, .unix_socket = unix_socket, .timeout_ms = timeout_ms};

    return fetcher_request(f, &req, done, data, ret);
}

/* A transfer set up as req says, not started yet (fetch_add). */
static int fetch_new(struct fetcher *f, const struct fetch_request *req, fetch_done_fn done,
                     void *data, struct fetch **ret)
{
    struct fetch *t;
    CURL *easy;

    if (f->closing)
        return -ECANCELED;
    if (fetcher_start_curl(f) < 0)
        return -EIO;
    easy = curl_easy_init();
    if (!easy)
        fatal("out of memory (curl_easy_init)");
    t = xcalloc(1, sizeof(*t));
    t->fetcher = f;
    t->easy = easy;
    t->done = done;
    t->data = data;
    t->started_ns = uv_hrtime();
    t->body_max = req->body_max ? req->body_max : FETCH_BODY_MAX;
    t->on_data = req->on_data;

    curl_easy_setopt(easy, CURLOPT_URL, req->url);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
    if (curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http") != CURLE_OK)
        fatal("libcurl refuses CURLOPT_PROTOCOLS_STR (needs 7.85 or later)");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "service-nanny");
    if (req->unix_socket)
        curl_easy_setopt(easy, CURLOPT_UNIX_SOCKET_PATH, req->unix_socket);
    if (req->post) {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, 0L);
    }
    *ret = t;
    return 0;
}

/* Starts t: into the list and the multi handle (freed on failure). */
static int fetch_add(struct fetch *t)
{
    struct fetcher *f = t->fetcher;

    t->next = f->active;
    if (f->active)
        f->active->prev = t;
    f->active = t;
    f->n_active++;
    if (curl_multi_add_handle(f->multi, t->easy) != CURLM_OK) {
        fetch_destroy(t);
        return -EIO;
    }
    return 0;
}

int fetcher_request(struct fetcher *f, const struct fetch_request *req, fetch_done_fn done,
                    void *data, struct fetch **ret)
{
    struct fetch *t;
    int r = fetch_new(f, req, done, data, &t);

    if (r == 0)
        r = fetch_add(t);
    if (r == 0 && ret)
        *ret = t;
    return r;
}

void fetch_cancel(struct fetch *t)
{
    if (t)
        fetch_destroy(t);
}

unsigned fetcher_active(const struct fetcher *f)
{
    return f->n_active;
}
