from django.contrib import admin

from .models import SsoIdentity


@admin.register(SsoIdentity)
class SsoIdentityAdmin(admin.ModelAdmin):
    list_display = ("user", "issuer", "subject", "email", "last_login_at")
    search_fields = ("user__username", "email", "subject")
    readonly_fields = (
        "user",
        "issuer",
        "subject",
        "email",
        "groups",
        "managed_team_ids",
        "created_at",
        "last_login_at",
    )
