"""The audit trail in the Django admin: read-only, newest first, filterable and searchable,
with the execution and file blocks of an entry shown as small tables."""

from __future__ import annotations

import json
from datetime import UTC

from django.contrib import admin
from django.utils.html import format_html, format_html_join

from .models import AuditLog

EXECUTION_ROWS = [
    ("lang", "Language"),
    ("durationMs", "Duration (ms)"),
    ("exitCode", "Exit code"),
    ("memoryMB", "Peak memory (MB)"),
    ("cpuMs", "CPU time (ms)"),
    ("filesGenerated", "Files generated"),
    ("timedOut", "Timed out"),
    ("oomKilled", "Killed: out of memory"),
]
FILE_ROWS = [("fileId", "File id"), ("filename", "File name"), ("size", "Size"), ("mimeType", "MIME type")]


def human_size(value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "" if value is None else str(value)
    size, unit = float(value), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{int(value)} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({int(value)} bytes)"


def precise_time(moment) -> str:
    """UTC to the millisecond: the admin's default format drops the seconds."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def key_value_table(block: dict | None, rows: list[tuple[str, str]], formatters: dict | None = None):
    if not block:
        return "—"
    formatters = formatters or {}
    known = [(label, formatters.get(key, str)(block[key])) for key, label in rows if block.get(key) is not None]
    extra = [(key, json.dumps(value)) for key, value in block.items() if key not in dict(rows)]
    body = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>', known + extra)
    return format_html('<table class="audit-block">{}</table>', body)


class ReadOnly:
    """Admin mix-in: browse only. Records change through the API and expiry, never by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("when", "action", "status", "user_id", "session_id", "summary", "ip")
    list_filter = ("action", "status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("user_id", "session_id", "file__filename", "ip")
    search_help_text = "Search by userId, sessionId, file name or IP address."
    ordering = ("-created_at", "-id")
    list_per_page = 100
    show_full_result_count = False  # no second COUNT over a large audit table per page
    fieldsets = (
        ("Event", {"fields": ("when", "updated", "action", "status", "error")}),
        ("Caller", {"fields": ("user_id", "session_id", "ip", "user_agent")}),
        ("Execution", {"fields": ("execution_block",)}),
        ("File", {"fields": ("file_block",)}),
        ("Details", {"fields": ("details_block",)}),
    )
    readonly_fields = (
        "when", "updated", "action", "status", "error", "user_id", "session_id", "ip", "user_agent",
        "execution_block", "file_block", "details_block",
    )

    # Read-only (ReadOnly): an audit trail that the admin could edit would prove nothing.

    @admin.display(description="createdAt", ordering="created_at")
    def when(self, entry: AuditLog) -> str:
        return precise_time(entry.created_at)

    @admin.display(description="updatedAt")
    def updated(self, entry: AuditLog) -> str:
        return precise_time(entry.updated_at)

    @admin.display(description="summary")
    def summary(self, entry: AuditLog) -> str:
        if entry.execution:
            ex = entry.execution
            parts = [str(ex.get("lang") or "?")]
            if ex.get("exitCode") is not None:
                parts.append(f"exit {ex['exitCode']}")
            if ex.get("durationMs") is not None:
                parts.append(f"{ex['durationMs']} ms")
            if ex.get("timedOut"):
                parts.append("timed out")
            if ex.get("oomKilled"):
                parts.append("out of memory")
            return ", ".join(parts)
        if entry.file:
            return f"{entry.file.get('filename', '')} ({human_size(entry.file.get('size'))})"
        return entry.error or ""

    @admin.display(description="execution")
    def execution_block(self, entry: AuditLog):
        return key_value_table(entry.execution, EXECUTION_ROWS)

    @admin.display(description="file")
    def file_block(self, entry: AuditLog):
        return key_value_table(entry.file, FILE_ROWS, {"size": human_size})

    @admin.display(description="details")
    def details_block(self, entry: AuditLog):
        if not entry.details:
            return "—"
        return format_html("<pre>{}</pre>", json.dumps(entry.details, indent=2, sort_keys=True, ensure_ascii=False))
