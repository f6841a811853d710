// policy.mjs checks the gateway's policy (POLICY_FILE) through the official MCP TypeScript SDK
// client: what a role sees, what it may run, and approval by MCP elicitation (the client's
// user answers, here this script: accept once, then decline).
//
// Environment:
//   GATEWAY_BIN  path of mcp-ssh-gateway (required); it inherits this environment, whose
//                POLICY_FILE gives the stdio client a role that reaches PROD_EDGE with
//                get_status and run_command (commands: [uptime]) and upload_file with
//                approval, and does not reach LAB_EDGE
//   PROD_EDGE    an edge the role reaches; LAB_EDGE one it does not (both connected)
//   UPLOAD_DIR   a directory PROD_EDGE may write to
//
// Exit status 0 on success, 1 with a message naming the failed check otherwise.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { call, reporter, sleep, textOf } from './lib.mjs';

const CONNECT_WAIT_MS = 20_000;
const { log, fail, check } = reporter('node-policy');
// refusal calls a tool that must fail and returns its message.
const refusal = async (client, name, args) => textOf(await call(client, name, args, { expectError: true }));

async function main() {
  const bin = process.env.GATEWAY_BIN;
  const prod = process.env.PROD_EDGE;
  const lab = process.env.LAB_EDGE;
  const uploadDir = process.env.UPLOAD_DIR;
  if (!bin || !prod || !lab || !uploadDir) fail('GATEWAY_BIN, PROD_EDGE, LAB_EDGE and UPLOAD_DIR are required');

  const answers = ['accept', 'decline'];
  const asked = [];
  const client = new Client({ name: 'mcp-ssh-gateway-policy-test', version: '0.0.0' }, { capabilities: { elicitation: {} } });
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    asked.push(req.params.message);
    const action = answers.shift() ?? 'decline';
    return action === 'accept' ? { action, content: { approve: true } } : { action };
  });
  const transport = new StdioClientTransport({ command: bin, args: [], env: process.env, stderr: 'inherit' });
  await check('initialize', () => client.connect(transport));
  await check('ssh_addr', async () => {
    const st = await call(client, 'get_status', {});
    // The Go test starts the edges once it knows where the gateway (SSH_PORT=0) listens.
    process.stderr.write(`node-policy: ssh_addr ${st.gateway.ssh_addr}\n`);
  });

  await check('tools/list shows only what the role reaches', async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name).sort();
    assert.deepEqual(names, ['explain_policy', 'get_status', 'run_command', 'upload_file']);
  });

  await check('get_status shows the prod edge, not the lab edge', async () => {
    const deadline = Date.now() + CONNECT_WAIT_MS;
    for (;;) {
      const st = await call(client, 'get_status', {});
      const names = st.edges.map((e) => e.name);
      assert.ok(!names.includes(lab), `the role sees ${lab}: ${names}`);
      if (st.edges.some((e) => e.name === prod && e.connected)) return;
      if (Date.now() > deadline) throw new Error(`${prod} not connected: ${JSON.stringify(st.edges)}`);
      await sleep(200);
    }
  });

  await check('run_command uptime (allowed)', async () => {
    const out = await call(client, 'run_command', { edge: prod, argv: ['uptime'] });
    assert.equal(out.exit_code, 0, JSON.stringify(out));
  });

  for (const argv of [['sh', '-c', 'uptime'], ['/tmp/x/uptime'], ['env', 'PATH=/tmp', 'uptime']]) {
    await check(`run_command ${JSON.stringify(argv)} refused`, async () => {
      const text = await refusal(client, 'run_command', { edge: prod, argv });
      assert.match(text, /role ops/, text);
    });
  }
  await check('run_command with a shell string refused', async () => {
    const text = await refusal(client, 'run_command', { edge: prod, command: 'uptime; id' });
    assert.match(text, /role ops/, text);
  });
  await check('the lab edge is unknown to the role', async () => {
    const text = await refusal(client, 'run_command', { edge: lab, argv: ['uptime'] });
    assert.match(text, /unknown edge/, text);
  });

  await check('explain_policy', async () => {
    const ok = await call(client, 'explain_policy', { tool: 'run_command', arguments: { edge: prod, argv: ['uptime'] } });
    assert.equal(ok.allowed, true, JSON.stringify(ok));
    const no = await call(client, 'explain_policy', { tool: 'run_command', arguments: { edge: prod, argv: ['/tmp/x/uptime'] } });
    assert.equal(no.allowed, false, JSON.stringify(no));
    assert.equal(no.role, 'ops');
    const up = await call(client, 'explain_policy', { tool: 'upload_file', arguments: { edge: prod, path: '/tmp/x' } });
    assert.equal(up.needs_approval, true, JSON.stringify(up));
  });

  const target = path.join(uploadDir, 'approved.txt');
  await check('upload_file approved by elicitation', async () => {
    const out = await call(client, 'upload_file', { edge: prod, path: target, content: 'approved\n' });
    assert.equal(out.size, 9);
    assert.ok(existsSync(target), 'the approved upload did not land');
    assert.equal(asked.length, 1, 'the user was not asked');
    assert.match(asked[0], /upload_file/);
  });
  const denied = path.join(uploadDir, 'denied.txt');
  await check('upload_file denied by elicitation', async () => {
    const text = await refusal(client, 'upload_file', { edge: prod, path: denied, content: 'no\n' });
    assert.match(text, /denied|not approved/, text);
    assert.ok(!existsSync(denied), 'a denied upload landed');
    assert.equal(asked.length, 2);
  });

  await client.close();
  log('all checks passed');
}

const timer = setTimeout(() => fail('did not finish within 90 s'), 90_000);
timer.unref();
main().catch((err) => fail(err?.stack ?? String(err)));
