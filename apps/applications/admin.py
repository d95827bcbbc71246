from django.contrib import admin

from .models import Application, Revision, RouteGrant


class RevisionInline(admin.TabularInline):
    model = Revision
    extra = 0
    fields = ["number", "author", "message", "created_at", "spec_hash"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Application)
class ApplicationAdmin(admin.ModelAdmin):
    """Read-only here: applications change through the API or the dashboard, which validate and admit them."""

    list_display = ["name", "team", "cluster", "route_prefix", "state", "version", "deleted_at"]
    list_filter = ["cluster", "state", "team"]
    search_fields = ["name", "team__slug"]
    inlines = [RevisionInline]
    actions = ["delete_from_cluster"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Delete from the cluster (through the service)")
    def delete_from_cluster(self, request, queryset):
        from .services import application_delete

        for app in queryset.filter(deleted_at__isnull=True):
            application_delete(actor=request.user, application=app, source="admin")


@admin.register(RouteGrant)
class RouteGrantAdmin(admin.ModelAdmin):
    list_display = ["prefix", "team", "granted_by", "created_at"]
    search_fields = ["prefix", "team__slug"]
