from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from apps.clusters.selectors import cluster_by_id
from apps.core.fields import StrictIntegerField, parse
from apps.teams.permissions import IsStaff

from . import services
from .filters import CompactionPlanFilter
from .models import CompactionPlan, CompactionStep


class PlanRequestSerializer(serializers.Serializer):
    cluster = StrictIntegerField(
        error_messages={
            "required": "Required: the id of a registered cluster.",
            "invalid": "Required: the id of a registered cluster.",
            "null": "Required: the id of a registered cluster.",
        }
    )


class StepSerializer(serializers.ModelSerializer):
    class Meta:
        model = CompactionStep
        fields = ["index", "node_id", "replicas", "state", "message", "started_at", "finished_at"]


class PlanSerializer(serializers.ModelSerializer):
    steps = StepSerializer(many=True, read_only=True)

    class Meta:
        model = CompactionPlan
        fields = [
            "id",
            "cluster",
            "state",
            "trigger",
            "nodes_to_drain",
            "moves",
            "freed",
            "gpus_freed",
            "gpu_hours_per_day",
            "observed_at",
            "created_at",
            "started_at",
            "finished_at",
            "error",
            "drain_method",
            "drain_job",
            "outcome",
            "steps",
        ]
        read_only_fields = fields


class CompactionPlanViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Compaction plans: staff only. POST {"cluster": id} observes the cluster, then plans from that observation."""

    filterset_class = CompactionPlanFilter

    serializer_class = PlanSerializer
    permission_classes = [IsStaff]

    def get_queryset(self):
        return CompactionPlan.objects.prefetch_related("steps").order_by("-created_at", "-id")

    @extend_schema(request=PlanRequestSerializer, responses=PlanSerializer)
    def create(self, request, *args, **kwargs):
        cluster = cluster_by_id(parse(PlanRequestSerializer, request.data)["cluster"])
        if cluster is None:
            raise ValidationError({"cluster": ["Required: the id of a registered cluster."]})
        plan = services.plan_create(actor=request.user, cluster=cluster)
        return Response(PlanSerializer(plan).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={202: PlanSerializer})
    @action(detail=True, methods=["post"])
    def execute(self, request, pk=None):
        plan = services.plan_execute(actor=request.user, plan=self.get_object())
        return Response(PlanSerializer(plan).data, status=status.HTTP_202_ACCEPTED)
