/* nanny mcp: the daemon's MCP tools on stdio, for agents that launch their MCP servers
 * as commands (SPEC section 7). A bridge: each JSON-RPC line of stdin is posted to the
 * running daemon's /mcp and each answer written to stdout as one line. Runs as a
 * command, never in the daemon. */
#ifndef NANNY_CLI_MCP_STDIO_H
#define NANNY_CLI_MCP_STDIO_H

/* The command "nanny mcp": argv[0] is "mcp". Returns 0 once stdin has ended (or SIGINT or
 * SIGTERM came), 2 for bad usage. */
int mcp_stdio_main(int argc, char **argv);

#endif
