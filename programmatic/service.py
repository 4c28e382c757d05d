"""Programmatic tool calling: what POST /exec/programmatic and its cancel do.

A run, top to bottom (docs/ARCHITECTURE.md, "Programmatic runs"):

start    validate (code, tools and their sandbox names, files, timeout) -> a slot (held for the
         whole run) -> a work area with the inputs, the program, the tool list and five FIFOs ->
         a standing sandbox running docker/executor/ptc_runner.py -> advance
advance  read the program's output and its channel until it asks for tools (answer
         tool_call_required with a fresh single-use token), ends (completed, or error with the
         messages the client maps), runs out of time or output, or is cancelled
continue the token (single use, bound to the caller) -> the results into the sandbox -> advance
cancel   the request id of any of the run's requests (same owner) -> the sandbox is stopped now
reap     any worker, every second: runs whose client never continued, or whose worker died

Time: each step of the program (from its start or its results to its next calls or its end)
has `timeout` (the client's, at most SANDBOX_TIMEOUT_MS); the client has `timeout` to answer
each batch of calls; the whole run at most SANDBOX_PTC_MAX_RUN_S and 20 round trips. So a client
that never continues costs at most one more `timeout`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import secrets
import select
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.events import record
from executor import slots, teardown
from executor.backends import get_backend
from executor.backends.base import Limits, SandboxUnavailable, read_available, runner_status
from executor.pipeline import collect_outputs, resolve_inputs, user_id_of
from executor.workspace import Workspace, WorkspaceError
from rest_framework.exceptions import ParseError

from sandbox_project.errors import ApiError, bad_request
from sandbox_project.parsers import loads
from storage import store
from storage.ids import new_id
from storage.models import StoredFile

from .models import ProgrammaticRequest, ProgrammaticRun

log = logging.getLogger("sandbox.programmatic")

RUNNER = "/opt/sandbox/bin/ptc_runner.py"
# The runner opens every FIFO read-write (so none ever sees an end of file between two requests):
# the sandbox's uid needs both. Only this run's sandbox has this folder.
FIFOS = {"stdout": 0o666, "stderr": 0o666, "status": 0o666, "calls": 0o666, "results": 0o666}
MAX_TOOLS = 100
MAX_TOOLS_JSON = 1 << 20  # the tool list is written into the run's work area, beside the code
MAX_ROUND_TRIPS = 20  # as many continuations as @librechat/agents makes
MAX_CALLS_PER_STEP = 200
MAX_CALLS_LINE = 8 << 20  # one batch of calls, as the sandbox writes it
MAX_STATUS_LINE = 64  # "<exit code>\n"
TIMEOUT_DEFAULT_MS, TIMEOUT_MIN_MS, TIMEOUT_MAX_MS = 15_000, 1_000, 300_000
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
CHECK_S = 0.05  # how often a step looks at its sandbox and at a cancel
START_GRACE_S = 1.0
# How long the worker that marked a run "ending" has to end it (stop, read, store, release: a
# second or two). Past that its worker is taken to be dead, and the reaper ends the run again.
ENDING_S = 60
SLOT_PREFIX = "ptc-"

_spec = importlib.util.spec_from_file_location("ptc_runner", settings.BASE_DIR / "docker" / "executor" / "ptc_runner.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)  # the names rule lives with the stubs it makes


# -- errors the client maps (spec: @librechat/agents CodeExecutor.ts) ---------------------------
TIME_LIMIT = "Time limit exceeded"
OUT_OF_MEMORY = "Out of memory"
STDOUT_LIMIT = "stdout length exceeded"
STDERR_LIMIT = "stderr length exceeded"
CANCELLED = "Programmatic execution request cancelled"


def unregistered(name: str) -> str:
    return f"Sandbox requested an unregistered tool: {name[:200]}"


def exited(code) -> str:
    return f"Sandbox exited with code {code if code is not None else 'unknown'}"


# -- entry points --------------------------------------------------------------------------------
def handle(data, caller, request) -> dict:
    if isinstance(data, dict) and "continuation_token" in data:
        return continue_run(data, caller, request)
    return start(data, caller, request)


def owner_of(caller) -> str:
    return f"{getattr(caller, 'method', '?')}:{getattr(caller, 'user_id', None) or ''}"


def _request_id(request) -> str | None:
    value = request.headers.get("X-LibreChat-Code-Request-ID") if request is not None else None
    if value is None:
        return None
    if not REQUEST_ID.match(value):
        raise bad_request("Invalid programmatic request ID")
    return value


def _tools(value, lang: str) -> tuple[list[dict], list[str]]:
    if not isinstance(value, list) or not value:
        raise bad_request("Missing required field: tools (must be a non-empty array)")
    if len(value) > MAX_TOOLS:
        raise bad_request(f"Too many tools provided ({len(value)}). Maximum is {MAX_TOOLS}.")
    name_of = runner.python_name if lang == "python" else runner.bash_name
    tools, seen = [], {}
    for tool in value:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"].strip():
            raise bad_request("each tool must be an object with a non-empty string 'name'")
        name = tool["name"]
        if len(name) > 200:
            raise bad_request("a tool name may be at most 200 characters")
        if "\0" in name:
            raise bad_request("a tool name must not contain a NUL character")
        ident = name_of(name)
        if not ident or not ident.isidentifier():
            raise bad_request(f"tool {name[:80]!r} has no usable name in the sandbox")
        if ident in seen:
            raise bad_request(f'Tools "{seen[ident][:80]}" and "{name[:80]}" both become "{ident}" in the sandbox')
        seen[ident] = name
        parameters = _parameters(tool.get("parameters"), name)
        description = tool.get("description") if isinstance(tool.get("description"), str) else ""
        tools.append({"name": name, "description": description[:4000], "parameters": parameters})
    if len(json.dumps(tools)) > MAX_TOOLS_JSON:
        raise bad_request(f"The tool definitions may hold at most {MAX_TOOLS_JSON >> 20} MiB of JSON")
    return tools, [t["name"] for t in tools]


def _parameters(value, name: str) -> dict:
    """A tool's JSON schema, as far as the stubs read it: `properties` an object, `required` a
    list of its names. Anything else would break the runner before the program starts."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"tool {name[:80]!r}: 'parameters' must be a JSON-schema object")
    properties = value.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict) or any("\0" in key or not key for key in properties):
        raise bad_request(f"tool {name[:80]!r}: 'parameters.properties' must be an object of named properties")
    required = value.get("required", [])
    if required is None:
        required = []
    if not isinstance(required, list) or not all(isinstance(item, str) for item in required):
        raise bad_request(f"tool {name[:80]!r}: 'parameters.required' must be a list of property names")
    return {**value, "properties": properties, "required": required}


def _lang(data) -> str:
    raw = data.get("language", data.get("lang"))
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("python", "py", "python3")):
        return "python"
    if isinstance(raw, str) and raw.strip().lower() in ("bash", "sh"):
        return "bash"
    raise ApiError(400, f'Unsupported language "{str(raw)[:40]}"; supported values are "python" and "bash"')


def _timeout_ms(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        ms = TIMEOUT_DEFAULT_MS
    else:
        ms = max(TIMEOUT_MIN_MS, min(TIMEOUT_MAX_MS, int(value)))
    return min(ms, settings.SANDBOX_TIMEOUT_MS)  # a client may ask for less time, never more


def start(data, caller, request) -> dict:
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object")
    code = data.get("code")
    if not isinstance(code, str) or not code.strip():
        raise bad_request("Missing required field: code")
    if "\0" in code:
        raise bad_request("'code' must not contain a NUL character")
    lang = _lang(data)
    tools, names = _tools(data.get("tools"), lang)
    timeout_ms = _timeout_ms(data.get("timeout"))
    inputs = resolve_inputs(data.get("files"), caller)
    request_id = _request_id(request)
    user_id = user_id_of(caller, data)
    owner = owner_of(caller)
    max_run_s = settings.SANDBOX_PTC_MAX_RUN_S
    slot_token = _slot_token(user_id)
    if slots.held_with_prefix(SLOT_PREFIX) >= ptc_slots():  # refuse early when it is plain
        raise slots.rate_limited("every slot for programmatic runs is taken")
    slot, _ = slots.acquire(slot_token, max_run_s + settings.SANDBOX_LEASE_MARGIN_MS / 1000)
    session = None
    run = None
    try:
        _admit(user_id, slot, slot_token)
        session = store.new_session("exec", user_id)
        backend = get_backend()
        area = store.session_dir(session) / "workspace" / f"ptc_{session.id}"
        limits = Limits.from_settings(timeout_ms)
        # The tool list lives beside the code, not in the program's disk quota.
        ws = Workspace(area, limits.disk_mb, len(code.encode()) + MAX_TOOLS_JSON + (1 << 20), backend.owner_uid(slot)).open()
        try:
            ws.write_code("main.py" if lang == "python" else "script.sh", code)
            (ws.code / ".ptc_tools.json").write_text(json.dumps(tools))
            (ws.code / ".ptc_tools.json").chmod(0o644)
            for name, mode in FIFOS.items():
                os.mkfifo(ws.code / f".{name}")
                os.chmod(ws.code / f".{name}", mode)
            for name, stored in inputs.items():
                ws.place_input(name, lambda target, stored=stored: store.copy_into(stored, target))
            now = timezone.now()
            run = ProgrammaticRun.objects.create(
                id=new_id(), session=session, owner=owner, host=slots.host(), user_id=user_id or "", lang=lang,
                area=str(area.relative_to(store.root())), owner_uid=ws.owner, slot=slot, slot_token=slot_token,
                tool_names=names, inputs={name: f.id for name, f in inputs.items()}, timeout_ms=timeout_ms,
                deadline=now + timedelta(seconds=max_run_s), step_deadline=now + timedelta(milliseconds=timeout_ms),
            )
            if request_id:
                _remember(request_id, run, owner)
            fds = open_channel(ws.code)
            try:
                run.handle = backend.standing_start(run.id, ["python3", RUNNER, lang], ws, limits, max_run_s)
            except BaseException:
                for fd in fds.values():
                    os.close(fd)
                raise
            ProgrammaticRun.objects.filter(pk=run.pk).update(handle=run.handle)
        except BaseException:
            ws.close()
            raise
    except BaseException as error:
        if run is not None:
            run.delete()
        if session is not None:
            store.delete_session(session)
        slots.release(slot, slot_token)
        if isinstance(error, (WorkspaceError, SandboxUnavailable)):
            raise ApiError(503, "sandbox_unavailable", str(error), headers={"Retry-After": "5"}) from None
        raise
    return advance(run, request, fds)


def _slot_token(user_id: str | None) -> str:
    """A programmatic run's slot holder: the prefix says it is one, and whose (a hash of the
    user; '-' for none), so the caps below count slot rows, the thing they protect."""
    who = hashlib.sha256(user_id.encode()).hexdigest()[:12] if user_id else "-"
    return f"{SLOT_PREFIX}{who}-{secrets.token_hex(12)}"


def _admit(user_id: str | None, slot: int, slot_token: str) -> None:
    """A slow tool keeps its run's slot busy: so a user (when the request names one: a JWT's
    sub, or user_id) may have only SANDBOX_PTC_RUNS_PER_USER runs at once, and programmatic
    runs together only SANDBOX_PTC_MAX_SLOTS slots; the others stay for /exec. Over either:
    429, as for a full queue. Counted after this run's slot is taken (reserve, then verify),
    so concurrent starts cannot all pass a check made before any of them held anything; and
    the checks of one server take turns (a lock on its slot rows; SQLite's write lock), a
    refused start giving its slot back inside its turn, so the last of a burst to check sees
    only the runs admitted and is itself admitted: a burst never refuses everyone."""
    with transaction.atomic():
        # (in slot order, as every multi-row lock of these rows takes them: no deadlock)
        list(slots.mine().order_by("number").select_for_update().values_list("pk", flat=True))
        refusal = None
        if user_id:
            mine = slots.held_with_prefix(slot_token.rsplit("-", 1)[0] + "-")
            if mine > settings.SANDBOX_PTC_RUNS_PER_USER:
                refusal = f"{mine - 1} programmatic runs of this user are running"
        if refusal is None and slots.held_with_prefix(SLOT_PREFIX) > ptc_slots():
            refusal = "every slot for programmatic runs is taken"
        if refusal is not None:
            slots.release(slot, slot_token)  # committed with the turn: raising inside would roll it back
    if refusal is not None:
        raise slots.rate_limited(refusal)


def ptc_slots() -> int:
    configured = settings.SANDBOX_PTC_MAX_SLOTS
    return configured if configured > 0 else max(1, settings.SANDBOX_MAX_CONCURRENT_EXECUTIONS // 2)


def _here(run: ProgrammaticRun) -> None:
    """A run's sandbox stands on the server that started it: another replica cannot reach it
    (route /exec/programmatic by client to one replica: docs/SCALING.md)."""
    if run.host and run.host != slots.host():
        raise ApiError(421, "misdirected_request",
                       "This programmatic run is served by another replica of the Code API; "
                       "route /exec/programmatic requests of one client to one replica")


def _remember(request_id: str, run: ProgrammaticRun, owner: str) -> None:
    from django.db import IntegrityError

    try:
        ProgrammaticRequest.objects.create(request_id=request_id, run=run, owner=owner)
    except IntegrityError:
        raise ApiError(409, "conflict", "Programmatic request ID is already in use") from None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def continue_run(data, caller, request) -> dict:
    token = data.get("continuation_token")
    results = data.get("tool_results")
    if not isinstance(token, str) or not token or len(token) > 200:
        raise bad_request("Invalid continuation token")
    if not isinstance(results, list) or not results:
        raise bad_request("tool_results must be a non-empty array; resubmit with at least one result per pending tool call")
    run = ProgrammaticRun.objects.filter(token_hash=_hash(token)).first()
    if run is None:  # forged, replayed (a token is good for one continuation) or expired
        raise ApiError(404, "not_found", "Execution not found or expired")
    if run.owner != owner_of(caller):
        raise ApiError(403, "Forbidden", "This programmatic run belongs to another caller")
    _here(run)
    by_id: dict[str, dict] = {}
    for item in results:
        if not isinstance(item, dict) or not isinstance(item.get("call_id"), str):
            raise bad_request("each tool result must be an object with a string 'call_id'")
        if item["call_id"] in by_id:
            raise bad_request(f"Duplicate call_id in tool_results: {item['call_id'][:64]}")
        if item["call_id"] not in run.pending:
            raise bad_request(f"tool_results[{item['call_id'][:64]}] was not issued by the sandbox for this execution")
        by_id[item["call_id"]] = item
    request_id = _request_id(request)
    if request_id:  # first: a refused request id (409) must leave the token usable
        _remember(request_id, run, run.owner)
    # Single use: only the request that turns the token's row from waiting to running goes on.
    now = timezone.now()
    taken = ProgrammaticRun.objects.filter(pk=run.pk, state="waiting", token_hash=_hash(token)).update(
        state="running", token_hash="", step_deadline=now + timedelta(milliseconds=run.timeout_ms))
    if not taken:
        if request_id:
            ProgrammaticRequest.objects.filter(request_id=request_id, run=run).delete()
        raise ApiError(404, "not_found", "Execution not found or expired")
    run.refresh_from_db()
    answers = []
    for call_id in run.pending:
        item = by_id.get(call_id, {"is_error": True, "error_message": "no result was sent for this call"})
        answers.append({"call_id": call_id, "result": item.get("result"), "is_error": bool(item.get("is_error")),
                        "error_message": item.get("error_message") if isinstance(item.get("error_message"), str) else None})
    line = json.dumps({"results": answers}, separators=(",", ":")).encode() + b"\n"
    if len(line) > settings.SANDBOX_MAX_JSON_MB << 20:
        return finish(run, request, error="tool results are too large")
    fds = open_channel(work_area(run) / "code")
    try:
        _write_results(run, line)
    except OSError as error:
        for fd in fds.values():
            os.close(fd)
        log.warning("cannot hand tool results to the sandbox", extra={"run": run.id, "error": str(error)})
        return finish(run, request, outcome="gone")
    return advance(run, request, fds)


def _write_results(run: ProgrammaticRun, line: bytes) -> None:
    fd = os.open(work_area(run) / "code" / ".results", os.O_WRONLY | os.O_NONBLOCK)
    try:
        view = memoryview(line)
        give_up = time.monotonic() + run.timeout_ms / 1000
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                if time.monotonic() > give_up:
                    raise OSError("the sandbox does not read its tool results") from None
                select.select([], [fd], [], 0.1)
    finally:
        os.close(fd)


def cancel(data, caller) -> tuple[dict, int]:
    request_id = data.get("request_id") if isinstance(data, dict) else None
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
        raise bad_request("Invalid or missing request_id")
    seen = ProgrammaticRequest.objects.select_related("run").filter(request_id=request_id).first()
    if seen is None:
        return {"error": "not_found", "message": "No programmatic run has this request id"}, 404
    run = seen.run
    if run.owner != owner_of(caller):
        raise ApiError(403, "Forbidden", "Programmatic request belongs to another principal")
    _here(run)
    if run.state == "ending":
        return {"status": "already_completed"}, 200
    ProgrammaticRun.objects.filter(pk=run.pk).update(cancelled=True)
    try:
        get_backend().standing_stop(run.handle, run.id)  # at once; the request in flight answers the error
    except Exception as error:
        log.warning("cannot stop a cancelled run", extra={"run": run.id, "error": str(error)})
    if ProgrammaticRun.objects.filter(pk=run.pk, state="waiting").update(state="ending", step_deadline=_ending_by()):
        finish(run, None, error=CANCELLED, claimed=True)  # nobody is in a request for it: end it here
    return {"status": "cancellation_requested"}, 202


# -- one step of a run -------------------------------------------------------------------------
def work_area(run: ProgrammaticRun) -> Path:
    return store.root() / run.area


def output_files(run: ProgrammaticRun) -> dict[str, Path]:
    """The program's output so far, kept beside the work area (any worker appends to it)."""
    folder = store.session_dir(run.session) / "ptc-output"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return {"stdout": folder / "stdout", "stderr": folder / "stderr"}


def open_channel(code_dir: Path) -> dict[str, int]:
    """Read ends of the sandbox's FIFOs. Opened before the sandbox can write its last words
    (before it starts, before its results are handed over), and held until they are read: a
    FIFO's contents are lost when its last open end closes, which the sandbox's own does when it
    exits."""
    return {kind: os.open(code_dir / f".{kind}", os.O_RDWR | os.O_NONBLOCK) for kind in ("stdout", "stderr", "status", "calls")}


def advance(run: ProgrammaticRun, request, fds: dict[str, int]) -> dict:
    """Reads the sandbox until it asks for tools, ends, or breaks a limit; answers for it.
    Closes `fds` (open_channel) when done."""
    backend = get_backend()
    outputs = output_files(run)
    cap = settings.SANDBOX_OUTPUT_MAX_BYTES
    sizes = {kind: path.stat().st_size if path.exists() else 0 for kind, path in outputs.items()}
    buffers = {"status": b"", "calls": b""}
    step_deadline = min(run.step_deadline, run.deadline).timestamp()
    next_check = 0.0
    # A sandbox just started may not be in its cgroup yet: "not running" counts from then on.
    seen_from = run.created_at.timestamp() + START_GRACE_S
    outcome = None
    try:
        with open(outputs["stdout"], "ab") as out, open(outputs["stderr"], "ab") as err:
            sinks = {"stdout": out, "stderr": err}

            def take(kind: str, chunk: bytes) -> str | None:
                if kind in sinks:
                    room = cap - sizes[kind]
                    sinks[kind].write(chunk[: max(room, 0)])
                    sizes[kind] += min(len(chunk), max(room, 0))
                    return (STDOUT_LIMIT if kind == "stdout" else STDERR_LIMIT) if len(chunk) > room else None
                buffers[kind] += chunk
                # The program can write into both channels: neither may grow without bound.
                if kind == "calls" and len(buffers[kind]) > MAX_CALLS_LINE:
                    return "tool calls larger than the server accepts"
                if kind == "status" and len(buffers[kind]) > MAX_STATUS_LINE:
                    return "an exit status larger than the server accepts"
                return None

            while outcome is None:
                now = time.time()
                if now >= step_deadline:
                    outcome = ("error", TIME_LIMIT)
                    break
                ready, _, _ = select.select(list(fds.values()), [], [], max(0.0, min(step_deadline - now, CHECK_S)))
                for kind, fd in fds.items():
                    if fd in ready:
                        broken = take(kind, read_available(fd, limit=(cap + 1) if kind in sinks else (1 << 20)))
                        if broken:
                            outcome = ("error", broken)
                if outcome is not None:
                    break
                if buffers["status"].endswith(b"\n"):
                    outcome = ("done", runner_status(bytes(buffers["status"])))
                elif b"\n" in buffers["calls"]:
                    outcome = ("calls", buffers["calls"].split(b"\n", 1)[0])
                elif time.monotonic() >= next_check:
                    next_check = time.monotonic() + CHECK_S
                    if ProgrammaticRun.objects.filter(pk=run.pk, cancelled=True).exists():
                        outcome = ("error", CANCELLED)
                    elif time.time() >= seen_from and not backend.standing_running(run.handle, run.id):
                        # Ended: what it wrote last may still wait in the FIFOs (its report first).
                        for kind in ("status", "calls"):
                            take(kind, read_available(fds[kind], limit=1 << 20))
                        if buffers["status"].endswith(b"\n"):
                            outcome = ("done", runner_status(bytes(buffers["status"])))
                        else:
                            outcome = ("done", None)  # without its report: a crash, an OOM kill
            for kind in sinks:  # what was written just before the end
                if take(kind, read_available(fds[kind], limit=cap + 1)) and outcome[0] != "error":
                    outcome = ("error", STDOUT_LIMIT if kind == "stdout" else STDERR_LIMIT)
    except Exception:  # whatever went wrong here, the run ends now rather than waiting for the reaper
        log.exception("reading a programmatic run failed", extra={"run": run.id})
        outcome = ("error", "the server could not read the sandbox's output")
    finally:
        for fd in fds.values():
            os.close(fd)
    if outcome[0] == "calls":
        answer = _ask_for_tools(run, outcome[1], request)
        if answer is not None:
            return answer
        return finish(run, request, error=run.ending_error)  # calls this run may not make
    if outcome[0] == "done":
        return finish(run, request, exit_code=outcome[1])
    return finish(run, request, error=outcome[1])


def _ask_for_tools(run: ProgrammaticRun, line: bytes, request) -> dict | None:
    """Answers tool_call_required, or returns None after setting run.ending_error."""
    try:  # the program writes this line: strict and depth-bounded, like a request body
        calls = loads(line).get("calls")
    except (ParseError, AttributeError):
        calls = None
    if not isinstance(calls, list) or not calls or len(calls) > MAX_CALLS_PER_STEP:
        run.ending_error = "sandbox emitted an empty pending tool call block; aborting to avoid a tight retry loop"
        return None
    ids = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(call.get("name"), str):
            run.ending_error = "sandbox emitted an empty pending tool call block; aborting to avoid a tight retry loop"
            return None
        if call["name"] not in run.tool_names:
            run.ending_error = unregistered(call["name"])
            return None
        ids.append(call["id"])
    if run.round_trips >= MAX_ROUND_TRIPS:
        run.ending_error = f"Exceeded maximum round trips ({MAX_ROUND_TRIPS})"
        return None
    token = secrets.token_urlsafe(32)
    now = timezone.now()
    ProgrammaticRun.objects.filter(pk=run.pk).update(
        state="waiting", token_hash=_hash(token), pending=ids, round_trips=run.round_trips + 1,
        tool_calls=run.tool_calls + len(ids), step_deadline=now + timedelta(milliseconds=run.timeout_ms))
    return {
        "status": "tool_call_required",
        "continuation_token": token,
        "tool_calls": [{"id": c["id"], "name": c["name"], "input": c.get("input") if isinstance(c.get("input"), dict) else {}}
                       for c in calls],
        "session_id": run.session_id,
    }


# -- the end of a run ------------------------------------------------------------------------------
def finish(run: ProgrammaticRun, request, exit_code=None, error: str | None = None, outcome: str | None = None,
           claimed: bool = False) -> dict:
    """Stops the sandbox (nothing of it runs on while its files are read), answers completed or
    error, stores outputs only for a completed run, and gives back everything it held."""
    if not claimed and not ProgrammaticRun.objects.filter(pk=run.pk, state__in=("running", "waiting")).update(
            state="ending", token_hash="", step_deadline=_ending_by()):
        # The reaper took it first (this worker was more than its grace past the step's
        # deadline): the reaper ends it, and this request only says so.
        return {"status": "error", "error": TIME_LIMIT, "stdout": "", "stderr": "", "session_id": run.session_id}
    try:
        return _finish(run, request, exit_code, error, outcome)
    except BaseException:
        # Had this raised before the release (a database or file error while reading the
        # outputs or writing the audit), the slot would stay leased for SANDBOX_PTC_MAX_RUN_S
        # and the sandbox would run on. Give it all back; if even that fails, the reaper ends
        # the run once ENDING_S have passed.
        try:
            if ProgrammaticRun.objects.filter(pk=run.pk).exists():
                log.exception("a programmatic run failed while ending; releasing it", extra={"run": run.id})
                _release(run, Workspace(work_area(run), 0, 0, run.owner_uid), keep_session=False)
        except Exception:
            log.exception("cannot release a programmatic run; the reaper ends it", extra={"run": run.id})
        raise


def _ending_by():
    return timezone.now() + timedelta(seconds=ENDING_S)


def _finish(run: ProgrammaticRun, request, exit_code, error: str | None, outcome: str | None) -> dict:
    backend = get_backend()
    stopped = True
    try:
        stopped = backend.standing_stop(run.handle, run.id) if run.handle else True
        peak, cpu_ms, oom_kills = backend.standing_stats(run.handle, run.id) if run.handle else (None, None, 0)
    except Exception as failure:  # then nothing says it has stopped: its files are not read
        log.warning("cannot stop a programmatic run", extra={"run": run.id, "error": str(failure)})
        stopped = False
        peak, cpu_ms, oom_kills = None, None, 0
    outputs = {kind: path.read_bytes().decode("utf-8", "replace") if path.exists() else "" for kind, path in output_files(run).items()}
    if error is None and outcome == "gone":
        error = exited(None)
    if error is None and oom_kills:
        error = OUT_OF_MEMORY
    if error is None and exit_code != 0:
        error = exited(exit_code if exit_code is not None else 137)
    ws = Workspace(work_area(run), 0, 0, run.owner_uid)
    body: dict
    files: list = []
    if error is None and not stopped:
        error = "the sandbox could not be stopped"
    if error is None:
        inputs = {name: f for name, f in ((n, StoredFile.objects.filter(pk=i).select_related("session").first())
                                          for n, i in run.inputs.items()) if f is not None}
        try:
            files, deleted, truncation = collect_outputs(ws.data, inputs, run.session)
        except ApiError as failure:  # the storage volume is full: say so, keep nothing
            store.delete_session(run.session)
            _release(run, ws)
            _audit(run, request, "error", None, failure.body.get("message"), peak, cpu_ms)
            raise
        body = {"status": "completed", "stdout": outputs["stdout"], "stderr": outputs["stderr"], "files": files,
                "session_id": run.session_id}
        if deleted:
            body["deleted_files"] = deleted
        if truncation:
            body["artifact_truncation"] = truncation
    else:
        body = {"status": "error", "error": error or exited(None), "stdout": outputs["stdout"], "stderr": outputs["stderr"],
                "session_id": run.session_id}
    _audit(run, request, "success" if body["status"] == "completed" else "error", body, body.get("error"), peak, cpu_ms,
           exit_code=exit_code, files=len([f for f in files if not f.get("inherited")]))
    _release(run, ws, keep_session=body["status"] == "completed")
    return body


def _release(run: ProgrammaticRun, ws: Workspace, keep_session: bool = True) -> None:
    backend = get_backend()
    handle, run_id, session = run.handle, run.id, run.session
    slots.release(run.slot, run.slot_token)
    ProgrammaticRun.objects.filter(pk=run.pk).delete()

    def clean() -> None:
        if handle:
            backend.standing_destroy(handle, run_id)
        ws.close()
        output = store.session_dir(session) / "ptc-output"
        for path in output.glob("*"):
            path.unlink(missing_ok=True)
        try:
            output.rmdir()
        except OSError:
            pass
        if not keep_session:
            store.delete_session(session)

    teardown.later(clean)


def _audit(run, request, status, body, error, peak, cpu_ms, exit_code=None, files=0) -> None:
    record(
        "programmatic", request, status=status, user_id=run.user_id or None, session_id=run.session_id,
        details={"roundTrips": run.round_trips, "toolCalls": run.tool_calls, "tools": run.tool_names[:MAX_TOOLS],
                 "cancelled": bool(run.cancelled) or error == CANCELLED},
        execution={"lang": "py" if run.lang == "python" else "bash", "exitCode": exit_code,
                   "memoryMB": round(peak / 1048576, 1) if peak else None, "cpuMs": cpu_ms, "filesGenerated": files,
                   "timedOut": error == TIME_LIMIT, "oomKilled": error == OUT_OF_MEMORY},
        error=error,
    )


# -- runs nobody is serving ------------------------------------------------------------------
def reap_overdue() -> int:
    """Ends the runs whose client did not continue in time, those whose worker died in a step,
    and those whose worker died while ending them (every worker, every second:
    executor/housekeeping.py)."""
    now = timezone.now()
    grace = timedelta(seconds=10)  # a live worker ends its own step at its deadline
    overdue = ProgrammaticRun.objects.filter(
        Q(state="waiting", step_deadline__lt=now) | Q(state="running", step_deadline__lt=now - grace)
        | Q(state="ending", step_deadline__lt=now) | (~Q(state="ending") & Q(deadline__lt=now - grace)),
        host=slots.host(),  # only this server can stop its sandbox and unmount its work area
    )
    ended = 0
    for run in overdue:
        # (the step deadline too: an "ending" run is taken once, by one reaper)
        if ProgrammaticRun.objects.filter(pk=run.pk, state=run.state, step_deadline=run.step_deadline).update(
                state="ending", step_deadline=_ending_by()):
            try:
                finish(run, None, error=TIME_LIMIT, claimed=True)
            except Exception:
                log.exception("cannot end an overdue programmatic run", extra={"run": run.id})
            ended += 1
    return ended



def forget_abandoned_runs() -> int:
    """Rows of runs an hour past their deadline: their server would have reaped them had it
    lived (each server reaps only its own), so it is gone; its sandboxes went with it."""
    cutoff = timezone.now() - timedelta(seconds=slots.GONE_AFTER_S)
    return ProgrammaticRun.objects.filter(deadline__lt=cutoff).delete()[0]
