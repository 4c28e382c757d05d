"""Sessions and the files they hold. Bytes live on disk; these rows make every lookup by
session id or file id one indexed query."""

from django.db import models


class Session(models.Model):
    """A storage session: one upload request, one batch upload, or one execution's outputs."""

    ORIGINS = [("upload", "upload"), ("batch", "batch upload"), ("exec", "execution")]
    KINDS = [("user", "user"), ("agent", "agent"), ("skill", "skill")]

    id = models.CharField(max_length=21, primary_key=True)
    user_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    origin = models.CharField(max_length=8, choices=ORIGINS)
    kind = models.CharField(max_length=8, choices=KINDS, default="user")
    resource_id = models.CharField(max_length=255, blank=True, default="")
    version = models.CharField(max_length=32, blank=True, default="")
    entity_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.origin} {self.id}"


class StoredFile(models.Model):
    id = models.CharField(max_length=21, primary_key=True)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="files")
    name = models.CharField(max_length=512)  # relative path under /mnt/data
    path = models.CharField(max_length=1024)  # relative to SANDBOX_STORAGE_PATH
    size = models.BigIntegerField()
    content_type = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    read_only = models.BooleanField(default=False)
    modified_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.name} ({self.id})"
