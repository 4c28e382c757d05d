"""The Docker backend: one fresh container per execution, every limit enforced by the kernel.

The container: no network, read-only root, a size-capped /tmp, /mnt/data (cwd and $HOME) and
/mnt/code (read-only source) bound from the execution's own quota-limited tmpfs, all
capabilities dropped, no-new-privileges, a non-root uid, memory = memory+swap, a pids limit,
a CPU quota, nofile/fsize/core rlimits, tini as pid 1 (reaps orphans), no log driver (output
is read from the attach stream with a per-stream cap), and the image's environment only.
The container is removed before run() returns, so nothing of an execution runs on after it.
"""

from __future__ import annotations

import logging
import select
import socket
import time

import docker
from django.conf import settings
from docker.types import LogConfig, Mount, Ulimit

from .base import SANDBOX_UID, RunResult, RunSpec
from .cgroups import Accounting
from .seccomp import PROFILE_JSON

log = logging.getLogger("sandbox.docker")

LABEL = "org.librechat.codeinterp"
DEADLINE_LABEL = "org.librechat.codeinterp.deadline"
REAP_GRACE_S = 10
_STDOUT, _STDERR = 1, 2


class OutputCollector:
    """Reads docker's multiplexed attach stream (8-byte frame headers) with a per-stream cap."""

    def __init__(self, cap: int):
        self.cap = cap
        self.streams = {_STDOUT: bytearray(), _STDERR: bytearray()}
        self.truncated = False
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        while len(self._pending) >= 8:
            size = int.from_bytes(self._pending[4:8], "big")
            if len(self._pending) < 8 + size:
                return
            stream = self._pending[0]
            payload = self._pending[8 : 8 + size]
            del self._pending[: 8 + size]
            target = self.streams.get(stream)
            if target is None:
                continue
            room = self.cap - len(target)
            if len(payload) > room:
                target += payload[: max(room, 0)]
                self.truncated = True
            else:
                target += payload

    def text(self, stream: int) -> str:
        return bytes(self.streams[stream]).decode("utf-8", errors="replace")


class DockerBackend:
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
        self.accounting = Accounting.detect()

    def owner_uid(self, slot: int) -> int:
        return SANDBOX_UID  # the image's user; no user namespace, so also the host uid

    # -- one execution ---------------------------------------------------------------------
    def run(self, spec: RunSpec) -> RunResult:
        limits = spec.limits
        cgroup_parent = self.accounting.open(spec.name) if self.accounting else None
        hard_deadline = time.time() + spec.deadline_ms / 1000 + REAP_GRACE_S
        host_config = self.api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,exec,size={limits.tmp_mb}m,mode=1777"},
            mounts=[
                Mount("/mnt/data", str(spec.data_dir), type="bind"),
                Mount("/mnt/code", str(spec.code_dir), type="bind", read_only=True),
            ],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={PROFILE_JSON}"],
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            pids_limit=self._host_pids(limits),
            nano_cpus=int(limits.cpus * 1e9),
            ulimits=self._ulimits(limits),
            init=True,
            runtime=self.runtime,
            cgroup_parent=cgroup_parent,
            log_config=LogConfig(type="none"),
        )
        container = self.api.create_container(
            self.image,
            command=spec.argv,
            user=f"{SANDBOX_UID}:{SANDBOX_UID}",
            working_dir="/mnt/data",
            hostname="sandbox",
            network_disabled=True,
            stdin_open=False,
            tty=False,
            labels={LABEL: "1", DEADLINE_LABEL: str(int(hard_deadline))},
            host_config=host_config,
        )
        cid = container["Id"]
        result = RunResult()
        try:
            self._run_container(cid, spec, result)
        finally:
            try:
                self.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
            if cgroup_parent:
                result.peak_memory_bytes, result.cpu_ms = self.accounting.read(spec.name)
                self.accounting.close(spec.name)
        return result

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

    def _run_container(self, cid: str, spec: RunSpec, result: RunResult) -> None:
        sock = self.api.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        collector = OutputCollector(spec.limits.output_max_bytes)
        started = time.monotonic()
        deadline = started + spec.deadline_ms / 1000
        try:
            self.api.start(cid)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    result.timed_out = True
                    break
                ready, _, _ = select.select([raw], [], [], remaining)
                if not ready:
                    continue
                chunk = raw.recv(1 << 16)
                if not chunk:
                    break
                collector.feed(chunk)
                if collector.truncated:
                    break
        finally:
            # Shut the stream first: the engine will not even kill a container whose output
            # is waiting to be read (shutdown, because the HTTP response holds the fd too).
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if result.timed_out or collector.truncated:
            self._kill(cid)
        status = self.api.wait(cid, timeout=30)
        result.wall_ms = int((time.monotonic() - started) * 1000)
        state = self.api.inspect_container(cid)["State"]
        result.exit_code = status.get("StatusCode", state.get("ExitCode"))
        result.oom_killed = bool(state.get("OOMKilled"))
        if result.exit_code is not None and 128 < result.exit_code <= 128 + 64:  # died of a signal
            result.signal = result.exit_code - 128
        result.output_truncated = collector.truncated
        result.stdout = collector.text(_STDOUT)
        result.stderr = collector.text(_STDERR)

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
        """Removes containers of ours whose deadline passed (their worker died mid-run)."""
        removed = 0
        now = time.time()
        for info in self.api.containers(all=True, filters={"label": LABEL}):
            deadline = int(info.get("Labels", {}).get(DEADLINE_LABEL, "0") or 0)
            if deadline < now:
                try:
                    self.api.remove_container(info["Id"], force=True)
                    removed += 1
                except docker.errors.APIError:
                    pass
        return removed

    def health(self) -> dict:
        try:
            self.api.ping()
        except Exception as error:  # any failure means: not answering
            return {"ok": False, "engine": "docker", "error": str(error)[:200]}
        try:
            self.api.inspect_image(self.image)
        except docker.errors.ImageNotFound:
            return {"ok": False, "engine": "docker", "error": f"image {self.image} is missing"}
        return {"ok": True, "engine": "docker", "runtime": self.runtime, "image": self.image}
