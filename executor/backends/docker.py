"""The Docker backend: one fresh container per execution, every limit enforced by the kernel.

The container: no network, read-only root, a size-capped /tmp, /mnt/data (cwd and $HOME) and
/mnt/code (read-only source) bound from the execution's own quota-limited tmpfs, all
capabilities dropped, no-new-privileges, a non-root host uid of the execution's own (its slot's,
or the warm sandbox's; /etc/passwd names it), memory = memory+swap, a pids limit,
a CPU quota, nofile/fsize/core rlimits, tini as pid 1 (reaps orphans), no log driver (output
is read from the attach stream with a per-stream cap), and the image's environment only.
Every process of the execution has ended before run() returns (the stopped container itself is
removed just after, on the teardown thread), so nothing of an execution runs on after it.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import socket
import time

import docker
from django.conf import settings
from docker.types import LogConfig, Mount, Ulimit

from sandbox_project.timing import phase, phase_mark

from .. import teardown
from .base import (
    Backend,
    CappedOutput,
    SANDBOX_UID,
    RunResult,
    RunSpec,
    SandboxUnavailable,
    kernel_release,
    longest_run_s,
    passwd_lines,
    runner_status,
    slot_uid,
    version_of,
)
from .base import read_available as _read_available
from .cgroups import Accounting
from .seccomp import PROFILE_JSON

log = logging.getLogger("sandbox.docker")

LABEL = "org.librechat.codeinterp"
DEADLINE_LABEL = "org.librechat.codeinterp.deadline"  # removed by the sweep after this (epoch s)
KILL_AT_LABEL = "org.librechat.codeinterp.kill-at"  # killed by any worker's watch after this
EXECUTION_LABEL = "org.librechat.codeinterp.execution"
POOL_LABEL = "org.librechat.codeinterp.pool"  # value: the pool's instance (executor/pool.py)
REAP_GRACE_S = 10
STOPPED_GRACE_S = 60  # a stopped container of ours older than this is left over (reap)
BACKSTOP_GRACE_S = 2  # the container's own clock fires this long after the server's (create)
POLL_ENDED_S = 0.02  # how often a warm run without an attach stream checks that its program still runs
_STDOUT, _STDERR = 1, 2


def engine_errors(method):
    """An engine that does not answer (down, restarting, its socket gone) or has no image is
    SandboxUnavailable for the caller: a 503 that says so, never a 500."""

    @functools.wraps(method)
    def guarded(*args, **kwargs):
        import requests

        try:
            return method(*args, **kwargs)
        except docker.errors.ImageNotFound as error:
            raise SandboxUnavailable(f"the executor image is missing: {error.explanation or error}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            raise SandboxUnavailable(f"the Docker engine does not answer: {str(error)[:200]}") from None
        except docker.errors.APIError as error:
            if error.status_code is not None and error.status_code >= 500:
                raise SandboxUnavailable(f"the Docker engine failed: {str(error.explanation or error)[:200]}") from None
            raise
        except docker.errors.DockerException as error:
            raise SandboxUnavailable(f"the Docker engine is unavailable: {str(error)[:200]}") from None

    return guarded


class OutputCollector(CappedOutput):
    """CappedOutput fed from docker's multiplexed attach stream (8-byte frame headers)."""

    KINDS = {_STDOUT: "stdout", _STDERR: "stderr"}

    def __init__(self, cap: int, clock=None):
        super().__init__(cap, clock)
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        while len(self._pending) >= 8:
            size = int.from_bytes(self._pending[4:8], "big")
            if len(self._pending) < 8 + size:
                return
            kind = self.KINDS.get(self._pending[0])
            payload = bytes(self._pending[8 : 8 + size])
            del self._pending[: 8 + size]
            if kind is not None:  # stdin frames (0) and unknown ones carry nothing of ours
                self.add(kind, payload)


class DockerBackend(Backend):
    name = "docker"

    def __init__(self):
        self.client = docker.DockerClient(
            base_url=settings.SANDBOX_DOCKER_HOST or "unix:///var/run/docker.sock",
            version="auto",
            timeout=60,
            max_pool_size=64,
        )
        self.api = self.client.api
        self.image = settings.SANDBOX_DOCKER_IMAGE
        self.runtime = settings.SANDBOX_DOCKER_RUNTIME
        self._fifo_ok: bool | None = None
        # Accounting parents are plain cgroupfs paths; an engine on the systemd cgroup driver
        # accepts only *.slice names there, so accounting is off with it.
        self.accounting = Accounting.detect() if self._cgroup_driver() != "systemd" else None

    def _cgroup_driver(self) -> str:
        try:
            return self.api.info().get("CgroupDriver", "")
        except Exception:
            return ""

    def owner_uid(self, slot: int) -> int:
        return slot_uid(slot)  # no user namespace: the container's uid is the host uid

    # -- one execution ----------------------------------------------------------------------
    def create(self, name: str, argv: list[str], data_dir, code_dir, limits, deadline_s: float, uid: int,
               labels=None, backstop: bool = True) -> str:
        """Creates (does not start) a confined container running as host uid `uid`; returns
        its id. `name` keys the per-execution accounting cgroup.

        backstop: pid 1 is coreutils `timeout`, which SIGKILLs the program (tini, its child,
        reaps and relays signals) once deadline_s has passed, and the whole container ends with
        it. A pid 1 is immune to every signal from inside its namespace that it has no handler
        for, SIGKILL and SIGSTOP included: the program cannot stop that clock. So a program
        never outlives its own limit by more than BACKSTOP_GRACE_S, even when the worker that
        watches it dies. (Warm sandboxes wait an unknown time before their run: their deadline
        is kept by the pool keeper instead.)"""
        passwd, group = passwd_lines(uid)
        for file_name, content in ((".passwd", passwd), (".group", group)):  # root's, read-only inside
            (code_dir / file_name).write_text(content)
            (code_dir / file_name).chmod(0o644)
        cgroup_parent = self.accounting.open(name) if self.accounting else None
        host_config = self.api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,exec,size={limits.tmp_mb}m,mode=1777"},
            shm_size=limits.tmp_mb << 20,  # /dev/shm: the same cap as /tmp
            mounts=[
                Mount("/mnt/data", str(data_dir), type="bind"),
                # gVisor refuses to open a FIFO for writing on a read-only mount (EROFS), and a
                # programmatic run talks to the server through FIFOs in /mnt/code. There the
                # mount is writable, and the folder's ownership keeps it read-only: root's,
                # 0755, files 0644; only the run's own FIFOs are 0666.
                Mount("/mnt/code", str(code_dir), type="bind", read_only=self.runtime != "runsc"),
                Mount("/etc/passwd", str(code_dir / ".passwd"), type="bind", read_only=True),
                Mount("/etc/group", str(code_dir / ".group"), type="bind", read_only=True),
            ],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={PROFILE_JSON}"],
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            pids_limit=self._host_pids(limits),
            nano_cpus=int(limits.cpus * 1e9),
            ulimits=self._ulimits(limits),
            init=not backstop,  # docker-init (tini) as pid 1, or `timeout` with tini below it
            runtime=self.runtime,
            cgroup_parent=cgroup_parent,
            log_config=LogConfig(type="none"),
        )
        if backstop:
            clock = ["timeout", "-s", "KILL", f"{deadline_s + BACKSTOP_GRACE_S:g}"]
            # gVisor (Debian's 2022 build) has no child subreapers for tini; its pid 1 then
            # reaps nothing, which only leaves zombies until the end of the run.
            argv = [*clock, *argv] if self.runtime == "runsc" else [*clock, "tini", "-s", "-g", "--", *argv]
        try:
            container = self.api.create_container(
                self.image,
                command=argv,
                user=f"{uid}:{uid}",
                working_dir="/mnt/data",
                hostname="sandbox",
                network_disabled=True,
                stdin_open=False,
                tty=False,
                labels={
                    LABEL: "1",
                    EXECUTION_LABEL: name,
                    DEADLINE_LABEL: str(int(time.time() + deadline_s + REAP_GRACE_S)),
                    KILL_AT_LABEL: str(int(time.time() + deadline_s + BACKSTOP_GRACE_S + 1)),
                    **(labels or {}),
                },
                host_config=host_config,
            )
        except BaseException:
            if cgroup_parent:
                self.accounting.close(name)
            raise
        return container["Id"]

    @engine_errors
    def run(self, spec: RunSpec) -> RunResult:
        cid = self.create(spec.name, spec.argv, spec.data_dir, spec.code_dir, spec.limits, spec.deadline_ms / 1000,
                          self.owner_uid(spec.slot))
        return self.finish(cid, spec.name, spec, begin=lambda: self.api.start(cid))

    def finish(self, cid: str, name: str, spec: RunSpec, begin, pipes: dict | None = None) -> RunResult:
        """Attaches to the container, calls begin() (start it, or wake a warm one), collects
        the output under the caps and the deadline until the container has stopped, and
        leaves the removal of the stopped container to the teardown thread."""
        result = RunResult()
        try:
            self._run_container(cid, name, spec, result, begin, pipes)
            if self.accounting:
                result.peak_memory_bytes, result.cpu_ms = self.accounting.read(name)
        except BaseException:
            self.destroy(cid, name)
            raise
        teardown.later(self.destroy, cid, name)
        return result

    def destroy(self, cid: str, name: str) -> None:
        try:
            self.api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: a removal is already under way
                raise
        if self.accounting:
            self.accounting.close(name)

    # -- warm sandboxes (executor/pool.py); a handle is the container id ----------------------
    pool_pipes_always = False  # only the python runner reports on FIFOs; exec mode uses attach

    # -- standing sandboxes (programmatic runs, executor/backends/base.py: StandingSandboxes) --
    @engine_errors
    def standing_start(self, name: str, argv: list[str], ws, limits, lifetime_s: float, labels=None) -> str:
        if self.runtime == "runsc" and not self._runsc_opens_fifos():
            raise SandboxUnavailable("the engine's runsc runtime needs --host-fifo=open for programmatic runs "
                                     "(docker/daemon.json registers it so)")
        cid = self.create(name, argv, ws.data, ws.code, limits, lifetime_s, ws.owner, labels=labels, backstop=True)
        try:
            self.api.start(cid)
        except BaseException:
            self.destroy(cid, name)
            raise
        return cid

    def _runsc_opens_fifos(self) -> bool:
        """gVisor opens host FIFOs only with --host-fifo=open among the runtime's arguments."""
        if self._fifo_ok is None:
            runtime = (self.api.info().get("Runtimes") or {}).get("runsc") or {}
            self._fifo_ok = "--host-fifo=open" in (runtime.get("runtimeArgs") or [])
        return self._fifo_ok

    def standing_running(self, handle: str, name: str) -> bool:
        # The accounting cgroup answers without the engine, but is empty for a moment after
        # the start too: a "no" is confirmed by the engine.
        if self.accounting is not None and self.accounting.running(name):
            return True
        try:
            return bool(self.api.inspect_container(handle)["State"].get("Running"))
        except docker.errors.NotFound:
            return False

    def standing_stop(self, handle: str, name: str) -> bool:
        if self.accounting is not None and self.accounting.stop(name):
            return True
        self._kill(handle)
        try:
            self.api.wait(handle, timeout=30)
        except docker.errors.NotFound:
            pass
        return True

    def standing_stats(self, handle: str, name: str) -> tuple[int | None, int | None, int]:
        peak, cpu_ms = self.accounting.read(name) if self.accounting is not None else (None, None)
        try:
            oom = bool(self.api.inspect_container(handle)["State"].get("OOMKilled"))
        except docker.errors.NotFound:
            oom = False
        return peak, cpu_ms, int(oom)

    def standing_destroy(self, handle: str, name: str) -> None:
        self.destroy(handle, name)

    def pool_start(self, name: str, argv: list[str], ws, limits, deadline_s: float, instance: str,
                   self_redirecting: bool = False, runner_mode: str | None = None) -> str:
        cid = self.create(name, argv, ws.data, ws.code, limits, deadline_s=deadline_s, uid=ws.owner,
                          labels={POOL_LABEL: instance}, backstop=False)
        try:
            self.api.start(cid)
        except BaseException:
            self.destroy(cid, name)
            raise
        return cid

    def pool_alive(self, handles, instance: str) -> set[str]:
        found = self.api.containers(filters={"label": f"{POOL_LABEL}={instance}", "status": "running"})
        return {c["Id"] for c in found} & set(handles)

    @engine_errors
    def pool_finish(self, handle: str, name: str, spec: RunSpec, begin, pipes: dict | None) -> RunResult:
        if self.accounting:
            self.accounting.reset(name)  # count the program, not the warm-up
        return self.finish(handle, name, spec, begin, pipes)  # schedules the removal itself

    def pool_kill(self, handle: str, name: str) -> None:
        """Ends every process of a warm sandbox now (the keeper, at a run's deadline)."""
        if not (self.accounting and self.accounting.stop(name)):
            self._kill(handle)

    def pool_release(self, handle: str, name: str) -> None:
        """After a warm run, in the teardown: removes the container. finish() queued that too,
        but when priming the inputs failed, finish() never ran (removal is idempotent)."""
        self.destroy(handle, name)

    def pool_destroy(self, handle: str, name: str) -> None:
        self.destroy(handle, name)

    def pool_clear(self, instance: str, keep=frozenset()) -> int:
        removed = 0
        for info in self.api.containers(all=True, filters={"label": f"{POOL_LABEL}={instance}"}):
            if info["Id"] in keep:
                continue
            try:
                self.api.remove_container(info["Id"], force=True)
                removed += 1
            except Exception:  # already being removed by a teardown
                pass
        return removed

    def _host_pids(self, limits) -> int:
        # gVisor's sentry (ptrace platform) needs host threads of its own for every task, and
        # dies when the host pids limit stops it; it enforces RLIMIT_NPROC itself instead.
        return limits.pids * 16 if self.runtime == "runsc" else limits.pids

    def _ulimits(self, limits) -> list[Ulimit]:
        ulimits = [
            Ulimit(name="nofile", soft=limits.nofile, hard=limits.nofile),
            Ulimit(name="fsize", soft=limits.disk_mb << 20, hard=limits.disk_mb << 20),
            Ulimit(name="core", soft=0, hard=0),
        ]
        if self.runtime == "runsc":
            # Counted per sandbox inside gVisor. Under runc RLIMIT_NPROC would be counted per
            # host uid across all executions, so there the pids cgroup does the job alone.
            ulimits.append(Ulimit(name="nproc", soft=limits.pids, hard=limits.pids))
        return ulimits

    def _run_container(self, cid: str, name: str, spec: RunSpec, result: RunResult, begin, pipes: dict | None = None) -> None:
        """Output comes from the attach stream; a warm Python sandbox (pool.py) also hands
        over `pipes`: FIFOs carrying its stdout, stderr and, when the program is over, its
        exit status, which ends the run without waiting for the container to wind down.
        With the pipes and the accounting cgroup, the attach stream (an engine round trip,
        ~2.5 ms) is not needed at all: a program that ends without the runner's report (os._exit,
        a crash, an OOM kill) is seen through its cgroup, checked every POLL_ENDED_S."""
        watch = bool(pipes) and self.accounting is not None and self.accounting.running(name) is True
        sock = raw = None
        if not watch:
            with phase("attach"):
                sock = self.api.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1})
            raw = getattr(sock, "_sock", sock)
        collector = OutputCollector(spec.limits.output_max_bytes)  # its clock is set once the program starts
        sources = {**({raw.fileno(): "attach"} if raw else {}), **({fd: kind for kind, fd in pipes.items()} if pipes else {})}
        status = bytearray()
        finished = False
        try:
            with phase("wake"):
                begin()
            started = time.monotonic()
            clock = collector.clock = spec.clock(started)
            next_check = started + POLL_ENDED_S
            while not (finished or collector.truncated):
                remaining = clock.remaining(time.monotonic())
                if remaining <= 0:
                    result.timed_out, result.timed_out_phase = True, clock.phase
                    break
                wait = min(remaining, next_check - time.monotonic()) if watch else remaining
                ready, _, _ = select.select(list(sources), [], [], max(0.0, wait))
                if watch and time.monotonic() >= next_check:
                    finished = self.accounting.running(name) is False  # ended without a report
                    next_check = time.monotonic() + POLL_ENDED_S
                for fd in ready:
                    kind = sources[fd]
                    if kind == "attach":
                        chunk = raw.recv(1 << 16)
                        if not chunk:
                            finished = True  # the container stopped
                        collector.feed(chunk)
                    elif kind == "status":  # written by the program's own uid: any bytes
                        status += os.read(fd, 16)
                        finished = finished or b"\n" in status or len(status) > 16
                    else:
                        collector.add(kind, _read_available(fd))
            if pipes:  # what the pipes still hold, bounded: a program may still be writing
                for kind in ("stdout", "stderr"):
                    rest = _read_available(pipes[kind], limit=spec.limits.output_max_bytes + 1)
                    collector.add(kind, rest)
                if not status:  # a report written just before the end was noticed otherwise
                    status += _read_available(pipes["status"], limit=17)
            collector.finish()  # stderr the clock held back (a marker's possible start)
        finally:
            # Shut the stream first: the engine will not even kill a container whose output
            # is waiting to be read (shutdown, because the HTTP response holds the fd too).
            if sock is not None:
                try:
                    raw.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        result.output_truncated = collector.truncated
        result.stdout = collector.text("stdout")
        result.stderr = collector.text("stderr")
        reported = runner_status(bytes(status))
        if reported is not None and not (result.timed_out or collector.truncated):
            # The runner says the program is over, but the FIFO belongs to the program, which
            # may have forged that. Stop every process of the execution now, synchronously,
            # before anything looks at /mnt/data; only the container's removal may wait.
            phase_mark("program", (time.monotonic() - started) * 1000)
            with phase("stop"):
                stopped = self.accounting and self.accounting.stop(name)
            if stopped:
                result.wall_ms = int((time.monotonic() - started) * 1000)
                result.exit_code = reported
                return
        if result.timed_out or collector.truncated or status:
            self._kill(cid)
        waited = self.api.wait(cid, timeout=30)
        result.wall_ms = int((time.monotonic() - started) * 1000)
        state = self.api.inspect_container(cid)["State"]
        result.exit_code = waited.get("StatusCode", state.get("ExitCode"))
        if reported is not None and not (result.timed_out or collector.truncated):
            # The runner reported, and without accounting (a containerised server, a systemd
            # engine) the container was killed to stop it: the status is the program's, not 137.
            result.exit_code = reported
        result.oom_killed = bool(state.get("OOMKilled"))
        if result.exit_code is not None and 128 < result.exit_code <= 128 + 64:  # died of a signal
            result.signal = result.exit_code - 128

    def _kill(self, cid: str) -> None:
        try:
            self.api.kill(cid)
        except docker.errors.APIError:
            pass  # already gone

    def probe(self, argv: list[str]) -> str:
        """Output of a short trusted command in the image, same confinement (version probes)."""
        out = self.client.containers.run(
            self.image, argv, user=f"{SANDBOX_UID}:{SANDBOX_UID}", network_mode="none", read_only=True,
            tmpfs={"/tmp": "size=64m", "/mnt/data": f"size=16m,uid={SANDBOX_UID}"}, cap_drop=["ALL"],
            security_opt=["no-new-privileges"], mem_limit="1g", pids_limit=256, runtime=self.runtime,
            labels={LABEL: "1", DEADLINE_LABEL: str(int(time.time()) + 120)},
            log_config=LogConfig(type="json-file"), remove=True, stdout=True, stderr=False,
        )
        return out.decode("utf-8", errors="replace")

    # -- housekeeping ----------------------------------------------------------------------
    def reap(self) -> int:
        """Removes containers of ours whose deadline passed (their worker died mid-run), those
        stopped for longer than STOPPED_GRACE_S (an engine that went down stopped them; a
        worker reads a stopped container's state within a second), and the empty accounting
        cgroups dead workers left."""
        if self.accounting:
            self.accounting.sweep(longest_run_s() + REAP_GRACE_S)
        removed = 0
        now = time.time()
        for info in self.api.containers(all=True, filters={"label": LABEL}):
            deadline = int(info.get("Labels", {}).get(DEADLINE_LABEL, "0") or 0)
            if deadline < now or (info.get("State") != "running" and self._stopped_for(info, now) > STOPPED_GRACE_S):
                try:
                    self.api.remove_container(info["Id"], force=True)
                    removed += 1
                except docker.errors.APIError:
                    pass
        return removed

    def kill_overdue(self) -> int:
        """Kills running containers of ours past their kill-at time (housekeeping, every
        second, in every worker): the backstop behind the container's own clock, which gVisor
        lets a program stop (it does not shield its pid 1 from signals from inside)."""
        killed = 0
        now = time.time()
        for info in self.api.containers(filters={"label": KILL_AT_LABEL, "status": "running"}):
            if int(info.get("Labels", {}).get(KILL_AT_LABEL, "0") or 0) < now:
                self._kill(info["Id"])
                killed += 1
        return killed

    def _stopped_for(self, info: dict, now: float) -> float:
        """Seconds since a container stopped (or since it was made, if it never started)."""
        from datetime import datetime

        try:
            finished = self.api.inspect_container(info["Id"])["State"].get("FinishedAt", "")
        except docker.errors.NotFound:
            return 0.0
        if not finished or finished.startswith("0001-"):
            return now - float(info.get("Created", now))
        stamp = datetime.fromisoformat(finished[:26].rstrip("Z") + "+00:00") if "." in finished else datetime.fromisoformat(finished.replace("Z", "+00:00"))
        return now - stamp.timestamp()

    _components: dict | None = None

    def components(self) -> dict:
        """Versions of what the sandboxes' walls are made of (for /health and the start-up
        log; docs/SECURITY.md says which versions have known escapes). Asked once."""
        if self._components is None:
            found = {"kernel": kernel_release()}
            for part in self.api.version().get("Components", []):
                name = {"Engine": "dockerd"}.get(part.get("Name"), part.get("Name", "?"))
                commit = (part.get("Details") or {}).get("GitCommit", "")
                found[name] = part.get("Version", "?") + (f" ({commit})" if commit and commit not in part.get("Version", "") else "")
            runtimes = self.api.info().get("Runtimes", {})
            if "runsc" in runtimes:
                found["runsc"] = version_of([runtimes["runsc"].get("path", "runsc"), "--version"])
            self._components = found
        return self._components

    def health(self) -> dict:
        try:
            self.api.ping()
        except Exception as error:  # any failure means: not answering
            return {"ok": False, "engine": "docker", "error": str(error)[:200]}
        try:
            self.api.inspect_image(self.image)
        except docker.errors.ImageNotFound:
            return {"ok": False, "engine": "docker", "error": f"image {self.image} is missing"}
        try:
            components = self.components()
        except Exception as error:  # never a reason for "not ok": the engine answered
            components = {"error": str(error)[:200]}
        return {"ok": True, "engine": "docker", "runtime": self.runtime, "image": self.image, "components": components}
