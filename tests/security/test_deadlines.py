"""A program never runs past its own time limit (plus a few seconds), whoever dies, and "timed
out" is what the sandbox's clock says, never an exit status the program chose.

- The worker serving an execution is SIGKILLed mid-run: a cold Docker run still ends at its
  limit (pid 1 of its container is the clock), a cold bwrap run with the worker (bwrap dies with
  its parent), a warm run at its deadline (the pool keeper kills it).
- A compiled program that ignores SIGTERM and runs on is timed out; one that exits 124 by itself
  is not; a compile step over its own limit says so.
"""

import subprocess
import threading
import time
import uuid

import pytest
import requests

from tests.liveserver import Client, LiveServer, paths_under

LIMIT_MS = 4000
GRACE_S = 5.0  # "a few seconds": the backstop fires 2 s after the limit; room for a busy machine

HEARTBEAT = {
    # (first it tries to stop the clock: pid 1 of a cold container ignores signals from inside)
    "bash": "kill -STOP 1; for i in $(seq 1 400); do date +%s.%N >> beat-{m}.txt; sleep 0.1; done\n",
    "py": "import time\nfor _ in range(400):\n    open('beat-{m}.txt', 'a').write(f'{{time.time()}}\\n'); time.sleep(0.1)\n",
}


@pytest.fixture(autouse=True)
def server_stays_healthy(sandbox_server):
    yield
    for _ in range(50):  # the killed workers are replaced within a second or two
        try:
            if requests.get(sandbox_server.url + "/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not recover")


def beats(server, marker: str) -> list[float]:
    found = []
    for path in (p for p in paths_under(server.storage, work_areas=True) if p.name == f"beat-{marker}.txt"):
        try:
            found += [float(line) for line in path.read_text().split() if line]
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.parametrize("lang", ["bash", "py"])  # bash runs cold here, py warm (where there is a pool)
def test_a_killed_worker_does_not_extend_the_run(sandbox, sandbox_server, lang):
    marker = uuid.uuid4().hex
    code = HEARTBEAT[lang].format(m=marker)
    outcome = {}

    def run():
        try:
            outcome["response"] = sandbox.post("/exec", json={"lang": lang, "code": code, "timeout": LIMIT_MS}, timeout=60)
        except requests.RequestException as error:
            outcome["error"] = error

    gvisor = sandbox_server.env.get("SANDBOX_DOCKER_RUNTIME") == "runsc"
    submitted = time.time()
    thread = threading.Thread(target=run)
    thread.start()
    if gvisor:
        # gVisor keeps the sandbox's file writes to itself (the host sees /mnt/data only at
        # the end) and its processes are not host processes: watch the container instead.
        return _watch_the_container(sandbox_server, thread, submitted, outcome)
    deadline = time.monotonic() + 20
    while not beats(sandbox_server, marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    first = beats(sandbox_server, marker)
    assert first, "the program never started"
    for pid in sandbox_server.worker_pids():
        subprocess.run(["kill", "-KILL", str(pid)], check=False)  # every worker: one of them serves the run
    thread.join(60)
    assert "response" not in outcome or outcome["response"].status_code >= 500 or "beat" not in outcome["response"].text

    # Watch the heartbeats until well past the limit.
    watch_until = min(first) + LIMIT_MS / 1000 + GRACE_S + 8
    last = max(first)
    while time.time() < watch_until:
        seen = beats(sandbox_server, marker)
        if seen:
            last = max(last, max(seen))
        time.sleep(0.3)
    ran_for = last - min(first)
    assert ran_for <= LIMIT_MS / 1000 + GRACE_S, f"the program ran {ran_for:.1f} s with a {LIMIT_MS / 1000:g} s limit"
    left = subprocess.run(["pgrep", "-f", f"beat-{marker}"], capture_output=True, text=True).stdout.split()
    assert not left, f"processes of the run still exist: {left}"


def running_containers() -> list[str]:
    """Running gVisor sandboxes of ours (the other test servers' warm pools run under runc)."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", "label=org.librechat.codeinterp", "--filter", "status=running"],
                         capture_output=True, text=True).stdout.split()
    if not ids:
        return []
    runtimes = subprocess.run(["docker", "inspect", "-f", "{{.Id}} {{.HostConfig.Runtime}}", *ids], capture_output=True,
                              text=True).stdout.split("\n")
    return [line.split()[0] for line in runtimes if line.endswith(" runsc")]


def _watch_the_container(server, thread, submitted: float, outcome: dict) -> None:
    deadline = time.monotonic() + 20
    while not running_containers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_containers(), "the sandbox never started"
    time.sleep(1.0)
    for pid in server.worker_pids():
        subprocess.run(["kill", "-KILL", str(pid)], check=False)
    thread.join(60)
    watch_until = submitted + LIMIT_MS / 1000 + GRACE_S + 8
    ended_at = None
    while time.time() < watch_until:
        if not running_containers():
            ended_at = ended_at or time.time()
        else:
            ended_at = None
        time.sleep(0.2)
    assert ended_at is not None, "the sandbox was still running long past its limit"
    # (measured from the request, so the sandbox's start-up, ~0.5 s under gVisor, counts too)
    assert ended_at - submitted <= LIMIT_MS / 1000 + GRACE_S + 2, f"the sandbox ran {ended_at - submitted:.1f} s"


PROGRAMS = {
    "ignores_sigterm": ("c", "#include <signal.h>\n#include <unistd.h>\nint main(){signal(SIGTERM, SIG_IGN);"
                             " for(;;) pause(); }\n"),
    "exits_124": ("c", "#include <stdio.h>\nint main(){ puts(\"bye\"); return 124; }\n"),
    "killed_by_itself": ("c", "#include <signal.h>\nint main(){ raise(SIGKILL); return 0; }\n"),
}


def test_timed_out_comes_from_the_sandbox_clock(sandbox):
    slow = sandbox.exec(*PROGRAMS["ignores_sigterm"], timeout=1500)
    assert slow["run"]["timed_out"] is True and "Time limit exceeded" in slow["stderr"], slow
    assert "Compilation timed out" not in slow["stderr"]
    faker = sandbox.exec(*PROGRAMS["exits_124"])
    assert faker["run"]["timed_out"] is False and faker["run"]["code"] == 124, faker
    assert "Time limit" not in faker["stderr"] and faker["stdout"] == "bye\n"
    suicide = sandbox.exec(*PROGRAMS["killed_by_itself"])
    assert suicide["run"]["timed_out"] is False and suicide["run"]["code"] == 137, suicide
    assert "codeinterp-compiled" not in slow["stderr"] + faker["stderr"] + suicide["stderr"]  # the marker never shows


def test_a_compile_step_over_its_own_limit():
    live = LiveServer(SANDBOX_COMPILE_TIMEOUT_MS="300").start()
    try:
        heavy = "#include <bits/stdc++.h>\n#include <regex>\nint main(){ std::regex r(\"a+\"); std::cout << 1; }\n"
        result = Client(live).exec("cpp", heavy)
        assert result["run"]["timed_out"] is True, result
        assert "Compilation timed out after 0.3 s" in result["stderr"], result["stderr"]
        assert "Time limit exceeded" not in result["stderr"]
    finally:
        live.stop()


def test_the_marker_cannot_be_forged_by_the_source(sandbox):
    # The compiler echoes source lines in its errors; the marker is random per execution, so no
    # source can carry the real one and end the compile phase early.
    source = '#include <stdio.h>\nint main(){ puts("codeinterp-compiled-0000"); undeclared(); }\n'
    result = sandbox.exec("c", source)
    assert result["run"]["code"] != 0 and "undeclared" in result["stderr"], result
    assert result["run"]["timed_out"] is False
