"""One /exec, top to bottom:

validate -> lease a slot -> fresh work area with the files[] inputs -> run (backend) ->
compare the work dir with its start (new, modified, inherited, deleted) -> store outputs
under the exec session id -> release the slot, audit -> response.
"""

from __future__ import annotations

import logging
import secrets
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from audit.events import record
from runtime_sessions import service as runtime_sessions
from sandbox_project.errors import ApiError, bad_request
from sandbox_project.timing import phase
from storage import store
from storage.ids import is_valid_id
from storage.models import StoredFile
from storage.names import InvalidName, check_relative_name, printable

from . import pool, slots, teardown
from .artifacts import extension_allowed, sha256_of, walk
from .backends import get_backend
from .backends.base import Limits, RunResult, RunSpec, SandboxGone, SandboxUnavailable
from .languages import BUILD_DIR, Language, find_language
from .workspace import Workspace, WorkspaceError

log = logging.getLogger("sandbox.exec")


@dataclass
class ExecRequest:
    language: Language
    code: str
    args: list[str]
    inputs: dict[str, StoredFile]  # name under /mnt/data -> stored file
    user_id: str | None
    timeout_ms: int | None
    requested_lang: str = ""
    extra: dict = field(default_factory=dict)
    runtime_hint: str | None = None  # a stateful workspace to run in (runtime_sessions)


# -- validation ------------------------------------------------------------------------------
# argv reaches execve(): far below the kernel's own limit (E2BIG at ~2 MiB), and no NUL.
MAX_ARGS = 1000
MAX_ARGS_CHARS = 256 * 1024


def parse_request(data, caller, stateful: bool = False) -> ExecRequest:
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object")
    lang = data.get("lang")
    if not isinstance(lang, str) or not lang.strip():
        raise bad_request("'lang' must be a non-empty string")
    language = find_language(lang)
    if language is None:
        raise ApiError(400, f"Unsupported language: {lang}")
    code = data.get("code")
    if not isinstance(code, str):
        raise bad_request("'code' must be a string")
    args = data.get("args") or []
    if isinstance(args, str):
        args = [args]
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in args):
        raise bad_request("'args' must be a list of strings")
    args = [str(a) for a in args]
    if len(args) > MAX_ARGS or sum(len(a) for a in args) > MAX_ARGS_CHARS:
        raise bad_request(f"'args' may hold at most {MAX_ARGS} arguments of {MAX_ARGS_CHARS} characters in all")
    if any("\0" in a for a in args):
        raise bad_request("an argument must not contain a NUL character")
    timeout = data.get("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 1e12:
        timeout = None  # honoured when sensible, never a reason to reject (spec item 10); 1e400 is inf
    user_id = user_id_of(caller, data)
    # A hint means something only where the stateful profile serves the request; elsewhere it
    # is ignored unread, as the official service's stateless mode does.
    hint = runtime_sessions.parse_hint(data.get("runtime_session_hint")) if stateful else None
    return ExecRequest(
        language=language,
        code=code,
        args=args,
        inputs=resolve_inputs(data.get("files"), caller),
        user_id=user_id,
        timeout_ms=int(timeout) if timeout else None,
        requested_lang=lang,
        runtime_hint=hint,
    )


def user_id_of(caller, data: dict) -> str | None:
    """The user a request acts for: a verified JWT's sub, else the body's user_id (trusted
    from the shared key's holder, as LibreChat sends it)."""
    user_id = getattr(caller, "user_id", None) or _text(data.get("user_id"))
    if user_id and "\0" in user_id:
        raise bad_request("'user_id' must not contain a NUL character")
    return user_id


def _text(value) -> str | None:
    return value.strip()[:255] or None if isinstance(value, str) else None


def resolve_inputs(refs, caller) -> dict[str, StoredFile]:
    """files[] refs of both generations -> {name: StoredFile}; the last ref for a name wins.

    A file is found by its id alone (ids are global): era-A clients re-send refs with the
    latest exec session id, which need not be where the bytes live (spec §E1).
    """
    if refs in (None, ""):
        return {}
    if not isinstance(refs, list):
        raise bad_request("'files' must be a list of file references")
    if len(refs) > settings.SANDBOX_MAX_INPUT_FILES:
        raise bad_request(f"at most {settings.SANDBOX_MAX_INPUT_FILES} input files per execution")
    inputs: dict[str, StoredFile] = {}
    for ref in refs:
        if not isinstance(ref, dict):
            raise bad_request("each entry of 'files' must be an object")
        file_id = ref.get("id") or ref.get("fileId")
        if not is_valid_id(file_id):
            raise bad_request(f"file id {str(file_id)[:64]!r} is not a 21-character id")
        stored = store.find_file(file_id)
        if stored is None:
            raise ApiError(404, "File not found", f"input file {file_id} does not exist or has expired")
        if not store.may_access(caller, stored.session):
            raise ApiError(403, "Unauthorized file reference", f"input file {file_id} belongs to another user")
        name = ref.get("name") or stored.name
        try:
            check_relative_name(name, settings.SANDBOX_MAX_OUTPUT_DEPTH)
        except InvalidName as error:
            raise bad_request(f"file name {str(name)[:300]!r}: {error}") from None
        # The last ref for a destination wins, and so does it over an earlier one whose path it
        # needs ("a" and "a/b" cannot both exist): a conversation that holds two files for one
        # place must never be refused for it, or every later turn is (LibreChat #15443, #15816).
        for earlier in [n for n in inputs if n == name or n.startswith(name + "/") or name.startswith(n + "/")]:
            del inputs[earlier]
        inputs[name] = stored
    return inputs


# -- running ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    argv: list[str]  # inside the sandbox
    budget_ms: int  # the whole sandbox's backstop: compile and run limits, and a little
    compile_marker: bytes = b""  # see SandboxClock


def command_for(language: Language, source: str, args: list[str], limits: Limits) -> Command:
    run = [*language.fill(language.run, source), *args]
    if not language.compile:
        return Command(run, limits.budget_ms(compiled=False))
    # Compile and run in one sandbox. The compile step's end is told to the server's clock by a
    # marker on stderr (random now, so the code cannot hold it); the sandbox's clock, not a
    # timer inside the sandbox, decides what timed out. Compiler chatter goes to stderr.
    token = f"codeinterp-compiled-{secrets.token_hex(16)}"
    script = (
        f"mkdir -p {BUILD_DIR} || exit 1; "
        f"{shlex.join(language.fill(language.compile, source))} 1>&2 || exit $?; "
        f"printf '\\n%s\\n' {token} >&2; "
        f'exec {shlex.join(language.fill(language.run, source))} "$@"'
    )
    return Command(["sh", "-c", script, "main", *args], limits.budget_ms(compiled=True), f"\n{token}\n".encode())


def execute(data, caller, request=None) -> dict:
    stateful = getattr(request, "execution_profile", "default") == "stateful"
    with phase("parse"):
        req = parse_request(data, caller, stateful)
    limits = Limits.from_settings(req.timeout_ms)
    command = command_for(req.language, req.language.source, req.args, limits)
    lease_s = (command.budget_ms + settings.SANDBOX_LEASE_MARGIN_MS) / 1000
    if req.runtime_hint is None:
        return _execute(req, limits, command, lease_s, request, None)
    with phase("workspace"), runtime_sessions.hold(req.user_id, req.runtime_hint, lease_s + settings.SANDBOX_QUEUE_TIMEOUT_MS / 1000) as held:
        response = _execute(req, limits, command, lease_s, request, held)
    response.update(held.describe())
    return response


def _execute(req, limits, command, lease_s, request, held) -> dict:
    source = req.language.source
    started = time.monotonic()
    with slots.lease(lease_s) as slot:
        with phase("session"):
            session = store.new_session("exec", req.user_id)
        try:
            result, response = _run_in_workspace(req, session, source, command, limits, slot["slot"], held)
        except BaseException as error:
            store.delete_session(session)
            record("exec", request, status="error", user_id=req.user_id, session_id=session.id,
                   execution={"lang": req.language.key}, error=str(error)[:500])
            if isinstance(error, (WorkspaceError, SandboxUnavailable)):
                log.error("sandbox unavailable", extra={"error": str(error)})
                raise ApiError(503, "sandbox_unavailable", str(error), headers={"Retry-After": "5"}) from None
            raise
    duration_ms = int((time.monotonic() - started) * 1000)
    generated = [f for f in response["files"] if not f.get("inherited")]
    with phase("audit"):
        _audit_success(request, req, session, slot, result, response, duration_ms, generated)
    return response


def _audit_success(request, req, session, slot, result, response, duration_ms, generated):
    record(
        "exec",
        request,
        status="success",
        user_id=req.user_id,
        session_id=session.id,
        details={"queueMs": slot["queue_ms"], "args": len(req.args), "inputs": len(req.inputs)},
        execution={
            "lang": req.language.key,
            "durationMs": duration_ms,
            "exitCode": result.exit_code,
            "memoryMB": round(result.peak_memory_bytes / 1048576, 1) if result.peak_memory_bytes else None,
            "filesGenerated": len(generated),
            "timedOut": result.timed_out,
            "oomKilled": result.oom_killed,
            "cpuMs": result.cpu_ms,
        },
    )


def _run_in_workspace(req, session, source, command: Command, limits, slot, held=None):
    with phase("claim"):
        member = pool.claim(req.language.key, command.budget_ms / 1000)
    if member is not None:
        try:
            return _run_warm(req, session, source, command, limits, slot, member, held)
        except SandboxGone as error:
            log.warning("warm sandbox lost; running cold", extra={"error": str(error)})
    backend = get_backend()
    area = store.session_dir(session) / "workspace" / f"exec_{session.id}"
    with phase("prime"):
        ws = Workspace(area, limits.disk_mb, len(req.code.encode()), backend.owner_uid(slot)).open()
    try:
        with phase("prime"):
            _prime(ws, req, source, held)
        spec = RunSpec(session.id, ws.data, ws.code, command.argv, limits, command.budget_ms, slot, command.compile_marker)
        with phase("run"):
            result = backend.run(spec)
        with phase("collect"):
            return result, _respond(req, session, ws, result, limits, held)
    finally:
        teardown.later(ws.close)  # the program has exited; unmounting can wait


def _run_warm(req, session, source, command: Command, limits, slot, member, held=None):
    """The same run in a sandbox started ahead of time (executor/pool.py)."""
    backend = get_backend()
    ws = pool.workspace(member.name, member.owner)
    try:
        with phase("prime"):
            ws.resize(len(req.code.encode()))  # the disk quota of a cold run
            _prime(ws, req, source, held)
            spec = RunSpec(member.name, ws.data, ws.code, command.argv, limits, command.budget_ms, slot, command.compile_marker)
            pipes = pool.open_pipes(ws)
        try:
            with phase("run"):
                result = backend.pool_finish(member.container_id, member.name, spec, lambda: pool.wake(ws, command.argv), pipes)
        finally:
            pool.close_pipes(pipes)
        with phase("collect"):
            response = _respond(req, session, ws, result, limits, held)
        response["run"]["warm"] = True  # for operators and the tests; clients ignore it
        return result, response
    finally:
        teardown.later(pool.release, member, ws)


def _prime(ws: Workspace, req: ExecRequest, source: str, held=None) -> None:
    ws.write_code(source, req.code)
    if held is not None:  # the stateful workspace's files first; the request's inputs replace them
        runtime_sessions.restore_into(held, ws.data, ws.owner, inputs=req.inputs.keys())
    for name, stored in req.inputs.items():
        ws.place_input(name, lambda target, stored=stored: store.copy_into(stored, target))


def _respond(req, session, ws, result, limits, held=None) -> dict:
    files, deleted, truncation = collect_outputs(ws.data, req.inputs, session, held)
    if held is not None:
        everything, _ = walk(ws.data, settings.SANDBOX_MAX_OUTPUT_DEPTH, set(), all_hidden=True)
        left_out = runtime_sessions.save_from(held, everything)  # what the workspace could not keep
        truncation = [*truncation, *left_out[:MAX_TRUNCATION_ENTRIES], *_more(len(left_out))]
    response = {
        "session_id": session.id,
        "stdout": result.stdout,
        "stderr": result.stderr + explain(result, req.language, limits),
        "files": files,
        "language": req.language.key,
        "run": {
            "code": result.exit_code,
            "signal": result.signal,
            "timed_out": result.timed_out,
            "oom_killed": result.oom_killed,
            "output_truncated": result.output_truncated,
            "wall_time": result.wall_ms,
            "cpu_time": result.cpu_ms,
            "memory": result.peak_memory_bytes,
            "warm": False,
        },
    }
    if deleted:
        response["deleted_files"] = deleted
    if truncation:
        response["artifact_truncation"] = truncation
    return response


def explain(result: RunResult, language: Language, limits: Limits) -> str:
    """Plain words for the model when the sandbox, not the program, ended the run."""
    notes = []
    if result.timed_out and result.timed_out_phase == "compile":
        notes.append(f"Compilation timed out after {limits.compile_timeout_ms / 1000:g} s.")
    elif result.timed_out:
        notes.append(f"Time limit exceeded: the program ran longer than {limits.timeout_ms / 1000:g} s and was stopped.")
    if result.oom_killed:
        notes.append(f"Out of memory: the program needed more than {limits.memory_mb} MB and was killed.")
    if result.output_truncated:
        notes.append(f"Output truncated: stdout/stderr may hold at most {limits.output_max_bytes} bytes each; the program was stopped.")
    if not notes:
        return ""
    return ("\n" if result.stderr and not result.stderr.endswith("\n") else "") + "\n".join(notes) + "\n"


# -- collecting ------------------------------------------------------------------------------
def collect_outputs(data_dir: Path, inputs: dict[str, StoredFile], session, held=None):
    """(files[], deleted_files[], artifact_truncation[]) for the response.

    Every returned name passes the rule input names pass (check_relative_name), so a
    conversation that sends them back is never refused. What one execution stores is bounded
    by its disk quota: each file is charged its apparent size (a sparse file is copied in
    full), and a hard-linked inode is charged and stored once (its other names become hard
    links in storage).
    """
    hidden_with_inputs = {"/".join(n.split("/")[: i + 1]) for n in inputs for i in range(n.count("/"))}
    found, truncation = walk(data_dir, settings.SANDBOX_MAX_OUTPUT_DEPTH, hidden_with_inputs)
    present = {f.name for f in found}
    deleted = [name for name in inputs if name not in present]
    max_files = settings.SANDBOX_MAX_OUTPUT_FILES
    max_bytes = settings.SANDBOX_MAX_OUTPUT_FILE_MB << 20
    budget = settings.SANDBOX_DISK_MB << 20
    by_inode: dict[tuple[int, int], StoredFile] = {}
    generated, inherited = [], []
    for item in found:
        try:
            check_relative_name(item.name, settings.SANDBOX_MAX_OUTPUT_DEPTH)
        except InvalidName as error:
            truncation.append({"name": printable(item.name), "reason": "invalid_name", "detail": str(error)})
            continue
        original = inputs.get(item.name)
        if original is None and held is not None and runtime_sessions.unchanged(held, item.name, item.size, item.mtime_ns):
            continue  # a stateful workspace's file, as the previous execution left it: not new
        digest = None
        if original is not None:
            if original.size == item.size:
                digest = _digest(item)
            if original.read_only or (digest is not None and digest == original.sha256):
                inherited.append(original)  # read-only inputs are never surfaced as outputs
                continue
        if not extension_allowed(item.name):
            truncation.append({"name": item.name, "reason": "unsupported_extension"})
            continue
        if item.size > max_bytes:
            truncation.append({"name": item.name, "reason": "file_too_large", "size": item.size})
            continue
        if len(generated) >= max_files:
            truncation.append({"name": item.name, "reason": "max_files"})
            continue
        same = by_inode.get(item.inode)
        if same is not None:
            generated.append(store.save_output_link(session, same, item.name, modified_from=original))
            continue
        if item.size > budget:
            truncation.append({"name": item.name, "reason": "storage_budget", "size": item.size})
            continue
        digest = digest or _digest(item)
        if digest is None:
            continue
        stored = store.save_output(session, item.open, item.name, item.size, digest, modified_from=original)
        budget -= item.size
        by_inode[item.inode] = stored
        generated.append(stored)
    files = [file_ref(f, session.id) for f in generated] + [file_ref(f, None, inherited=True) for f in inherited]
    return files, deleted, truncation[:MAX_TRUNCATION_ENTRIES] + _more(len(truncation))


# A program can make any number of unacceptable files; the response lists this many.
MAX_TRUNCATION_ENTRIES = 100


def _more(count: int) -> list[dict]:
    extra = count - MAX_TRUNCATION_ENTRIES
    return [{"name": "", "reason": "more_not_listed", "count": extra}] if extra > 0 else []


def _digest(item) -> str | None:
    try:
        return sha256_of(item)
    except OSError:
        return None


def file_ref(stored: StoredFile, exec_session_id: str | None, inherited: bool = False) -> dict:
    sid = stored.session_id
    ref = {
        "id": stored.id,
        "name": stored.name,
        "storage_session_id": sid,
        "session_id": sid,
        "size": stored.size,
        "contentType": stored.content_type,
    }
    if inherited:
        ref["inherited"] = True
    if stored.modified_from_id:
        ref["modified_from"] = {"id": stored.modified_from_id, "storage_session_id": stored.modified_from.session_id}
    return ref
