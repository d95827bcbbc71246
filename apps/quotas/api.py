from __future__ import annotations

from decimal import Decimal

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from apps.clusters.models import Cluster
from apps.clusters.selectors import cluster_by_id
from apps.core.fields import StrictCharField, StrictIntegerField, parse, says
from apps.teams.models import Role, Team
from apps.teams.permissions import StaffWritesOnly, TeamScopedViewSet, require

from .filters import QuotaFilter, QuotaRequestFilter
from .models import Quota, QuotaRequest
from .selectors import usage_for
from .services import quota_request_create, quota_request_decide, quota_set


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
        fields = ["id", "team", "cluster", "pool", "gpus", "cpus", "in_use", "starter", "expires_at"]
        read_only_fields = ["starter", "expires_at"]

    def to_representation(self, quota: Quota) -> dict:
        data = super().to_representation(quota)
        data["pool"] = quota.pool.name
        return data

    def get_in_use(self, quota: Quota) -> str:
        # The page's usage comes computed for every row at once (QuotaViewSet.paginate_queryset); one row alone
        # (create, update, retrieve) computes its own.
        usage = self.context.get("usage")
        if usage is None or (quota.team_id, quota.cluster_id) not in usage:
            usage = usage_for([(quota.team_id, quota.cluster_id)])
        rows = usage[(quota.team_id, quota.cluster_id)]
        mine = (u for u in rows if u.pool == quota.pool.name and u.resource == quota.pool.resource)
        return next((str(u.in_use) for u in mine), "0")

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


class QuotaViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    TeamScopedViewSet,
):
    filterset_class = QuotaFilter
    serializer_class = QuotaSerializer
    permission_classes = [StaffWritesOnly]
    model = Quota

    def base_queryset(self):
        return Quota.objects.select_related("team", "cluster", "pool__cluster").order_by(
            "team__slug", "cluster__name", "pool__name"
        )

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        self._usage = usage_for((q.team_id, q.cluster_id) for q in (page if page is not None else queryset))
        return page

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "usage": getattr(self, "_usage", None)}

    def create(self, request, *args, **kwargs):
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


@extend_schema_serializer(component_name="QuotaRequestItem")
class QuotaRequestSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    pool = serializers.CharField(source="pool.name")
    requested_by = serializers.CharField(source="requested_by.username", default=None)
    decided_by = serializers.CharField(source="decided_by.username", default=None)

    class Meta:
        model = QuotaRequest
        fields = [
            "id",
            "team",
            "cluster",
            "pool",
            "gpus",
            "cpus",
            "reason",
            "state",
            "requested_by",
            "decided_by",
            "comment",
            "created_at",
            "decided_at",
        ]
        read_only_fields = fields


TEAM_REQUIRED = says("Required: the slug of a team you belong to.")
CLUSTER_REQUIRED = says("Required: the id of a registered cluster.")


# The parser of a quota request (no docstring: it would be the schema's description): JSON types here; the pool,
# the amount and the reason are judged by the service, which names what is wrong.
class QuotaRequestWriteSerializer(serializers.Serializer):
    team = StrictCharField(error_messages=TEAM_REQUIRED)
    cluster = StrictIntegerField(error_messages=CLUSTER_REQUIRED)
    pool = serializers.CharField()
    gpus = serializers.DecimalField(
        max_digits=12, decimal_places=4, error_messages=says("Must be a number from 0 to 100000, e.g. 4.5.")
    )
    reason = serializers.CharField(
        max_length=2000, error_messages=says("Say why the team needs it: platform admins decide on this.")
    )

    def validate_pool(self, name: str) -> str:
        """Judged with the other fields, so one answer names every problem: the cluster must have the pool."""
        cluster_id = self.initial_data.get("cluster") if isinstance(self.initial_data, dict) else None
        cluster = cluster_by_id(cluster_id) if isinstance(cluster_id, int) else None
        if cluster is not None and not cluster.pools.filter(name=name).exists():
            raise serializers.ValidationError(f"Cluster {cluster.name} has no pool {name!r}.")
        return name


class DecisionSerializer(serializers.Serializer):
    comment = StrictCharField(required=False, allow_blank=True, max_length=2000)


class QuotaRequestViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    filterset_class = QuotaRequestFilter
    serializer_class = QuotaRequestSerializer
    model = QuotaRequest

    def base_queryset(self):
        qs = QuotaRequest.objects.select_related("team", "pool", "requested_by", "decided_by")
        return qs.order_by("-created_at", "-id")

    @extend_schema(request=QuotaRequestWriteSerializer, responses=QuotaRequestSerializer)
    def create(self, request, *args, **kwargs):
        data = parse(QuotaRequestWriteSerializer, request.data)
        team = self.principal.teams().filter(slug=data["team"]).first()
        cluster = cluster_by_id(data["cluster"])
        errors = {}
        if team is None:
            errors["team"] = ["Required: the slug of a team you belong to."]
        if cluster is None:
            errors["cluster"] = ["Required: the id of a registered cluster."]
        if errors:
            raise ValidationError(errors)
        require(self.principal, team, Role.ADMIN, "request quota")
        req = quota_request_create(
            actor=request.user,
            team=team,
            cluster=cluster,
            pool_name=data["pool"],
            gpus=data["gpus"],
            reason=data["reason"],
        )
        return Response(QuotaRequestSerializer(req).data, status=status.HTTP_201_CREATED)

    def _decide(self, request, approve: bool) -> Response:
        req = self.get_object()  # 404 for teams the caller cannot see
        if not self.principal.is_staff:
            raise PermissionDenied("Only platform admins decide on quota requests.")
        comment = parse(DecisionSerializer, request.data).get("comment", "")
        req = quota_request_decide(actor=request.user, request=req, approve=approve, comment=comment)
        return Response(QuotaRequestSerializer(req).data)

    @extend_schema(request=DecisionSerializer, responses=QuotaRequestSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._decide(request, True)

    @extend_schema(request=DecisionSerializer, responses=QuotaRequestSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decide(request, False)
