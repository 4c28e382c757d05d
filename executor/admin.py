"""The execution slot table in the admin, read-only: what is running right now."""

from django.contrib import admin
from django.utils import timezone

from .models import ExecutionSlot


@admin.register(ExecutionSlot)
class ExecutionSlotAdmin(admin.ModelAdmin):
    list_display = ("number", "in_use", "holder", "leased_at", "leased_until")
    readonly_fields = ("number", "holder", "leased_at", "leased_until")
    ordering = ("number",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(boolean=True, description="in use")
    def in_use(self, slot):
        return bool(slot.holder) and slot.leased_until is not None and slot.leased_until >= timezone.now()
