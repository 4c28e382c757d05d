#!/usr/bin/env node
// Drives our live Code API server with the REAL @librechat/agents code tools, the way
// LibreChat's ToolNode invokes them (spec §11.2): a ToolCall object carrying `session_id`
// and `_injected_files` next to the model's `args`, so the tool returns a ToolMessage with
// `content` (the string the model sees, spec §8) and `artifact` (what LibreChat processes).
//
// Input: one JSON scenario, as argv[2] or on stdin:
//   {
//     "base_url": "http://127.0.0.1:PORT/v1",   // -> LIBRECHAT_CODE_BASEURL and baseUrl
//     "api_key": "...",                           // -> authHeaders {'X-API-Key': key}
//     "user_id": "user-1",                        // optional factory param (LibreChat passes it)
//     "mode": "direct" | "toolnode",              // default "direct"
//     "session": {"session_id", "files": [...]},  // toolnode mode: the primed code session
//     "calls": [
//       { "tool": "execute_code" | "bash_tool", "id": "call_1",
//         "args": {"lang": "py", "code": "..."}  |  {"command": "..."},
//         "session_id": "...",                    // direct mode: ToolCall.session_id
//         "injected_files": [CodeEnvFile, ...] }  // direct mode: ToolCall._injected_files
//     ]
//   }
//
// mode "direct": each call is `tool.invoke({id, name, type:'tool_call', args, session_id,
//   _injected_files})`, exactly the object ToolNode builds.
// mode "toolnode": the calls go, one AIMessage each, through a real `ToolNode` whose code
//   session map is primed with `session` (as LibreChat primes it with the user's files), so
//   `session_id` / `_injected_files` of later calls come from the package's own
//   toInjectedFileRef/updateCodeSession. The ToolCall each tool received is reported.
//
// Output (stdout, one JSON document):
//   { "node", "agents_version", "mode",
//     "results": [ { "id", "tool", "ok", "status", "content", "artifact", "tool_call_id",
//                    "received": {"session_id", "_injected_files"}, "error"? } ],
//     "session": {...} }   // toolnode mode: the code session after the last call
//
// Proxy variables are removed and NO_PROXY covers loopback before the package is loaded;
// library console output goes to stderr so stdout stays pure JSON.

import { readFileSync } from 'node:fs';

for (const name of [
  'PROXY', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'proxy', 'http_proxy', 'https_proxy', 'all_proxy',
]) {
  delete process.env[name];
}
process.env.NO_PROXY = '127.0.0.1,localhost';
process.env.no_proxy = '127.0.0.1,localhost';

// The package's logCodeApiDiagnostic uses console.debug, which Node writes to stdout.
for (const level of ['log', 'info', 'debug']) {
  console[level] = (...parts) => console.error(...parts);
}

const raw = process.argv.length > 2 ? process.argv[2] : readFileSync(0, 'utf8');
const scenario = JSON.parse(raw);
if (typeof scenario.base_url !== 'string' || !Array.isArray(scenario.calls)) {
  throw new Error('scenario needs base_url (string) and calls (array)');
}
const mode = scenario.mode ?? 'direct';
// The tools read LIBRECHAT_CODE_BASEURL when they are constructed; set it before that.
process.env.LIBRECHAT_CODE_BASEURL = scenario.base_url;

// ESM entry on purpose: on Node 20 the CommonJS entry fails every call (spec §11.2).
const { createCodeExecutionTool, createBashExecutionTool, ToolNode, Constants } = await import(
  '@librechat/agents'
);
const agentsVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@librechat/agents/package.json', import.meta.url), 'utf8')
).version;

const factoryParams = {
  baseUrl: scenario.base_url,
  ...(scenario.api_key ? { authHeaders: { 'X-API-Key': scenario.api_key } } : {}),
  ...(scenario.user_id ? { user_id: scenario.user_id } : {}),
};
const tools = {
  [Constants.EXECUTE_CODE]: createCodeExecutionTool({ ...factoryParams }),
  [Constants.BASH_TOOL]: createBashExecutionTool({ ...factoryParams }),
};

// Record the ToolCall each tool is handed (the ToolNode-injected fields), then run it.
const received = new Map();
for (const tool of Object.values(tools)) {
  const invoke = tool.invoke.bind(tool);
  tool.invoke = async (input, config) => {
    if (input != null && typeof input === 'object' && input.id != null) {
      received.set(input.id, {
        session_id: input.session_id ?? null,
        _injected_files: input._injected_files ?? null,
      });
    }
    return invoke(input, config);
  };
}

function describe(message, id, toolName) {
  const status = message.status ?? 'success';
  return {
    id,
    tool: toolName,
    ok: status !== 'error',
    status,
    content: message.content,
    artifact: message.artifact ?? null,
    tool_call_id: message.tool_call_id ?? null,
    received: received.get(id) ?? null,
  };
}

const results = [];
let session = null;

if (mode === 'direct') {
  for (const [index, call] of scenario.calls.entries()) {
    const toolName = call.tool ?? Constants.EXECUTE_CODE;
    const tool = tools[toolName];
    const id = call.id ?? `call_${index + 1}`;
    if (tool == null) {
      results.push({ id, tool: toolName, ok: false, error: `unknown tool ${toolName}` });
      continue;
    }
    // Exactly the shape ToolNode hands to tool.invoke (spec §11.2).
    const toolCall = {
      id,
      name: tool.name,
      type: 'tool_call',
      args: call.args ?? {},
      ...(call.session_id ? { session_id: call.session_id } : {}),
      ...(Array.isArray(call.injected_files) && call.injected_files.length > 0
        ? { _injected_files: call.injected_files }
        : {}),
    };
    try {
      results.push(describe(await tool.invoke(toolCall), id, toolName));
    } catch (error) {
      results.push({
        id, tool: toolName, ok: false, status: 'error',
        error: String(error?.message ?? error), received: received.get(id) ?? null,
      });
    }
  }
} else if (mode === 'toolnode') {
  const { AIMessage } = await import('@librechat/agents/langchain/messages');
  const sessions = new Map();
  if (scenario.session != null) {
    sessions.set(Constants.EXECUTE_CODE, { ...scenario.session, lastUpdated: Date.now() });
  }
  const node = new ToolNode({ tools: Object.values(tools), sessions, eventDrivenMode: false });
  for (const [index, call] of scenario.calls.entries()) {
    const toolName = call.tool ?? Constants.EXECUTE_CODE;
    const id = call.id ?? `call_${index + 1}`;
    const ai = new AIMessage({
      content: '',
      tool_calls: [{ id, name: toolName, args: call.args ?? {}, type: 'tool_call' }],
    });
    try {
      const out = await node.invoke({ messages: [ai] }, { configurable: { thread_id: 'e2e-thread' } });
      const messages = Array.isArray(out) ? out : out.messages;
      const message = messages.find((m) => m.tool_call_id === id) ?? messages[0];
      results.push(describe(message, id, toolName));
    } catch (error) {
      results.push({
        id, tool: toolName, ok: false, status: 'error',
        error: String(error?.message ?? error), received: received.get(id) ?? null,
      });
    }
  }
  session = sessions.get(Constants.EXECUTE_CODE) ?? null;
} else {
  throw new Error(`unknown mode ${mode}`);
}

process.stdout.write(
  JSON.stringify({ node: process.version, agents_version: agentsVersion, mode, results, session }) + '\n'
);
