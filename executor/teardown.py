"""Work that may finish after the response: removing a stopped container, its accounting
cgroups and its work area. By then every process of the execution has exited (the engine
reported the container stopped), so nothing of it runs on; only its traces are swept, a few
milliseconds later, off the request's path. What a dying worker leaves here, the housekeeping
sweep removes (containers past their deadline, work areas past the longest run).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("sandbox.teardown")
_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="teardown")


def _guarded(fn, *args):
    try:
        fn(*args)
    except Exception:
        log.exception("teardown failed", extra={"step": getattr(fn, "__qualname__", str(fn))})


def later(fn, *args) -> None:
    _threads.submit(_guarded, fn, *args)


def drain(timeout: float = 30.0) -> None:
    """Waits for queued teardown (tests, management commands)."""
    _threads.submit(lambda: None).result(timeout)
