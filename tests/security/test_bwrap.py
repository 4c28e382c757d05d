"""What only the bubblewrap backend must prove: it never starts as host root (with a user
namespace, the sandbox uid of a root-started bwrap is host uid 0), and it leaves nothing behind.
The escape suite (test_escape.py) runs on bwrap too, through the `sandbox_server` fixture."""

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import bwrap_missing
from tests.liveserver import Client, LiveServer


@pytest.fixture(scope="module")
def bwrap_server():
    if bwrap_missing():
        pytest.skip(bwrap_missing())
    live = LiveServer(SANDBOX_BACKEND="bwrap").start()
    yield live
    live.stop()


def uid_base(server) -> int:
    return int(server.env.get("SANDBOX_BWRAP_UID_BASE", "200000"))


def host_processes(marker: str) -> list[tuple[int, str]]:
    """(real uid, command line) of every host process whose command line holds `marker`."""
    rows = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if marker in args:
            uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
            rows.append((uid, args))
    return rows


def test_bwrap_never_starts_as_host_root(bwrap_server):
    marker = uuid.uuid4().hex
    code = "import time\nopen('made.txt', 'w').write('x')\ntime.sleep(4)\n"
    answer = {}
    runner = threading.Thread(target=lambda: answer.update(Client(bwrap_server).exec("py", code, args=[marker])))
    runner.start()
    seen, made = [], None
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline and not (seen and made):
        rows = host_processes(marker)
        if any("python3 /mnt/code/main.py" in args and not args.startswith(("/usr/bin/bwrap", "bwrap")) for _, args in rows):
            seen = rows
        for path in bwrap_server.storage.glob("*/*/workspace/exec_*/data/made.txt"):
            info = path.stat()  # now: the work area goes away with the execution
            made = (info.st_uid, info.st_gid)
        time.sleep(0.05)
    runner.join()
    assert answer["run"]["code"] == 0, answer
    assert seen, "the sandboxed program never showed up in the host's process list"
    assert any("bwrap" in args for _, args in seen), seen
    uids = {uid for uid, _ in seen}
    assert 0 not in uids, seen
    assert all(uid >= uid_base(bwrap_server) for uid in uids), seen
    assert len(uids) == 1, f"the launcher, bwrap and the program share one per-execution uid: {seen}"
    assert made is not None, "made.txt never appeared in the work area"
    assert made[0] in uids and made[1] in uids, (made, seen)


def test_nothing_of_an_execution_is_left(bwrap_server):
    marker = uuid.uuid4().hex
    lingerer = f"python3 -c 'import time; time.sleep(300)' {marker}"  # the marker stays in its argv
    code = f"nohup setsid {lingerer} >/dev/null 2>&1 &\n({lingerer} &)\nsleep 0.5\npgrep -fc {marker}\necho started\n"
    out = Client(bwrap_server).exec("bash", code)
    assert out["stdout"].split() == ["2", "started"], out  # both were running inside
    assert host_processes(marker) == []
    session = out["session_id"]
    leftovers = [p for p in Path("/sys/fs/cgroup").rglob(f"bw-*-{session}")]
    assert leftovers == [], leftovers
    workers = [str(pid) for pid in bwrap_server.worker_pids()]
    deadline = time.monotonic() + 20  # a zombie missed by the run is collected by the next sweep
    while True:
        ps = subprocess.run(["ps", "-o", "pid=,stat=,uid=", "--ppid", ",".join(workers)], check=False, capture_output=True, text=True).stdout
        zombies = [line for line in ps.splitlines() if line.split()[1].startswith("Z")]
        if not zombies or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert zombies == [], "bwrap's intermediate processes were not reaped"


def test_reap_kills_and_removes_expired_leftovers():
    """What a worker that died mid-run leaves: a cgroup with a process in it and an alias dir."""
    if bwrap_missing():
        pytest.skip(bwrap_missing())
    from executor.backends.bwrap import ALIAS_ROOT, JOIN_CGROUPS, PREFIX, BwrapBackend

    backend = BwrapBackend()
    tree = backend.tree()
    past, future = int(time.time()) - 1, int(time.time()) + 3600
    expired = tree.create(f"{PREFIX}{past}-leftover{uuid.uuid4().hex[:8]}", 64 << 20, 16, 0.5)
    current = tree.create(f"{PREFIX}{future}-running{uuid.uuid4().hex[:8]}", 64 << 20, 16, 0.5)
    procs = expired.procs_files
    orphan = subprocess.Popen(
        ["/bin/sh", "-c", JOIN_CGROUPS, "test", str(len(procs)), *procs,
         "setpriv", "--reuid=199999", "--regid=199999", "--clear-groups", "--", "sleep", "300"],
        env={"PATH": "/usr/bin:/bin"}, start_new_session=True,
    )
    ALIAS_ROOT.mkdir(parents=True, exist_ok=True)
    alias = ALIAS_ROOT / f"{PREFIX}{past}-{uuid.uuid4().hex[:16]}"
    (alias / "data").mkdir(parents=True)
    try:
        deadline = time.monotonic() + 5
        while not expired.pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert expired.pids(), "the stand-in process never entered the cgroup"
        assert backend.reap() >= 1
        assert orphan.wait(5) == -9
        assert not any(d.exists() for d in expired.unique)
        assert not alias.exists()
        assert all(d.exists() for d in current.unique), "a cgroup whose run may still go on was removed"
    finally:
        if orphan.poll() is None:
            os.kill(orphan.pid, 9)
            orphan.wait()
        expired.stop_all()
        expired.remove()
        current.remove()
        if alias.exists():
            (alias / "data").rmdir()
            alias.rmdir()
