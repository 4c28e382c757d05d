"""Per-execution accounting cgroups: peak memory and CPU time that survive the container.

Docker removes a container's own cgroup with the container. Giving each container a fresh
parent cgroup (docker's `cgroup_parent`) keeps hierarchical counters that can be read after
the container is gone: cgroup v1 `memory.max_usage_in_bytes` and `cpuacct.usage`, or cgroup v2
`memory.peak` and `cpu.stat`. Where the hierarchy is not writable (a non-root server, a
systemd-driven engine), accounting is simply off and the numbers are reported as unknown.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
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


@dataclass
class Accounting:
    version: int  # 1 or 2

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
