"""The audit trail: one row (or MongoDB document) per audited request.

Field names in the database are the seed's (camelCase: userId, sessionId, createdAt, ...), so
a `sandbox_audit_logs` collection written by this server reads like one written by the seed;
Python attributes are snake_case. The primary key is a string (an ObjectId's hex: unique
across processes and ordered by time), which both SQL and MongoDB store as they are.
"""

from bson import ObjectId
from django.db import models
from django.utils import timezone

ACTIONS = ("upload", "batch_upload", "exec", "programmatic", "download", "files_list", "delete", "auth_failure")
STATUSES = ("success", "error", "denied")
COLLECTION = "sandbox_audit_logs"


def new_audit_id() -> str:
    return str(ObjectId())


class AuditLog(models.Model):
    id = models.CharField(primary_key=True, max_length=24, default=new_audit_id, editable=False)
    action = models.CharField(max_length=16, choices=[(a, a) for a in ACTIONS])
    user_id = models.CharField("userId", max_length=255, null=True, blank=True, db_column="userId")
    session_id = models.CharField("sessionId", max_length=255, null=True, blank=True, db_column="sessionId")
    status = models.CharField(max_length=8, choices=[(s, s) for s in STATUSES])
    ip = models.CharField("IP", max_length=64, blank=True, default="")
    user_agent = models.CharField("userAgent", max_length=512, blank=True, default="", db_column="userAgent")
    details = models.JSONField(default=dict, blank=True)
    # lang, durationMs, exitCode, memoryMB, filesGenerated, timedOut, oomKilled, cpuMs
    execution = models.JSONField(null=True, blank=True)
    # fileId, filename, size, mimeType
    file = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    # The moment of the event (set by audit.events.record), not of the write.
    created_at = models.DateTimeField("createdAt", default=timezone.now, db_column="createdAt")
    updated_at = models.DateTimeField("updatedAt", auto_now=True, db_column="updatedAt")

    class Meta:
        db_table = COLLECTION
        ordering = ["-created_at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        indexes = [
            # Descending: the admin lists newest first. (MongoDB's TTL index is a separate
            # ascending one on the same field, see audit.ttl.)
            models.Index(fields=["-created_at"], name="audit_created_idx"),
            models.Index(fields=["action"], name="audit_action_idx"),
            models.Index(fields=["user_id"], name="audit_user_idx"),
            models.Index(fields=["session_id"], name="audit_session_idx"),
        ]

    def __str__(self):
        return f"{self.action} {self.status} {self.created_at:%Y-%m-%d %H:%M:%S}"
