from django.contrib import admin

from audit.admin import ReadOnly

from .models import RuntimeSession


@admin.register(RuntimeSession)
class RuntimeSessionAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("id", "user_id", "files", "size", "created_at", "last_used_at", "expires_at", "holder")
    search_fields = ("id", "user_id", "hint")
    ordering = ("-last_used_at",)
