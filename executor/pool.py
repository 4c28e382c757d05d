"""Warm sandboxes: sandboxes started ahead of time, one execution each.

A keeper process (`manage.py pool_keeper`, started and stopped by gunicorn) keeps
SANDBOX_POOL sandboxes per language ready. Each is a sandbox of the configured backend (a
container, or a bwrap sandbox with its own cgroup and host uid) with every limit of a cold
run, already running docker/executor/warm_runner.py: for Python with numpy, pandas and
matplotlib imported. It waits on a FIFO in its read-only /mnt/code. An execution claims one
(a conditional UPDATE, so any worker may take any sandbox), copies its inputs and source into
the sandbox's own work area, writes the argv into the FIFO, reads the output exactly as for a
cold run, and destroys the sandbox. The keeper replaces what was used, what died while waiting,
and what grew older than SANDBOX_POOL_MAX_AGE_S.

The backend does the sandbox-specific part through pool_start, pool_alive, pool_finish,
pool_release, pool_destroy and pool_clear; a row's container_id is the backend's handle (a
container id, or "<uid>:<cgroup>" for bwrap), and its owner the sandbox's host uid.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from storage.ids import new_id

from .backends import get_backend
from .backends.base import WARM_RUNNER, Limits, SandboxGone, longest_run_s, pool_uid
from .languages import find_language
from .models import WarmSandbox
from .slots import last_activity
from .workspace import Workspace, unmount

log = logging.getLogger("sandbox.pool")
FIFO = ".go"
READY = ".ready"
PIPES = {"stdout": ".stdout", "stderr": ".stderr", "status": ".status"}  # python sandboxes
RUNNER = WARM_RUNNER
WAKE_TIMEOUT_S = 3  # a ready runner answers at once; a dead one is given up on quickly
WAKE_POLL_S = (0.0002, 0.005)  # first and largest pause between tries (a fork is ready in ms)


def root() -> Path:
    return settings.SANDBOX_STORAGE_PATH / ".pool"


@functools.lru_cache(maxsize=1)  # asked on every claim; host name and storage path never change
def instance() -> str:
    """Names this server's sandboxes, so that servers sharing one engine or one database
    (several hosts on PostgreSQL) never touch each other's pools."""
    import hashlib
    import socket

    return hashlib.sha256(f"{socket.gethostname()}:{settings.SANDBOX_STORAGE_PATH}".encode()).hexdigest()[:16]


def members():
    """This server's rows of the shared WarmSandbox table."""
    return WarmSandbox.objects.filter(instance=instance())


POOL_BACKENDS = ("docker", "bwrap")


def active() -> bool:
    """Whether this server keeps warm sandboxes at all. Not under gVisor: the warm path (host
    FIFOs, which gVisor opens only with --host-fifo=open on a writable mount, and the stop
    through the cgroup's tasks) is built and tested for runc and bwrap only."""
    if settings.SANDBOX_BACKEND == "docker" and settings.SANDBOX_DOCKER_RUNTIME == "runsc":
        return False
    return bool(settings.SANDBOX_POOL) and settings.SANDBOX_BACKEND in POOL_BACKENDS


def enabled_for(language_key: str) -> bool:
    return active() and settings.SANDBOX_POOL.get(language_key, 0) > 0


def workspace(name: str, owner: int) -> Workspace:
    """The work area of sandbox `name`; data/ belongs to the sandbox's host uid."""
    return Workspace(root() / name, settings.SANDBOX_DISK_MB, settings.SANDBOX_MAX_JSON_MB << 20, owner)


def max_life_s() -> float:
    return settings.SANDBOX_POOL_MAX_AGE_S + longest_run_s()


# -- used by the executions ------------------------------------------------------------------
# How long after its budget a taken sandbox is killed by the keeper (the worker stops it at the
# budget itself; this is for a worker that died).
KILL_GRACE_S = 2.0


# A worker that finds no fork ready waits this long for the keeper to make one (tens of ms)
# before it runs cold: for a heavy program a cold start costs seconds. One worker per language
# waits at a time (a lock file in the pool's root); the others run cold at once: the keeper
# makes forks one after another, so under sustained load more waiters would only queue
# behind it while the cores could be running cold starts (measured: 16 clients got 22.8
# executions/s with every worker waiting, against 36 with no pool at all).
FORK_WAIT_S = 0.5
FORK_POLL_S = (0.005, 0.05)  # first and largest pause between looks (each is a query)
WAITING = ".waiting-{language}"


def claim(language_key: str, budget_s: float) -> WarmSandbox | None:
    """Takes a ready sandbox for one run of at most budget_s: past that (and KILL_GRACE_S) the
    keeper kills it, whether or not the worker that took it is still there."""
    if not enabled_for(language_key):
        return None
    member = _take(language_key, budget_s)
    if member is None and forked(language_key):
        member = _wait_for_fork(language_key, budget_s)
    return member


def _wait_for_fork(language_key: str, budget_s: float) -> WarmSandbox | None:
    wake_keeper()  # (it may be asleep: every earlier fork was still ready when it last looked)
    try:
        lock = os.open(root() / WAITING.format(language=language_key), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another worker is waiting for the next fork: run cold
        give_up = time.monotonic() + FORK_WAIT_S
        pause = FORK_POLL_S[0]
        member = None
        while member is None and time.monotonic() < give_up:
            time.sleep(pause)
            pause = min(pause * 2, FORK_POLL_S[1])
            member = _take(language_key, budget_s)
        return member
    finally:
        os.close(lock)  # (and the lock with it)


def _take(language_key: str, budget_s: float) -> WarmSandbox | None:
    now = timezone.now()
    fresh_after = now - timedelta(seconds=settings.SANDBOX_POOL_MAX_AGE_S)
    deadline = now + timedelta(seconds=budget_s + KILL_GRACE_S)
    ready = list(members().filter(language=language_key, state="ready", created_at__gt=fresh_after)[:8])
    for n, member in enumerate(ready):
        if WarmSandbox.objects.filter(pk=member.pk, state="ready").update(state="taken", claimed_at=now, deadline=deadline):
            member.deadline = deadline
            if forked(language_key) and n == len(ready) - 1:
                # It took the last ready fork: the next call would find none, so the keeper
                # replaces it now. Otherwise the release does (release()): a refill while the
                # program runs delays its end (see docs/ARCHITECTURE.md, "refilled at the release").
                wake_keeper()
            return member
    return None


# Workers wake the keeper through a FIFO in the pool's root when they take a sandbox the
# fork-server can replace at once; otherwise it looks every round (pool_keeper.ROUND_S).
WAKE = ".wake"


def wake_keeper() -> None:
    try:
        fd = os.open(root() / WAKE, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: no keeper reading
    except OSError:
        return
    try:
        os.write(fd, b"1")
    except OSError:
        pass  # (full: it is awake already)
    finally:
        os.close(fd)


def wake_channel() -> int:
    """The keeper's end of the wake FIFO (read-write, so that it never sees end-of-file)."""
    root().mkdir(parents=True, exist_ok=True)
    try:
        os.mkfifo(root() / WAKE, 0o600)
    except FileExistsError:
        pass
    return os.open(root() / WAKE, os.O_RDWR | os.O_NONBLOCK)


def enforce_deadlines() -> int:
    """Kills the programs of taken sandboxes past their deadline (the keeper, every
    DEADLINE_ROUND_S). Only the processes: the worker, if alive, still collects what the program
    left and removes the sandbox; if it died, the abandoned-sandbox rule of tend() does."""
    killed = 0
    for member in members().filter(state="taken", deadline__lt=timezone.now()):
        try:
            get_backend().pool_kill(member.container_id, member.name)
            killed += 1
        except Exception as error:
            log.warning("cannot kill an overdue warm sandbox", extra={"sandbox": member.name, "error": str(error)[:200]})
    return killed


def wake(ws: Workspace, argv: list[str]) -> None:
    """Hands the argv to the waiting runner. Waits while it is still starting (it opens the
    FIFO for reading only once it is ready: a fork claimed the moment it was made is still
    entering its sandbox for a few ms); raises SandboxGone if it never does."""
    fifo = ws.code / FIFO
    give_up = time.monotonic() + WAKE_TIMEOUT_S
    pause = WAKE_POLL_S[0]
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as error:
            if error.errno != errno.ENXIO or time.monotonic() > give_up:
                raise SandboxGone(f"warm sandbox did not answer: {error}") from None
        time.sleep(pause)
        pause = min(pause * 2, WAKE_POLL_S[1])
    os.set_blocking(fd, True)
    with os.fdopen(fd, "w", encoding="utf-8") as pipe:
        pipe.write(json.dumps({"argv": argv}))


def open_pipes(ws: Workspace) -> dict[str, int] | None:
    """Read ends of a Python sandbox's output FIFOs (O_RDWR: never a false end-of-file
    before the runner has opened its side)."""
    if not (ws.code / PIPES["status"]).exists():
        return None
    return {kind: os.open(ws.code / name, os.O_RDWR | os.O_NONBLOCK) for kind, name in PIPES.items()}


def close_pipes(pipes: dict[str, int] | None) -> None:
    for fd in (pipes or {}).values():
        os.close(fd)


def release(member: WarmSandbox, ws: Workspace) -> None:
    try:
        get_backend().pool_release(member.container_id, member.name)
    finally:
        ws.close()
        WarmSandbox.objects.filter(pk=member.pk).delete()
        if forked(member.language):
            wake_keeper()  # its replacement, now that the program is over (_take)


# -- used by the keeper ----------------------------------------------------------------------
def start_member(language_key: str) -> WarmSandbox:
    backend = get_backend()
    name = new_id()
    owner = pool_uid(members().values_list("owner", flat=True))
    ws = workspace(name, owner)
    ws.open()
    try:
        os.mkfifo(ws.code / FIFO)
        os.chmod(ws.code / FIFO, 0o644)  # readable by the sandbox user despite the umask
        os.mkfifo(ws.code / READY)
        os.chmod(ws.code / READY, 0o622)
        mode = runner_mode(language_key)
        if mode == "python" or backend.pool_pipes_always:
            for fifo in PIPES.values():  # written by the sandbox user, read by the server
                os.mkfifo(ws.code / fifo)
                os.chmod(ws.code / fifo, 0o622)
        # -S for a runner that only execs: the image's site hook (sandbox_startup) would seed
        # matplotlib's cache into the fresh /tmp, which a cold js, ts or bash run does not have.
        argv = ["python3", RUNNER, mode] if mode == "python" else ["python3", "-S", RUNNER, mode]
        handle = backend.pool_start(name, argv, ws, Limits.from_settings(), max_life_s(), instance(),
                                    self_redirecting=mode == "python", runner_mode=mode)
    except BaseException:
        ws.close()
        raise
    # A fork is ready for a claim at once: its runner opens the program FIFO within
    # milliseconds, and the worker's wake waits that long. An ordinary start (also the one the
    # backend falls back to when the template failed) imports for seconds: "starting" until
    # its runner says ready (tend()).
    state = "ready" if backend.pool_forked(handle) else "starting"
    return WarmSandbox.objects.create(name=name, container_id=handle, language=language_key, instance=instance(), owner=owner,
                                      state=state)


def destroy_member(member: WarmSandbox) -> None:
    get_backend().pool_destroy(member.container_id, member.name)
    workspace(member.name, member.owner).close()
    member.delete()


def running_pool_members() -> set[str]:
    """Handles of this server's sandboxes that still run."""
    handles = members().exclude(state="retired").values_list("container_id", flat=True)
    return get_backend().pool_alive(set(handles), instance())


def is_ready(name: str) -> bool:
    """Whether the runner has finished starting: it waits to write "1" into .ready until
    someone opens the FIFO for reading (see warm_runner.announce_ready)."""
    import select

    try:
        fd = os.open(root() / name / "code" / READY, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        readable, _, _ = select.select([fd], [], [], 0.02)
        return bool(readable) and os.read(fd, 8).startswith(b"1")
    except OSError:
        return False
    finally:
        os.close(fd)


def tend() -> dict:
    """One round of the keeper: retire dead or old sandboxes, promote started ones that are
    ready, start what is missing."""
    counts = {"started": 0, "retired": 0, "ready": 0}
    live = running_pool_members()
    too_old = timezone.now() - timedelta(seconds=settings.SANDBOX_POOL_MAX_AGE_S)
    for member in members().filter(state__in=("starting", "ready")):
        if member.container_id not in live or member.created_at < too_old:
            if WarmSandbox.objects.filter(pk=member.pk, state=member.state).update(state="retired"):
                destroy_member(member)
                counts["retired"] += 1
        elif member.state == "starting" and is_ready(member.name):
            WarmSandbox.objects.filter(pk=member.pk, state="starting").update(state="ready")
            counts["ready"] += 1
    # Retired rows whose removal failed (the engine went away meanwhile): try again every round,
    # so that nothing of them (container, mounted work area, row) outlives the outage.
    for member in members().filter(state="retired"):
        try:
            destroy_member(member)
        except Exception as error:
            log.warning("cannot remove a retired warm sandbox yet", extra={"sandbox": member.name, "error": str(error)[:200]})
            break  # the backend is still away; the next round tries again
    # A taken sandbox whose worker died mid-run: gone once no run can still be using it.
    abandoned = timezone.now() - timedelta(seconds=max_life_s() - settings.SANDBOX_POOL_MAX_AGE_S)
    for member in members().filter(state="taken", claimed_at__lt=abandoned):
        if WarmSandbox.objects.filter(pk=member.pk, state="taken").update(state="retired"):
            destroy_member(member)
            counts["retired"] += 1
    counts["started"] = refill(forks_only=False)
    return counts


def refill(forks_only: bool = True) -> int:
    """Starts the sandboxes missing from SANDBOX_POOL; returns how many. forks_only: only the
    languages the fork-server serves (the keeper, woken by a claim between its rounds: that
    is all a claim can have changed, and one query per language is all it costs; a whole
    round also checks every sandbox's cgroup and age: 1.5 ms more of the keeper's CPU per run)."""
    # Starting a sandbox costs about a CPU-second (container start, imports). Under sustained
    # load a refill competes for the cores with the very runs it is meant to speed up, and
    # arrives too late for them: the drained pool made back-to-back calls slower than no pool
    # at all. So it refills only in a pause (refill_allowed); during the load runs are cold, as
    # with the pool off. A fork of the fork-server's template costs about a hundredth of that
    # and refills at any time.
    started = 0
    in_pause = None
    for language_key, wanted in settings.SANDBOX_POOL.items():
        if not forked(language_key):
            if forks_only:
                continue
            if in_pause is None:
                in_pause = refill_allowed()
            if not in_pause:
                continue
        have = members().filter(language=language_key, state__in=("starting", "ready")).count()
        for _ in range(wanted - have):
            start_member(language_key)
            started += 1
    return started


# A run in progress holds the refill back for this long after its start; after that it is a
# long job on its own (a training run, a big compile), and the pool may use the idle cores.
RUN_HOLDS_REFILL_S = 5.0


def runner_mode(language_key: str) -> str:
    """The warm runner's mode: Python runs in the preloaded interpreter, the rest is exec'd."""
    return "python" if language_key == "py" else "exec"


def forked(language_key: str) -> bool:
    """Whether this language's warm sandboxes are forks of a fork-server's template."""
    return get_backend().pool_forks(runner_mode(language_key))


def refill_allowed() -> bool:
    """A pause: no run ended in the last SANDBOX_POOL_REFILL_QUIET_MS, and none still running
    started more recently than that or RUN_HOLDS_REFILL_S, whichever is longer."""
    started, ended = last_activity()
    now = timezone.now()
    quiet = timedelta(milliseconds=settings.SANDBOX_POOL_REFILL_QUIET_MS)
    held = max(quiet, timedelta(seconds=RUN_HOLDS_REFILL_S))
    return (ended is None or now - ended >= quiet) and (started is None or now - started >= held)


def clear_all(keep_taken: bool) -> int:
    """Removes the warm sandboxes of this server: the sandbox, its work area and row. At keeper
    start (keep_taken: a keeper that was restarted leaves the sandboxes workers are running
    programs in to them, and to their deadlines) and at server stop (everything: the workers
    have stopped by then)."""
    backend = get_backend()
    taken = list(members().filter(state="taken")) if keep_taken else []
    removed = backend.pool_clear(instance(), keep={m.container_id for m in taken})
    for member in members().exclude(pk__in=[m.pk for m in taken]):
        try:
            backend.pool_destroy(member.container_id, member.name)
        except Exception:
            log.exception("cannot destroy a warm sandbox", extra={"sandbox": member.name})
        member.delete()
    busy = {m.name for m in taken}
    if root().is_dir():
        for area in root().iterdir():
            if area.name not in busy and area.is_dir() and not area.is_symlink():  # (not the WAKE FIFO)
                unmount(area)
                shutil.rmtree(area, ignore_errors=True)
    return removed


def check_languages() -> None:
    for key in settings.SANDBOX_POOL:
        if find_language(key) is None or find_language(key).key != key:
            raise ValueError(f"SANDBOX_POOL names {key!r}, which is not a language key of executor/languages.py")
