"""Helpers for the audit tests: reading a live server's audit table, scraping /metrics."""

from __future__ import annotations

import sqlite3
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.liveserver import CANARY_KEY, Client, LiveServer, sqlite_of

AUDIT_COLUMNS = ("action", "userId", "sessionId", "status", "ip", "userAgent", "details", "execution", "file", "error",
                 "createdAt", "updatedAt")


def audit_rows(server: LiveServer, where: str = "1=1", params: tuple = ()) -> list[dict]:
    """AuditLog rows of a server using the default (SQLite) database, oldest first."""
    import json

    with sqlite3.connect(sqlite_of(server), timeout=20) as db:
        db.row_factory = sqlite3.Row
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sandbox_audit_logs'").fetchone():
            pytest.skip(f"reads the audit table of the server's SQLite, and {server!r} keeps its audit log in another "
                        "store (MONGO_URI: the compose stack's test checks the documents there)")
        rows = db.execute(
            f"SELECT {', '.join(AUDIT_COLUMNS)} FROM sandbox_audit_logs WHERE {where} ORDER BY createdAt", params
        ).fetchall()
    out = []
    for row in rows:
        item = dict(row)
        for key in ("details", "execution", "file"):
            item[key] = json.loads(item[key]) if item[key] is not None else None
        out.append(item)
    return out


def wait_for_rows(server: LiveServer, count: int, where: str, params: tuple = (), settle_s: float = 0.4) -> list[dict]:
    """Rows are written by a background thread: wait for `count`, then a little longer so
    that a duplicate would show up too."""
    deadline = time.monotonic() + 15
    rows = audit_rows(server, where, params)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = audit_rows(server, where, params)
    time.sleep(settle_s)
    return audit_rows(server, where, params)


def scrape(server: LiveServer) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from GET /metrics."""
    response = requests.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def tagged(server):
    """A client whose User-Agent is unique to the test, so its audit rows can be picked out."""
    agent = f"audit-test/{uuid.uuid4().hex}"
    client = Client(server, headers={"X-API-Key": CANARY_KEY, "User-Agent": agent})
    client.agent = agent
    return client
