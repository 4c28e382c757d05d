"""Files on disk and their rows: the seed's layout,

    {SANDBOX_STORAGE_PATH}/{userId}/{sessionId}/uploads/{fileId}{.ext}   uploaded files
    {SANDBOX_STORAGE_PATH}/{userId}/{sessionId}/outputs/{fileId}{.ext}   files an execution made
    {SANDBOX_STORAGE_PATH}/{userId}/{sessionId}/workspace/exec_*         /mnt/data while a run runs

Bytes are written under a temporary name and renamed into place only when complete, so a
failed request never leaves a partial file that a row points to.
"""

from __future__ import annotations

import errno
import mimetypes
import os
import shutil
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from sandbox_project.errors import ApiError

from .ids import new_id
from .models import Session, StoredFile
from .names import extension_of, user_dir


class StorageFull(ApiError):
    """The storage volume has no room: a 507 that says so; the caller removes what it began."""

    def __init__(self, what: str):
        super().__init__(507, "insufficient_storage", f"The server's file storage is full: {what} could not be stored. "
                         "Nothing was kept; retry once space is freed.")


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def no_space_is(what: str):
    """Turns a full disk into StorageFull; any other OSError stays what it is."""
    try:
        yield
    except OSError as error:
        if error.errno in NO_SPACE:
            raise StorageFull(what) from None
        raise


def root() -> Path:
    return settings.SANDBOX_STORAGE_PATH


def expiry():
    return timezone.now() + timedelta(hours=settings.SANDBOX_FILE_TTL_HOURS)


def content_type_for(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def session_dir(session: Session) -> Path:
    return root() / user_dir(session.user_id) / session.id


def new_session(origin: str, user_id: str | None, **fields) -> Session:
    return Session.objects.create(id=new_id(), origin=origin, user_id=user_id or "", expires_at=expiry(), **fields)


def _place(session: Session, folder: str, file_id: str, name: str) -> Path:
    target = session_dir(session) / folder / f"{file_id}{extension_of(name)}"
    with no_space_is("a folder"):
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return target


def _record(session, file_id, name, target, size, sha256, **fields) -> StoredFile:
    return StoredFile.objects.create(
        id=file_id,
        session=session,
        name=name,
        path=str(target.relative_to(root())),
        size=size,
        content_type=content_type_for(name),
        sha256=sha256,
        expires_at=session.expires_at,
        **fields,
    )


def save_upload(session: Session, uploaded, name: str, read_only: bool = False) -> StoredFile:
    """Moves a streamed upload (a temporary file on the same volume) into place."""
    file_id = new_id()
    target = _place(session, "uploads", file_id, name)
    os.rename(uploaded.temporary_file_path(), target)
    try:
        with transaction.atomic():
            return _record(session, file_id, name, target, uploaded.size, uploaded.sha256, read_only=read_only)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def save_output(session: Session, open_source, name: str, size: int, sha256: str, modified_from=None) -> StoredFile:
    """Copies a file an execution produced into storage (temporary name, then rename).
    `open_source()` opens it safely (executor.artifacts.open_beneath)."""
    file_id = new_id()
    target = _place(session, "outputs", file_id, name)
    partial = target.with_name(f".{file_id}.partial")
    try:
        with no_space_is(f"the output {name!r}"), open_source() as src, _private_file(partial) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.rename(partial, target)
        return _record(session, file_id, name, target, size, sha256, modified_from=modified_from)
    except BaseException:
        partial.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        raise


def save_output_link(session: Session, same: StoredFile, name: str, modified_from=None) -> StoredFile:
    """Another name for bytes this execution already stored (a hard link in /mnt/data): a
    hard link in storage too, so the bytes take room on the disk once."""
    file_id = new_id()
    target = _place(session, "outputs", file_id, name)
    try:
        with no_space_is(f"the output {name!r}"):
            os.link(absolute_path(same), target)
        return _record(session, file_id, name, target, same.size, same.sha256, modified_from=modified_from)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _private_file(path: Path):
    """A new file only the server's user can read (0600, whatever the umask)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def live_files():
    return StoredFile.objects.select_related("session").filter(expires_at__gt=timezone.now())


def find_file(file_id: str) -> StoredFile | None:
    """A live file by its id (ids are globally unique; the session is only a hint)."""
    return live_files().filter(pk=file_id).first()


def find_session(session_id: str) -> Session | None:
    return Session.objects.filter(pk=session_id, expires_at__gt=timezone.now()).first()


def absolute_path(stored: StoredFile) -> Path:
    return root() / stored.path


def delete_file(stored: StoredFile) -> None:
    path = absolute_path(stored)
    stored.delete()
    path.unlink(missing_ok=True)


def delete_session(session: Session) -> None:
    folder = session_dir(session)
    session.delete()
    shutil.rmtree(folder, ignore_errors=True)


def _speaks_for_everyone(caller) -> bool:
    """A shared API key or open mode belongs to the LibreChat server itself, which speaks for
    all of its users (and legacy downloads carry no user at all). A verified JWT names one user."""
    return getattr(caller, "method", None) != "jwt"


def may_access(caller, session: Session) -> bool:
    """Whether a caller may read or use a session's files: a verified user reaches their own
    files and files shared by kind (agent, skill); files stored without a user belong to no
    verified user."""
    if _speaks_for_everyone(caller):
        return True
    return session.kind in ("agent", "skill") or (bool(session.user_id) and session.user_id == caller.user_id)


def may_delete(caller, session: Session) -> bool:
    """Deleting takes owning: a shared agent or skill file is read by every user of the agent,
    but deleted only by whoever uploaded it."""
    if _speaks_for_everyone(caller):
        return True
    return bool(session.user_id) and session.user_id == caller.user_id
