"""Warm sandboxes: single use, refill, replacement of dead ones, nothing left at shutdown, and
the same observable behaviour as a cold run."""

import json
import subprocess
import time

import pytest

from tests.liveserver import Client, LiveServer

PROBE = r"""
import os, sys, json, resource, signal
print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "uid": os.getuid(), "gid": os.getgid(), "name": __name__,
    "file": __file__, "path0": sys.path[0], "env": {k: v for k, v in os.environ.items() if k != "HOSTNAME"},
    "limits": {n: resource.getrlimit(getattr(resource, n)) for n in ("RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_NPROC")},
    "sigpipe": str(signal.getsignal(signal.SIGPIPE)), "tmp": sorted(os.listdir("/tmp")) == [] or sorted(os.listdir("/tmp")),
    "data": sorted(os.listdir(".")), "caps": [l for l in open("/proc/self/status") if l.startswith(("Cap", "NoNewPrivs", "Seccomp"))],
}))
print("to stderr", file=sys.stderr)
"""

SAME_OUTPUT = [
    ("py", PROBE),
    ("py", "raise KeyError('missing')"),
    ("py", "def f(:\n  pass"),
    ("py", "import sys\nprint('partial', end='')\nsys.exit(4)"),
    ("py", "import sys\nsys.exit('a message')"),
    ("py", "import os\nos._exit(7)"),
    ("py", "import atexit\natexit.register(lambda: print('bye'))\nprint('hi')"),
    ("py", "import threading, time\nt = threading.Thread(target=lambda: (time.sleep(0.3), print('thread done')))\nt.start()\nprint('main done')"),
    ("py", "import subprocess\nprint(subprocess.run(['bash', '-c', 'echo from child; exit 3']).returncode)"),
    ("py", "import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()\nprint(open('plot_1.png', 'rb').read()[:4])"),
]


def normalised(body: dict) -> dict:
    return {"stdout": body["stdout"], "stderr": body["stderr"], "code": body["run"]["code"],
            "files": sorted(f["name"] for f in body["files"])}


def pool_containers(server: LiveServer) -> list[str]:
    out = server.manage("shell", "-c", "from executor import pool; print(pool.instance())").stdout.split()[-1]
    found = subprocess.run(["docker", "ps", "-q", "--filter", f"label=org.librechat.codeinterp.pool={out}"],
                           capture_output=True, text=True).stdout
    return found.split()


def ready_count(server: LiveServer) -> int:
    out = server.manage("shell", "-c", "from executor.models import WarmSandbox as W; print(W.objects.filter(state='ready').count())")
    return int(out.stdout.split()[-1])


def wait_until(predicate, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


@pytest.fixture(scope="module")
def pooled():
    live = LiveServer(SANDBOX_POOL="py:2").start()
    assert wait_until(lambda: ready_count(live) == 2), "the pool never filled"
    yield live
    live.stop()


@pytest.fixture(scope="module")
def cold():
    live = LiveServer(SANDBOX_POOL="off").start()
    yield live
    live.stop()


@pytest.mark.parametrize("lang,code", SAME_OUTPUT, ids=[f"case{i}" for i in range(len(SAME_OUTPUT))])
def test_warm_behaves_like_cold(pooled, cold, lang, code):
    assert wait_until(lambda: ready_count(pooled) >= 1)
    warm = Client(pooled).exec(lang, code, args=["one", "two words"])
    plain = Client(cold).exec(lang, code, args=["one", "two words"])
    assert normalised(warm) == normalised(plain)


def test_warm_limits_and_errors_like_cold(pooled, cold):
    for server in (pooled, cold):
        client = Client(server)
        assert wait_until(lambda: ready_count(pooled) >= 1)
        loop = client.exec("py", "while True: pass", timeout=1500)
        assert loop["run"]["timed_out"] and "Time limit exceeded" in loop["stderr"]
        oom = client.exec("py", "x = bytearray(1024**3)\nx[::4096] = b'x' * (len(x) // 4096)")
        assert oom["run"]["oom_killed"] and "Out of memory" in oom["stderr"]
        flood = client.exec("py", "import sys\nwhile True: sys.stdout.write('z' * 65536)")
        assert flood["run"]["output_truncated"] and len(flood["stdout"]) == 1 << 20


def test_single_use_and_refill(pooled):
    client = Client(pooled)
    assert wait_until(lambda: ready_count(pooled) == 2)
    before = set(pool_containers(pooled))
    first = client.exec("py", "import os\nopen('/tmp/left-behind', 'w').write('x')\nos.environ['LEAK'] = '1'\nprint(os.getpid())")
    second = client.exec("py", "import os\nprint(os.path.exists('/tmp/left-behind'), 'LEAK' in os.environ)")
    assert first["stdout"].strip() and second["stdout"] == "False False\n"
    assert wait_until(lambda: ready_count(pooled) == 2), "the pool was not refilled"
    after = set(pool_containers(pooled))
    assert len(before - after) == 2, "each execution must use up (destroy) its sandbox"


def test_a_sandbox_that_dies_while_waiting_is_replaced(pooled):
    assert wait_until(lambda: ready_count(pooled) == 2)
    victim = pool_containers(pooled)[0]
    subprocess.run(["docker", "kill", victim], capture_output=True, check=True)
    assert wait_until(lambda: victim not in pool_containers(pooled) and ready_count(pooled) == 2)
    assert Client(pooled).exec("py", "print('still fine')")["stdout"] == "still fine\n"


def test_shutdown_leaves_no_container_mount_or_process_behind():
    live = LiveServer(SANDBOX_POOL="py:2").start()
    try:
        assert wait_until(lambda: ready_count(live) == 2)
        Client(live).exec("py", "print(1)")
        label = live.manage("shell", "-c", "from executor import pool; print(pool.instance())").stdout.split()[-1]
        keeper = subprocess.run(["pgrep", "-f", f"manage.py pool_keeper"], capture_output=True, text=True).stdout.split()
    finally:
        live.process.terminate()  # a graceful stop of the master, as an administrator would
        live.process.wait(60)
    time.sleep(0.5)
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=org.librechat.codeinterp.pool={label}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""
    assert str(live.storage) not in open("/proc/self/mountinfo").read()
    for pid in keeper:
        assert subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0 or not _is_keeper_of(pid, live)
    live.stop()


def _is_keeper_of(pid: str, live: LiveServer) -> bool:
    try:
        return str(live.data_dir) in open(f"/proc/{pid}/environ").read()
    except OSError:
        return False
