"""What every execution backend takes and returns. A backend knows nothing of HTTP, users or
the storage layout: it gets a work directory, a command and limits, and says what happened."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# The uid:gid a program sees itself run as under bwrap (the `sandbox` user of the image); the
# host uid behind it, and the uid of a Docker container, come from the functions below.
SANDBOX_UID = 10001
# Warm sandboxes (executor/pool.py) run as SANDBOX_UID_BASE + POOL_UID_OFFSET + n, apart from
# the per-slot uids of cold runs.
POOL_UID_OFFSET = 10000
# The process of a warm sandbox (docker/executor/warm_runner.py in the image); its "python"
# mode preloads the heavy modules, which a fork of the fork-server's template already has.
WARM_RUNNER = "/opt/sandbox/bin/warm_runner.py"


# -- host uids -------------------------------------------------------------------------------
# The kernel counts some resources per user (inotify instances, message-queue bytes, pipe
# pages, RLIMIT_NPROC): executions running at the same time must never share a host uid, or
# one could take them all from another. A slot is held by one execution at a time, and a warm
# sandbox serves one execution, so each gets a uid of its own; none is ever root.
def slot_uid(slot: int) -> int:
    from django.conf import settings

    return settings.SANDBOX_UID_BASE + slot


def pool_uid(taken) -> int:
    """The lowest warm-sandbox uid that no sandbox in `taken` (uids) has."""
    from django.conf import settings

    used = set(taken)
    uid = settings.SANDBOX_UID_BASE + POOL_UID_OFFSET
    while uid in used:
        uid += 1
    return uid


def passwd_lines(uid: int) -> tuple[str, str]:
    """(/etc/passwd, /etc/group) naming `uid` "sandbox" with /mnt/data as its home: programs
    that look their user up (getpwuid, `whoami`, R, git) find one."""
    passwd = (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"sandbox:x:{uid}:{uid}:sandbox:/mnt/data:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    return passwd, f"root:x:0:\nsandbox:x:{uid}:\nnogroup:x:65534:\n"


def read_available(fd: int, limit: int = 1 << 16) -> bytes:
    """What a non-blocking FIFO holds now, at most `limit` bytes: a program that is still
    writing can neither keep the server reading nor make it hold more than the cap."""
    chunks, size = [], 0
    while size < limit:
        try:
            chunk = os.read(fd, min(1 << 16, limit - size))
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def runner_status(raw: bytes) -> int | None:
    """The exit status a runner reports ("<0-255>\\n"), or None for anything else. One parser
    for every path (warm Docker and bwrap runs, programmatic runs): the program can write into
    the status FIFO too, so a forged or odd line (b"300\\n", b"-1\\n", b"0x1\\n") means "no
    report" everywhere, and the sandbox's own end decides."""
    line, newline, _ = raw.partition(b"\n")
    if not newline or not line.isdigit() or len(line) > 3:
        return None
    status = int(line)
    return status if status <= 255 else None


class CappedOutput:
    """A run's stdout and stderr as the server keeps them, for every backend and path: each
    stream holds at most `cap` bytes (more sets `truncated`, and the caller stops the run);
    stderr passes the run's clock first, which takes out the compile step's end marker and
    holds back what may be the start of one. finish() adds what the clock still holds."""

    def __init__(self, cap: int, clock=None):
        self.cap = cap
        self.clock = clock  # SandboxClock (executor/clock.py), or None
        self.streams = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False

    def add(self, kind: str, payload: bytes) -> bool:
        """Keeps what fits of `payload`; True when some of it did not."""
        if kind == "stderr" and self.clock is not None:
            payload = self.clock.filter_stderr(bytes(payload), time.monotonic())
        target = self.streams[kind]
        room = self.cap - len(target)
        target += payload[: max(room, 0)]
        if len(payload) > room:
            self.truncated = True
            return True
        return False

    def finish(self) -> None:
        if self.clock is not None:
            held, self.clock = self.clock.leftover(), None
            self.add("stderr", held)

    def text(self, kind: str) -> str:
        return bytes(self.streams[kind]).decode("utf-8", errors="replace")


class SandboxUnavailable(RuntimeError):
    """The backend cannot run anything now (the engine does not answer, the image or rootfs
    is missing): the client gets 503 sandbox_unavailable, /health says why."""


class SandboxGone(RuntimeError):
    """A warm sandbox could not be woken; nothing of the program ran (a cold run follows)."""


def kernel_release() -> str:
    return os.uname().release


def version_of(argv: list[str]) -> str:
    """First line a host tool prints about its version, or why there is none."""
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error.__class__.__name__})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0][:120] if lines else "unknown"


@dataclass(frozen=True)
class Limits:
    timeout_ms: int
    compile_timeout_ms: int
    memory_mb: int
    pids: int
    cpus: float
    output_max_bytes: int
    tmp_mb: int
    disk_mb: int
    nofile: int

    @classmethod
    def from_settings(cls, timeout_ms: int | None = None) -> "Limits":
        from django.conf import settings

        run_ms = settings.SANDBOX_TIMEOUT_MS
        if timeout_ms:  # a client may ask for less time, never more
            run_ms = max(100, min(run_ms, int(timeout_ms)))
        return cls(
            timeout_ms=run_ms,
            compile_timeout_ms=settings.SANDBOX_COMPILE_TIMEOUT_MS,
            memory_mb=settings.SANDBOX_MEMORY_MB,
            pids=settings.SANDBOX_PIDS_LIMIT,
            cpus=settings.SANDBOX_CPUS,
            output_max_bytes=settings.SANDBOX_OUTPUT_MAX_BYTES,
            tmp_mb=settings.SANDBOX_TMP_MB,
            disk_mb=settings.SANDBOX_DISK_MB,
            nofile=settings.SANDBOX_NOFILE,
        )

    # -- time: the one place the budgets are computed ------------------------------------------
    def budget_ms(self, compiled: bool) -> int:
        """The sandbox's backstop budget: the run limit, and for a compiled language the
        compile limit and a little slack for the step between the two."""
        return self.compile_timeout_ms + self.timeout_ms + COMPILE_SLACK_MS if compiled else self.timeout_ms


COMPILE_SLACK_MS = 2000


def longest_run_s() -> float:
    """The longest any one execution can hold a sandbox, a slot or a work area: the largest
    budget the settings allow plus the slot lease's margin. What the sweeps wait before they
    call something abandoned."""
    from django.conf import settings

    return (Limits.from_settings().budget_ms(compiled=True) + settings.SANDBOX_LEASE_MARGIN_MS) / 1000


class SandboxClock:
    """The sandbox's own deadline, the one authority on "timed out" (an exit status proves
    nothing: a program can exit 124 itself, or be killed by a timer it could see).

    A compiled language runs in two phases in one sandbox: the compile step has its own limit,
    then the program has the run limit from the moment it starts. The launch script says when
    the compile step is over by writing `marker` (random per execution, made after the code was
    sent, so neither the code nor the compiler's echo of it can contain it) to stderr before it
    starts the program; the first occurrence switches the phase and is cut from the output."""

    def __init__(self, started: float, run_s: float, compile_s: float = 0.0, marker: bytes = b""):
        self.run_s = run_s
        self.phase = "compile" if marker else "run"
        self.deadline = started + (compile_s if marker else run_s)
        self.marker = marker
        self._held = b""

    def filter_stderr(self, chunk: bytes, now: float) -> bytes:
        """stderr bytes as the client sees them (without the marker); starts the run phase."""
        if self.phase == "run" or not chunk:
            return chunk
        data = self._held + chunk
        found = data.find(self.marker)
        if found >= 0:
            self.phase, self.deadline, self._held = "run", now + self.run_s, b""
            return data[:found] + data[found + len(self.marker):]
        keep = len(self.marker) - 1  # the start of a marker the next chunk completes
        self._held = data[-keep:] if keep else b""
        return data[: len(data) - len(self._held)]

    def leftover(self) -> bytes:
        """What filter_stderr held back when the stream ended (never a whole marker)."""
        held, self._held = self._held, b""
        return held

    def remaining(self, now: float) -> float:
        return self.deadline - now


@dataclass(frozen=True)
class RunSpec:
    """One program to run. `data_dir` becomes /mnt/data (cwd, $HOME, writable); `code_dir`
    becomes /mnt/code (read-only, holds the source file); `argv` is the command inside."""

    name: str
    data_dir: Path
    code_dir: Path
    argv: list[str]
    limits: Limits
    deadline_ms: int  # wall-clock budget of the whole container, compile step included (the backstop)
    slot: int = 0  # the leased slot: unique among the executions running at this moment
    compile_marker: bytes = b""  # compiled languages: stderr marker of the end of the compile step

    def clock(self, started: float) -> SandboxClock:
        return SandboxClock(started, self.limits.timeout_ms / 1000, self.limits.compile_timeout_ms / 1000, self.compile_marker)


@dataclass
class RunResult:
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False  # by the sandbox's own clock (SandboxClock), never an exit status
    timed_out_phase: str = ""  # "compile" or "run" when timed_out
    oom_killed: bool = False
    output_truncated: bool = False
    wall_ms: int = 0
    cpu_ms: int | None = None
    peak_memory_bytes: int | None = None
    notes: list[str] = field(default_factory=list)


class StandingSandboxes:
    """Sandboxes that outlive the request that started them (programmatic runs wait for tool
    results between HTTP requests, served by any worker): every confinement of a cold run,
    driven only through FIFOs in the work area's code/ folder, seen and ended through their
    cgroup or engine, so any process of the server can take over. `handle` is what
    standing_start returned; `name` keys the accounting cgroup."""

    def standing_start(self, name: str, argv: list[str], ws, limits: Limits, lifetime_s: float, labels=None) -> str:
        """Starts argv (which sends its output to the FIFOs itself); it never runs longer
        than lifetime_s, whoever watches it."""
        raise NotImplementedError

    def standing_running(self, handle: str, name: str) -> bool:
        """Whether a task of the sandbox can still act."""
        raise NotImplementedError

    def standing_stop(self, handle: str, name: str) -> bool:
        """Kills every process and waits until none can act again (test_stop.py's rule)."""
        raise NotImplementedError

    def standing_stats(self, handle: str, name: str) -> tuple[int | None, int | None, int]:
        """(peak memory bytes, CPU ms, OOM kills)."""
        raise NotImplementedError

    def standing_destroy(self, handle: str, name: str) -> None:
        """Removes what is left (container, cgroup, alias); idempotent."""
        raise NotImplementedError


class WarmSandboxes:
    """The warm pool's side of a backend (executor/pool.py is backend-neutral): a sandbox with
    every limit of a cold run, started ahead of time running the warm runner, claimed by one
    execution, then destroyed. `handle` is what pool_start returned (a row's container_id);
    `name` keys the accounting cgroup; `instance` names the server that owns the pool."""

    # Whether every warm run reports on the FIFOs (else only the Python runner does, and an
    # exec'd program's output comes some other way, e.g. Docker's attach stream).
    pool_pipes_always: bool = False

    def pool_start(self, name: str, argv: list[str], ws, limits: Limits, deadline_s: float, instance: str,
                   self_redirecting: bool = False, runner_mode: str | None = None) -> str:
        """Starts the warm runner as ws.owner; it never lives longer than deadline_s.
        self_redirecting: the runner sends its output to the FIFOs itself. runner_mode: the
        warm runner's mode ("python", "exec") when argv is the warm runner, None otherwise
        (a programmatic runner): with pool_forks(runner_mode), a fork may be the sandbox."""
        raise NotImplementedError

    def pool_forks(self, runner_mode: str) -> bool:
        """Whether warm sandboxes of this runner mode are forks of a fork-server's template
        (tens of ms of CPU each, not a second): the pool then refills at any time, a new one
        is ready for a claim at once, and a worker that finds none waits briefly for the
        next (pool.claim)."""
        return False

    def pool_forked(self, handle: str) -> bool:
        """Whether the sandbox pool_start just returned (in this process) is such a fork: its
        runner does not announce itself, it is ready for a claim once made. False for one
        started the ordinary way, also where the template failed and pool_start fell back."""
        return False

    def pool_alive(self, handles: set[str], instance: str) -> set[str]:
        """The handles whose sandbox still runs."""
        raise NotImplementedError

    def pool_finish(self, handle: str, name: str, spec: RunSpec, begin, pipes: dict | None) -> RunResult:
        """Calls begin() (which hands the argv to the runner), reads the program's output and
        status under spec's caps and clock, and returns only once no process of the sandbox can
        act again (test_stop.py's rule). Raises SandboxGone when the sandbox had ended."""
        raise NotImplementedError

    def pool_kill(self, handle: str, name: str) -> None:
        """Ends every process of the sandbox now (the keeper, at a run's deadline)."""
        raise NotImplementedError

    def pool_release(self, handle: str, name: str) -> None:
        """After a run, in the teardown thread: removes what is left; idempotent."""
        raise NotImplementedError

    def pool_destroy(self, handle: str, name: str) -> None:
        """Removes a sandbox no run used (aged, dead, or the pool shrinking); idempotent."""
        raise NotImplementedError

    def pool_clear(self, instance: str, keep=frozenset()) -> int:
        """Removes every warm sandbox of `instance` but `keep` (a keeper starting afresh)."""
        raise NotImplementedError


class Backend(StandingSandboxes, WarmSandboxes):
    """What the rest of the server may ask of a sandbox backend (SANDBOX_BACKEND picks one:
    docker.DockerBackend, bwrap.BwrapBackend); nothing else. A backend knows nothing of HTTP,
    users or the storage layout, and raises SandboxUnavailable when it cannot run anything."""

    def owner_uid(self, slot: int) -> int:
        """The host uid that must own /mnt/data for an execution in this slot."""
        raise NotImplementedError

    def run(self, spec: RunSpec) -> RunResult:
        """One cold execution: returns once every process of it has ended."""
        raise NotImplementedError

    def probe(self, argv: list[str]) -> str:
        """stdout of a short trusted command in the sandbox runtime (version probes)."""
        raise NotImplementedError

    def health(self) -> dict:
        """{"ok": bool, ...}: whether it can run anything now, and the walls' versions."""
        raise NotImplementedError

    def reap(self) -> int:
        """Removes what dead workers left (every worker's housekeeping, every 15 s)."""
        raise NotImplementedError

    def kill_overdue(self) -> int:
        """Kills running sandboxes past their deadline whose worker may have died (every second).
        Backends whose sandboxes die with their worker have nothing to do."""
        return 0
