"""Forgetting old audit entries after SANDBOX_AUDIT_TTL_DAYS (0 = keep them).

MongoDB expires documents itself through a TTL index on createdAt, made or adjusted when
`migrate --database audit` runs (the server runs it at start). Changing the number of days
changes the index in place (collMod); 0 drops it. SQL databases have no such thing:
`manage.py cleanup_sessions` deletes the expired rows.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone

from .models import COLLECTION, AuditLog
from .routers import audit_database

log = logging.getLogger("sandbox.audit.store")
TTL_INDEX_NAME = "createdAt_ttl"
TTL_FIELD = "createdAt"


def ttl_seconds(days: int | None = None) -> int:
    days = settings.SANDBOX_AUDIT_TTL_DAYS if days is None else days
    return max(0, days) * 86400


def ttl_index_spec(days: int | None = None) -> dict | None:
    """The MongoDB TTL index the settings ask for, or None to keep entries forever."""
    seconds = ttl_seconds(days)
    if not seconds:
        return None
    # Ascending, unlike the model's descending createdAt index: MongoDB refuses two indexes
    # with the same key pattern and different options.
    return {"keys": [(TTL_FIELD, 1)], "name": TTL_INDEX_NAME, "expireAfterSeconds": seconds}


def ensure_ttl_index(collection, days: int | None = None) -> str:
    """Makes a pymongo collection's TTL index match the settings; says what it did."""
    spec = ttl_index_spec(days)
    current = next((ix for ix in collection.list_indexes() if ix.get("name") == TTL_INDEX_NAME), None)
    if spec is None:
        if current is None:
            return "none"
        collection.drop_index(TTL_INDEX_NAME)
        return "dropped"
    if current is None:
        collection.create_index(spec["keys"], name=spec["name"], expireAfterSeconds=spec["expireAfterSeconds"])
        return "created"
    if current.get("expireAfterSeconds") != spec["expireAfterSeconds"]:
        collection.database.command(
            "collMod", collection.name, index={"name": TTL_INDEX_NAME, "expireAfterSeconds": spec["expireAfterSeconds"]}
        )
        return "updated"
    return "unchanged"


def is_mongodb(alias: str) -> bool:
    return connections[alias].vendor == "mongodb"


def ensure_ttl_after_migrate(sender=None, using=None, **kwargs) -> None:
    """post_migrate: the TTL index of the MongoDB collection (nothing to do for SQL)."""
    alias = audit_database()
    if using != alias or not is_mongodb(alias):
        return
    done = ensure_ttl_index(connections[alias].get_collection(COLLECTION))
    log.info("audit TTL index", extra={"ttlIndex": done, "ttlDays": settings.SANDBOX_AUDIT_TTL_DAYS})


def delete_expired_rows(now=None) -> int:
    """SQL only: deletes entries older than the TTL; returns how many (0 when keeping)."""
    alias = audit_database()
    seconds = ttl_seconds()
    if not seconds or is_mongodb(alias):
        return 0
    cutoff = (now or timezone.now()) - timedelta(seconds=seconds)
    deleted, _ = AuditLog.objects.using(alias).filter(created_at__lt=cutoff).delete()
    return deleted
