from django.contrib import admin

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor_label", "team_slug", "action", "object_type", "object_repr", "source", "request_id"]
    list_filter = ["action", "source"]
    search_fields = ["actor_label", "team_slug", "object_repr", "request_id"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
