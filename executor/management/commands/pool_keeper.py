"""Keeps SANDBOX_POOL warm sandboxes ready (started and stopped by gunicorn; see pool.py)."""

import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from executor import pool

log = logging.getLogger("sandbox.pool")
ROUND_S = 0.5


class Command(BaseCommand):
    help = "Keep warm sandboxes ready until SIGTERM; remove them all on exit."

    def handle(self, *args, **options):
        pool.check_languages()
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        pool.clear_all()  # leftovers of a keeper that did not get to clean up
        log.info("pool keeper started", extra={"pool": settings.SANDBOX_POOL})
        try:
            while not stopping:
                try:
                    pool.tend()
                except Exception:
                    log.exception("pool round failed")
                    time.sleep(2)
                time.sleep(ROUND_S)
        finally:
            removed = pool.clear_all()
            log.info("pool keeper stopped", extra={"removed": removed})
