"""The cluster endpoints that concern the push: the merged config, placement, adopting apps, a push on demand.

They extend the clusters API's viewset, so the paths stay under ``/api/v1/clusters/{id}/``.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from apps.applications.api import ApplicationSerializer
from apps.applications.services import application_adopt
from apps.clusters.api import ClusterViewSet as BaseClusterViewSet
from apps.core.jobs import enqueue
from apps.teams.models import Team

from .config import build_serve_config
from .selectors import cluster_state


class AdoptSerializer(serializers.Serializer):
    team = serializers.SlugField(help_text="The team that takes the app over")
    name = serializers.CharField(required=False, help_text="Its name in the team (default: its Serve name)")


class ClusterViewSet(BaseClusterViewSet):
    @action(detail=True, methods=["get"], url_path="serve-config", permission_classes=[IsAdminUser])
    def serve_config(self, request, pk=None):
        """The exact merged config the next push sends."""
        merged = build_serve_config(self.get_object())
        return Response(merged.config, headers={"ETag": f'"{merged.hash}"'})

    @action(detail=True, methods=["get"])
    def state(self, request, pk=None):
        """Nodes with capacity and use, and the replicas on each, as last observed."""
        return Response(cluster_state(self.get_object()))

    @extend_schema(request=AdoptSerializer, responses={201: OpenApiTypes.OBJECT})
    @action(
        detail=True,
        methods=["post"],
        url_path=r"unmanaged-apps/(?P<app_name>[^/]+)/adopt",
        permission_classes=[IsAdminUser],
    )
    def adopt(self, request, pk=None, app_name=None):
        """Adopt an app into a team: its first revision is what Ray runs; admitted against the team's quota."""
        cluster = self.get_object()
        body = AdoptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        team = Team.objects.filter(slug=body.validated_data["team"]).first()
        if team is None:
            raise serializers.ValidationError({"team": [f"No team {body.validated_data['team']!r}."]})
        warnings: list[str] = []
        app = application_adopt(
            actor=request.user,
            cluster=cluster,
            serve_name=app_name,
            team=team,
            name=body.validated_data.get("name"),
            warnings=warnings,
        )
        data = dict(ApplicationSerializer(app).data)
        if warnings:
            data["warnings"] = warnings
        return Response(data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def sync(self, request, pk=None):
        """Ask for a push now, even if nothing changed (repairs a cluster that lost its apps)."""
        cluster = self.get_object()
        if not enqueue("workers.tasks.sync.sync_cluster", cluster.pk, "manual", True):
            return Response(
                {"detail": "The task queue is unavailable; the reconcile pushes when it is back."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response({"detail": "push queued"}, status=status.HTTP_202_ACCEPTED)
