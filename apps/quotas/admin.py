from django.contrib import admin

from .models import Quota


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ["team", "cluster", "pool", "gpus", "cpus"]
    list_filter = ["cluster"]

    def save_model(self, request, obj, form, change):
        from .services import quota_set

        quota_set(
            actor=request.user,
            team=obj.team,
            cluster=obj.cluster,
            pool_name=obj.pool.name,
            gpus=obj.gpus,
            cpus=obj.cpus,
            source="admin",
        )
