"""Execution profiles and stateful workspaces (LibreChat >= v0.8.6, spec §E1/§14).

Every answer names its profile (X-CodeAPI-Execution-Profile); a request expecting a profile the
server does not offer gets 409 execution_profile_mismatch. With SANDBOX_STATEFUL=true, a
runtime_session_hint keeps /mnt/data's files between executions of the same user, and only
the files: each execution is still a fresh sandbox.
"""

import threading
import time

import pytest

from tests.liveserver import Client, LiveServer, paths_under

HINT = "v2:user:0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def stateful_server():
    live = LiveServer(SANDBOX_STATEFUL="true", SANDBOX_RUNTIME_SESSION_WAIT_MS="800").start()
    yield live
    live.stop()


def stateful(server, **headers) -> Client:
    return Client(server, headers={"X-API-Key": server.env["SANDBOX_API_KEY"], "X-CodeAPI-Expected-Profile": "stateful", **headers})


def run(client, code, hint=HINT, lang="bash", **body):
    response = client.post("/exec", json={"lang": lang, "code": code, "runtime_session_hint": hint, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_default_server_names_its_profile_and_refuses_stateful(api):
    response = api.post("/exec", json={"lang": "bash", "code": "echo hi"})
    assert response.headers["X-CodeAPI-Execution-Profile"] == "default"
    assert api.get("/files/AAAAAAAAAAAAAAAAAAAAA").headers["X-CodeAPI-Execution-Profile"] == "default"
    refused = api.post("/exec", json={"lang": "bash", "code": "echo hi"}, headers={"X-CodeAPI-Expected-Profile": "stateful"})
    assert refused.status_code == 409, refused.text
    assert refused.json() == {"error": "execution_profile_mismatch", "message": "Expected the stateful execution profile, but reached default",
                              "expected_profile": "stateful", "actual_profile": "default"}
    odd = api.post("/exec", json={"lang": "bash", "code": "echo hi"}, headers={"X-CodeAPI-Expected-Profile": "turbo"})
    assert odd.status_code == 400 and odd.json()["error"] == "invalid_execution_profile"
    fine = api.post("/exec", json={"lang": "bash", "code": "echo hi", "runtime_session_hint": HINT},
                    headers={"X-CodeAPI-Expected-Profile": "default"})
    assert fine.status_code == 200 and "runtime_session_id" not in fine.json()


def test_files_persist_between_calls_with_the_same_hint(stateful_server):
    client = stateful(stateful_server)
    first = run(client, "mkdir -p sub .hidden; echo one > a.txt; echo two > sub/b.csv; echo h > .hidden/h.txt; echo tmp > /tmp/t.txt")
    assert first["runtime_status"] == "new" and first["runtime_session_id"].startswith("rt_")
    assert sorted(f["name"] for f in first["files"]) == ["a.txt", "sub/b.csv"]
    second = run(client, "cat a.txt sub/b.csv .hidden/h.txt; ls /tmp; echo changed >> a.txt; echo new > c.json")
    assert second["runtime_status"] == "reused" and second["runtime_session_id"] == first["runtime_session_id"]
    assert second["stdout"].split("\n")[:3] == ["one", "two", "h"] and "t.txt" not in second["stdout"]
    # Untouched files are not reported again; a changed one and a new one are.
    assert sorted(f["name"] for f in second["files"]) == ["a.txt", "c.json"]
    third = run(client, "rm sub/b.csv; cat a.txt; ls")
    assert third["stdout"].split() == ["one", "changed", "a.txt", "c.json", "sub"], third
    # (an empty folder is no file: it does not persist)
    assert run(client, "ls -A")["stdout"].split() == [".hidden", "a.txt", "c.json"]


def test_hints_and_users_are_separate_workspaces(stateful_server):
    client = stateful(stateful_server)
    run(client, "echo mine > own.txt", hint="v2:user:aaaa", user_id="alice")
    assert run(client, "ls", hint="v2:user:bbbb", user_id="alice")["stdout"] == ""
    other_user = run(client, "ls", hint="v2:user:aaaa", user_id="mallory")
    assert other_user["stdout"] == "" and other_user["runtime_status"] == "new"
    back = run(client, "cat own.txt", hint="v2:user:aaaa", user_id="alice")
    assert back["stdout"] == "mine\n" and back["runtime_status"] == "reused"


def test_only_files_persist_never_a_process(stateful_server):
    client = stateful(stateful_server)
    run(client, "nohup sleep 300 >/dev/null 2>&1 & echo started > s.txt", hint="v2:user:proc")
    after = run(client, "ps -eo comm | grep -c '^sleep$' || true; cat s.txt", hint="v2:user:proc")
    assert after["stdout"].split() == ["0", "started"], after


def test_a_busy_workspace_is_409_after_a_short_wait(stateful_server):
    client = stateful(stateful_server)
    long_run = threading.Thread(target=run, args=(stateful(stateful_server), "sleep 3; echo done > d.txt"), kwargs={"hint": "v2:user:busy"})
    long_run.start()
    time.sleep(1.0)
    response = client.post("/exec", json={"lang": "bash", "code": "ls", "runtime_session_hint": "v2:user:busy"})
    long_run.join(30)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "runtime_session_busy"
    assert run(client, "cat d.txt", hint="v2:user:busy")["stdout"] == "done\n"


@pytest.mark.parametrize("hint,message", [("x" * 129, "at most 128"), ("bad hint!", "may only contain"), (7, "must be a string")])
def test_bad_hints_are_400(stateful_server, hint, message):
    response = stateful(stateful_server).post("/exec", json={"lang": "bash", "code": "true", "runtime_session_hint": hint})
    assert response.status_code == 400 and message in response.json()["message"], response.text


def test_librechats_prewarm_call(stateful_server):
    # {"lang":"bash","code":"true","runtime_session_hint"} with the stateful profile expected
    answer = run(stateful(stateful_server), "true", hint="v3:0123456789ab:user:0123456789abcdef0123456789abcdef")
    assert answer["stdout"] == "" and answer["files"] == [] and answer["runtime_status"] == "new"


def test_a_default_request_on_the_stateful_server_is_stateless(stateful_server):
    client = Client(stateful_server, headers={"X-API-Key": stateful_server.env["SANDBOX_API_KEY"], "X-CodeAPI-Expected-Profile": "default"})
    response = client.post("/exec", json={"lang": "bash", "code": "echo x > f.txt", "runtime_session_hint": HINT})
    assert response.status_code == 200 and response.headers["X-CodeAPI-Execution-Profile"] == "default"
    assert "runtime_session_id" not in response.json()


def test_idle_workspaces_expire():
    live = LiveServer(SANDBOX_STATEFUL="true", SANDBOX_RUNTIME_SESSION_IDLE_S="2").start()
    try:
        client = stateful(live)
        first = run(client, "echo keep > k.txt", hint="v2:user:idle")
        time.sleep(3)
        again = run(client, "ls", hint="v2:user:idle")
        assert again["runtime_status"] == "new" and again["stdout"] == "", again
        run(client, "echo x > y.txt", hint="v2:user:gone")
        time.sleep(3)
        done = live.manage("cleanup_sessions")
        assert "idle stateful workspaces" in done.stdout, done.stdout + done.stderr
        stored = paths_under(live.storage)
        folders = [p for p in stored if p.match(f"runtime/{first['runtime_session_id']}")]
        assert not [p for p in stored if p.match("runtime/rt_*/files/y.txt")], folders
    finally:
        live.stop()


def test_a_workspace_keeps_the_disk_quota():
    live = LiveServer(SANDBOX_STATEFUL="true", SANDBOX_DISK_MB="48").start()
    try:
        client = stateful(live)
        fill = "head -c 30M /dev/zero > {name}.bin && echo stored || echo refused"
        assert run(client, fill.format(name="one"), hint="v2:user:quota")["stdout"] == "stored\n"
        # The first file is back in /mnt/data: a second one does not fit beside it.
        second = run(client, fill.format(name="two"), hint="v2:user:quota")
        assert second["stdout"] == "refused\n", second
        kept = run(client, "ls; du -sm . | cut -f1", hint="v2:user:quota")["stdout"].split()
        # (what is left of the partial second file stays too: the program left it)
        assert kept[0] == "one.bin" and int(kept[-1]) <= 48 + 2, kept  # the work area's 1 MiB of slack for the code
    finally:
        live.stop()
