"""The compose stack as a LibreChat administrator runs it (docker/compose.yml), brought up by
scripts/compose-test.sh: the audit documents reach the MongoDB-compatible store (SecantusDB in
CI, not MongoDB itself) and show in the admin, files outlive `down`/`up`, and a sandbox started
by the containerised server is as confined as one started by a host install."""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
import uuid

import pymongo
import pytest
import requests

from tests.liveserver import CANARY_KEY, Client, ExternalServer

COMMAND = shlex.split(os.environ.get("COMPOSE_TEST_COMMAND", ""))
if not (COMMAND and os.environ.get("SANDBOX_TEST_URL") and os.environ.get("MONGO_URI")):
    pytest.skip("run by scripts/compose-test.sh, which brings the compose stack up first", allow_module_level=True)


def compose(*args: str) -> str:
    done = subprocess.run([*COMMAND, *args], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def stack() -> ExternalServer:
    server = ExternalServer()
    server.container = compose("ps", "-q", "sandbox").strip()  # a new one after down/up
    return server.start()


@pytest.fixture
def tagged(stack) -> Client:
    client = Client(stack, headers={"X-API-Key": CANARY_KEY, "User-Agent": f"compose-test/{uuid.uuid4().hex}"})
    client.agent = client.http.headers["User-Agent"]
    return client


def audit_documents(query: dict, count: int) -> list[dict]:
    with pymongo.MongoClient(os.environ["MONGO_URI"], serverSelectionTimeoutMS=5000) as client:
        collection = client.get_default_database()["sandbox_audit_logs"]
        deadline = time.monotonic() + 20
        while collection.count_documents(query) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        return list(collection.find(query).sort("createdAt", 1))


def test_audit_documents_land_in_the_store(stack, tagged):
    up = tagged.upload("audit.txt", b"to the store")
    ran = tagged.exec("py", "print(open('audit.txt').read())",
                      files=[{"id": up["files"][0]["fileId"], "session_id": up["session_id"], "name": "audit.txt"}])
    assert ran["stdout"] == "to the store\n"
    docs = audit_documents({"userAgent": tagged.agent}, 2)
    assert [d["action"] for d in docs] == ["upload", "exec"]
    assert docs[0]["file"]["filename"] == "audit.txt" and docs[1]["execution"]["exitCode"] == 0
    audit = requests.get(stack.url + "/health", timeout=10).json()["audit"]
    assert audit["store"] == "mongodb" and audit["ok"] is True


def test_the_admin_shows_the_store_s_entries(stack, tagged):
    ran = tagged.exec("bash", "echo admin", user_id="compose-admin-user")
    audit_documents({"sessionId": ran["session_id"]}, 1)
    username, password = f"admin-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    done = stack.manage("createsuperuser", "--noinput", "--username", username, "--email", "a@example.com",
                        DJANGO_SUPERUSER_PASSWORD=password)
    assert done.returncode == 0, done.stderr
    from tests.audit.test_mongodb import chromium_or_skip

    sync_playwright, executable, args = chromium_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page()
            page.goto(stack.url + "/admin/login/")
            page.fill("#id_username", username)
            page.fill("#id_password", password)
            page.click("input[type=submit]")
            page.wait_for_selector("#site-name")
            page.goto(stack.url + "/admin/audit/auditlog/?q=" + ran["session_id"])
            rows = page.locator("#result_list tbody tr")
            assert rows.count() == 1
            assert "exec" in rows.first.inner_text() and "compose-admin-user" in rows.first.inner_text()
        finally:
            browser.close()


def test_the_service_name_is_an_allowed_host(stack):
    """LibreChat's container calls http://sandbox:3081: compose.yml allows that Host header;
    a name nobody configured is still refused (DNS rebinding)."""
    assert requests.get(stack.url + "/health", headers={"Host": "sandbox:3081"}, timeout=10).status_code == 200
    assert requests.get(stack.url + "/health", headers={"Host": "rebound.example"}, timeout=10).status_code == 400


def test_a_sandbox_is_confined_as_on_a_host_install(stack, tagged):
    """The containerised server's grants (socket, SYS_ADMIN, the volume) do not reach the
    sandbox: the same uid, no capabilities, no network, no host path, no socket."""
    ran = tagged.exec("bash", "id -u; grep CapEff /proc/self/status; ls /sys/class/net; "
                              "cat /proc/self/mountinfo; ls -la /var/run/docker.sock 2>&1; echo end")
    out = ran["stdout"]
    lines = out.splitlines()
    assert int(lines[0]) >= 1000  # the slot's own host uid, never root
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert lines[2] == "lo"
    assert "docker.sock" in out and "No such file" in out
    assert stack.data_dir.as_posix() not in out and "/volumes/" not in out
    assert lines[-1] == "end"


def test_files_survive_down_and_up(stack, tagged):
    up = tagged.upload("kept.csv", b"a,b\n1,2\n")
    ref = {"id": up["files"][0]["fileId"], "session_id": up["session_id"], "name": "kept.csv"}
    ran = tagged.exec("py", "open('made.txt', 'w').write('made before')\nprint('ok')", files=[ref])
    made = next(f for f in ran["files"] if f["name"] == "made.txt")
    before = stack.container
    compose("down")  # containers and the network go, the named volume stays
    compose("up", "-d", "--no-build", "sandbox")
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(stack.url + "/health", timeout=5).status_code == 200:
                break
        except requests.RequestException:  # not listening yet
            pass
        assert time.monotonic() < deadline, "the server did not come back within 120 s"
        time.sleep(1)
    after = ExternalServer()
    after.container = compose("ps", "-q", "sandbox").strip()
    assert after.container and after.container != before
    api = Client(after)
    assert api.get(f"/download/{up['session_id']}/{ref['id']}").content == b"a,b\n1,2\n"
    assert api.get(f"/download/{ran['session_id']}/{made['id']}").content == b"made before"
    again = api.exec("py", "print(open('kept.csv').read().split()[1])", files=[ref])
    assert again["stdout"] == "1,2\n"


def test_the_server_image_holds_no_compiler_or_test_tool():
    image = os.environ.get("SANDBOX_SERVER_IMAGE", "librechat/sandbox-server:latest")
    tools = ["gcc", "cc", "c++", "g++", "clang", "make", "rustc", "go", "javac", "node", "npm", "pytest", "pip", "bwrap"]
    done = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                           'for t in "$@"; do command -v "$t"; done; true', "sh", *tools],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"found in {image}: {done.stdout.split()}"
