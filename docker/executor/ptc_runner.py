"""Programmatic tool calling, inside the sandbox: runs a program that calls the client's tools.

    ptc_runner.py python | bash        the sandbox's command (/exec/programmatic)
    ptc_runner.py call NAME JSON       a bash tool function's call (through the broker below)

The server writes the program (/mnt/code/main.py or script.sh) and the tools it may call
(/mnt/code/.ptc_tools.json: name, description, JSON-schema parameters) and talks to this runner
through FIFOs in /mnt/code, which any worker of the server can open:

    .stdout .stderr .status   the program's output and, at the end, its exit status
    .calls                    this runner -> server: {"calls": [{"id", "name", "input"}]}, one line
    .results                  server -> this runner: {"results": [{"call_id", "result", "is_error",
                              "error_message"}]}, one line per batch of calls

Every FIFO is opened read-write here, so nothing ever sees an end of file or a broken pipe while
the server is between two HTTP requests (the client runs the tools meanwhile): the program
simply waits for its results.

Python: each tool is an async function named by python_name(), taking the schema's properties as
keyword arguments; the program may use top-level `await` and `asyncio.gather`. The calls that
one step of the program makes (every task blocked on a tool at once) go out as one batch.
Bash: each tool is a shell function taking one JSON object; it prints the result as one compact
JSON value, or writes the error to stderr and fails. Calls from background jobs that arrive
together go out as one batch.
"""

from __future__ import annotations

import json
import keyword
import os
import re
import shlex
import socket
import sys
import threading

CODE = "/mnt/code"
TOOLS = f"{CODE}/.ptc_tools.json"
FIFO = {name: f"{CODE}/.{name}" for name in ("stdout", "stderr", "status", "calls", "results")}
BROKER = "/tmp/.ptc-broker.sock"
BATCH_WINDOW_S = 0.05  # bash: calls that arrive this close together share a round trip

PY_KEYWORDS = frozenset(keyword.kwlist)  # hard keywords only (not match, case, type, _)
BASH_RESERVED = frozenset(
    "if then else elif fi case esac for select while until do done in function time coproc return exit break "
    "continue shift export readonly local declare typeset unset alias unalias source echo printf read cd pwd kill "
    "trap wait eval exec jobs bg fg set let test true false".split()
)


# -- names (the server imports these too: one rule on both sides) ------------------------------
def python_name(name: str) -> str:
    """The client's (and the official service's) rule: hyphens and whitespace to `_`, other
    characters dropped, a leading digit prefixed with `_`, a keyword suffixed `_tool`."""
    ident = re.sub(r"[-\s\ufeff]", "_", name)
    ident = re.sub(r"[^a-zA-Z0-9_]", "", ident)
    if re.match(r"[0-9]", ident):
        ident = "_" + ident
    if ident in PY_KEYWORDS:
        ident += "_tool"
    return ident


def bash_name(name: str) -> str:
    """As above with dots to `_` too, and a larger reserved set: a tool must never shadow a
    builtin the program relies on (echo, cd, true...) nor the runner's own `_ptc_` helpers."""
    ident = re.sub(r"[-\s.\ufeff]", "_", name)
    ident = re.sub(r"[^a-zA-Z0-9_]", "", ident)
    if re.match(r"[0-9]", ident):
        ident = "_" + ident
    if ident in BASH_RESERVED or ident.lower().startswith("_ptc_"):
        ident += "_tool"
    return ident or "tool"


# -- the channel to the server ---------------------------------------------------------------
class Channel:
    """Sends a batch of calls, waits for their results (one at a time: callers hold the lock)."""

    def __init__(self):
        self.calls = os.open(FIFO["calls"], os.O_RDWR)
        self.results = os.open(FIFO["results"], os.O_RDWR)
        self.counter = 0
        self.lock = threading.Lock()
        self._pending = b""

    def new_id(self) -> str:
        self.counter += 1
        return f"call_{self.counter:03d}"

    def round_trip(self, calls: list[dict]) -> dict[str, dict]:
        with self.lock:
            line = json.dumps({"calls": calls}, separators=(",", ":")).encode() + b"\n"
            view = memoryview(line)
            while view:
                view = view[os.write(self.calls, view):]
            while b"\n" not in self._pending:
                chunk = os.read(self.results, 1 << 16)
                if not chunk:
                    raise RuntimeError("the server closed the tool channel")
                self._pending += chunk
            answer, _, self._pending = self._pending.partition(b"\n")
        return {item.get("call_id"): item for item in json.loads(answer).get("results", [])}


def redirect_output() -> None:
    """stdout and stderr go to FIFOs the server reads (opened read-write: see the module doc)."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        pipe = os.open(FIFO[name], os.O_RDWR)
        os.dup2(pipe, fd)
        os.close(pipe)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)


def report(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    fd = os.open(FIFO["status"], os.O_RDWR)
    os.write(fd, f"{status & 0xFF}\n".encode())
    os._exit(status & 0xFF)


def load_tools(mode: str) -> list[dict]:
    with open(TOOLS, encoding="utf-8") as handle:
        tools = json.load(handle)
    name_of = python_name if mode == "python" else bash_name
    for tool in tools:
        tool["ident"] = name_of(tool["name"])
    return tools


# -- Python ----------------------------------------------------------------------------------
class ToolExecutionError(Exception):
    """A tool failed (the client says why); the program may catch it."""


PY_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "array": "list", "object": "dict"}


def python_stub(tool: dict) -> str:
    """Source of `async def <ident>(...)` for one tool: required properties first, optional
    ones default to None (and are left out of the call when None)."""
    params = (tool.get("parameters") or {}).get("properties") or {}
    required = [p for p in (tool.get("parameters") or {}).get("required") or [] if p in params]
    names = [*required, *(p for p in params if p not in required)]
    plain = all(n.isidentifier() and n not in PY_KEYWORDS for n in names)
    if plain:
        signature = ", ".join([*required, *(f"{p}=None" for p in names if p not in required)])
        collect = "{" + ", ".join(f"{p!r}: {p}" for p in names) + "}"
    else:  # property names that are no identifiers: keyword arguments as they come
        signature, collect = "**kwargs", "kwargs"
    doc = json.dumps(str(tool.get("description") or ""))
    return (
        f"async def {tool['ident']}({signature}):\n"
        f"    {doc}\n"
        f"    return await __ptc_call__({tool['name']!r}, {{k: v for k, v in {collect}.items() if v is not None}})\n"
    )


def run_python(tools: list[dict]) -> None:
    import asyncio
    import traceback
    import types

    channel = Channel()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pending: list[tuple[dict, asyncio.Future]] = []
    flush_scheduled = [False]

    def flush() -> None:
        # Runs once nothing else can run: every task of the program is blocked (on a tool,
        # a timer or I/O). Then the calls made so far go out together.
        if loop._ready:  # others can still run (and may call tools too): after them
            loop.call_soon(flush)
            return
        flush_scheduled[0] = False
        batch, pending[:] = pending[:], []
        try:
            results = channel.round_trip([call for call, _ in batch])
        except Exception as error:  # the channel broke: every waiting call fails
            for _, future in batch:
                if not future.done():
                    future.set_exception(ToolExecutionError(f"tool channel failed: {error}"))
            return
        for call, future in batch:
            if future.done():
                continue
            answer = results.get(call["id"])
            if answer is None:
                future.set_exception(ToolExecutionError(f"no result for {call['name']}"))
            elif answer.get("is_error"):
                future.set_exception(ToolExecutionError(answer.get("error_message") or "tool execution failed"))
            else:
                future.set_result(answer.get("result"))

    async def call_tool(name: str, arguments: dict):
        future = loop.create_future()
        pending.append(({"id": channel.new_id(), "name": name, "input": arguments}, future))
        if not flush_scheduled[0]:
            flush_scheduled[0] = True
            loop.call_soon(flush)
        return await future

    script = f"{CODE}/main.py"
    sys.argv = [script]
    sys.path[0] = CODE
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    namespace = main.__dict__
    namespace.update({"__ptc_call__": call_tool, "ToolExecutionError": ToolExecutionError, "asyncio": asyncio,
                      "json": json})
    for tool in tools:
        exec(compile(python_stub(tool), f"<tool {tool['name']}>", "exec"), namespace)
    try:
        with open(script, "rb") as handle:
            code = compile(handle.read(), script, "exec", flags=0x2000)  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    except SyntaxError as error:
        traceback.print_exception(type(error), error, None)
        report(1)
    try:
        result = eval(code, namespace)  # a coroutine when the program awaits at top level
        if asyncio.iscoroutine(result):
            loop.run_until_complete(result)
        status = 0
    except SystemExit as done:
        status = 0 if done.code is None else done.code if isinstance(done.code, int) else (print(done.code, file=sys.stderr) or 1)
    except BaseException as error:
        error = error.with_traceback(error.__traceback__.tb_next)  # without this runner's frame
        sys.excepthook(type(error), error, error.__traceback__)
        status = 1
    report(status)


# -- bash --------------------------------------------------------------------------------------
def bash_prelude(tools: list[dict]) -> str:
    lines = ["# the tools, as shell functions (made by ptc_runner.py)"]
    for tool in tools:
        ident = tool["ident"]
        # -I -S: no site packages to load for a call (it needs only the standard library)
        runner = shlex.quote(os.path.abspath(__file__))
        lines.append(f'{ident}() {{ /usr/bin/python3 -I -S {runner} call {shlex.quote(tool["name"])} "$@"; }}')
        lines.append(f"export -f {ident}")
    return "\n".join(lines) + "\n"


def run_bash(tools: list[dict]) -> None:
    import subprocess

    channel = Channel()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(BROKER)
    server.listen(256)
    threading.Thread(target=broker, args=(server, channel), daemon=True).start()
    prelude = "/tmp/.ptc-tools.sh"
    with open(prelude, "w", encoding="utf-8") as handle:
        handle.write(bash_prelude(tools))
    env = {**os.environ, "BASH_ENV": prelude}
    status = subprocess.call(["bash", f"{CODE}/script.sh"], env=env, stdin=subprocess.DEVNULL)
    report(status if status >= 0 else 128 - status)


def broker(server: socket.socket, channel: Channel) -> None:
    """Collects the calls of bash tool functions; those that arrive within BATCH_WINDOW_S of
    each other make one round trip to the server."""
    import select

    while True:
        waiting: list[tuple[socket.socket, dict]] = []
        ready, _, _ = select.select([server], [], [])
        while ready:
            connection, _ = server.accept()
            try:
                request = json.loads(receive(connection))
                call = {"id": channel.new_id(), "name": request["name"], "input": request["input"]}
                waiting.append((connection, call))
            except (ValueError, KeyError, OSError) as error:
                send(connection, {"is_error": True, "error_message": f"bad tool call: {error}"})
            ready, _, _ = select.select([server], [], [], BATCH_WINDOW_S)
        if not waiting:
            continue
        try:
            results = channel.round_trip([call for _, call in waiting])
        except Exception as error:
            results = {call["id"]: {"is_error": True, "error_message": f"tool channel failed: {error}"} for _, call in waiting}
        for connection, call in waiting:
            send(connection, results.get(call["id"]) or {"is_error": True, "error_message": "no result"})


def receive(connection: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data


def send(connection: socket.socket, message: dict) -> None:
    try:
        connection.sendall(json.dumps(message).encode() + b"\n")
    finally:
        connection.close()


def call(name: str, argument: str) -> None:
    """One bash tool call: prints the result as compact JSON (no newline), or fails."""
    try:
        value = json.loads(argument)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        print(f"tool input for {name} must be a JSON object, got: {argument[:200]}", file=sys.stderr)
        sys.exit(1)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(BROKER)
    connection.sendall(json.dumps({"name": name, "input": value}).encode() + b"\n")
    answer = json.loads(receive(connection) or b'{"is_error": true, "error_message": "no answer"}')
    if answer.get("is_error"):
        print(answer.get("error_message") or "tool execution failed", file=sys.stderr)
        sys.exit(1)
    sys.stdout.write(json.dumps(answer.get("result"), separators=(",", ":"), ensure_ascii=False))


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "call":
        call(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "{}")
        return
    redirect_output()
    tools = load_tools(mode)
    if mode == "python":
        run_python(tools)
    elif mode == "bash":
        run_bash(tools)
    print(f"unknown mode {mode!r}", file=sys.stderr)
    report(2)


if __name__ == "__main__":
    main()
