/* nanny mcp: a bridge between an MCP client on stdio (newline-delimited JSON-RPC) and the
 * daemon's Streamable HTTP endpoint /mcp. Each line of stdin is posted as it comes, several
 * at once (a start that waits for health holds no ping back), through client_run()'s
 * libcurl multi loop, which also watches stdin. Each answer is written to stdout as one
 * whole line: a JSON answer as it is, a streamed (SSE) answer event by event as the events
 * come. The session's id and protocol version are taken from the initialize answer and
 * sent with every later message; a message of the stateless revision carries its own
 * version in params._meta, which goes out as headers with its method and tool name.
 * Failures that are not the daemon's JSON-RPC answers (no daemon, the gate's refusals, a
 * 5xx) become a JSON-RPC error for the request's id, and one line on stderr, the only
 * place logs go. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cli/client.h"
#include "cli/mcp_stdio.h"
#include "lib/alloc.h"

#define MCP_LINE_MAX          (4 * 1024 * 1024) /* one message from stdin (the daemon takes 1 MiB) */
#define MCP_ANSWER_MAX        (64 * 1024 * 1024) /* one answer, or one event, from the daemon */
#define MCP_READ_SIZE         65536
#define MCP_IN_FLIGHT_MAX     32    /* messages posted and not yet answered; stdin waits past it */
#define MCP_DRAIN_MS          10000 /* at the end of stdin, how long answers are waited for */
#define MCP_DELETE_TIMEOUT_MS 5000
#define MCP_HEADERS_MAX       8

#define JSONRPC_PARSE_ERROR     (-32700)
#define JSONRPC_INVALID_REQUEST (-32600)
#define JSONRPC_INTERNAL_ERROR  (-32603)

#define META_PROTOCOL_VERSION "io.modelcontextprotocol/protocolVersion"

struct mcp_call;

/* The bridge: stdin as it comes, the session, the messages in flight. */
struct mcp_stdio {
    struct client client;
    struct client_run run;
    char *in; /* stdin not yet split into lines */
    size_t in_len;
    bool skipping; /* the rest of a line past MCP_LINE_MAX is dropped */
    bool eof;      /* stdin ended (or stdout went away) */
    uint64_t eof_ms;
    char *session_id;       /* from the initialize answer's Mcp-Session-Id */
    char *protocol_version; /* from the initialize answer's result */
    struct mcp_call *calls; /* in flight (or waiting for a new session) */
    unsigned in_flight;
    /* A daemon that restarted no longer knows the session: the client's initialize is
     * sent again, then notifications/initialized, then what waits for the new session. */
    char *initialize_body;
    enum { REOPEN_NONE, REOPEN_INITIALIZE, REOPEN_INITIALIZED } reopen;
    struct mcp_call *waiting;
    char reopen_why[CLIENT_WHY_MAX + 256];
};

/* One message posted to /mcp, and what has come of its answer. */
struct mcp_call {
    struct client_transfer t;
    struct mcp_stdio *m;
    struct mcp_call *prev, *next;
    char *body;
    char *headers[MCP_HEADERS_MAX + 1];
    size_t n_headers;
    char *method; /* NULL for a response the client sends */
    json_t *id;   /* a request's id; NULL for a notification or a response */
    bool initialize;
    bool stateless;     /* of the 2026-07-28 revision: no session */
    bool internal;      /* the bridge's own, to reopen the session: nothing is written */
    char *session_sent; /* the session's id it carried (NULL: none) */
    bool retried;       /* sent again in a new session once already */
    struct mcp_call *wait_next;
    bool started; /* the answer's first bytes came: its type and headers are read */
    bool sse;
    bool answered; /* the response to id was written */
    bool too_large;
    char *buf; /* the JSON answer, or SSE text not yet split into events */
    size_t len;
};

enum {
    OPT_HELP = 'h',
    OPT_URL = 256,
    OPT_KEY,
    OPT_CACERT,
};

static const struct option mcp_options[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"key", required_argument, NULL, OPT_KEY},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"help", no_argument, NULL, OPT_HELP},
    {0},
};

static void mcp_usage(FILE *out)
{
    fprintf(out,
            "usage: nanny mcp [options]\n"
            "An MCP server on stdin and stdout (newline-delimited JSON-RPC) for agents that\n"
            "launch their MCP servers as commands: a bridge to the running daemon's /mcp, with\n"
            "the same tools (list_services, service_status, start_service, stop_service,\n"
            "restart_service, service_logs, rediscover, gpu_status). Logs go to stderr.\n"
            "It ends, with exit code 0, when stdin ends.\n"
            "options:\n"
            "      --url URL         the daemon (env NANNY_URL; default %s)\n"
            "      --key KEY         the API key (env NANNY_KEY)\n"
            "      --cacert FILE     trust this CA for an HTTPS daemon (env NANNY_CACERT)\n"
            "  -h, --help            this help\n"
            "example, the entry an MCP client's configuration takes:\n"
            "  {\"mcpServers\": {\"nanny\": {\"command\": \"nanny\", \"args\": [\"mcp\"],\n"
            "   \"env\": {\"NANNY_URL\": \"http://127.0.0.1:8080\", \"NANNY_KEY\": \"...\"}}}}\n",
            CLIENT_DEFAULT_URL);
}

static uint64_t now_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

static void mcp_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr. */
static void mcp_log(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "nanny mcp: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* --- stdout: whole lines ---------------------------------------------------------------- */

/* Writes one JSON-RPC message as one line. A stdout that went away ends the bridge as the
 * end of stdin does. */
static void mcp_write(struct mcp_stdio *m, const json_t *message)
{
    char *text = json_dumps(message, JSON_COMPACT | JSON_PRESERVE_ORDER);

    if (!text)
        abort(); /* only out of memory: every value read was valid JSON */
    if (fputs(text, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) == EOF) {
        if (!m->eof)
            mcp_log("cannot write to stdout (%s): stopping", strerror(errno));
        clearerr(stdout);
        m->eof = true;
        m->eof_ms = now_ms();
        m->run.input_open = false;
    }
    free(text);
}

/* Writes a JSON-RPC error for id (NULL: null). */
static void mcp_write_error(struct mcp_stdio *m, const json_t *id, int code, const char *message)
{
    json_t *j =
        json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
                  id ? (json_t *)id : json_null(), "error", "code", code, "message", message);

    if (!j)
        abort();
    mcp_write(m, j);
    json_decref(j);
}

/* --- answers ---------------------------------------------------------------------------- */

static void call_fail(struct mcp_call *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A message that got no JSON-RPC answer from the daemon: one line on stderr, and for a
 * request a JSON-RPC error for its id that says why. */
static void call_fail(struct mcp_call *c, const char *fmt, ...)
{
    char why[CLIENT_WHY_MAX + 256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    mcp_log("%s: %s", c->method ? c->method : "response", why);
    if (c->internal)
        snprintf(c->m->reopen_why, sizeof(c->m->reopen_why), "%s", why);
    else if (c->id && !c->answered) {
        mcp_write_error(c->m, c->id, JSONRPC_INTERNAL_ERROR, why);
        c->answered = true;
    }
}

/* Whether value can go into an HTTP header as it is: visible ASCII and blanks. */
static bool header_safe(const char *value)
{
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return false;
    return *value != '\0';
}

/* The initialize answer: the protocol version it chose, for the headers of what follows. */
static void take_initialize(struct mcp_call *c, const json_t *answer)
{
    const char *version =
        json_string_value(json_object_get(json_object_get(answer, "result"), "protocolVersion"));

    if (!version)
        return;
    if (!header_safe(version)) {
        mcp_log("initialize: the daemon's protocolVersion cannot go into a header: ignored");
        return;
    }
    free(c->m->protocol_version);
    c->m->protocol_version = xstrdup(version);
}

/* One JSON-RPC message from the daemon, about this call: written as it is. */
static void call_answer(struct mcp_call *c, const json_t *answer)
{
    const json_t *id = json_object_get(answer, "id");
    bool response = json_object_get(answer, "result") || json_object_get(answer, "error");

    if (response && c->id && id && json_equal(id, c->id)) {
        if (c->answered)
            return; /* one answer per request */
        c->answered = true;
        if (c->initialize)
            take_initialize(c, answer);
    }
    if (!c->internal)
        mcp_write(c->m, answer);
}

/* The daemon's text that should be one JSON-RPC message. */
static void call_answer_text(struct mcp_call *c, const char *text, size_t len)
{
    json_error_t e;
    json_t *j = json_loadb(text, len, JSON_ALLOW_NUL, &e);

    if (!json_is_object(j))
        call_fail(c, "the daemon's answer is not a JSON-RPC message (%s)",
                  j ? "not an object" : e.text);
    else
        call_answer(c, j);
    json_decref(j);
}

/* Splits the SSE text come so far into events; each event's data (its data lines joined)
 * is one message. At the end of the stream (last), what is left is one more event. */
static void sse_split(struct mcp_call *c, bool last)
{
    size_t start = 0;

    for (;;) {
        char *end = memmem(c->buf + start, c->len - start, "\n\n", 2);
        char *crlf = memmem(c->buf + start, c->len - start, "\r\n\r\n", 4);
        size_t block_end, next;
        char *data = NULL;
        size_t data_len = 0;

        if (crlf && (!end || crlf < end)) {
            block_end = (size_t)(crlf - c->buf);
            next = block_end + 4;
        } else if (end) {
            block_end = (size_t)(end - c->buf);
            next = block_end + 2;
        } else if (last && start < c->len) {
            block_end = next = c->len;
        } else {
            break;
        }
        for (size_t p = start; p < block_end;) {
            char *nl = memchr(c->buf + p, '\n', block_end - p);
            size_t line_end = nl ? (size_t)(nl - c->buf) : block_end;
            size_t l = line_end - p;
            const char *line = c->buf + p;

            if (l > 0 && line[l - 1] == '\r')
                l--;
            if (l >= 5 && memcmp(line, "data:", 5) == 0) {
                size_t skip = l > 5 && line[5] == ' ' ? 6 : 5;
                data = xrealloc(data, data_len + (l - skip) + 2);
                if (data_len)
                    data[data_len++] = '\n';
                memcpy(data + data_len, line + skip, l - skip);
                data_len += l - skip;
                data[data_len] = '\0';
            }
            p = line_end + 1;
        }
        if (data)
            call_answer_text(c, data, data_len);
        free(data);
        start = next;
    }
    memmove(c->buf, c->buf + start, c->len - start);
    c->len -= start;
}

/* The first bytes of a 2xx answer: its type, and for initialize the session it opened. */
static void call_start_answer(struct mcp_call *c)
{
    const char *type = NULL;
    struct curl_header *h;

    c->started = true;
    curl_easy_getinfo(c->t.curl, CURLINFO_CONTENT_TYPE, &type);
    c->sse = type && strncasecmp(type, "text/event-stream", 17) == 0;
    if (!c->initialize ||
        curl_easy_header(c->t.curl, "Mcp-Session-Id", 0, CURLH_HEADER, -1, &h) != CURLHE_OK)
        return;
    if (!header_safe(h->value)) {
        mcp_log("initialize: the daemon's Mcp-Session-Id cannot go into a header: ignored");
        return;
    }
    free(c->m->session_id);
    c->m->session_id = xstrdup(h->value);
}

/* A piece of a 2xx answer: kept, and for a stream split into events as they come. */
static bool call_on_data(void *data, const char *buf, size_t len)
{
    struct mcp_call *c = data;

    if (!c->started)
        call_start_answer(c);
    if (c->len + len > MCP_ANSWER_MAX) {
        c->too_large = true;
        return false;
    }
    c->buf = xrealloc(c->buf, c->len + len + 1);
    memcpy(c->buf + c->len, buf, len);
    c->len += len;
    c->buf[c->len] = '\0';
    if (c->sse)
        sse_split(c, false);
    return true;
}

/* An answer that is not 2xx: the daemon's JSON-RPC error as it is (with the request's id
 * when it could not tell it), else an error that names the cause. */
static void call_http_error(struct mcp_call *c)
{
    const struct client_response *r = &c->t.resp;
    const json_t *j = r->json;
    const char *message = json_string_value(json_object_get(j, "message"));
    char first_line[200];

    if (json_is_object(j) && json_object_get(j, "jsonrpc")) {
        const char *text =
            json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        json_t *answer = json_deep_copy(j);

        mcp_log("%s: HTTP %ld: %s", c->method ? c->method : "response", r->status,
                text ? text : "(no message)");
        if (c->internal)
            snprintf(c->m->reopen_why, sizeof(c->m->reopen_why), "HTTP %ld: %s", r->status,
                     text ? text : "(no message)");
        if (c->id) {
            const json_t *id = json_object_get(answer, "id");
            if (!id || json_is_null(id)) /* the daemon could not tell which request */
                json_object_set(answer, "id", c->id);
            call_answer(c, answer);
        }
        json_decref(answer);
        return;
    }
    if (!message) {
        snprintf(first_line, sizeof(first_line), "%.*s", (int)strcspn(r->body, "\r\n"),
                 r->body); /* never NULL once an answer came */
        message = *first_line ? first_line : "no message";
    }
    if (r->status == 401 && !(c->m->client.key && *c->m->client.key))
        call_fail(c, "the daemon needs an API key (HTTP 401: %s): set NANNY_KEY (or --key)",
                  message);
    else if (r->status == 401)
        call_fail(c, "the daemon refused the API key (HTTP 401: %s): check NANNY_KEY (or --key)",
                  message);
    else if (r->status == 403)
        call_fail(c, "the daemon refused this (HTTP 403: %s)", message);
    else if (r->status == 404 && c->m->session_id && !c->initialize)
        call_fail(c,
                  "the daemon does not know this session (HTTP 404: %s): it may have restarted; "
                  "restart the MCP client's connection",
                  message);
    else if (r->status == 429)
        call_fail(c, "the daemon asks to slow down (HTTP 429: %s)", message);
    else
        call_fail(c, "the daemon at %s answered HTTP %ld: %s", c->m->client.url, r->status,
                  message);
}

static void call_free(struct mcp_call *c)
{
    free(c->body);
    for (size_t i = 0; i < c->n_headers; i++)
        free(c->headers[i]);
    free(c->method);
    json_decref(c->id);
    free(c->session_sent);
    free(c->buf);
    free(c);
}

/* Takes c off the list of messages in flight, and frees it. */
static void call_drop(struct mcp_call *c)
{
    struct mcp_stdio *m = c->m;

    if (c->prev)
        c->prev->next = c->next;
    else
        m->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->in_flight--;
    call_free(c);
}

static void call_header(struct mcp_call *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void call_header(struct mcp_call *c, const char *fmt, ...)
{
    va_list ap;
    char *line;

    if (c->n_headers == MCP_HEADERS_MAX)
        abort(); /* a broken invariant: the headers below are fewer */
    va_start(ap, fmt);
    if (vasprintf(&line, fmt, ap) < 0)
        abort();
    va_end(ap);
    c->headers[c->n_headers++] = line;
}

/* The headers of message msg: the session's, or for the stateless revision the version,
 * method and tool name of the message itself. NULL, or what cannot go into a header. */
static const char *call_headers(struct mcp_call *c, const json_t *msg)
{
    struct mcp_stdio *m = c->m;
    const json_t *params = json_object_get(msg, "params");
    const char *stateless =
        json_string_value(json_object_get(json_object_get(params, "_meta"), META_PROTOCOL_VERSION));
    const char *name = json_string_value(json_object_get(params, "name"));

    for (size_t i = 0; i < c->n_headers; i++)
        free(c->headers[i]);
    c->n_headers = 0;
    free(c->session_sent);
    c->session_sent = NULL;
    call_header(c, "Accept: application/json, text/event-stream");
    c->stateless = stateless != NULL;
    if (stateless) {
        if (!header_safe(stateless))
            return "the protocol version";
        if (!c->method || !header_safe(c->method))
            return "the method";
        call_header(c, "MCP-Protocol-Version: %s", stateless);
        call_header(c, "Mcp-Method: %s", c->method);
        if (strcmp(c->method, "tools/call") == 0 && name) {
            if (!header_safe(name))
                return "the tool name";
            call_header(c, "Mcp-Name: %s", name);
        }
    } else if (!c->initialize) {
        if (m->session_id) {
            call_header(c, "Mcp-Session-Id: %s", m->session_id);
            c->session_sent = xstrdup(m->session_id);
        }
        if (m->protocol_version)
            call_header(c, "MCP-Protocol-Version: %s", m->protocol_version);
    }
    c->headers[c->n_headers] = NULL;
    return NULL;
}

static void call_on_done(void *data, struct client_transfer *t);

/* A message of body (one JSON-RPC object, msg), in flight from now on. */
static struct mcp_call *call_new(struct mcp_stdio *m, const char *body, const json_t *msg)
{
    struct mcp_call *c = xcalloc(1, sizeof(*c));
    const char *method = json_string_value(json_object_get(msg, "method"));

    c->m = m;
    c->body = xstrdup(body);
    c->method = method ? xstrdup(method) : NULL;
    if (method && json_object_get(msg, "id"))
        c->id = json_incref(json_object_get(msg, "id"));
    c->initialize = method && strcmp(method, "initialize") == 0;
    c->next = m->calls;
    if (m->calls)
        m->calls->prev = c;
    m->calls = c;
    m->in_flight++;
    return c;
}

/* Posts c, with the headers of now; while a new session is being opened, a message of the
 * session waits for it. NULL, or what cannot go into a header. */
static const char *call_send(struct mcp_call *c)
{
    struct mcp_stdio *m = c->m;
    json_t *msg = json_loads(c->body, 0, NULL);
    const char *bad;

    bad = call_headers(c, msg);
    json_decref(msg);
    if (bad)
        return bad;
    if (m->reopen != REOPEN_NONE && !c->internal && !c->stateless && !c->initialize) {
        struct mcp_call **tail = &m->waiting;
        while (*tail)
            tail = &(*tail)->wait_next;
        c->wait_next = NULL;
        *tail = c;
        return NULL;
    }
    free(c->buf);
    c->buf = NULL;
    c->len = 0;
    c->started = c->sse = c->too_large = false;
    c->t = (struct client_transfer){.method = "POST",
                                    .path = "/mcp",
                                    .body = c->body,
                                    .headers = (const char *const *)c->headers,
                                    .quiet = true,
                                    .on_data = call_on_data,
                                    .on_done = call_on_done,
                                    .data = c};
    client_transfer_add(&m->run, &c->t);
    return NULL;
}

/* --- a new session when the daemon restarted ------------------------------------------- */

/* One of the bridge's own messages to reopen the session. */
static void reopen_send(struct mcp_stdio *m, const char *body)
{
    json_t *msg = json_loads(body, 0, NULL);
    struct mcp_call *c = call_new(m, body, msg);

    json_decref(msg);
    c->internal = true;
    call_send(c);
}

/* c was answered 404 for its session: the daemon restarted. It is sent again in a new
 * session, opened with the client's initialize, once. False when it cannot be. */
static bool reopen_for(struct mcp_call *c)
{
    struct mcp_stdio *m = c->m;

    if (c->retried || c->internal || !c->session_sent || !m->initialize_body)
        return false;
    c->retried = true;
    if (m->reopen == REOPEN_NONE && m->session_id && strcmp(m->session_id, c->session_sent) != 0) {
        call_send(c); /* a new session was opened since it went */
        return true;
    }
    if (m->reopen == REOPEN_NONE) {
        mcp_log("the daemon no longer knows the session (it restarted?): opening a new one");
        free(m->session_id);
        m->session_id = NULL;
        m->reopen = REOPEN_INITIALIZE;
        m->reopen_why[0] = '\0';
        reopen_send(m, m->initialize_body);
    }
    call_send(c); /* it waits for the new session */
    return true;
}

/* One of the bridge's own messages ended: the next step of reopening the session, and at
 * the end what waited for it sent, or failed. */
static void reopen_step(struct mcp_stdio *m, bool ok)
{
    if (m->reopen == REOPEN_INITIALIZE && ok && m->session_id) {
        m->reopen = REOPEN_INITIALIZED;
        reopen_send(m, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
        return;
    }
    if (m->reopen == REOPEN_INITIALIZE && !m->reopen_why[0])
        snprintf(m->reopen_why, sizeof(m->reopen_why), "the daemon opened no session");
    ok = m->reopen == REOPEN_INITIALIZED;
    m->reopen = REOPEN_NONE;
    if (ok)
        mcp_log("a new session is open");
    while (m->waiting) {
        struct mcp_call *c = m->waiting;
        m->waiting = c->wait_next;
        if (ok) {
            call_send(c);
            continue;
        }
        call_fail(c,
                  "the daemon no longer knows the session, and a new one could not be opened: %s",
                  m->reopen_why);
        call_drop(c);
    }
}

/* A message's transfer ended: what it brought is written, or why nothing came. */
static void call_on_done(void *data, struct client_transfer *t)
{
    struct mcp_call *c = data;
    struct mcp_stdio *m = c->m;
    long status = t->resp.status;
    bool ok = t->result == 0 && status >= 200 && status < 300 && !c->too_large;

    if (t->result == 0 && status == 404 && reopen_for(c)) {
        client_response_done(&t->resp);
        return;
    }
    if (t->result)
        call_fail(c, "%s", t->why);
    else if (c->too_large)
        call_fail(c, "the daemon's answer is larger than %d MiB", MCP_ANSWER_MAX >> 20);
    else if (status < 200 || status >= 300)
        call_http_error(c);
    else if (c->sse) {
        sse_split(c, true);
        if (c->id && !c->answered)
            call_fail(c, "the daemon's stream ended before the answer");
    } else if (c->len > 0)
        call_answer_text(c, c->buf, c->len);
    else if (c->id)
        call_fail(c, "the daemon answered HTTP %ld with no response", status);
    client_response_done(&t->resp);
    if (c->internal)
        reopen_step(m, ok);
    call_drop(c);
}

/* --- stdin: one message a line ---------------------------------------------------------- */

/* One line of stdin: posted to /mcp, or answered here when it is no JSON-RPC message. */
static void take_line(struct mcp_stdio *m, char *line, size_t len)
{
    json_error_t e;
    json_t *msg;
    struct mcp_call *c;
    const char *bad;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    line[len] = '\0';
    if (strspn(line, " \t") == len)
        return; /* a blank line */
    msg = json_loadb(line, len, JSON_DECODE_ANY, &e);
    if (!msg) {
        char why[300];
        snprintf(why, sizeof(why), "Parse error: %s (column %d)", e.text, e.column);
        mcp_log("stdin: %s", why);
        mcp_write_error(m, NULL, JSONRPC_PARSE_ERROR, why);
        return;
    }
    if (!json_is_object(msg)) {
        const char *why = json_is_array(msg) ? "Invalid Request: batches are not supported, "
                                               "send one message a line"
                                             : "Invalid Request: a message is a JSON object";
        mcp_log("stdin: %s", why);
        mcp_write_error(m, NULL, JSONRPC_INVALID_REQUEST, why);
        json_decref(msg);
        return;
    }
    c = call_new(m, line, msg);
    json_decref(msg);
    bad = call_send(c);
    if (bad) {
        char why[200];
        snprintf(why, sizeof(why), "Invalid Request: %s cannot go into an HTTP header", bad);
        mcp_log("stdin: %s", why);
        if (c->id)
            mcp_write_error(m, c->id, JSONRPC_INVALID_REQUEST, why);
        call_drop(c);
        return;
    }
    if (c->initialize && !c->stateless) { /* kept, to open a new session with */
        free(m->initialize_body);
        m->initialize_body = xstrdup(c->body);
    }
}

/* Posts the whole lines read so far, while fewer than MCP_IN_FLIGHT_MAX are in flight. */
static void take_lines(struct mcp_stdio *m)
{
    size_t start = 0;

    while (start < m->in_len && m->in_flight < MCP_IN_FLIGHT_MAX) {
        char *nl = memchr(m->in + start, '\n', m->in_len - start);
        size_t len;

        if (!nl)
            break;
        len = (size_t)(nl - (m->in + start));
        if (m->skipping)
            m->skipping = false; /* the end of a line too long */
        else
            take_line(m, m->in + start, len);
        start += len + 1;
    }
    if (start > 0) { /* else m->in may be NULL: nothing read yet */
        memmove(m->in, m->in + start, m->in_len - start);
        m->in_len -= start;
    }
    if (m->in_len > MCP_LINE_MAX && !memchr(m->in, '\n', m->in_len)) {
        if (!m->skipping) {
            char why[100];
            snprintf(why, sizeof(why), "Invalid Request: a message longer than %d MiB",
                     MCP_LINE_MAX >> 20);
            mcp_log("stdin: %s", why);
            mcp_write_error(m, NULL, JSONRPC_INVALID_REQUEST, why);
        }
        m->skipping = true;
        m->in_len = 0;
    }
}

/* Reads what stdin has now, without waiting; its end is the bridge's end. */
static void read_input(struct mcp_stdio *m)
{
    struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
    ssize_t n;

    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
        return;
    m->in = xrealloc(m->in, m->in_len + MCP_READ_SIZE + 1);
    n = read(STDIN_FILENO, m->in + m->in_len, MCP_READ_SIZE);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n > 0) {
        m->in_len += (size_t)n;
        return;
    }
    if (n < 0)
        mcp_log("cannot read stdin (%s): stopping", strerror(errno));
    if (m->in_len > 0 && !m->skipping) { /* a last line with no newline */
        m->in[m->in_len] = '\n';
        m->in_len++;
    }
    m->eof = true;
    m->eof_ms = now_ms();
}

/* After each wait of the loop: stdin read and posted (while not too many are in flight),
 * and after its end the answers in flight waited for, a while. */
static void on_pass(void *data)
{
    struct mcp_stdio *m = data;

    take_lines(m);
    if (!m->eof && m->in_flight < MCP_IN_FLIGHT_MAX) {
        read_input(m);
        take_lines(m);
    }
    m->run.input_open = !m->eof && m->in_flight < MCP_IN_FLIGHT_MAX;
    if (m->eof && m->in_len == 0 && (m->in_flight == 0 || now_ms() - m->eof_ms >= MCP_DRAIN_MS))
        m->run.stop = true;
}

/* --- the end ---------------------------------------------------------------------------- */

/* Ends the session, if the daemon gave one: DELETE /mcp, bounded. */
static void end_session(struct mcp_stdio *m)
{
    char *session, *version = NULL;
    const char *headers[3] = {NULL};
    struct client_transfer t;

    if (!m->session_id)
        return;
    headers[0] = session = xasprintf("Mcp-Session-Id: %s", m->session_id);
    if (m->protocol_version)
        headers[1] = version = xasprintf("MCP-Protocol-Version: %s", m->protocol_version);
    t = (struct client_transfer){.method = "DELETE",
                                 .path = "/mcp",
                                 .headers = headers,
                                 .timeout_ms = MCP_DELETE_TIMEOUT_MS,
                                 .quiet = true};
    m->run.stop = false;
    m->run.input_open = false;
    m->run.on_pass = NULL;
    client_transfer_add(&m->run, &t);
    client_run(&m->run, 0);
    client_transfer_cancel(&m->run, &t);
    if (t.done && t.result)
        mcp_log("could not end the session: %s", t.why);
    else if (t.done && t.resp.status >= 300 && t.resp.status != 404 && t.resp.status != 405)
        mcp_log("could not end the session: HTTP %ld", t.resp.status);
    client_response_done(&t.resp);
    free(session);
    free(version);
}

/* Drops the messages still in flight: their answers will not come. */
static void drop_calls(struct mcp_stdio *m, bool interrupted)
{
    unsigned dropped = m->in_flight;

    m->waiting = NULL; /* they are in the list too */
    while (m->calls) {
        struct mcp_call *c = m->calls;
        client_transfer_cancel(&m->run, &c->t);
        call_drop(c);
    }
    if (dropped && interrupted)
        mcp_log("%u answers still in flight were dropped", dropped);
    else if (dropped)
        mcp_log("stdin ended: %u answers still in flight after %d s were dropped", dropped,
                MCP_DRAIN_MS / 1000);
}

/* Reads the command line into m; -1 when --help was printed, else 0 or an exit code. */
static int parse(int argc, char **argv, struct mcp_stdio *m)
{
    int opt;

    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "h", mcp_options, NULL)) != -1) {
        switch (opt) {
        case OPT_URL:
            m->client.url = optarg;
            break;
        case OPT_KEY:
            m->client.key = optarg;
            break;
        case OPT_CACERT:
            m->client.cacert = optarg;
            break;
        case OPT_HELP:
            mcp_usage(stdout);
            return -1;
        default:
            fprintf(stderr,
                    "nanny mcp: %.100s: unknown option or missing value (see nanny mcp --help)\n",
                    argv[optind - 1]);
            return CLIENT_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "nanny mcp: unexpected argument '%.100s' (see nanny mcp --help)\n",
                argv[optind]);
        return CLIENT_EXIT_USAGE;
    }
    client_defaults(&m->client);
    return 0;
}

int mcp_stdio_main(int argc, char **argv)
{
    struct mcp_stdio m = {0};
    int r = parse(argc, argv, &m);

    if (r < 0)
        return 0;
    if (r > 0)
        return r;
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is a write error that ends it */
    mcp_log("serving MCP on stdio for the daemon at %s", m.client.url);
    m.run.client = &m.client;
    m.run.input_fd = STDIN_FILENO;
    m.run.input_open = true;
    m.run.on_pass = on_pass;
    m.run.tick_data = &m;
    r = client_run(&m.run, 0);
    if (r < 0)
        mcp_log("interrupted: stopping");
    drop_calls(&m, r < 0);
    end_session(&m);
    client_run_done(&m.run);
    free(m.in);
    free(m.session_id);
    free(m.protocol_version);
    free(m.initialize_body);
    return 0;
}
