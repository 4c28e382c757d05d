"""Programmatic runs against a hostile program and hostile clients: what an attacker's review
found (each failed before its fix).

- a program that writes a deeply nested calls line ends its own run, never a 500;
- the per-user and per-server caps hold under concurrent starts (reserve, then verify);
- tool lists are bounded and checked before any sandbox starts;
- a continuation refused for its request id leaves the token usable;
- a NUL in `user_id` is refused as /exec refuses it.
"""

from __future__ import annotations

import concurrent.futures
import uuid

import pytest
import requests

from tests.api.test_programmatic import WEATHER, drive, tools_answer
from tests.liveserver import Client, LiveServer


def test_a_deeply_nested_calls_line_ends_the_run(api):
    code = ("import os, time\nfd = os.open('/mnt/code/.calls', os.O_WRONLY)\n"
            "os.write(fd, b'{\"calls\": ' + b'[' * 100000 + b'\\n')\ntime.sleep(5)\n")
    final, batches = drive(api, {"code": code})
    assert batches == [] and final["status"] == "error", final
    assert final["error"].startswith("sandbox emitted an empty pending tool call block")
    health = requests.get(api.server.url + "/health", timeout=10).json()
    assert health["slots"]["free"] == health["slots"]["total"], health["slots"]


def _burst(client, users):
    def one(user):
        return client.post("/exec/programmatic", json={
            "code": "await get_weather(city='slow')", "tools": [WEATHER], "timeout": 8000, "user_id": user})

    with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
        answers = list(pool.map(one, users))
    assert {a.status_code for a in answers} <= {200, 429}, [a.text for a in answers if a.status_code not in (200, 429)]
    return [a.json() for a in answers if a.status_code == 200 and a.json().get("status") == "tool_call_required"]


@pytest.mark.parametrize("users,cap", [(["alice"] * 8, 1), ([f"user{i}" for i in range(16)], 2)])
def test_concurrent_starts_cannot_exceed_the_programmatic_caps(users, cap):
    # one run per user; the programmatic share is half of the 4 slots: 2
    live = LiveServer(SANDBOX_MAX_CONCURRENT_EXECUTIONS="4", SANDBOX_PTC_RUNS_PER_USER="1",
                      SANDBOX_QUEUE_TIMEOUT_MS="2000", SANDBOX_POOL="").start()
    try:
        client = Client(live)
        seen = []
        for _ in range(3):  # a race: a few bursts
            waiting = _burst(client, users)
            exec_answer = client.post("/exec", json={"lang": "bash", "code": "echo exec"})
            for run in waiting:
                client.post("/exec/programmatic", json={"continuation_token": run["continuation_token"],
                                                        "tool_results": [tools_answer(c) for c in run["tool_calls"]]})
            seen.append((len(waiting), exec_answer.status_code))
        assert all(1 <= n <= cap for n, _ in seen), seen  # (runs waiting at once, /exec's status)
        assert all(status == 200 for _, status in seen), seen  # /exec always keeps the rest
    finally:
        live.stop()


@pytest.mark.parametrize("tool,message", [
    ({"name": "t", "parameters": {"type": "object", "properties": ["x"]}}, "properties"),
    ({"name": "t", "parameters": {"type": "object", "properties": {"x": {}}, "required": [[1]]}}, "required"),
    ({"name": "t", "parameters": "object"}, "parameters"),
    ({"name": "t\u0000x"}, "NUL"),
])
def test_tool_definitions_the_runner_cannot_use_are_400(api, tool, message):
    response = api.post("/exec/programmatic", json={"code": "print(1)", "tools": [tool]})
    assert response.status_code == 400 and message in response.json()["message"], response.text


def test_a_huge_tool_list_is_400_before_any_sandbox(api):
    tools = [{"name": f"t{i}", "parameters": {"type": "object", "properties": {"x": {"description": "y" * 200_000}}}}
             for i in range(20)]  # ~4 MB of schemas
    response = api.post("/exec/programmatic", json={"code": "print(1)", "tools": tools})
    assert response.status_code in (400, 413), response.text[:300]


@pytest.mark.parametrize("body,message", [
    ({"code": "print(1)\u0000", "tools": [WEATHER]}, "NUL"),
    ({"code": "print(1)", "tools": [WEATHER], "user_id": "al\u0000ice"}, "NUL"),
])
def test_nul_characters_are_400(api, body, message):
    response = api.post("/exec/programmatic", json=body)
    assert response.status_code == 400 and message in response.json()["message"], response.text


def test_a_refused_continuation_does_not_use_up_the_token(api):
    request_id = str(uuid.uuid4())
    first = api.post("/exec/programmatic", json={"code": "r = await get_weather(city='a')\nprint(r['city'])",
                                                 "tools": [WEATHER], "timeout": 4000},
                     headers={"X-LibreChat-Code-Request-ID": request_id}).json()
    body = {"continuation_token": first["continuation_token"], "tool_results": [tools_answer(c) for c in first["tool_calls"]]}
    reused = api.post("/exec/programmatic", json=body, headers={"X-LibreChat-Code-Request-ID": request_id})
    assert reused.status_code == 409, reused.text
    retry = api.post("/exec/programmatic", json=body, headers={"X-LibreChat-Code-Request-ID": str(uuid.uuid4())})
    assert retry.status_code == 200 and retry.json()["stdout"] == "a\n", retry.text
