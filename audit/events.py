"""The audit events every view records.

Each event is, in this order: one JSON log line (logger "sandbox.audit", always, written
before anything else can fail), the Prometheus counters (audit.metrics), and one AuditLog
entry handed to the background writer (audit.writer), which stores it in MongoDB or the
default database without making the request wait. None of the three can fail a request.

Field names follow the seed's audit schema (action, userId, sessionId, status, ip, userAgent,
details, execution, file, error, createdAt). Secrets never enter an event: an auth failure
records which kind of credential was presented, never its value.
"""

from __future__ import annotations

import logging

from django.utils import timezone

log = logging.getLogger("sandbox.audit")
_internal = logging.getLogger("sandbox.audit.store")


def client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "")


def record(
    action: str,
    request=None,
    *,
    status: str = "success",
    user_id: str | None = None,
    session_id: str | None = None,
    details: dict | None = None,
    execution: dict | None = None,
    file: dict | None = None,
    error: str | None = None,
) -> dict:
    event = {
        "action": action,
        "userId": user_id,
        "sessionId": session_id,
        "status": status,
        "ip": client_ip(request) if request is not None else "",
        "userAgent": request.META.get("HTTP_USER_AGENT", "")[:512] if request is not None else "",
        "details": details or {},
        "execution": execution,
        "file": file,
        "error": error,
    }
    log.info("audit", extra={"audit": event})
    event["createdAt"] = timezone.now()
    try:
        from . import metrics

        metrics.observe(event)
    except Exception:
        _internal.exception("audit metrics failed")
    try:
        from .writer import writer

        writer.submit(event)
    except Exception:
        _internal.exception("audit event not queued for the store")
    return event


def record_auth_failure(request, presented: str) -> None:
    record(
        "auth_failure",
        request,
        status="denied",
        details={"path": request.path, "method": request.method, "credential": presented},
    )
