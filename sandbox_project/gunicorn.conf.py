"""gunicorn settings: gthread workers (a waiting /exec holds a thread, not a process)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandbox_project.settings")
django.setup()

from django.conf import settings  # noqa: E402

bind = f"{settings.SANDBOX_HOST}:{settings.SANDBOX_PORT}"
worker_class = "gthread"
workers = settings.SANDBOX_WORKERS
threads = settings.SANDBOX_THREADS
# gthread heartbeats come from the worker's main loop, so a long /exec is not a "hung" worker.
timeout = 60
graceful_timeout = 30
keepalive = 5
accesslog = None
logconfig_dict = settings.LOGGING


def post_worker_init(worker):
    from executor.housekeeping import start_background_reaper

    start_background_reaper()
