"""GET /metrics: Prometheus text that the official parser reads, summed over every gunicorn
worker, counting a known sequence of requests exactly."""

from __future__ import annotations

import threading
import time

import requests

from tests.liveserver import Client

from .conftest import scrape, value


def delta(after: dict, before: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_count_a_known_sequence(server, api):
    before = scrape(server)
    up = api.upload("m.txt", b"x" * 1000)
    batch = api.post("/upload/batch", files=[("file", ("a.txt", b"a" * 10)), ("file", ("b.txt", b"b" * 20))])
    assert batch.status_code == 200
    ok = api.exec("py", "print(1)")
    api.exec("py", "import sys; sys.exit(2)")
    api.exec("bash", "echo hi")
    slow = api.exec("py", "while True: pass", timeout=1000)
    assert slow["run"]["timed_out"]
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    for _ in range(3):
        assert api.get(f"/download/{sid}/{fid}").status_code == 200
    stranger = Client(server, headers={"X-API-Key": "nope"})
    for _ in range(2):
        assert stranger.get(f"/files/{sid}").status_code == 401
    assert Client(server, headers={}).get(f"/files/{sid}").status_code == 401
    # A request that fails before anything is stored is not an upload.
    assert ok["stdout"] == "1\n"

    after = scrape(server)
    assert delta(after, before, "sandbox_uploads_total") == 3
    assert delta(after, before, "sandbox_upload_bytes_total") == 1030
    assert delta(after, before, "sandbox_downloads_total") == 3
    assert delta(after, before, "sandbox_download_bytes_total") == 3000
    assert delta(after, before, "sandbox_executions_total", language="py", outcome="ok") == 1
    assert delta(after, before, "sandbox_executions_total", language="py", outcome="error") == 1
    assert delta(after, before, "sandbox_executions_total", language="py", outcome="timeout") == 1
    assert delta(after, before, "sandbox_executions_total", language="bash", outcome="ok") == 1
    assert delta(after, before, "sandbox_execution_duration_seconds_count", language="py") == 3
    assert delta(after, before, "sandbox_execution_duration_seconds_sum", language="py") >= 1.0  # the timeout
    assert delta(after, before, "sandbox_queue_wait_seconds_count") == 4
    assert delta(after, before, "sandbox_auth_failures_total", credential="x-api-key") == 2
    assert delta(after, before, "sandbox_auth_failures_total", credential="none") == 1
    assert delta(after, before, "sandbox_audit_events_total", action="exec", status="success") == 4
    assert delta(after, before, "sandbox_audit_events_total", action="batch_upload", status="success") == 2
    assert value(after, "sandbox_audit_write_failures_total", store="default") == 0
    # the histogram is cumulative and ends in +Inf
    assert value(after, "sandbox_execution_duration_seconds_bucket", language="py", le="+Inf") == value(
        after, "sandbox_execution_duration_seconds_count", language="py")


def test_metrics_sum_over_every_worker(server, api):
    """Many requests land on both workers; the scrape (on either) adds them all up."""
    assert len(server.worker_pids()) >= 2
    before = scrape(server)
    stranger = Client(server, headers={"X-API-Key": "nope"})
    for _ in range(40):
        stranger.http.close()  # a new connection each time: the workers take turns
        assert stranger.get("/files/AAAAAAAAAAAAAAAAAAAAA").status_code == 401
    counts = set()
    for _ in range(6):
        requests.get(server.url + "/health", timeout=10)
        counts.add(delta(scrape(server), before, "sandbox_auth_failures_total", credential="x-api-key"))
    assert counts == {40}


def test_slots_in_use_while_an_execution_runs(server, api):
    assert value(scrape(server), "sandbox_slots_in_use") == 0
    assert value(scrape(server), "sandbox_slots_total") == 4
    runner = threading.Thread(target=api.exec, args=("py", "import time; time.sleep(3)"))
    runner.start()
    try:
        seen = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not seen:
            seen = value(scrape(server), "sandbox_slots_in_use")
            time.sleep(0.1)
        assert seen == 1
    finally:
        runner.join(30)
    assert value(scrape(server), "sandbox_slots_in_use") == 0


def test_metrics_need_no_credentials_and_only_get(server):
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 200
    assert requests.get(server.url + "/v1/metrics", timeout=10).status_code == 200
    assert requests.post(server.url + "/metrics", timeout=10).status_code == 405


def test_metrics_can_require_the_key():
    from tests.liveserver import CANARY_KEY, LiveServer

    live = LiveServer(SANDBOX_METRICS_REQUIRE_KEY="true").start()
    try:
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
            response = requests.get(live.url + "/metrics", headers=headers, timeout=10)
            assert response.status_code == 401 and response.json()["error"] == "unauthorized", response.text
        for headers in ({"X-API-Key": CANARY_KEY}, {"Authorization": f"Bearer {CANARY_KEY}"}):
            response = requests.get(live.url + "/metrics", headers=headers, timeout=10)
            assert response.status_code == 200 and "sandbox_slots_total" in response.text
        assert requests.post(live.url + "/metrics", timeout=10).json()["error"] == "method_not_allowed"
    finally:
        live.stop()
