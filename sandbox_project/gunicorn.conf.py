"""gunicorn settings: gthread workers (a waiting /exec holds a thread, not a process), behind
the nginx front (sandbox_project/front.py) unless SANDBOX_FRONT=none. Started by
`python -m sandbox_project.serve`, whose master also supervises the front and the pool keeper."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandbox_project.settings")
django.setup()

from django.conf import settings  # noqa: E402

from sandbox_project import front  # noqa: E402

# With the front, the workers listen only on a unix socket that nginx alone can reach.
bind = f"unix:{front.app_socket()}" if front.enabled() else f"{settings.SANDBOX_HOST}:{settings.SANDBOX_PORT}"
worker_class = "gthread"
workers = settings.SANDBOX_WORKERS
threads = settings.SANDBOX_THREADS
# gthread heartbeats come from the worker's main loop, so a long /exec is not a "hung" worker.
timeout = 60
# SIGTERM drains first (sandbox_project/drain.py); workers that still hold requests then (no
# front, or it was cut off) get as long as the longest /exec to finish them.
graceful_timeout = max(30, front.request_timeout_s())
keepalive = 5
accesslog = None
logconfig_dict = settings.LOGGING


def post_worker_init(worker):
    from executor.housekeeping import start_background_reaper

    start_background_reaper()
    # The first engine check of a worker is the slow one (bwrap builds its seccomp filter,
    # docker opens its connection): done now, in the probe's own thread, not in a /health call.
    from sandbox_project.health import engine_health

    answer = engine_health()
    # What the sandboxes' walls are made of, once per worker (docs/SECURITY.md lists the
    # versions with known escapes): an operator sees it in the log without asking /health.
    worker.log.info("sandbox engine %s: %s", answer.get("engine", "?"), answer.get("components") or answer.get("error"))
    if "audit" in settings.DATABASES:
        from audit.writer import mongo_client

        # Loads the MongoDB backend (~1 s) and starts finding the servers now, not in the
        # first request that needs them.
        mongo_client("audit")


def on_starting(server):
    """In the master, before any worker: a fresh metrics folder (the numbers of a previous
    run are not this run's), and the MongoDB audit collection, its indexes and TTL index."""
    import shutil
    import subprocess
    import sys

    from sandbox_project import drain

    drain.clear()  # a flag a killed predecessor left must not keep this server out of the balancer
    metrics_dir = settings.SANDBOX_METRICS_DIR
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if front.enabled():
        server.front_command = front.prepare()  # before gunicorn binds the socket in its folder

    if "audit" in settings.DATABASES:
        # In a child process: the master never opens a MongoClient (it would be forked), and
        # a MongoDB that is down delays the start by a few seconds, never stops it.
        manage = settings.BASE_DIR / "manage.py"
        try:
            done = subprocess.run([sys.executable, str(manage), "migrate", "--database", "audit", "--noinput", "-v0"],
                                  capture_output=True, text=True, timeout=120)
            failed = done.returncode != 0 and done.stderr.strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            failed = ["timed out"]
        if failed:
            server.log.warning("audit store not migrated (events still go to the log): %s", failed[0][:300])


def worker_exit(server, worker):
    from audit.events import auth_failures
    from audit.writer import writer

    auth_failures.flush()  # summaries of refused credentials whose window is still open
    writer.flush(5.0)  # audit events still queued for the store


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def when_ready(server):
    """Starts the companions the master supervises (sandbox_project/companions.py): the front,
    and the warm-pool keeper (its own process: the master must stay lean and fork-safe)."""
    import signal

    from executor import pool
    from sandbox_project import companions

    if front.enabled():
        command = server.front_command
        companions.register(companions.Companion("front (nginx)", lambda: command, stop_signal=signal.SIGQUIT))
    if pool.active():
        # SIGTERM: the keeper removes every warm sandbox before it exits.
        companions.register(companions.Companion("pool keeper", companions.python_command("pool_keeper"), stop_wait_s=60))
    companions.start_all()


def on_exit(server):
    """Stops the companions: nginx finishes what it is sending, the keeper removes every warm
    sandbox, so nothing is left behind."""
    from sandbox_project import companions

    companions.stop_all()
