from django.apps import AppConfig


class LocaldevConfig(AppConfig):
    name = "apps.localdev"
    label = "localdev"
    verbose_name = "Local development harness"
