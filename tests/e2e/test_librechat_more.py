"""The real `@librechat/agents@3.9.2` client for what LibreChat >= v0.8.6 uses beyond plain
execute_code: programmatic tool calling (run_tools_with_code, run_tools_with_bash) invoked as
ToolNode invokes it, execution profiles, stateful sessions, and LibreChat's own upload of a body
over the limit. `drive_more.mjs` runs the cases; the assertions read what the model would see
(the ToolMessage content) and what LibreChat would process (its artifact)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.liveserver import CANARY_KEY, Client, LiveServer, sqlite_of

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "drive_more.mjs"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None or not (HERE / "node_modules" / "@librechat" / "agents").is_dir(),
    reason="node or the @librechat/agents test client is missing (scripts/setup.sh --dev installs both)",
)


def drive(server, *cases, timeout: float = 240) -> list[dict]:
    scenario = {"base_url": f"{server.url}/v1", "api_key": CANARY_KEY, "cases": list(cases)}
    done = subprocess.run([NODE, str(DRIVER)], input=json.dumps(scenario), capture_output=True, text=True, cwd=HERE,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["results"]


def programmatic_rows(server) -> int:
    with sqlite3.connect(sqlite_of(server), timeout=20) as db:
        return db.execute("SELECT count(*) FROM programmatic_programmaticrun").fetchone()[0]


def test_python_tool_calls_sequential_and_parallel(server):
    code = ('import asyncio\nfirst = await get_weather(city="Paris")\nprint(first["forecast"])\n'
            'rest = await asyncio.gather(*[get_weather(city=c, units="F") for c in ("SF", "NY", "LA")])\n'
            'print(sorted(r["city"] for r in rest), rest[0]["units"])')
    [result] = drive(server, {"kind": "ptc", "code": code})
    assert result["ok"], result
    assert result["content"] == "stdout:\nsunny in Paris\n['LA', 'NY', 'SF'] F", result["content"]  # (the client trims)
    assert sorted(city for _, city in result["tool_log"]) == ["LA", "NY", "Paris", "SF"]
    assert len(result["artifact"]["session_id"]) == 21


def test_a_tool_error_is_caught_by_the_program(server):
    code = "try:\n    await explode()\nexcept Exception as error:\n    print('caught:', error)\n"
    [result] = drive(server, {"kind": "ptc", "code": code})
    assert result["ok"] and "caught: kaboom from tool" in result["content"], result


def test_files_in_and_out(server):
    up = Client(server).upload("cities.csv", b"city\nOslo\nLima\n")
    injected = [{"id": up["files"][0]["fileId"], "resource_id": "user-1", "storage_session_id": up["session_id"],
                 "name": "cities.csv", "kind": "user"}]
    code = ("import csv, json\nrows = list(csv.DictReader(open('/mnt/data/cities.csv')))\n"
            "out = [await get_weather(city=r['city']) for r in rows]\n"
            "json.dump(out, open('/mnt/data/forecast.json', 'w'))\nprint(len(out), 'forecasts')")
    [result] = drive(server, {"kind": "ptc", "code": code, "toolcall": {"_injected_files": injected}})
    assert result["ok"], result
    assert "2 forecasts" in result["content"] and "1 persisted file(s)" in result["content"], result["content"]
    made = [f for f in result["artifact"]["files"] if not f.get("inherited")]
    assert [f["name"] for f in made] == ["forecast.json"]
    body = Client(server).get(f"/download/{result['artifact']['session_id']}/{made[0]['id']}").json()
    assert [item["city"] for item in body] == ["Oslo", "Lima"]


def test_a_time_limit_and_more_than_twenty_round_trips(server):
    slow, looping = drive(server,
                          {"kind": "ptc", "code": "import time\ntime.sleep(20)", "timeout": 1500},
                          {"kind": "ptc", "code": "while True:\n    await get_weather(city='x')\n"})
    assert not slow["ok"] and "Execution exceeded the time limit." in slow["error"], slow
    assert not looping["ok"] and "Code execution failed." in looping["error"], looping
    assert len(looping["tool_log"]) == 20, looping["tool_log"]


def test_cancel_stops_the_run(server):
    [result] = drive(server, {"kind": "ptc", "code": "while True:\n    pass\n", "timeout": 20000, "abort_after_ms": 1500})
    assert not result["ok"] and "abort" in result["error"].lower(), result
    deadline = time.monotonic() + 10
    while programmatic_rows(server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert programmatic_rows(server) == 0, "the cancelled run is still there"


def test_the_bash_variant(server):
    code = ("w=$(get_weather '{\"city\":\"Paris\"}')\necho \"$w\" | jq -r .forecast\n"
            "explode '{}' 2>/dev/null || echo 'explode failed'\n")
    [result] = drive(server, {"kind": "bash_ptc", "code": code})
    assert result["ok"], result
    assert result["content"] == "stdout:\nsunny in Paris\nexplode failed", result["content"]


def test_the_stateful_profile_is_refused_where_it_is_not_served(server):
    [result] = drive(server, {"kind": "exec", "args": {"lang": "py", "code": "print(1)"},
                              "factory": {"executionProfile": "stateful", "statefulSessions": True,
                                          "runtimeSessionHint": "v2:user:0123456789abcdef0123456789abcdef"}})
    assert "does not provide the requested execution profile" in (result.get("content") or result.get("error")), result
    assert "Do not retry" in (result.get("content") or result.get("error"))


@pytest.fixture(scope="module")
def stateful_server():
    live = LiveServer(SANDBOX_STATEFUL="true").start()
    yield live
    live.stop()


def stateful(hint: str, user: str, args: dict, kind: str = "exec") -> dict:
    return {"kind": kind, "args": args, "factory": {"executionProfile": "stateful", "statefulSessions": True,
                                                     "runtimeSessionHint": hint, "user_id": user}}


def test_stateful_sessions_across_calls_hints_and_users(stateful_server):
    hint_a, hint_b = "v2:user:" + "a" * 32, "v2:user:" + "b" * 32
    results = drive(stateful_server,
                    stateful(hint_a, "alice", {"lang": "py", "code": "open('/mnt/data/notes.txt', 'w').write('kept')"}),
                    stateful(hint_a, "alice", {"command": "cat /mnt/data/notes.txt; ls /mnt/data"}, kind="bash"),
                    stateful(hint_b, "alice", {"command": "ls /mnt/data | wc -l"}, kind="bash"),
                    stateful(hint_a, "mallory", {"command": "ls /mnt/data | wc -l"}, kind="bash"))
    first, second, other_hint, other_user = results
    assert first["ok"] and first["artifact"]["runtime_status"] == "new", first
    assert second["ok"] and second["content"] == "stdout:\nkeptnotes.txt", second["content"]
    assert second["artifact"]["runtime_status"] == "reused"
    assert second["artifact"]["runtime_session_id"] == first["artifact"]["runtime_session_id"]
    assert other_hint["content"] == "stdout:\n0" and other_user["content"] == "stdout:\n0", (other_hint, other_user)
    assert other_user["artifact"]["runtime_session_id"] != first["artifact"]["runtime_session_id"]


def test_an_upload_over_the_limit_gets_a_readable_413(server):
    # LibreChat sends up to 150 MiB; this server's limit in the tests is 5 MiB (a fresh install
    # takes 150): the 413 must reach a client that is still writing its body.
    [result] = drive(server, {"kind": "upload", "bytes": 151 << 20, "name": "huge.bin"})
    assert result.get("status") == 413, result
    assert result["body"]["error"] == "payload_too_large", result
