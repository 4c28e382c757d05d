"""Warm sandboxes: single use, refill, replacement of dead ones, nothing left at shutdown, and
the same observable behaviour as a cold run."""

import json
import os
import subprocess
import time
from datetime import datetime, timezone

import pytest

from tests.liveserver import Client, LiveServer

BACKEND = os.environ.get("SANDBOX_TEST_BACKEND", "docker")

PROBE = r"""
import os, sys, json, pwd, resource, signal
print(json.dumps({
    # (host uids differ by design: each slot and each warm sandbox has its own)
    "argv": sys.argv, "cwd": os.getcwd(), "user": pwd.getpwuid(os.getuid()).pw_name, "unprivileged": os.getuid() >= 1000,
    "same_gid": os.getgid() == os.getuid(), "name": __name__,
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
    # The warm-up draws a throw-away pandas plot: nothing of it may show (figure numbers,
    # open figures, unit converters pandas registers while plotting, rcParams).
    ("py", "import matplotlib as mpl, matplotlib.pyplot as plt, matplotlib.units as u\n"
           "print(plt.get_fignums(), plt.figure().number, mpl.rcParams == mpl.rcParamsDefault or sorted(\n"
           "  k for k in mpl.rcParams if mpl.rcParams[k] != mpl.rcParamsDefault[k]))\n"
           "print(sorted(f'{k.__module__}.{k.__name__}={type(v).__module__}' for k, v in u.registry.items()))"),
]


# Exec'd languages: what their process is given (argv, cwd, ids, limits, signal dispositions
# and masks, capabilities, filters, fds, environment, /tmp and /mnt/data), as each prints it.
STATUS_FIELDS = ("Cap", "NoNewPrivs", "Seccomp", "SigIgn", "SigBlk")
EXEC_PROBES = [
    # (host uids differ by design, as in PROBE: on docker they are the ids inside too)
    ("bash", 'echo "$0 $*"; pwd; id -un; [ "$(id -u)" = "$(id -g)" ] && echo same gid; ulimit -n -f -c -u -v\n'
             'while read -r key value; do case $key in Cap*|NoNewPrivs:|Seccomp*|SigIgn:|SigBlk:) echo "$key $value";; esac; done < /proc/self/status\n'
             'ls /proc/$$/fd; ls -A /tmp .; env | grep -v ^HOSTNAME= | sort; trap -p\n'
             'echo to stderr >&2; exit 3'),
    ("js", "const fs = require('fs');\n"
           "const status = fs.readFileSync('/proc/self/status', 'utf8').split('\\n').filter(l => /^(Cap|NoNewPrivs|Seccomp|SigIgn|SigBlk)/.test(l));\n"
           "const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'HOSTNAME').sort());\n"
           "console.log(JSON.stringify({argv: process.argv, cwd: process.cwd(), unprivileged: process.getuid() >= 1000,\n"
           "  same_gid: process.getuid() === process.getgid(), status, env,\n"
           "  tmp: fs.readdirSync('/tmp'), data: fs.readdirSync('.')}));\n"
           "console.error('to stderr'); process.exitCode = 2;"),
    ("ts", "const lines: string[] = require('fs').readFileSync('/proc/self/status', 'utf8').split('\\n');\n"
           "console.log(process.argv.join(' '), process.cwd(), lines.filter((l: string) => /^(Cap|NoNewPrivs|Seccomp|SigIgn|SigBlk)/.test(l)).join(';'));\n"
           "throw new Error('from ts');"),
]


def normalised(body: dict) -> dict:
    stdout = body["stdout"]
    if os.environ.get("SANDBOX_TEST_FORKSERVER") == "true" and body["run"]["warm"] and "Seccomp_filters" in stdout:
        # A fork-server child has the template's filter under the sandbox's own (a call must
        # pass both): the one difference from a cold run it may show, and the sign that the
        # fork-server served it (an ordinary warm sandbox has one). (Python's probe prints
        # the lines JSON-escaped, the exec'd languages' as they are.)
        for tab in ("\\t", "\t", " "):
            stdout = stdout.replace(f"Seccomp_filters:{tab}2", f"Seccomp_filters:{tab}1")
        assert stdout != body["stdout"], "not a fork of the template"
    return {"stdout": stdout, "stderr": body["stderr"], "code": body["run"]["code"],
            "files": sorted(f["name"] for f in body["files"])}


def shell(server: LiveServer, code: str) -> str:
    done = server.manage("shell", "-v0", "-c", code)  # -v0: no word of what it imported
    assert done.returncode == 0, done.stderr
    return done.stdout


def pool_containers(server: LiveServer) -> list[str]:
    """The live warm sandboxes of a server: containers, or bwrap sandboxes with a live cgroup."""
    if BACKEND == "bwrap":
        return shell(server, "from executor import pool; print(' '.join(sorted(pool.running_pool_members())))").split()
    out = shell(server, "from executor import pool; print(pool.instance())").split()[-1]
    found = subprocess.run(["docker", "ps", "-q", "--filter", f"label=org.librechat.codeinterp.pool={out}"],
                           capture_output=True, text=True).stdout
    return found.split()


def kill_sandbox(server: LiveServer, handle: str) -> None:
    if BACKEND == "bwrap":  # SIGKILL to everything in its cgroup, as an OOM or a crash would
        shell(server, "from executor.backends import get_backend as g; "
                      f"c = g().tree().find({handle.split(':', 1)[1]!r}); c.kill(); print(c.wait_empty(5))")
    else:
        subprocess.run(["docker", "kill", handle], capture_output=True, check=True)


def leftovers(server: LiveServer, handles: list[str]) -> list[str]:
    """What is left of the given sandboxes: containers, or bwrap cgroups and aliases."""
    if BACKEND == "bwrap":
        units = [h.split(":", 1)[1] for h in handles]
        out = shell(server, "from executor.backends import get_backend as g; from executor.backends.bwrap import ALIAS_ROOT as A; "
                            f"t = g().tree(); print(' '.join(u for u in {units!r} if t.find(u) is not None or (A / u).exists()))")
        return out.split()
    label = shell(server, "from executor import pool; print(pool.instance())").split()[-1]
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=org.librechat.codeinterp.pool={label}"], capture_output=True, text=True)
    return left.stdout.split()


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


def filled_server(pool: str):
    """A server with warm pool `pool`, once every sandbox of it is ready; stopped afterwards."""
    live = LiveServer(SANDBOX_POOL=pool).start()
    wanted = sum(int(part.split(":")[1]) for part in pool.split(","))
    assert wait_until(lambda: ready_count(live) == wanted), "the pool never filled"
    yield live
    live.stop()


@pytest.fixture(scope="module")
def pooled():
    yield from filled_server("py:2")


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
    assert warm["run"]["warm"] is True and plain["run"]["warm"] is False  # really both paths
    assert normalised(warm) == normalised(plain)


@pytest.fixture(scope="module")
def pooled_exec():
    yield from filled_server("js:1,ts:1,bash:1")


@pytest.mark.parametrize("lang,code", EXEC_PROBES, ids=[lang for lang, _ in EXEC_PROBES])
def test_warm_exec_languages_behave_like_cold(pooled_exec, cold, lang, code):
    # The warm runner execs these (with the fork-server, the fork of the template does once
    # it is confined): the program must get exactly what a cold start gives it.
    assert wait_until(lambda: ready_count(pooled_exec) == 3)
    warm = Client(pooled_exec).exec(lang, code, args=["one", "two words"])
    plain = Client(cold).exec(lang, code, args=["one", "two words"])
    assert warm["run"]["warm"] is True and plain["run"]["warm"] is False  # really both paths
    assert plain["run"]["code"] != 0 and "Seccomp" in plain["stdout"], plain  # the probe ran
    assert normalised(warm) == normalised(plain)


def test_warm_limits_and_errors_like_cold(pooled, cold):
    for server in (pooled, cold):
        client = Client(server)
        assert wait_until(lambda: ready_count(pooled) >= 2)
        loop = client.exec("py", "while True: pass", timeout=1500)
        assert loop["run"]["warm"] is (server is pooled)
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


FORKSERVER = os.environ.get("SANDBOX_TEST_FORKSERVER") == "true"


@pytest.mark.skipif(FORKSERVER, reason="with the fork-server a refill costs a fork and happens at once (the next test)")
def test_back_to_back_calls_run_cold_instead_of_racing_refills(pooled):
    # A drained pool used to refill at once, mid-load: each refill (a container start and the
    # imports) took the cores from the calls it was meant for, and back to back calls got slower
    # than with no pool at all. Now it refills only in a pause: the burst uses the two ready
    # sandboxes, then runs cold, and no sandbox is started until it ends.
    client = Client(pooled)
    assert wait_until(lambda: ready_count(pooled) == 2)
    began = datetime.now(timezone.utc)
    warm = [client.exec("py", "print(1)")["run"]["warm"] for _ in range(16)]
    ended = datetime.now(timezone.utc)
    assert warm == [True, True] + [False] * 14, warm
    created = shell(pooled, "from executor.models import WarmSandbox as W\n"
                            "for w in W.objects.all(): print(w.created_at.isoformat())").split()
    during = [stamp for stamp in created if began <= datetime.fromisoformat(stamp) <= ended]
    assert not during, f"{len(during)} warm sandboxes were started during the burst"
    assert wait_until(lambda: ready_count(pooled) == 2), "the pool was not refilled after the burst"


@pytest.mark.skipif(not FORKSERVER, reason="only the fork-server refills during a burst (SANDBOX_TEST_FORKSERVER=true)")
def test_back_to_back_calls_stay_warm_with_the_fork_server(pooled):
    # Each claim wakes the keeper, which forks a replacement from the template, claimable at
    # once; a worker that finds none ready waits for it (up to 0.5 s) instead of running cold.
    # So a client calling back to back keeps getting warm runs. (Without the fork-server the
    # same burst gets two warm calls, then cold ones: the test above.)
    client = Client(pooled)
    assert wait_until(lambda: ready_count(pooled) == 2)
    warm = [client.exec("py", "print(1)")["run"]["warm"] for _ in range(16)]
    assert sum(warm) >= 15, warm  # (one miss allowed: a fork slower than 0.5 s on a loaded CI box)
    assert wait_until(lambda: ready_count(pooled) == 2), "the pool was not refilled after the burst"


def test_a_sandbox_that_dies_while_waiting_is_replaced(pooled):
    assert wait_until(lambda: ready_count(pooled) == 2)
    victim = pool_containers(pooled)[0]
    kill_sandbox(pooled, victim)
    assert wait_until(lambda: victim not in pool_containers(pooled) and ready_count(pooled) == 2)
    assert Client(pooled).exec("py", "print('still fine')")["stdout"] == "still fine\n"


def test_shutdown_leaves_no_container_mount_or_process_behind():
    live = LiveServer(SANDBOX_POOL="py:2").start()
    try:
        assert wait_until(lambda: ready_count(live) == 2)
        Client(live).exec("py", "print(1)")
        assert wait_until(lambda: ready_count(live) == 2)
        members = pool_containers(live)
        assert len(members) == 2
        keeper = subprocess.run(["pgrep", "-f", f"manage.py pool_keeper"], capture_output=True, text=True).stdout.split()
    finally:
        live.process.terminate()  # a graceful stop of the master, as an administrator would
        live.process.wait(60)
    time.sleep(0.5)
    assert leftovers(live, members) == []
    assert str(live.storage) not in open("/proc/self/mountinfo").read()
    for pid in keeper:
        assert subprocess.run(["kill", "-0", pid], capture_output=True).returncode != 0 or not _is_keeper_of(pid, live)
    live.stop()


def _is_keeper_of(pid: str, live: LiveServer) -> bool:
    try:
        return str(live.data_dir) in open(f"/proc/{pid}/environ").read()
    except OSError:
        return False
