"""Per-execution accounting cgroups: peak memory and CPU time that survive the container.

Docker removes a container's own cgroup with the container. Giving each container a fresh
parent cgroup (docker's `cgroup_parent`) keeps hierarchical counters that can be read after
the container is gone: cgroup v1 `memory.max_usage_in_bytes` and `cpuacct.usage`, or cgroup v2
`memory.peak` and `cpu.stat`. Where the hierarchy is not writable (a non-root server, a
systemd-driven engine), accounting is simply off and the numbers are reported as unknown.
"""

from __future__ import annotations

import errno as _errno
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("sandbox.cgroups")
ROOT = Path("/sys/fs/cgroup")
PARENT = "codeinterp"


def _write_ok(path: Path) -> bool:
    try:
        path.mkdir(exist_ok=True)
        return os.access(path, os.W_OK)
    except OSError:
        return False


# -- "stopped": no task of the execution can act again --------------------------------------
#
# After a SIGKILL the server only needs to know that the program can no longer act: write into
# /mnt/data (also through its own memory, if that maps a file there), fork, or signal. A task
# counts as stopped when it is gone, a zombie, or inside the kernel's exit path (PF_EXITING)
# *and* has already let go of its memory (no mm: vsize 0). The kernel's last writes into a
# task's memory (robust futexes, clear_child_tid) come before that point; the expensive part,
# tearing the address space down (15-25 ms for a Python with pandas loaded on these machines),
# comes after it and goes on after the response. The cgroup is removed once it is over.
PF_EXITING = 0x00000004


class CannotVerify(RuntimeError):
    """The tasks of the execution cannot be seen from here (another pid namespace, an
    unexpected error reading the cgroup): the caller stops it by other means."""


def task_is_stopped(tid: int) -> bool:
    """Whether task `tid` (a thread id, this pid namespace) can no longer act (see above)."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # the name may hold spaces and ")"
    except (FileNotFoundError, ProcessLookupError):
        return True
    if fields[0] in (b"Z", b"X", b"x"):
        return True
    return bool(int(fields[6]) & PF_EXITING) and int(fields[20]) == 0


def process_dying(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` (this pid namespace) is gone, a zombie, in the kernel's exit path
    or has a SIGKILL pending; `started`: its start time (stat field 22), so that another
    process that got the pid since counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        with open(f"/proc/{pid}/status", "rb") as status:
            pending = [int(line.split()[1], 16) for line in status if line.startswith((b"SigPnd:", b"ShdPnd:"))]
    except (FileNotFoundError, ProcessLookupError):
        return True
    if started is not None and int(fields[19]) != started:
        return True
    return fields[0] in (b"Z", b"X", b"x") or bool(int(fields[6]) & PF_EXITING) or any(mask & (1 << 8) for mask in pending)


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[19])


def tasks_file_of(version: int) -> str:
    """The file listing every thread of a cgroup: "tasks" (v1) or "cgroup.threads" (v2)."""
    return "tasks" if version == 1 else "cgroup.threads"


def tasks_below(directory: Path, tasks_file: str) -> list[int]:
    """Every task (thread) of `directory` and its descendants; `tasks_file` is "tasks" (v1)
    or "cgroup.threads" (v2). A cgroup removed meanwhile held no task any more."""
    found: list[int] = []
    for current, children, _ in os.walk(directory):
        try:
            found.extend(int(t) for t in _read(Path(current) / tasks_file).split())
        except OSError as error:
            if error.errno not in (_errno.ENOENT, _errno.ENODEV):
                raise CannotVerify(f"cannot read {current}: {error}") from None
            children.clear()
    if 0 in found:  # a task outside our pid namespace
        raise CannotVerify(f"the tasks of {directory} are in another pid namespace")
    return found


def stopped_now(directory: Path, tasks_file: str) -> bool:
    """Whether every task below `directory` is stopped, confirmed by a second listing: a
    task may finish a fork() and then take its SIGKILL between our reading the list and
    looking at it; its child is in the cgroup before fork() returns, so the second listing
    holds it."""
    seen = tasks_below(directory, tasks_file)
    for _ in range(100):
        if not all(task_is_stopped(t) for t in seen):
            return False
        again = tasks_below(directory, tasks_file)
        if set(again) <= set(seen):
            return True
        seen = again  # something forked meanwhile: look at the newcomers too
    return False


def wait_stopped(directory: Path, tasks_file: str, timeout_s: float) -> bool:
    """Waits until every task below `directory` is stopped (see above); False on timeout."""
    deadline = time.monotonic() + timeout_s
    pause = 0.0002
    while not stopped_now(directory, tasks_file):
        if time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
    return True


@dataclass
class Accounting:
    version: int  # 1 or 2
    empty_since: dict[str, float] = field(default_factory=dict)  # sweep(): name -> first seen empty

    @classmethod
    def detect(cls) -> "Accounting | None":
        if (ROOT / "memory" / "memory.max_usage_in_bytes").exists():
            if _write_ok(ROOT / "memory" / PARENT) and _write_ok(ROOT / "cpuacct" / PARENT):
                return cls(1)
        elif (ROOT / "cgroup.controllers").exists() and _write_ok(ROOT / PARENT):
            return cls(2)
        log.warning("cgroup accounting unavailable: peak memory and CPU time will not be reported")
        return None

    def dirs(self, name: str) -> list[Path]:
        if self.version == 1:
            return [ROOT / "memory" / PARENT / name, ROOT / "cpuacct" / PARENT / name]
        return [ROOT / PARENT / name]

    def leftovers(self, name: str) -> list[Path]:
        """The engine creates the parent in every v1 hierarchy it uses; all must go."""
        if self.version == 2:
            return self.dirs(name)
        return [h / PARENT / name for h in ROOT.iterdir() if (h / PARENT / name).is_dir()]

    def open(self, name: str) -> str | None:
        """Creates the parent cgroup; returns the path to give docker as cgroup_parent."""
        try:
            if self.version == 2:
                controllers = (ROOT / PARENT / "cgroup.subtree_control")
                if "memory" not in controllers.read_text():
                    controllers.write_text("+memory +cpu +pids")
            for path in self.dirs(name):
                path.mkdir()
            return f"/{PARENT}/{name}"
        except OSError as error:
            log.warning("cannot create accounting cgroup", extra={"error": str(error)})
            self.close(name)
            return None

    def read(self, name: str) -> tuple[int | None, int | None]:
        """(peak memory bytes, cpu ms) of everything that ran below the parent."""
        try:
            if self.version == 1:
                peak = int((ROOT / "memory" / PARENT / name / "memory.max_usage_in_bytes").read_text())
                cpu_ns = int((ROOT / "cpuacct" / PARENT / name / "cpuacct.usage").read_text())
                return peak, cpu_ns // 1_000_000
            base = ROOT / PARENT / name
            peak_file = base / "memory.peak"
            peak = int(peak_file.read_text()) if peak_file.exists() else None
            stat = dict(line.split() for line in (base / "cpu.stat").read_text().splitlines())
            return peak, int(stat.get("usage_usec", 0)) // 1000
        except (OSError, ValueError):
            return None, None

    def reset(self, name: str) -> None:
        """Zeroes the peak and CPU counters (v1), so a warm sandbox's numbers cover only the
        program it then runs, not its start-up. cgroup v2 keeps memory.peak."""
        if self.version != 1:
            return
        for path in (ROOT / "memory" / PARENT / name / "memory.max_usage_in_bytes", ROOT / "cpuacct" / PARENT / name / "cpuacct.usage"):
            try:
                path.write_text("0")
            except OSError:
                pass

    def _tasks(self, name: str) -> tuple[Path, str]:
        """The directory whose tasks (below it) are the container's, and its tasks file."""
        return (ROOT / "pids" if self.version == 1 else ROOT) / PARENT / name, tasks_file_of(self.version)

    def running(self, name: str) -> bool | None:
        """Whether a task of the container can still act; None when that cannot be seen from
        here (no such cgroup, another pid namespace, an unreadable cgroup)."""
        base, tasks_file = self._tasks(name)
        try:
            tasks = tasks_below(base, tasks_file)
        except CannotVerify:
            return None
        if not tasks:
            return None if not base.is_dir() else False
        return not all(task_is_stopped(t) for t in tasks)

    def stop(self, name: str, timeout_s: float = 2.0) -> bool:
        """SIGKILLs every process below the accounting cgroup and waits until none of them
        can run again (module comment above). True when that is so; False when the cgroup
        is missing (the caller then stops the container through the engine)."""
        import signal

        kill_file = (ROOT / "unified" if self.version == 1 else ROOT) / PARENT / name / "cgroup.kill"
        try:
            kill_file.write_text("1")  # recursive, atomic against forks (kernel >= 5.14)
            by_cgroup = True
        except OSError:
            by_cgroup = False
        base, tasks_file = self._tasks(name)
        if not base.is_dir():
            return False
        give_up = time.monotonic() + timeout_s
        try:
            if by_cgroup:
                return wait_stopped(base, tasks_file, timeout_s)
            while time.monotonic() < give_up:  # pid by pid, again for what forked meanwhile
                for tid in tasks_below(base, tasks_file):
                    if not task_is_stopped(tid):
                        try:
                            os.kill(tid, signal.SIGKILL)  # any thread id names its whole process
                        except ProcessLookupError:
                            pass
                if wait_stopped(base, tasks_file, 0.002):
                    return True
        except CannotVerify as error:
            log.warning("cannot verify that an execution stopped", extra={"execution": name, "error": str(error)})
        return False

    def close(self, name: str) -> None:
        for path in self.leftovers(name):
            for _ in range(50):  # the engine may still be tearing the child cgroup down
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)

    def sweep(self, older_than_s: float, skip_prefix: str = "bw-") -> int:
        """Removes accounting cgroups that a dead worker (or a close() that ran out of
        patience) left: found holding no process by this process's sweeps for longer than
        any run can last (cgroup v1 directories have no usable mtime, so the first empty
        sighting is remembered). The bwrap backend's cgroups (`skip_prefix`) share the
        parent and have a sweep of their own."""
        parents = [ROOT / PARENT] if self.version == 2 else [h / PARENT for h in ROOT.iterdir() if (h / PARENT).is_dir()]
        names: set[str] = set()
        for parent in parents:
            try:
                names.update(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(skip_prefix))
            except OSError:
                continue
        now = time.monotonic()
        for name in set(self.empty_since) - names:
            del self.empty_since[name]
        removed = 0
        for name in sorted(names):
            dirs = [parent / name for parent in parents if (parent / name).is_dir()]
            try:
                busy = any(tasks_below(d, "cgroup.procs") for d in dirs)
            except CannotVerify:
                busy = True  # never remove what cannot be checked
            if busy:
                self.empty_since.pop(name, None)  # in use (again): a run may be going on
                continue
            if now - self.empty_since.setdefault(name, now) < older_than_s:
                continue
            del self.empty_since[name]
            for directory in dirs:
                for current, _, _ in sorted(os.walk(directory), key=lambda entry: -len(entry[0])):
                    try:
                        os.rmdir(current)  # the deepest first; a busy one stays for next time
                    except OSError:
                        pass
            removed += not any(d.exists() for d in dirs)
        return removed


# -- per-execution limit cgroups (the bwrap backend) ---------------------------------------
#
# Each execution gets `codeinterp/<name>` below the server's *own* cgroup (from
# /proc/self/cgroup), so an outer limit on the server also bounds its executions.
#   cgroup v2: one directory with memory.max, memory.swap.max=0, pids.max, cpu.max; killed with
#              cgroup.kill. The controllers must be enabled in the server's cgroup, which the
#              kernel allows only when it holds no process: the server then moves itself into a
#              leaf `codeinterp-server` beside `codeinterp` (what docker-in-docker does).
#   cgroup v1: one directory per hierarchy (memory with memsw = memory, pids, cpu quota, cpuacct,
#              freezer); killed with the cgroup.kill of a cgroup2 directory when the host has a
#              (hybrid) unified mount, else frozen and SIGKILLed pid by pid.

import signal as _signal

SERVER_LEAF = "codeinterp-server"
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
CPU_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    pass


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value) -> None:
    with open(path, "w") as out:
        out.write(str(value))


def _own_paths() -> tuple[dict[str, str], str | None]:
    """({v1 controller: path}, v2 path) of this process, from /proc/self/cgroup."""
    v1, v2 = {}, None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = path
        for name in controllers.split(","):
            v1[name.removeprefix("name=")] = path
    return v1, v2


def _cgroup_mounts() -> list[tuple[str, str, str, list[str]]]:
    """[(fstype, mount root, mount point, super options)] of the cgroup filesystems."""
    found = []
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                found.append((tail[0], fields[3], fields[4].replace("\\040", " "), tail[2].split(",")))
    return found


def _join(mount_point: str, mount_root: str, own: str) -> Path:
    """The directory of cgroup `own` in a mount whose root is `mount_root` (a container may
    mount a sub-tree; with a cgroup namespace both are "/")."""
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root + "/")):
        own = own[len(mount_root):] or "/"
    return Path(mount_point + own.rstrip("/"))


def _pids_of(directory: Path) -> list[int]:
    try:
        return [int(p) for p in _read(directory / "cgroup.procs").split()]
    except FileNotFoundError:
        return []


def _rmdir(path: Path, patience_s: float = 2.0) -> bool:
    """rmdir, retried while the last tasks of the cgroup are still being torn down."""
    deadline = time.monotonic() + patience_s
    pause = 0.001
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as error:
            if error.errno != _errno.EBUSY or time.monotonic() > deadline:
                log.warning("cannot remove cgroup", extra={"path": str(path), "error": str(error)})
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


@dataclass
class ExecutionCgroup:
    """The cgroup(s) of one execution: enter them, kill everything in them, read the counters."""

    version: int
    dirs: dict[str, Path]  # role -> directory; roles: memory, pids, cpu, cpuacct, freezer, kill
    unique: list[Path]

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.unique]

    def pids(self) -> list[int]:
        return _pids_of(self.dirs["pids"])

    def kill(self) -> None:
        """SIGKILL to every process of the execution, including any it forked meanwhile."""
        kill_dir = self.dirs.get("kill")
        if kill_dir is not None:
            try:
                _write(kill_dir / "cgroup.kill", 1)
                return
            except OSError:
                pass
        freezer = self.dirs.get("freezer")
        frozen = False
        if freezer is not None:
            try:
                _write(freezer / "freezer.state", "FROZEN")
                frozen = True
                for _ in range(200):  # a frozen cgroup cannot fork while we kill it
                    if _read(freezer / "freezer.state").strip() == "FROZEN":
                        break
                    time.sleep(0.001)
            except OSError:
                pass
        for _ in range(100):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if frozen:
                break
            time.sleep(0.001)
        if frozen:
            try:
                _write(freezer / "freezer.state", "THAWED")  # SIGKILL is delivered on thaw
            except OSError:
                pass

    def wait_stopped(self, timeout_s: float) -> bool:
        return wait_stopped(self.dirs["pids"], tasks_file_of(self.version), timeout_s)

    def wait_empty(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        pause = 0.0005
        while self.pids():
            if time.monotonic() > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return True

    def stop_all(self, timeout_s: float = 5.0) -> bool:
        """Kills until no task of the execution can run again (see wait_stopped); True then.
        The cgroup may still hold exiting tasks: remove() waits for those."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.kill()
            if self.wait_stopped(min(0.5, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() > deadline:
                return False

    def stats(self) -> tuple[int | None, int | None, int]:
        """(peak memory bytes, cpu ms, OOM kills)."""
        peak = cpu_ms = None
        oom_kills = 0
        mem = self.dirs["memory"]
        try:
            if self.version == 1:
                peak = int(_read(mem / "memory.max_usage_in_bytes"))
                cpu_ms = int(_read(self.dirs["cpuacct"] / "cpuacct.usage")) // 1_000_000
                control = dict(line.split() for line in _read(mem / "memory.oom_control").splitlines())
                oom_kills = int(control.get("oom_kill", 0))
            else:
                if (mem / "memory.peak").exists():
                    peak = int(_read(mem / "memory.peak"))
                stat = dict(line.split() for line in _read(mem / "cpu.stat").splitlines())
                cpu_ms = int(stat.get("usage_usec", 0)) // 1000
                events = dict(line.split() for line in _read(mem / "memory.events").splitlines())
                oom_kills = int(events.get("oom_kill", 0))
        except (OSError, ValueError) as error:
            log.warning("cannot read cgroup counters", extra={"error": str(error)})
        return peak, cpu_ms, oom_kills

    def dying(self) -> bool:
        """Whether any of its processes has been killed or is on its way out (a zombie, in the
        kernel's exit path, or with a SIGKILL pending): its sandbox was killed, and must not be
        given a program."""
        return any(process_dying(pid) for pid in self.pids())

    def populated(self) -> bool:
        """Whether any process is still in it (a missing cgroup is empty)."""
        try:
            if self.version == 2:
                return "populated 1" in _read(self.dirs["pids"] / "cgroup.events")
            return bool(_read(self.dirs["pids"] / "cgroup.procs").strip())
        except OSError:
            return False

    def reset_peak(self) -> None:
        """Starts the peak memory anew (v1; on v2 memory.peak cannot be reset for others)."""
        if self.version == 1:
            try:
                _write(self.dirs["memory"] / "memory.max_usage_in_bytes", 0)
            except OSError:
                pass

    def remove(self) -> bool:
        # No memory.force_empty first (v1): it reclaims every page charged to the cgroup, and a
        # file's cache pages are charged to whoever read them first, so once a runtime had been
        # read first inside a sandbox every run of it read it from disk again (js 85 ms instead
        # of 19, tests/executor/test_page_cache.py). The removed cgroup lingers in the kernel
        # while pages charged to it stay cached (as on v2 and with Docker); later runs hit those
        # pages without charging new ones, so few linger (1,500 runs of py, js, bash, C, Go and
        # Java here left 8 more memory cgroups in /proc/cgroups than before, live ones among them).
        ok = True
        for directory in self.unique:
            ok = _rmdir(directory) and ok
        return ok


@dataclass
class CgroupTree:
    """Where per-execution cgroups are made: the `codeinterp` parent in each hierarchy."""

    version: int
    parents: dict[str, Path]  # role -> codeinterp parent directory

    @classmethod
    def detect(cls) -> CgroupTree:
        own_v1, own_v2 = _own_paths()
        mounts = _cgroup_mounts()
        v2_mount = next((m for m in mounts if m[0] == "cgroup2"), None)
        if v2_mount is not None and own_v2 is not None:
            base = _join(v2_mount[2], v2_mount[1], own_v2)
            if base.name == SERVER_LEAF:
                base = base.parent
            available = _read(base / "cgroup.controllers").split() if (base / "cgroup.controllers").exists() else []
            if "memory" in available and "pids" in available:
                return cls._detect_v2(base, {"memory", "pids"} | ({"cpu"} & set(available)))
        parents: dict[str, Path] = {}
        for fstype, root, point, options in mounts:
            if fstype != "cgroup":
                continue
            for role in V1_CONTROLLERS:
                if role in options and role in own_v1 and role not in parents:
                    parents[role] = _join(point, root, own_v1[role]) / PARENT
        missing = [r for r in ("memory", "pids", "cpu", "cpuacct") if r not in parents]
        if missing:
            raise CgroupError(f"no cgroup v2 with the memory controller and no v1 hierarchy for {', '.join(missing)}")
        if v2_mount is not None and own_v2 is not None:  # hybrid: the unified tree is for cgroup.kill
            parents["kill"] = _join(v2_mount[2], v2_mount[1], own_v2) / PARENT
        tree = cls(1, parents)
        tree._make_parents()
        return tree

    @classmethod
    def _detect_v2(cls, base: Path, wanted: set[str]) -> CgroupTree:
        """`wanted`: memory and pids, and cpu where it is delegated to us."""
        enabled = set(_read(base / "cgroup.subtree_control").split())
        if not wanted <= enabled:
            try:
                _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
            except OSError as error:
                if error.errno != _errno.EBUSY:
                    raise CgroupError(f"cannot enable {' '.join(sorted(wanted))} in {base}: {error}") from None
                # "No internal processes": our cgroup holds processes (the server), so move them
                # into a leaf first; workers started later find themselves in that leaf.
                leaf = base / SERVER_LEAF
                leaf.mkdir(exist_ok=True)
                for pid in _pids_of(base):
                    try:
                        _write(leaf / "cgroup.procs", pid)
                    except OSError:
                        pass  # exited meanwhile, or a kernel thread
                log.warning("moved the server's processes into a leaf cgroup", extra={"leaf": str(leaf)})
                try:
                    _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
                except OSError as again:
                    raise CgroupError(f"cannot enable {' '.join(sorted(wanted))} in {base}: {again}") from None
        parent = base / PARENT
        parent.mkdir(exist_ok=True)
        if not wanted <= set(_read(parent / "cgroup.subtree_control").split()):
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
        return cls(2, {role: parent for role in ("memory", "pids", "cpu", "cpuacct", "kill")})

    def _make_parents(self) -> None:
        for role, parent in self.parents.items():
            try:
                parent.mkdir(exist_ok=True)
            except OSError as error:
                if role in ("kill", "freezer"):  # optional helpers
                    del self.parents[role]
                    return self._make_parents()
                raise CgroupError(f"cannot create {parent}: {error}") from None
        if "kill" in self.parents and not (self.parents["kill"] / "cgroup.kill").exists():
            del self.parents["kill"]  # a kernel before 5.14
        if "kill" in self.parents:
            self.parents.pop("freezer", None)  # cgroup.kill does the freezer's job, one cgroup less

    def create(self, name: str, memory_bytes: int, pids: int, cpus: float) -> ExecutionCgroup:
        dirs = {role: parent / name for role, parent in self.parents.items()}
        unique = list(dict.fromkeys(dirs.values()))
        made: list[Path] = []
        try:
            for directory in unique:
                directory.mkdir()
                made.append(directory)
            quota = max(1000, int(cpus * CPU_PERIOD_US))
            if self.version == 1:
                mem = dirs["memory"]
                _write(mem / "memory.limit_in_bytes", memory_bytes)
                if (mem / "memory.memsw.limit_in_bytes").exists():  # swap accounting may be off
                    _write(mem / "memory.memsw.limit_in_bytes", memory_bytes)
                _write(dirs["pids"] / "pids.max", pids)
                _write(dirs["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US)
                _write(dirs["cpu"] / "cpu.cfs_quota_us", quota)
            else:
                directory = dirs["memory"]
                _write(directory / "memory.max", memory_bytes)
                if (directory / "memory.swap.max").exists():
                    _write(directory / "memory.swap.max", 0)
                _write(directory / "pids.max", pids)
                if (directory / "cpu.max").exists():
                    _write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")
                if not (directory / "cgroup.kill").exists():
                    del dirs["kill"]  # a kernel before 5.14: kill pid by pid
        except OSError as error:
            for directory in reversed(made):
                _rmdir(directory, 0.1)
            raise CgroupError(f"cannot set up the execution cgroup {name}: {error}") from None
        return ExecutionCgroup(self.version, dirs, unique)

    def existing(self) -> list[ExecutionCgroup]:
        """The execution cgroups that exist now (of any server sharing this parent)."""
        names: set[str] = set()
        for parent in self.parents.values():
            try:
                names.update(p.name for p in parent.iterdir() if p.is_dir())
            except OSError:
                continue
        found = []
        for name in sorted(names):
            dirs = {role: parent / name for role, parent in self.parents.items() if (parent / name).is_dir()}
            if "memory" in dirs and "pids" in dirs:
                found.append(ExecutionCgroup(self.version, dirs, list(dict.fromkeys(dirs.values()))))
        return found

    def find(self, name: str) -> ExecutionCgroup | None:
        """The execution cgroup `name` if it exists (made by any process of this server)."""
        dirs = {role: parent / name for role, parent in self.parents.items() if (parent / name).is_dir()}
        if "memory" not in dirs or "pids" not in dirs:
            return None
        return ExecutionCgroup(self.version, dirs, list(dict.fromkeys(dirs.values())))

    def writable(self) -> bool:
        return all(os.access(parent, os.W_OK) for parent in self.parents.values())
