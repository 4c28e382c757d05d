"""The MongoDB audit store against a real MongoDB-wire-protocol server.

With MONGO_URI set (e.g. MONGO_URI=mongodb://localhost:27017 scripts/test.sh tests/audit) these
run against that server, a real MongoDB. Without it (CI) they start SecantusDB, a
MongoDB-compatible server (tests/mongo_store.py says what it is and why): CI tests the audit
path against a MongoDB-compatible server, not MongoDB itself. Each run uses its own database
and drops it afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest
import requests

from tests import mongo_store
from tests.liveserver import Client, LiveServer

from .conftest import scrape, value

MONGO_URI = os.environ.get("MONGO_URI", "").strip()


def with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="module")
def store_uri():
    """MONGO_URI, or a SecantusDB started for this module (never a skip: a missing
    SecantusDB is a failed set-up, scripts/setup.sh --dev installs it)."""
    if MONGO_URI:
        yield MONGO_URI
        return
    reason = mongo_store.missing()
    if reason:
        pytest.fail(reason)
    server = mongo_store.SecantusServer().start()
    yield server.uri
    server.remove()


@pytest.fixture(scope="module")
def mongo(store_uri):
    name = f"codeinterp_test_{secrets.token_hex(4)}"
    client = pymongo.MongoClient(store_uri, serverSelectionTimeoutMS=5000)
    client.admin.command("ping")
    yield client, name
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="module")
def mongo_server(mongo, store_uri):
    _, name = mongo
    live = LiveServer(MONGO_URI=with_database(store_uri, name), SANDBOX_AUDIT_TTL_DAYS="7",
                      MONGO_MAX_POOL_SIZE="7", MONGO_MIN_POOL_SIZE="1").start()
    yield live
    live.stop()


def documents(mongo, query: dict, count: int) -> list[dict]:
    client, name = mongo
    collection = client[name]["sandbox_audit_logs"]
    deadline = time.monotonic() + 15
    found = list(collection.find(query))
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        found = list(collection.find(query))
    time.sleep(0.4)
    return list(collection.find(query).sort("createdAt", 1))


def shell(server: LiveServer, code: str) -> str:
    done = server.manage("shell", "-c", code)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_entries_land_in_the_collection_with_the_seed_fields(mongo, mongo_server):
    api = Client(mongo_server)
    up = api.upload("m.txt", b"mongo")
    ran = api.exec("py", "print(1)")
    docs = documents(mongo, {"sessionId": {"$in": [up["session_id"], ran["session_id"]]}}, 2)
    assert [d["action"] for d in docs] == ["upload", "exec"]
    upload, execution = docs
    assert {"action", "userId", "sessionId", "status", "ip", "userAgent", "details", "execution", "file", "error",
            "createdAt", "updatedAt"} <= set(upload)
    assert upload["file"]["filename"] == "m.txt" and upload["file"]["size"] == 5 and upload["userId"] == "user-1"
    assert execution["execution"]["lang"] == "py" and execution["execution"]["exitCode"] == 0
    assert hasattr(upload["createdAt"], "year")  # a BSON date, which the TTL index needs
    with sqlite3.connect(mongo_server.data_dir / "db.sqlite3") as db:
        tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "sandbox_audit_logs" not in tables


def test_indexes_and_ttl(mongo, mongo_server):
    client, name = mongo
    indexes = {ix["name"]: ix for ix in client[name]["sandbox_audit_logs"].list_indexes()}
    assert {"audit_created_idx", "audit_action_idx", "audit_user_idx", "audit_session_idx"} <= set(indexes)
    assert indexes["createdAt_ttl"]["expireAfterSeconds"] == 7 * 86400
    assert dict(indexes["createdAt_ttl"]["key"]) == {"createdAt": 1}
    # A new number of days changes the index in place; 0 removes it.
    done = mongo_server.manage("migrate", "--database", "audit", "-v0", SANDBOX_AUDIT_TTL_DAYS="2")
    assert done.returncode == 0, done.stderr
    indexes = {ix["name"]: ix for ix in client[name]["sandbox_audit_logs"].list_indexes()}
    assert indexes["createdAt_ttl"]["expireAfterSeconds"] == 2 * 86400
    done = mongo_server.manage("migrate", "--database", "audit", "-v0", SANDBOX_AUDIT_TTL_DAYS="0")
    assert done.returncode == 0, done.stderr
    assert "createdAt_ttl" not in {ix["name"] for ix in client[name]["sandbox_audit_logs"].list_indexes()}
    done = mongo_server.manage("migrate", "--database", "audit", "-v0", SANDBOX_AUDIT_TTL_DAYS="7")
    assert done.returncode == 0, done.stderr


def test_pool_sizes_and_health(mongo_server):
    sizes = shell(mongo_server, "from audit.writer import mongo_client; o = mongo_client('audit').options.pool_options; "
                                "print(o.max_pool_size, o.min_pool_size)")
    assert sizes.split()[-2:] == ["7", "1"]
    audit = requests.get(mongo_server.url + "/health", timeout=10).json()["audit"]
    assert audit["store"] == "mongodb" and audit["ok"] is True


def test_orm_and_admin_read_from_mongodb(mongo, mongo_server):
    api = Client(mongo_server)
    up = api.upload("findme.txt", b"x")
    documents(mongo, {"sessionId": up["session_id"]}, 1)
    code = (
        "import json\n"
        "from django.test import Client\n"
        "from django.contrib.auth.models import User\n"
        "from audit.models import AuditLog\n"
        f"user = User.objects.create_superuser('mongo-admin-{secrets.token_hex(3)}', 'a@example.com', 'pw')\n"
        + "c = Client(HTTP_HOST='127.0.0.1'); c.force_login(user)\n"  # a Host the server allows
        f"sid = {up['session_id']!r}\n"
        "pages = {q: c.get('/admin/audit/auditlog/' + q) for q in ('?q=' + sid, '?action__exact=upload', '?q=findme.txt',"
        " '?created_at__gte=2000-01-01')}\n"
        "entry = AuditLog.objects.get(session_id=sid)\n"
        "detail = c.get(f'/admin/audit/auditlog/{entry.pk}/change/')\n"
        "print(json.dumps({'count': AuditLog.objects.filter(session_id=sid).count(),"
        " 'pages': {q: [r.status_code, sid in r.content.decode()] for q, r in pages.items()},"
        " 'detail': [detail.status_code, 'findme.txt' in detail.content.decode()]}))\n"
    )
    seen = json.loads(shell(mongo_server, code).splitlines()[-1])
    assert seen["count"] == 1
    assert all(status == 200 and found for status, found in seen["pages"].values()), seen
    assert seen["detail"] == [200, True]


def ttl_wait_s(client) -> float:
    """How long the TTL monitor may take: SecantusDB's sweeps every second here
    (tests/mongo_store.py); a real mongod's every 60 s, unless we may shorten it."""
    if not MONGO_URI:
        return 30
    try:
        client.admin.command("setParameter", 1, ttlMonitorSleepSecs=1)
        return 30
    except pymongo.errors.OperationFailure:  # no right to (e.g. a hosted MongoDB)
        return 150


def test_the_ttl_index_really_expires_entries(mongo, mongo_server):
    """Real entries aged by hand: the one past SANDBOX_AUDIT_TTL_DAYS (7) goes, the one
    inside it stays; the store does the expiring, nobody else."""
    client, name = mongo
    collection = client[name]["sandbox_audit_logs"]
    api = Client(mongo_server)
    old, young = api.upload("eight-days.txt", b"o"), api.upload("six-days.txt", b"y")
    documents(mongo, {"sessionId": {"$in": [old["session_id"], young["session_id"]]}}, 2)
    now = dt.datetime.now(dt.UTC)
    for upload, days in ((old, 8), (young, 6)):
        done = collection.update_one({"sessionId": upload["session_id"]},
                                     {"$set": {"createdAt": now - dt.timedelta(days=days)}})
        assert done.modified_count == 1
    deadline = time.monotonic() + ttl_wait_s(client)
    while collection.count_documents({"sessionId": old["session_id"]}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert collection.count_documents({"sessionId": old["session_id"]}) == 0, "the TTL monitor never removed it"
    assert collection.count_documents({"sessionId": young["session_id"]}) == 1


def chromium_or_skip():
    """Playwright over Debian's Chromium, as in test_admin_browser.py (not imported from there:
    that module skips itself as a whole when Chromium is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (requirements-dev.txt)")
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium; scripts/setup.sh --dev does it)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    return sync_playwright, executable, args


def test_admin_in_chromium_over_mongodb_rows(mongo, mongo_server):
    """The audit list, a search and an entry's page in a real headless Chromium, with the
    rows in MongoDB (tests/audit/test_admin_browser.py does the same over SQLite)."""
    sync_playwright, executable, args = chromium_or_skip()
    api = Client(mongo_server)
    ran = api.exec("py", "print('in mongo')", user_id="mongo-admin-user")
    documents(mongo, {"sessionId": ran["session_id"]}, 1)
    username, password = f"admin-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    done = mongo_server.manage("createsuperuser", "--noinput", "--username", username, "--email", "a@example.com",
                               DJANGO_SUPERUSER_PASSWORD=password)
    assert done.returncode == 0, done.stderr
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(mongo_server.url + "/admin/login/")
            page.fill("#id_username", username)
            page.fill("#id_password", password)
            page.click("input[type=submit]")
            page.wait_for_selector("#site-name")
            page.goto(mongo_server.url + "/admin/audit/auditlog/?action__exact=exec")
            assert set(page.locator("#result_list tbody td.field-action").all_inner_texts()) == {"exec"}
            page.fill("#searchbar", ran["session_id"])
            page.press("#searchbar", "Enter")
            page.wait_for_url("**q=**")
            rows = page.locator("#result_list tbody tr")
            assert rows.count() == 1 and "mongo-admin-user" in rows.first.inner_text()
            rows.first.locator("a").first.click()
            page.wait_for_selector("table.audit-block")
            assert "Exit code" in page.inner_text("#content") and "py" in page.inner_text(".field-execution_block")
            assert page.locator("input[name=_save]").count() == 0
        finally:
            browser.close()


def test_the_store_going_down_and_coming_back():
    """SecantusDB stopped under a serving server: requests still succeed, the lost entries
    are counted and /health says so; started again (same port, same data): /health
    recovers, new entries land, the old ones are still there."""
    if MONGO_URI:
        pytest.skip("MONGO_URI names a server these tests did not start, so they cannot stop it")
    reason = mongo_store.missing()
    if reason:
        pytest.fail(reason)
    store = mongo_store.SecantusServer().start()
    name = f"codeinterp_test_{secrets.token_hex(4)}"
    live = LiveServer(MONGO_URI=with_database(store.uri, name)).start()
    client = pymongo.MongoClient(store.uri, serverSelectionTimeoutMS=5000)
    try:
        api = Client(live)
        before = api.upload("before.txt", b"1")
        assert len(documents((client, name), {"sessionId": before["session_id"]}, 1)) == 1
        client.close()
        store.stop()
        down = [api.upload(f"down-{n}.txt", b"x")["session_id"] for n in range(3)]  # each still succeeds
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and value(scrape(live), "sandbox_audit_write_failures_total", store="mongodb") < 3:
            time.sleep(0.2)
        assert value(scrape(live), "sandbox_audit_write_failures_total", store="mongodb") == 3
        assert wait_health(live, ok=False)["status"] == "ok"  # an audit outage is not a server outage

        store.start()
        # Writing resumes once the driver's monitor sees the server again (docs/AUDIT.md:
        # within about its 10 s heartbeat); an entry in between may still be lost, and is
        # then counted. So: upload until one lands, and account for every one of them.
        client = pymongo.MongoClient(store.uri, serverSelectionTimeoutMS=5000)
        collection = client[name]["sandbox_audit_logs"]
        after: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            after.append(api.upload(f"after-{len(after)}.txt", b"2")["session_id"])
            time.sleep(1)
            if collection.count_documents({"sessionId": {"$in": after}}):
                break
        landed = len(documents((client, name), {"sessionId": {"$in": after}}, len(after)))
        assert landed >= 1, "no entry reached the store after it came back"
        lost = value(scrape(live), "sandbox_audit_write_failures_total", store="mongodb") - 3
        assert landed + lost == len(after), (landed, lost, len(after))
        assert wait_health(live, ok=True)["audit"]["ok"] is True
        assert collection.count_documents({"sessionId": before["session_id"]}) == 1  # kept across the restart
        assert collection.count_documents({"sessionId": {"$in": down}}) == 0  # lost while down, and counted
    finally:
        client.close()
        live.stop()
        store.remove()


def wait_health(server: LiveServer, ok: bool, timeout_s: float = 30) -> dict:
    """/health once its audit store reads `ok` (each worker asks every 5 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = requests.get(server.url + "/health", timeout=10).json()
        if body["audit"]["ok"] is ok or time.monotonic() > deadline:
            return body
        time.sleep(0.5)
