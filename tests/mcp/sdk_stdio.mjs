// The official TypeScript SDK (@modelcontextprotocol/sdk 1.32.2) as a desktop agent
// uses it: it launches `NANNY_BIN mcp` (newline-delimited JSON-RPC on stdin/stdout)
// with NANNY_URL pointing at the running daemon, and runs the whole agent flow of
// flow.mjs over it (status, start, the GPU conflict as isError, force, logs, stop,
// wait_healthy with progress notifications). Whatever `nanny mcp` writes on stderr
// is passed through to this script's stderr.
//
// usage: node sdk_stdio.mjs NANNY_BIN NANNY_URL SERVICE_A SERVICE_B --log-line TEXT
//   NANNY_BIN  the nanny binary; NANNY_URL the daemon, e.g. http://127.0.0.1:8080
//   SERVICE_A, SERVICE_B  two stopped gpu_required services with a health check
//   --log-line a text that SERVICE_B's logs show soon after it starts
// NANNY_KEY, when set, is passed on to `nanny mcp`.
// Prints one JSON line and exits 0, or FAIL: ... on stderr and exits 1 (flow.mjs).

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { agentFlow, readArgs, run } from './flow.mjs';

const USAGE = 'node sdk_stdio.mjs NANNY_BIN NANNY_URL SERVICE_A SERVICE_B --log-line TEXT';
const { values, positionals } = readArgs(USAGE, { 'log-line': { type: 'string', default: '' } }, 4);
const [bin, nannyUrl, a, b] = positionals;

run(async () => {
    const env = { PATH: process.env.PATH || '/usr/bin:/bin', NANNY_URL: nannyUrl };
    if (process.env.NANNY_KEY) env.NANNY_KEY = process.env.NANNY_KEY;
    const transport = new StdioClientTransport({ command: bin, args: ['mcp'], env, stderr: 'inherit' });
    const client = new Client({ name: 'nanny-sdk-stdio-test', version: '1.0.0' });
    await client.connect(transport);
    const seen = await agentFlow(client, { a, b, logLine: values['log-line'] });
    await client.close();
    return { transport: 'stdio', ...seen };
});
