// lib.mjs: what client.mjs and policy.mjs share: one-line step reporting and the tool call
// that checks the MCP rules every result follows.

import assert from 'node:assert/strict';

export const CALL_TIMEOUT_MS = 30_000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// reporter prints "<prefix>: ok   step" lines and fails the process on the first failed step.
export function reporter(prefix) {
  const log = (msg) => process.stdout.write(`${prefix}: ${msg}\n`);
  const fail = (msg) => {
    process.stderr.write(`${prefix}: FAIL: ${msg}\n`);
    process.exit(1);
  };
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
  return { log, fail, check };
}

// textOf joins a result's text contents.
export const textOf = (res) => (res.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

// call invokes a tool; the SDK throws if structuredContent does not match the output schema.
// It returns the structured content, or with expectError the whole (error) result.
export async function call(client, name, args, { expectError = false } = {}) {
  const res = await client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT_MS });
  const text = textOf(res);
  if (Boolean(res.isError) !== expectError) {
    throw new Error(`${name} isError=${Boolean(res.isError)}, want ${expectError}: ${text}`);
  }
  if (expectError) {
    assert.ok(text.trim().length > 0, `${name}: an error result must carry a message`);
    return res;
  }
  assert.equal(typeof res.structuredContent, 'object', `${name}: no structuredContent`);
  assert.ok(res.structuredContent !== null, `${name}: structuredContent is null`);
  // Every result carries a JSON text copy of the structured content (README.md, Tools).
  assert.deepEqual(JSON.parse(text), res.structuredContent, `${name}: text content is not a JSON copy of structuredContent`);
  return res.structuredContent;
}
