// The official client that speaks the stateless revision 2026-07-28
// (@modelcontextprotocol/client 2.4.0) against the daemon's /mcp over Streamable
// HTTP: once pinned to 2026-07-28 and once in 'auto' mode (server/discover probe,
// legacy fallback), each must end on the modern era. Each connection lists the
// tools and calls service_status; the pinned one also sees an unknown service as a
// tool error. Every HTTP request the client sends is recorded and checked: no
// initialize, no session, MCP-Protocol-Version 2026-07-28, and Mcp-Method (and
// Mcp-Name for tools/call) matching the body.
//
// usage: node client_modern.mjs URL SERVICE
//   URL      the daemon's MCP endpoint, e.g. http://127.0.0.1:8080/mcp
//   SERVICE  the name of a service the daemon knows
// NANNY_KEY, when set, is sent as Authorization: Bearer.
// Prints one JSON line and exits 0, or FAIL: ... on stderr and exits 1 (flow.mjs).

import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { checkTools, errorResult, expect, okResult, readArgs, run } from './flow.mjs';

const USAGE = 'node client_modern.mjs URL SERVICE';
const { positionals } = readArgs(USAGE, {}, 2);
const [url, service] = positionals;
const MODERN = '2026-07-28';

// A fetch that records each request's method, headers and JSON-RPC method.
function recordingFetch(sent) {
    return async (input, init = {}) => {
        const headers = new Headers(init.headers);
        let body;
        try {
            body = typeof init.body === 'string' ? JSON.parse(init.body) : undefined;
        } catch {
            body = undefined;
        }
        sent.push({ method: init.method || 'GET', headers: Object.fromEntries(headers), body });
        return fetch(input, init);
    };
}

// Checks the recorded requests of a modern connection (see the file comment).
function checkModernWire(sent, mode) {
    const posts = sent.filter((r) => r.method === 'POST');
    expect(posts.length >= 3, `${mode}: requests were sent`, sent);
    expect(posts[0].body?.method === 'server/discover', `${mode}: the first request is server/discover`, posts[0]);
    for (const r of posts) {
        const m = r.body?.method;
        expect(m !== 'initialize', `${mode}: no initialize on the 2026-07-28 path`, r);
        expect(r.headers['mcp-session-id'] === undefined, `${mode}: no Mcp-Session-Id on the 2026-07-28 path`, r);
        expect(r.headers['mcp-protocol-version'] === MODERN, `${mode}: MCP-Protocol-Version ${MODERN} on ${m}`, r);
        if (m !== undefined && r.body.id !== undefined) {
            expect(r.headers['mcp-method'] === m, `${mode}: Mcp-Method header equal to the body's method`, r);
            expect(r.body.params?._meta?.['io.modelcontextprotocol/protocolVersion'] === MODERN,
                `${mode}: params._meta carries the protocol version`, r);
        }
        if (m === 'tools/call') {
            expect(r.headers['mcp-name'] === r.body.params.name, `${mode}: Mcp-Name header equal to params.name`, r);
        }
    }
    return posts.map((r) => r.body?.method);
}

// Connects in the given negotiation mode and runs the checks; returns what it saw.
async function session(mode) {
    const sent = [];
    const headers = process.env.NANNY_KEY ? { Authorization: `Bearer ${process.env.NANNY_KEY}` } : {};
    const transport = new StreamableHTTPClientTransport(new URL(url), {
        requestInit: { headers },
        fetch: recordingFetch(sent),
    });
    const client = new Client({ name: 'nanny-modern-client-test', version: '1.0.0' },
        { versionNegotiation: { mode } });
    await client.connect(transport);
    const label = typeof mode === 'string' ? mode : `pin ${mode.pin}`;

    expect(client.getProtocolEra() === 'modern', `${label}: the modern era negotiated`, client.getProtocolEra());
    expect(client.getNegotiatedProtocolVersion() === MODERN, `${label}: ${MODERN} negotiated`,
        client.getNegotiatedProtocolVersion());
    const discover = client.getDiscoverResult();
    expect(Array.isArray(discover?.supportedVersions) && discover.supportedVersions.includes(MODERN),
        `${label}: server/discover lists ${MODERN} in supportedVersions`, discover);
    expect(discover.capabilities?.tools !== undefined, `${label}: server/discover has the tools capability`, discover);

    const tools = checkTools(await client.listTools());
    const st = okResult(await client.callTool({ name: 'service_status', arguments: { name: service } }),
        'service_status');
    expect(st.name === service && typeof st.state === 'string', `${label}: service_status ${service}`, st);

    let unknown;
    if (typeof mode !== 'string') {
        unknown = errorResult(await client.callTool({ name: 'service_status', arguments: { name: 'no-such-service' } }),
            'service_status (unknown service)');
        expect(unknown.includes('no-such-service'), `${label}: service_status of an unknown service names it`, unknown);
    }
    await client.close();
    const methods = checkModernWire(sent, label);
    return { mode: label, supportedVersions: discover.supportedVersions, tools: Object.keys(tools).sort(),
        status: st, unknown, methods };
}

run(async () => {
    const pinned = await session({ pin: MODERN });
    const auto = await session('auto');
    return { pinned, auto };
});
