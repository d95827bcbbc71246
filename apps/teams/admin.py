from django.contrib import admin

from apps.audit.admin_mixin import AuditedAdminMixin

from .models import ApiToken, Membership, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "user", "team", "role", "expires_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "secret_hash", "last_used_at", "created_at"]
    list_filter = ["team"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # tokens are created where the secret can be shown once: the API or the UI

    def has_change_permission(self, request, obj=None):
        return False  # tokens change only by revocation, through the service (audited)

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        from .services import token_revoke

        for token in queryset.filter(revoked_at__isnull=True):
            token_revoke(actor=request.user, token=token, source="admin")
