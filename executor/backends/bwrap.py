"""The bubblewrap backend: the executor image's files, run without a container engine.

The root is the executor image unpacked into a directory (docker/export-rootfs.sh), bound
read-only. Per execution (research/isolation.md §4, §6):

- a host uid of its own, owner_uid(slot) = SANDBOX_UID_BASE + slot. bwrap is never
  started as host root: with a user namespace its sandbox uid would map to host uid 0;
- cgroups under the server's own cgroup (memory = memory+swap, pids, CPU quota), entered by
  the launcher shell before anything else runs, so every process of the execution is in them;
- rlimits (nofile, fsize = the disk quota, no core files), a clean environment (bwrap's pid 1
  keeps it, and the sandbox can read it), stdin /dev/null, a session of its own;
- bwrap: every namespace (network = loopback only), no capabilities, no further user
  namespaces, a seccomp BPF built from the same rules as the Docker profile (seccomp.py), a
  size-capped /tmp, /proc, a minimal /dev, /mnt/data and /mnt/code, read-only everything else.

The work dirs live below root-only directories the sandbox uid cannot traverse, so each
execution sees them through an opaque per-execution alias (/run/codeinterp/bwrap/<id>, 0700,
owned by its uid) holding bind mounts of data/ and code/; the alias is also the only host path
that bwrap's argv (readable in /proc/1/cmdline inside) contains.

Output is read from pipes with a per-stream cap and the wall-clock deadline; on a breach the
whole cgroup is killed. run() returns only once the cgroup is empty and removed: nothing of an
execution runs on after it.

Warm sandboxes (executor/pool.py, the pool_* methods) are launched the same way by the pool
keeper, as a uid of their own (SANDBOX_UID_BASE + 10000 + n); a worker runs a program in
one through FIFOs and ends it through its cgroup (see pool_finish). With SANDBOX_FORKSERVER a
warm sandbox is instead a fork of a fork-server template that confines itself the same way
(executor/forkserver: Python runs in the fork, js, ts and bash are exec'd by it); everything
after its start is the same.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import secrets
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

from django.conf import settings

from sandbox_project.timing import phase, phase_mark

from .base import POOL_UID_OFFSET, SANDBOX_UID, Backend, CappedOutput, Limits, RunResult, RunSpec, SandboxGone, kernel_release, passwd_lines, read_available, runner_status, slot_uid, version_of
from .. import forkserver
from ..workspace import Workspace
from .cgroups import CgroupError, CgroupTree, ExecutionCgroup
from .seccomp import SeccompUnavailable, build_bpf, build_template_bpf

log = logging.getLogger("sandbox.bwrap")

PREFIX = "bw-"  # names of our cgroups and aliases: bw-<reap-after epoch>-<execution>
ALIAS_ROOT = Path("/run/codeinterp/bwrap")
REAP_GRACE_S = 10
HOST_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
# Top-level entries of the rootfs the sandbox sees (symlinks such as bin -> usr/bin are recreated).
ROOTFS_DIRS = ("usr", "etc", "opt", "var", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
READ_CHUNK = 1 << 16
PR_SET_CHILD_SUBREAPER = 36
MS_BIND = 0x1000
MNT_DETACH = 0x2

PASSWD, GROUP = passwd_lines(SANDBOX_UID)  # inside the user namespace, the program is SANDBOX_UID
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tsandbox\n"

# Runs as root for a moment: joins the execution's cgroups, then becomes the rest of argv.
# Arguments: the number of cgroup.procs files, the files, the command.
JOIN_CGROUPS = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"'
LAUNCH_FAILED = 125
# A warm sandbox's exit status as bwrap reports it (--json-status-fd, JSON lines): a FIFO in the
# work area's root, which is not bound into the sandbox. It covers a program that ends without
# the runner's own report (os._exit, a crash, an OOM kill).
EXIT_FIFO = ".exit"
POLL_EMPTY_S = 0.02  # how often a warm run checks whether its sandbox has ended abnormally
FORKED = "forked"  # in _warm, for a warm sandbox the fork-server made (no bwrap process of ours)
TEMPLATE_FILE = ".template"  # in a forked sandbox's work area root (not in its view): which template made it

_libc = ctypes.CDLL(None, use_errno=True)


def _bwrap_exit(lines: bytes) -> int | None:
    """The exit code in bwrap's --json-status-fd output, once it has written it."""
    for line in lines.split(b"\n"):
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict) and isinstance(document.get("exit-code"), int):
            return document["exit-code"]
    return None


class BwrapUnavailable(RuntimeError):
    pass


def _bind(source: Path, target: Path) -> None:
    if _libc.mount(str(source).encode(), str(target).encode(), None, MS_BIND, None) != 0:
        raise BwrapUnavailable(f"cannot bind {source}: {os.strerror(ctypes.get_errno())} (the server must run as root)")


def _unmount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        log.warning("cannot unmount", extra={"path": str(target), "error": os.strerror(ctypes.get_errno())})


def _data_pipe(content: bytes) -> int:
    """The read end of a pipe already holding `content` (bwrap reads it to EOF)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, content)  # a few KiB at most: fits the pipe buffer
    finally:
        os.close(write_end)
    return read_end


class BwrapBackend(Backend):
    name = "bwrap"

    def __init__(self):
        self.rootfs = Path(settings.SANDBOX_BWRAP_ROOTFS)
        self.uid_base = settings.SANDBOX_UID_BASE
        self.tools = {tool: shutil.which(tool, path=HOST_PATH) for tool in ("bwrap", "setpriv", "prlimit")}
        self._tree: CgroupTree | None = None
        self._bpf: bytes | None = None
        self._init_lock = threading.Lock()
        self._active: set[int] = set()  # pids our Popen objects will reap themselves
        self._active_lock = threading.Lock()
        self._warm: dict[str, subprocess.Popen] = {}  # warm sandboxes this process launched
        # The fork-server's templates (the keeper's), per runner mode: the Python one and the lean one.
        self._forkservers: dict[str, forkserver.ForkServer] = {}
        # The intermediate process bwrap forks for its nested user namespace outlives its
        # parent; as a subreaper this process collects it (see _reap_zombies) instead of an
        # init that may never reap.
        _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    # -- the parts that may be missing on a host -------------------------------------------
    def tree(self) -> CgroupTree:
        with self._init_lock:
            if self._tree is None:
                self._tree = CgroupTree.detect()
            return self._tree

    def bpf(self) -> bytes:
        with self._init_lock:
            if self._bpf is None:
                self._bpf = build_bpf()
            return self._bpf

    def image_env(self) -> list[tuple[str, str]]:
        """The image's ENV (PATH, HOME, MPLCONFIGDIR, GOCACHE...), saved by export-rootfs.sh."""
        try:
            lines = (self.rootfs / ".codeinterp" / "env").read_text().splitlines()
        except OSError:
            raise BwrapUnavailable(
                f"no rootfs at {self.rootfs} (run docker/export-rootfs.sh, or set SANDBOX_BWRAP_ROOTFS)"
            ) from None
        return [tuple(line.split("=", 1)) for line in lines if "=" in line]

    def owner_uid(self, slot: int) -> int:
        return slot_uid(slot)

    # -- one execution ---------------------------------------------------------------------
    def _check_tools(self) -> None:
        missing = [tool for tool, path in self.tools.items() if not path]
        if missing:
            raise BwrapUnavailable(f"missing on the host: {', '.join(missing)} (apt-get install bubblewrap util-linux)")

    def run(self, spec: RunSpec) -> RunResult:
        self._check_tools()
        env = self.image_env()
        bpf = self.bpf()
        uid = self.owner_uid(spec.slot)
        limits = spec.limits
        reap_after = int(time.time() + spec.deadline_ms / 1000 + REAP_GRACE_S)
        cgroup = self.tree().create(f"{PREFIX}{reap_after}-{spec.name}", limits.memory_mb << 20, limits.pids, limits.cpus)
        result = RunResult()
        alias = None
        try:
            alias = self._expose(spec, uid, reap_after)
            self._run_in(spec, uid, alias, env, bpf, cgroup, result)
        finally:
            if not cgroup.stop_all():
                log.error("processes of an execution survived SIGKILL", extra={"execution": spec.name})
            result.peak_memory_bytes, result.cpu_ms, oom_kills = cgroup.stats()
            result.oom_killed = oom_kills > 0
            cgroup.remove()
            if alias is not None:
                self._unexpose(alias)
            self._reap_zombies()
        return result

    def _expose(self, spec: RunSpec, uid: int, reap_after: int) -> Path:
        return self._expose_dirs(spec.data_dir, spec.code_dir, uid, f"{PREFIX}{reap_after}-{secrets.token_hex(8)}")

    def _expose_dirs(self, data_dir: Path, code_dir: Path, uid: int, alias_name: str) -> Path:
        ALIAS_ROOT.mkdir(parents=True, exist_ok=True)
        for level in (ALIAS_ROOT.parent, ALIAS_ROOT):
            level.chmod(0o711)  # traversable, not listable
        alias = ALIAS_ROOT / alias_name
        alias.mkdir(mode=0o700)
        os.chown(alias, uid, uid)
        for name, source in (("data", data_dir), ("code", code_dir)):
            (alias / name).mkdir()
            _bind(source, alias / name)
        return alias

    def _unexpose(self, alias: Path) -> None:
        for name in ("data", "code"):
            _unmount(alias / name)
            try:
                (alias / name).rmdir()
            except OSError:
                pass
        try:
            alias.rmdir()
        except OSError as error:
            log.warning("cannot remove alias", extra={"path": str(alias), "error": str(error)})

    def _bwrap_argv(self, alias: Path, limits: Limits, env, fds: dict[str, int]) -> list[str]:
        argv = [
            self.tools["bwrap"],
            "--unshare-all", "--unshare-user", "--disable-userns",  # --disable-userns needs the explicit --unshare-user
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
        ]
        for entry in sorted(self.rootfs.iterdir()):
            if entry.name not in ROOTFS_DIRS:
                continue
            if entry.is_symlink():
                argv += ["--symlink", os.readlink(entry), f"/{entry.name}"]
            elif entry.is_dir():
                argv += ["--ro-bind", str(entry), f"/{entry.name}"]
        for target in ("/etc/passwd", "/etc/group", "/etc/hosts", "/etc/hostname"):
            argv += ["--ro-bind-data", str(fds[target]), target]
        argv += [
            "--proc", "/proc", "--dev", "/dev",
            # /dev/shm would otherwise be a folder of bwrap's /dev tmpfs, which has no size cap.
            "--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/dev/shm",
            "--perms", "1777", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp",
            # No sysfs (host hardware); tools that list network interfaces find none.
            "--dir", "/sys/class/net",
            "--bind", str(alias / "data"), "/mnt/data",
            "--ro-bind", str(alias / "code"), "/mnt/code",
            "--remount-ro", "/",  # after every mount, or bwrap cannot create the mount points
            "--chdir", "/mnt/data",
            "--clearenv",
        ]
        for key, value in env:
            argv += ["--setenv", key, value]
        if "status" in fds:
            argv += ["--json-status-fd", str(fds["status"])]
        argv += ["--seccomp", str(fds["seccomp"]), "--"]
        return argv

    def _launch(self, argv, uid, alias, env, bpf, cgroup: ExecutionCgroup, limits: Limits, stdout, stderr,
                status_fd: int | None = None) -> subprocess.Popen:
        """Starts `argv` in the sandbox: enters the cgroups, sets the rlimits, becomes `uid`, bwrap.
        `status_fd` (closed here) gets bwrap's JSON status lines."""
        fds: dict[str, int] = {} if status_fd is None else {"status": status_fd}
        try:
            for target, content in (("/etc/passwd", PASSWD), ("/etc/group", GROUP), ("/etc/hosts", HOSTS), ("/etc/hostname", "sandbox\n")):
                fds[target] = _data_pipe(content.encode())
            fds["seccomp"] = _data_pipe(bpf)
            procs = cgroup.procs_files
            fsize = limits.disk_mb << 20
            command = [
                "/bin/sh", "-c", JOIN_CGROUPS, "codeinterp-launch", str(len(procs)), *procs,
                self.tools["prlimit"], f"--nofile={limits.nofile}:{limits.nofile}", f"--fsize={fsize}:{fsize}", "--core=0:0", "--",
                self.tools["setpriv"], f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--",
                *self._bwrap_argv(alias, limits, env, fds), *argv,
            ]
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                env={"PATH": HOST_PATH}, cwd="/", pass_fds=tuple(fds.values()), start_new_session=True,
            )
        finally:
            for fd in fds.values():
                os.close(fd)
        with self._active_lock:
            self._active.add(proc.pid)
        return proc

    def _run_in(self, spec, uid, alias, env, bpf, cgroup: ExecutionCgroup, result: RunResult) -> None:
        started = time.monotonic()
        proc = self._launch(spec.argv, uid, alias, env, bpf, cgroup, spec.limits, subprocess.PIPE, subprocess.PIPE)
        try:
            self._collect(proc, spec, cgroup, result, started)
        finally:
            if proc.returncode is None:
                cgroup.kill()
                proc.kill()
                proc.wait()
            with self._active_lock:
                self._active.discard(proc.pid)

    def _collect(self, proc: subprocess.Popen, spec: RunSpec, cgroup: ExecutionCgroup, result: RunResult, started: float) -> None:
        clock = spec.clock(started)
        output = CappedOutput(spec.limits.output_max_bytes, clock)
        kinds = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        poller = select.poll()
        for fd in kinds:
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        open_fds = set(kinds)
        while open_fds and not output.truncated:
            remaining = clock.remaining(time.monotonic())
            if remaining <= 0:
                result.timed_out, result.timed_out_phase = True, clock.phase
                break
            for fd, _ in poller.poll(max(1, int(remaining * 1000))):
                chunk = os.read(fd, READ_CHUNK)
                if not chunk:
                    poller.unregister(fd)
                    open_fds.discard(fd)
                    continue
                output.add(kinds[fd], chunk)
        output.finish()  # what the clock held back at the end
        result.output_truncated = output.truncated
        if result.timed_out or result.output_truncated:
            cgroup.kill()
        try:
            # The streams closed (or we stopped reading); the program may still run without them.
            proc.wait(timeout=max(0.0, clock.remaining(time.monotonic())))
        except subprocess.TimeoutExpired:
            result.timed_out, result.timed_out_phase = True, clock.phase
            cgroup.kill()
            proc.wait()
        result.wall_ms = int((time.monotonic() - started) * 1000)
        code = proc.returncode
        if code < 0:  # bwrap itself was killed (the cgroup kill reaches it too)
            result.signal, result.exit_code = -code, 128 - code
        else:
            result.exit_code = code  # bwrap passes on the program's status, 128+n for signal n
            if 128 < code <= 128 + 64:
                result.signal = code - 128
        proc.stdout.close()
        proc.stderr.close()
        result.stdout = output.text("stdout")
        result.stderr = output.text("stderr")
        if code == LAUNCH_FAILED and "codeinterp-launch" in result.stderr:
            log.error("could not enter the execution cgroups", extra={"stderr": result.stderr[-500:]})

    # -- warm sandboxes (executor/pool.py) ---------------------------------------------------
    # A handle is "<uid>:<unit>": the sandbox's host uid, and the name of both its cgroup and
    # its alias, bw-<reap-after>-<random> (so reap() removes what a crashed keeper left).
    pool_pipes_always = True  # no attach stream: output and exit status always come on FIFOs

    @staticmethod
    def _parse(handle: str) -> tuple[int, str]:
        uid, unit = handle.split(":", 1)
        return int(uid), unit

    def pool_start(self, name: str, argv: list[str], ws, limits: Limits, deadline_s: float, instance: str,
                   self_redirecting: bool = False, runner_mode: str | None = None) -> str:
        """Launches `argv` (the warm runner) with every confinement of a cold run, as ws.owner,
        in a cgroup of its own. This process is bwrap's parent (--die-with-parent: a keeper
        that dies takes its sandboxes along) and reaps it in pool_alive/pool_destroy; any
        other process ends it through its cgroup. self_redirecting: the command sends its
        output to the FIFOs itself (else it inherits them). With the fork-server on, a warm
        runner (runner_mode set) is a fork of its template instead, when there is one."""
        self._check_tools()
        env = self.image_env()
        bpf = self.bpf()
        uid = ws.owner
        unit = f"{PREFIX}{int(time.time() + deadline_s + REAP_GRACE_S)}-{secrets.token_hex(8)}"
        cgroup = self.tree().create(unit, limits.memory_mb << 20, limits.pids, limits.cpus)
        alias = None
        outputs: list[int] = []
        try:
            os.mkfifo(ws.path / EXIT_FIFO, 0o600)
            status_fd = os.open(ws.path / EXIT_FIFO, os.O_RDWR)
            if self_redirecting:
                stdout = stderr = subprocess.DEVNULL
            else:  # the exec'd program inherits them
                outputs = [os.open(ws.code / name, os.O_RDWR) for name in (".stdout", ".stderr")]
                stdout, stderr = outputs
            # A fork of the template needs no alias: it attaches the work area itself.
            proc = None
            if runner_mode is not None and self.pool_forks(runner_mode):
                proc = self._fork(runner_mode, ws, uid, env, cgroup, limits, status_fd, outputs)
            if proc is None:
                alias = self._expose_dirs(ws.data, ws.code, uid, unit)
                proc = self._launch(argv, uid, alias, env, bpf, cgroup, limits, stdout, stderr, status_fd)
        except BaseException:
            cgroup.stop_all()
            cgroup.remove()
            if alias is not None:
                self._unexpose(alias)
            raise
        finally:
            for fd in outputs:
                os.close(fd)
        self._warm[unit] = proc
        return f"{uid}:{unit}"

    # -- the fork-server (executor/forkserver) ------------------------------------------------
    def pool_forks(self, runner_mode: str) -> bool:
        # Both modes: a Python runner is the template's interpreter, preloaded; any other
        # language is exec'd by the fork once confined (no bwrap, no second interpreter).
        return settings.SANDBOX_FORKSERVER and runner_mode in ("python", "exec")

    def _fork(self, runner_mode: str, ws, uid: int, env, cgroup: ExecutionCgroup, limits: Limits, status_fd: int,
              outputs: list[int]):
        """A warm sandbox as a fork of the template, or None when there is none to fork from
        (the caller then launches it the ordinary way). `outputs`: the stdout and stderr FIFOs
        an exec'd program inherits (empty: the Python runner opens them itself). Closes
        status_fd when it succeeds."""
        server = self._forkservers.get(runner_mode)
        if server is None:
            low = self.uid_base + POOL_UID_OFFSET
            # Python runs in the fork, so its template has the heavy modules loaded; the
            # exec'd languages get a lean one, as a fork of 150 MB costs more to make and end.
            server = self._forkservers[runner_mode] = forkserver.ForkServer({
                "preload": runner_mode == "python", "rootfs": str(self.rootfs), "rootfs_dirs": list(ROOTFS_DIRS),
                "template_uid": self.uid_base + forkserver.TEMPLATE_UID_OFFSET, "env": env,
                "template_bpf": build_template_bpf(low, low + forkserver.TEMPLATE_UID_OFFSET - POOL_UID_OFFSET - 1).hex(),
            }, self.bpf(), settings.SANDBOX_POOL_MAX_AGE_S)
        request = {
            "mode": runner_mode, "rootfs_dirs": list(ROOTFS_DIRS), "env": env,
            "tmp_bytes": limits.tmp_mb << 20, "nofile": limits.nofile, "fsize": limits.disk_mb << 20,
            "etc": {"passwd": PASSWD, "group": GROUP, "hosts": HOSTS, "hostname": "sandbox\n"},
        }
        null = os.open(os.devnull, os.O_WRONLY)
        out_fd, err_fd = outputs or (null, null)
        try:
            server.spawn(request=request, out_fd=out_fd, err_fd=err_fd, exit_fd=status_fd, data=ws.data, code=ws.code,
                                   uid=uid, sandbox_uid=SANDBOX_UID, procs_files=cgroup.procs_files,
                                   identity_file=ws.path / TEMPLATE_FILE)
        except forkserver.ForkServerError as error:
            log.warning("no sandbox from the fork-server; starting one the ordinary way", extra={"error": str(error)})
            cgroup.stop_all()
            return None
        finally:
            os.close(null)
        os.close(status_fd)
        return FORKED

    def pool_forked(self, handle: str) -> bool:
        return self._warm.get(self._parse(handle)[1]) is FORKED

    def _collect_warm_children(self) -> None:
        for unit, proc in list(self._warm.items()):
            if proc is FORKED:  # a fork-server child: the template's to reap, not ours
                continue
            if proc.poll() is not None:
                del self._warm[unit]
                with self._active_lock:
                    self._active.discard(proc.pid)
        self._reap_zombies()

    def pool_alive(self, handles, instance: str) -> set[str]:
        """The handles whose sandbox still runs."""
        self._collect_warm_children()
        alive = set()
        for handle in handles:
            cgroup = self.tree().find(self._parse(handle)[1])
            if cgroup is not None and cgroup.populated():
                alive.add(handle)
        return alive

    def pool_finish(self, handle: str, name: str, spec: RunSpec, begin, pipes: dict | None) -> RunResult:
        """Wakes the runner (begin) and reads the program's stdout, stderr and exit status from
        the FIFOs, under the per-stream cap and the deadline. A program that ends without the
        runner's report (os._exit, a crash, an OOM kill) is seen through bwrap's own exit status
        (EXIT_FIFO); as a last resort, holding the FIFOs read-write so that no end-of-file ever
        comes, through an empty cgroup, checked every POLL_EMPTY_S."""
        if not pipes:
            raise RuntimeError("a bwrap warm sandbox always has its FIFOs")
        cgroup = self.tree().find(self._parse(handle)[1])
        # (A sandbox killed from outside, e.g. with the fork-server's template that made it, may
        # still be populated for a moment: its tasks are dying, and a program given to it would
        # be lost with them.)
        if cgroup is None or not cgroup.populated() or cgroup.dying():
            raise SandboxGone("the warm sandbox has ended")
        result = RunResult()
        cpu_before = cgroup.stats()[1]
        cgroup.reset_peak()  # count the program, not the warm-up
        output = CappedOutput(spec.limits.output_max_bytes)  # its clock is set once the program starts
        # The runner's status line and bwrap's exit report: small, with their own caps.
        reports = {"status": bytearray(), "exit": bytearray()}
        exit_fd = os.open(spec.code_dir.parent / EXIT_FIFO, os.O_RDWR | os.O_NONBLOCK)
        sources = {fd: kind for kind, fd in pipes.items()} | {exit_fd: "exit"}

        def take(kind: str, chunk: bytes) -> None:
            if kind in output.streams:
                output.add(kind, chunk)
            else:
                reports[kind] += chunk[: max(4096 - len(reports[kind]), 0)]

        def over() -> bool:
            return reports["status"].endswith(b"\n") or _bwrap_exit(reports["exit"]) is not None

        try:
            with phase("wake"):
                begin()
            started = time.monotonic()
            clock = output.clock = spec.clock(started)
            next_check = started + POLL_EMPTY_S
            ended = False
            while not (ended or output.truncated or over()):
                now = time.monotonic()
                if clock.remaining(now) <= 0:
                    result.timed_out, result.timed_out_phase = True, clock.phase
                    break
                # (never negative: a wake-up later than next_check asks at once)
                ready, _, _ = select.select(list(sources), [], [], max(0.0, min(clock.deadline, next_check) - now))
                for fd in ready:
                    take(sources[fd], read_available(fd))
                if time.monotonic() >= next_check:
                    ended = not cgroup.populated()
                    next_check = time.monotonic() + POLL_EMPTY_S
            for kind in ("stdout", "stderr", "status"):  # what was written just before the end
                if not output.truncated or kind == "status":
                    take(kind, read_available(pipes[kind], limit=spec.limits.output_max_bytes + 1))
            output.finish()  # stderr the clock held back (a marker's possible start)
            take("exit", read_available(exit_fd, limit=64))
            result.wall_ms = int((time.monotonic() - started) * 1000)
            phase_mark("program", result.wall_ms)
        finally:
            cgroup.kill()  # the runner has killed the rest; this ends the runner, and any breach
            os.close(exit_fd)
        result.output_truncated = output.truncated
        status = bytes(reports["status"])
        code = None
        if not (result.timed_out or result.output_truncated):
            code = runner_status(status)
            if code is None:
                code = _bwrap_exit(reports["exit"])
        result.exit_code = 128 + 9 if code is None else code  # otherwise: killed, as a cold run would be
        if 128 < result.exit_code <= 128 + 64:  # as bwrap reports a death by signal n
            result.signal = result.exit_code - 128
        # Nothing of the program may run on while the server looks at /mnt/data (a forged
        # status must not buy it time).
        with phase("stop"):
            stopped = cgroup.stop_all()
        if not stopped:
            log.error("processes of a warm sandbox survived SIGKILL", extra={"execution": name})
            raise RuntimeError("the warm sandbox could not be stopped")
        peak, cpu_ms, oom_kills = cgroup.stats()
        result.peak_memory_bytes = peak
        result.cpu_ms = cpu_ms - cpu_before if cpu_ms is not None and cpu_before is not None else cpu_ms
        result.oom_killed = oom_kills > 0
        if code is None and not (result.timed_out or result.output_truncated or result.oom_killed) \
                and forkserver.template_died(spec.code_dir.parent / TEMPLATE_FILE):
            # No report because the fork-server's template died and took the sandbox along
            # (which a program cannot cause: it cannot reach the template): not the program's
            # end, so the request runs cold. Nothing a program writes can make this true.
            raise SandboxGone("the warm sandbox died with its fork-server template")
        result.stdout = output.text("stdout")
        result.stderr = output.text("stderr")
        return result

    # -- standing sandboxes (programmatic runs, executor/backends/base.py: StandingSandboxes) --
    def standing_start(self, name: str, argv: list[str], ws, limits: Limits, lifetime_s: float, labels=None) -> str:
        return self.pool_start(name, argv, ws, limits, lifetime_s, "", self_redirecting=True)

    def standing_running(self, handle: str, name: str) -> bool:
        self._collect_warm_children()
        cgroup = self.tree().find(self._parse(handle)[1])
        return cgroup is not None and cgroup.populated() and not cgroup.wait_stopped(0)

    def standing_stop(self, handle: str, name: str) -> bool:
        cgroup = self.tree().find(self._parse(handle)[1])
        return cgroup is None or cgroup.stop_all()

    def standing_stats(self, handle: str, name: str) -> tuple[int | None, int | None, int]:
        cgroup = self.tree().find(self._parse(handle)[1])
        return cgroup.stats() if cgroup is not None else (None, None, 0)

    def standing_destroy(self, handle: str, name: str) -> None:
        self.pool_destroy(handle, name)

    def pool_kill(self, handle: str, name: str) -> None:
        """Ends every process of a warm sandbox now (the keeper, at a run's deadline)."""
        cgroup = self.tree().find(self._parse(handle)[1])
        if cgroup is not None:
            cgroup.stop_all()

    def pool_release(self, handle: str, name: str) -> None:
        """After pool_finish (in the teardown): removes what is left of the sandbox."""
        self.pool_destroy(handle, name)

    def pool_destroy(self, handle: str, name: str) -> None:
        """Kills the sandbox through its cgroup, removes the cgroup and the alias; reaps bwrap
        when this process launched it."""
        unit = self._parse(handle)[1]
        cgroup = self.tree().find(unit)
        if cgroup is not None:
            if not cgroup.stop_all():
                log.error("processes of a warm sandbox survived SIGKILL", extra={"unit": unit})
            cgroup.remove()
        if (ALIAS_ROOT / unit).exists():
            self._unexpose(ALIAS_ROOT / unit)
        proc = self._warm.pop(unit, None)
        if proc is not None and proc is not FORKED:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with self._active_lock:
                self._active.discard(proc.pid)
        self._reap_zombies()

    def pool_clear(self, instance: str, keep=frozenset()) -> int:
        """The sandboxes this process launched (those of the rows are destroyed by the caller)."""
        removed = 0
        kept = {self._parse(handle)[1] for handle in keep}
        for unit in list(self._warm):
            if unit in kept:
                continue
            self.pool_destroy(f"0:{unit}", "")  # the uid part is not needed to destroy
            removed += 1
        return removed

    # -- zombies of bwrap's intermediate processes ------------------------------------------
    def _reap_zombies(self) -> int:
        reaped = 0
        for pid in self._children():
            with self._active_lock:
                if pid in self._active:
                    continue
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    state = stat.read().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    continue
                with open(f"/proc/{pid}/status") as status:
                    uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
            except (OSError, StopIteration, IndexError, ValueError):
                continue
            if uid < self.uid_base:  # not a sandbox process: some other child of this server
                continue
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
            except ChildProcessError:
                pass
        return reaped

    @staticmethod
    def _children() -> list[int]:
        pids: list[int] = []
        try:
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children") as children:
                    pids += [int(p) for p in children.read().split()]
        except OSError:
            pass
        return pids

    # -- probes, health, housekeeping ----------------------------------------------------
    def probe(self, argv: list[str]) -> str:
        """stdout of a short trusted command, same confinement, in a throw-away work area."""
        import tempfile


        limits = Limits(
            timeout_ms=120_000, compile_timeout_ms=0, memory_mb=1024, pids=256, cpus=1.0,
            output_max_bytes=1 << 20, tmp_mb=64, disk_mb=16, nofile=1024,
        )
        area = Path(tempfile.mkdtemp(prefix="codeinterp-probe-", dir="/var/tmp")) / "area"
        try:
            with Workspace(area, limits.disk_mb, 0, self.owner_uid(0)) as ws:
                spec = RunSpec(f"probe-{secrets.token_hex(6)}", ws.data, ws.code, list(argv), limits, limits.timeout_ms, 0)
                return self.run(spec).stdout
        finally:
            shutil.rmtree(area.parent, ignore_errors=True)

    def health(self) -> dict:
        report = {"ok": False, "engine": "bwrap", "rootfs": str(self.rootfs)}
        missing = [tool for tool, path in self.tools.items() if not path]
        if missing:
            return {**report, "error": f"missing on the host: {', '.join(missing)}"}
        try:
            self.image_env()
            report["image"] = (self.rootfs / ".codeinterp" / "image-id").read_text().strip()[:19]
            tree = self.tree()
            if not tree.writable():
                return {**report, "error": "the execution cgroups are not writable"}
            report["cgroup"] = f"v{tree.version}"
            self.bpf()
        except (BwrapUnavailable, CgroupError, SeccompUnavailable, OSError) as error:
            return {**report, "error": str(error)[:200]}
        return {**report, "ok": True, "components": self.components()}

    _components: dict | None = None

    def components(self) -> dict:
        """Versions of the sandboxes' walls (see the Docker backend's); asked once."""
        if self._components is None:
            self._components = {"kernel": kernel_release(), "bubblewrap": version_of([self.tools["bwrap"], "--version"])}
        return self._components

    def reap(self) -> int:
        """Kills and removes what crashed workers left behind: cgroups and aliases whose
        reap-after time passed. Returns the number of executions cleaned up."""
        now = time.time()
        removed = 0

        def expired(name: str) -> bool:
            if not name.startswith(PREFIX):
                return False
            try:
                return int(name[len(PREFIX):].split("-", 1)[0]) < now
            except ValueError:
                return False

        try:
            tree = self.tree()
        except CgroupError:
            tree = None
        for cgroup in tree.existing() if tree else []:
            if expired(cgroup.unique[0].name):
                cgroup.stop_all()
                cgroup.remove()
                removed += 1
        try:
            aliases = [p for p in ALIAS_ROOT.iterdir() if expired(p.name)]
        except OSError:
            aliases = []
        for alias in aliases:
            self._unexpose(alias)
        self._collect_warm_children()  # standing sandboxes this process launched that ended
        return removed
