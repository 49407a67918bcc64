/* Between the MCP transport (mcp.c: sessions, JSON-RPC, the two protocol eras) and the
 * MCP tools (mcp_tools.c: what each tool is and does over the core). Not for other
 * surfaces. */
#ifndef NANNY_MCP_INTERNAL_H
#define NANNY_MCP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "core/keys.h"
#include "core/registry.h"
#include "core/supervisor.h"

/* One tools/call being run. mcp.c makes it and answers it; the tool fills in how to cancel
 * what it waits for. */
struct mcp_call {
    struct registry *reg;
    struct supervisor *sup; /* NULL: this daemon runs no services */
    json_t *args;           /* the call's arguments, checked against the tool's schema */
    char service[MANIFEST_NAME_MAX + 1]; /* the service it is about, or "" */
    unsigned status; /* the REST API's status for how it ended (the audit's): 200 unless a
                      * failure says otherwise */
    /* Set by a tool that answers later: undoes what it waits for (the client went away;
     * an operation itself goes on). Cleared before mcp_call_done() is called. */
    void (*cancel)(struct mcp_call *call);
    void *pending;
};

/* A tool: its definition for tools/list and how it runs. */
struct mcp_tool {
    const char *name;
    const char *title;
    const char *description;
    const char *input_schema;  /* JSON Schema, as text */
    const char *output_schema; /* JSON Schema of structuredContent, as text */
    enum need need;            /* the role it takes (the gate's roles) */
    const char *action;        /* its verb in the audit log */
    bool changes_things;       /* audited when it ends */
    /* Runs the call: mcp_call_done() now or later (then call->cancel is set). */
    void (*run)(struct mcp_call *call);
};

/* The tool named name, or NULL. */
const struct mcp_tool *mcp_tool_find(const char *name);

/* Every tool's definition, as tools/list lists them. New reference. */
json_t *mcp_tools_list(void);

/* Checks args (an object) against schema, the tool's inputSchema as mcp_tools_list()
 * gives it: 0, or -1 with err naming the argument and what is wrong with it. */
int mcp_tool_check(const struct mcp_tool *tool, const json_t *schema, json_t *args, char *err,
                   size_t err_size);

/* Ends a call with a tool result: structured (the JSON answer, taken; shown as text too)
 * or, when NULL, an error result whose text is message. */
void mcp_call_done(struct mcp_call *call, json_t *structured, const char *message);

/* Ends a call with an error result whose text is printf-style; status is what the REST
 * API would have answered (409 for a GPU conflict...), for the audit. */
void mcp_call_fail(struct mcp_call *call, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
