from __future__ import annotations

from decimal import Decimal

from rest_framework import mixins, serializers, status, viewsets
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from apps.clusters.models import Cluster
from apps.teams.models import Team
from apps.teams.selectors import teams_for

from .models import Quota
from .services import quota_set, team_pool_usage


class QuotaSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    cluster = serializers.PrimaryKeyRelatedField(queryset=Cluster.objects.all())
    pool = serializers.CharField(max_length=50)
    gpus = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal(0))
    cpus = serializers.DecimalField(
        max_digits=12, decimal_places=4, min_value=Decimal(0), required=False, allow_null=True
    )
    in_use = serializers.SerializerMethodField()

    class Meta:
        model = Quota
        fields = ["id", "team", "cluster", "pool", "gpus", "cpus", "in_use"]

    def to_representation(self, quota: Quota) -> dict:
        data = super().to_representation(quota)
        data["pool"] = quota.pool.name
        return data

    def get_in_use(self, quota: Quota) -> str:
        usage = team_pool_usage(team=quota.team, cluster=quota.cluster, spec=None, exclude_app_id=None)
        return next((str(u.in_use) for u in usage if u.pool == quota.pool.name), "0")

    def create(self, validated: dict) -> Quota:
        return quota_set(
            actor=self.context["request"].user,
            team=validated["team"],
            cluster=validated["cluster"],
            pool_name=validated["pool"],
            gpus=validated["gpus"],
            cpus=validated.get("cpus"),
        )

    def update(self, quota: Quota, validated: dict) -> Quota:
        return quota_set(
            actor=self.context["request"].user,
            team=quota.team,
            cluster=quota.cluster,
            pool_name=quota.pool.name,
            gpus=validated.get("gpus", quota.gpus),
            cpus=validated.get("cpus", quota.cpus),
        )


class StaffWritesOnly(BasePermission):
    def has_permission(self, request, view) -> bool:  # type: ignore[no-untyped-def]
        return request.method in ("GET", "HEAD", "OPTIONS") or bool(request.user and request.user.is_staff)


class QuotaViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = QuotaSerializer
    permission_classes = [StaffWritesOnly]

    def get_queryset(self):  # type: ignore[no-untyped-def]
        qs = Quota.objects.select_related("team", "cluster", "pool").order_by(
            "team__slug", "cluster__name", "pool__name"
        )
        if not self.request.user.is_staff:
            qs = qs.filter(team__in=teams_for(self.request.user))
        team = self.request.query_params.get("team")
        if team:
            qs = qs.filter(team__slug=team)
        return qs

    def create(self, request, *args, **kwargs):  # type: ignore[no-untyped-def]
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        quota = serializer.save()
        return Response(self.get_serializer(quota).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, quota: Quota) -> None:
        from apps.audit.services import audit_record

        audit_record(
            actor=self.request.user, team=quota.team, action="quota.delete", obj=quota, before={"gpus": str(quota.gpus)}
        )
        quota.delete()
