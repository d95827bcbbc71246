from django import forms
from django.contrib import admin

from apps.audit.admin_mixin import AuditedAdminMixin

from .models import Cluster, GpuPool, SyncRun


class PoolInline(admin.TabularInline):
    model = GpuPool
    extra = 0


WRITE_ONLY = ("auth_token", "kubeconfig", "prometheus_credential")


class ClusterAdminForm(forms.ModelForm):
    """Secrets are write-only here as in the API: never shown, kept when left empty, cleared with "-"."""

    class Meta:
        model = Cluster
        fields = "__all__"  # noqa: DJ007 - the admin picks the fields; this form only makes secrets write-only
        widgets = {name: forms.PasswordInput(render_value=False) for name in WRITE_ONLY}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in WRITE_ONLY:
            if name in self.fields:
                self.fields[name].required = False
                is_set = bool(self.instance and getattr(self.instance, name, ""))
                self.fields[name].help_text += ' Set: leave empty to keep, "-" to clear.' if is_set else ""

    def clean(self) -> dict:
        data = super().clean()
        for name in WRITE_ONLY:
            if name not in data:
                continue
            if data[name] == "-":
                data[name] = ""
            elif not data[name] and self.instance.pk:
                data[name] = getattr(self.instance, name)
        return data


@admin.register(Cluster)
class ClusterAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = ClusterAdminForm
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
        "metrics_answered_at",
        "metrics_error",
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
