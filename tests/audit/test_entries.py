"""Every audited action writes exactly one AuditLog row (default database) with the seed's
fields, besides its JSON log line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.liveserver import Client

from .conftest import wait_for_rows


def mine(client) -> tuple[str, tuple]:
    return "userAgent = ?", (client.agent,)


def only(rows, action):
    picked = [r for r in rows if r["action"] == action]
    assert len(picked) == 1, rows
    return picked[0]


def test_upload_writes_one_entry(server, tagged):
    up = tagged.upload("notes.txt", b"hello audit")
    file_id = up["files"][0]["fileId"]
    rows = wait_for_rows(server, 1, *mine(tagged))
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["action"] == "upload" and row["status"] == "success"
    assert row["userId"] == "user-1"
    assert row["sessionId"] == up["session_id"]
    assert row["ip"] == "127.0.0.1"
    assert row["file"] == {"fileId": file_id, "filename": "notes.txt", "size": 11, "mimeType": "text/plain"}
    assert row["execution"] is None and row["error"] is None
    created = datetime.fromisoformat(row["createdAt"]).replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)
    assert row["updatedAt"] >= row["createdAt"]
    # ... and its JSON log line
    lines = [json.loads(line) for line in server.log_text().splitlines() if tagged.agent in line]
    assert [line["audit"]["action"] for line in lines] == ["upload"]
    assert lines[0]["logger"] == "sandbox.audit"


def test_batch_upload_writes_one_entry_per_file(server, tagged):
    files = [("file", ("a.csv", b"1,2\n")), ("file", ("b.json", b"{}"))]
    response = tagged.post("/upload/batch", files=files, headers={"User-Id": "user-2"})
    assert response.status_code == 200, response.text
    body = response.json()
    rows = wait_for_rows(server, 2, *mine(tagged))
    assert [r["action"] for r in rows] == ["batch_upload", "batch_upload"]
    assert {r["file"]["filename"] for r in rows} == {"a.csv", "b.json"}
    assert {r["file"]["fileId"] for r in rows} == {f["fileId"] for f in body["files"]}
    assert all(r["sessionId"] == body["session_id"] and r["userId"] == "user-2" for r in rows)


def test_exec_writes_one_entry_with_the_execution_block(server, tagged):
    result = tagged.exec("py", "print('hi')\nopen('out.txt', 'w').write('x')\nimport sys; sys.exit(3)", user_id="user-3")
    rows = wait_for_rows(server, 1, *mine(tagged))
    row = only(rows, "exec")
    assert len(rows) == 1
    assert row["status"] == "success" and row["sessionId"] == result["session_id"]
    assert row["userId"] == "user-3"
    ex = row["execution"]
    assert ex["lang"] == "py" and ex["exitCode"] == 3 and ex["filesGenerated"] == 1
    assert ex["timedOut"] is False and ex["oomKilled"] is False
    assert isinstance(ex["durationMs"], int) and ex["durationMs"] > 0
    # Accounting is on wherever these tests run (root, cgroupfs): a missing number is a bug.
    assert isinstance(ex["cpuMs"], int) and ex["cpuMs"] >= 0
    assert isinstance(ex["memoryMB"], (int, float)) and ex["memoryMB"] > 0, ex
    assert "queueMs" in row["details"]


def test_download_files_list_and_delete_each_write_one_entry(server, tagged):
    up = tagged.upload("data.bin", b"\x00" * 100)
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    assert tagged.get(f"/download/{sid}/{fid}").status_code == 200
    assert tagged.get(f"/files/{sid}").status_code == 200
    assert tagged.delete(f"/files/{sid}/{fid}").status_code == 200
    rows = wait_for_rows(server, 4, *mine(tagged))
    assert [r["action"] for r in rows] == ["upload", "download", "files_list", "delete"]
    download, listing, delete = rows[1:]
    assert download["file"] == {"fileId": fid, "filename": "data.bin", "size": 100, "mimeType": "application/octet-stream"}
    assert download["sessionId"] == sid
    assert listing["sessionId"] == sid and listing["details"] == {"count": 1} and listing["file"] is None
    assert delete["sessionId"] == sid and delete["status"] == "success"
    assert delete["file"]["filename"] == "data.bin" and delete["file"]["size"] == 100


def test_delete_entry_names_the_deleted_file_id(server, tagged):
    up = tagged.upload("gone.txt", b"bye")
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    assert tagged.delete(f"/files/{sid}/{fid}").status_code == 200
    rows = wait_for_rows(server, 2, *mine(tagged))
    assert only(rows, "delete")["file"]["fileId"] == fid


def test_auth_failure_writes_one_denied_entry_without_the_secret(server):
    agent = "audit-test/auth-failure"
    stranger = Client(server, headers={"X-API-Key": "wrong-key-0123456789", "User-Agent": agent})
    assert stranger.get("/files/AAAAAAAAAAAAAAAAAAAAA").status_code == 401
    rows = wait_for_rows(server, 1, "userAgent = ?", (agent,))
    assert len(rows) == 1
    row = rows[0]
    assert row["action"] == "auth_failure" and row["status"] == "denied"
    assert row["details"] == {"path": "/v1/files/AAAAAAAAAAAAAAAAAAAAA", "method": "GET", "credential": "x-api-key"}
    assert "wrong-key" not in json.dumps(row)


def test_refused_credentials_are_aggregated_not_one_row_each():
    """500 refusals from one address make a handful of rows, whose counts add up to 500."""
    from tests.audit.conftest import audit_rows, scrape, value
    from tests.liveserver import LiveServer

    live = LiveServer(SANDBOX_AUTH_FAILURE_WINDOW_S="2", SANDBOX_WORKERS="1").start()
    try:
        agent = "audit-test/flood"
        kinds = [{"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {}]
        session = Client(live, headers={"User-Agent": agent})
        for n in range(500):
            session.http.headers.pop("X-API-Key", None)
            session.http.headers.pop("Authorization", None)
            session.http.headers.update(kinds[n % 3])
            assert session.get("/files/AAAAAAAAAAAAAAAAAAAAA").status_code == 401
        import time

        time.sleep(5)  # the windows close and their summaries are written
        rows = [r for r in audit_rows(live, "action = ?", ("auth_failure",))]
        assert 3 <= len(rows) <= 12, len(rows)
        total = sum(r["details"].get("count", 1) for r in rows)
        assert total == 500, [r["details"] for r in rows]
        assert {r["details"]["credential"] for r in rows} == {"x-api-key", "bearer", "none"}
        assert all(r["ip"] == "127.0.0.1" for r in rows)
        samples = scrape(live)
        assert sum(value(samples, "sandbox_auth_failures_total", credential=c) for c in ("x-api-key", "bearer", "none")) == 500
    finally:
        live.stop()
