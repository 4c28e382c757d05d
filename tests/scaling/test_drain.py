"""SIGTERM drains a server: /health says "draining" while everything is still served, then
the front stops accepting, the executions it holds finish, and only then does it exit."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from tests.liveserver import Client, LiveServer


@pytest.fixture
def draining_server():
    live = LiveServer(SANDBOX_DRAIN_DELAY_S="3", SANDBOX_POOL="off").start()
    yield live
    live.stop()


def test_sigterm_finishes_running_executions_before_exiting(draining_server):
    live = draining_server
    client = Client(live)
    assert client.get("/health").status_code == 200
    assert client.get("/health/live").json() == {"status": "alive"}
    answers = {}

    def long_run():
        answers["long"] = Client(live).post("/exec", json={"lang": "py", "code": "import time; time.sleep(6); print('done')"})

    thread = threading.Thread(target=long_run)
    thread.start()
    for _ in range(100):  # until the run holds its slot
        if client.get("/health").json()["slots"]["free"] < 4:
            break
        time.sleep(0.05)
    live.process.send_signal(signal.SIGTERM)  # the master alone, as a balancer's orchestrator would

    # During the delay: /health says draining (the balancer's cue), liveness does not fail,
    # and a new call is still served.
    for _ in range(50):
        health = client.get("/health")
        if health.status_code == 503:
            break
        time.sleep(0.05)
    assert health.status_code == 503 and health.json() == {"status": "draining"}
    assert client.get("/health/live").json() == {"status": "draining"}
    assert client.exec("py", "print('still served')")["stdout"] == "still served\n"

    # After it: nobody is listening any more, the long run still finishes with its answer.
    refused = False
    for _ in range(100):
        try:
            requests.get(live.url + "/health", timeout=2)
        except requests.ConnectionError:
            refused = True
            break
        time.sleep(0.1)
    assert refused, "the front still accepts connections after the drain delay"
    assert live.process.poll() is None, "the server exited while an execution was running"
    thread.join(60)
    assert answers["long"].status_code == 200, answers["long"].text
    assert answers["long"].json()["stdout"] == "done\n"
    assert live.process.wait(60) == 0
    assert "drained in" in live.log_text()
