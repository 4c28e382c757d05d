"""What the storage routes do (the views only call these)."""

from __future__ import annotations

import re

from django.conf import settings

from audit.events import record
from sandbox_project.errors import ApiError, bad_request, not_found

from . import store
from .ids import is_valid_id
from .models import StoredFile
from .names import InvalidName, check_relative_name, extension_of

KINDS = ("user", "agent", "skill")
_VERSION = re.compile(r"^\d{1,9}$")


def _field(data, name: str) -> str:
    value = data.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def upload(request, caller, batch: bool) -> tuple[dict, int]:
    """POST /upload (one file part `file`) and POST /upload/batch (many)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise bad_request("Invalid content type. Must be multipart/form-data.", "Invalid content type")
    try:
        return _store_uploads(request, caller, batch, request.data, request.FILES.getlist("file"))
    finally:
        # Temporary files of parts that were not moved into place go now, not after the
        # response is sent: a rejected request leaves nothing behind.
        for _, parts in request.FILES.lists():
            for part in parts:
                part.close()


def _store_uploads(request, caller, batch, data, files) -> tuple[dict, int]:
    kind = _field(data, "kind") or "user"
    if kind not in KINDS:
        raise bad_request("kind must be one of: skill, agent, user")
    version = _field(data, "version")
    if version and not _VERSION.match(version):
        raise bad_request("version must be a non-negative integer")
    if not files:
        raise bad_request("The request has no file part named 'file'", "No file uploaded")
    if not batch and len(files) > 1:
        raise bad_request("POST /upload takes one file; use /upload/batch for several")
    user_id = caller.user_id or _field(request.headers, "User-Id") or _field(request.headers, "X-User-Id") or None
    read_only = _field(data, "read_only").lower() in ("true", "1", "yes")

    names, errors = [], []
    for uploaded in files:
        name = getattr(uploaded, "client_name", None) or uploaded.name
        try:
            names.append(check_relative_name(name))
        except InvalidName as error:
            names.append(None)
            errors.append(f"{str(name)[:300]!r}: {error}")
    if not batch and errors:
        raise bad_request(f"Invalid file name {errors[0]}", "Invalid file name")

    session = store.new_session(
        "batch" if batch else "upload", user_id, kind=kind, resource_id=_field(data, "id")[:255],
        version=version, entity_id=_field(data, "entity_id")[:255],
    )
    results = []
    for uploaded, name in zip(files, names):
        if name is None:
            # the filename exactly as the part carried it (LibreChat matches answers by it)
            sent = getattr(uploaded, "client_name", None) or uploaded.name
            results.append({"status": "error", "filename": str(sent)[:300], "error": "invalid file name"})
            continue
        stored = store.save_upload(session, uploaded, name, read_only=read_only and batch)
        results.append({"status": "success", "filename": name, "fileId": stored.id, "size": stored.size})
        record("batch_upload" if batch else "upload", request, user_id=user_id, session_id=session.id,
               details={"kind": kind, "readOnly": stored.read_only},
               file={"fileId": stored.id, "filename": name, "size": stored.size, "mimeType": stored.content_type})
    ok = [r for r in results if r["status"] == "success"]
    if not ok:
        store.delete_session(session)
    if not batch:
        body = {"message": "success", "session_id": session.id, "storage_session_id": session.id,
                "files": [{"fileId": r["fileId"], "filename": r["filename"], "size": r["size"]} for r in ok]}
        return body, 200
    message = "success" if len(ok) == len(results) else ("partial_success" if ok else "error")
    body = {"message": message, "storage_session_id": session.id, "session_id": session.id, "files": results,
            "succeeded": len(ok), "failed": len(results) - len(ok)}
    if message == "error":  # a 400 says what went wrong in "error", as every other 4xx does
        body["error"] = "no file of the batch could be stored"
    return body, 400 if message == "error" else 200


def check_ids(session_id: str, file_id: str | None = None) -> None:
    if not is_valid_id(session_id) or (file_id is not None and not is_valid_id(file_id)):
        raise bad_request("session and file ids are 21 characters of A-Z a-z 0-9 _ -", "Bad request")


def find_for(caller, session_id: str, file_id: str) -> StoredFile:
    """A live file by id; the session in the URL may be stale or the exec session (spec §E1)."""
    check_ids(session_id, file_id)
    stored = store.find_file(file_id)
    if stored is None:
        raise not_found()
    if not store.may_access(caller, stored.session):
        raise ApiError(403, "Unauthorized", "This file belongs to another user")
    return stored


def object_name(stored: StoredFile, session_id: str | None = None) -> str:
    return f"{session_id or stored.session_id}/{stored.id}{extension_of(stored.name)}"


def iso(dt) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def describe(stored: StoredFile) -> dict:
    """GET /sessions/{sid}/objects/{fid}: the metadata LibreChat's freshness check reads."""
    return {
        "name": object_name(stored),
        "id": stored.id,
        "storage_session_id": stored.session_id,
        "session_id": stored.session_id,
        "originalFilename": stored.name,
        "size": stored.size,
        "lastModified": iso(stored.created_at),
        "etag": stored.sha256[:32],
        "contentType": stored.content_type,
        "readOnly": stored.read_only,
    }


def list_session(caller, session_id: str, detail: str) -> list:
    """GET /files/{sid}?detail=simple|summary|full|normalized (spec §E5)."""
    check_ids(session_id)
    session = store.find_session(session_id)
    if session is None or not store.may_access(caller, session):
        return []
    files = list(store.live_files().filter(session=session))
    if detail not in ("summary", "full", "normalized"):
        return [object_name(f) for f in files]
    items = []
    for f in files:
        item = {"name": object_name(f), "id": f.id, "storage_session_id": f.session_id, "session_id": f.session_id,
                "size": f.size, "lastModified": iso(f.created_at), "etag": f.sha256[:32]}
        if detail == "full":
            item.update(contentType=f.content_type, versionId=f.sha256[:16],
                        metadata={"content-type": f.content_type, "original-filename": f.name})
        if detail == "normalized":
            item.update(name=f.name, contentType=f.content_type, read_only=f.read_only)
        items.append(item)
    return items


def delete(caller, session_id: str, file_id: str, request=None) -> dict:
    stored = find_for(caller, session_id, file_id)
    if not store.may_delete(caller, stored.session):
        raise ApiError(403, "Unauthorized", "Only the user who stored this file may delete it")
    # Read everything the audit entry needs first: deleting a row resets its id to None.
    event = {"user_id": getattr(caller, "user_id", None) or stored.session.user_id or None, "session_id": stored.session_id,
             "file": {"fileId": stored.id, "filename": stored.name, "size": stored.size, "mimeType": stored.content_type}}
    store.delete_file(stored)
    record("delete", request, **event)
    return {"message": "File deleted successfully", "session_id": session_id, "fileId": file_id}
