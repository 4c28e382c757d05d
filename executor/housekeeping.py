"""Cleaning up after workers that died mid-execution.

A crashed worker leaves a container (labelled with its deadline) and a mounted work area.
Neither outlives its lease for long: every worker sweeps both every REAP_INTERVAL_S, and
`manage.py cleanup_sessions` does the same from cron.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from django.conf import settings

from .backends import get_backend
from .backends.base import longest_run_s
from .workspace import Workspace

log = logging.getLogger("sandbox.housekeeping")
REAP_INTERVAL_S = 15
OVERDUE_INTERVAL_S = 1.0  # how often overdue sandboxes are looked for (cheap: one engine query)
_started = False


def mounted_work_areas() -> list[Path]:
    """Work areas of executions (workspace/exec_*) and programmatic runs (workspace/ptc_*)."""
    root = str(settings.SANDBOX_STORAGE_PATH)
    found = []
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(root + "/") and ("/workspace/exec_" in point or "/workspace/ptc_" in point):
                found.append(Path(point))
    return found


def stale_work_areas(now: float | None = None) -> list[Path]:
    """Work areas older than the longest possible execution, or programmatic run (their mount
    dir's mtime is set when data/ and code/ are made, and nothing inside the sandbox can touch
    it)."""
    now = now or time.time()
    stale = []
    for point in mounted_work_areas():
        longest = settings.SANDBOX_PTC_MAX_RUN_S + 30 if point.name.startswith("ptc_") else longest_run_s()
        try:
            if point.stat().st_mtime < now - longest:
                stale.append(point)
        except OSError:
            continue
    return stale


def sweep() -> dict:
    removed = {"containers": 0, "work_areas": 0}
    try:
        removed["containers"] = get_backend().reap()
    except Exception as error:
        log.warning("container sweep failed", extra={"error": str(error)[:300]})
    for point in stale_work_areas():
        Workspace(point, 0, 0).close()
        removed["work_areas"] += 1
    if any(removed.values()):
        log.warning("removed leftovers of dead executions", extra=removed)
    return removed


def start_background_reaper() -> None:
    global _started
    if _started:
        return
    _started = True

    def loop():
        from . import slots

        while True:
            time.sleep(REAP_INTERVAL_S)
            try:
                slots.heartbeat()
            except Exception as error:  # the database may be down; the next round tries again
                log.warning("slot heartbeat failed", extra={"error": str(error)[:300]})
            try:
                sweep()
            except Exception:
                log.exception("housekeeping failed")

    threading.Thread(target=loop, name="housekeeping", daemon=True).start()

    def overdue_loop():
        """A run whose worker died ends at its deadline: any worker kills it (backends that
        can see such runs; a bwrap sandbox dies with its worker by itself)."""
        from django.db import close_old_connections

        from programmatic.service import reap_overdue

        while True:
            time.sleep(OVERDUE_INTERVAL_S)
            try:
                get_backend().kill_overdue()
            except Exception as error:  # the engine may be down; the next round tries again
                log.debug("overdue sweep failed", extra={"error": str(error)[:200]})
            try:
                reap_overdue()  # programmatic runs whose client did not continue in time
            except Exception as error:
                log.warning("programmatic reap failed", extra={"error": str(error)[:200]})
            finally:
                close_old_connections()

    threading.Thread(target=overdue_loop, name="overdue-runs", daemon=True).start()
