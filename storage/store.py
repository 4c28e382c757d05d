"""Stored files and their rows, in the seed's layout,

    {userId}/{sessionId}/uploads/{fileId}{.ext}   uploaded files
    {userId}/{sessionId}/outputs/{fileId}{.ext}   files an execution made

in the configured store (storage/backends.py: local disk under SANDBOX_STORAGE_PATH, or an
S3-compatible bucket). Work areas are always local, whatever the store:

    {SANDBOX_STORAGE_PATH}/{userId}/{sessionId}/workspace/exec_*         /mnt/data while a run runs

Bytes are complete in the store before a row points at them, so a failed request never
leaves a row that points at a partial file.
"""

from __future__ import annotations

import mimetypes
import shutil
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .backends import NO_SPACE, StorageFull, StorageUnavailable, current, no_space_is  # noqa: F401 (re-exported)
from .ids import new_id
from .models import Session, StoredFile
from .names import extension_of, user_dir


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


def _key(session: Session, folder: str, file_id: str, name: str) -> str:
    return f"{user_dir(session.user_id)}/{session.id}/{folder}/{file_id}{extension_of(name)}"


def _record(session, file_id, name, key, size, sha256, **fields) -> StoredFile:
    return StoredFile.objects.create(
        id=file_id,
        session=session,
        name=name,
        path=key,
        size=size,
        content_type=content_type_for(name),
        sha256=sha256,
        expires_at=session.expires_at,
        **fields,
    )


def _remove_object(key: str) -> None:
    """Removes a half-made object after a failure; a store that is down keeps it (the
    session's prefix goes with the session, cleanup_sessions retries)."""
    try:
        current().delete(key)
    except (StorageUnavailable, OSError):
        pass


def save_upload(session: Session, uploaded, name: str, read_only: bool = False) -> StoredFile:
    """Stores a streamed upload (a complete temporary file on the local volume, hashed)."""
    file_id = new_id()
    key = _key(session, "uploads", file_id, name)
    current().save_upload(key, uploaded.temporary_file_path(), uploaded.size)
    try:
        with transaction.atomic():
            return _record(session, file_id, name, key, uploaded.size, uploaded.sha256, read_only=read_only)
    except BaseException:
        _remove_object(key)
        raise


def save_output(session: Session, open_source, name: str, size: int, sha256: str, modified_from=None) -> StoredFile:
    """Copies a file an execution produced into the store, complete before its row exists.
    `open_source()` opens it safely (executor.artifacts.open_beneath)."""
    file_id = new_id()
    key = _key(session, "outputs", file_id, name)
    try:
        with open_source() as src:
            current().save_stream(key, src, f"the output {name!r}")
        return _record(session, file_id, name, key, size, sha256, modified_from=modified_from)
    except BaseException:
        _remove_object(key)
        raise


def save_output_link(session: Session, same: StoredFile, name: str, modified_from=None) -> StoredFile:
    """Another name for bytes this execution already stored (a hard link in /mnt/data): the
    bytes take room in the store once (a hard link on disk, the same object in S3)."""
    file_id = new_id()
    key = _key(session, "outputs", file_id, name)
    stored_at = current().save_link(same.path, key, f"the output {name!r}")
    try:
        return _record(session, file_id, name, stored_at, same.size, same.sha256, modified_from=modified_from)
    except BaseException:
        if stored_at != same.path:
            _remove_object(stored_at)
        raise


def live_files():
    return StoredFile.objects.select_related("session").filter(expires_at__gt=timezone.now())


def find_file(file_id: str) -> StoredFile | None:
    """A live file by its id (ids are globally unique; the session is only a hint)."""
    return live_files().filter(pk=file_id).first()


def find_session(session_id: str) -> Session | None:
    return Session.objects.filter(pk=session_id, expires_at__gt=timezone.now()).first()


def absolute_path(stored: StoredFile) -> Path:
    """The local path of a stored file's bytes: local disk only (an object in S3 has none;
    use open_file() or copy_into(), which work with either store)."""
    backend = current()
    if not hasattr(backend, "path"):
        raise RuntimeError("files live in the object store (SANDBOX_STORAGE_BACKEND=s3): there is no local path")
    return backend.path(stored.path)


def open_file(stored: StoredFile):
    """A readable stream of a stored file's bytes; FileNotFoundError when they are gone."""
    return current().open(stored.path)


def copy_into(stored: StoredFile, target: Path) -> None:
    """Streams a stored file into a new local file (an input in a work area)."""
    current().copy_to(stored.path, target)


def delete_file(stored: StoredFile) -> None:
    key = stored.path
    store = current()
    stored.delete()
    if not store.links_share_key or not StoredFile.objects.filter(path=key).exists():
        store.delete(key)


def delete_session(session: Session) -> None:
    """The rows, the objects under the session's prefix, and its local folder (work areas)."""
    prefix = f"{user_dir(session.user_id)}/{session.id}/"
    folder = session_dir(session)
    session.delete()
    current().delete_prefix(prefix)
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
