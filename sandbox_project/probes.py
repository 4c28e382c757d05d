"""Checks of slow dependencies (the engine, the audit store) for /health, run off the request.

A health probe must answer at once even when what it checks is busy: dockerd under a burst of
container starts takes 50-150 ms for a ping, and a MongoDB that is down takes seconds to say
so. A BackgroundProbe answers with the last result while it is fresh enough, refreshes it in a
thread of its own, and waits only a short while when it has nothing recent to say.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class BackgroundProbe:
    def __init__(self, check: Callable[[], dict], refresh_after_s: float, trust_for_s: float, wait_s: float):
        """check() -> {"ok": bool, ...}. A result is served as it is for refresh_after_s, then
        served while a refresh runs for up to trust_for_s; older than that, the caller waits up
        to wait_s for the refresh, and a check that has not answered by then is reported as
        not answering."""
        self.check = check
        self.refresh_after_s = refresh_after_s
        self.trust_for_s = trust_for_s
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._result: dict | None = None
        self._at = 0.0
        self._running: threading.Thread | None = None

    def _refresh(self) -> None:
        result = {"ok": False, "error": "the check did not finish"}
        try:
            result = self.check()
        except Exception as error:  # any failure of a check means: not answering
            result = {"ok": False, "error": str(error)[:200]}
        finally:  # whatever happened, the next call may start a new check
            with self._lock:
                self._result, self._at, self._running = result, time.monotonic(), None

    def __call__(self) -> dict:
        with self._lock:
            age = time.monotonic() - self._at
            if self._result is not None and age < self.refresh_after_s:
                return {**self._result, "checked_s_ago": round(age, 1)}
            if self._running is None:
                self._running = threading.Thread(target=self._refresh, name="health-probe", daemon=True)
                self._running.start()
            running = self._running
            if self._result is not None and age < self.trust_for_s:
                return {**self._result, "checked_s_ago": round(age, 1)}
        running.join(self.wait_s)
        with self._lock:
            age = time.monotonic() - self._at
            if self._result is not None and age < self.trust_for_s:
                return {**self._result, "checked_s_ago": round(age, 1)}
        return {"ok": False, "error": f"no answer within {self.wait_s:g} s"}
