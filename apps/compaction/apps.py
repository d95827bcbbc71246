from django.apps import AppConfig


class CompactionConfig(AppConfig):
    name = "apps.compaction"
    label = "compaction"
