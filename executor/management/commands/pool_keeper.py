"""Keeps SANDBOX_POOL warm sandboxes ready (started and stopped by gunicorn; see pool.py)."""

import logging
import os
import select
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from executor import pool

log = logging.getLogger("sandbox.pool")
ROUND_S = 0.5
DEADLINE_ROUND_S = 0.5  # how often overdue warm runs are looked for (their own thread)


class Command(BaseCommand):
    help = "Keep warm sandboxes ready until SIGTERM; remove them all on exit."

    def handle(self, *args, **options):
        pool.check_languages()
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        pool.clear_all(keep_taken=True)  # leftovers of a keeper that did not get to clean up
        log.info("pool keeper started", extra={"pool": settings.SANDBOX_POOL})
        threading.Thread(target=self.keep_deadlines, args=(stopping,), name="deadlines", daemon=True).start()
        wake = pool.wake_channel()
        last_round = float("-inf")  # when the last whole round began
        try:
            while not stopping:
                try:
                    if time.monotonic() - last_round >= ROUND_S:
                        last_round = time.monotonic()
                        pool.tend()
                    else:  # woken by a claim between rounds: replace what was taken, no more
                        pool.refill(forks_only=True)
                except Exception:
                    log.exception("pool round failed")
                    time.sleep(2)
                # The next round at ROUND_S, or sooner when a worker took a sandbox the
                # fork-server replaces at once (pool.wake_keeper).
                if select.select([wake], [], [], max(0.0, last_round + ROUND_S - time.monotonic()))[0]:
                    try:
                        os.read(wake, 4096)  # every wake-up that came meanwhile
                    except BlockingIOError:
                        pass
        finally:
            os.close(wake)
            removed = pool.clear_all(keep_taken=False)
            log.info("pool keeper stopped", extra={"removed": removed})

    def keep_deadlines(self, stopping: list) -> None:
        """A warm run must end at its deadline even when its worker died: separate from the
        rounds of tend(), which may spend a second starting a sandbox."""
        from django.db import close_old_connections

        while not stopping:
            try:
                pool.enforce_deadlines()
            except Exception:
                log.exception("deadline round failed")
            finally:
                close_old_connections()
            time.sleep(DEADLINE_ROUND_S)
