#!/usr/bin/env node
// Drives our live server with the REAL @librechat/agents tools for what LibreChat >= v0.8.6
// uses beyond execute_code: programmatic tool calling (run_tools_with_code and
// run_tools_with_bash, invoked with a ToolCall carrying toolMap/toolDefs as ToolNode builds it),
// execute_code/bash_tool with an execution profile and stateful sessions, and LibreChat's own
// upload (axios + form-data, as api/server/services/Files/Code/crud.js sends it).
//
// Input (argv[2] or stdin): {"base_url", "api_key", "cases": [case, ...]}; a case is one of
//   {"kind": "ptc" | "bash_ptc", "code", "timeout"?, "abort_after_ms"?, "factory"?, "toolcall"?}
//   {"kind": "exec" | "bash", "args", "factory"?, "toolcall"?}
//   {"kind": "upload", "bytes", "name"}
// factory: extra factory params (executionProfile, runtimeSessionHint, statefulSessions,
// user_id, maxRoundTrips...); toolcall: extra ToolCall fields (session_id, _injected_files,
// _runtime_session_hint). The registered tools: get-weather (a dict), explode (throws), slow
// (waits `ms`), echo-file (returns its input).
// Output: {"results": [{"ok", "content", "artifact", "error", "status"?, "body"?, "tool_log"}]}.

import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';

for (const name of ['PROXY', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'proxy', 'http_proxy', 'https_proxy', 'all_proxy']) {
  delete process.env[name];
}
process.env.NO_PROXY = '127.0.0.1,localhost';
process.env.no_proxy = '127.0.0.1,localhost';
for (const level of ['log', 'info', 'debug']) {
  console[level] = (...parts) => console.error(...parts);
}

const raw = process.argv.length > 2 ? process.argv[2] : readFileSync(0, 'utf8');
const scenario = JSON.parse(raw);
process.env.LIBRECHAT_CODE_BASEURL = scenario.base_url;

const {
  createProgrammaticToolCallingTool, createBashProgrammaticToolCallingTool, createCodeExecutionTool,
  createBashExecutionTool,
} = await import('@librechat/agents');
const { tool } = await import('@librechat/agents/langchain/tools');
const { z } = await import('zod');

let toolLog = [];
const weather = tool(async ({ city, units }) => {
  toolLog.push(['get-weather', city]);
  return { city, forecast: `sunny in ${city}`, units: units ?? 'C' };
}, { name: 'get-weather', description: 'Weather of a city', schema: z.object({ city: z.string(), units: z.string().optional() }) });
const explode = tool(async () => {
  toolLog.push(['explode']);
  throw new Error('kaboom from tool');
}, { name: 'explode', description: 'Always fails', schema: z.object({}) });
const slow = tool(async ({ ms }) => {
  toolLog.push(['slow', ms]);
  await new Promise((resolve) => setTimeout(resolve, ms));
  return 'slept';
}, { name: 'slow', description: 'Waits', schema: z.object({ ms: z.number() }) });
const toolMap = new Map([['get-weather', weather], ['explode', explode], ['slow', slow]]);
const toolDefs = [
  { name: 'get-weather', description: 'Weather of a city', allowed_callers: ['code_execution'],
    parameters: { type: 'object', properties: { city: { type: 'string' }, units: { type: 'string' } }, required: ['city'] } },
  { name: 'explode', description: 'Always fails', allowed_callers: ['code_execution'], parameters: { type: 'object', properties: {} } },
  { name: 'slow', description: 'Waits', allowed_callers: ['code_execution'],
    parameters: { type: 'object', properties: { ms: { type: 'number' } }, required: ['ms'] } },
];
const auth = scenario.api_key ? { authHeaders: { 'X-API-Key': scenario.api_key } } : {};

async function runCase(item, index) {
  toolLog = [];
  const factory = { baseUrl: scenario.base_url, ...auth, ...(item.factory ?? {}) };
  const id = `call_${index + 1}`;
  if (item.kind === 'upload') {
    return upload(item);
  }
  let created;
  let call;
  if (item.kind === 'ptc' || item.kind === 'bash_ptc') {
    created = item.kind === 'ptc' ? createProgrammaticToolCallingTool(factory) : createBashProgrammaticToolCallingTool(factory);
    call = { id, name: created.name, type: 'tool_call', args: { code: item.code, ...(item.timeout ? { timeout: item.timeout } : {}) },
      toolMap, toolDefs, programmaticToolName: created.name, ...(item.toolcall ?? {}) };
  } else {
    created = item.kind === 'exec' ? createCodeExecutionTool(factory) : createBashExecutionTool(factory);
    call = { id, name: created.name, type: 'tool_call', args: item.args, ...(item.toolcall ?? {}) };
  }
  const controller = new AbortController();
  if (item.abort_after_ms) {
    setTimeout(() => controller.abort(), item.abort_after_ms);
  }
  try {
    const message = await created.invoke(call, item.abort_after_ms ? { signal: controller.signal } : undefined);
    return { ok: (message.status ?? 'success') !== 'error', content: message.content, artifact: message.artifact ?? null,
      tool_log: toolLog };
  } catch (error) {
    return { ok: false, error: String(error?.message ?? error), tool_log: toolLog };
  }
}

async function upload(item) {
  // As LibreChat's crud.js does: a form-data stream through axios, maxBodyLength 150 MiB.
  const { default: axios } = await import('axios');
  const { default: FormData } = await import('form-data');
  const form = new FormData();
  let left = item.bytes;
  const chunk = Buffer.alloc(1 << 20, 97);
  const stream = new Readable({
    read() {
      if (left <= 0) {
        this.push(null);
        return;
      }
      const size = Math.min(left, chunk.length);
      left -= size;
      this.push(size === chunk.length ? chunk : chunk.subarray(0, size));
    },
  });
  form.append('file', stream, { filename: item.name, knownLength: item.bytes });
  try {
    const response = await axios.post(`${scenario.base_url}/upload`, form, {
      headers: { ...form.getHeaders(), 'User-Id': 'e2e-user', 'User-Agent': 'LibreChat/1.0', ...(auth.authHeaders ?? {}) },
      maxContentLength: Infinity, maxBodyLength: 160 * 1024 * 1024, timeout: 120000, validateStatus: () => true,
    });
    return { ok: response.status < 300, status: response.status, body: response.data };
  } catch (error) {
    return { ok: false, error: `${error.code ?? ''} ${error.message}` };
  }
}

const results = [];
for (const [index, item] of scenario.cases.entries()) {
  results.push(await runCase(item, index));
}
process.stdout.write(JSON.stringify({ results }) + '\n');
process.exit(0); // node-fetch may keep an aborted socket alive
