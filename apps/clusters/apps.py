from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "apps.clusters"
    label = "clusters"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from . import parts
        from .models import Cluster

        # every new cluster gets each owner's part with its defaults
        post_save.connect(parts.on_cluster_saved, sender=Cluster, dispatch_uid="clusters.parts.ensure")
