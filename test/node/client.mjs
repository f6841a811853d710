// client.mjs checks mcp-ssh-gateway against the official MCP TypeScript SDK client.
//
// It spawns the gateway over stdio, lists the tools (so the SDK knows their output schemas
// and validates every structuredContent against them), waits for an edge to connect and
// calls each tool of SPEC §4.2 that needs no provisioning token.
//
// Environment:
//   GATEWAY_BIN  path of mcp-ssh-gateway (required); it inherits this process's environment
//   EXPECT_EDGE  name of the edge that must connect (optional: without it only the calls that
//                need no edge run)
//   UPLOAD_DIR   directory the edge may write to, on this machine (optional: upload_file is
//                skipped without it)
//
// Exit status 0 on success, 1 with a message naming the failed check otherwise.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';

const TOTAL_TIMEOUT_MS = 60_000;
const CONNECT_WAIT_MS = 20_000;
const CALL_TIMEOUT_MS = 30_000;

// Annotations per SPEC §4.2: readOnly, destructive, idempotent, openWorld.
const TOOLS = {
  get_status: [true, false, true, false],
  register_edge_key: [false, false, true, false],
  get_agent_pubkey: [true, false, true, false],
  run_command: [false, true, false, true],
  upload_file: [false, true, false, true],
  get_device_info: [true, false, true, true],
};

const log = (msg) => process.stdout.write(`node-client: ${msg}\n`);
const fail = (msg) => {
  process.stderr.write(`node-client: FAIL: ${msg}\n`);
  process.exit(1);
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// fingerprintOf computes the SHA256:… fingerprint of an authorized_keys line, as ssh-keygen -l does.
function fingerprintOf(line) {
  const blob = Buffer.from(line.trim().split(/\s+/)[1] ?? '', 'base64');
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

// check runs one named step so a failure says which one.
async function check(name, fn) {
  try {
    const out = await fn();
    log(`ok   ${name}`);
    return out;
  } catch (err) {
    fail(`${name}: ${err?.stack ?? err}`);
  }
}

// call invokes a tool; the SDK throws if structuredContent does not match the output schema.
async function call(client, name, args, { expectError = false } = {}) {
  const res = await client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT_MS });
  const text = (res.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');
  if (Boolean(res.isError) !== expectError) {
    throw new Error(`${name} isError=${Boolean(res.isError)}, want ${expectError}: ${text}`);
  }
  if (expectError) {
    assert.ok(text.trim().length > 0, `${name}: an error result must carry a message`);
    return res;
  }
  assert.equal(typeof res.structuredContent, 'object', `${name}: no structuredContent`);
  assert.ok(res.structuredContent !== null, `${name}: structuredContent is null`);
  // SPEC §4.1: a JSON text copy of the structured content.
  assert.deepEqual(JSON.parse(text), res.structuredContent, `${name}: text content is not a JSON copy of structuredContent`);
  return res.structuredContent;
}

const isRFC3339 = (s) => typeof s === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s);

async function checkTools(client) {
  const { tools } = await client.listTools();
  const byName = new Map(tools.map((t) => [t.name, t]));
  for (const [name, [ro, destructive, idempotent, openWorld]] of Object.entries(TOOLS)) {
    const t = byName.get(name);
    assert.ok(t, `tool ${name} is missing (have: ${[...byName.keys()].join(', ')})`);
    assert.ok(t.description?.trim(), `${name}: no description`);
    assert.equal(t.inputSchema?.type, 'object', `${name}: inputSchema is not an object schema`);
    assert.equal(t.outputSchema?.type, 'object', `${name}: outputSchema is not an object schema`);
    for (const [arg, schema] of Object.entries(t.inputSchema.properties ?? {})) {
      assert.ok(schema.description?.trim(), `${name}: argument ${arg} has no description`);
    }
    const a = t.annotations ?? {};
    assert.deepEqual(
      [a.readOnlyHint, a.destructiveHint, a.idempotentHint, a.openWorldHint],
      [ro, destructive, idempotent, openWorld],
      `${name}: annotations readOnly/destructive/idempotent/openWorld`,
    );
  }
}

// waitForEdge polls get_status until the edge is connected and returns its entry.
async function waitForEdge(client, name) {
  const deadline = Date.now() + CONNECT_WAIT_MS;
  let last = 'no answer yet';
  for (let i = 0; i < 200 && Date.now() < deadline; i++) {
    const st = await call(client, 'get_status', { connected_only: true });
    const edge = st.edges.find((e) => e.name === name && e.connected);
    if (edge) return edge;
    last = JSON.stringify(st.edges.map((e) => e.name));
    await sleep(250);
  }
  throw new Error(`edge ${name} did not connect within ${CONNECT_WAIT_MS / 1000} s (connected: ${last})`);
}

async function main() {
  const bin = process.env.GATEWAY_BIN;
  if (!bin) fail('GATEWAY_BIN is not set: point it at the mcp-ssh-gateway binary');
  const edgeName = process.env.EXPECT_EDGE ?? '';
  const uploadDir = process.env.UPLOAD_DIR ?? '';

  const transport = new StdioClientTransport({ command: bin, args: [], env: process.env, stderr: 'inherit' });
  const client = new Client({ name: 'mcp-ssh-gateway-node-test', version: '0.0.0' });

  await check('initialize', async () => {
    await client.connect(transport);
    assert.ok(client.getServerVersion()?.name, 'server did not name itself');
    assert.ok(client.getInstructions()?.trim(), 'server sent no instructions at initialize');
  });

  await check('tools/list: six tools, schemas, annotations', () => checkTools(client));

  const status = await check('get_status', async () => {
    const st = await call(client, 'get_status', {});
    assert.equal(st.gateway.mode, 'reverse');
    assert.match(st.gateway.host_key_fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.equal(typeof st.gateway.uptime_seconds, 'number');
    assert.equal(typeof st.gateway.provisioning_enabled, 'boolean');
    assert.ok(Array.isArray(st.edges), 'edges must be an array');
    assert.ok(Number.isInteger(st.totals.known) && Number.isInteger(st.totals.connected), 'totals are integers');
    return st;
  });

  await check('get_agent_pubkey', async () => {
    const pk = await call(client, 'get_agent_pubkey', {});
    assert.match(pk.public_key, /^(ssh-|ecdsa-)\S+ [A-Za-z0-9+/=]+/);
    assert.equal(pk.fingerprint, fingerprintOf(pk.public_key), 'fingerprint does not match public_key');
    assert.equal(pk.fingerprint, status.gateway.host_key_fingerprint, 'fingerprint differs from get_status');
    assert.match(pk.edge_config, /EDGE_GATEWAY=\S+/);
    assert.match(pk.edge_config, /EDGE_GATEWAY_HOST_KEY=\S+/);
  });

  await check('run_command on an unknown edge is isError', () =>
    call(client, 'run_command', { edge: 'no-such-edge-x', argv: ['true'] }, { expectError: true }));

  if (!edgeName) {
    log('EXPECT_EDGE not set: skipping the calls that need an edge');
    return client;
  }

  const edge = await check(`edge ${edgeName} connects`, async () => {
    const e = await waitForEdge(client, edgeName);
    assert.match(e.fingerprint, /^SHA256:/);
    assert.equal(typeof e.labels, 'object');
    assert.equal(typeof e.reported_labels, 'object');
    assert.ok(isRFC3339(e.connected_since), `connected_since ${e.connected_since} is not RFC 3339`);
    return e;
  });

  await check('get_status totals', async () => {
    const st = await call(client, 'get_status', {});
    assert.ok(st.totals.connected >= 1 && st.totals.known >= st.totals.connected, JSON.stringify(st.totals));
  });

  await check('get_device_info', async () => {
    const d = await call(client, 'get_device_info', { edge: edgeName });
    assert.equal(d.edge, edgeName);
    assert.ok(d.hostname, 'hostname is empty');
    assert.equal(d.os, process.platform);
    assert.ok(d.cpu.logical_cores >= 1, 'cpu.logical_cores');
    assert.ok(d.memory.total > 0, 'memory.total');
    assert.ok(Array.isArray(d.disks) && Array.isArray(d.network), 'disks and network are arrays');
    assert.equal(typeof d.capabilities.tools, 'object');
    assert.ok(Array.isArray(d.capabilities.container_runtimes), 'container_runtimes is an array');
    assert.ok(isRFC3339(d.collected_at), `collected_at ${d.collected_at} is not RFC 3339`);
  });

  await check('run_command argv echo hi', async () => {
    const r = await call(client, 'run_command', { edge: edgeName, argv: ['echo', 'hi'] });
    assert.equal(r.edge, edgeName);
    assert.equal(r.exit_code, 0);
    assert.equal(r.stdout, 'hi\n');
    assert.equal(r.stderr, '');
    assert.equal(r.timed_out, false);
    assert.equal(r.stdout_truncated, false);
    assert.equal(r.stderr_truncated, false);
    assert.ok(Number.isInteger(r.duration_ms) && r.duration_ms >= 0, 'duration_ms');
  });

  await check('run_command non-zero exit is a normal result', async () => {
    const r = await call(client, 'run_command', { edge: edgeName, argv: ['sh', '-c', 'echo oops >&2; exit 3'] });
    assert.equal(r.exit_code, 3);
    assert.equal(r.stderr, 'oops\n');
    assert.equal(r.timed_out, false);
  });

  await check('run_command addressed by fingerprint', async () => {
    const r = await call(client, 'run_command', { edge: edge.fingerprint, argv: ['true'] });
    assert.equal(r.exit_code, 0);
  });

  if (!uploadDir) {
    log('UPLOAD_DIR not set: skipping upload_file');
    return client;
  }
  await check('upload_file', async () => {
    const content = `hello from the node client ${process.pid}\n`;
    const target = path.join(path.resolve(uploadDir), `node-client-${process.pid}.txt`);
    const u = await call(client, 'upload_file', { edge: edgeName, path: target, content, mode: '0640' });
    assert.equal(u.edge, edgeName);
    assert.equal(u.path, target);
    assert.equal(u.size, Buffer.byteLength(content));
    assert.equal(u.sha256.toLowerCase(), createHash('sha256').update(content).digest('hex'));
    assert.match(u.mode, /^0?640$/);
    assert.equal(readFileSync(target, 'utf8'), content, 'file on disk differs');
    assert.equal(statSync(target).mode & 0o777, 0o640, 'file mode on disk');
    // overwrite defaults to false: a second upload to the same path is refused.
    await call(client, 'upload_file', { edge: edgeName, path: target, content: 'x' }, { expectError: true });
  });
  return client;
}

const timer = setTimeout(() => fail(`did not finish within ${TOTAL_TIMEOUT_MS / 1000} s`), TOTAL_TIMEOUT_MS);
try {
  const client = await main();
  await client.close();
  clearTimeout(timer);
  log('all checks passed');
  process.exit(0);
} catch (err) {
  fail(err?.stack ?? String(err));
}
