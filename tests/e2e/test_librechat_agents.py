"""The real `@librechat/agents@3.9.2` code tools against our live server (spec §11, §13.25-29).

`drive_agents.mjs` builds `createCodeExecutionTool` / `createBashExecutionTool` with
`authHeaders: {'X-API-Key': key}` and invokes them with the ToolCall object ToolNode builds
(`session_id`, `_injected_files`), or runs the calls through a real `ToolNode`. Uploads are
made here with `requests` in the two multipart shapes LibreChat has used (era A and era C).
The content string the model sees and the artifact LibreChat processes are checked exactly
against the package's own formatting (src/tools/CodeExecutor.ts, CodeSessionFileSummary.ts).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.liveserver import CANARY_KEY

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "drive_agents.mjs"
NODE = shutil.which("node")
AGENTS_DIR = HERE / "node_modules" / "@librechat" / "agents"

pytestmark = pytest.mark.skipif(
    NODE is None or not AGENTS_DIR.is_dir(),
    reason=(
        "node is not installed" if NODE is None else
        f"{AGENTS_DIR.relative_to(HERE.parent.parent)} is missing: run `npm ci` in tests/e2e "
        "(scripts/setup.sh --dev does it)"
    ),
)

NANOID = re.compile(r"^[A-Za-z0-9_-]{21}$")
USER_ID = "user-e2e-0001"
AGENT_ID = "agent_e2e_0001"
LIBRECHAT_HEADERS = {"User-Agent": "LibreChat/1.0", "X-API-Key": CANARY_KEY}

DATA_CSV = b"city,temp,rain\nOslo,4.5,12\nRome,18.25,3\nLima,19.0,0\nCairo,26.75,1\n"
MEAN_TEMP = "17.125"  # (4.5 + 18.25 + 19.0 + 26.75) / 4
SUMMARY_CSV = b"metric,value\nmean_temp,17.125\ntotal_rain,16\nrows,4\n"
SUMMARY_CSV_V2 = SUMMARY_CSV + b"checked,yes\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CODE_1 = """\
import os
import pandas as pd
import matplotlib.pyplot as plt

df = pd.read_csv('/mnt/data/data.csv')
mean_temp = df['temp'].mean()
print(f"MEAN_TEMP={mean_temp:.3f}")
print(f"ROWS={len(df)}")

plt.figure(figsize=(4, 3))
plt.bar(df['city'], df['temp'])
plt.savefig('chart.png')

os.makedirs('out', exist_ok=True)
with open('out/summary.csv', 'w') as fh:
    fh.write("metric,value\\n")
    fh.write(f"mean_temp,{mean_temp:.3f}\\n")
    fh.write(f"total_rain,{int(df['rain'].sum())}\\n")
    fh.write(f"rows,{len(df)}\\n")
"""

CODE_2 = """\
import os
import pandas as pd

summary = pd.read_csv('/mnt/data/out/summary.csv')
data = pd.read_csv('/mnt/data/data.csv')
print(f"SUMMARY_ROWS={len(summary)}")
print(f"DATA_ROWS={len(data)}")
print(f"CHART_BYTES={os.path.getsize('/mnt/data/chart.png') > 0}")
with open('/mnt/data/out/summary.csv', 'a') as fh:
    fh.write("checked,yes\\n")
"""

BASH_COMMAND = "ls /mnt/data && cat /mnt/data/data.csv | wc -l"


def session_summary(files: int, images: int) -> str:
    """agents@3.9.2 src/tools/CodeSessionFileSummary.ts buildCodeSessionFileSummary."""
    return (
        "Generated files:\n"
        f"Session files: {files} persisted file(s) are available in /mnt/data, including {images} image(s). "
        "Use known /mnt/data paths directly in later code-tool calls. "
        "The app displays files/images automatically; do not invent download links or wrap generated images in Markdown."
    )


def drive(scenario: dict, timeout: int = 240) -> dict:
    """Runs drive_agents.mjs with the scenario on stdin; returns its JSON output."""
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("PROXY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
           and not k.startswith("LIBRECHAT_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    done = subprocess.run(
        [NODE, str(DRIVER)], input=json.dumps(scenario), capture_output=True, text=True,
        cwd=HERE, env=env, timeout=timeout,
    )
    assert done.returncode == 0, f"driver exited {done.returncode}\nstderr:\n{done.stderr[-4000:]}"
    try:
        out = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"driver printed no JSON:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}")
    assert out["agents_version"] == "3.9.2"
    for result in out["results"]:
        assert result["ok"], (
            f"{result['tool']} {result['id']} failed in @librechat/agents: "
            f"{result.get('error') or result.get('content')}\ndriver stderr:\n{done.stderr[-4000:]}"
        )
    return out


def scenario(server, calls: list[dict], **extra) -> dict:
    return {"base_url": server.url + "/v1", "api_key": CANARY_KEY, "user_id": USER_ID, "calls": calls, **extra}


def upload_era_c(server, name: str, content: bytes) -> dict:
    """LibreChat >= v0.8.6: text fields kind, id, then the `file` part (+ User-Id header)."""
    response = requests.post(
        server.url + "/v1/upload",
        headers={**LIBRECHAT_HEADERS, "User-Id": USER_ID},
        data={"kind": "user", "id": USER_ID},
        files={"file": (name, content)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "success", body
    return body


def upload_era_a(server, name: str, content: bytes, entity_id: str | None = AGENT_ID) -> dict:
    """LibreChat <= v0.8.5: optional text field entity_id, then the `file` part (+ User-Id)."""
    response = requests.post(
        server.url + "/v1/upload",
        headers={**LIBRECHAT_HEADERS, "User-Id": USER_ID},
        data={"entity_id": entity_id} if entity_id else {},
        files={"file": (name, content)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "success", body
    return body


def era_c_ref(upload: dict, name: str) -> dict:
    return {
        "id": upload["files"][0]["fileId"],
        "resource_id": USER_ID,
        "storage_session_id": upload["storage_session_id"],
        "name": name,
        "kind": "user",
    }


def era_a_ref(upload: dict, name: str) -> dict:
    return {"id": upload["files"][0]["fileId"], "session_id": upload["session_id"], "name": name}


def to_injected_file_ref(file: dict, exec_session_id: str) -> dict:
    """agents@3.9.2 src/tools/ToolNode.ts toInjectedFileRef (kind defaults to 'user')."""
    return {
        "id": file["id"],
        "resource_id": file.get("resource_id") or file["id"],
        "name": file["name"],
        "storage_session_id": file.get("storage_session_id") or exec_session_id,
        "kind": file.get("kind") or "user",
    }


def download(server, session_id: str, file_id: str, **query) -> bytes:
    """LibreChat processCodeOutput: GET /download/{artifact.session_id}/{file.id}."""
    response = requests.get(
        f"{server.url}/v1/download/{session_id}/{file_id}", params=query,
        headers=LIBRECHAT_HEADERS, timeout=60,
    )
    assert response.status_code == 200, f"download {session_id}/{file_id}: {response.status_code} {response.text[:500]}"
    return response.content


def by_name(artifact: dict) -> dict:
    files = artifact.get("files") or []
    names = [f["name"] for f in files]
    assert len(names) == len(set(names)), f"duplicate names in artifact files: {names}"
    return {f["name"]: f for f in files}


def check_generated(ref: dict, exec_sid: str) -> None:
    assert NANOID.match(ref["id"]), ref
    assert ref.get("inherited") is not True, ref
    assert ref.get("storage_session_id") == exec_sid, ref


def check_inherited(ref: dict, file_id: str, storage_sid: str) -> None:
    assert ref.get("inherited") is True, ref
    assert ref["id"] == file_id, ref
    assert ref.get("storage_session_id", ref.get("session_id")) == storage_sid, ref


def first_turn(server, upload_sid, csv_ref, tag):
    """execute_code then bash_tool, both with the uploaded CSV injected as ToolNode does."""
    out = drive(scenario(server, [
        {"tool": "execute_code", "id": f"call_py_{tag}", "args": {"lang": "py", "code": CODE_1},
         "session_id": upload_sid, "injected_files": [csv_ref]},
        {"tool": "bash_tool", "id": f"call_bash_{tag}", "args": {"command": BASH_COMMAND},
         "session_id": upload_sid, "injected_files": [csv_ref]},
    ]))
    return out["results"]


def test_execute_code_and_bash_tool_with_era_c_upload(server):
    upload = upload_era_c(server, "data.csv", DATA_CSV)
    upload_sid, data_id = upload["storage_session_id"], upload["files"][0]["fileId"]
    assert NANOID.match(upload_sid) and NANOID.match(data_id), upload
    csv_ref = era_c_ref(upload, "data.csv")

    # First turn: LibreChat primed the session with the uploaded file.
    py, bash = first_turn(server, upload_sid, csv_ref, "1")

    # --- execute_code: content string (spec §8), exactly as the package formats it.
    assert py["tool_call_id"] == "call_py_1"
    content = py["content"]
    assert content.startswith("stdout:\n"), content
    assert "stderr:" not in content, content
    assert f"MEAN_TEMP={MEAN_TEMP}" in content
    assert content == f"stdout:\nMEAN_TEMP={MEAN_TEMP}\nROWS=4\n\n" + session_summary(files=2, images=1), content

    # --- execute_code: artifact (generated + inherited).
    artifact = py["artifact"]
    exec_sid = artifact["session_id"]
    assert NANOID.match(exec_sid) and exec_sid != upload_sid, artifact
    files = by_name(artifact)
    assert set(files) == {"chart.png", "out/summary.csv", "data.csv"}, artifact
    check_generated(files["chart.png"], exec_sid)
    check_generated(files["out/summary.csv"], exec_sid)
    check_inherited(files["data.csv"], data_id, upload_sid)

    # --- LibreChat downloads each generated file under artifact.session_id.
    png = download(server, exec_sid, files["chart.png"]["id"], kind="user", id=USER_ID)
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert download(server, exec_sid, files["out/summary.csv"]["id"], kind="user", id=USER_ID) == SUMMARY_CSV

    # --- bash_tool with the injected upload.
    assert bash["tool_call_id"] == "call_bash_1"
    assert bash["content"] == "stdout:\ndata.csv\n5", bash["content"]
    bash_files = by_name(bash["artifact"])
    assert set(bash_files) == {"data.csv"}, bash["artifact"]
    check_inherited(bash_files["data.csv"], data_id, upload_sid)
    assert NANOID.match(bash["artifact"]["session_id"])

    # Second turn: ToolNode re-injects every ref of the session (generated refs with
    # kind 'user', resource_id = id, their storage session = the exec session) plus the csv.
    generated = [to_injected_file_ref(files[n], exec_sid) for n in ("chart.png", "out/summary.csv")]
    assert all(r["resource_id"] == r["id"] and r["storage_session_id"] == exec_sid for r in generated)
    out2 = drive(scenario(server, [
        {"tool": "execute_code", "id": "call_py_2", "args": {"lang": "py", "code": CODE_2},
         "session_id": exec_sid, "injected_files": [csv_ref, *generated]},
    ]))
    (py2,) = out2["results"]
    assert py2["content"] == (
        "stdout:\nSUMMARY_ROWS=3\nDATA_ROWS=4\nCHART_BYTES=True\n\n" + session_summary(files=1, images=0)
    ), py2["content"]
    exec2_sid = py2["artifact"]["session_id"]
    assert NANOID.match(exec2_sid) and exec2_sid not in (exec_sid, upload_sid)
    files2 = by_name(py2["artifact"])
    assert set(files2) == {"chart.png", "out/summary.csv", "data.csv"}, py2["artifact"]
    modified = files2["out/summary.csv"]
    check_generated(modified, exec2_sid)
    assert modified["id"] != files["out/summary.csv"]["id"], modified
    assert modified.get("modified_from") == {
        "id": files["out/summary.csv"]["id"], "storage_session_id": exec_sid,
    }, modified
    check_inherited(files2["chart.png"], files["chart.png"]["id"], exec_sid)
    check_inherited(files2["data.csv"], data_id, upload_sid)
    assert download(server, exec2_sid, modified["id"], kind="user", id=USER_ID) == SUMMARY_CSV_V2
    # The previous version stays downloadable where LibreChat stored it.
    assert download(server, exec_sid, files["out/summary.csv"]["id"], kind="user", id=USER_ID) == SUMMARY_CSV


def test_execute_code_and_bash_tool_with_era_a_upload(server):
    upload = upload_era_a(server, "data.csv", DATA_CSV)
    upload_sid, data_id = upload["session_id"], upload["files"][0]["fileId"]
    assert NANOID.match(upload_sid) and NANOID.match(data_id), upload
    assert upload.get("storage_session_id", upload_sid) == upload_sid, upload
    # Era A stored fileIdentifier "<session_id>/<fileId>?entity_id=<agent>" and downloads it so.
    assert download(server, upload_sid, data_id, entity_id=AGENT_ID) == DATA_CSV
    csv_ref = era_a_ref(upload, "data.csv")

    py, bash = first_turn(server, upload_sid, csv_ref, "a")
    assert py["content"] == f"stdout:\nMEAN_TEMP={MEAN_TEMP}\nROWS=4\n\n" + session_summary(files=2, images=1), py["content"]
    exec_sid = py["artifact"]["session_id"]
    files = by_name(py["artifact"])
    assert set(files) == {"chart.png", "out/summary.csv", "data.csv"}, py["artifact"]
    check_generated(files["chart.png"], exec_sid)
    check_generated(files["out/summary.csv"], exec_sid)
    check_inherited(files["data.csv"], data_id, upload_sid)
    # Era-A readers take session_id off file refs: it must name the same storage session.
    for ref in files.values():
        assert ref.get("session_id", ref["storage_session_id"]) == ref["storage_session_id"], ref
    assert download(server, exec_sid, files["chart.png"]["id"]).startswith(PNG_MAGIC)
    assert download(server, exec_sid, files["out/summary.csv"]["id"]) == SUMMARY_CSV

    assert bash["content"] == "stdout:\ndata.csv\n5", bash["content"]
    check_inherited(by_name(bash["artifact"])["data.csv"], data_id, upload_sid)


def test_real_toolnode_reinjects_generated_files(server):
    """The same two turns through the package's own ToolNode: it builds `_injected_files`
    from the previous artifact itself, and must end up with what we assumed above."""
    upload = upload_era_c(server, "data.csv", DATA_CSV)
    upload_sid, data_id = upload["storage_session_id"], upload["files"][0]["fileId"]
    csv_ref = era_c_ref(upload, "data.csv")

    out = drive(scenario(server, [
        {"tool": "execute_code", "id": "call_tn_1", "args": {"lang": "py", "code": CODE_1}},
        {"tool": "execute_code", "id": "call_tn_2", "args": {"lang": "py", "code": CODE_2}},
        {"tool": "bash_tool", "id": "call_tn_3", "args": {"command": "cat /mnt/data/out/summary.csv"}},
    ], mode="toolnode", session={"session_id": upload_sid, "files": [csv_ref]}))
    first, second, third = out["results"]

    assert first["received"] == {"session_id": upload_sid, "_injected_files": [csv_ref]}, first["received"]
    assert first["content"] == f"stdout:\nMEAN_TEMP={MEAN_TEMP}\nROWS=4\n\n" + session_summary(files=2, images=1)
    exec_sid = first["artifact"]["session_id"]
    files = by_name(first["artifact"])

    received = second["received"]
    assert received["session_id"] == exec_sid, received
    injected = {ref["name"]: ref for ref in received["_injected_files"]}
    assert injected == {
        "data.csv": csv_ref,
        "chart.png": to_injected_file_ref(files["chart.png"], exec_sid),
        "out/summary.csv": to_injected_file_ref(files["out/summary.csv"], exec_sid),
    }, received
    assert second["content"] == (
        "stdout:\nSUMMARY_ROWS=3\nDATA_ROWS=4\nCHART_BYTES=True\n\n" + session_summary(files=1, images=0)
    ), second["content"]
    exec2_sid = second["artifact"]["session_id"]
    modified = by_name(second["artifact"])["out/summary.csv"]
    assert modified["id"] != files["out/summary.csv"]["id"]
    assert modified.get("modified_from") == {"id": files["out/summary.csv"]["id"], "storage_session_id": exec_sid}

    # Third call: ToolNode replaced the old summary ref by the modified one (same name).
    injected3 = {ref["name"]: ref for ref in third["received"]["_injected_files"]}
    assert injected3["out/summary.csv"]["id"] == modified["id"], third["received"]
    assert injected3["out/summary.csv"]["storage_session_id"] == exec2_sid
    assert injected3["data.csv"]["id"] == data_id
    assert third["content"] == "stdout:\n" + SUMMARY_CSV_V2.decode().rstrip("\n"), third["content"]

    session = out["session"]
    assert {f["name"]: f["id"] for f in session["files"]} == {
        "data.csv": data_id, "chart.png": files["chart.png"]["id"], "out/summary.csv": modified["id"],
    }, session
