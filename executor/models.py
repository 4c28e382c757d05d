"""The concurrency slot table: one row per execution slot, shared by every worker process.

A slot is leased atomically (a conditional UPDATE) with an expiry, so a worker that dies
mid-execution gives its slot back when the lease runs out. Waiting requests are rows too,
which is how every worker sees the same queue depth.
"""

from django.db import models


class ExecutionSlot(models.Model):
    number = models.PositiveIntegerField(primary_key=True)
    holder = models.CharField(max_length=64, blank=True, default="")
    leased_at = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["number"]

    def __str__(self):
        return f"slot {self.number}"


class SlotWaiter(models.Model):
    token = models.CharField(max_length=64, primary_key=True)
    waiting_until = models.DateTimeField(db_index=True)
