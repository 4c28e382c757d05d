"""GET /health: is the server able to run code right now? Never needs credentials."""

from django.db import connection
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.response import Response

from .probes import BackgroundProbe
from .timing import phase


def _ask_engine() -> dict:
    from executor.backends import get_backend

    return get_backend().health()


# dockerd answers a ping in ~2 ms when idle but 50-150 ms while it starts containers for a
# burst of runs; /health serves the last answer (at most a second old, or up to 5 s while a
# refresh is under way) instead of queueing behind that work.
engine_health = BackgroundProbe(_ask_engine, refresh_after_s=1.0, trust_for_s=5.0, wait_s=1.0)


def _ask_file_store() -> dict:
    from storage.backends import current

    return current().health()


# The object store (a HEAD of the bucket over the network) is asked the same way.
file_store_health = BackgroundProbe(_ask_file_store, refresh_after_s=2.0, trust_for_s=10.0, wait_s=1.0)


def draining_flag():
    """The file the server's master makes when it received SIGTERM (sandbox_project/serve.py):
    from then on /health answers 503 "draining", so a load balancer sends nothing new here while
    the running requests finish."""
    from django.conf import settings

    return settings.SANDBOX_DATA_DIR / "draining"


def draining() -> bool:
    return draining_flag().exists()


def database_ok() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as error:
        return {"ok": False, "error": str(error)[:200]}


def audit_store() -> dict:
    try:
        from audit.writer import store_health

        return store_health()
    except Exception as error:
        return {"ok": False, "error": str(error)[:200]}


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def health(request):
    from django.conf import settings

    from executor import slots

    if draining():
        return Response({"status": "draining"}, status=503, headers={"Retry-After": "5"})
    with phase("database"):
        database = database_ok()
    with phase("engine"):
        engine = engine_health()
    body = {"status": "ok" if database["ok"] and engine["ok"] else "degraded", "database": database, "engine": engine}
    # Reported, never a reason for "degraded": without its store the audit trail still goes to
    # the log lines, and every request still succeeds.
    with phase("audit"):
        body["audit"] = audit_store()
    # Reported too: without the file store uploads, downloads and executions with files fail
    # (503), but code without files still runs; every replica shares the store, so taking them
    # all out of the balancer for it would only turn those calls into failures as well.
    with phase("storage"):
        body["storage"] = file_store_health()
    if database["ok"]:
        with phase("slots"):
            slots.ensure_slots()  # the rows are made on first use; a fresh server has them all free
            body["slots"] = {"total": settings.SANDBOX_MAX_CONCURRENT_EXECUTIONS, "free": slots.free_slots(),
                             "queue": slots.queue_depth(), "max_queue": settings.SANDBOX_MAX_QUEUE}
    return Response(body, status=200 if body["status"] == "ok" else 503)


@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def alive(request):
    """GET /health/live: the process answers (a liveness probe). Neither a database outage
    nor draining makes it fail: restarting the replica would cure neither."""
    return Response({"status": "draining" if draining() else "alive"})
