// The official TypeScript SDK (@modelcontextprotocol/sdk 1.32.2) as an agent uses it
// over Streamable HTTP against the daemon's /mcp: a 2025-11-25 session, the whole
// agent flow of flow.mjs (status, start, the GPU conflict as isError, force, logs,
// stop, wait_healthy with progress notifications), then the session's end (DELETE)
// after which its id is unknown (404).
//
// usage: node sdk_http.mjs URL SERVICE_A SERVICE_B --log-line TEXT
//   URL        the daemon's MCP endpoint, e.g. http://127.0.0.1:8080/mcp
//   SERVICE_A, SERVICE_B  two stopped gpu_required services with a health check
//   --log-line a text that SERVICE_B's logs show soon after it starts
// NANNY_KEY, when set, is sent as Authorization: Bearer.
// Prints one JSON line and exits 0, or FAIL: ... on stderr and exits 1 (flow.mjs).

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { agentFlow, expect, readArgs, run } from './flow.mjs';

const USAGE = 'node sdk_http.mjs URL SERVICE_A SERVICE_B --log-line TEXT';
const { values, positionals } = readArgs(USAGE, { 'log-line': { type: 'string', default: '' } }, 3);
const [url, a, b] = positionals;

// Headers every request of this client carries (the key, when there is one).
function authHeaders() {
    return process.env.NANNY_KEY ? { Authorization: `Bearer ${process.env.NANNY_KEY}` } : {};
}

run(async () => {
    const transport = new StreamableHTTPClientTransport(new URL(url), {
        requestInit: { headers: authHeaders() },
    });
    const client = new Client({ name: 'nanny-sdk-http-test', version: '1.0.0' });
    await client.connect(transport);

    const sessionId = transport.sessionId;
    expect(typeof sessionId === 'string' && /^[0-9a-f]{32}$/.test(sessionId),
        'initialize: an Mcp-Session-Id of 32 hex digits', sessionId);
    expect(transport.protocolVersion === '2025-11-25', 'initialize: protocol version 2025-11-25 negotiated',
        transport.protocolVersion);

    const seen = await agentFlow(client, { a, b, logLine: values['log-line'] });

    // DELETE ends the session: the same id is then unknown (404).
    await transport.terminateSession();
    const after = await fetch(url, {
        method: 'POST',
        headers: {
            ...authHeaders(),
            'Content-Type': 'application/json',
            Accept: 'application/json, text/event-stream',
            'Mcp-Session-Id': sessionId,
            'MCP-Protocol-Version': '2025-11-25',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'ping' }),
    });
    expect(after.status === 404, 'a request in a session ended by DELETE: 404',
        { status: after.status, body: await after.text() });
    await client.close();

    return { transport: 'streamable-http', sessionId, protocolVersion: transport.protocolVersion, ...seen };
});
