"""A programmatic run (POST /exec/programmatic): a program that calls the client's tools, alive
in its sandbox between the HTTP requests that carry its tool calls out and their results in.
Any worker may serve the next request, so everything it needs is here and in the work area."""

from django.db import models

from storage.models import Session


class ProgrammaticRun(models.Model):
    STATES = [("running", "running"), ("waiting", "waiting for tool results"), ("ending", "ending")]

    id = models.CharField(max_length=21, primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="+")  # holds the outputs
    owner = models.CharField(max_length=300, db_index=True)  # auth method and user: who may continue or cancel
    user_id = models.CharField(max_length=255, blank=True, default="")
    lang = models.CharField(max_length=8)
    state = models.CharField(max_length=8, choices=STATES, default="running", db_index=True)
    handle = models.CharField(max_length=128, blank=True, default="")  # the backend's standing sandbox
    # The server whose sandbox and work area this is (executor.slots.host()): only it may
    # continue, cancel or reap the run; its sandbox is not reachable from another replica.
    host = models.CharField(max_length=300, blank=True, default="", db_index=True)
    area = models.CharField(max_length=1024)  # the work area (tmpfs), relative to SANDBOX_STORAGE_PATH
    owner_uid = models.PositiveIntegerField(default=0)
    slot = models.PositiveIntegerField(default=0)
    slot_token = models.CharField(max_length=64, blank=True, default="")
    token_hash = models.CharField(max_length=64, blank=True, default="", db_index=True)  # sha256 of the live token
    pending = models.JSONField(default=list)  # ids of the tool calls awaiting results
    tool_names = models.JSONField(default=list)
    inputs = models.JSONField(default=dict)  # name under /mnt/data -> input file id
    round_trips = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    timeout_ms = models.PositiveIntegerField()
    deadline = models.DateTimeField(db_index=True)  # the whole run
    step_deadline = models.DateTimeField(db_index=True)  # the program's current step, or the client's answer
    cancelled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"programmatic {self.id} ({self.state})"


class ProgrammaticRequest(models.Model):
    """An X-LibreChat-Code-Request-ID seen on a run's requests: what a cancel names."""

    request_id = models.CharField(max_length=128, primary_key=True)
    run = models.ForeignKey(ProgrammaticRun, on_delete=models.CASCADE, related_name="requests")
    owner = models.CharField(max_length=300)
