"""Sessions and stored files, browsable in the admin (read-only: files are removed by expiry,
DELETE /files/... or `manage.py cleanup_sessions`, which also remove the bytes on disk)."""

from django.contrib import admin
from django.db.models import Count

from audit.admin import ReadOnly, human_size

from .models import Session, StoredFile


class ReadOnlyAdmin(ReadOnly, admin.ModelAdmin):
    pass


class StoredFileInline(ReadOnly, admin.TabularInline):
    model = StoredFile
    fk_name = "session"
    fields = ("id", "name", "size_text", "content_type", "read_only", "created_at")
    readonly_fields = fields
    show_change_link = True
    extra = 0


    @admin.display(description="size")
    def size_text(self, stored):
        return human_size(stored.size)


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = ("id", "user_id", "origin", "kind", "file_count", "created_at", "expires_at")
    list_filter = ("origin", "kind", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "user_id", "resource_id", "entity_id")
    ordering = ("-created_at",)
    inlines = (StoredFileInline,)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(file_count=Count("files"))

    @admin.display(description="files", ordering="file_count")
    def file_count(self, session):
        return session.file_count


@admin.register(StoredFile)
class StoredFileAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "session", "size_text", "content_type", "read_only", "created_at", "expires_at")
    list_filter = ("read_only", "session__origin", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "name", "session__id", "session__user_id", "sha256")
    list_select_related = ("session",)
    ordering = ("-created_at",)

    @admin.display(description="size", ordering="size")
    def size_text(self, stored):
        return human_size(stored.size)
