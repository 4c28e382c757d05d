"""A program in a warm sandbox is as hostile as any other: it can write the status FIFO
itself, replace os.kill, and keep running while the server collects its outputs. The server
must stop every process of it before it looks at /mnt/data, and never follow a symlink there."""

import os
import signal
import subprocess
import time
import uuid

import pytest

from tests.liveserver import Client, LiveServer


@pytest.fixture(scope="module")
def pooled():
    live = LiveServer(SANDBOX_POOL="py:2").start()
    yield live
    live.stop()


def warm_ready(server) -> bool:
    out = server.manage("shell", "-c", "from executor.models import WarmSandbox as W; print(W.objects.filter(state='ready').count())")
    return int(out.stdout.split()[-1]) >= 1


def wait_for_pool(server):
    deadline = time.monotonic() + 90
    while not warm_ready(server):
        assert time.monotonic() < deadline, "the pool never filled"
        time.sleep(0.5)


def test_forged_status_does_not_let_the_program_outlive_the_run(pooled):
    wait_for_pool(pooled)
    marker = uuid.uuid4().hex
    code = f"""
import os, time, subprocess
os.kill = lambda *a: None                      # the runner's clean-up would use this
subprocess.Popen(['python3', '-c', 'import time; time.sleep(300)', '{marker}'])  # must not survive
os.makedirs('sub', exist_ok=True)
open('sub/ok.txt', 'w').write('fine')
if os.fork() == 0:                             # keeps swapping sub/ for a symlink to /
    for _ in range(10**7):
        try:
            os.rename('sub', 'sub.real'); os.symlink('/', 'sub'); time.sleep(0.0005)
            os.remove('sub'); os.rename('sub.real', 'sub')
        except OSError:
            pass
    os._exit(0)
fd = os.open('/mnt/code/.status', os.O_WRONLY)  # claim to be finished while still running
os.write(fd, b'0\\n')
time.sleep(30)
"""
    body = Client(pooled).exec("py", code)
    assert body["stderr"] == "", body  # the lingering process did start
    assert_stopped_then_gone(marker)
    names = {f["name"] for f in body["files"]}
    assert names <= {"sub/ok.txt", "sub.real/ok.txt"}, names
    for f in body["files"]:
        content = Client(pooled).get(f"/download/{body['session_id']}/{f['id']}").content
        assert content == b"fine"


def running_with(marker: str) -> dict[int, bytes]:
    """{pid: state} of processes whose command line holds `marker`, read from /proc here."""
    found = {}
    for pid in subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split():
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        exiting = int(fields[6]) & 0x4 and int(fields[20]) == 0  # PF_EXITING, memory let go of
        found[int(pid)] = b"exiting" if exiting else fields[0]
    return found


def assert_stopped_then_gone(marker: str) -> None:
    """When the response arrives nothing of the program may still be able to run: each of
    its processes is gone, a zombie, or inside the kernel's exit (PF_EXITING); tearing down
    their memory may finish a moment later, and then they must be gone altogether."""
    left = running_with(marker)
    assert all(state in (b"Z", b"X", b"exiting") for state in left.values()), left
    deadline = time.monotonic() + 10
    while running_with(marker):
        assert time.monotonic() < deadline, running_with(marker)
        time.sleep(0.05)


FORKER = "import os\nwhile True:\n  try:\n    if os.fork() == 0:\n      open('forked.txt', 'a').write('x'); os._exit(0)\n    os.wait()\n  except OSError:\n    pass\n"


def test_busy_writers_and_forkers_are_stopped_before_outputs_are_read(pooled):
    """Threads that keep rewriting a file in /mnt/data and processes that keep forking, while
    the program claims to be done: none of them may act once the response is on its way."""
    wait_for_pool(pooled)
    marker = uuid.uuid4().hex
    code = f"""
import os, time, threading
import numpy  # a big address space: its teardown is what the server no longer waits for
os.kill = lambda *a: None
def writer():
    n = 0
    while True:
        n += 1
        with open('counter.txt', 'w') as out:
            out.write(str(n))
for _ in range(3):
    threading.Thread(target=writer, daemon=True).start()
for _ in range(4):
    if os.fork() == 0:
        os.execvp('python3', ['python3', '-c', {FORKER!r}, '{marker}'])
time.sleep(0.3)
fd = os.open('/mnt/code/.status', os.O_WRONLY)
os.write(fd, b'0\\n')
writer()
"""
    body = Client(pooled).exec("py", code)
    assert body["run"]["code"] == 0, body
    assert_stopped_then_gone(marker)
    counter = [f for f in body["files"] if f["name"] == "counter.txt"]
    assert counter, body
    content = Client(pooled).get(f"/download/{body['session_id']}/{counter[0]['id']}").content
    assert content == b"" or content.isdigit(), content  # a snapshot, possibly mid-rewrite


def test_stopped_means_exiting_not_paused():
    """The server's notion of "stopped" (executor/backends/cgroups.py): a paused process can
    be resumed, so it does not count; a zombie or a vanished one does."""
    from executor.backends.cgroups import task_is_stopped

    assert not task_is_stopped(os.getpid())
    paused = subprocess.Popen(["sleep", "30"])
    try:
        os.kill(paused.pid, signal.SIGSTOP)
        time.sleep(0.1)
        assert not task_is_stopped(paused.pid)
        os.kill(paused.pid, signal.SIGKILL)
        time.sleep(0.1)
        assert task_is_stopped(paused.pid)  # a zombie until it is reaped
    finally:
        paused.kill()
        paused.wait()
    assert task_is_stopped(paused.pid)  # gone


def test_garbage_on_the_status_fifo_is_not_a_500(pooled):
    wait_for_pool(pooled)
    code = "import os\nfd = os.open('/mnt/code/.status', os.O_WRONLY)\nos.write(fd, b'x' * 100000 + b'\\n')\nprint('done')\n"
    response = Client(pooled).post("/exec", json={"lang": "py", "code": code, "timeout": 3000})
    assert response.status_code == 200, response.text


def test_a_forged_status_line_does_not_buy_a_second_run(pooled):
    # A short garbage line on the status FIFO ends the warm run's read at once, with no status
    # the server can use. The answer must be that run's (warm), not a cold run of the same code
    # started after it: a program given to a sandbox is never run twice.
    wait_for_pool(pooled)
    code = "import os\nos.write(os.open('/mnt/code/.status', os.O_WRONLY), b'x\\n')\nimport time; time.sleep(1)\nprint('done')\n"
    body = Client(pooled).exec("py", code, timeout=5000)
    assert body["run"]["warm"] is True, body["run"]
