"""`manage.py cleanup_sessions` removes what has expired and nothing else, also while an
execution runs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.liveserver import Client, LiveServer, mounts_under

from .conftest import audit_rows, scrape, value, wait_for_rows

LABEL = "org.librechat.codeinterp"


@pytest.fixture(scope="module")
def cleanup_server():
    live = LiveServer(SANDBOX_TIMEOUT_MS="60000").start()
    yield live
    live.stop()


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def expire(server: LiveServer, session_id: str, ago: timedelta) -> None:
    when = stamp(datetime.now(UTC) - ago)
    with sqlite3.connect(server.data_dir / "db.sqlite3", timeout=20) as db:
        db.execute("UPDATE storage_session SET expires_at = ? WHERE id = ?", (when, session_id))
        db.execute("UPDATE storage_storedfile SET expires_at = ? WHERE session_id = ?", (when, session_id))


def session_ids(server: LiveServer) -> set[str]:
    with sqlite3.connect(server.data_dir / "db.sqlite3", timeout=20) as db:
        return {sid for (sid,) in db.execute("SELECT id FROM storage_session")}


def session_folder(server: LiveServer, session_id: str) -> Path:
    found = list(server.storage.glob(f"*/{session_id}"))
    assert len(found) == 1, found
    return found[0]


def cleanup(server: LiveServer, *args: str, **env: str) -> str:
    done = server.manage("cleanup_sessions", *args, **env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cleanup_removes_expired_data_and_nothing_else(cleanup_server):
    server = cleanup_server
    api = Client(server)
    keep = api.upload("keep.txt", b"keep me")
    gone = api.upload("gone.txt", b"expired")
    ran = api.exec("py", "open('made.txt', 'w').write('out')")
    recent = api.upload("recent.txt", b"just expired")
    expire(server, gone["session_id"], timedelta(days=2))
    expire(server, ran["session_id"], timedelta(days=2))
    # Expired seconds ago: inside the grace period (the longest possible execution), kept.
    expire(server, recent["session_id"], timedelta(seconds=5))

    # Leftover work areas: an old unmounted exec_ folder goes, a fresh one stays.
    keep_dir = session_folder(server, keep["session_id"])
    old_area = keep_dir / "workspace" / "exec_AAAAAAAAAAAAAAAAAAAAA"
    new_area = keep_dir / "workspace" / "exec_BBBBBBBBBBBBBBBBBBBBB"
    for area in (old_area, new_area):
        (area / "data").mkdir(parents=True)
        (area / "data" / "x").write_text("x")
    old = time.time() - 86400
    os.utime(old_area, (old, old))

    # Audit entries: one from 100 days ago goes with a 30-day TTL, recent ones stay.
    wait_for_rows(server, 5, "1=1", settle_s=0.1)
    with sqlite3.connect(server.data_dir / "db.sqlite3", timeout=20) as db:
        db.execute(
            "INSERT INTO sandbox_audit_logs (id, action, userId, sessionId, status, ip, userAgent, details, execution,"
            " file, error, createdAt, updatedAt) VALUES ('000000000000000000000001', 'upload', 'old', 'old', 'success',"
            " '', '', '{}', NULL, NULL, NULL, ?, ?)",
            (stamp(datetime.now(UTC) - timedelta(days=100)),) * 2,
        )
    audit_before = len(audit_rows(server))

    # A container of a dead worker: our label, deadline long past.
    container = subprocess.run(
        ["docker", "run", "-d", "--network", "none", "--label", LABEL, "--label", f"{LABEL}.deadline=1",
         "librechat/sandbox-executor:latest", "sleep", "600"], capture_output=True, text=True, check=True,
    ).stdout.strip()

    try:
        preview = cleanup(server, "--dry-run", SANDBOX_AUDIT_TTL_DAYS="30")
        assert "would remove: 2 expired sessions" in preview
        assert gone["session_id"] in session_ids(server) and old_area.exists()

        report = cleanup(server, SANDBOX_AUDIT_TTL_DAYS="30")
        assert "removed: 2 expired sessions, 2 files" in report
        assert "1 expired audit entries" in report
        assert f"removed session {gone['session_id']}" in report and f"removed session {ran['session_id']}" in report

        remaining = session_ids(server)
        assert gone["session_id"] not in remaining and ran["session_id"] not in remaining
        assert {keep["session_id"], recent["session_id"]} <= remaining
        assert not list(server.storage.glob(f"*/{gone['session_id']}"))
        assert not list(server.storage.glob(f"*/{ran['session_id']}"))
        assert not old_area.exists() and (new_area / "data" / "x").exists()
        assert api.get(f"/download/{keep['session_id']}/{keep['files'][0]['fileId']}").content == b"keep me"
        assert api.get(f"/download/{gone['session_id']}/{gone['files'][0]['fileId']}").status_code == 404
        after = audit_rows(server)
        assert not [r for r in after if r["userId"] == "old"]
        assert len(after) >= audit_before - 1  # only the expired entry went (new ones may have come)
        state = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"id={container}"],
                               capture_output=True, text=True).stdout.strip()
        assert state == ""

        again = cleanup(server, SANDBOX_AUDIT_TTL_DAYS="30")
        assert "removed: 0 expired sessions, 0 files (0 bytes), 0 stale work areas" in again
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def test_audit_entries_are_kept_without_a_ttl(cleanup_server):
    server = cleanup_server
    with sqlite3.connect(server.data_dir / "db.sqlite3", timeout=20) as db:
        db.execute(
            "INSERT INTO sandbox_audit_logs (id, action, userId, sessionId, status, ip, userAgent, details, execution,"
            " file, error, createdAt, updatedAt) VALUES ('000000000000000000000002', 'exec', 'ancient', 's', 'success',"
            " '', '', '{}', NULL, NULL, NULL, '2001-01-01 00:00:00', '2001-01-01 00:00:00')"
        )
    assert "0 expired audit entries" in cleanup(server, SANDBOX_AUDIT_TTL_DAYS="0")
    assert [r["userId"] for r in audit_rows(server, "userId = 'ancient'")] == ["ancient"]


def test_cleanup_while_an_execution_runs(cleanup_server):
    server = cleanup_server
    api = Client(server)
    source = api.upload("input.txt", b"input data")
    doomed = api.upload("doomed.txt", b"old")
    expire(server, doomed["session_id"], timedelta(days=3))
    ref = {"id": source["files"][0]["fileId"], "session_id": source["session_id"], "name": "input.txt"}
    # The program waits for the test's word (a file the test drops into its /mnt/data once
    # cleanup is done), not for a time: cleanup may take long on a loaded machine.
    code = (
        "import os, time\n"
        "give_up = time.monotonic() + 50\n"
        "while not os.path.exists('/mnt/data/go') and time.monotonic() < give_up:\n"
        "    time.sleep(0.05)\n"
        "os.unlink('/mnt/data/go')\n"
        "data = open('/mnt/data/input.txt').read()\n"
        "open('result.txt', 'w').write(data.upper())\n"
        "print('done')\n"
    )
    outcome: dict = {}

    def run():
        response = api.post("/exec", json={"lang": "py", "code": code, "files": [ref]})
        outcome.update(response.json(), http_status=response.status_code)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        # Wait until the run holds its slot, then clean up under its feet.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and runner.is_alive() and value(scrape(server), "sandbox_slots_in_use") < 1:
            time.sleep(0.05)
        assert value(scrape(server), "sandbox_slots_in_use") == 1, (outcome, server.log_text()[-3000:])
        time.sleep(0.5)
        areas = mounted_areas(server)  # a cold run's tmpfs (a warm sandbox's lives elsewhere)
        report = cleanup(server)
        assert "removed: 1 expired sessions" in report and "0 stale work areas" in report
        assert set(areas) <= set(mounted_areas(server)), "cleanup must not touch a running execution's work area"
        assert runner.is_alive(), "the execution should still be running"
    finally:
        for area in running_data_dirs(server):
            go = area / "go"
            go.write_text("")
            go.chmod(0o666)
        runner.join(60)
    assert outcome.get("http_status") == 200 and outcome.get("stdout") == "done\n", outcome
    made = [f for f in outcome["files"] if f["name"] == "result.txt"]
    assert made and api.get(f"/download/{outcome['session_id']}/{made[0]['id']}").content == b"INPUT DATA"
    assert doomed["session_id"] not in session_ids(server)


def running_data_dirs(server: LiveServer) -> list[Path]:
    """/mnt/data of every sandbox of this server that holds input.txt (cold or warm)."""
    points = map(Path, mounts_under(server.data_dir.resolve()))
    return [point / "data" for point in points if (point / "data" / "input.txt").exists()]


def mounted_areas(server: LiveServer) -> list[str]:
    return [point for point in mounts_under(server.storage.resolve()) if "/workspace/exec_" in point]
