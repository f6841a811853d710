// client.mjs checks mcp-ssh-gateway against the official MCP TypeScript SDK client.
//
// It spawns the gateway over stdio, lists the tools (so the SDK knows their output schemas
// and validates every structuredContent against them), prints the gateway's ssh_addr, waits
// for an edge to connect and calls every tool of README.md (Tools): the six core ones, the
// jobs, fan-out, download and find_edges tools, the key lifecycle tools when a provisioning
// token is given, and reads the MCP resources.
//
// Environment:
//   GATEWAY_BIN      path of mcp-ssh-gateway (required); it inherits this process's environment
//   EXPECT_EDGE      name of the edge that must connect (optional: without it only the calls that
//                    need no edge run); run_on_edges also targets it by its gateway-bound labels
//   UPLOAD_DIR       directory the edge may write to, on this machine (optional: upload_file and
//                    download_file are skipped without it)
//   FILES_DIR        the gateway's FILES_DIR (optional: source_path / dest_path are skipped without it)
//   PROVISION_TOKEN  the gateway's provisioning token (optional: the key tools are then only
//                    checked to refuse)
//   PENDING_FP       fingerprint of an unauthorized edge that keeps trying to connect (optional):
//                    it must show in list_pending_edges, is approved, connects and is revoked
//
// Exit status 0 on success, 1 with a message naming the failed check otherwise.

import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { CALL_TIMEOUT_MS, call, reporter, sleep } from './lib.mjs';

const TOTAL_TIMEOUT_MS = 75_000;
const CONNECT_WAIT_MS = 20_000;
const JOB_WAIT_MS = 10_000; // a short background job finishes, a cancelled one stops, within this
const PENDING_WAIT_MS = 15_000; // an unknown edge shows as pending / an approved one connects

// Annotations of the six core tools: readOnly, destructive, idempotent, openWorld.
const TOOLS = {
  get_status: [true, false, true, false],
  register_edge_key: [false, false, true, false],
  get_agent_pubkey: [true, false, true, false],
  run_command: [false, true, false, true],
  upload_file: [false, true, false, true],
  get_device_info: [true, false, true, true],
};

// The other tools of README.md (Tools).
const NEW_TOOLS = [
  'start_command', 'get_command', 'cancel_command', 'list_commands',
  'run_on_edges', 'download_file', 'find_edges',
  'revoke_edge_key', 'list_pending_edges', 'approve_edge', 'create_enrollment_token',
];

const EDGES_URI = 'edge://edges';
const INFO_TEMPLATE = 'edge://{name}/info';

const { log, fail, check } = reporter('node-client');
const sha256hex = (data) => createHash('sha256').update(data).digest('hex');

// fingerprintOf computes the SHA256:… fingerprint of an authorized_keys line, as ssh-keygen -l does.
function fingerprintOf(line) {
  const blob = Buffer.from(line.trim().split(/\s+/)[1] ?? '', 'base64');
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

// newPublicKeyLine makes a fresh ed25519 key and returns its authorized_keys line.
function newPublicKeyLine(comment) {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url');
  const str = (b) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const blob = Buffer.concat([str(Buffer.from('ssh-ed25519')), str(raw)]);
  return `ssh-ed25519 ${blob.toString('base64')} ${comment}`;
}

// readJSON reads a resource and parses its one JSON text content.
async function readJSON(client, uri) {
  const { contents } = await client.readResource({ uri }, { timeout: CALL_TIMEOUT_MS });
  assert.equal(contents?.length, 1, `${uri}: want one content, got ${contents?.length}`);
  const c = contents[0];
  assert.equal(c.uri, uri, `${uri}: content names another URI`);
  assert.equal(c.mimeType, 'application/json', `${uri}: mimeType`);
  assert.equal(typeof c.text, 'string', `${uri}: no text content`);
  return JSON.parse(c.text);
}

// poll calls fn every intervalMs until it returns a truthy value, or throws after timeoutMs.
async function poll(what, timeoutMs, intervalMs, fn) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (let i = 0; i < 1000; i++) {
    last = await fn();
    if (last?.done) return last.value;
    if (Date.now() >= deadline) break;
    await sleep(intervalMs);
  }
  throw new Error(`${what} not within ${timeoutMs / 1000} s; last: ${JSON.stringify(last?.value ?? last)}`.slice(0, 2000));
}

const isRFC3339 = (s) => typeof s === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s);

async function checkTools(client) {
  const { tools } = await client.listTools();
  const byName = new Map(tools.map((t) => [t.name, t]));
  const have = () => [...byName.keys()].join(', ');
  for (const [name, [ro, destructive, idempotent, openWorld]] of Object.entries(TOOLS)) {
    const t = byName.get(name);
    assert.ok(t, `tool ${name} is missing (have: ${have()})`);
    const a = t.annotations ?? {};
    assert.deepEqual(
      [a.readOnlyHint, a.destructiveHint, a.idempotentHint, a.openWorldHint],
      [ro, destructive, idempotent, openWorld],
      `${name}: annotations readOnly/destructive/idempotent/openWorld`,
    );
  }
  for (const name of NEW_TOOLS) {
    assert.ok(byName.has(name), `tool ${name} is missing (have: ${have()})`);
  }
  // For every tool listed: schemas, descriptions, all four annotations set.
  for (const t of tools) {
    assert.ok(t.description?.trim(), `${t.name}: no description`);
    assert.equal(t.inputSchema?.type, 'object', `${t.name}: inputSchema is not an object schema`);
    assert.equal(t.outputSchema?.type, 'object', `${t.name}: outputSchema is not an object schema`);
    for (const [arg, schema] of Object.entries(t.inputSchema.properties ?? {})) {
      assert.ok(schema.description?.trim(), `${t.name}: argument ${arg} has no description`);
      // One plain type per argument: strict clients warn about ["null", T].
      assert.equal(typeof schema.type, 'string', `${t.name}: argument ${arg} has type ${JSON.stringify(schema.type)}`);
    }
    const a = t.annotations ?? {};
    for (const hint of ['readOnlyHint', 'destructiveHint', 'idempotentHint', 'openWorldHint']) {
      assert.equal(typeof a[hint], 'boolean', `${t.name}: annotation ${hint} is not set`);
    }
  }
  return tools.length;
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

// checkJobShape asserts the fields every start/get/cancel_command result has.
function checkJobShape(j, edgeName) {
  assert.equal(j.edge, edgeName);
  assert.ok(j.job_id.startsWith(`${edgeName}/`), `job_id ${j.job_id} does not name the edge`);
  assert.ok(['running', 'exited', 'killed', 'timed_out', 'lost'].includes(j.status), `status ${j.status}`);
  assert.equal(typeof j.output, 'string');
  assert.ok(Number.isInteger(j.next_since) && j.next_since >= 0, `next_since ${j.next_since}`);
  assert.equal(typeof j.truncated, 'boolean');
  assert.ok(Array.isArray(j.argv), 'argv is an array');
  assert.ok(isRFC3339(j.started_at), `started_at ${j.started_at} is not RFC 3339`);
  if (j.status === 'running') {
    assert.equal(j.exit_code, undefined, 'a running job has no exit_code');
  } else {
    assert.ok(isRFC3339(j.finished_at), `finished_at ${j.finished_at} is not RFC 3339`);
  }
}

async function checkJobs(client, edgeName) {
  const job = await check('start_command', async () => {
    const argv = ['sh', '-c', 'echo started; sleep 0.2; echo done'];
    const j = await call(client, 'start_command', { edge: edgeName, argv });
    checkJobShape(j, edgeName);
    assert.deepEqual(j.argv, argv);
    return j;
  });

  await check('get_command polls with since=next_since until the job ends', async () => {
    let since = 0;
    let output = '';
    const end = await poll(`job ${job.job_id} to end`, JOB_WAIT_MS, 100, async () => {
      const j = await call(client, 'get_command', { job_id: job.job_id, since });
      checkJobShape(j, edgeName);
      assert.equal(j.job_id, job.job_id);
      assert.ok(j.next_since >= since, `next_since went back from ${since} to ${j.next_since}`);
      output += j.output;
      since = j.next_since;
      return { done: j.status !== 'running', value: j };
    });
    assert.equal(end.status, 'exited', JSON.stringify(end));
    assert.equal(end.exit_code, 0);
    // Reading from since=next_since of a finished job returns nothing new.
    const rest = await call(client, 'get_command', { job_id: job.job_id, since });
    output += rest.output;
    assert.equal(rest.output, '');
    assert.equal(output, 'started\ndone\n');
    // From the start again: all of it.
    const all = await call(client, 'get_command', { job_id: job.job_id });
    assert.equal(all.output, 'started\ndone\n');
    assert.equal(all.output_size, Buffer.byteLength('started\ndone\n'));
  });

  await check('list_commands includes the job', async () => {
    const l = await call(client, 'list_commands', { edge: edgeName });
    assert.equal(l.edge, edgeName);
    assert.ok(Array.isArray(l.jobs), 'jobs is an array');
    const j = l.jobs.find((x) => x.job_id === job.job_id);
    assert.ok(j, `job ${job.job_id} not in ${JSON.stringify(l.jobs.map((x) => x.job_id))}`);
    assert.equal(j.status, 'exited');
    assert.equal(j.exit_code, 0);
  });

  await check('cancel_command stops a running job', async () => {
    const j = await call(client, 'start_command', { edge: edgeName, argv: ['sleep', '30'] });
    checkJobShape(j, edgeName);
    assert.equal(j.status, 'running');
    const c = await call(client, 'cancel_command', { job_id: j.job_id });
    checkJobShape(c, edgeName);
    assert.equal(c.job_id, j.job_id);
    const end = await poll(`job ${j.job_id} to stop`, JOB_WAIT_MS, 100, async () => {
      const g = await call(client, 'get_command', { job_id: j.job_id });
      checkJobShape(g, edgeName);
      return { done: g.status !== 'running', value: g };
    });
    assert.equal(end.status, 'killed', JSON.stringify(end));
    // Cancelling a finished job leaves it as it is.
    const again = await call(client, 'cancel_command', { job_id: j.job_id });
    assert.equal(again.status, 'killed');
  });

  await check('start_command timeout_seconds ends the job as timed_out', async () => {
    const j = await call(client, 'start_command', { edge: edgeName, argv: ['sleep', '30'], timeout_seconds: 1 });
    const end = await poll(`job ${j.job_id} to time out`, JOB_WAIT_MS, 200, async () => {
      const g = await call(client, 'get_command', { job_id: j.job_id });
      checkJobShape(g, edgeName);
      return { done: g.status !== 'running', value: g };
    });
    assert.equal(end.status, 'timed_out', JSON.stringify(end));
  });

  await check('job tools with bad input are isError', async () => {
    await call(client, 'get_command', { job_id: 'nope' }, { expectError: true });
    await call(client, 'get_command', { job_id: `${edgeName}/0123456789abcdef` }, { expectError: true });
    await call(client, 'get_command', { job_id: job.job_id, since: -1 }, { expectError: true });
    await call(client, 'cancel_command', { job_id: 'nope' }, { expectError: true });
    await call(client, 'list_commands', { edge: 'no-such-edge-x' }, { expectError: true });
    await call(client, 'start_command', { edge: edgeName, argv: ['true'], command: 'true' }, { expectError: true });
    await call(client, 'start_command', { edge: 'no-such-edge-x', argv: ['true'] }, { expectError: true });
  });
}

async function checkFanout(client, edge) {
  const [key, value] = Object.entries(edge.labels)[0] ?? [];
  if (key === undefined) {
    log(`edge ${edge.name} has no gateway-bound labels: skipping run_on_edges by label`);
  } else {
    await check(`run_on_edges target ${key}=${value}`, async () => {
      const target = `${key}=${value}`;
      const r = await call(client, 'run_on_edges', { target, argv: ['echo', 'fan'] });
      assert.equal(r.target, target);
      const mine = r.results.find((x) => x.edge === edge.name);
      assert.ok(mine, `${edge.name} not in ${JSON.stringify(r.results.map((x) => x.edge))}`);
      assert.equal(r.matched, r.results.length);
      assert.equal(mine.exit_code, 0);
      assert.equal(mine.stdout, 'fan\n');
      assert.equal(mine.error, '');
      assert.equal(mine.timed_out, false);
    });
  }

  await check('run_on_edges target *', async () => {
    const r = await call(client, 'run_on_edges', { target: '*', command: 'echo star; echo err >&2; exit 2' });
    assert.equal(r.target, '*');
    assert.ok(r.matched >= 1 && r.matched === r.results.length, `matched ${r.matched}, results ${r.results.length}`);
    assert.equal(r.succeeded + r.failed, r.matched);
    const mine = r.results.find((x) => x.edge === edge.name);
    assert.ok(mine, `${edge.name} not in ${JSON.stringify(r.results.map((x) => x.edge))}`);
    assert.equal(mine.exit_code, 2);
    assert.equal(mine.stdout, 'star\n');
    assert.equal(mine.stderr, 'err\n');
    assert.equal(mine.error, '');
    assert.ok(Number.isInteger(mine.duration_ms) && mine.duration_ms >= 0, 'duration_ms');
    const names = r.results.map((x) => x.edge);
    assert.deepEqual(names, [...names].sort(), 'results are sorted by edge name');
  });

  await check('run_on_edges with bad input is isError', async () => {
    // A target matching no edge still carries the full (empty) structured result.
    const res = await call(client, 'run_on_edges', { target: 'no-such-label=x', argv: ['true'] }, { expectError: true });
    if (res.structuredContent) {
      assert.equal(res.structuredContent.matched, 0);
      assert.deepEqual(res.structuredContent.results, []);
    }
    await call(client, 'run_on_edges', { target: '', argv: ['true'] }, { expectError: true });
    await call(client, 'run_on_edges', { target: '*', argv: ['true'], concurrency: 1000 }, { expectError: true });
  });
}

async function checkFindEdges(client, edge) {
  await check('find_edges', async () => {
    const r = await call(client, 'find_edges', {});
    assert.ok(Array.isArray(r.edges), 'edges is an array');
    assert.ok(Number.isInteger(r.matched) && r.matched >= r.edges.length, `matched ${r.matched}`);
    assert.ok(Number.isInteger(r.without_inventory), 'without_inventory');
    const e = r.edges.find((x) => x.name === edge.name);
    assert.ok(e, `${edge.name} not in ${JSON.stringify(r.edges.map((x) => x.name))}`);
    assert.equal(e.fingerprint, edge.fingerprint);
    assert.equal(e.connected, true);
    assert.deepEqual(e.labels, edge.labels);
    assert.equal(typeof e.has_inventory, 'boolean');
    assert.ok(Array.isArray(e.container_runtimes), 'container_runtimes is an array');
    assert.equal(typeof e.tools, 'object');
    if (e.has_inventory) {
      assert.ok(e.cpu_cores >= 1, 'cpu_cores');
      assert.ok(isRFC3339(e.collected_at), `collected_at ${e.collected_at} is not RFC 3339`);
    }
  });

  await check('find_edges filters', async () => {
    const [key, value] = Object.entries(edge.labels)[0] ?? [];
    if (key !== undefined) {
      const r = await call(client, 'find_edges', { selector: `${key}=${value}`, has_tool: 'sh', sort_by: 'name', limit: 5 });
      const e = r.edges.find((x) => x.name === edge.name);
      if (r.without_inventory === 0) {
        assert.ok(e, `${edge.name} not found by its label and has_tool sh: ${JSON.stringify(r)}`);
        assert.equal(typeof e.tools.sh, 'string', 'tools.sh is listed');
      }
    }
    const none = await call(client, 'find_edges', { selector: 'no-such-label=x' });
    assert.deepEqual(none.edges, []);
    assert.equal(none.matched, 0);
    await call(client, 'find_edges', { sort_by: 'bogus' }, { expectError: true });
    await call(client, 'find_edges', { selector: '=bad=' }, { expectError: true });
  });
}

async function checkResources(client, edgeName) {
  await check('resources/list and templates', async () => {
    const { resources } = await client.listResources();
    const edges = resources.find((r) => r.uri === EDGES_URI);
    assert.ok(edges, `${EDGES_URI} not listed (have: ${resources.map((r) => r.uri).join(', ')})`);
    assert.equal(edges.mimeType, 'application/json');
    const { resourceTemplates } = await client.listResourceTemplates();
    assert.ok(resourceTemplates.some((t) => t.uriTemplate === INFO_TEMPLATE),
      `template ${INFO_TEMPLATE} not listed (have: ${resourceTemplates.map((t) => t.uriTemplate).join(', ')})`);
    if (!edgeName) return;
    // One listed resource per connected edge (follows connects after a short settle time).
    const want = `edge://${edgeName}/info`;
    await poll(`${want} in resources/list`, 5_000, 200, async () => {
      const l = await client.listResources();
      return { done: l.resources.some((r) => r.uri === want), value: l.resources.map((r) => r.uri) };
    });
  });

  if (!edgeName) return;
  const infoURI = await check(`resources/read ${EDGES_URI}`, async () => {
    const doc = await readJSON(client, EDGES_URI);
    assert.ok(Array.isArray(doc.edges), 'edges is an array');
    const e = doc.edges.find((x) => x.name === edgeName);
    assert.ok(e, `${edgeName} not in ${JSON.stringify(doc.edges.map((x) => x.name))}`);
    assert.equal(e.connected, true);
    assert.match(e.fingerprint, /^SHA256:/);
    assert.equal(typeof e.labels, 'object');
    assert.equal(e.info_uri, `edge://${edgeName}/info`);
    return e.info_uri;
  });

  await check(`resources/read ${infoURI}`, async () => {
    const d = await readJSON(client, infoURI);
    assert.equal(d.edge, edgeName);
    assert.ok(d.hostname, 'hostname is empty');
    assert.equal(d.os, process.platform);
    assert.ok(Array.isArray(d.disks) && Array.isArray(d.network), 'disks and network are arrays');
    assert.ok(isRFC3339(d.collected_at), `collected_at ${d.collected_at} is not RFC 3339`);
  });

  await check('resources/read of an unknown edge fails', async () => {
    await assert.rejects(client.readResource({ uri: 'edge://no-such-edge-x/info' }, { timeout: CALL_TIMEOUT_MS }));
  });
}

// checkDownload reads back the file upload_file wrote, inline and (with FILES_DIR) via dest_path,
// and sends it again from FILES_DIR with source_path.
async function checkDownload(client, edgeName, uploaded, filesDir) {
  await check('download_file inline', async () => {
    const d = await call(client, 'download_file', { edge: edgeName, path: uploaded.path });
    assert.equal(d.edge, edgeName);
    assert.equal(d.path, uploaded.path);
    assert.equal(d.encoding, 'utf-8');
    assert.equal(d.content, uploaded.content);
    assert.equal(d.size, Buffer.byteLength(uploaded.content));
    assert.equal(d.bytes, d.size);
    assert.equal(d.sha256, uploaded.sha256);
    assert.equal(d.sha256, sha256hex(d.content));
    assert.equal(d.truncated, false);
    assert.equal(d.dest_path, '');
    // max_bytes reads only the start.
    const part = await call(client, 'download_file', { edge: edgeName, path: uploaded.path, max_bytes: 5 });
    assert.equal(part.content, uploaded.content.slice(0, 5));
    assert.equal(part.bytes, 5);
    assert.equal(part.truncated, true);
    assert.equal(part.sha256, sha256hex(part.content));
  });

  await check('download_file with bad input is isError', async () => {
    await call(client, 'download_file', { edge: edgeName, path: 'relative.txt' }, { expectError: true });
    await call(client, 'download_file', { edge: edgeName, path: `${uploaded.path}.missing` }, { expectError: true });
    await call(client, 'download_file', { edge: 'no-such-edge-x', path: uploaded.path }, { expectError: true });
  });

  if (!filesDir) {
    log('FILES_DIR not set: skipping dest_path and source_path');
    return;
  }
  const dest = `node-client-${process.pid}.txt`;
  await check('download_file dest_path into FILES_DIR', async () => {
    const d = await call(client, 'download_file', { edge: edgeName, path: uploaded.path, dest_path: dest });
    assert.equal(d.dest_path, dest);
    assert.equal(d.content, '');
    assert.equal(d.encoding, '');
    assert.equal(d.sha256, uploaded.sha256);
    assert.equal(readFileSync(path.join(filesDir, dest), 'utf8'), uploaded.content, 'file in FILES_DIR differs');
    // No overwrite by default; outside FILES_DIR is refused.
    await call(client, 'download_file', { edge: edgeName, path: uploaded.path, dest_path: dest }, { expectError: true });
    await call(client, 'download_file', { edge: edgeName, path: uploaded.path, dest_path: '../escape.txt' }, { expectError: true });
  });

  await check('upload_file source_path from FILES_DIR', async () => {
    const target = `${uploaded.path}.copy`;
    const u = await call(client, 'upload_file', { edge: edgeName, path: target, source_path: dest });
    assert.equal(u.path, target);
    assert.equal(u.sha256.toLowerCase(), uploaded.sha256);
    assert.equal(readFileSync(target, 'utf8'), uploaded.content, 'copied file on disk differs');
  });
}

// checkKeyAdmin exercises the key lifecycle tools with the provisioning token: a fresh key is
// registered and revoked (never the test edge's), a pending edge is approved, connects and is
// revoked, an enrolment string is made.
async function checkKeyAdmin(client, token, pendingFP, hostFP) {
  if (!token) {
    await check('key tools without PROVISION_TOKEN are isError', async () => {
      await call(client, 'list_pending_edges', { token: 'x' }, { expectError: true });
      await call(client, 'create_enrollment_token', { token: 'x', name: 'ts-new' }, { expectError: true });
    });
    log('PROVISION_TOKEN not set: skipping the key lifecycle calls');
    return;
  }

  await check('register_edge_key then revoke_edge_key a fresh key', async () => {
    const line = newPublicKeyLine('node-client');
    const fp = fingerprintOf(line);
    const r = await call(client, 'register_edge_key', { token, public_key: line, name: 'ts-fresh', labels: { role: 'ts-fresh' } });
    assert.equal(r.fingerprint, fp);
    assert.equal(r.name, 'ts-fresh');
    assert.deepEqual(r.labels, { role: 'ts-fresh' });
    assert.equal(r.added, true);
    const again = await call(client, 'register_edge_key', { token, public_key: line, name: 'ts-fresh' });
    assert.equal(again.added, false);
    const v = await call(client, 'revoke_edge_key', { token, fingerprint: fp });
    assert.equal(v.fingerprint, fp);
    assert.equal(v.name, 'ts-fresh');
    assert.equal(v.revoked, true);
  });

  await check('list_pending_edges', async () => {
    const want = pendingFP ? `${pendingFP} in list_pending_edges` : 'list_pending_edges';
    const p = await poll(want, PENDING_WAIT_MS, 250, async () => {
      const r = await call(client, 'list_pending_edges', { token });
      assert.ok(Array.isArray(r.pending), 'pending is an array');
      const mine = pendingFP ? r.pending.find((x) => x.fingerprint === pendingFP) : r.pending[0];
      return { done: !pendingFP || mine, value: mine ?? r };
    });
    if (pendingFP) {
      assert.match(p.requested_name, /\S/, 'requested_name is empty');
      assert.ok(isRFC3339(p.first_attempt) && isRFC3339(p.last_attempt), 'attempt times are RFC 3339');
      assert.ok(p.attempts >= 1, `attempts ${p.attempts}`);
    }
  });

  if (pendingFP) {
    await check('approve_edge, the edge connects, revoke_edge_key drops it', async () => {
      const a = await call(client, 'approve_edge', { token, fingerprint: pendingFP, name: 'ts-approved', labels: { role: 'ts-approved' } });
      assert.equal(a.fingerprint, pendingFP);
      assert.equal(a.name, 'ts-approved');
      assert.deepEqual(a.labels, { role: 'ts-approved' });
      assert.equal(a.added, true);
      const e = await poll('the approved edge to connect', PENDING_WAIT_MS, 250, async () => {
        const st = await call(client, 'get_status', { connected_only: true });
        const x = st.edges.find((y) => y.fingerprint === pendingFP);
        return { done: Boolean(x), value: x ?? st.edges.map((y) => y.name) };
      });
      assert.equal(e.name, 'ts-approved');
      assert.deepEqual(e.labels, { role: 'ts-approved' });
      const v = await call(client, 'revoke_edge_key', { token, edge: 'ts-approved' });
      assert.equal(v.fingerprint, pendingFP);
      assert.equal(v.name, 'ts-approved');
      assert.equal(v.revoked, true);
      await poll('the revoked edge to drop', JOB_WAIT_MS, 250, async () => {
        const st = await call(client, 'get_status', { connected_only: true });
        return { done: !st.edges.some((y) => y.fingerprint === pendingFP), value: st.edges.map((y) => y.name) };
      });
    });
  } else {
    log('PENDING_FP not set: skipping approve_edge');
  }

  await check('create_enrollment_token', async () => {
    const before = Date.now();
    const r = await call(client, 'create_enrollment_token', { token, name: 'ts-new', ttl_seconds: 600 });
    assert.match(r.enrollment, /\S{16,}/);
    assert.ok(r.command.includes(r.enrollment), 'command does not carry the enrolment string');
    assert.equal(r.name, 'ts-new');
    assert.deepEqual(r.labels, {});
    assert.match(r.gateway, /^\S+:\d+$/);
    assert.equal(r.host_key_fingerprint, hostFP);
    assert.ok(isRFC3339(r.expires_at), `expires_at ${r.expires_at} is not RFC 3339`);
    const ttl = (Date.parse(r.expires_at) - before) / 1000;
    assert.ok(ttl > 540 && ttl <= 601, `expires_at is ${ttl} s away, want about 600`);
  });

  await check('key tools with bad input are isError', async () => {
    await call(client, 'revoke_edge_key', { token, fingerprint: 'SHA256:' + 'A'.repeat(43) }, { expectError: true });
    await call(client, 'revoke_edge_key', { token }, { expectError: true });
    await call(client, 'approve_edge', { token, fingerprint: 'SHA256:' + 'A'.repeat(43), name: 'ts-x' }, { expectError: true });
    await call(client, 'create_enrollment_token', { token, name: 'ts-new2', ttl_seconds: 10 ** 9 }, { expectError: true });
    await call(client, 'create_enrollment_token', { token, name: 'Not A Name!' }, { expectError: true });
    await call(client, 'list_pending_edges', { token: `${token}-wrong` }, { expectError: true });
  });
}

async function main() {
  const bin = process.env.GATEWAY_BIN;
  if (!bin) fail('GATEWAY_BIN is not set: point it at the mcp-ssh-gateway binary');
  const edgeName = process.env.EXPECT_EDGE ?? '';
  const uploadDir = process.env.UPLOAD_DIR ?? '';
  const filesDir = process.env.FILES_DIR ?? '';
  const token = process.env.PROVISION_TOKEN ?? '';
  const pendingFP = process.env.PENDING_FP ?? '';

  const transport = new StdioClientTransport({ command: bin, args: [], env: process.env, stderr: 'inherit' });
  const client = new Client({ name: 'mcp-ssh-gateway-node-test', version: '0.0.0' });

  await check('initialize', async () => {
    await client.connect(transport);
    assert.ok(client.getServerVersion()?.name, 'server did not name itself');
    assert.ok(client.getInstructions()?.trim(), 'server sent no instructions at initialize');
    assert.ok(client.getServerCapabilities()?.resources, 'server does not declare resources');
  });

  await check('tools/list: all tools, schemas, annotations', () => checkTools(client));

  const status = await check('get_status', async () => {
    const st = await call(client, 'get_status', {});
    assert.equal(st.gateway.mode, 'reverse');
    assert.match(st.gateway.host_key_fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.equal(typeof st.gateway.uptime_seconds, 'number');
    assert.equal(st.gateway.provisioning_enabled, Boolean(token));
    assert.ok(Array.isArray(st.edges), 'edges must be an array');
    assert.ok(Number.isInteger(st.totals.known) && Number.isInteger(st.totals.connected), 'totals are integers');
    return st;
  });
  // The gateway listens on SSH_PORT=0: whoever starts the edges learns the port here.
  log(`ssh_addr ${status.gateway.ssh_addr}`);

  await check('bad arguments get one readable line with an example', async () => {
    const text = await call(client, 'run_command', { edge: 'x', argv: 'uname -a' }, { expectError: true });
    const msg = (text.content ?? []).map((c) => c.text).join('\n');
    assert.match(msg, /^invalid arguments: argv must be an array, not a string, e\.g\. \{"argv": \["uname", "-a"\]\}/, msg);
    assert.ok(!msg.includes('&{') && !msg.includes('\n'), `not one readable line: ${msg}`);
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
    await checkResources(client, '');
    await checkKeyAdmin(client, token, pendingFP, status.gateway.host_key_fingerprint);
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

  const checkDeviceInfo = (d) => {
    assert.equal(d.edge, edgeName);
    assert.ok(d.hostname, 'hostname is empty');
    assert.equal(d.os, process.platform);
    assert.ok(d.cpu.logical_cores >= 1, 'cpu.logical_cores');
    assert.ok(d.memory.total > 0, 'memory.total');
    assert.ok(Array.isArray(d.disks) && Array.isArray(d.network), 'disks and network are arrays');
    assert.equal(typeof d.capabilities.tools, 'object');
    assert.ok(Array.isArray(d.capabilities.container_runtimes), 'container_runtimes is an array');
    assert.ok(isRFC3339(d.collected_at), `collected_at ${d.collected_at} is not RFC 3339`);
  };

  await check('get_device_info', async () => {
    checkDeviceInfo(await call(client, 'get_device_info', { edge: edgeName }));
  });

  await check('get_device_info refresh', async () => {
    const before = Date.now();
    const d = await call(client, 'get_device_info', { edge: edgeName, refresh: true });
    checkDeviceInfo(d);
    // Freshly collected (RFC 3339 has whole seconds; allow some clock slack).
    assert.ok(Date.parse(d.collected_at) >= before - 2000, `collected_at ${d.collected_at} is older than the call`);
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

  await check('run_command timeout is isError with the captured output', async () => {
    const res = await call(client, 'run_command',
      { edge: edgeName, argv: ['sh', '-c', 'echo before; sleep 30'], timeout_seconds: 1 }, { expectError: true });
    // The SDK has validated this structured content against the output schema too.
    const r = res.structuredContent;
    assert.ok(r, 'a timed-out run_command carries its structured result');
    assert.equal(r.timed_out, true);
    assert.equal(r.stdout, 'before\n');
    assert.equal(r.exit_code, -1);
  });

  await check('run_command addressed by fingerprint', async () => {
    const r = await call(client, 'run_command', { edge: edge.fingerprint, argv: ['true'] });
    assert.equal(r.exit_code, 0);
  });

  await checkFindEdges(client, edge);
  await checkJobs(client, edgeName);
  await checkFanout(client, edge);

  if (!uploadDir) {
    log('UPLOAD_DIR not set: skipping upload_file and download_file');
  } else {
    const uploaded = await check('upload_file', async () => {
      const content = `hello from the node client ${process.pid}\n`;
      const target = path.join(path.resolve(uploadDir), `node-client-${process.pid}.txt`);
      const u = await call(client, 'upload_file', { edge: edgeName, path: target, content, mode: '0640' });
      assert.equal(u.edge, edgeName);
      assert.equal(u.path, target);
      assert.equal(u.size, Buffer.byteLength(content));
      assert.equal(u.sha256.toLowerCase(), sha256hex(content));
      assert.match(u.mode, /^0?640$/);
      assert.equal(readFileSync(target, 'utf8'), content, 'file on disk differs');
      assert.equal(statSync(target).mode & 0o777, 0o640, 'file mode on disk');
      // overwrite defaults to false: a second upload to the same path is refused.
      await call(client, 'upload_file', { edge: edgeName, path: target, content: 'x' }, { expectError: true });
      return { path: target, content, sha256: u.sha256.toLowerCase() };
    });
    await checkDownload(client, edgeName, uploaded, filesDir);
  }

  await checkResources(client, edgeName);
  await checkKeyAdmin(client, token, pendingFP, status.gateway.host_key_fingerprint);
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
