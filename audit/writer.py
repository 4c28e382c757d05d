"""Stores audit events in the audit database without ever holding up a request.

record() hands each event to a queue; one background thread per process writes them in
batches (bulk insert). When the store is slow or down, requests do not notice: a failed
batch is retried once on a fresh connection, then counted (sandbox_audit_write_failures)
and logged, and the JSON log line that record() always writes remains the record. When the
queue is full (the store has been down for a while under load), new events are counted as
failures the same way instead of piling up in memory.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time

from django.db import close_old_connections, connections

from sandbox_project.probes import BackgroundProbe

from . import metrics

log = logging.getLogger("sandbox.audit.store")
MAX_PENDING = 10_000
BATCH = 200
RETRY_PAUSE_S = 0.2
FAILURE_LOG_EVERY_S = 10.0


def _store_label(alias: str) -> str:
    return "mongodb" if connections[alias].vendor == "mongodb" else "default"


def to_row(event: dict):
    from .models import ACTIONS, STATUSES, AuditLog

    def cut(value, size):
        return None if value is None else str(value)[:size]

    return AuditLog(
        action=event["action"] if event["action"] in ACTIONS else str(event["action"])[:16],
        user_id=cut(event.get("userId"), 255),
        session_id=cut(event.get("sessionId"), 255),
        status=event["status"] if event["status"] in STATUSES else "error",
        ip=cut(event.get("ip"), 64) or "",
        user_agent=cut(event.get("userAgent"), 512) or "",
        details=event.get("details") or {},
        execution=event.get("execution"),
        file=event.get("file"),
        error=event.get("error"),
        created_at=event["createdAt"],
    )


class StoreDown(RuntimeError):
    """The driver's monitor already knows the store is unreachable: fail without waiting."""


def describe(error: BaseException) -> str:
    # Django wraps driver errors in a DatabaseError whose own text may be empty.
    cause = error if str(error) or error.__cause__ is None else error.__cause__
    return f"{type(cause).__name__}: {cause}"[:300]


def mongo_client(alias: str):
    """The alias's MongoClient (one pool per process), made without waiting for the server:
    its monitor threads find the servers in the background."""
    connection = connections[alias]
    return connection.get_new_connection(connection.get_connection_params())


def mongo_known_down(alias: str) -> None:
    """Raises StoreDown while MongoDB's monitor (which re-checks every few seconds by
    itself) has found no writable server, so an outage costs the writer no time per batch."""
    description = mongo_client(alias).topology_description
    if description.has_writable_server():
        return
    errors = [sd.error for sd in description.server_descriptions().values() if sd.error]
    if errors:
        raise StoreDown(describe(errors[0]))


def write_rows(alias: str, rows: list) -> None:
    """The one place rows reach the database (tests replace it to simulate an outage)."""
    from .models import AuditLog

    AuditLog.objects.using(alias).bulk_create(rows)


class AuditWriter:
    def __init__(self):
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_PENDING)
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._idle = threading.Event()
        self._idle.set()
        self.failed = 0  # in this process, for /health
        self.written = 0
        self.last_error = ""
        self._last_failure_log = 0.0
        self._unlogged_failures = 0

    # -- the request side ------------------------------------------------------------------
    def submit(self, event: dict) -> None:
        self._ensure_thread()
        self._idle.clear()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._failed(1, "the audit write queue is full (the store is not keeping up)")

    def pending(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until everything submitted so far was written or given up on."""
        if self._pid != os.getpid():
            return self._queue.empty()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            self._idle.wait(min(0.05, max(0.0, deadline - time.monotonic())))
        return self._queue.unfinished_tasks == 0

    # -- the writer thread -----------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._pid is not None:  # forked: the parent's queue and thread are not ours
                self._queue = queue.Queue(maxsize=MAX_PENDING)
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="audit-writer", daemon=True).start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception:  # never let the thread die
                log.exception("audit writer failed")
            finally:
                for _ in batch:
                    self._queue.task_done()
                if self._queue.unfinished_tasks == 0:
                    self._idle.set()

    def _write(self, batch: list[dict]) -> None:
        from .routers import audit_database

        alias = audit_database()
        rows = [to_row(event) for event in batch]
        for attempt in (1, 2):
            try:
                if _store_label(alias) == "mongodb":
                    mongo_known_down(alias)
                write_rows(alias, rows)
                self.written += len(rows)
                return
            except Exception as error:
                # A broken connection is replaced on the next try; a down store fails twice.
                try:
                    connections[alias].close()
                except Exception:
                    pass
                if attempt == 2 or isinstance(error, StoreDown):
                    self._failed(len(rows), describe(error), _store_label(alias))
                    return
                time.sleep(RETRY_PAUSE_S)
            finally:
                close_old_connections()

    def _failed(self, count: int, reason: str, store: str | None = None) -> None:
        self.failed += count
        self.last_error = reason
        try:
            if store is None:
                from .routers import audit_database

                store = _store_label(audit_database())
            metrics.audit_write_failed(store, count)
        except Exception:
            pass
        # One line per FAILURE_LOG_EVERY_S at most: an outage under load must not flood the log.
        self._unlogged_failures += count
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_EVERY_S:
            log.error("audit store write failed; the events are in the audit log lines only",
                      extra={"error": reason, "events": self._unlogged_failures, "store": store})
            self._last_failure_log = now
            self._unlogged_failures = 0


writer = AuditWriter()
atexit.register(writer.flush, 5.0)


def mongo_answers(alias: str) -> None:
    """Raises unless MongoDB takes writes. Uses what the driver's monitor already knows, and
    asks the server (for half a second at most) only when it knows nothing yet."""
    import pymongo

    mongo_known_down(alias)
    client = mongo_client(alias)
    if not client.topology_description.has_writable_server():
        with pymongo.timeout(0.5):
            client.admin.command("ping")


def _ask_store() -> dict:
    from .models import AuditLog
    from .routers import audit_database

    alias = audit_database()
    answer = {"store": _store_label(alias)}
    try:
        if answer["store"] == "mongodb":
            mongo_answers(alias)
        else:
            AuditLog.objects.using(alias).exists()  # the table is there and readable
        answer["ok"] = True
    except Exception as error:
        answer.update(ok=False, error=describe(error)[:200])
    finally:
        if answer["store"] != "mongodb":
            connections[alias].close()  # the probe thread's own connection
    return answer


# Asked at most every 5 s per process; /health waits for it at most 0.25 s (a store that is
# slow to answer is reported as not answering; the check goes on and fills in the answer).
_store_probe = BackgroundProbe(_ask_store, refresh_after_s=5.0, trust_for_s=10.0, wait_s=0.25)


def store_health() -> dict:
    """Whether the audit store answers (for /health), and this process's writer counts."""
    from .routers import audit_database

    body = {"store": _store_label(audit_database()), **_store_probe(), "pending": writer.pending(), "failed": writer.failed}
    if writer.last_error:
        body["last_error"] = writer.last_error
    return body
