"""Leasing execution slots from the slot table (see models.py): this server's rows only."""

from __future__ import annotations

import math
import random
import secrets
import time
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.utils import timezone

from sandbox_project.errors import ApiError
from sandbox_project.timing import phase

from .models import ExecutionSlot, SlotWaiter

POLL_S = (0.02, 0.25)  # first and largest pause between attempts
# A server whose rows were not seen for this long is gone (its heartbeat is every
# housekeeping round, 15 s): cleanup_sessions removes them. Its leases expired long before.
GONE_AFTER_S = 3600
_synced_for: int | None = None


def host() -> str:
    """This server's name in the slot table: the same instance name its warm pool has
    (host name and storage path), so replicas on one machine are told apart too."""
    from .pool import instance

    return instance()


def mine():
    return ExecutionSlot.objects.filter(host=host())


def ensure_slots() -> None:
    """Makes the table hold exactly SANDBOX_MAX_CONCURRENT_EXECUTIONS rows of this server
    (once per process, and again when the heartbeat finds rows missing)."""
    global _synced_for
    wanted = settings.SANDBOX_MAX_CONCURRENT_EXECUTIONS
    if _synced_for == wanted:
        return
    now = timezone.now()
    ExecutionSlot.objects.bulk_create([ExecutionSlot(host=host(), number=n, seen_at=now) for n in range(1, wanted + 1)],
                                      ignore_conflicts=True)
    mine().filter(number__gt=wanted).delete()
    _synced_for = wanted


def heartbeat() -> None:
    """Says this server is alive (housekeeping, every round) and remakes rows that are gone
    (cleanup_sessions on another server took it for dead while this one was stopped)."""
    global _synced_for
    if mine().update(seen_at=timezone.now()) < settings.SANDBOX_MAX_CONCURRENT_EXECUTIONS:
        _synced_for = None
        ensure_slots()


def forget_gone_hosts() -> int:
    """Removes the rows of servers not seen for GONE_AFTER_S (replicas replaced for good: a
    Kubernetes pod gets a new name each time). Returns the number of rows removed."""
    cutoff = timezone.now() - timedelta(seconds=GONE_AFTER_S)
    stale = ExecutionSlot.objects.exclude(host=host()).filter(Q(seen_at__lt=cutoff) | Q(seen_at__isnull=True))
    stale = stale.filter(_free_now(cutoff))
    return stale.delete()[0]


def _free_now(now):
    return Q(holder="") | Q(leased_until__lt=now)


def try_acquire(token: str, lease_s: float) -> int | None:
    now = timezone.now()
    candidates = list(mine().filter(_free_now(now)).values_list("number", flat=True))
    random.shuffle(candidates)  # workers racing for the same row would all retry together
    for number in candidates:
        taken = mine().filter(_free_now(now), number=number).update(
            holder=token, leased_at=now, leased_until=now + timedelta(seconds=lease_s)
        )
        if taken:
            return number
    return None


def release(number: int, token: str) -> None:
    mine().filter(number=number, holder=token).update(holder="", leased_at=None, leased_until=None,
                                                      released_at=timezone.now())


def last_activity():
    """(latest start of a run still holding its slot, latest end of a run) on this server; None
    where there is none. A lease that ran out without a release (a killed worker) keeps its
    start until the row is leased again."""
    marks = mine().aggregate(started=Max("leased_at"), ended=Max("released_at"))
    return marks["started"], marks["ended"]


def queue_depth() -> int:
    return SlotWaiter.objects.filter(host=host(), waiting_until__gt=timezone.now()).count()


def free_slots() -> int:
    return mine().filter(_free_now(timezone.now())).count()


def rate_limited(reason: str) -> ApiError:
    # A slot frees within about one typical run; suggest a short, bounded pause.
    retry = max(1, min(60, math.ceil(settings.SANDBOX_QUEUE_TIMEOUT_MS / 1000 / 4) or 1))
    return ApiError(
        429,
        "rate_limited",
        f"Too many code executions at once ({reason}). Please retry in {retry} seconds.",
        headers={"Retry-After": str(retry)},
        retry_after_seconds=retry,
    )


def acquire(token: str, lease_s: float) -> tuple[int, int]:
    """(slot number, ms waited) for `token`: waits up to SANDBOX_QUEUE_TIMEOUT_MS, else 429.
    The caller releases it (release(number, token)), or the lease runs out."""
    with phase("slot"):
        ensure_slots()
        waited_from = time.monotonic()
        number = try_acquire(token, lease_s)
        if number is None:
            number = _wait_for_slot(token, lease_s)
    return number, int((time.monotonic() - waited_from) * 1000)


def held_with_prefix(prefix: str) -> int:
    """Slots leased now by holders whose token starts with `prefix` (programmatic runs)."""
    return mine().filter(holder__startswith=prefix, leased_until__gte=timezone.now()).count()


@contextmanager
def lease(lease_s: float):
    """Holds one slot for the block; waits up to SANDBOX_QUEUE_TIMEOUT_MS, else 429."""
    token = secrets.token_hex(16)
    number, queue_ms = acquire(token, lease_s)
    try:
        yield {"slot": number, "queue_ms": queue_ms}
    finally:
        with phase("release"):
            release(number, token)


def _wait_for_slot(token: str, lease_s: float) -> int:
    queue_s = settings.SANDBOX_QUEUE_TIMEOUT_MS / 1000
    if queue_s <= 0 or queue_depth() >= settings.SANDBOX_MAX_QUEUE:
        raise rate_limited("the queue is full")
    give_up = time.monotonic() + queue_s
    SlotWaiter.objects.create(token=token, host=host(), waiting_until=timezone.now() + timedelta(seconds=queue_s + 5))
    pause = POLL_S[0]
    try:
        while time.monotonic() < give_up:
            time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
            number = try_acquire(token, lease_s)
            if number is not None:
                return number
            pause = min(POLL_S[1], pause * 1.5)
        raise rate_limited("no slot became free in time")
    finally:
        SlotWaiter.objects.filter(token=token).delete()
