"""BackgroundProbe (sandbox_project/probes.py): /health never queues behind a slow dependency."""

import threading
import time

from sandbox_project.probes import BackgroundProbe


def test_a_fresh_answer_is_reused_and_an_old_one_refreshed():
    calls = []
    probe = BackgroundProbe(lambda: calls.append(1) or {"ok": True, "n": len(calls)}, 0.2, 5.0, 1.0)
    assert probe()["n"] == 1
    assert probe()["n"] == 1 and len(calls) == 1
    time.sleep(0.25)
    assert probe()["n"] == 1  # served while the refresh runs
    time.sleep(0.1)
    assert probe()["n"] == 2


def test_a_check_that_hangs_is_reported_as_not_answering_and_fills_in_later():
    release = threading.Event()
    probe = BackgroundProbe(lambda: release.wait(5) and {"ok": True}, 10.0, 10.0, 0.1)
    started = time.monotonic()
    assert probe() == {"ok": False, "error": "no answer within 0.1 s"}
    assert time.monotonic() - started < 1
    release.set()
    time.sleep(0.1)
    assert probe()["ok"] is True


def test_a_failing_check_is_not_ok():
    def broken():
        raise ConnectionError("engine socket refused")

    answer = BackgroundProbe(broken, 1.0, 5.0, 1.0)()
    assert answer["ok"] is False and "refused" in answer["error"]


def test_health_reports_the_walls_versions_and_every_slot_free_on_a_fresh_server():
    import requests

    from tests.liveserver import LiveServer

    live = LiveServer(SANDBOX_MAX_CONCURRENT_EXECUTIONS="3").start()
    try:
        body = requests.get(live.url + "/health", timeout=10).json()
        assert body["slots"]["free"] == body["slots"]["total"] == 3, body["slots"]
        components = body["engine"]["components"]
        assert components["kernel"] and "unknown" not in components["kernel"], components
        wanted = ("runc", "containerd", "dockerd") if body["engine"]["engine"] == "docker" else ("bubblewrap",)
        for name in wanted:
            assert components.get(name) and components[name][0].isdigit() or "bubblewrap" in components[name], (name, components)
        assert "sandbox engine" in live.log_text()
    finally:
        live.stop()
