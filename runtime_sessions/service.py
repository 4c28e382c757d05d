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

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Q
from django.utils import timezone

from sandbox_project.errors import ApiError, bad_request
from storage import store
from storage.names import InvalidName, check_relative_name, user_dir

from .models import RuntimeSession

HINT = re.compile(r"^[A-Za-z0-9._:-]+$")
MAX_HINT = 128
POLL_S = 0.05


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
    give_up = time.monotonic() + settings.SANDBOX_RUNTIME_SESSION_WAIT_MS / 1000
    while True:
        held = _take(rs_id, user_id or "", hint, token, lease_s)
        if held is not None:
            break
        if time.monotonic() >= give_up:
            raise busy()
        time.sleep(POLL_S)
    try:
        yield held
    finally:
        now = timezone.now()
        RuntimeSession.objects.filter(pk=rs_id, holder=token).update(
            holder="", held_until=None, last_used_at=now,
            expires_at=now + timedelta(seconds=settings.SANDBOX_RUNTIME_SESSION_IDLE_S))


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
    except (OSError, ValueError, TypeError, IndexError):
        return {}


def _wipe(session: RuntimeSession) -> None:
    shutil.rmtree(folder(session), ignore_errors=True)


def restore_into(held: Held, data_dir: Path, owner_uid: int) -> None:
    """Copies the workspace's files into a fresh /mnt/data (before the request's own inputs,
    which replace a file of the same name), with the times the manifest says, so an untouched
    file is known again at the end without reading it."""
    source = folder(held.session) / "files"
    for name, (size, mtime_ns) in sorted(held.baseline.items()):
        origin = source / name
        target = data_dir / name
        for parent in reversed(target.relative_to(data_dir).parents[:-1]):
            directory = data_dir / parent
            if not directory.exists():
                directory.mkdir()
                os.chown(directory, owner_uid, owner_uid)
                directory.chmod(0o755)
        try:
            shutil.copyfile(origin, target)
        except FileNotFoundError:
            held.baseline.pop(name, None)
            continue
        os.chown(target, owner_uid, owner_uid)
        target.chmod(0o644)
        os.utime(target, ns=(mtime_ns, mtime_ns))


def unchanged(held: Held, name: str, size: int, mtime_ns: int) -> bool:
    return held.baseline.get(name) == (size, mtime_ns)


def save_from(held: Held, found) -> None:
    """Leaves what /mnt/data holds now (found: executor.artifacts.FoundFile, every regular
    file of it, hidden folders included) for the next execution. Files that did not change
    are not copied again; files that are gone are removed."""
    base = folder(held.session)
    files = base / "files"
    files.mkdir(parents=True, exist_ok=True, mode=0o700)
    keep: dict[str, tuple[int, int]] = {}
    for item in found:
        try:
            check_relative_name(item.name, settings.SANDBOX_MAX_OUTPUT_DEPTH)
        except InvalidName:
            continue  # a name the next execution could not be given
        stamp = (item.size, item.mtime_ns)
        keep[item.name] = stamp
        if held.baseline.get(item.name) == stamp and (files / item.name).is_file():
            continue
        target = files / item.name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = target.with_name(f".{secrets.token_hex(6)}.partial")
        with store.no_space_is("the stateful workspace"), item.open() as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.rename(partial, target)
    for name in set(held.baseline) - set(keep):
        (files / name).unlink(missing_ok=True)
    _prune_empty(files)
    (base / "manifest.json").write_text(json.dumps(keep))
    RuntimeSession.objects.filter(pk=held.session.pk).update(files=len(keep), size=sum(s for s, _ in keep.values()))


def _prune_empty(root: Path) -> None:
    for current, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if Path(current) != root:
            try:
                os.rmdir(current)
            except OSError:
                pass


def expire(now=None) -> int:
    """Removes workspaces idle past their time (cleanup_sessions); never a held one."""
    now = now or timezone.now()
    removed = 0
    for session in RuntimeSession.objects.filter(Q(holder="") | Q(held_until__lt=now), expires_at__lt=now):
        if RuntimeSession.objects.filter(Q(holder="") | Q(held_until__lt=now), pk=session.pk).delete()[0]:
            _wipe(session)
            removed += 1
    return removed
