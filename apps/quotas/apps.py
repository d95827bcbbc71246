from django.apps import AppConfig


def _starter_pool_exists(grant: object) -> None:
    from django.core.exceptions import ValidationError

    cluster = grant.cluster  # type: ignore[attr-defined]
    pool = grant.starter_pool  # type: ignore[attr-defined]
    if pool and not cluster.pools.filter(name=pool).exists():
        names = ", ".join(cluster.pools.values_list("name", flat=True)) or "none"
        raise ValidationError({"starter_pool": [f"No pool {pool!r} on {cluster.name} (pools: {names})."]})


class QuotasConfig(AppConfig):
    name = "apps.quotas"
    label = "quotas"

    def ready(self) -> None:
        from apps.clusters.parts import Part, register

        from . import signals  # noqa: F401 - connects the starter grant to team creation
        from .models import StarterGrant

        register(
            Part(
                accessor="starter_grant",
                model=StarterGrant,
                writable=("starter_pool", "starter_gpus", "starter_days"),
                check=_starter_pool_exists,
            )
        )
