"""A program in a warm sandbox is as hostile as any other: it can write the status FIFO
itself, replace os.kill, and keep running while the server collects its outputs. The server
must stop every process of it before it looks at /mnt/data, and never follow a symlink there."""

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
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout == ""
    names = {f["name"] for f in body["files"]}
    assert names <= {"sub/ok.txt", "sub.real/ok.txt"}, names
    for f in body["files"]:
        content = Client(pooled).get(f"/download/{body['session_id']}/{f['id']}").content
        assert content == b"fine"


def test_garbage_on_the_status_fifo_is_not_a_500(pooled):
    wait_for_pool(pooled)
    code = "import os\nfd = os.open('/mnt/code/.status', os.O_WRONLY)\nos.write(fd, b'x' * 100000 + b'\\n')\nprint('done')\n"
    response = Client(pooled).post("/exec", json={"lang": "py", "code": code, "timeout": 3000})
    assert response.status_code == 200, response.text
