from django.contrib import admin

from apps.audit.admin_mixin import AuditedAdminMixin

from .models import Cluster, GpuPool, SyncRun


class PoolInline(admin.TabularInline):
    model = GpuPool
    extra = 0


@admin.register(Cluster)
class ClusterAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "dashboard_url",
        "health",
        "last_seen_at",
        "desired_generation",
        "pushed_generation",
    ]
    readonly_fields = [
        "health",
        "health_message",
        "last_seen_at",
        "drift",
        "unmanaged_apps",
        "nodes",
        "desired_generation",
        "pushed_generation",
        "last_pushed_hash",
        "last_failed_hash",
        "lock_owner",
        "lock_expires_at",
        "inventory_taken_at",
        "preexisting_apps",
        "poll_token",
        "poll_lease_until",
        "poll_requests",
        "scrape_owner",
        "scrape_lease_until",
        "scrape_targets_ok",
        "drift_repair_hash",
        "drift_repairs",
        "replica_moves",
        "created_at",
    ]
    inlines = [PoolInline]

    def save_model(self, request, obj, form, change):
        from . import services

        super().save_model(request, obj, form, change)  # the mixin records the one audit event (secrets redacted)
        services.request_sync(cluster_id=obj.pk, trigger="manual")


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["id", "cluster", "trigger", "state", "app_count", "created_at", "error"]
    list_filter = ["cluster", "state", "trigger"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
