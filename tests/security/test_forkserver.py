"""The fork-server (SANDBOX_FORKSERVER=true, bwrap): its template never runs a program, holds
nothing a program may not have, keeps only CAP_SETUID/CAP_SETGID, and a dead template costs no
request. The rest of the escape suite runs against forked sandboxes too, in CI
(SANDBOX_TEST_FORKSERVER=true, scripts/test.sh)."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import bwrap_missing
from tests.liveserver import CANARY_KEY, Client, LiveServer

pytestmark = pytest.mark.skipif(bwrap_missing() is not None, reason=f"the fork-server needs bwrap's rootfs: {bwrap_missing()}")

TEMPLATE_UID_OFFSET = 30000
CAP_SETUID_SETGID = (1 << 6) | (1 << 7)


@pytest.fixture(scope="module")
def forked():
    live = LiveServer(SANDBOX_BACKEND="bwrap", SANDBOX_FORKSERVER="true", SANDBOX_POOL="py:2,bash:1").start()
    yield live
    live.stop()


def ready(server, language: str = "py") -> int:
    out = server.manage("shell", "-c", "from executor.models import WarmSandbox as W; "
                                       f"print(W.objects.filter(state='ready', language={language!r}).count())")
    return int(out.stdout.split()[-1])


def wait_for(condition, what: str, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def templates(server) -> list[int]:
    """pids of this server's templates: `template.py serve` whose parent is `template.py
    enter`, the child of this server's keeper (its environment names the server's data dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = ppid(int(entry))
            if (b"template.py\x00serve" in cmdline(int(entry)) and b"template.py\x00enter" in cmdline(parent)
                    and str(server.data_dir).encode() in open(f"/proc/{ppid(parent)}/environ", "rb").read()):
                found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


def template_for(server, mode: str) -> list[int]:
    """The templates for runner `mode`: "python" (preloaded) or "exec" (lean: python3 -S)."""
    return [pid for pid in templates(server) if (b"\x00-S\x00" in cmdline(pid)) == (mode == "exec")]


def cmdline(pid: int) -> bytes:
    return open(f"/proc/{pid}/cmdline", "rb").read()


def ppid(pid: int) -> int:
    return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def rss(pid: int) -> int:
    """Resident memory in kB."""
    return int(status(pid)["VmRSS"].split()[0])


def status(pid: int) -> dict:
    return dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)


def forked_run(server, code: str) -> dict:
    """A run the fork path served: warm, and under the template's filter as well as its own."""
    wait_for(lambda: ready(server) >= 1, "the pool never filled")
    body = Client(server).exec("py", "print(open('/proc/self/status').read().split('Seccomp_filters:')[1].split()[0])\n" + code)
    assert body["run"]["warm"] is True, body["run"]
    filters, _, rest = body["stdout"].partition("\n")
    assert filters == "2", "not a fork of the template (one seccomp filter): the fork-server did not serve it"
    return {**body, "stdout": rest}


def test_the_template_holds_only_setuid_and_setgid_and_no_secret(forked):
    forked_run(forked, "print(1)")
    # A full pool: no fork in flight, so the template holds no request's fds at the moment.
    wait_for(lambda: ready(forked) == 2 and ready(forked, "bash") == 1, "the pool was not refilled")
    time.sleep(0.5)
    both = templates(forked)
    assert sorted(both) == sorted(template_for(forked, "python") + template_for(forked, "exec")) and len(both) == 2, both
    for template in both:
        check_template(forked, template)


def check_template(forked, template: int) -> None:
    state = status(template)
    uid_base = int(forked.env.get("SANDBOX_UID_BASE", "200000"))
    assert state["Uid"].split() == [str(uid_base + TEMPLATE_UID_OFFSET)] * 4
    assert state["Groups"].strip() == ""
    for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(state[field], 16) == CAP_SETUID_SETGID, (field, state[field])
    assert state["NoNewPrivs"].strip() == "1" and state["Seccomp"].strip() == "2"
    environ = open(f"/proc/{template}/environ", "rb").read()
    assert CANARY_KEY.encode() not in environ and b"SANDBOX_" not in environ and b"DJANGO" not in environ
    # Nothing of any work area, the server's storage or its database in the template's view.
    mounts = open(f"/proc/{template}/mountinfo").read()
    assert str(forked.storage) not in mounts and "/mnt/data" not in mounts and str(forked.data_dir) not in mounts
    # Its fds: /dev/null twice, the pipe to the keeper's log, the keeper's socket, and the
    # font files matplotlib keeps open (read-only image files); nothing else (a detached work
    # area clone would read as "/").
    fds = {int(fd): os.readlink(f"/proc/{template}/fd/{fd}") for fd in os.listdir(f"/proc/{template}/fd")}
    assert [fds.get(n, "")[:5] for n in range(4)] == ["/dev/", "/dev/", "pipe:", "socke"], fds
    assert all(target.startswith("/opt/sandbox/python/") for fd, target in fds.items() if fd > 3), fds
    # Its own network namespace: nothing to reach, not even the host's loopback.
    assert os.readlink(f"/proc/{template}/ns/net") != os.readlink("/proc/self/ns/net")


def test_the_exec_languages_fork_from_a_lean_template(forked):
    # js, ts and bash only exec: their template has nothing loaded, so a fork copies a few MB
    # (a fork of the Python template copies its ~150 MB page tables and ends them again).
    wait_for(lambda: ready(forked) >= 1 and ready(forked, "bash") >= 1, "the pool never filled")
    [lean], [heavy] = template_for(forked, "exec"), template_for(forked, "python")
    assert "numpy" in maps(heavy) and "numpy" not in maps(lean) and "site-packages" not in maps(lean)
    assert rss(lean) < rss(heavy) / 4, (rss(lean), rss(heavy))
    # A bash run is a fork of it: warm, under the template's filter and its own.
    body = Client(forked).exec("bash", "grep Seccomp_filters /proc/self/status")
    assert body["run"]["warm"] is True and body["stdout"].split() == ["Seccomp_filters:", "2"], body


def test_a_program_sees_neither_the_template_nor_its_uid(forked):
    body = forked_run(forked, """
import os
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print(pids)
print(sorted({open(f'/proc/{p}/status').read().split('Uid:')[1].split()[0] for p in pids}))
print(os.getuid(), *open('/proc/self/uid_map').read().split())
""")
    lines = body["stdout"].splitlines()
    assert json.loads(lines[0]) == [1, 2], lines  # its init and itself
    assert lines[1] == "['10001']", lines
    uid, inside, outside, count = lines[2].split()
    assert uid == "10001"
    uid_base = int(forked.env.get("SANDBOX_UID_BASE", "200000"))
    assert inside == "10001" and count == "1" and uid_base + 10000 <= int(outside) < uid_base + TEMPLATE_UID_OFFSET


def test_an_execd_program_is_confined_like_a_forked_python_one(forked):
    # bash is exec'd by the fork once it is confined: the same view, the template's filter
    # under its own, no capability, nothing of the template's (its signal dispositions
    # included: Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec).
    wait_for(lambda: ready(forked, "bash") >= 1, "no warm bash sandbox")
    body = Client(forked).exec("bash", 'pids=(); for p in /proc/[0-9]*; do pids+=("${p#/proc/}"); done; echo "${pids[*]}"\n'
                                       'while read -r key value; do case $key in CapEff:|CapBnd:|NoNewPrivs:|Seccomp_filters:|SigIgn:) echo "$key $value";; esac; done < /proc/self/status\n'
                                       'read -r inside outside count < /proc/self/uid_map; echo "$(id -u) $inside $outside $count"\n'
                                       'ls /proc/$$/fd')  # (no pipe: bash would hold its end)
    assert body["run"]["warm"] is True, body["run"]
    lines = body["stdout"].splitlines()
    assert lines[0] == "1 2", lines  # its init and bash (the ls, id and tr children come later)
    state = dict(line.split(": ", 1) for line in lines[1:6])
    assert state == {"CapEff": "0" * 16, "CapBnd": "0" * 16, "NoNewPrivs": "1", "Seccomp_filters": "2",
                     "SigIgn": state.get("SigIgn")}, lines
    sigpipe, sigxfsz = 1 << (13 - 1), 1 << (25 - 1)  # (bash ignores SIGQUIT itself, bit 3)
    assert int(state["SigIgn"], 16) & (sigpipe | sigxfsz) == 0, lines
    uid, inside, outside, count = lines[6].split()
    uid_base = int(forked.env.get("SANDBOX_UID_BASE", "200000"))
    assert uid == inside == "10001" and count == "1" and uid_base + 10000 <= int(outside) < uid_base + TEMPLATE_UID_OFFSET
    assert lines[7:] == ["0", "1", "2", "255"], lines  # (255: bash's own script fd)


def test_the_sandbox_init_is_the_images_small_one_and_out_of_reach(forked):
    # pid 1 is codeinterp-init (spawned, not a copy of the template): the program, the same
    # uid, cannot open its memory (it is non-dumpable), signals do not end it, and it reaps
    # the orphans handed to it. The process that made the sandbox is outside its pid
    # namespace (the program's parent pid is 0).
    body = forked_run(forked, """
import os, signal, time
print(open('/proc/1/cmdline').read().split(chr(0))[0])
try:
    open('/proc/1/mem', 'rb')
    print('mem readable')
except OSError as error:
    print('mem', error.errno)
for number in (signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT, signal.SIGALRM, signal.SIGCHLD):
    os.kill(1, number)
read, write = os.pipe()
if os.fork() == 0:  # an orphan: its parent ends at once, it ends a moment later
    grandchild = os.fork()
    if grandchild == 0:
        time.sleep(0.2)
        os._exit(0)
    os.write(write, str(grandchild).encode())
    os._exit(0)
os.wait()
orphan = int(os.read(read, 16))
deadline = time.monotonic() + 5
while os.path.exists(f'/proc/{orphan}') and time.monotonic() < deadline:
    time.sleep(0.05)
print('reaped' if not os.path.exists(f'/proc/{orphan}') else 'zombie')
print(open('/proc/1/cmdline').read().split(chr(0))[0])
print(os.getppid())
""")
    path, mem, reaped, still, ppid = body["stdout"].splitlines()
    assert path == still == "/opt/sandbox/bin/codeinterp-init", body["stdout"]
    assert mem == "mem 13", body["stdout"]  # EACCES
    assert reaped == "reaped", body["stdout"]
    assert ppid == "0", ppid


def test_a_program_cannot_end_its_init(forked):
    # (It was a Python process once, whose SIGINT handler let that signal through. A handled
    # signal would reach an init from inside; codeinterp-init blocks them all.)
    body = forked_run(forked, "import os, signal, time\nos.kill(1, signal.SIGINT); os.kill(1, signal.SIGTERM)\ntime.sleep(0.3)\nprint('still here')")
    assert body["stdout"] == "still here\n" and body["run"]["code"] == 0, body


def test_forks_do_not_share_random_state(forked):
    code = "import random, numpy\nprint(random.random(), numpy.random.rand())"
    first = forked_run(forked, code)["stdout"].split()
    second = forked_run(forked, code)["stdout"].split()
    assert first[0] != second[0], "random: the same numbers in two sandboxes"
    assert first[1] != second[1], "numpy.random: the same numbers in two sandboxes"


def test_a_killed_template_costs_no_request_and_is_replaced(forked):
    forked_run(forked, "print(1)")
    [old] = template_for(forked, "python")
    os.kill(old, signal.SIGKILL)  # its pid namespace ends: every sandbox it made goes too
    for _ in range(4):  # served warm or cold, never an error
        body = Client(forked).exec("py", "print('fine')")
        assert body["stdout"] == "fine\n", body
    wait_for(lambda: template_for(forked, "python") not in ([], [old]), "no new template")
    # Sandboxes started the ordinary way while there was no template may still be ready; once
    # they are used up, a fork of the new template serves again.
    served = []
    for _ in range(8):
        wait_for(lambda: ready(forked) >= 1, "the pool never filled")
        body = Client(forked).exec("py", "print(open('/proc/self/status').read().split('Seccomp_filters:')[1].split()[0])")
        served.append(body["stdout"].strip())
        if served[-1] == "2":
            break
    assert served[-1] == "2", f"no fork of the new template served a call: {served}"
