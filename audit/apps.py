from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        from .ttl import ensure_ttl_after_migrate

        # Runs after every `migrate`; acts only for the MongoDB audit alias (the TTL index).
        post_migrate.connect(ensure_ttl_after_migrate, sender=self, dispatch_uid="audit_ttl_index")
