"""The fork-server, keeper side: the templates of the server process that asks for warm
sandboxes, and the handshake that gives each child its uid and cgroups.

The Python template (template.py) has numpy, pandas and matplotlib imported and never runs a
program. A warm Python sandbox is then a fork of it that confines itself, instead of a new
bwrap and a new interpreter importing everything again: tens of milliseconds of CPU
(README) instead of about a second, so the pool can refill while calls keep coming. The
exec'd languages (js, ts, bash) fork from a second, lean template with nothing imported: its
children are a few MB to copy and to end instead of the Python template's ~150.

The privileged half of making a child's sandbox is done here, by the keeper (root): the
child's user namespace is mapped to the sandbox's own host uid only, and it is moved into the
execution's cgroups before it forks anything. (The child becomes that uid
itself first, with the template's CAP_SETUID: docs/SECURITY.md.)

Used by the bwrap backend's pool_start (executor/backends/bwrap.py) when
SANDBOX_FORKSERVER is on; the rest of the warm path (claim, FIFOs, pool_finish, the stop
rule) is the pool's, unchanged.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..backends.cgroups import process_dying, start_time

log = logging.getLogger("sandbox.forkserver")

TEMPLATE = Path(__file__).with_name("template.py")
MOUNT_POINT = Path("/run/codeinterp/forkserver")  # the template's root is a tmpfs mounted here, in its namespace only
READY_TIMEOUT_S = 120  # the imports take ~2 s; a loaded machine, much longer
HANDSHAKE_TIMEOUT_S = 10
TEMPLATE_UID_OFFSET = 30000  # the template runs as SANDBOX_UID_BASE + this: apart from slot (base + n) and pool (base + 10000 + n) uids
SYS_OPEN_TREE, OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 428, 1, 0o2000000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class ForkServerError(RuntimeError):
    """No sandbox from the template (it is gone, hung or refused): the pool starts the
    sandbox the ordinary way instead."""


def open_tree(path: Path) -> int:
    """A detached clone of the mount at `path` (a bind, not yet attached anywhere), as an fd a
    child can mount in its own namespace (move_mount): so the template never sees a work area."""
    fd = _libc.syscall(SYS_OPEN_TREE, -100, str(path).encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    if fd < 0:
        raise ForkServerError(f"open_tree {path}: {os.strerror(ctypes.get_errno())}")
    return fd


class Template:
    """One template process (and the root-owned parent that waits for it)."""

    def __init__(self, config: dict, bpf: bytes):
        self.started_at = time.monotonic()
        keeper_end, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config_read, config_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, str(TEMPLATE), "enter", json.dumps({**config, "fds": [template_end.fileno(), config_read]})],
                # Its stderr is a pipe into the keeper's log, not the log file itself.
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"},
                cwd="/", pass_fds=(template_end.fileno(), config_read), start_new_session=True,
            )
        except BaseException:
            keeper_end.close()
            raise
        finally:
            template_end.close()
            os.close(config_read)
        self.sock = keeper_end
        threading.Thread(target=self._relay_stderr, name="template-stderr", daemon=True).start()
        with os.fdopen(config_write, "wb") as pipe:
            pipe.write(json.dumps({"bpf": bpf.hex(), "preload": config["preload"]}).encode())
        self.sock.settimeout(READY_TIMEOUT_S)
        try:
            said = self.sock.recv(16)
        except OSError as error:
            said = repr(error).encode()
        if said != b"ready":
            self.stop()
            raise ForkServerError(f"the template did not start ({said[:80]!r}; its errors are in the keeper's log)")
        # The template itself (the enter stage's one child), as "<pid> <start time>": a sandbox it
        # made records it, so that a worker can tell a sandbox killed by its template's death.
        try:
            pid = int(Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()[0])
            self.identity = f"{pid} {start_time(pid)}"
        except (OSError, IndexError, ValueError):
            self.stop()
            raise ForkServerError("the template is not there") from None
        self.lock = threading.Lock()

    def _relay_stderr(self) -> None:
        for line in self.proc.stderr:
            log.warning("fork-server template", extra={"line": line[:2000].decode(errors="replace").rstrip()})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        try:
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # the parent kills the template: its whole pid namespace ends
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()

    @staticmethod
    def _expect(sock: socket.socket, word: bytes) -> int:
        """The sender's host pid, from the credentials the kernel checked, of message `word`."""
        message, ancillary, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(12))
        pid = next((struct.unpack("iII", data[:12])[0] for level, kind, data in ancillary
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
        if message != word or not pid:
            raise ForkServerError(f"the child did not say {word.decode()!r} with its credentials")
        return pid

    def spawn(self, request: dict, out_fd: int, err_fd: int, exit_fd: int, data: Path, code: Path, uid: int,
              sandbox_uid: int, procs_files: list[str], identity_file: Path) -> int:
        """A child confined per `request`, as host `uid` (sandbox_uid inside), with `data` and
        `code` at /mnt/data and /mnt/code, in the cgroups of `procs_files`; returns the host
        pid of the child that made it (it lives as long as the sandbox). `identity_file`
        (outside the sandbox's view) gets the template's identity (see template_died)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        held: list[int] = []  # fds this call opened and closes
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            ours.settimeout(HANDSHAKE_TIMEOUT_S)
            held = [open_tree(data), open_tree(code)]
            fds = [theirs.fileno(), out_fd, err_fd, exit_fd, *held]
            with self.lock:
                self.sock.sendmsg([json.dumps({**request, "host_uid": uid}).encode()],
                                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])
            theirs.close()
            for fd in held:
                os.close(fd)
            held = []
            pid = self._expect(ours, b"hello")
            # Its /proc directory, opened before it says "unshared": the handle stays bound to
            # that process (ESRCH once it is gone), so the maps below cannot land on another
            # process that got its pid. (Had it died before this open, its end of the socket
            # would be closed and "unshared" never come.)
            proc_dir = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
            held.append(proc_dir)
            if ours.recv(16) != b"unshared":
                raise ForkServerError("the child did not make its namespaces")
            # The kernel checks these writes: a map to one host uid, by a process (this one)
            # with the privilege over the child's parent namespace.
            for name, line in (("setgroups", "deny"), ("uid_map", f"{sandbox_uid} {uid} 1\n"), ("gid_map", f"{sandbox_uid} {uid} 1\n")):
                fd = os.open(name, os.O_WRONLY, dir_fd=proc_dir)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            for procs in procs_files:  # before it makes the sandbox's processes
                Path(procs).write_text(str(pid))
            ours.send(b"go")
            if ours.recv(16) != b"made":
                raise ForkServerError("the child did not make the sandbox's processes")
            Path(identity_file).write_text(self.identity)
            return pid
        except (OSError, StopIteration) as error:
            raise ForkServerError(f"no sandbox from the template: {error}") from None
        finally:
            for fd in held:
                os.close(fd)
            theirs.close()
            ours.close()


class ForkServer:
    """The templates of one keeper: one in use, replaced when it dies or ages; a replaced one
    is stopped once the sandboxes it made are gone (its end takes them along)."""

    def __init__(self, config: dict, bpf: bytes, max_age_s: float):
        self.config, self.bpf, self.max_age_s = config, bpf, max_age_s
        self.current: Template | None = None
        self.retired: list[tuple[Template, set[int]]] = []
        self.children: set[int] = set()
        self.lock = threading.Lock()

    def spawn(self, **kwargs) -> int:
        with self.lock:
            self._tidy()
            if self.current is None:
                MOUNT_POINT.mkdir(parents=True, exist_ok=True)
                self.current = Template({**self.config, "mount_point": str(MOUNT_POINT)}, self.bpf)
                self.children = set()
            template = self.current
        try:
            pid = template.spawn(**kwargs)
        except ForkServerError:
            # Dead, hung or confused: the next request gets a new template (this one is
            # stopped once what it made is gone).
            with self.lock:
                if self.current is template:
                    self.retired.append((template, self.children))
                    self.current = None
            raise
        with self.lock:
            if self.current is template:
                self.children.add(pid)
        return pid

    def _tidy(self) -> None:
        template = self.current
        if template is not None and (not template.alive() or time.monotonic() - template.started_at > self.max_age_s):
            self.retired.append((template, self.children))
            self.current = None
        kept = []
        for old, children in self.retired:
            if old.alive() and any(Path(f"/proc/{pid}").exists() for pid in children):
                kept.append((old, children))
            else:
                old.stop()
        self.retired = kept

    def stop(self) -> None:
        with self.lock:
            for template in [self.current, *(old for old, _ in self.retired)]:
                if template is not None:
                    template.stop()
            self.current, self.retired = None, []


def template_died(identity_file: Path) -> bool:
    """Whether the template that made a sandbox (its identity in `identity_file`) has died: the
    sandbox was then killed with it, which its program cannot cause (it cannot reach the
    template). False when the file is missing (not a fork)."""
    try:
        pid, started = (int(part) for part in identity_file.read_text().split())
    except (OSError, ValueError):
        return False
    return process_dying(pid, started)
