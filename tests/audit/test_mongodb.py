"""The MongoDB audit store against a real server. No MongoDB can be installed on the build
machines, so these run only where MONGO_URI names one (e.g. MONGO_URI=mongodb://localhost:27017
scripts/test.sh tests/audit); each run uses its own database and drops it afterwards."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.liveserver import Client, LiveServer

MONGO_URI = os.environ.get("MONGO_URI", "").strip()
pytestmark = pytest.mark.skipif(
    not MONGO_URI, reason="MONGO_URI is not set: the MongoDB audit store is tested only against a real MongoDB server"
)


def with_database(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture(scope="module")
def mongo():
    pymongo = pytest.importorskip("pymongo")
    name = f"codeinterp_test_{secrets.token_hex(4)}"
    client = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)
    client.admin.command("ping")
    yield client, name
    client.drop_database(name)
    client.close()


@pytest.fixture(scope="module")
def mongo_server(mongo):
    client, name = mongo
    live = LiveServer(MONGO_URI=with_database(MONGO_URI, name), SANDBOX_AUDIT_TTL_DAYS="7",
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
        + "c = Client(); c.force_login(user)\n"
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
