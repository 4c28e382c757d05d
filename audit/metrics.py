"""Prometheus metrics, all defined here, fed by audit.events.record and read at GET /metrics.

gunicorn runs several worker processes, so prometheus_client runs in multiprocess mode:
settings.py points PROMETHEUS_MULTIPROC_DIR at SANDBOX_DATA_DIR/metrics before this module is
imported, the gunicorn master empties that folder at start, and a scrape adds up every
worker's numbers (a dead worker's counters stay counted). Slot and queue gauges are read
from the slot table at scrape time, so they are right whichever worker answers.
"""

from __future__ import annotations

import logging
import os

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("sandbox.metrics")

OUTCOMES = ("ok", "error", "timeout", "oom")
CREDENTIALS = ("x-api-key", "bearer", "none")

EXECUTIONS = Counter(
    "sandbox_executions", "Code executions by language and outcome (ok, error, timeout, oom).", ["language", "outcome"]
)
EXECUTION_SECONDS = Histogram(
    "sandbox_execution_duration_seconds",
    "Wall time of an execution as the server saw it: work area, run, collecting outputs.",
    ["language"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
QUEUE_WAIT_SECONDS = Histogram(
    "sandbox_queue_wait_seconds",
    "Time an execution waited for a free slot.",
    buckets=(0.005, 0.05, 0.25, 1, 2.5, 5, 10, 30, 60),
)
UPLOADS = Counter("sandbox_uploads", "Files stored by /upload and /upload/batch.")
UPLOAD_BYTES = Counter("sandbox_upload_bytes", "Bytes stored by /upload and /upload/batch.")
DOWNLOADS = Counter("sandbox_downloads", "Files served by /download.")
DOWNLOAD_BYTES = Counter("sandbox_download_bytes", "Bytes served by /download.")
AUTH_FAILURES = Counter(
    "sandbox_auth_failures", "Requests refused for missing or wrong credentials, by what was presented.", ["credential"]
)
AUDIT_EVENTS = Counter("sandbox_audit_events", "Audit events recorded, by action and status.", ["action", "status"])
AUDIT_WRITE_FAILURES = Counter(
    "sandbox_audit_write_failures",
    "Audit entries that could not be stored (the JSON log line was still written).",
    ["store"],
)
for _credential in CREDENTIALS:
    AUTH_FAILURES.labels(credential=_credential)
for _store in ("default", "mongodb"):
    AUDIT_WRITE_FAILURES.labels(store=_store)


def exec_outcome(status: str, execution: dict) -> str:
    if execution.get("oomKilled"):
        return "oom"
    if execution.get("timedOut"):
        return "timeout"
    if status != "success" or execution.get("exitCode") != 0:
        return "error"  # the program failed, or the sandbox could not run it (status error)
    return "ok"


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def observe(event: dict) -> None:
    """Counts one audit event (see audit.events.record for its fields)."""
    action, status = event["action"], event["status"]
    AUDIT_EVENTS.labels(action=action, status=status).inc()
    if action == "exec":
        execution = event.get("execution") or {}
        language = str(execution.get("lang") or "unknown")[:32]
        EXECUTIONS.labels(language=language, outcome=exec_outcome(status, execution)).inc()
        duration = _number(execution.get("durationMs"))
        if duration is not None:
            EXECUTION_SECONDS.labels(language=language).observe(duration / 1000)
        queued = _number((event.get("details") or {}).get("queueMs"))
        if queued is not None:
            QUEUE_WAIT_SECONDS.observe(queued / 1000)
    elif action in ("upload", "batch_upload", "download") and status == "success":
        size = _number((event.get("file") or {}).get("size")) or 0
        count, volume = (DOWNLOADS, DOWNLOAD_BYTES) if action == "download" else (UPLOADS, UPLOAD_BYTES)
        count.inc()
        volume.inc(size)



def auth_failure(credential: str) -> None:
    """One refused credential (counted here each time; its audit entries are aggregated)."""
    AUTH_FAILURES.labels(credential=credential if credential in CREDENTIALS else "none").inc()


def audit_write_failed(store: str, count: int = 1) -> None:
    AUDIT_WRITE_FAILURES.labels(store=store).inc(count)


class SlotCollector:
    """Slots in use, slots in all and the queue depth, read from the slot table."""

    def collect(self):
        from django.conf import settings
        from django.db.models import Q
        from django.utils import timezone

        from executor.models import SlotWaiter
        from executor.slots import host, mine

        now = timezone.now()
        total = settings.SANDBOX_MAX_CONCURRENT_EXECUTIONS
        try:
            # A slot is held while its holder is set and its lease runs (executor.slots).
            in_use = mine().filter(~Q(holder=""), leased_until__gte=now, number__lte=total).count()
            queued = SlotWaiter.objects.filter(host=host(), waiting_until__gt=now).count()
        except Exception as error:  # the database is down: /health says so; still serve the rest
            log.warning("slot metrics unavailable", extra={"error": str(error)[:200]})
            return
        yield GaugeMetricFamily("sandbox_slots_in_use", "Execution slots leased right now.", value=in_use)
        yield GaugeMetricFamily("sandbox_slots_total", "Execution slots (SANDBOX_MAX_CONCURRENT_EXECUTIONS).", value=total)
        yield GaugeMetricFamily("sandbox_queue_depth", "Executions waiting for a slot.", value=queued)


def registry_for_scrape() -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY  # a single process (e.g. a management command)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


@csrf_exempt  # nothing to forge: GET only
def metrics_view(request):
    """GET /metrics in the Prometheus text format. It holds counts only (no ids, names or
    contents): open by default, like /health (keep both off the public network), or, with
    SANDBOX_METRICS_REQUIRE_KEY=true, only for the API key (X-API-Key or Authorization:
    Bearer, as Prometheus' `authorization` block sends it)."""
    from django.conf import settings
    from django.http import JsonResponse

    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"error": "method_not_allowed", "message": "GET /metrics only"}, status=405)
    if settings.SANDBOX_METRICS_REQUIRE_KEY and not _presents_the_key(request):
        from audit.events import record_auth_failure

        record_auth_failure(request, "x-api-key" if request.headers.get("X-API-Key") else
                            "bearer" if request.headers.get("Authorization") else "none")
        return JsonResponse({"error": "unauthorized", "message": "GET /metrics needs the API key on this server"}, status=401)
    registry = registry_for_scrape()
    body = generate_latest(registry)
    body += generate_latest(_slot_registry())
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def _presents_the_key(request) -> bool:
    from sandbox_project.auth import key_matches

    header = request.headers.get("Authorization", "").strip()
    bearer = header[7:].strip() if header[:7].lower() == "bearer " else ""
    return any(key_matches(value) for value in (request.headers.get("X-API-Key", "").strip(), bearer) if value)


def _slot_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(SlotCollector())
    return registry
