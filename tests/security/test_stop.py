"""What "stopped" means before the server reads a run's outputs (executor/backends/cgroups.py):
when the stop returns, no task of the run can act again. A task may still be tearing down
its address space (that is not waited for), but it is gone, a zombie, or inside the kernel's
exit path with its memory already let go of (no more writes into it). Checked on the real
cgroups of both backends, with busy threads and a process that keeps forking, right after
the call returns and before anything else kills them.
"""

import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import bwrap_missing

# Three threads spinning, and a child that forks without pause: tasks are being created while
# the stop runs.
BUSY = (
    "import os, threading\n"
    "def spin():\n"
    "    while True: pass\n"
    "for _ in range(3): threading.Thread(target=spin, daemon=True).start()\n"
    "if os.fork() == 0:\n"
    "    while True:\n"
    "        try:\n"
    "            if os.fork() == 0: os._exit(0)\n"
    "            os.wait()\n"
    "        except OSError: pass\n"
    "spin()\n"
)


def state(tid: int) -> str:
    """Read here, independently of the code under test: 'gone', 'zombie', 'exiting' or the
    scheduler state letter of a task that can still run."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return "gone"
    if fields[0] in (b"Z", b"X"):
        return "zombie"
    if int(fields[6]) & 0x4 and int(fields[20]) == 0:  # PF_EXITING, and its memory let go of
        return "exiting"
    return fields[0].decode()


def tasks(directory, tasks_file) -> set[int]:
    found = set()
    for current, _, _ in os.walk(directory):
        try:
            found |= {int(t) for t in open(os.path.join(current, tasks_file)).read().split()}
        except OSError:
            pass
    return found


def wait_for_tasks(directory, tasks_file, at_least: int) -> set[int]:
    deadline = time.monotonic() + 20
    while len(tasks(directory, tasks_file)) < at_least:
        assert time.monotonic() < deadline, "the busy program never started"
        time.sleep(0.05)
    time.sleep(0.2)  # let the forker get going
    return tasks(directory, tasks_file)


def assert_none_can_run(before: set[int], directory, tasks_file) -> None:
    after = {tid: state(tid) for tid in before | tasks(directory, tasks_file)}
    running = {tid: s for tid, s in after.items() if s not in ("gone", "zombie", "exiting")}
    assert not running, running


def test_bwrap_stop_all_leaves_no_task_that_can_run():
    if bwrap_missing():
        pytest.skip(bwrap_missing())
    from executor.backends.bwrap import JOIN_CGROUPS, PREFIX, BwrapBackend

    cgroup = BwrapBackend().tree().create(f"{PREFIX}{int(time.time()) + 600}-stop{uuid.uuid4().hex[:8]}", 256 << 20, 64, 2)
    procs = cgroup.procs_files
    tasks_file = "tasks" if cgroup.version == 1 else "cgroup.threads"
    program = subprocess.Popen(["/bin/sh", "-c", JOIN_CGROUPS, "test", str(len(procs)), *procs,
                                sys.executable, "-c", BUSY], start_new_session=True)
    try:
        before = wait_for_tasks(cgroup.dirs["pids"], tasks_file, 5)
        assert cgroup.stop_all()
        assert_none_can_run(before, cgroup.dirs["pids"], tasks_file)
    finally:
        program.kill()
        program.wait()
        cgroup.stop_all()
        assert cgroup.remove()


def test_docker_accounting_stop_leaves_no_task_that_can_run():
    from django.conf import settings

    from executor.backends.cgroups import ROOT, Accounting

    accounting = Accounting.detect()
    if accounting is None:
        pytest.skip("cgroup accounting is unavailable on this host (the warm pool then stops containers through the engine)")
    name = f"stop-test-{uuid.uuid4().hex[:8]}"
    parent = accounting.open(name)
    container = None
    try:
        container = subprocess.run(
            ["docker", "run", "-d", "--rm", "--network", "none", "--cgroup-parent", parent,
             settings.SANDBOX_DOCKER_IMAGE, "python3", "-c", BUSY],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        base = (ROOT / "pids" if accounting.version == 1 else ROOT) / "codeinterp" / name
        tasks_file = "tasks" if accounting.version == 1 else "cgroup.threads"
        before = wait_for_tasks(base, tasks_file, 5)
        assert accounting.stop(name)
        assert_none_can_run(before, base, tasks_file)
    finally:
        if container:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        accounting.close(name)


def test_docker_sweep_removes_only_old_empty_accounting_cgroups():
    """What a dead worker leaves in the accounting parent goes; a cgroup still holding a
    process, a young one (its container may be about to start) and bwrap's stay."""
    from executor.backends.cgroups import Accounting

    accounting = Accounting.detect()
    if accounting is None:
        pytest.skip("cgroup accounting is unavailable on this host")
    tag = uuid.uuid4().hex[:8]
    old_empty, busy, bwraps = f"sweep-old-{tag}", f"sweep-busy-{tag}", f"bw-0-sweep-{tag}"
    for name in (old_empty, busy, bwraps):
        accounting.open(name)
    holder = None
    try:
        memory_dir = accounting.dirs(busy)[0]
        holder = subprocess.Popen(["/bin/sh", "-c", f'echo $$ > "{memory_dir}/cgroup.procs" && exec sleep 60'])
        deadline = time.monotonic() + 5
        while not open(memory_dir / "cgroup.procs").read().split():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        accounting.sweep(older_than_s=1.0)  # first sighting: nothing is old enough yet
        assert all(d.exists() for d in accounting.dirs(old_empty))
        time.sleep(1.2)
        young = f"sweep-young-{tag}"
        accounting.open(young)
        accounting.sweep(older_than_s=1.0)
        assert not any(d.exists() for d in accounting.dirs(old_empty))
        assert all(d.exists() for d in accounting.dirs(busy))
        assert all(d.exists() for d in accounting.dirs(young))
        assert all(d.exists() for d in accounting.dirs(bwraps))
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        for name in (old_empty, busy, bwraps, f"sweep-young-{tag}"):
            accounting.close(name)
