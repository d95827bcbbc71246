from django.apps import AppConfig


class CompactionConfig(AppConfig):
    name = "apps.compaction"
    label = "compaction"

    def ready(self) -> None:
        from apps.clusters.parts import Part, register

        from .models import CompactionSettings

        register(
            Part(
                accessor="compaction_settings",
                model=CompactionSettings,
                writable=("gcs_address", "compaction_policy", "compaction_threshold", "compaction_window"),
            )
        )
