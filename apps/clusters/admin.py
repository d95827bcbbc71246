from django import forms
from django.contrib import admin

from apps.audit.admin_mixin import AuditedAdminMixin

from . import parts
from .models import Cluster, GpuPool, SyncRun


class PoolInline(admin.TabularInline):
    model = GpuPool
    extra = 0


WRITE_ONLY = ("auth_token", "kubeconfig")


class WriteOnlySecretsForm(forms.ModelForm):
    """Secrets are write-only here as in the API: never shown, kept when left empty, cleared with "-"."""

    write_only: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in self.write_only:
            if name in self.fields:
                self.fields[name].widget = forms.PasswordInput(render_value=False)
                self.fields[name].required = False
                is_set = bool(self.instance and getattr(self.instance, name, ""))
                self.fields[name].help_text += ' Set: leave empty to keep, "-" to clear.' if is_set else ""

    def clean(self) -> dict:
        data = super().clean()
        for name in self.write_only:
            if name not in data:
                continue
            if data[name] == "-":
                data[name] = ""
            elif not data[name] and self.instance.pk:
                data[name] = getattr(self.instance, name)
        return data


class ClusterAdminForm(WriteOnlySecretsForm):
    write_only = WRITE_ONLY

    class Meta:
        model = Cluster
        fields = "__all__"  # noqa: DJ007 - the admin picks the fields; this form only makes secrets write-only


def part_inline(part: parts.Part) -> type[admin.StackedInline]:
    """Another app's part of the cluster, edited on the cluster's page: its policy writable, its state read-only."""
    form = type(
        f"{part.model.__name__}Form",
        (WriteOnlySecretsForm,),
        {
            "write_only": part.write_only,
            "Meta": type("Meta", (), {"model": part.model, "fields": list(part.writable)}),
        },
    )
    return type(
        f"{part.model.__name__}Inline",
        (admin.StackedInline,),
        {
            "model": part.model,
            "form": form,
            "fields": list(part.fields),
            "readonly_fields": [f for f in part.fields if f not in part.writable],
            "can_delete": False,
            "min_num": 1,
            "max_num": 1,
        },
    )


@admin.register(Cluster)
class ClusterAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = ClusterAdminForm
    list_display = ["name", "kind", "dashboard_url", "health", "last_seen_at", "desired_generation"]
    readonly_fields = [
        "health",
        "health_message",
        "last_seen_at",
        "drift",
        "unmanaged_apps",
        "nodes",
        "desired_generation",
        "inventory_taken_at",
        "preexisting_apps",
        "replica_moves",
        "created_at",
    ]

    def get_inlines(self, request, obj):
        # A new cluster gets each part with its owner's defaults; they are edited once it exists.
        return [PoolInline, *(part_inline(p) for p in parts.parts())] if obj else [PoolInline]

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
