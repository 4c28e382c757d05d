"""What every execution backend takes and returns. A backend knows nothing of HTTP, users or
the storage layout: it gets a work directory, a command and limits, and says what happened."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# The unprivileged uid:gid every program runs as (the `sandbox` user of docker/Dockerfile.executor).
SANDBOX_UID = 10001


def read_available(fd: int, limit: int = 1 << 16) -> bytes:
    """What a non-blocking FIFO holds now, at most `limit` bytes: a program that is still
    writing can neither keep the server reading nor make it hold more than the cap."""
    chunks, size = [], 0
    while size < limit:
        try:
            chunk = os.read(fd, min(1 << 16, limit - size))
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class Limits:
    timeout_ms: int
    compile_timeout_ms: int
    memory_mb: int
    pids: int
    cpus: float
    output_max_bytes: int
    tmp_mb: int
    disk_mb: int
    nofile: int

    @classmethod
    def from_settings(cls, timeout_ms: int | None = None) -> "Limits":
        from django.conf import settings

        run_ms = settings.SANDBOX_TIMEOUT_MS
        if timeout_ms:  # a client may ask for less time, never more
            run_ms = max(100, min(run_ms, int(timeout_ms)))
        return cls(
            timeout_ms=run_ms,
            compile_timeout_ms=settings.SANDBOX_COMPILE_TIMEOUT_MS,
            memory_mb=settings.SANDBOX_MEMORY_MB,
            pids=settings.SANDBOX_PIDS_LIMIT,
            cpus=settings.SANDBOX_CPUS,
            output_max_bytes=settings.SANDBOX_OUTPUT_MAX_BYTES,
            tmp_mb=settings.SANDBOX_TMP_MB,
            disk_mb=settings.SANDBOX_DISK_MB,
            nofile=settings.SANDBOX_NOFILE,
        )


@dataclass(frozen=True)
class RunSpec:
    """One program to run. `data_dir` becomes /mnt/data (cwd, $HOME, writable); `code_dir`
    becomes /mnt/code (read-only, holds the source file); `argv` is the command inside."""

    name: str
    data_dir: Path
    code_dir: Path
    argv: list[str]
    limits: Limits
    deadline_ms: int  # wall-clock budget of the whole container, compile step included
    slot: int = 0  # the leased slot: unique among the executions running at this moment


@dataclass
class RunResult:
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    oom_killed: bool = False
    output_truncated: bool = False
    wall_ms: int = 0
    cpu_ms: int | None = None
    peak_memory_bytes: int | None = None
    notes: list[str] = field(default_factory=list)


class Backend(Protocol):
    def owner_uid(self, slot: int) -> int:
        """The host uid that must own /mnt/data for an execution in this slot."""
        ...

    def run(self, spec: RunSpec) -> RunResult: ...

    def probe(self, argv: list[str]) -> str:
        """stdout of a short trusted command in the sandbox runtime (version probes)."""
        ...

    def health(self) -> dict: ...

    def reap(self) -> int: ...
