"""Bad input gets a clear 4xx JSON error and leaves no file behind."""

import pytest

LONG = "a" * 300 + ".csv"


def storage_files(server):
    return sorted(p for p in server.storage.rglob("*") if p.is_file())


@pytest.fixture
def unchanged_storage(server):
    before = storage_files(server)
    yield
    assert storage_files(server) == before, "a rejected request left a file behind"


@pytest.mark.parametrize("name", ["../etc/passwd", "a/../../b.txt", "/etc/passwd", "a\\b.txt", "nul\x00.txt", LONG,
                                  "a//b.txt", "./x.txt", "/".join(["d"] * 11) + "/f.txt"])
def test_upload_rejects_bad_names(api, unchanged_storage, name):
    response = api.post("/upload", files={"file": (name, b"data")})
    assert response.status_code == 400, (name, response.text)
    assert response.json()["error"] == "Invalid file name"


def test_broken_multipart(api, unchanged_storage):
    body = b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nunterminated"
    response = api.post("/upload", data=body, headers={"Content-Type": "multipart/form-data; boundary=XYZ"})
    assert response.status_code == 400 and "error" in response.json()
    response = api.post("/upload", data=b"garbage", headers={"Content-Type": "multipart/form-data"})
    assert response.status_code == 400 and "error" in response.json()


def test_missing_file_part_and_wrong_content_type(api, unchanged_storage):
    response = api.post("/upload", files={"other": ("a.txt", b"x")})
    assert response.status_code == 400 and response.json()["error"] == "No file uploaded"
    response = api.post("/upload", json={"file": "x"})
    assert response.status_code == 400 and response.json()["error"] == "Invalid content type"


def test_bad_kind_and_version(api, unchanged_storage):
    assert api.post("/upload", data={"kind": "root"}, files={"file": ("a.txt", b"x")}).status_code == 400
    assert api.post("/upload", data={"kind": "skill", "version": "1.2"}, files={"file": ("a.txt", b"x")}).status_code == 400


def test_oversize_body_refused_up_front_and_midway(api, server, unchanged_storage):
    response = api.post("/upload", files={"file": ("big.bin", b"1" * (7 << 20))})
    assert response.status_code == 413
    # A batch whose parts only add up past the limit is stopped mid-stream too.
    parts = [("file", (f"p{i}.bin", b"2" * (2 << 20))) for i in range(4)]
    response = api.post("/upload/batch", files=parts)
    assert response.status_code == 413
    assert not list((server.storage / ".incoming").iterdir())


@pytest.mark.parametrize("route", ["/download/{s}/{f}", "/sessions/{s}/objects/{f}"])
@pytest.mark.parametrize("sid,fid", [("short", "AAAAAAAAAAAAAAAAAAAAA"), ("AAAAAAAAAAAAAAAAAAAAA", "bad.id.with.dots...."),
                                     ("AAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA")])
def test_ids_of_the_wrong_shape(api, route, sid, fid):
    response = api.get(route.format(s=sid, f=fid))
    assert response.status_code == 400 and response.json()["error"] == "Bad request"


def test_unknown_ids(api):
    for route in ("/download/{s}/{f}", "/sessions/{s}/objects/{f}"):
        response = api.get(route.format(s="AAAAAAAAAAAAAAAAAAAAA", f="BBBBBBBBBBBBBBBBBBBBB"))
        assert response.status_code == 404 and response.json()["error"] == "File not found"
    assert api.get("/files/AAAAAAAAAAAAAAAAAAAAA?detail=summary").json() == []
    assert api.delete("/files/AAAAAAAAAAAAAAAAAAAAA/BBBBBBBBBBBBBBBBBBBBB").status_code == 404


@pytest.mark.parametrize("body", [
    [], "text", {"lang": 3, "code": "x"}, {"lang": "py", "code": ["x"]}, {"lang": "py", "code": "x", "args": {"a": 1}},
    {"lang": "py", "code": "x", "files": "nope"}, {"lang": "py", "code": "x", "files": [1]},
    {"lang": "py", "code": "x", "files": [{"id": "short", "name": "a"}]},
])
def test_wrong_json_types(api, unchanged_storage, body):
    response = api.post("/exec", json=body)
    assert response.status_code == 400, response.text
    assert "error" in response.json()


@pytest.mark.parametrize("name", ["../x.csv", "/abs.csv", "a\\b.csv", "n\x00.csv", LONG, ""])
def test_exec_rejects_bad_input_names(api, name):
    up = api.upload("ok.csv", b"1")
    response = api.post("/exec", json={"lang": "py", "code": "print(1)", "files": [
        {"id": up["files"][0]["fileId"], "session_id": up["session_id"], "name": name}]})
    if name == "":  # an empty name falls back to the stored name
        assert response.status_code == 200
        return
    assert response.status_code == 400 and "file name" in response.json()["message"]


def test_json_body_over_the_limit(server):
    from tests.liveserver import Client, LiveServer

    live = LiveServer(SANDBOX_MAX_JSON_MB="1").start()
    try:
        response = Client(live).post("/exec", json={"lang": "py", "code": "#" * (2 << 20)})
        assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    finally:
        live.stop()


def test_inputs_larger_than_the_work_area_are_413(api):
    up = api.upload("chunk.bin", b"\0" * ((5 << 20) - 4096))
    refs = [{"id": up["files"][0]["fileId"], "session_id": up["session_id"], "name": f"copy{i}.bin"} for i in range(20)]
    response = api.post("/exec", json={"lang": "py", "code": "print(1)", "files": refs})
    assert response.status_code == 413, response.text
    assert "SANDBOX_DISK_MB" in response.json()["message"]


def test_overlong_java_class_name_is_400(api):
    name = "C" * 300
    response = api.post("/exec", json={"lang": "java", "code": f"public class {name} {{ public static void main(String[] a) {{}} }}"})
    assert response.status_code == 400, response.text
