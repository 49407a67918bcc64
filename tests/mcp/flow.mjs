// The agent's flow that sdk_http.mjs and sdk_stdio.mjs run through the official
// TypeScript SDK (@modelcontextprotocol/sdk 1.32.2) once connected, and the small
// helpers every script of this folder shares: argument parsing, expectations that
// stop the run with a clear message, and the JSON summary on stdout.
//
// Each script prints one JSON line on stdout and exits 0 when every expectation
// held; otherwise it prints `FAIL: <what was expected and what came>` on stderr and
// exits 1. tests/integration/test_mcp_sdk.py runs them against a real daemon.

import { parseArgs } from 'node:util';

// The tools of the contract (SPEC section 7), in name order.
export const TOOLS = [
    'gpu_status',
    'list_services',
    'rediscover',
    'restart_service',
    'service_logs',
    'service_status',
    'start_service',
    'stop_service',
];

// How long one script may run in all before it gives up (milliseconds).
const RUN_TIMEOUT_MS = Number(process.env.MCP_TEST_TIMEOUT_MS || 90000);

// A failed expectation: what was expected, and what came (as JSON).
export class Expectation extends Error {}

// Stops the run unless ok, saying what was expected and what came instead.
export function expect(ok, what, got) {
    if (!ok) {
        const shown = got === undefined ? '' : `; got ${JSON.stringify(got)}`;
        throw new Expectation(`${what}${shown}`);
    }
}

// Reads the command line: positional arguments and --options as
// node:util.parseArgs takes them ({name: {type: 'string'}}); a usage error exits 2.
export function readArgs(usage, options, positionals) {
    let parsed;
    try {
        parsed = parseArgs({ options, allowPositionals: true, strict: true });
    } catch (e) {
        process.stderr.write(`${e.message}\nusage: ${usage}\n`);
        process.exit(2);
    }
    if (parsed.positionals.length !== positionals) {
        process.stderr.write(`usage: ${usage}\n`);
        process.exit(2);
    }
    return parsed;
}

// Runs main(), then prints its summary as one JSON line and exits 0; a failed
// expectation or any error prints FAIL: on stderr and exits 1. A run that takes
// longer than RUN_TIMEOUT_MS fails too, so a daemon that never answers cannot hang
// the test.
export function run(main) {
    const timer = setTimeout(() => {
        process.stderr.write(`FAIL: no result within ${RUN_TIMEOUT_MS} ms\n`);
        process.exit(1);
    }, RUN_TIMEOUT_MS);
    main().then(
        (summary) => {
            clearTimeout(timer);
            process.stdout.write(`${JSON.stringify({ ok: true, node: process.version, ...summary })}\n`);
            process.exit(0);
        },
        (e) => {
            clearTimeout(timer);
            const what = e instanceof Expectation ? e.message : `${e?.name}: ${e?.message}`;
            process.stderr.write(`FAIL: ${what}\n`);
            if (!(e instanceof Expectation) && e?.stack) {
                process.stderr.write(`${e.stack}\n`);
            }
            process.exit(1);
        },
    );
}

// The JSON a tool result's text carries; fails when content is not one text item.
export function resultText(result, tool) {
    expect(Array.isArray(result.content) && result.content.length >= 1,
        `${tool}: content is a non-empty array`, result);
    const item = result.content[0];
    expect(item.type === 'text' && typeof item.text === 'string' && item.text.length > 0,
        `${tool}: content[0] is {type: "text", text}`, result);
    return item.text;
}

// Checks a successful tool result: not isError, structuredContent an object, and the
// text the same JSON as structuredContent. Returns structuredContent.
export function okResult(result, tool) {
    expect(result.isError !== true, `${tool}: a successful result (no isError)`, result);
    const sc = result.structuredContent;
    expect(sc !== null && typeof sc === 'object' && !Array.isArray(sc),
        `${tool}: structuredContent is an object`, result);
    const text = resultText(result, tool);
    let parsed;
    try {
        parsed = JSON.parse(text);
    } catch {
        expect(false, `${tool}: content[0].text is JSON`, text);
    }
    expect(JSON.stringify(sortKeys(parsed)) === JSON.stringify(sortKeys(sc)),
        `${tool}: content[0].text is the same JSON as structuredContent`, { text, sc });
    return sc;
}

// Checks a failed tool result: isError true, a text sentence, no structuredContent.
// Returns the text.
export function errorResult(result, tool) {
    expect(result.isError === true, `${tool}: a result with isError: true`, result);
    expect(result.structuredContent === undefined,
        `${tool}: an error result has no structuredContent`, result);
    return resultText(result, tool);
}

// A copy of a JSON value with every object's keys in order (for comparing).
function sortKeys(v) {
    if (Array.isArray(v)) return v.map(sortKeys);
    if (v !== null && typeof v === 'object') {
        return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
    }
    return v;
}

// Checks tools/list: exactly the contract's tools, each with a description, an
// object inputSchema and an outputSchema. Returns the tools by name.
export function checkTools(list) {
    expect(Array.isArray(list.tools), 'tools/list: a tools array', list);
    const names = list.tools.map((t) => t.name).sort();
    expect(JSON.stringify(names) === JSON.stringify(TOOLS), `tools/list: the tools ${TOOLS.join(', ')}`, names);
    const byName = {};
    for (const t of list.tools) {
        expect(typeof t.description === 'string' && t.description.length > 20,
            `tools/list: ${t.name} has a description written for an agent`, t);
        expect(t.inputSchema?.type === 'object', `tools/list: ${t.name} has an object inputSchema`, t);
        expect(t.outputSchema?.type === 'object', `tools/list: ${t.name} has an object outputSchema`, t);
        byName[t.name] = t;
    }
    for (const [tool, field] of [['service_status', 'name'], ['start_service', 'force'],
        ['start_service', 'wait_healthy'], ['service_logs', 'tail'], ['restart_service', 'force']]) {
        expect(byName[tool].inputSchema.properties?.[field] !== undefined,
            `tools/list: ${tool}'s inputSchema has the property ${field}`, byName[tool].inputSchema);
    }
    return byName;
}

// Waits (bounded) until service_logs of name holds a line containing text; returns
// that tool result's structuredContent.
async function waitForLogLine(client, name, text) {
    const deadline = Date.now() + 15000;
    let last;
    for (;;) {
        last = okResult(await client.callTool({ name: 'service_logs', arguments: { name, tail: 100 } }),
            'service_logs');
        if (JSON.stringify(last).includes(text)) return last;
        expect(Date.now() < deadline, `service_logs of ${name} shows a line with ${JSON.stringify(text)} within 15 s`, last);
        await new Promise((r) => setTimeout(r, 200));
    }
}

// The whole agent flow over a connected SDK 1.x client, on two stopped GPU
// services a and b (process services with a health check) that print logLine at
// start: status, start a, the conflict on b as isError naming a, force b, b's logs,
// stop b, start a with wait_healthy and progress, gpu_status, restart a, stop a,
// rediscover, and the errors of an unknown service and an unknown tool. Returns what
// it saw.
export async function agentFlow(client, { a, b, logLine }) {
    const seen = {};

    const version = client.getServerVersion();
    expect(typeof version?.name === 'string' && typeof version?.version === 'string',
        'initialize: serverInfo with name and version', version);
    seen.serverInfo = version;
    const instructions = client.getInstructions();
    expect(typeof instructions === 'string' && /gpu/i.test(instructions),
        'initialize: instructions that tell an agent the GPU rule', instructions);
    expect(client.getServerCapabilities()?.tools !== undefined, 'initialize: the tools capability',
        client.getServerCapabilities());

    expect(JSON.stringify(await client.ping()) === '{}', 'ping: an empty result');

    const tools = checkTools(await client.listTools());
    seen.tools = Object.keys(tools).sort();

    const all = okResult(await client.callTool({ name: 'list_services', arguments: {} }), 'list_services');
    const listed = (all.services || []).map((s) => s.name);
    expect(listed.includes(a) && listed.includes(b), `list_services: lists ${a} and ${b}`, all);

    let st = okResult(await client.callTool({ name: 'service_status', arguments: { name: a } }), 'service_status');
    expect(st.name === a && st.state === 'stopped', `service_status ${a}: stopped`, st);

    // Start a: the GPU holder.
    st = okResult(await client.callTool({ name: 'start_service', arguments: { name: a } }), 'start_service');
    expect(st.name === a && ['starting', 'running'].includes(st.state), `start_service ${a}: starting or running`, st);

    // b conflicts: a tool result with isError naming the holder and force.
    const conflict = errorResult(await client.callTool({ name: 'start_service', arguments: { name: b } }),
        'start_service (GPU conflict)');
    expect(conflict.includes(a), `start_service ${b}: the conflict names the holder ${a}`, conflict);
    expect(/force/.test(conflict), `start_service ${b}: the conflict says that force would stop ${a}`, conflict);
    seen.conflict = conflict;
    st = okResult(await client.callTool({ name: 'service_status', arguments: { name: b } }), 'service_status');
    expect(st.state === 'stopped', `service_status ${b}: still stopped after the conflict`, st);

    // force: a is stopped first, b starts.
    st = okResult(await client.callTool({ name: 'start_service', arguments: { name: b, force: true } }),
        'start_service (force)');
    expect(st.name === b && ['starting', 'running'].includes(st.state), `start_service ${b} force: starting or running`, st);
    expect(JSON.stringify(st.preempted) === JSON.stringify([a]), `start_service ${b} force: preempted [${a}]`, st);
    st = okResult(await client.callTool({ name: 'service_status', arguments: { name: a } }), 'service_status');
    expect(st.state === 'stopped', `service_status ${a}: stopped by the forced start`, st);

    const logs = await waitForLogLine(client, b, logLine);
    seen.logs = logs;

    st = okResult(await client.callTool({ name: 'stop_service', arguments: { name: b } }), 'stop_service');
    expect(st.name === b && st.state === 'stopped', `stop_service ${b}: stopped`, st);

    // wait_healthy with a progressToken: progress notifications, then a running status.
    const progress = [];
    st = okResult(await client.callTool(
        { name: 'start_service', arguments: { name: a, wait_healthy: true } },
        undefined,
        { onprogress: (p) => progress.push(p), timeout: 60000 },
    ), 'start_service (wait_healthy)');
    expect(st.name === a && st.state === 'running', `start_service ${a} wait_healthy: running when it answers`, st);
    expect(progress.length >= 1, `start_service ${a} wait_healthy: at least one notifications/progress`, progress);
    for (let i = 1; i < progress.length; i++) {
        expect(progress[i].progress > progress[i - 1].progress,
            'notifications/progress: progress increases with each notification', progress);
    }
    seen.progress = progress;

    const gpu = okResult(await client.callTool({ name: 'gpu_status', arguments: {} }), 'gpu_status');
    expect(JSON.stringify(gpu).includes(JSON.stringify(a)), `gpu_status: names the holder ${a}`, gpu);
    seen.gpu = gpu;

    st = okResult(await client.callTool({ name: 'restart_service', arguments: { name: a } }), 'restart_service');
    expect(st.name === a && ['starting', 'running'].includes(st.state), `restart_service ${a}: starting or running`, st);
    expect(Array.isArray(st.preempted), `restart_service ${a}: preempted is a list`, st);

    st = okResult(await client.callTool({ name: 'stop_service', arguments: { name: a } }), 'stop_service');
    expect(st.state === 'stopped', `stop_service ${a}: stopped`, st);
    okResult(await client.callTool({ name: 'rediscover', arguments: {} }), 'rediscover');

    // An unknown service is a tool error; an unknown tool is an error of either kind.
    const unknown = errorResult(await client.callTool({ name: 'service_status', arguments: { name: 'no-such-service' } }),
        'service_status (unknown service)');
    expect(unknown.includes('no-such-service'), 'service_status of an unknown service names it', unknown);
    let unknownTool;
    try {
        unknownTool = await client.callTool({ name: 'no_such_tool', arguments: {} });
    } catch (e) {
        unknownTool = { protocolError: e.code, message: e.message };
    }
    expect(unknownTool.protocolError !== undefined || unknownTool.isError === true,
        'tools/call of an unknown tool fails', unknownTool);
    seen.unknownTool = unknownTool;

    return seen;
}
