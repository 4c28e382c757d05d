"""What the gunicorn master does between SIGTERM and stopping its workers (serve.py).

The order matters. The front stops accepting before the workers stop, so a request that got
in is always answered: gunicorn alone would close the workers' socket first and nginx would
answer the requests still arriving with 502s. Before either, /health says "draining" for
SANDBOX_DRAIN_DELAY_S, the time a load balancer (or a Kubernetes Service) needs to stop
sending new requests here.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

log = logging.getLogger("sandbox.drain")
ROUND_S = 0.2


def mark() -> None:
    from .health import draining_flag

    draining_flag().write_text(f"{time.time():.0f}\n")


def clear() -> None:
    from .health import draining_flag

    draining_flag().unlink(missing_ok=True)


def longest_request_s() -> float:
    from . import front

    return float(front.request_timeout_s())


def drain(arbiter) -> None:
    from . import companions

    started = time.monotonic()
    mark()
    log.warning("SIGTERM: draining (health says so for %s s, then the front stops accepting)", settings.SANDBOX_DRAIN_DELAY_S)
    _wait(arbiter, settings.SANDBOX_DRAIN_DELAY_S, lambda: False)
    front = companions.find("front (nginx)")
    if front is not None and front.running():
        front.hold()  # not started again by tend() once it has exited
        front.signal(front.stop_signal)  # SIGQUIT: stop listening, finish what is in flight
        _wait(arbiter, longest_request_s(), lambda: not front.running())
        if front.running():
            log.error("the front did not finish its requests in time; stopping it")
            front.stop()
    log.warning("drained in %.1f s; stopping the workers", time.monotonic() - started)


def _wait(arbiter, seconds: float, done) -> None:
    """Waits up to `seconds` for done(), reaping exited children meanwhile (the master's own
    loop is not running while it drains)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        arbiter.reap_workers()
        time.sleep(ROUND_S)
