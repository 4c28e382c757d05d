"""Several servers on one PostgreSQL (Debian's, tests/pg_server.py): migrations that start
at once, slots that belong to the server that runs them, audit rows in PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests import pg_server
from tests.liveserver import ROOT, Client, LiveServer

pytestmark = pytest.mark.skipif(bool(pg_server.missing()), reason=str(pg_server.missing()))


@pytest.fixture(scope="module")
def pg():
    with pg_server.PostgresServer() as server:
        yield server


def test_replicas_that_migrate_at_once_all_succeed(pg):
    """Four `manage.py migrate` on an empty database at the same moment: without the advisory
    lock (storage/management/commands/migrate.py) the later ones fail on tables the first made."""
    url = pg.create_database("migrate_race")
    data_dir = tempfile.mkdtemp(prefix="codeinterp-migrate-race-", dir="/var/tmp")
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "SANDBOX_DATA_DIR": data_dir}
    runs = [subprocess.Popen([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], "\n----\n".join(o[-1500:] for o in outputs)
    applied = sum(o.count("... OK") for o in outputs)
    shown = subprocess.run([sys.executable, "manage.py", "showmigrations", "--plan"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120).stdout
    shutil.rmtree(data_dir, ignore_errors=True)
    assert "[ ]" not in shown and shown.count("[X]") == applied, (applied, shown)  # each applied exactly once


@pytest.fixture(scope="module")
def two_servers(pg):
    url = pg.create_database("two_servers")
    servers = []
    try:
        for _ in range(2):
            servers.append(LiveServer(DATABASE_URL=url, SANDBOX_MAX_CONCURRENT_EXECUTIONS="2", SANDBOX_MAX_QUEUE="0",
                                      SANDBOX_POOL="off").start())
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_each_server_leases_its_own_slots(two_servers, pg):
    one, other = two_servers
    for server in two_servers:
        body = Client(server).get("/health").json()
        assert body["database"]["ok"] and body["slots"]["total"] == 2, body
    hosts = pg.psql("SELECT host, count(*) FROM executor_executionslot GROUP BY host", "two_servers").stdout.split()
    assert len(hosts) == 2 and all(h.endswith("|2") for h in hosts), hosts

    # Both slots of the first server busy: it refuses a third call at once (no queue), while
    # the second server, on the same database, still runs code.
    started = threading.Barrier(3)
    answers = []

    def busy():
        started.wait()
        answers.append(Client(one).post("/exec", json={"lang": "py", "code": "import time; time.sleep(4)"}).status_code)

    threads = [threading.Thread(target=busy) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait()
    client = Client(one)
    for _ in range(100):  # until both leases show in the first server's /health
        if client.get("/health").json()["slots"]["free"] == 0:
            break
    assert client.get("/health").json()["slots"]["free"] == 0
    assert client.post("/exec", json={"lang": "py", "code": "print(1)"}).status_code == 429
    assert Client(other).get("/health").json()["slots"]["free"] == 2
    assert Client(other).exec("py", "print('other')")["stdout"] == "other\n"
    for thread in threads:
        thread.join()
    assert answers == [200, 200]


def test_audit_rows_land_in_postgres(two_servers, pg):
    from audit.models import COLLECTION

    session = Client(two_servers[0]).exec("py", "print('audited')")["session_id"]
    for _ in range(50):  # the audit writer is a background thread
        done = pg.psql(f"SELECT count(*) FROM {COLLECTION} WHERE action = 'exec' AND \"sessionId\" = '{session}'", "two_servers")
        assert done.returncode == 0, done.stderr
        if done.stdout.strip() == "1":
            break
        time.sleep(0.1)
    assert done.stdout.strip() == "1"
