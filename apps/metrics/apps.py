from django.apps import AppConfig

SOURCE_FIELDS = {"metrics_source", "prometheus_url", "prometheus_matchers", "prometheus_credential"}


def _source_changed(row: object, changed: set[str]) -> None:
    if SOURCE_FIELDS & changed:  # a new endpoint has not answered yet
        row.metrics_answered_at, row.metrics_error = None, ""  # type: ignore[attr-defined]


class MetricsConfig(AppConfig):
    name = "apps.metrics"
    label = "metrics"

    def ready(self) -> None:
        from apps.clusters.parts import Part, register

        from .models import MetricsConfig as Row

        register(
            Part(
                accessor="metrics_config",
                model=Row,
                writable=("metrics_targets", *sorted(SOURCE_FIELDS)),
                write_only=("prometheus_credential",),
                on_change=_source_changed,
            )
        )
