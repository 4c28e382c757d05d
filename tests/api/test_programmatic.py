"""POST /exec/programmatic over HTTP: the protocol @librechat/agents drives (tests/e2e drives it
with the real client too). A small client here plays the tools: it answers each
tool_call_required with results, as the real one does, so each rule can be checked alone."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests

from tests.liveserver import CANARY_KEY, Client, LiveServer, sqlite_of

WEATHER = {"name": "get-weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "units": {"type": "string"}},
                          "required": ["city"]}}
EXPLODE = {"name": "explode", "description": "Always fails", "parameters": {"type": "object", "properties": {}}}


def tools_answer(call: dict) -> dict:
    if call["name"] == "explode":
        return {"call_id": call["id"], "result": None, "is_error": True, "error_message": "kaboom from tool"}
    return {"call_id": call["id"], "result": {"city": call["input"].get("city"), "forecast": "sunny"}, "is_error": False}


def drive(client: Client, body: dict, answer=tools_answer, headers=None, max_trips: int = 30) -> tuple[dict, list[list[dict]]]:
    """Runs a program to its end, answering every batch of tool calls; returns the final
    answer and the batches seen."""
    response = client.post("/exec/programmatic", json={"tools": [WEATHER, EXPLODE], "timeout": 8000, **body}, headers=headers)
    assert response.status_code == 200, response.text
    answer_body = response.json()
    batches = []
    while answer_body["status"] == "tool_call_required" and len(batches) < max_trips:
        batches.append(answer_body["tool_calls"])
        response = client.post("/exec/programmatic", json={
            "continuation_token": answer_body["continuation_token"],
            "tool_results": [answer(call) for call in answer_body["tool_calls"]]}, headers=headers)
        assert response.status_code == 200, response.text
        answer_body = response.json()
    return answer_body, batches


def test_a_tool_call_round_trip_uses_the_original_name(api):
    final, batches = drive(api, {"code": 'r = await get_weather(city="Paris")\nprint(r["forecast"], r["city"])'})
    assert final["status"] == "completed", final
    assert final["stdout"] == "sunny Paris\n" and final["stderr"] == ""
    assert batches == [[{"id": "call_001", "name": "get-weather", "input": {"city": "Paris"}}]]
    assert len(final["session_id"]) == 21 and final["files"] == []


def test_parallel_calls_of_one_step_come_in_one_answer(api):
    code = ('import asyncio\nres = await asyncio.gather(*[get_weather(city=c) for c in ("SF", "NY", "LA")])\n'
            'print([r["city"] for r in res])\nmore = await get_weather(city="Rome", units="C")\nprint(more["city"])')
    final, batches = drive(api, {"code": code})
    assert final["status"] == "completed", final
    assert final["stdout"] == "['SF', 'NY', 'LA']\nRome\n"
    assert [[c["input"] for c in batch] for batch in batches] == [
        [{"city": "SF"}, {"city": "NY"}, {"city": "LA"}], [{"city": "Rome", "units": "C"}]]
    assert len({c["id"] for batch in batches for c in batch}) == 4


def test_a_tool_error_reaches_the_program_as_an_exception(api):
    code = "try:\n    await explode()\nexcept ToolExecutionError as error:\n    print('caught', error)\n"
    final, _ = drive(api, {"code": code})
    assert final["status"] == "completed" and final["stdout"] == "caught kaboom from tool\n", final


def test_files_in_and_out(api):
    up = api.upload("cities.csv", b"city\nOslo\nLima\n")
    code = ("import csv\nrows = list(csv.DictReader(open('cities.csv')))\n"
            "out = [await get_weather(city=r['city']) for r in rows]\n"
            "open('forecast.json', 'w').write(__import__('json').dumps(out))\nprint(len(out))")
    final, batches = drive(api, {"code": code, "files": [{"id": up["files"][0]["fileId"], "storage_session_id": up["session_id"],
                                                           "name": "cities.csv", "kind": "user"}]})
    assert final["status"] == "completed" and final["stdout"] == "2\n", final
    made = [f for f in final["files"] if not f.get("inherited")]
    assert [f["name"] for f in made] == ["forecast.json"]
    assert [f["name"] for f in final["files"] if f.get("inherited")] == ["cities.csv"]
    content = api.get(f"/download/{final['session_id']}/{made[0]['id']}").json()
    assert [item["city"] for item in content] == ["Oslo", "Lima"]
    assert len(batches) == 2  # two awaited calls one after the other


def test_bash_functions_take_one_json_object(api):
    code = (': &\nwait "$!"\n'  # the client's own prefix
            "w=$(get_weather '{\"city\":\"Paris\"}')\necho \"$w\" | jq -r .forecast\n"
            "(get_weather '{\"city\":\"A\"}' > a.json) & (get_weather '{\"city\":\"B\"}' > b.json) & wait\n"
            "cat a.json b.json; echo\nexplode '{}' || echo \"failed: $?\"\nget_weather 'not json' || echo bad-input\n")
    final, batches = drive(api, {"code": code, "lang": "bash"})
    assert final["status"] == "completed", final
    lines = final["stdout"].splitlines()
    assert lines[0] == "sunny" and '"city":"A"' in lines[1] and '"city":"B"' in lines[1], final["stdout"]
    assert "failed: 1" in lines and "bad-input" in lines
    assert "kaboom from tool" in final["stderr"] and "must be a JSON object" in final["stderr"]
    # The two background calls usually share a round trip (those arriving within 50 ms of each
    # other do); on a loaded machine they may not: both answers are right.
    assert sum(len(b) for b in batches) == 4 and len(batches) in (3, 4), batches


@pytest.mark.parametrize("code,error", [
    ("raise ValueError('nope')", "Sandbox exited with code 1"),
    ("import time\ntime.sleep(30)", "Time limit exceeded"),
    ("x = bytearray(2 * 1024**3)\nx[::4096] = b'x' * (len(x) // 4096)", "Out of memory"),
    ("import sys\nwhile True: sys.stdout.write('z' * 65536)", "stdout length exceeded"),
    ("await __ptc_call__('rm-rf', {})", "Sandbox requested an unregistered tool: rm-rf"),
])
def test_failures_use_the_messages_the_client_maps(api, code, error):
    # Only the time-limit case needs a short limit; the others get room to reach their own
    # limit first (the cluster's three replicas on two cores took over 2 s to fill memory).
    timeout = 2000 if error == "Time limit exceeded" else 20000
    final, _ = drive(api, {"code": code, "timeout": timeout})
    assert final["status"] == "error" and final["error"] == error, final
    if error.startswith("Sandbox exited"):
        assert "ValueError: nope" in final["stderr"]


def test_more_than_twenty_round_trips_end_the_run(api):
    final, batches = drive(api, {"code": "while True:\n    await get_weather(city='x')\n"})
    assert len(batches) == 20 and final["status"] == "error" and "round trips" in final["error"], final


def start(client: Client, code: str, **extra) -> dict:
    response = client.post("/exec/programmatic", json={"code": code, "tools": [WEATHER], "timeout": 4000, **extra.pop("body", {})},
                           **extra)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_token_is_single_use_and_unforgeable(api):
    first = start(api, "await get_weather(city='a')\nawait get_weather(city='b')\nprint('done')")
    token = first["continuation_token"]
    results = [tools_answer(c) for c in first["tool_calls"]]
    assert len(token) >= 40
    forged = api.post("/exec/programmatic", json={"continuation_token": token[:-2] + "xx", "tool_results": results})
    assert forged.status_code == 404, forged.text
    wrong_id = api.post("/exec/programmatic", json={"continuation_token": token,
                                                    "tool_results": [{"call_id": "call_999", "result": 1, "is_error": False}]})
    assert wrong_id.status_code == 400, wrong_id.text
    second = api.post("/exec/programmatic", json={"continuation_token": token, "tool_results": results}).json()
    assert second["status"] == "tool_call_required"
    replay = api.post("/exec/programmatic", json={"continuation_token": token, "tool_results": results})
    assert replay.status_code == 404, replay.text
    final = api.post("/exec/programmatic", json={"continuation_token": second["continuation_token"],
                                                 "tool_results": [tools_answer(c) for c in second["tool_calls"]]}).json()
    assert final["status"] == "completed" and final["stdout"] == "done\n"


def test_cancel_stops_a_waiting_run_and_only_its_owner_may(server, api):
    request_id = str(uuid.uuid4())
    waiting = start(api, "await get_weather(city='slow')", headers={"X-LibreChat-Code-Request-ID": request_id})
    stranger = Client(server, headers={})  # no credential: refused before anything
    assert stranger.post("/exec/programmatic/cancel", json={"request_id": request_id}).status_code == 401
    assert api.post("/exec/programmatic/cancel", json={"request_id": "not-a-valid-id"}).status_code == 400
    assert api.post("/exec/programmatic/cancel", json={"request_id": str(uuid.uuid4())}).status_code == 404
    cancelled = api.post("/exec/programmatic/cancel", json={"request_id": request_id})
    assert cancelled.status_code == 202 and cancelled.json() == {"status": "cancellation_requested"}
    late = api.post("/exec/programmatic", json={"continuation_token": waiting["continuation_token"],
                                                "tool_results": [tools_answer(c) for c in waiting["tool_calls"]]})
    assert late.status_code == 404


def test_cancel_ends_the_request_in_flight(api):
    request_id = str(uuid.uuid4())
    outcome = {}

    def busy():
        outcome["answer"] = start(api, "while True:\n    pass", headers={"X-LibreChat-Code-Request-ID": request_id},
                                  body={"timeout": 30000})

    thread = threading.Thread(target=busy)
    thread.start()
    time.sleep(2.0)
    assert api.post("/exec/programmatic/cancel", json={"request_id": request_id}).status_code == 202
    thread.join(20)
    assert outcome["answer"] == {**outcome["answer"], "status": "error", "error": "Programmatic execution request cancelled"}


def test_a_client_that_never_continues_costs_at_most_one_timeout(server, api):
    import sqlite3

    db_path = sqlite_of(server)
    start(api, "await get_weather(city='never')", body={"timeout": 1500})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with sqlite3.connect(db_path, timeout=20) as db:
            left = db.execute("SELECT count(*) FROM programmatic_programmaticrun").fetchone()[0]
        if left == 0:
            break
        time.sleep(0.5)
    assert left == 0, "the abandoned run was not reaped"
    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["slots"]["free"] == health["slots"]["total"], health["slots"]


def test_a_run_whose_worker_died_while_ending_it_is_ended_by_the_reaper(server, api):
    """A worker killed between marking a run "ending" and releasing it leaves the row as the
    UPDATE below does (state "ending", its time to end it past). Before, nothing ever looked at an
    "ending" run again: its slot stayed leased for SANDBOX_PTC_MAX_RUN_S."""
    import sqlite3
    from datetime import datetime, timedelta, timezone

    db_path = sqlite_of(server)
    start(api, "await get_weather(city='stuck')", body={"timeout": 30000})
    held = requests.get(server.url + "/health", timeout=10).json()["slots"]
    assert held["free"] < held["total"], "the run holds a slot"
    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(db_path, timeout=20) as db:
        assert db.execute("UPDATE programmatic_programmaticrun SET state = 'ending', token_hash = '', step_deadline = ?",
                          (past,)).rowcount == 1
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with sqlite3.connect(db_path, timeout=20) as db:
            left = db.execute("SELECT count(*) FROM programmatic_programmaticrun").fetchone()[0]
        slots = requests.get(server.url + "/health", timeout=10).json()["slots"]
        if left == 0 and slots["free"] == slots["total"]:
            break
        time.sleep(0.5)
    assert left == 0, "the run left ending was never ended"
    assert slots["free"] == slots["total"], slots


@pytest.mark.parametrize("body,message", [
    ({"code": "print(1)", "tools": []}, "tools"),
    ({"code": "", "tools": [WEATHER]}, "code"),
    ({"code": "print(1)", "tools": [WEATHER], "lang": "ruby"}, "Unsupported language"),
    ({"code": "print(1)", "tools": [WEATHER, {**WEATHER, "name": "get_weather"}]}, "both become"),
    ({"code": "print(1)", "tools": [{"description": "no name"}]}, "name"),
    ({"continuation_token": "x", "tool_results": []}, "non-empty"),
])
def test_bad_requests_are_400(api, body, message):
    response = api.post("/exec/programmatic", json=body)
    assert response.status_code == 400 and message in json.dumps(response.json()), response.text


def test_a_user_has_a_bounded_number_of_runs_at_once():
    live = LiveServer(SANDBOX_PTC_RUNS_PER_USER="1").start()
    try:
        client = Client(live)
        first = start(client, "await get_weather(city='x')", body={"user_id": "alice", "timeout": 6000})
        second = client.post("/exec/programmatic", json={"code": "print(1)", "tools": [WEATHER], "user_id": "alice"})
        assert second.status_code == 429 and second.json()["error"] == "rate_limited", second.text
        other = drive(client, {"code": "print('bob ran')", "user_id": "bob"})[0]
        assert other["stdout"] == "bob ran\n"
        client.post("/exec/programmatic", json={"continuation_token": first["continuation_token"],
                                                "tool_results": [tools_answer(c) for c in first["tool_calls"]]})
    finally:
        live.stop()


def test_programmatic_runs_leave_slots_for_exec():
    live = LiveServer(SANDBOX_MAX_CONCURRENT_EXECUTIONS="2", SANDBOX_QUEUE_TIMEOUT_MS="500").start()
    try:
        client = Client(live)
        first = start(client, "await get_weather(city='x')", body={"user_id": "alice", "timeout": 8000})
        second = client.post("/exec/programmatic", json={"code": "print(1)", "tools": [WEATHER], "user_id": "bob"})
        assert second.status_code == 429 and "programmatic" in second.json()["message"], second.text
        assert client.exec("py", "print('exec still runs')")["stdout"] == "exec still runs\n"
        client.post("/exec/programmatic", json={"continuation_token": first["continuation_token"],
                                                "tool_results": [tools_answer(c) for c in first["tool_calls"]]})
        assert drive(client, {"code": "print('now bob')", "user_id": "bob"})[0]["stdout"] == "now bob\n"
    finally:
        live.stop()


def test_the_audit_trail_records_round_trips_and_tool_names_not_results(server, api):
    from tests.audit.conftest import wait_for_rows

    agent = f"ptc-audit/{uuid.uuid4().hex}"
    client = Client(server, headers={"X-API-Key": CANARY_KEY, "User-Agent": agent})
    final, _ = drive(client, {"code": "a = await get_weather(city='Secretville')\nb = await get_weather(city='x')\nprint('ok')"})
    assert final["status"] == "completed", final
    rows = wait_for_rows(server, 1, "userAgent = ? AND action = ?", (agent, "programmatic"))
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["details"]["roundTrips"] == 2 and row["details"]["toolCalls"] == 2
    assert row["details"]["tools"] == ["get-weather", "explode"]
    assert "Secretville" not in json.dumps(row) and "sunny" not in json.dumps(row)
    assert row["sessionId"] == final["session_id"] and row["execution"]["lang"] == "py"


def test_a_run_of_another_replica_is_left_to_it(server, api):
    """Only the server whose sandbox it is continues, cancels or reaps a run (docs/SCALING.md)."""
    import sqlite3

    db_path = sqlite_of(server)
    request_id = str(uuid.uuid4())
    waiting = start(api, "await get_weather(city='far')", body={"timeout": 1500},
                    headers={"X-LibreChat-Code-Request-ID": request_id})

    def set_host(value=None):
        with sqlite3.connect(db_path, timeout=20) as db:
            if value is not None:
                db.execute("UPDATE programmatic_programmaticrun SET host = ?", (value,))
            return db.execute("SELECT count(*) FROM programmatic_programmaticrun").fetchone()[0]

    (own_host,) = sqlite3.connect(db_path).execute(
        "SELECT host FROM programmatic_programmaticrun").fetchone()
    set_host("another-replica:/srv/codeinterp")
    results = [tools_answer(c) for c in waiting["tool_calls"]]
    elsewhere = api.post("/exec/programmatic", json={"continuation_token": waiting["continuation_token"], "tool_results": results})
    assert elsewhere.status_code == 421 and elsewhere.json()["error"] == "misdirected_request", elsewhere.text
    assert api.post("/exec/programmatic/cancel", json={"request_id": request_id}).status_code == 421
    time.sleep(4)  # past its step deadline (1.5 s) and the reaper's rounds: not this server's to reap
    assert set_host() == 1
    set_host(own_host)
    deadline = time.monotonic() + 20
    while set_host() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert set_host() == 0, "its own server reaps it"
