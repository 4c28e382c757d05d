"""The cluster of scripts/cluster.sh (3 replicas behind HAProxy, PostgreSQL, SeaweedFS), as
scripts/cluster-test.sh brings it up: files across replicas, a replica killed mid-load, a
rolling restart under load, the database restarting mid-load.

Every load here is bounded in calls and time and stops by itself; it only talks to the
balancer's loopback ports. No assertion is about how long anything took.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.liveserver import CANARY_KEY, ROOT

PORT = os.environ.get("CLUSTER_PORT", "")
STATE = Path(os.environ.get("CLUSTER_DIR", "/nonexistent"))
pytestmark = pytest.mark.skipif(not (PORT and (STATE / "replicas").is_file()),
                                reason="needs the cluster of scripts/cluster.sh (scripts/cluster-test.sh brings it up)")
HEADERS = {"X-API-Key": CANARY_KEY}


def url(replica: int = 0) -> str:
    """The balancer (0), or replica n alone (its own port of the balancer)."""
    return f"http://127.0.0.1:{int(PORT) + replica}"


def cluster(*args: str, timeout: float = 600) -> str:
    done = subprocess.run(["scripts/cluster.sh", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def psql(sql: str) -> str:
    """A query on the cluster's database, over its unix socket (peer auth as postgres)."""
    done = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", str(STATE / "pg"), "-d", "codeinterp", "-Atc", sql],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def replica_host(n: int) -> str:
    """Replica n's name in the slot table (executor.pool.instance())."""
    out = cluster("manage", str(n), "shell", "-v0", "-c", "from executor.slots import host; print(host())")
    return out.strip().splitlines()[-1]


def held_leases(host: str) -> int:
    return int(psql(f"SELECT count(*) FROM executor_executionslot WHERE host = '{host}' AND holder <> '' AND leased_until > now()"))


def leases_of(host: str) -> str:
    """The slot rows of `host` held by anyone, with the database's clock, for a failure's message."""
    return psql(f"SELECT number, holder, leased_at, leased_until, now() FROM executor_executionslot WHERE host = '{host}' AND holder <> ''")


def containers_of(n: int) -> set[str]:
    """Sandboxes of replica n: ours (the label) that mount its data dir."""
    ids = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", "label=org.librechat.codeinterp"],
                         capture_output=True, text=True, timeout=60).stdout.split()
    found = set()
    for cid in ids:
        mounts = subprocess.run(["docker", "inspect", "-f", "{{range .Mounts}}{{.Source}} {{end}}", cid],
                                capture_output=True, text=True, timeout=60).stdout
        if f"{STATE}/r{n}/" in mounts:
            found.add(cid)
    return found


def wait_for(check, what, rounds: int = 600, pause: float = 0.2):
    """Polls `check` until it is true; `what` (a text, or a function giving one when it failed,
    to show the state it found) names it."""
    for _ in range(rounds):
        value = check()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"never happened: {what() if callable(what) else what}")


def upload(content: bytes, name: str, replica: int = 0) -> dict:
    response = requests.post(url(replica) + "/v1/upload", headers={**HEADERS, "User-Id": "cluster-user"},
                             files={"file": (name, content)}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class Call:
    index: int
    status: int = 0
    body: str = ""
    replica: str = ""
    started_at: float = 0.0  # time.monotonic() when the request was sent
    ended_at: float = 0.0  # ... and when its answer (or error) came back


@dataclass
class Load:
    """`threads` clients calling /exec through the balancer, each call after the last, until
    stop() or `max_calls` calls or `max_s` seconds."""

    code: str = "import time; time.sleep(0.8); print('ok')"
    threads: int = 4
    max_calls: int = 600
    max_s: float = 300
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]

    def start(self) -> "Load":
        self._until = time.monotonic() + self.max_s
        for worker in self._workers:
            worker.start()
        return self

    def started(self) -> int:
        with self._lock:
            return len(self.calls)

    def _run(self):
        http = requests.Session()
        while not self._stop.is_set() and time.monotonic() < self._until:
            with self._lock:
                if len(self.calls) >= self.max_calls:
                    return
                call = Call(len(self.calls), started_at=time.monotonic())
                self.calls.append(call)
            try:
                response = http.post(url() + "/v1/exec", headers=HEADERS, json={"lang": "py", "code": self.code}, timeout=120)
                call.status, call.body, call.replica = response.status_code, response.text, response.headers.get("X-Replica", "")
            except requests.RequestException as error:
                call.status, call.body = -1, repr(error)
            call.ended_at = time.monotonic()
            if call.status != 200:
                time.sleep(0.25)  # a client backs off after a failure (the answers say Retry-After)

    def finish(self, more_calls: int = 0) -> list[Call]:
        """Lets `more_calls` further calls start, then stops and waits for every call."""
        target = self.started() + more_calls
        wait_for(lambda: self.started() >= target or time.monotonic() > self._until, "the load went on")
        self._stop.set()
        for worker in self._workers:
            worker.join(180)
        return list(self.calls)


def failures(calls: list[Call]) -> list[Call]:
    return [c for c in calls if c.status != 200 or json.loads(c.body).get("stdout") != "ok\n"]


# -- the tests ---------------------------------------------------------------------------------
def test_a_file_stored_through_one_replica_is_used_through_every_other():
    content = os.urandom(700_000)
    digest = hashlib.sha256(content).hexdigest()
    stored = upload(content, "shared.bin", replica=1)
    sid, fid = stored["session_id"], stored["files"][0]["fileId"]
    reference = None
    for n in (1, 2, 3):
        response = requests.get(f"{url(n)}/v1/download/{sid}/{fid}", headers=HEADERS, timeout=60)
        assert response.status_code == 200 and response.content == content, (n, response.status_code)
        assert response.headers["X-Replica"] == f"r{n}"
        shown = {k: response.headers.get(k) for k in ("Content-Type", "Content-Length", "Content-Disposition")}
        reference = reference or shown
        assert shown == reference and shown["Content-Length"] == str(len(content)), (n, shown)
    code = "import hashlib; print(hashlib.sha256(open('shared.bin','rb').read()).hexdigest())"
    for n in (2, 3):
        response = requests.post(f"{url(n)}/v1/exec", headers=HEADERS, timeout=120, json={
            "lang": "py", "code": code, "files": [{"id": fid, "session_id": sid, "name": "shared.bin"}]})
        assert response.status_code == 200, response.text
        assert response.json()["stdout"] == digest + "\n"

    # An output made on replica 2 (with a hard link: one object, two rows) downloads from
    # replica 3; deleting one name through replica 1 leaves the other whole.
    made = requests.post(f"{url(2)}/v1/exec", headers=HEADERS, timeout=120, json={
        "lang": "py", "code": "import os; open('out.txt','w').write('made on r2\\n' * 1000); os.link('out.txt', 'same.txt')"})
    assert made.status_code == 200, made.text
    outputs = {f["name"]: f for f in made.json()["files"]}
    assert set(outputs) == {"out.txt", "same.txt"}
    keys = psql("SELECT DISTINCT path FROM storage_storedfile WHERE id IN ('%s')" % "','".join(f["id"] for f in outputs.values()))
    assert len(keys.splitlines()) == 1  # stored once
    for name, item in outputs.items():
        response = requests.get(f"{url(3)}/v1/download/{item['session_id']}/{item['id']}", headers=HEADERS, timeout=60)
        assert response.status_code == 200 and response.text == "made on r2\n" * 1000, name
    first, second = outputs["out.txt"], outputs["same.txt"]
    assert requests.delete(f"{url(1)}/v1/files/{first['session_id']}/{first['id']}", headers=HEADERS, timeout=60).status_code == 200
    assert requests.get(f"{url(2)}/v1/download/{first['session_id']}/{first['id']}", headers=HEADERS, timeout=60).status_code == 404
    kept = requests.get(f"{url(3)}/v1/download/{second['session_id']}/{second['id']}", headers=HEADERS, timeout=60)
    assert kept.status_code == 200 and kept.text == "made on r2\n" * 1000


def test_large_uploads_go_up_in_parts_and_appear_only_when_complete():
    """The S3 store itself, in replica 1's settings: a file larger than one part is a
    multipart upload (its ETag says how many parts), readable in full afterwards."""
    code = """
import hashlib, os, tempfile
from storage.backends import current
store = current()
data = os.urandom((store.part * 2) + 12345)
with tempfile.NamedTemporaryFile(dir='/var/tmp') as spool:
    spool.write(data); spool.flush()
    store.save_upload('cluster-test/parts/big.bin', spool.name, len(data))
head = store.client.head_object(Bucket=store.bucket, Key=store.object_key('cluster-test/parts/big.bin'))
with store.open('cluster-test/parts/big.bin') as stream:
    back = hashlib.sha256()
    while block := stream.read(1 << 20):
        back.update(block)
print(head['ETag'].strip('"').split('-')[-1], back.hexdigest() == hashlib.sha256(data).hexdigest())
store.delete_prefix('cluster-test/')
"""
    out = cluster("manage", "1", "shell", "-v0", "-c", code).strip().splitlines()[-1]
    assert out == "3 True", out


def test_sigkill_of_a_replica_fails_only_its_own_calls_and_loses_nothing():
    kept = [(upload(os.urandom(50_000 + n), f"kept{n}.bin"), n) for n in range(6)]
    host = replica_host(2)
    # Nothing of an earlier test holds a slot of it (a programmatic run, routed by client to
    # one replica, holds its slot for up to SANDBOX_PTC_MAX_RUN_S): every lease below is the load's.
    wait_for(lambda: held_leases(host) == 0, lambda: f"replica 2 holds no slot before the load: {leases_of(host)}", rounds=150)
    load = Load().start()
    # Kill it while it runs something (a lease it holds), so its calls in flight are lost.
    wait_for(lambda: held_leases(host) > 0, "replica 2 ran a call of the load")
    sandboxes_before = containers_of(2)
    cluster("kill", "2")
    killed_after = load.started()
    held_after_kill = held_leases(host)
    sandboxes_left = containers_of(2) | sandboxes_before
    calls = load.finish(more_calls=24)

    failed = failures(calls)
    assert len(failed) <= load.threads, [(c.status, c.body[:100]) for c in failed]  # at most what was in flight
    for call in failed:
        assert call.index < killed_after, f"call {call.index}, started after the kill, failed: {call.status} {call.body[:200]}"
        assert call.status in (502, 503) and json.loads(call.body)["error"], call.body[:200]
    assert all(c.status == 200 for c in calls if c.index >= killed_after)
    assert any(c.replica in ("r1", "r3") for c in calls if c.index >= killed_after)
    assert held_after_kill > 0  # the dead replica's leases are still held in the table ...

    for meta, n in kept:  # ... no stored file was lost
        sid, fid = meta["session_id"], meta["files"][0]["fileId"]
        response = requests.get(f"{url()}/v1/download/{sid}/{fid}", headers=HEADERS, timeout=60)
        assert response.status_code == 200 and len(response.content) == 50_000 + n

    # ... its slots come back once their lease ran out (SANDBOX_LEASE_MARGIN_MS is short here),
    # and once it is back, its sandboxes from before the kill are gone (the new keeper clears
    # its pool; cold runs' containers go with the sweep after their deadline).
    wait_for(lambda: held_leases(host) == 0, lambda: f"the dead replica's leases expired: {leases_of(host)}", rounds=600)
    cluster("start", "2")
    health = requests.get(f"{url(2)}/health", timeout=30).json()
    assert health["slots"]["free"] == health["slots"]["total"], health
    wait_for(lambda: not (containers_of(2) & sandboxes_left), "the killed replica's sandboxes were removed", rounds=300, pause=1)
    again = requests.post(f"{url(2)}/v1/exec", headers=HEADERS, json={"lang": "py", "code": "print('back')"}, timeout=120)
    assert again.status_code == 200 and again.json()["stdout"] == "back\n"


def test_a_rolling_restart_under_load_fails_no_call():
    load = Load().start()
    wait_for(lambda: load.started() >= 8, "the load began")
    for n in (1, 2, 3):
        cluster("restart", str(n))
    calls = load.finish(more_calls=8)
    assert not failures(calls), [(c.index, c.status, c.body[:200]) for c in failures(calls)]
    assert {c.replica for c in calls} >= {"r1", "r2", "r3"}


def test_the_database_restarting_costs_only_the_calls_in_that_window_with_clean_503s():
    load = Load(code="print('ok')").start()
    wait_for(lambda: load.started() >= 8, "the load began")
    # A call still going when the stop begins may meet the database going down, however early
    # it started (one slow call can be overtaken by many quick ones of the other clients), so
    # the window is a time, not a call number.
    stopping_at = time.monotonic()
    cluster("db", "stop")
    down_from = load.started()
    wait_for(lambda: load.started() >= down_from + 12, "calls were made while the database was down")
    cluster("db", "start")
    # The replicas' /health turns 200 again and the balancer takes them back.
    wait_for(lambda: requests.get(url() + "/health", timeout=10).status_code == 200, "the cluster recovered")
    recovered_from = load.started()
    calls = load.finish(more_calls=16)

    failed = failures(calls)
    assert failed, "no call failed while the database was down: the test did not test anything"
    for call in failed:
        assert call.status == 503, (call.index, call.status, call.body[:300])
        assert json.loads(call.body)["error"] in ("database_unavailable", "service_unavailable"), call.body[:300]
        assert call.ended_at >= stopping_at, (call.index, "failed before the database was stopped")
        # Until every replica has reconnected, a few calls after the first healthy answer may
        # still meet a replica that has not: at most one per client.
        assert call.index < recovered_from + load.threads, (call.index, recovered_from)
    assert all(c.status == 200 for c in calls if c.index >= recovered_from + load.threads)


def test_the_object_store_away_fails_only_the_calls_that_move_files_with_clean_503s():
    kept = upload(b"kept while the store was away\n", "kept.txt")
    sid, fid = kept["session_id"], kept["files"][0]["fileId"]
    cluster("s3", "stop")
    try:
        refused = requests.post(url() + "/v1/upload", headers=HEADERS, files={"file": ("new.txt", b"x")}, timeout=120)
        assert refused.status_code == 503 and refused.json()["error"] == "storage_unavailable", refused.text
        download = requests.get(f"{url()}/v1/download/{sid}/{fid}", headers=HEADERS, timeout=120)
        assert download.status_code == 503 and download.json()["error"] == "storage_unavailable", download.text
        # Code without files still runs, and the replicas stay in the balancer.
        ran = requests.post(url() + "/v1/exec", headers=HEADERS, json={"lang": "py", "code": "print('ok')"}, timeout=120)
        assert ran.status_code == 200 and ran.json()["stdout"] == "ok\n"
        def store_gone():
            health = requests.get(url() + "/health", timeout=30).json()
            return health if not health["storage"]["ok"] else None

        health = wait_for(store_gone, "/health saw the store gone")
        assert health["status"] == "ok", health
    finally:
        cluster("s3", "start")
    # Back by itself: the store's S3 gateway may take a moment more than its listing to
    # answer downloads; no replica needs a restart.
    def downloaded():
        response = requests.get(f"{url()}/v1/download/{sid}/{fid}", headers=HEADERS, timeout=120)
        return response if response.status_code == 200 else None

    back = wait_for(downloaded, "the file downloads again", rounds=150)
    assert back.content == b"kept while the store was away\n"
    assert upload(b"after\n", "after.txt")["files"][0]["size"] == 6


def test_cleanup_sessions_removes_expired_files_from_the_bucket():
    stored = upload(b"expires\n", "old.txt", replica=1)
    sid, fid = stored["session_id"], stored["files"][0]["fileId"]
    key = psql(f"SELECT path FROM storage_storedfile WHERE id = '{fid}'")
    exists = ("from storage.backends import current; s = current(); import sys\n"
              f"print(any(o['Key'] == s.object_key({key!r}) for o in "
              f"s.client.list_objects_v2(Bucket=s.bucket, Prefix=s.object_key({key!r})).get('Contents', [])))")
    assert cluster("manage", "2", "shell", "-v0", "-c", exists).strip().splitlines()[-1] == "True"
    # Expired a day ago (longer than any run's grace), then cleaned up from another replica.
    psql(f"UPDATE storage_session SET expires_at = now() - interval '1 day' WHERE id = '{sid}'")
    psql(f"UPDATE storage_storedfile SET expires_at = now() - interval '1 day' WHERE session_id = '{sid}'")
    out = cluster("manage", "3", "cleanup_sessions")
    assert f"removed session {sid}" in out, out
    assert cluster("manage", "2", "shell", "-v0", "-c", exists).strip().splitlines()[-1] == "False"
    assert requests.get(f"{url()}/v1/download/{sid}/{fid}", headers=HEADERS, timeout=60).status_code == 404


def bucket_keys() -> set[str]:
    code = ("from storage.backends import current; s = current()\n"
            "for page in s.client.get_paginator('list_objects_v2').paginate(Bucket=s.bucket):\n"
            "    [print(o['Key']) for o in page.get('Contents', [])]")
    return set(cluster("manage", "1", "shell", "-v0", "-c", code).split())


def test_an_upload_that_does_not_complete_leaves_nothing_in_the_bucket():
    import socket

    before = bucket_keys()
    # Over the size limit (SANDBOX_MAX_UPLOAD_MB): refused, nothing stored.
    big = requests.post(url() + "/v1/upload", headers=HEADERS, files={"file": ("big.bin", b"1" * (7 << 20))}, timeout=120)
    assert big.status_code == 413, big.text
    # A client that goes away half-way through its body.
    with socket.create_connection(("127.0.0.1", int(PORT))) as sock:
        sock.sendall((f"POST /v1/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {CANARY_KEY}\r\n"
                      "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 2000000\r\n\r\n"
                      "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"half.bin\"\r\n\r\n").encode()
                     + b"h" * 500_000)
    done = upload(b"complete\n", "complete.txt")  # and one that completes, for contrast
    after = bucket_keys()
    added = after - before
    assert len(added) == 1 and added.pop().endswith(f"/{done['session_id']}/uploads/{done['files'][0]['fileId']}.txt"), added
