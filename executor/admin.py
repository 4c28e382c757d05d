"""The execution slot table in the admin, read-only: what is running right now."""

from django.contrib import admin
from django.utils import timezone

from audit.admin import ReadOnly

from .models import ExecutionSlot


@admin.register(ExecutionSlot)
class ExecutionSlotAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("host", "number", "in_use", "holder", "leased_at", "leased_until", "released_at", "seen_at")
    readonly_fields = ("host", "number", "holder", "leased_at", "leased_until", "released_at", "seen_at")
    list_filter = ("host",)
    ordering = ("host", "number")

    @admin.display(boolean=True, description="in use")
    def in_use(self, slot):
        return bool(slot.holder) and slot.leased_until is not None and slot.leased_until >= timezone.now()
