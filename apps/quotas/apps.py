from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "apps.quotas"
    label = "quotas"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - connects the starter grant to team creation
