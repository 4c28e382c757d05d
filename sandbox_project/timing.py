"""Per-phase timings of a request, returned in the standard `Server-Timing` header.

Operators (and bench/suite.py) see where an /exec spent its time (slot, claim, prime, run,
collect...) without a profiler; browsers' dev tools show the same header. Recording a phase
costs two clock reads; a request that records none gets only the whole-app figure.
"""

from __future__ import annotations

import contextvars
import time
from contextlib import contextmanager

_phases: contextvars.ContextVar[list | None] = contextvars.ContextVar("server_timing", default=None)


@contextmanager
def phase(name: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        phases = _phases.get()
        if phases is not None:
            phases.append((name, (time.perf_counter() - started) * 1000))


def phase_mark(name: str, ms: float) -> None:
    """A phase measured elsewhere (e.g. the program's own wall time)."""
    phases = _phases.get()
    if phases is not None:
        phases.append((name, ms))


class ServerTimingMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        phases: list = []
        token = _phases.set(phases)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        finally:
            _phases.reset(token)
        phases.append(("app", (time.perf_counter() - started) * 1000))
        response["Server-Timing"] = ", ".join(f"{name};dur={ms:.1f}" for name, ms in phases)
        return response
