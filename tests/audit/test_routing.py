"""Where AuditLog lives, decided without a MongoDB server: settings, router, TTL index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest
from django.test import override_settings

from audit import ttl
from audit.models import AuditLog
from audit.routers import AuditRouter, audit_database
from storage.models import Session
from tests.liveserver import ROOT

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.db import router
from audit.models import AuditLog
from storage.models import Session
print(json.dumps({
    "audit": settings.DATABASES.get("audit"),
    "routers": settings.DATABASE_ROUTERS,
    "write": router.db_for_write(AuditLog), "read": router.db_for_read(AuditLog),
    "session": router.db_for_write(Session),
    "migrate_audit_on_audit": router.allow_migrate("audit", "audit", model_name="auditlog"),
    "migrate_audit_on_default": router.allow_migrate("default", "audit", model_name="auditlog"),
    "migrate_auth_on_audit": router.allow_migrate("audit", "auth", model_name="user"),
    "migrate_auth_on_default": router.allow_migrate("default", "auth", model_name="user"),
    "metrics_dir": __import__("os").environ["PROMETHEUS_MULTIPROC_DIR"],
}, default=str))
"""


def load_settings(**env) -> dict:
    with tempfile.TemporaryDirectory(prefix="codeinterp-settings-", dir="/var/tmp") as data_dir:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "MONGO_", "PROMETHEUS_"))}
        done = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**clean, "DJANGO_SETTINGS_MODULE": "sandbox_project.settings", "SANDBOX_DATA_DIR": data_dir, **env},
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["data_dir"] = data_dir
    return result


def test_without_mongo_everything_stays_in_the_default_database():
    seen = load_settings()
    assert seen["audit"] is None
    assert seen["routers"] == ["audit.routers.AuditRouter"]
    assert seen["write"] == seen["read"] == seen["session"] == "default"
    assert seen["migrate_audit_on_default"] is True
    assert seen["migrate_auth_on_audit"] is False
    assert seen["metrics_dir"] == os.path.join(seen["data_dir"], "metrics")


def test_with_mongo_only_the_audit_log_goes_there():
    seen = load_settings(MONGO_URI="mongodb://db.example:27017/LibreChat?retryWrites=true",
                         MONGO_MAX_POOL_SIZE="25", MONGO_MIN_POOL_SIZE="3")
    audit = seen["audit"]
    assert audit["ENGINE"] == "django_mongodb_backend"
    assert audit["HOST"] == "mongodb://db.example:27017/LibreChat?retryWrites=true"
    assert audit["NAME"] == "LibreChat"
    assert audit["OPTIONS"]["maxPoolSize"] == 25 and audit["OPTIONS"]["minPoolSize"] == 3
    assert audit["OPTIONS"]["serverSelectionTimeoutMS"] == 3000
    assert seen["write"] == seen["read"] == "audit"
    assert seen["session"] == "default"
    assert seen["migrate_audit_on_audit"] is True
    assert seen["migrate_audit_on_default"] is False
    assert seen["migrate_auth_on_audit"] is False
    assert seen["migrate_auth_on_default"] is True


def test_mongo_uri_details():
    seen = load_settings(MONGO_URI="mongodb://u:p@a:1,b:2/?replicaSet=rs0&serverSelectionTimeoutMS=9000")
    assert seen["audit"]["NAME"] == "test"  # no database in the URI: the drivers' default
    assert "serverSelectionTimeoutMS" not in seen["audit"]["OPTIONS"]  # the URI's own value wins
    assert seen["audit"]["OPTIONS"]["maxPoolSize"] == 10 and seen["audit"]["OPTIONS"]["minPoolSize"] == 2


def test_pool_sizes_are_validated():
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "MONGO_"))}
    with tempfile.TemporaryDirectory(prefix="codeinterp-settings-", dir="/var/tmp") as data_dir:
        done = subprocess.run(
            [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True, text=True,
            timeout=120, env={**clean, "DJANGO_SETTINGS_MODULE": "sandbox_project.settings", "MONGO_URI": "mongodb://x/y",
                              "MONGO_MAX_POOL_SIZE": "2", "MONGO_MIN_POOL_SIZE": "5", "SANDBOX_DATA_DIR": data_dir},
        )
    assert done.returncode != 0 and "MONGO_MIN_POOL_SIZE" in done.stderr


MONGO_DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    "audit": {"ENGINE": "django_mongodb_backend", "HOST": "mongodb://x/y", "NAME": "y"},
}


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_router_in_process():
    router = AuditRouter()
    with override_settings(DATABASES=MONGO_DATABASES):
        assert router.db_for_write(AuditLog) == "audit" and router.db_for_read(AuditLog) == "audit"
        assert router.db_for_write(Session) is None
        assert router.allow_migrate("audit", "audit", model_name="auditlog") is True
        assert router.allow_migrate("audit", "contenttypes", model_name="contenttype") is False
        assert router.allow_migrate("default", "audit", model_name="auditlog") is False
        assert router.allow_relation(AuditLog(), Session()) is False
        assert audit_database() == "audit"
    with override_settings(DATABASES={"default": MONGO_DATABASES["default"]}):
        assert router.db_for_write(AuditLog) is None
        assert router.allow_migrate("default", "audit", model_name="auditlog") is None
        assert router.allow_relation(AuditLog(), Session()) is None
        assert audit_database() == "default"


def test_model_matches_the_seed_schema():
    columns = {f.column for f in AuditLog._meta.concrete_fields}
    assert columns == {"id", "action", "userId", "sessionId", "status", "ip", "userAgent", "details", "execution",
                       "file", "error", "createdAt", "updatedAt"}
    assert AuditLog._meta.db_table == "sandbox_audit_logs"
    indexed = {tuple(index.fields) for index in AuditLog._meta.indexes}
    assert indexed == {("-created_at",), ("action",), ("user_id",), ("session_id",)}
    # The seed's actions, and one for /exec/programmatic (which the seed predates; docs/AUDIT.md)
    assert {c for c, _ in AuditLog._meta.get_field("action").choices} == {
        "upload", "exec", "download", "files_list", "auth_failure", "delete", "batch_upload", "programmatic"}
    assert {c for c, _ in AuditLog._meta.get_field("status").choices} == {"success", "error", "denied"}


class FakeCollection:
    """Just enough of pymongo's Collection to watch what ensure_ttl_index asks for."""

    name = "sandbox_audit_logs"

    def __init__(self, indexes=()):
        self.indexes = {ix["name"]: dict(ix) for ix in indexes}
        self.calls = []
        self.database = self

    def list_indexes(self):
        return list(self.indexes.values())

    def create_index(self, keys, name, expireAfterSeconds):
        self.calls.append(("create", keys, name, expireAfterSeconds))
        self.indexes[name] = {"name": name, "key": dict(keys), "expireAfterSeconds": expireAfterSeconds}

    def drop_index(self, name):
        self.calls.append(("drop", name))
        del self.indexes[name]

    def command(self, name, collection, index):
        self.calls.append((name, collection, index))
        self.indexes[index["name"]]["expireAfterSeconds"] = index["expireAfterSeconds"]


def test_ttl_index_definition():
    assert ttl.ttl_index_spec(0) is None
    assert ttl.ttl_index_spec(7) == {"keys": [("createdAt", 1)], "name": "createdAt_ttl", "expireAfterSeconds": 604800}


def test_ttl_index_is_created_changed_and_dropped():
    collection = FakeCollection([{"name": "_id_", "key": {"_id": 1}}, {"name": "audit_created_idx", "key": {"createdAt": -1}}])
    assert ttl.ensure_ttl_index(collection, 0) == "none"
    assert ttl.ensure_ttl_index(collection, 30) == "created"
    assert collection.calls[-1] == ("create", [("createdAt", 1)], "createdAt_ttl", 30 * 86400)
    assert ttl.ensure_ttl_index(collection, 30) == "unchanged"
    assert ttl.ensure_ttl_index(collection, 7) == "updated"
    assert collection.calls[-1] == ("collMod", "sandbox_audit_logs", {"name": "createdAt_ttl", "expireAfterSeconds": 604800})
    assert ttl.ensure_ttl_index(collection, 0) == "dropped"
    assert set(collection.indexes) == {"_id_", "audit_created_idx"}


@pytest.mark.parametrize("days, expected", [(0, 0), (1, 86400), (90, 90 * 86400)])
def test_ttl_seconds(days, expected):
    assert ttl.ttl_seconds(days) == expected
