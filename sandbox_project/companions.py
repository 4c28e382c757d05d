"""The processes the gunicorn master keeps beside its workers: the front (nginx) and the warm
pool keeper. The master supervises them as it supervises its workers (sandbox_project/serve.py
calls tend() from its main loop): one that dies is started again, at most every RESTART_AFTER_S;
each dies with the master (PR_SET_PDEATHSIG), so a killed master leaves no port bound and no
keeper behind; stop_all() ends them gracefully when the server stops.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("sandbox.companions")
PR_SET_PDEATHSIG = 1
RESTART_AFTER_S = 2.0


def _die_with_parent(sig: int) -> Callable[[], None]:
    def arrange() -> None:  # runs in the child between fork and exec (the master has no threads)
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return arrange


@dataclass
class Companion:
    name: str
    command: Callable[[], list[str]]  # asked at every start (the front rewrites its config)
    stop_signal: int = signal.SIGTERM
    stop_wait_s: float = 30.0
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    exited: bool = field(default=False)
    status: int | None = None  # the wait status of the last exit, when this module reaped it
    held: bool = False  # stopping on purpose (draining): not started again

    def hold(self) -> None:
        self.held = True

    def signal(self, sig: int) -> None:
        if self.running():
            self.process.send_signal(sig)

    def start(self) -> None:
        self.process = subprocess.Popen(self.command(), preexec_fn=_die_with_parent(signal.SIGTERM))
        self.started_at = time.monotonic()
        self.exited = False
        log.info("started %s (pid %s)", self.name, self.process.pid)

    def reap(self) -> None:
        """Collects the exit of this companion (the master's own waitpid(-1) may get there
        first; then the pid no longer exists, which counts the same)."""
        if self.process is None or self.exited:
            return
        try:
            pid, status = os.waitpid(self.process.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.process.pid, None
        if pid:
            self.exited, self.status = True, status

    def running(self) -> bool:
        self.reap()
        return self.process is not None and not self.exited

    def stop(self) -> None:
        if not self.running():
            return
        self.process.send_signal(self.stop_signal)
        deadline = time.monotonic() + self.stop_wait_s
        while time.monotonic() < deadline and self.running():
            time.sleep(0.05)
        if self.running():
            self.process.kill()
            self.process.wait(10)


_companions: list[Companion] = []


def register(companion: Companion) -> None:
    _companions.append(companion)


def find(name: str) -> Companion | None:
    return next((c for c in _companions if c.name == name), None)


def start_all() -> None:
    for companion in _companions:
        companion.start()


def reap() -> None:
    for companion in _companions:
        companion.reap()


def tend() -> None:
    """Starts again what died (not in a tight loop: a companion that cannot start is retried
    every RESTART_AFTER_S, and says why in the log each time)."""
    for companion in _companions:
        if companion.held:
            continue
        if companion.process is not None and not companion.running() and time.monotonic() - companion.started_at >= RESTART_AFTER_S:
            log.error("%s exited (wait status %s); starting it again", companion.name, companion.status)
            try:
                companion.start()
            except Exception:
                log.exception("cannot start %s", companion.name)


def stop_all() -> None:
    for companion in reversed(_companions):
        try:
            companion.stop()
        except Exception:
            log.exception("cannot stop %s", companion.name)
    _companions.clear()


def python_command(*args: str) -> Callable[[], list[str]]:
    from django.conf import settings

    return lambda: [sys.executable, str(settings.BASE_DIR / "manage.py"), *args]
