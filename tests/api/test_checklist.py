"""One HTTP test per item 1-28 of the conformance checklist (spec §13), against the live server."""

import re
from datetime import datetime, timedelta, timezone

import pytest
import requests

from tests.liveserver import CANARY_KEY, Client, paths_under

ID = re.compile(r"^[A-Za-z0-9_-]{21}$")


def upload_csv(api, name="data.csv", content=b"x,y\n1,2\n3,4\n", **fields):
    return api.upload(name, content, **fields)


# -- 1-4: ids, routing, auth -------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "/v1", "/v1/", "//v1", "/"])
def test_01_routes_with_and_without_v1_and_odd_slashes(server, prefix):
    client = Client(server, prefix=prefix)
    response = client.post("/exec/", json={"lang": "py", "code": "print(1)"})
    assert response.status_code == 200, response.text
    assert client.get("//health").status_code == 200


def test_02_ids_are_21_nanoid_characters(api):
    up = upload_csv(api)
    run = api.exec("py", "open('o.txt','w').write('1')")
    for value in (up["session_id"], up["storage_session_id"], up["files"][0]["fileId"], run["session_id"], run["files"][0]["id"]):
        assert ID.match(value), value


@pytest.mark.parametrize("headers", [
    {"X-API-Key": CANARY_KEY},
    {"Authorization": f"Bearer {CANARY_KEY}"},
    {"X-API-Key": CANARY_KEY, "Authorization": "Bearer something-else"},  # never 400 on "ambiguous"
])
def test_03_auth_header_kinds(server, headers):
    client = Client(server, headers=headers)
    assert client.post("/exec", json={"lang": "py", "code": "print(1)"}).status_code == 200


def test_03_missing_or_wrong_credentials_are_401_json(server):
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        response = Client(server, headers=headers).post("/exec", json={"lang": "py", "code": "print(1)"})
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        assert "wrong" not in response.text


def test_04_unknown_fields_params_and_headers_are_ignored(api):
    response = api.post(
        "/exec?kind=user&id=u&version=3&entity_id=e&detail=x",
        json={"lang": "py", "code": "print(2)", "LIBRECHAT_CODE_API_KEY": "x", "runtime_session_hint": "c1", "whatever": {"a": 1}},
        headers={"X-CodeAPI-Expected-Profile": "default", "X-LibreChat-Code-Request-ID": "r", "User-Agent": "LibreChat/1.0"},
    )
    assert response.status_code == 200 and response.json()["stdout"] == "2\n"


# -- 5-7: upload -------------------------------------------------------------------------------
def test_05_upload_shape_and_default_kind(api):
    body = upload_csv(api)
    assert body["message"] == "success"
    assert body["session_id"] == body["storage_session_id"]
    assert body["files"][0]["filename"] == "data.csv" and ID.match(body["files"][0]["fileId"])
    era_c = api.post("/upload", data={"kind": "agent", "id": "agent_1"}, files={"file": ("a.txt", b"a")})
    assert era_c.status_code == 200 and era_c.json()["message"] == "success"
    era_a = api.post("/upload", data={"entity_id": "asst_1"}, files={"file": ("b.txt", b"b")})
    assert era_a.status_code == 200


def test_06_relative_paths_unicode_names_and_oversize(api, server):
    body = api.upload("dir/sub/données ü.csv", b"1")
    assert body["files"][0]["filename"] == "dir/sub/données ü.csv"
    run = api.exec("bash", "cat 'dir/sub/données ü.csv'", files=[{"id": body["files"][0]["fileId"], "session_id": body["session_id"], "name": "dir/sub/données ü.csv"}])
    assert run["stdout"] == "1"
    before = sorted(p.name for p in (server.storage / ".incoming").iterdir())
    big = api.post("/upload", files={"file": ("big.bin", b"0" * (6 << 20))})
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
    assert sorted(p.name for p in (server.storage / ".incoming").iterdir()) == before


def test_07_batch_upload(api):
    response = api.post(
        "/upload/batch",
        data={"kind": "skill", "id": "skill_1", "version": "2", "read_only": "true"},
        files=[("file", ("skills/s/SKILL.md", b"# s")), ("file", ("skills/s/run.py", b"print(1)")), ("file", ("../bad", b"x"))],
    )
    body = response.json()
    assert response.status_code == 200, body
    assert body["message"] == "partial_success" and body["succeeded"] == 2 and body["failed"] == 1
    assert ID.match(body["storage_session_id"])
    assert [f["status"] for f in body["files"]] == ["success", "success", "error"]
    # read_only inputs are always echoed as inherited, even when the code changes them
    refs = [{"id": f["fileId"], "storage_session_id": body["storage_session_id"], "name": f["filename"], "kind": "skill", "version": 2}
            for f in body["files"] if f["status"] == "success"]
    run = api.exec("bash", "echo more >> skills/s/SKILL.md; cat skills/s/SKILL.md", files=refs)
    assert "more" in run["stdout"]
    assert all(f.get("inherited") for f in run["files"]) and len(run["files"]) == 2


# -- 8-17: execution -------------------------------------------------------------------------
def test_08_exec_shape_and_unsupported_language(api):
    body = api.exec("py", "print('hi')")
    assert body["stdout"] == "hi\n" and body["stderr"] == "" and ID.match(body["session_id"])
    bad = api.post("/exec", json={"lang": "cobol", "code": "x"})
    assert bad.status_code == 400 and bad.json() == {"error": "Unsupported language: cobol"}


def test_09_failing_program_is_200_with_stderr(api):
    body = api.exec("py", "raise ValueError('boom')")
    assert "ValueError: boom" in body["stderr"]
    assert body["run"]["code"] == 1


def test_10_args_and_timeout(api):
    body = api.exec("py", "import sys; print(sys.argv[1:])", args=["a b", "c"], timeout=5000)
    assert body["stdout"] == "['a b', 'c']\n"
    assert api.post("/exec", json={"lang": "py", "code": "print(1)", "timeout": "soon"}).status_code == 200


def test_11_cwd_home_no_network_fresh_tmp(api):
    api.exec("bash", "echo secret > /tmp/left.txt")
    body = api.exec("bash", "pwd; echo $HOME; ls /tmp; cat /sys/class/net/*/operstate 2>/dev/null | wc -l")
    lines = body["stdout"].split("\n")
    assert lines[0] == "/mnt/data" and lines[1] == "/mnt/data"
    assert "left.txt" not in body["stdout"]


def test_12_inputs_materialised_both_ref_shapes_and_stale_session(api):
    up = upload_csv(api)
    fid, sid = up["files"][0]["fileId"], up["session_id"]
    other = api.exec("py", "print(1)")["session_id"]  # an unrelated, "stale" session id
    refs = [
        {"id": fid, "session_id": other, "name": "legacy/a.csv"},
        {"id": fid, "resource_id": "user-1", "storage_session_id": sid, "name": "deep/er/b.csv", "kind": "user"},
    ]
    body = api.exec("bash", "cat legacy/a.csv deep/er/b.csv | wc -l", files=refs)
    assert body["stdout"].strip() == "6"


def test_13_outputs_new_modified_inherited_deleted_and_code_file_hidden(api):
    a = api.upload("keep.csv", b"k\n")
    b = api.upload("change.txt", b"old\n")
    c = api.upload("gone.txt", b"bye\n")
    refs = [{"id": u["files"][0]["fileId"], "storage_session_id": u["session_id"], "name": u["files"][0]["filename"], "kind": "user"} for u in (a, b, c)]
    code = "import os\nopen('change.txt','w').write('new\\n')\nos.remove('gone.txt')\nos.makedirs('out', exist_ok=True)\nopen('out/r.csv','w').write('1')\nopen('noext','w').write('x')\n"
    body = api.exec("py", code, files=refs)
    by_name = {f["name"]: f for f in body["files"]}
    assert set(by_name) == {"keep.csv", "change.txt", "out/r.csv"}
    assert by_name["keep.csv"]["inherited"] is True and by_name["keep.csv"]["id"] == refs[0]["id"]
    assert by_name["change.txt"]["modified_from"]["id"] == refs[1]["id"] and by_name["change.txt"]["id"] != refs[1]["id"]
    for name in ("change.txt", "out/r.csv"):
        assert by_name[name]["storage_session_id"] == body["session_id"] == by_name[name]["session_id"]
    assert body["deleted_files"] == ["gone.txt"]
    assert "main.py" not in by_name
    assert {"name": "noext", "reason": "unsupported_extension"} in body["artifact_truncation"]


def test_13_output_caps(server):
    from tests.liveserver import LiveServer

    live = LiveServer(SANDBOX_MAX_OUTPUT_FILES="3", SANDBOX_MAX_OUTPUT_FILE_MB="1").start()
    try:
        body = Client(live).exec("py", "for i in range(5): open(f'f{i}.txt','w').write('x')\nopen('big.csv','wb').write(b'0' * (2 << 20))")
        assert len(body["files"]) == 3
        reasons = sorted(t["reason"] for t in body["artifact_truncation"])
        assert reasons == ["file_too_large", "max_files", "max_files"]
    finally:
        live.stop()


def test_14_matplotlib_savefig_returns_png(api):
    body = api.exec("py", "import matplotlib.pyplot as plt\nplt.plot([1,2])\nplt.savefig('x.png')")
    assert [f["name"] for f in body["files"]] == ["x.png"]


def test_15_bash_tools(api):
    body = api.exec("bash", "python3 -c 'print(40+2)'; echo aGk= | base64 -d; echo; echo '{\"a\":1}' | jq .a")
    assert body["stdout"].split() == ["42", "hi", "1"]


def test_16_output_limit_at_least_1_mib(api):
    body = api.exec("py", "print('z' * (900 * 1024))")
    assert len(body["stdout"]) == 900 * 1024 + 1 and not body["run"]["output_truncated"]


def test_17_timeout_is_200_with_stderr(api):
    body = api.exec("bash", "sleep 30", timeout=1000)
    assert "Time limit exceeded" in body["stderr"] and body["run"]["timed_out"]


# -- 18-22: download, freshness, listing, lifetime, delete ----------------------------------
def test_18_download_uploads_and_outputs_404_json(api):
    up = upload_csv(api)
    assert api.get(f"/download/{up['session_id']}/{up['files'][0]['fileId']}?kind=user&id=u").content == b"x,y\n1,2\n3,4\n"
    run = api.exec("py", "open('o.csv','w').write('a,b')", files=[{"id": up["files"][0]["fileId"], "session_id": up["session_id"], "name": "data.csv"}])
    out = [f for f in run["files"] if not f.get("inherited")][0]
    assert api.get(f"/download/{run['session_id']}/{out['id']}").content == b"a,b"
    # older LibreChat downloads inherited inputs under the exec session id too
    assert api.get(f"/download/{run['session_id']}/{up['files'][0]['fileId']}").status_code == 200
    missing = api.get(f"/download/{run['session_id']}/AAAAAAAAAAAAAAAAAAAAA")
    assert missing.status_code == 404 and missing.json()["error"] == "File not found"


def test_19_object_metadata(api):
    up = upload_csv(api)
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    meta = api.get(f"/sessions/{sid}/objects/{fid}?kind=user&id=u").json()
    modified = datetime.fromisoformat(meta["lastModified"].replace("Z", "+00:00"))
    assert datetime.now(timezone.utc) - modified < timedelta(minutes=5)
    assert meta["name"] == f"{sid}/{fid}.csv" and meta["size"] == 12 and meta["contentType"] == "text/csv"
    run = api.exec("py", "open('p.txt','w').write('1')")
    out = run["files"][0]
    assert api.get(f"/sessions/{run['session_id']}/objects/{out['id']}").status_code == 200
    assert api.get(f"/sessions/{sid}/objects/AAAAAAAAAAAAAAAAAAAAA").status_code == 404


@pytest.mark.parametrize("detail", ["simple", "summary", "full", "normalized"])
def test_20_file_listing(api, detail):
    up = upload_csv(api, "a.csv")
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    items = api.get(f"/files/{sid}?detail={detail}&entity_id=x").json()
    assert len(items) == 1
    if detail == "simple":
        assert items == [f"{sid}/{fid}.csv"]
        return
    item = items[0]
    assert item["id"] == fid and item["storage_session_id"] == sid == item["session_id"]
    datetime.fromisoformat(item["lastModified"].replace("Z", "+00:00"))
    if detail == "normalized":
        assert item["name"] == "a.csv"
    else:
        assert item["name"].startswith(f"{sid}/{fid}")
    if detail == "full":
        assert item["metadata"]["original-filename"] == "a.csv"


def test_21_files_live_for_at_least_24_hours(server, api):
    up = upload_csv(api)
    out = server.manage("shell", "-c", (
        "from storage.models import StoredFile; from django.utils import timezone;"
        f"f = StoredFile.objects.get(pk='{up['files'][0]['fileId']}');"
        "print(int((f.expires_at - timezone.now()).total_seconds()))"
    ))
    assert int(out.stdout.split()[-1]) > 24 * 3600 - 120


@pytest.mark.parametrize("route", ["/sessions/{sid}/objects/{fid}", "/files/{sid}/{fid}"])
def test_22_delete_routes(api, server, route):
    up = upload_csv(api)
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    path = route.format(sid=sid, fid=fid)
    first = api.delete(path + "?kind=user&id=u")
    assert first.status_code == 200 and first.json()["message"] == "File deleted successfully"
    assert api.delete(path).status_code == 404
    assert api.get(f"/download/{sid}/{fid}").status_code == 404
    assert not [p for p in paths_under(server.storage) if p.name.startswith(fid)]


# -- 23-24: errors -------------------------------------------------------------------------
def test_23_every_error_is_small_json(api, server):
    responses = [
        api.post("/exec", json={"lang": "nope", "code": ""}),
        api.get("/download/bad/ids"),
        api.get("/no/such/route"),
        api.post("/upload", data={"x": "1"}),
        requests.post(server.url + "/exec", json={}),
        api.post("/exec", data=b"{not json", headers={"Content-Type": "application/json"}),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500
        assert len(response.content) < 64 * 1024
        assert "error" in response.json(), response.text


def test_24_status_semantics(api):
    assert api.post("/exec", json={"lang": "py"}).status_code == 400
    assert api.post("/exec", json={"lang": "py", "code": 5}).status_code == 400
    assert api.post("/exec", json={"lang": "py", "code": "", "files": [{"id": "AAAAAAAAAAAAAAAAAAAAA", "name": "x"}]}).status_code == 404


# -- 25-28: scenarios ----------------------------------------------------------------------
def test_25_upload_then_read(api):
    up = upload_csv(api)
    ref = {"id": up["files"][0]["fileId"], "storage_session_id": up["session_id"], "resource_id": "user-1", "name": "data.csv", "kind": "user"}
    body = api.exec("py", "import pandas as pd\nprint(pd.read_csv('/mnt/data/data.csv')['y'].sum())", files=[ref])
    assert body["stdout"] == "6\n"
    assert body["files"] == [{**body["files"][0], "id": ref["id"], "name": "data.csv", "inherited": True}]


def test_26_and_27_generated_then_reused_and_modified(api):
    code = "import os, matplotlib.pyplot as plt\nplt.plot([1,3,2]); plt.savefig('plot.png')\nos.makedirs('out', exist_ok=True)\nopen('out/report.csv','w').write('a,b\\n1,2\\n')\n"
    first = api.exec("py", code)
    sid = first["session_id"]
    files = {f["name"]: f for f in first["files"]}
    assert set(files) == {"plot.png", "out/report.csv"}
    assert api.get(f"/download/{sid}/{files['plot.png']['id']}").content[:4] == b"\x89PNG"
    assert api.get(f"/download/{sid}/{files['out/report.csv']['id']}").content == b"a,b\n1,2\n"
    refs = [{"id": f["id"], "resource_id": f["id"], "storage_session_id": sid, "name": f["name"], "kind": "user"} for f in first["files"]]
    second = api.exec("py", "open('out/report.csv','a').write('3,4\\n')\nprint(open('out/report.csv').read())", files=refs)
    assert "3,4" in second["stdout"]
    changed = [f for f in second["files"] if f["name"] == "out/report.csv"][0]
    assert changed["modified_from"] == {"id": files["out/report.csv"]["id"], "storage_session_id": sid}
    assert api.get(f"/download/{second['session_id']}/{changed['id']}").content == b"a,b\n1,2\n3,4\n"
    assert [f for f in second["files"] if f["name"] == "plot.png"][0]["inherited"] is True


def test_28_freshness_both_generations(api):
    up = upload_csv(api)
    sid, fid = up["session_id"], up["files"][0]["fileId"]
    meta = api.get(f"/sessions/{sid}/objects/{fid}?kind=user&id=user-1").json()
    assert "lastModified" in meta
    summary = api.get(f"/files/{sid}?detail=summary").json()
    assert any(item["name"].startswith(f"{sid}/{fid}") for item in summary)
