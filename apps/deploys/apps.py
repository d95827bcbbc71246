from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "apps.deploys"
    label = "deploys"

    def ready(self) -> None:
        from apps.clusters.parts import Part, register

        from .models import PushState

        register(Part(accessor="push_state", model=PushState, writable=("drift_policy",)))
