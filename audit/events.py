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
import os
import threading
import time
from dataclasses import dataclass

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
    ip: str | None = None,
    user_agent: str | None = None,
) -> dict:
    if ip is None:
        ip = client_ip(request) if request is not None else ""
    if user_agent is None:
        user_agent = request.META.get("HTTP_USER_AGENT", "")[:512] if request is not None else ""
    event = {
        "action": action,
        "userId": user_id,
        "sessionId": session_id,
        "status": status,
        "ip": ip,
        "userAgent": user_agent,
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


# -- refused credentials, aggregated ---------------------------------------------------------
# Anyone can send a wrong key, as often as they like: one entry per refusal would let anonymous
# clients grow the audit store without bound. So per worker process, the first refusal from an
# address (for each kind of credential) in a window of SANDBOX_AUTH_FAILURE_WINDOW_S is an
# entry at once, as it always was; further ones in that window are counted and written as one
# summary entry when it closes (details.count, details.aggregated). At most MAX_ADDRESSES
# addresses are followed per window; refusals from any others share one summary (ip "*"). So a
# worker writes at most 2 * MAX_ADDRESSES + 1 such entries per window, whatever the attack; the
# counter sandbox_auth_failures_total still counts every single refusal.
MAX_ADDRESSES = 50
OTHERS = "*"


@dataclass
class _Window:
    opened: float
    count: int = 0  # refusals after the first (the first was written at once)
    path: str = ""
    method: str = ""
    user_agent: str = ""


class AuthFailureAggregator:
    def __init__(self):
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}
        self._pid: int | None = None

    def note(self, request, presented: str) -> None:
        from django.conf import settings

        from . import metrics

        metrics.auth_failure(presented)
        self._ensure_flusher()
        ip = client_ip(request)
        now = time.monotonic()
        with self._lock:
            closed = self._take_closed(now, settings.SANDBOX_AUTH_FAILURE_WINDOW_S)
            key = (ip, presented)
            window = self._windows.get(key)
            first = window is None and len(self._windows) < MAX_ADDRESSES
            if first:
                self._windows[key] = _Window(now)
            else:
                if window is None:
                    key = (OTHERS, presented)
                    window = self._windows.setdefault(key, _Window(now))
                window.count += 1
                window.path, window.method = request.path[:200], request.method
                window.user_agent = request.META.get("HTTP_USER_AGENT", "")[:512]
        self._write(closed)
        if first:
            record("auth_failure", request, status="denied",
                   details={"path": request.path, "method": request.method, "credential": presented})

    def _take_closed(self, now: float, window_s: float, everything: bool = False) -> list:
        closed = [(key, w) for key, w in self._windows.items() if everything or now - w.opened >= window_s]
        for key, _ in closed:
            del self._windows[key]
        return closed

    def _write(self, closed) -> None:
        from django.conf import settings

        for (ip, presented), window in closed:
            if window.count:
                record("auth_failure", status="denied", ip=ip, user_agent=window.user_agent,
                       details={"path": window.path, "method": window.method, "credential": presented,
                                "count": window.count, "aggregated": True, "windowS": settings.SANDBOX_AUTH_FAILURE_WINDOW_S})

    def flush(self) -> None:
        """Writes every open window's summary now (a worker that stops)."""
        with self._lock:
            closed = self._take_closed(time.monotonic(), 0, everything=True)
        self._write(closed)

    def _ensure_flusher(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid, self._windows = os.getpid(), {}
            threading.Thread(target=self._flush_loop, name="auth-failure-summaries", daemon=True).start()

    def _flush_loop(self) -> None:
        from django.conf import settings

        while True:
            window_s = settings.SANDBOX_AUTH_FAILURE_WINDOW_S
            time.sleep(min(5.0, window_s / 4))
            try:
                with self._lock:
                    closed = self._take_closed(time.monotonic(), window_s)
                self._write(closed)
            except Exception:
                _internal.exception("auth failure summaries not written")


auth_failures = AuthFailureAggregator()


def record_auth_failure(request, presented: str) -> None:
    auth_failures.note(request, presented)
