"""Stateful workspaces (SANDBOX_STATEFUL=true): what /exec does with a `runtime_session_hint`.

One workspace per (user, hint): a folder on the storage volume,

    {SANDBOX_STORAGE_PATH}/{userId}/runtime/{rt_id}/files/...   the files of /mnt/data
    {SANDBOX_STORAGE_PATH}/{userId}/runtime/{rt_id}/manifest.json   name -> size, mtime

An execution with a hint holds its workspace (one at a time: a second one waits up to
SANDBOX_RUNTIME_SESSION_WAIT_MS, then gets 409 runtime_session_busy), finds its files in
/mnt/data before it starts, and leaves what /mnt/data holds at the end for the next one. Only
regular files persist (within the usual name rules and depth), never a process, shell state or
/tmp: each execution is a fresh sandbox, as LibreChat's own prompt promises. A workspace unused
for SANDBOX_RUNTIME_SESSION_IDLE_S is gone (`cleanup_sessions` removes it; one found expired is
started afresh).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Q
from django.utils import timezone

from executor import slots
from executor.models import SlotWaiter
from sandbox_project.errors import ApiError, bad_request
from storage import store
from storage.names import InvalidName, check_relative_name, user_dir

from .models import RuntimeSession

HINT = re.compile(r"^[A-Za-z0-9._:-]+$")
MAX_HINT = 128
POLL_S = 0.05
PAGE = 4096
MAX_WAITERS = 2  # requests waiting for one busy workspace; more get 409 runtime_session_busy at once


def parse_hint(value) -> str | None:
    """A request's runtime_session_hint, checked as the official service checks it."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_request("runtime_session_hint must be a string")
    if len(value) > MAX_HINT:
        raise bad_request(f"runtime_session_hint must be at most {MAX_HINT} characters")
    if not HINT.match(value):
        raise bad_request('runtime_session_hint may only contain letters, digits, ".", "_", ":", and "-"')
    return value


def session_id(user_id: str | None, hint: str) -> str:
    return "rt_" + hashlib.sha256(f"{user_id or ''}\0{hint}".encode()).hexdigest()[:40]


def folder(session: RuntimeSession) -> Path:
    return store.root() / user_dir(session.user_id) / "runtime" / session.id


@dataclass
class Held:
    session: RuntimeSession
    status: str  # "new" or "reused"
    token: str
    baseline: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (size, mtime_ns) as restored

    def describe(self) -> dict:
        return {"runtime_session_id": self.session.id, "runtime_status": self.status}


def busy() -> ApiError:
    return ApiError(409, "runtime_session_busy", "Runtime session is busy", headers={"Retry-After": "2"})


@contextmanager
def hold(user_id: str | None, hint: str, lease_s: float):
    """Holds the (user, hint) workspace for one execution of at most lease_s."""
    rs_id = session_id(user_id, hint)
    token = secrets.token_hex(16)
    held = _take(rs_id, user_id or "", hint, token, lease_s)
    if held is None:
        held = _wait_for(rs_id, user_id or "", hint, token, lease_s)
    try:
        yield held
    finally:
        now = timezone.now()
        RuntimeSession.objects.filter(pk=rs_id, holder=token).update(
            holder="", held_until=None, last_used_at=now,
            expires_at=now + timedelta(seconds=settings.SANDBOX_RUNTIME_SESSION_IDLE_S))


def _wait_for(rs_id: str, user_id: str, hint: str, token: str, lease_s: float) -> Held:
    """Waits up to SANDBOX_RUNTIME_SESSION_WAIT_MS for a busy workspace. A waiter holds a
    worker thread, so waiters are bounded like the slot queue's (they are rows of it): at most
    MAX_WAITERS per workspace, and the queue's SANDBOX_MAX_QUEUE in all; beyond, 409 at once."""
    wait_s = settings.SANDBOX_RUNTIME_SESSION_WAIT_MS / 1000
    mark = f"rt-{rs_id[3:19]}-{token[:16]}"
    SlotWaiter.objects.create(token=mark, waiting_until=timezone.now() + timedelta(seconds=wait_s + 5))
    try:
        # Counted after registering (reserve, then verify): concurrent waiters see each other.
        now = timezone.now()
        mine = SlotWaiter.objects.filter(token__startswith=mark[:20], waiting_until__gt=now).count()
        if wait_s <= 0 or mine > MAX_WAITERS or slots.queue_depth() > settings.SANDBOX_MAX_QUEUE:
            raise busy()
        give_up = time.monotonic() + wait_s
        while time.monotonic() < give_up:
            time.sleep(POLL_S)
            held = _take(rs_id, user_id, hint, token, lease_s)
            if held is not None:
                return held
        raise busy()
    finally:
        SlotWaiter.objects.filter(token=mark).delete()


def _take(rs_id: str, user_id: str, hint: str, token: str, lease_s: float) -> Held | None:
    now = timezone.now()
    until = now + timedelta(seconds=lease_s)
    expires = now + timedelta(seconds=settings.SANDBOX_RUNTIME_SESSION_IDLE_S)
    try:
        session = RuntimeSession.objects.create(id=rs_id, user_id=user_id, hint=hint, holder=token, held_until=until,
                                                expires_at=expires)
        _wipe(session)  # a folder left by a row that cleanup removed meanwhile is not this one's
        return Held(session, "new", token)
    except IntegrityError:
        pass
    taken = RuntimeSession.objects.filter(Q(holder="") | Q(held_until__lt=now), pk=rs_id).update(holder=token, held_until=until)
    if not taken:
        return None
    session = RuntimeSession.objects.get(pk=rs_id)
    if session.expires_at < now:  # idle too long: the workspace is gone, this is a new one
        _wipe(session)
        session.files, session.size = 0, 0
        RuntimeSession.objects.filter(pk=rs_id).update(files=0, size=0, expires_at=expires)
        return Held(session, "new", token)
    return Held(session, "reused", token, _manifest(session))


def _manifest(session: RuntimeSession) -> dict[str, tuple[int, int]]:
    try:
        raw = json.loads((folder(session) / "manifest.json").read_text())
        return {name: (int(entry[0]), int(entry[1])) for name, entry in raw.items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}


def _charge(size: int) -> int:
    """What a file costs the workspace's budget: its apparent size (a copy writes all of it;
    a sparse file is charged in full), in whole tmpfs pages."""
    return -(-size // PAGE) * PAGE


def _wipe(session: RuntimeSession) -> None:
    shutil.rmtree(folder(session), ignore_errors=True)


def restore_into(held: Held, data_dir: Path, owner_uid: int, inputs=()) -> None:
    """Copies the workspace's files into a fresh /mnt/data (before the request's own inputs),
    with the times the manifest says, so an untouched file is known again at the end without
    reading it. A name that clashes with an input (the same path, a folder where the input is
    a file, a file where it needs a folder) is left out: the request's input wins, as a later
    input wins over an earlier one. Names that were one file (hard links) are one file again."""
    source = folder(held.session) / "files"
    wanted = set(inputs)
    folders_needed = {str(parent) for name in wanted for parent in Path(name).parents if str(parent) != "."}
    restored: dict[tuple[int, int], Path] = {}
    for name, (size, mtime_ns) in sorted(held.baseline.items()):
        if name in wanted or name in folders_needed or any(str(p) in wanted for p in Path(name).parents):
            held.baseline.pop(name, None)
            continue
        origin = source / name
        target = data_dir / name
        try:
            info = origin.lstat()
            for parent in reversed(target.relative_to(data_dir).parents[:-1]):
                directory = data_dir / parent
                if not directory.exists():
                    directory.mkdir()
                    os.chown(directory, owner_uid, owner_uid)
                    directory.chmod(0o755)
            first = restored.get((info.st_dev, info.st_ino))
            if first is not None:
                os.link(first, target)
                continue
            shutil.copyfile(origin, target)
        except FileNotFoundError:
            held.baseline.pop(name, None)
            continue
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ApiError(413, "payload_too_large",
                               "the stateful workspace's files do not fit in /mnt/data (SANDBOX_DISK_MB)") from None
            raise
        restored[(info.st_dev, info.st_ino)] = target
        os.chown(target, owner_uid, owner_uid)
        target.chmod(0o644)
        os.utime(target, ns=(mtime_ns, mtime_ns))


def unchanged(held: Held, name: str, size: int, mtime_ns: int) -> bool:
    return held.baseline.get(name) == (size, mtime_ns)


def save_from(held: Held, found) -> list[dict]:
    """Leaves what /mnt/data holds now (found: executor.artifacts.FoundFile, every regular
    file of it, hidden folders included) for the next execution, and returns what it could not
    keep (as artifact_truncation entries).

    The next execution gets these files back in its /mnt/data, so they are kept within the
    same disk quota (SANDBOX_DISK_MB): each file is charged its apparent size, names of one
    inode (hard links) once and kept as links; what does not fit is left out. The new tree is
    built beside the old one and swapped in, so no shape of the old tree (a file that became a
    folder) can get in the way, and nothing half-written stays: files that did not change are
    hard links into the old tree, not copies."""
    base = folder(held.session)
    files = base / "files"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for leftover in base.glob(".tree-*"):  # of a save that died half-way
        shutil.rmtree(leftover, ignore_errors=True)
    fresh = base / f".tree-{secrets.token_hex(6)}"
    fresh.mkdir(mode=0o700)
    budget = settings.SANDBOX_DISK_MB << 20
    keep: dict[str, tuple[int, int]] = {}
    left_out: list[dict] = []
    saved: dict[tuple[int, int], Path] = {}
    try:
        for item in found:
            try:
                check_relative_name(item.name, settings.SANDBOX_MAX_OUTPUT_DEPTH)
            except InvalidName:
                continue  # a name the next execution could not be given
            target = fresh / item.name
            first = saved.get(item.inode) if item.inode != (0, 0) else None
            if first is None and _charge(item.size) > budget:
                left_out.append({"name": item.name, "reason": "workspace_budget", "size": item.size})
                continue
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            stamp = (item.size, item.mtime_ns)
            if first is not None:
                os.link(first, target)
            elif held.baseline.get(item.name) == stamp and _same_file(files / item.name, item.size):
                os.link(files / item.name, target)
                budget -= _charge(item.size)
            else:
                with store.no_space_is("the stateful workspace"), item.open() as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                budget -= _charge(item.size)
            saved[item.inode] = target
            keep[item.name] = stamp
        retired = base / f".tree-{secrets.token_hex(6)}"
        if files.exists():
            os.rename(files, retired)
        os.rename(fresh, files)
        shutil.rmtree(retired, ignore_errors=True)
        (base / "manifest.json").write_text(json.dumps(keep))
    finally:
        shutil.rmtree(fresh, ignore_errors=True)  # gone already when it was swapped in
    RuntimeSession.objects.filter(pk=held.session.pk).update(files=len(keep), size=sum(s for s, _ in keep.values()))
    return left_out


def _same_file(path: Path, size: int) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def expire(now=None) -> int:
    """Removes workspaces idle past their time (cleanup_sessions); never a held one."""
    now = now or timezone.now()
    removed = 0
    for session in RuntimeSession.objects.filter(Q(holder="") | Q(held_until__lt=now), expires_at__lt=now):
        if RuntimeSession.objects.filter(Q(holder="") | Q(held_until__lt=now), pk=session.pk).delete()[0]:
            _wipe(session)
            removed += 1
    return removed
