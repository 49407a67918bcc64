/* The gate every request of every surface passes before its handler (SPEC sections 6, 7),
 * in this order: the browser-safety rules (a foreign Host or Origin: 403), the throttle
 * on failed authentications per client address (429), the key (401), the role the route
 * needs (403), the rate limit (429), and the audit record: every refusal at once, and
 * every state-changing request when it ends, with the status it got.
 *
 * Without keys (no keys file: the development level) every client is let through as
 * admin, known by its address; the rate limit, when configured, then counts per address.
 * A surface whose need depends on the body (an MCP tool call, a proxied request that
 * would start a service) calls gate_require() once it has read it. */
#ifndef NANNY_GATE_H
#define NANNY_GATE_H

#include <stdbool.h>

#include <uv.h>

#include "core/audit.h"
#include "core/config.h"
#include "core/keys.h"
#include "http/server.h"

#define GATE_FAIL_BURST   10    /* wrong keys an address may send in a row... */
#define GATE_FAIL_RATE    0.2   /* ...and then this many per second */
#define GATE_BUCKETS_MAX  16384 /* buckets of each table (rate, failures, log lines) */
#define GATE_LOG_INTERVAL 60    /* s: one log line per client and burst, at most */

struct gate;

/* What a route asks of the gate. */
struct gate_route {
    enum need need;      /* the role it takes */
    const char *action;  /* its verb in the audit log ("start", "status") */
    bool changes_things; /* audited when it ends; refused from a foreign Origin */
};

/* config is borrowed (Host, Origin, rate_limit); audit may be NULL (nothing recorded). */
struct gate *gate_new(uv_loop_t *loop, const struct config *config, struct audit *audit);
void gate_free(struct gate *g);

/* The port the server answers on, for the Host and Origin checks. */
void gate_set_port(struct gate *g, unsigned port);

/* Puts keys (taken) in force; NULL: no keys (every client is admin). The old set is
 * freed: requests in flight keep their user's name (request_user()), not the entry. */
void gate_set_keys(struct gate *g, struct keys *keys);
bool gate_has_keys(const struct gate *g);

/* Runs the checks for a request to route about service (NULL: none). True: the handler
 * goes on (request_user() and request_role() say who it is); false: it was answered. */
bool gate_pass(struct gate *g, struct request *req, const struct gate_route *route,
               const char *service);

/* After gate_pass(): true when the request's key has need; else it is answered 403 (and
 * audited as action on service) and false is returned. */
bool gate_require(struct gate *g, struct request *req, enum need need, const char *action,
                  const char *service);

/* gate_require() for a surface that answers in its own shape (an MCP tool result): false
 * when the request's key lacks need, with why filled with a sentence; the refusal is
 * audited, the request is not answered. */
bool gate_allows(struct gate *g, struct request *req, enum need need, const char *action,
                 const char *service, char *why, size_t why_size);

/* Records in the audit log, now, that req did action to service (NULL: none) with the
 * outcome status: for a surface whose one request does several things (an MCP tool call),
 * where request_set_action() would record the request's own status. */
void gate_record(struct gate *g, struct request *req, const char *action, const char *service,
                 unsigned status);

/* True when the request may see everything a valid key shows (GET /health in full): a
 * valid key, or no keys at all. */
bool gate_known(const struct gate *g, const struct request *req);

/* The server's done function (server_set_done, data: the gate): audits marked requests. */
void gate_on_done(void *data, struct request *req, unsigned status);

#endif
