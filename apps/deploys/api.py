"""The cluster endpoints that concern the push: the merged config, placement, adopting apps, a push on demand.

They extend the clusters API's viewset, so the paths stay under ``/api/v1/clusters/{id}/``.
"""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.applications.api import ApplicationSerializer
from apps.applications.services import application_adopt
from apps.clusters.api import ClusterSerializer, SyncRunDetailSerializer, SyncRunSerializer
from apps.clusters.api import ClusterViewSet as BaseClusterViewSet
from apps.clusters.filters import SyncRunFilter
from apps.clusters.models import Cluster, SyncRun
from apps.core.jobs import enqueue
from apps.teams.models import Team
from apps.teams.permissions import IsStaff, PrincipalMixin

from .config import build_serve_config
from .selectors import cluster_state
from .visibility import ClusterLens


class AdoptSerializer(serializers.Serializer):
    team = serializers.SlugField(help_text="The team that takes the app over")
    name = serializers.CharField(required=False, help_text="Its name in the team (default: its Serve name)")


@extend_schema_serializer(component_name="Cluster")
class VisibleClusterSerializer(ClusterSerializer):
    """A cluster as the request's principal may read it (apps.deploys.visibility)."""

    def to_representation(self, cluster):
        lens = self.context.get("lens") or ClusterLens(self.context["principal"], [cluster.pk])
        return lens.cluster_fields(cluster, super().to_representation(cluster))


class ClusterViewSet(BaseClusterViewSet):
    serializer_class = VisibleClusterSerializer

    def get_serializer_context(self) -> dict:
        context = {**super().get_serializer_context(), "principal": self.principal}
        clusters = getattr(self, "_page", None)
        if clusters is not None:
            context["lens"] = ClusterLens(self.principal, [c.pk for c in clusters])
        lens = context.get("lens")
        if lens is not None:
            context["run_error"] = lens.run_error
        return context

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        self._page = list(page if page is not None else queryset)
        return page

    def get_object(self):
        cluster = super().get_object()
        self._page = [cluster]
        return cluster

    @action(detail=True, methods=["get"], url_path="serve-config", permission_classes=[IsStaff])
    def serve_config(self, request, pk=None):
        """The exact merged config the next push sends."""
        merged = build_serve_config(self.get_object())
        return Response(merged.config, headers={"ETag": f'"{merged.hash}"'})

    @action(detail=True, methods=["get"])
    def state(self, request, pk=None):
        """Nodes with capacity and use, and the replicas on each, as last observed (other teams' replicas: what
        they use only)."""
        cluster = self.get_object()
        return Response(ClusterLens(self.principal, [cluster.pk]).state(cluster_state(cluster)))

    @extend_schema(request=AdoptSerializer, responses={201: OpenApiTypes.OBJECT})
    @action(
        detail=True,
        methods=["post"],
        url_path=r"unmanaged-apps/(?P<app_name>[^/]+)/adopt",
        permission_classes=[IsStaff],
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

    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def sync(self, request, pk=None):
        """Ask for a push now, even if nothing changed (repairs a cluster that lost its apps)."""
        cluster = self.get_object()
        if not enqueue("workers.tasks.sync.sync_cluster", cluster.pk, "manual", True):
            return Response(
                {"detail": "The task queue is unavailable; the reconcile pushes when it is back."},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response({"detail": "push queued"}, status=status.HTTP_202_ACCEPTED)


class SyncRunViewSet(PrincipalMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Pushes. Staff: all, with Ray's text and the config sent. Teams: the runs of clusters they run apps on or
    hold quota in, with their own apps' part of any error."""

    filterset_class = SyncRunFilter

    def get_serializer_class(self):
        return SyncRunDetailSerializer if self.action == "retrieve" and self.principal.is_staff else SyncRunSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no real user
            return SyncRun.objects.none()
        qs = SyncRun.objects.all()
        if not (self.action == "retrieve" and self.principal.is_staff):
            qs = qs.defer("config_snapshot")  # the whole merged config: megabytes on a large cluster, never listed
        if not self.principal.is_staff:
            teams = self.principal.team_ids()
            clusters = Cluster.objects.filter(Q(applications__team_id__in=teams) | Q(quotas__team_id__in=teams)).values(
                "pk"
            )  # a subquery, not a join: no DISTINCT over the runs
            qs = qs.filter(cluster_id__in=clusters)
        return qs.order_by("-created_at", "-id")

    def get_serializer_context(self) -> dict:
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False):
            context["run_error"] = ClusterLens(self.principal).run_error
        return context
