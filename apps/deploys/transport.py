"""One transport per cluster kind, chosen in one place: how a merged config reaches the cluster and how its
Serve status and nodes are read back. Plain Ray talks to the dashboard's REST API; KubeRay writes the
RayService's ``spec.serveConfigV2`` and reads its status."""

from __future__ import annotations

from typing import Any, Protocol

from django.conf import settings

from apps.clusters.models import Cluster
from workers.clients.kuberay import KubeError, KubeRejected
from workers.clients.ray_dashboard import RayRejected, RayUnavailable, client_for

from . import kuberay


class Transport(Protocol):
    def put_config(self, config: dict) -> None:
        """Send the whole merged config. Raises RayUnavailable (transient) or RayRejected (permanent)."""

    def serve_status(self) -> dict:
        """Serve's status document (``applications`` by name, each with ``deployed_app_config``)."""

    def nodes(self) -> list[dict] | None:
        """Ray's nodes, or None where this transport cannot list them."""

    def scale(self, app_name: str, deployment: str, target: int) -> None:
        """Set a deployment's replica target now (apps with ``external_scaler_enabled``), where the cluster has a
        way to; the pushed config carries the same target either way."""


class RayDashboardTransport:
    def __init__(self, cluster: Cluster) -> None:
        self.client = client_for(cluster)

    def put_config(self, config: dict) -> None:
        self.client.put_serve_config(config)

    def serve_status(self) -> dict:
        return self.client.get_serve_applications()

    def nodes(self) -> list[dict] | None:
        return self.client.list_nodes()

    def scale(self, app_name: str, deployment: str, target: int) -> None:
        self.client.scale_deployment(app_name, deployment, target)


class KubeRayTransport:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _client(self) -> Any:
        try:
            return kuberay.client_for(self.cluster, timeout=float(settings.RAY_HTTP_TIMEOUT_S))
        except Exception as exc:  # a kubeconfig that does not load: say so without echoing its contents
            raise RayUnavailable(f"Cannot build a Kubernetes API client: {type(exc).__name__}") from exc

    def put_config(self, config: dict) -> None:
        try:
            kuberay.apply_serve_config(self._client(), self.cluster, config)
        except KubeError as exc:
            raise RayUnavailable(str(exc)) from exc
        except (KubeRejected, kuberay.ManifestInvalid) as exc:
            raise RayRejected(422, str(exc)) from exc

    def serve_status(self) -> dict:
        try:
            obj = self._client().get()
        except KubeError as exc:
            raise RayUnavailable(str(exc)) from exc
        return kuberay.serve_status_from_rayservice(obj or {})

    def nodes(self) -> list[dict] | None:
        if not self.cluster.dashboard_url:
            return None
        return client_for(self.cluster).list_nodes()

    def scale(self, app_name: str, deployment: str, target: int) -> None:
        """Nothing now: KubeRay owns the dashboard, and the RayService's serveConfigV2 (pushed with the new
        revision) carries the target."""


def transport_for(cluster: Cluster) -> Transport:
    if cluster.kind == Cluster.Kind.KUBERAY:
        return KubeRayTransport(cluster)
    return RayDashboardTransport(cluster)
