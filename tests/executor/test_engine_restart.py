"""The Docker engine goes away and comes back: clear 503s meanwhile, nothing left behind after.

A Docker engine of the test's own (its own data root, socket and containerd, started and
stopped by PID; the executor image copied in once and kept for later runs), so stopping it
touches nothing else on the machine.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.liveserver import ROOT, Client, LiveServer

IMAGE = "librechat/sandbox-executor:latest"
DATA_ROOT = Path("/var/lib/codeinterp-test-engine")
EXEC_ROOT = Path("/run/codeinterp-test-engine")
SOCKET = "/run/codeinterp-test-engine.sock"
HOST = f"unix://{SOCKET}"
LABEL = "org.librechat.codeinterp"


def docker(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "-H", HOST, *args], capture_output=True, text=True, timeout=timeout, **kw)


class Engine:
    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.config = DATA_ROOT.parent / "codeinterp-test-engine.json"

    def start(self) -> None:
        config = json.loads((ROOT / "docker" / "daemon.json").read_text())
        self.config.write_text(json.dumps(config))
        self.log = open("/var/tmp/codeinterp-test-engine.log", "ab")
        self.process = subprocess.Popen(
            ["dockerd", "--config-file", str(self.config), "--data-root", str(DATA_ROOT), "--exec-root", str(EXEC_ROOT),
             "-H", HOST, "--pidfile", str(EXEC_ROOT.with_suffix(".pid"))],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if docker("info", "--format", "{{.ID}}", timeout=10).returncode == 0:
                return
            assert self.process.poll() is None, Path("/var/tmp/codeinterp-test-engine.log").read_text()[-2000:]
            time.sleep(0.5)
        raise RuntimeError("the test engine did not answer within 60 s")

    def stop(self) -> None:
        """A clean stop: without live-restore, the engine stops every container first."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)
        self.log.close()


@pytest.fixture(scope="module")
def engine():
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        pytest.skip(f"{IMAGE} is not built (scripts/setup.sh builds it)")
    own = Engine()
    own.start()
    try:
        wanted = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", IMAGE], capture_output=True, text=True).stdout.strip()
        have = docker("image", "inspect", "-f", "{{.Id}}", IMAGE).stdout.strip()
        if have != wanted:  # once; later runs find it in the engine's data root
            save = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
            loaded = docker("load", timeout=900, stdin=save.stdout)
            save.wait(60)
            assert loaded.returncode == 0, loaded.stderr
        yield own
    finally:
        own.stop()


def ours(state_filter: str | None = None) -> list[str]:
    args = ["ps", "-aq", "--filter", f"label={LABEL}"] + (["--filter", f"status={state_filter}"] if state_filter else [])
    return docker(*args).stdout.split()


def pool_rows(server) -> list[tuple[str, str]]:
    with sqlite3.connect(server.data_dir / "db.sqlite3", timeout=20) as db:
        return db.execute("SELECT name, state FROM executor_warmsandbox").fetchall()


def wait_until(check, timeout_s: float = 90) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def pool_mounts(server) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f"{server.storage}/.pool/" in line]


def test_engine_down_is_503_and_everything_is_cleaned_up_after(engine):
    live = LiveServer(SANDBOX_DOCKER_HOST=HOST, SANDBOX_POOL="py:1,bash:1").start()
    try:
        client = Client(live)
        assert wait_until(lambda: sum(state == "ready" for _, state in pool_rows(live)) == 2), pool_rows(live)
        assert client.exec("bash", "echo before")["stdout"] == "before\n"
        assert wait_until(lambda: sum(state == "ready" for _, state in pool_rows(live)) == 2)
        old_members = {name for name, _ in pool_rows(live)}

        engine.stop()
        for lang in ("py", "bash", "c"):  # warm and cold alike
            response = client.post("/exec", json={"lang": lang, "code": "print(1)" if lang == "py" else "echo 1"})
            assert response.status_code == 503, (lang, response.status_code, response.text)
            assert response.json()["error"] == "sandbox_unavailable", response.text
        assert wait_until(lambda: requests.get(live.url + "/health", timeout=5).status_code == 503, 15)
        health = requests.get(live.url + "/health", timeout=5).json()
        assert health["engine"]["ok"] is False and health["engine"]["error"], health

        engine.start()
        assert wait_until(lambda: requests.get(live.url + "/health", timeout=5).status_code == 200, 30)
        # The keeper retires what the dead engine stopped and starts new sandboxes.
        assert wait_until(lambda: {n for n, s in pool_rows(live) if s == "ready"} - old_members and
                          not ({n for n, _ in pool_rows(live)} & old_members)), pool_rows(live)
        assert client.exec("bash", "echo after")["stdout"] == "after\n"
        assert client.exec("py", "print('after')")["stdout"] == "after\n"
        # Nothing of the dead engine's sandboxes is left: no stopped container, no mounted work
        # area, no row.
        # (stopped containers go once they have been stopped for a minute: the housekeeping sweep)
        assert wait_until(lambda: not ours("exited") and not ours("created"), 150), docker("ps", "-a").stdout
        assert not [m for m in pool_mounts(live) if any(name in m for name in old_members)]
        assert not [row for row in pool_rows(live) if row[0] in old_members or row[1] == "retired"], pool_rows(live)
    finally:
        live.stop()
    assert wait_until(lambda: not ours(), 60), docker("ps", "-a").stdout
    assert not pool_mounts(live)
