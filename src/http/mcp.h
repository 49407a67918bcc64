/* The MCP surface (SPEC section 7): the Model Context Protocol's Streamable HTTP transport
 * at /mcp, so that AI agents run the services through tools (http/mcp_tools.c). It speaks
 * the session revisions 2025-11-25, 2025-06-18 and 2025-03-26 (initialize, then
 * Mcp-Session-Id on every request) and the stateless revision 2026-07-28 (every request
 * carries its version and capabilities in _meta; server/discover) on the same endpoint.
 * Every request has passed the gate as a reader; each tool call then needs its tool's role
 * (gate_allows()). */
#ifndef NANNY_MCP_H
#define NANNY_MCP_H

#include <stddef.h>

#include <uv.h>

#include "core/config.h"
#include "core/events.h"
#include "core/registry.h"
#include "core/supervisor.h"
#include "http/server.h"

struct gate;
struct mcp;

/* Everything is borrowed: config for the session bounds (mcp.sessions, mcp.session_idle),
 * hub for the progress of a start that waits until healthy. */
struct mcp *mcp_new(uv_loop_t *loop, struct registry *reg, struct supervisor *sup,
                    struct gate *gate, struct events *hub, const struct config *config);

/* Frees the sessions. Call it after the server is freed: its requests are gone then. */
void mcp_free(struct mcp *mcp);

/* The handler of /mcp (POST and DELETE; mounted on the API with api_mount()). */
void mcp_handle(void *data, struct request *req);

/* How many sessions are open (for the tests' figures). */
size_t mcp_sessions(const struct mcp *mcp);

#endif
