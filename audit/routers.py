"""Sends the audit app to the "audit" database alias (MongoDB) when one is configured.

Without MONGO_URI there is no "audit" alias and every decision falls through to the default
database. With it, AuditLog is read, written and migrated only there, and nothing else is
ever migrated into MongoDB.
"""

from django.conf import settings

AUDIT_ALIAS = "audit"
AUDIT_APP = "audit"


def audit_database() -> str:
    """The alias AuditLog lives in."""
    return AUDIT_ALIAS if AUDIT_ALIAS in settings.DATABASES else "default"


class AuditRouter:
    def _routes(self, app_label: str) -> bool:
        return app_label == AUDIT_APP and AUDIT_ALIAS in settings.DATABASES

    def db_for_read(self, model, **hints):
        return AUDIT_ALIAS if self._routes(model._meta.app_label) else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        # AuditLog has no relations; a relation across the two stores can never work.
        if AUDIT_ALIAS in settings.DATABASES and (obj1._meta.app_label == AUDIT_APP) != (obj2._meta.app_label == AUDIT_APP):
            return False
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if AUDIT_ALIAS not in settings.DATABASES:
            return None if db != AUDIT_ALIAS else False
        if db == AUDIT_ALIAS:
            return app_label == AUDIT_APP
        if app_label == AUDIT_APP:
            return False
        return None
