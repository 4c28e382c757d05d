"""The concurrency slot table: one row per execution slot, shared by every worker process.

A slot is leased atomically (a conditional UPDATE) with an expiry, so a worker that dies
mid-execution gives its slot back when the lease runs out. Waiting requests are rows too,
which is how every worker sees the same queue depth. With several servers on one database
(PostgreSQL) every row belongs to one server: slots and queue are per server.
"""

from django.db import models


class ExecutionSlot(models.Model):
    """Slot `number` of server `host` (executor.pool.instance()): each server has its own
    SANDBOX_MAX_CONCURRENT_EXECUTIONS rows, since its capacity is its own machine's, and a
    request leases on the server that runs it. `seen_at` is the server's heartbeat (every
    housekeeping round); rows of a server gone for good are removed by cleanup_sessions.
    `released_at` is when the row's last lease ended: with `leased_at` it tells the warm-pool
    keeper how recently executions started or ended (executor.slots.last_activity)."""

    host = models.CharField(max_length=64, default="", db_index=True)
    number = models.PositiveIntegerField()
    holder = models.CharField(max_length=64, blank=True, default="")
    leased_at = models.DateTimeField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "number"]
        constraints = [models.UniqueConstraint(fields=["host", "number"], name="one_row_per_slot_of_a_host")]

    def __str__(self):
        return f"slot {self.number} of {self.host}"


class SlotWaiter(models.Model):
    token = models.CharField(max_length=64, primary_key=True)
    host = models.CharField(max_length=64, default="", db_index=True)
    waiting_until = models.DateTimeField(db_index=True)


class WarmSandbox(models.Model):
    """A sandbox started ahead of time (executor/pool.py), waiting for one execution.

    A sandbox is `starting` until its runner says it is ready (imports done, waiting);
    `ready` rows may be claimed by any worker with a conditional UPDATE to `taken`; a taken
    sandbox serves exactly one execution and is destroyed afterwards, never reused.
    """

    STATES = [("starting", "starting"), ("ready", "ready"), ("taken", "taken"), ("retired", "retired")]

    name = models.CharField(max_length=21, primary_key=True)
    container_id = models.CharField(max_length=64)
    language = models.CharField(max_length=16, db_index=True)
    instance = models.CharField(max_length=16, db_index=True, default="")  # the server it belongs to
    owner = models.PositiveIntegerField(default=0)  # its host uid (executor/backends/base.py: pool_uid)
    state = models.CharField(max_length=8, choices=STATES, default="starting", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Set with the claim: when the program must be over. The keeper kills a taken sandbox past
    # it, whether or not the worker that claimed it is still there.
    deadline = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.language} {self.name} ({self.state})"
