"""Stateful workspaces: the files of /mnt/data kept between executions that carry the same
`runtime_session_hint` for the same user (SANDBOX_STATEFUL=true). Only files persist, never a
process: each execution is still a fresh sandbox, primed with the workspace's files."""

from django.db import models


class RuntimeSession(models.Model):
    # "rt_" + 40 hex of sha256(user \0 hint): the same hint of another user is another workspace.
    id = models.CharField(max_length=43, primary_key=True)
    user_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    hint = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(db_index=True)  # idle limit: SANDBOX_RUNTIME_SESSION_IDLE_S
    # One execution at a time: a lease, like the slot table's (a dead worker's runs out).
    holder = models.CharField(max_length=64, blank=True, default="")
    held_until = models.DateTimeField(null=True, blank=True)
    files = models.PositiveIntegerField(default=0)
    size = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-last_used_at"]

    def __str__(self):
        return f"{self.id} ({self.user_id or 'anonymous'})"
