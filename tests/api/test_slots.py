"""The slot table: concurrency is capped across workers, overflow gets 429 with a retry hint,
and a worker killed mid-execution gives its slot back when its lease runs out."""

import os
import signal
import subprocess
import threading
import time

import pytest
import requests

from tests.liveserver import Client, LiveServer

SLOW = "import time, json\nstart = time.time()\ntime.sleep(2)\nprint(json.dumps([start, time.time()]))\n"


@pytest.fixture(scope="module")
def two_slot_server():
    live = LiveServer(
        SANDBOX_MAX_CONCURRENT_EXECUTIONS="2", SANDBOX_MAX_QUEUE="2", SANDBOX_QUEUE_TIMEOUT_MS="3000",
        SANDBOX_LEASE_MARGIN_MS="2000", SANDBOX_WORKERS="2", SANDBOX_POOL="off",
    ).start()
    yield live
    live.stop()


def test_at_most_two_run_at_once_the_rest_wait_or_get_429(two_slot_server):
    client = Client(two_slot_server)
    results = [None] * 6

    def call(i):
        results[i] = client.post("/exec", json={"lang": "py", "code": SLOW})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    import json

    spans = [json.loads(r.json()["stdout"]) for r in results if r.status_code == 200]
    limited = [r for r in results if r.status_code == 429]
    assert len(spans) + len(limited) == 6, [r.status_code for r in results]
    assert len(spans) >= 2 and limited, [r.status_code for r in results]
    for r in limited:
        body = r.json()
        assert body["error"] == "rate_limited" and body["retry_after_seconds"] >= 1
        assert int(r.headers["Retry-After"]) == body["retry_after_seconds"]
    # at no instant did more than two programs run
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak <= 2, spans


def test_killed_worker_gives_its_slot_back_after_the_lease(two_slot_server):
    client = Client(two_slot_server)
    health = lambda: requests.get(two_slot_server.url + "/health", timeout=5).json()["slots"]  # noqa: E731
    assert health()["free"] == 2
    def doomed_call():
        try:
            client.post("/exec", json={"lang": "py", "code": "import time; time.sleep(30)", "timeout": 3000})
        except requests.ConnectionError:
            pass  # its worker is killed below

    thread = threading.Thread(target=doomed_call)
    thread.start()
    deadline = time.monotonic() + 20
    while health()["free"] == 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert health()["free"] == 1, "the execution never took a slot"
    # Kill every worker (the one running it among them); the master starts new ones.
    for pid in two_slot_server.worker_pids():
        os.kill(pid, signal.SIGKILL)
    thread.join(30)
    assert health()["free"] == 1, "the dead worker's lease should still hold the slot"
    deadline = time.monotonic() + 30  # lease = 3 s run + 2 s margin
    while health()["free"] != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert health()["free"] == 2
    # and the orphaned container is reaped once its deadline has passed
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = containers_of(two_slot_server)
        if not left:
            break
        time.sleep(1)
    assert not left, "the dead worker's container is still there"


def containers_of(server) -> list[str]:
    """Containers that mount a work area of this server (other servers may share the engine)."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", "label=org.librechat.codeinterp"], capture_output=True, text=True).stdout.split()
    mine = []
    for cid in ids:
        sources = subprocess.run(["docker", "inspect", "-f", "{{range .Mounts}}{{.Source}} {{end}}", cid], capture_output=True, text=True).stdout
        if str(server.storage) in sources:
            mine.append(cid)
    return mine
