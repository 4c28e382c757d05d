"""When the audit store cannot be written, requests still succeed at full speed, the JSON log
line still appears, and the failure is counted and logged."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest
import requests

from audit import metrics, writer
from audit.events import record
from audit.routers import audit_database
from tests.liveserver import Client, LiveServer

from .conftest import scrape, value


def test_record_survives_a_failing_write(monkeypatch, caplog):
    """In-process: the store raises; record() returns, the line is logged, the failure counted."""
    calls = []

    def broken(alias, rows):
        calls.append(len(rows))
        raise OSError("disk on fire")

    monkeypatch.setattr(writer, "write_rows", broken)
    monkeypatch.setattr(writer, "mongo_known_down", lambda alias: None)
    monkeypatch.setattr(writer, "RETRY_PAUSE_S", 0.0)
    monkeypatch.setattr(writer.writer, "_last_failure_log", 0.0)
    failures = metrics.AUDIT_WRITE_FAILURES.labels(store=writer._store_label(audit_database()))
    before = failures._value.get()
    with caplog.at_level(logging.INFO):
        # record() only queues: the broken store is met by the writer thread, not the caller
        event = record("files_list", None, user_id="u", session_id="s", details={"count": 0})
        assert writer.writer.flush(10)
    assert event["action"] == "files_list"
    assert calls == [1, 1]  # one retry on a fresh connection, then given up
    assert failures._value.get() - before == 1
    audit_lines = [r for r in caplog.records if r.name == "sandbox.audit"]
    assert len(audit_lines) == 1 and audit_lines[0].audit["sessionId"] == "s"
    errors = [r for r in caplog.records if r.name == "sandbox.audit.store" and r.levelno == logging.ERROR]
    assert errors and "disk on fire" in errors[0].error


def test_a_full_queue_drops_and_counts_instead_of_growing(monkeypatch):
    fresh = writer.AuditWriter()
    monkeypatch.setattr(writer, "MAX_PENDING", 2)
    fresh._queue = writer.queue.Queue(maxsize=2)
    fresh._pid = writer.os.getpid()  # no writer thread: nothing drains the queue
    for _ in range(5):
        fresh.submit({"action": "exec", "status": "success"})
    assert fresh.pending() == 2 and fresh.failed == 3


@pytest.fixture
def broken_table_server():
    live = LiveServer().start()
    yield live
    live.stop()


def test_live_server_with_its_audit_table_gone(broken_table_server):
    server = broken_table_server
    with sqlite3.connect(server.data_dir / "db.sqlite3") as db:
        db.execute("DROP TABLE sandbox_audit_logs")
    api = Client(server)
    up = api.upload("still-works.txt", b"data")
    result = api.exec("py", "print(40 + 2)")
    assert result["stdout"] == "42\n"
    assert api.get(f"/download/{up['session_id']}/{up['files'][0]['fileId']}").content == b"data"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and value(scrape(server), "sandbox_audit_write_failures_total", store="default") < 3:
        time.sleep(0.1)
    assert value(scrape(server), "sandbox_audit_write_failures_total", store="default") == 3
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    assert [line["audit"]["action"] for line in lines if line["logger"] == "sandbox.audit"] == ["upload", "exec", "download"]
    failures = [line for line in lines if line["logger"] == "sandbox.audit.store" and line["level"] == "ERROR"]
    assert failures and "no such table" in failures[0]["error"]
    # The audit store is reported, but an audit outage does not make the server "degraded".
    # (Each worker asks the store at most every 5 s.)
    deadline = time.monotonic() + 15
    while True:
        health = requests.get(server.url + "/health", timeout=10)
        body = health.json()
        assert health.status_code == 200 and body["status"] == "ok"
        if body["audit"]["ok"] is False or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert body["audit"]["ok"] is False and body["audit"]["store"] == "default"
    assert "no such table" in body["audit"]["error"]


def test_live_server_with_mongodb_unreachable():
    """MONGO_URI names a port where nothing listens: the server starts, serves at full speed,
    keeps no audit table in SQLite, and counts every lost entry."""
    server = LiveServer(MONGO_URI="mongodb://127.0.0.1:9/librechat").start()
    try:
        api = Client(server)
        for n in range(5):
            api.upload(f"f{n}.txt", b"x")  # each succeeds although the store is down
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and value(scrape(server), "sandbox_audit_write_failures_total", store="mongodb") < 5:
            time.sleep(0.2)
        assert value(scrape(server), "sandbox_audit_write_failures_total", store="mongodb") == 5
        assert value(scrape(server), "sandbox_uploads_total") == 5
        body = requests.get(server.url + "/health", timeout=10).json()
        assert body["status"] == "ok"
        assert body["audit"]["store"] == "mongodb" and body["audit"]["ok"] is False
        with sqlite3.connect(server.data_dir / "db.sqlite3") as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "sandbox_audit_logs" not in tables and "storage_session" in tables
        assert "audit store not migrated" in server.log_text()
    finally:
        server.stop()
