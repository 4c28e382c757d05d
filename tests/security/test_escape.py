"""The escape suite: hostile programs against the real sandbox, under runc and under runsc.

Every invariant of DESIGN.md that concerns the sandbox has a test here. After each test the
server must still answer /health (autouse fixture below).
"""

import json
import subprocess
import time
import uuid

import pytest
import requests

from tests.liveserver import CANARY_KEY, ROOT


@pytest.fixture(autouse=True)
def server_stays_healthy(sandbox_server):
    yield
    assert requests.get(sandbox_server.url + "/health", timeout=5).status_code == 200


def py(sandbox, code, **body):
    return sandbox.exec("py", code, **body)


def test_no_network_interfaces_or_routes(sandbox):
    out = py(sandbox, "import os; print(json.dumps(sorted(os.listdir('/sys/class/net'))))\n".replace("import os", "import os, json"))
    assert json.loads(out["stdout"]) in (["lo"], [])


def test_cannot_reach_the_host_loopback(sandbox, sandbox_server):
    code = (
        "import socket\ns = socket.socket(); s.settimeout(3)\n"
        f"try:\n    s.connect(('127.0.0.1', {sandbox_server.port})); print('CONNECTED')\n"
        "except OSError as e:\n    print('refused', e.errno)\n"
    )
    out = py(sandbox, code)
    assert "CONNECTED" not in out["stdout"] and "refused" in out["stdout"], out


def test_name_resolution_fails(sandbox):
    # No interface but lo and no route: a lookup cannot leave the sandbox, so nothing is sent.
    code = "import socket\ntry:\n    print(socket.getaddrinfo('pypi.org', 443)); print('RESOLVED')\nexcept OSError as e:\n    print('failed', e)\n"
    out = py(sandbox, code)
    assert "RESOLVED" not in out["stdout"] and "failed" in out["stdout"], out


def test_shadow_and_server_files_unreadable(sandbox, sandbox_server):
    code = (
        "import os\n"
        "for p in ['/etc/shadow', '/root', %r, %r, '/var/lib/docker', '/proc/1/root/etc/shadow']:\n"
        "    try:\n        open(p).read() if not os.path.isdir(p) else os.listdir(p); print('READ', p)\n"
        "    except OSError as e:\n        print('denied', p, e.errno)\n"
    ) % (str(ROOT / "manage.py"), str(sandbox_server.data_dir))
    out = py(sandbox, code)
    assert "READ" not in out["stdout"], out


def test_no_server_secret_in_environment(sandbox):
    code = "import os\nprint(dict(os.environ))\nfor p in ('/proc/1/environ', '/proc/self/environ', '/proc/1/cmdline'):\n    print(open(p, 'rb').read())\n"
    out = py(sandbox, code)
    assert CANARY_KEY not in out["stdout"]
    assert "SANDBOX_" not in out["stdout"] and "DJANGO" not in out["stdout"]


def test_no_host_path_in_mountinfo(sandbox, sandbox_server):
    out = py(sandbox, "print(open('/proc/self/mountinfo').read())")
    mounts = out["stdout"]
    assert "/mnt/data" in mounts
    for host_path in (str(ROOT), str(sandbox_server.data_dir), "/workspace/exec_"):
        assert host_path not in mounts, host_path


@pytest.mark.parametrize("target", ["/", "/usr", "/etc", "/usr/bin", "/opt/sandbox"])
def test_system_paths_are_read_only(sandbox, target):
    out = py(sandbox, f"try:\n    open('{target.rstrip('/')}/x', 'w'); print('WROTE')\nexcept OSError as e:\n    print('denied', e.errno)\n")
    assert "WROTE" not in out["stdout"] and "denied" in out["stdout"]


def test_privileged_syscalls_fail(sandbox):
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "pid = os.fork()\nif pid == 0:\n    import time; time.sleep(10); os._exit(0)\n"
        "res = {'ptrace': libc.ptrace(16, pid, 0, 0), 'unshare_user': libc.unshare(0x10000000),\n"
        "       'unshare_ns': libc.unshare(0x00020000), 'mount': libc.mount(b'x', b'/tmp', b'tmpfs', 0, None),\n"
        "       'setuid0': libc.setuid(0), 'no_new_privs': -1 if libc.prctl(39, 0, 0, 0, 0) == 1 else 0}\n"
        "open('f.txt', 'w').write('x')\n"
        "for mode in (0o4755, 0o2755):\n"
        "    try:\n        os.chmod('f.txt', mode); res[oct(mode)] = 0\n    except OSError:\n        res[oct(mode)] = -1\n"
        "os.kill(pid, 9)\nimport json; print(json.dumps(res))\n"
        "print(open('/proc/self/status').read())\n"
    )
    out = py(sandbox, code)
    results = json.loads(out["stdout"].splitlines()[0])
    assert all(value == -1 for value in results.values()), results
    assert "CapEff:\t0000000000000000" in out["stdout"]


def test_fork_bomb_is_contained(sandbox):
    code = "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(30); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped after', n, 'forks:', e)\n"
    out = sandbox.exec("py", code, timeout=5000)
    if out["run"]["oom_killed"]:  # gVisor charges each forked interpreter in full
        assert "Out of memory" in out["stderr"]
        return
    assert "stopped after" in out["stdout"], out  # the pids limit refused the next fork
    forks = int(out["stdout"].split("stopped after")[1].split()[0])
    assert forks < 200, out


def test_huge_allocation_is_oom_killed(sandbox):
    out = py(sandbox, "x = bytearray(2 * 1024**3)\nx[::4096] = b'x' * (len(x) // 4096)\nprint('ALLOCATED')")
    assert "ALLOCATED" not in out["stdout"]
    assert out["run"]["oom_killed"] or "MemoryError" in out["stderr"], out
    if out["run"]["oom_killed"]:
        assert "Out of memory" in out["stderr"]


def test_disk_fill_stops_at_the_quota(sandbox):
    code = (
        "written = 0\ntry:\n    with open('big.bin', 'wb') as f:\n        while written < 200 * 1024**2:\n"
        "            f.write(b'x' * 1024**2); f.flush(); written += 1024**2\nexcept OSError as e:\n    print('stopped', e.errno)\n"
        "print('written_mb', written // 1024**2)\n"
    )
    out = py(sandbox, code)
    assert "stopped" in out["stdout"], out  # ENOSPC (28) or EFBIG (27)
    written = int(out["stdout"].split("written_mb")[1])
    assert written <= 64
    assert not [f for f in out["files"] if f["name"] == "big.bin"]


def test_stdout_flood_is_truncated_at_the_cap(sandbox):
    out = py(sandbox, "import sys\nblock = 'y' * 65536\nfor _ in range(3200):\n    sys.stdout.write(block)\n")
    assert out["run"]["output_truncated"] is True
    assert len(out["stdout"].encode()) == 1 << 20
    assert "Output truncated" in out["stderr"]


def test_infinite_loop_killed_at_the_timeout(sandbox):
    out = sandbox.exec("py", "while True:\n    pass\n", timeout=2000)
    assert out["run"]["timed_out"] is True
    assert "Time limit exceeded" in out["stderr"]
    assert out["run"]["wall_time"] < 8000


def test_background_process_does_not_outlive_the_execution(sandbox):
    marker = uuid.uuid4().hex
    lingerer = f"python3 -c 'import time; time.sleep(300)' {marker}"  # the marker stays in its argv
    code = f"nohup setsid {lingerer} >/dev/null 2>&1 &\n({lingerer} &)\nsleep 0.5\npgrep -fc {marker}\necho started\n"
    out = sandbox.exec("bash", code)
    assert out["stdout"].split() == ["2", "started"], out  # both were running inside
    host = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert host.stdout.strip() == "", "a process of the execution is still running on the host"
    # The stopped container itself is removed just after the response, off the request path.
    label = f"label=org.librechat.codeinterp.execution={out['session_id']}"
    for _ in range(100):
        leftovers = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True)
        if not leftovers.stdout.strip():
            break
        time.sleep(0.1)
    assert leftovers.stdout.strip() == ""


def test_symlinks_never_bring_back_host_content(sandbox):
    code = (
        "ln -s /etc/passwd passwd.txt\nln -s /etc linked_etc\nln -s /proc/self/environ env.txt\n"
        "mkdir -p sub && ln -s ../passwd.txt sub/again.txt\necho ok > real.txt\n"
    )
    out = sandbox.exec("bash", code)
    names = sorted(f["name"] for f in out["files"])
    assert names == ["real.txt"], names


SYSCALL_PROBE = r"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(number, *args):
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_ulong(a) for a in args])
    return "ok" if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
SOCKET, SOCKETPAIR, IOCTL, MODIFY_LDT, PERSONALITY = 41, 53, 16, 154, 135
res = {}
for name, family in [("AF_VSOCK", 40), ("AF_NETLINK", 16), ("AF_PACKET", 17), ("AF_KEY", 15), ("AF_ALG", 38),
                     ("AF_BLUETOOTH", 31), ("AF_XDP", 44), ("AF_VSOCK_high_bits", (1 << 32) | 40),
                     ("AF_INET_high_bits", (1 << 32) | 2), ("AF_UNIX", 1), ("AF_INET", 2), ("AF_INET6", 10)]:
    res["socket " + name] = call(SOCKET, family, socket.SOCK_STREAM if family != 16 else socket.SOCK_RAW, 0)
fds = (ctypes.c_int * 2)()
res["socketpair AF_INET"] = "ok" if libc.socketpair(2, 1, 0, fds) == 0 else errno.errorcode[ctypes.get_errno()]
res["socketpair AF_UNIX"] = "ok" if libc.socketpair(1, 1, 0, fds) == 0 else errno.errorcode[ctypes.get_errno()]
fd = os.open("/dev/null", os.O_RDWR)
res["TIOCSTI"] = call(IOCTL, fd, 0x5412, 0)
res["TIOCSTI_high_bits"] = call(IOCTL, fd, (1 << 32) | 0x5412, 0)
res["TCGETS"] = call(IOCTL, fd, 0x5401, 0)
res["modify_ldt"] = call(MODIFY_LDT, 0, 0, 0)
res["personality READ_IMPLIES_EXEC"] = call(PERSONALITY, 0x0400000)
res["personality query"] = call(PERSONALITY, 0xFFFFFFFF)
res["unknown syscall 600"] = call(600)
print(json.dumps(res))
"""


def test_socket_families_ioctls_and_odd_calls_are_filtered(sandbox):
    out = py(sandbox, SYSCALL_PROBE)
    assert out["stderr"] == "", out["stderr"]
    res = json.loads(out["stdout"])
    for name in ("AF_VSOCK", "AF_NETLINK", "AF_PACKET", "AF_KEY", "AF_ALG", "AF_BLUETOOTH", "AF_XDP",
                 "AF_VSOCK_high_bits", "AF_INET_high_bits"):
        assert res[f"socket {name}"] in ("EAFNOSUPPORT", "EPERM"), (name, res)  # under gVisor every refusal is EPERM
    for name in ("AF_UNIX", "AF_INET", "AF_INET6"):
        assert res[f"socket {name}"] == "ok", (name, res)
    assert res["socketpair AF_UNIX"] == "ok" and res["socketpair AF_INET"] in ("EAFNOSUPPORT", "EPERM"), res
    # /dev/null is no terminal: an ioctl that reaches the kernel answers ENOTTY.
    assert res["TIOCSTI"] == "EPERM" and res["TIOCSTI_high_bits"] == "EPERM", res
    assert res["TCGETS"] == "ENOTTY", res
    assert res["modify_ldt"] in ("EPERM", "ENOSYS"), res
    assert res["personality READ_IMPLIES_EXEC"] != "ok", res
    assert res["unknown syscall 600"] in ("ENOSYS", "EPERM"), res


def test_shared_memory_is_size_capped(sandbox):
    # /dev/shm is a tmpfs too (bwrap's /dev, Docker's shm): without a cap it fills to the memory limit.
    code = (
        "written = 0\ntry:\n    while written < 200 * 1024**2:\n        with open(f'/dev/shm/fill{written}', 'wb') as f:\n"
        "            for _ in range(8):\n                f.write(b'x' * 1024**2); f.flush(); written += 1024**2\n"
        "except OSError as e:\n    print('stopped', e.errno)\n"
        "print('written_mb', written // 1024**2)\n"
    )
    out = py(sandbox, code)
    assert "stopped 28" in out["stdout"], out  # ENOSPC
    assert int(out["stdout"].split("written_mb")[1]) <= 64, out
