from __future__ import annotations

from decimal import Decimal

from django.db.models import Q
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from apps.core.ids import StaffWritesOnly
from apps.teams.selectors import teams_for

from . import services
from .filters import SyncRunFilter
from .models import Cluster, GpuPool, SyncRun, validate_matchers
from .selectors import last_sync_runs, unmanaged_apps


class PoolSerializer(serializers.ModelSerializer):
    capacity = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal(0), coerce_to_string=True)

    class Meta:
        model = GpuPool
        fields = ["name", "resource", "capacity"]


class ClusterSerializer(serializers.ModelSerializer):
    pools = PoolSerializer(many=True, required=False)
    auth_token = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=500)
    has_auth_token = serializers.SerializerMethodField()
    has_kubeconfig = serializers.SerializerMethodField()
    runtime_env_policy = serializers.DictField(required=False)
    metrics_targets = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, max_length=1000
    )
    ray_cluster_template = serializers.DictField(required=False)
    kubeconfig = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=100_000)
    prometheus_matchers = serializers.JSONField(required=False, validators=[validate_matchers])
    prometheus_credential = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=10_000, trim_whitespace=True
    )
    has_prometheus_credential = serializers.SerializerMethodField()
    last_sync = serializers.SerializerMethodField()

    class Meta:
        model = Cluster
        fields = [
            "id",
            "name",
            "kind",
            "dashboard_url",
            "serve_url",
            "http_port",
            "auth_token",
            "has_auth_token",
            "has_kubeconfig",
            "drift_policy",
            "runtime_env_policy",
            "metrics_targets",
            "metrics_source",
            "prometheus_url",
            "prometheus_matchers",
            "prometheus_credential",
            "has_prometheus_credential",
            "metrics_answered_at",
            "metrics_error",
            "starter_pool",
            "starter_gpus",
            "starter_days",
            "gcs_address",
            "compaction_policy",
            "compaction_threshold",
            "compaction_window",
            "kubeconfig",
            "ray_cluster_template",
            "k8s_namespace",
            "k8s_name",
            "pools",
            "health",
            "health_message",
            "last_seen_at",
            "drift",
            "unmanaged_apps",
            "desired_generation",
            "pushed_generation",
            "last_sync",
            "created_at",
        ]
        read_only_fields = [
            "health",
            "health_message",
            "last_seen_at",
            "drift",
            "unmanaged_apps",
            "desired_generation",
            "pushed_generation",
            "metrics_answered_at",
            "metrics_error",
            "created_at",
        ]

    def get_has_prometheus_credential(self, cluster: Cluster) -> bool:
        return bool(cluster.prometheus_credential)

    def validate_prometheus_credential(self, value: str) -> str:
        if any(c in value for c in "\r\n"):  # it goes into an HTTP header; never echoed back
            raise serializers.ValidationError("Must be one line: a bearer token, or user:password for basic auth.")
        return value

    def validate(self, attrs: dict) -> dict:
        def value(field: str) -> object:
            return attrs[field] if field in attrs else getattr(self.instance, field, "")

        if value("metrics_source") == Cluster.MetricsSource.PROMETHEUS and not value("prometheus_url"):
            raise serializers.ValidationError({"prometheus_url": ["Required when metrics_source is prometheus."]})
        return attrs

    def get_has_auth_token(self, cluster: Cluster) -> bool:
        return bool(cluster.auth_token)

    def get_has_kubeconfig(self, cluster: Cluster) -> bool:
        return bool(cluster.kubeconfig)

    def get_last_sync(self, cluster: Cluster) -> dict | None:
        # A list's page comes with every cluster's last run (ClusterViewSet.paginate_queryset); one cluster alone
        # looks its own up.
        runs = self.context.get("last_sync_runs")
        if runs is None:
            runs = last_sync_runs([cluster])
        run = runs.get(cluster.pk)
        return SyncRunSerializer(run).data if run else None

    def validate_kubeconfig(self, value: str) -> str:
        """A kubeconfig is YAML with clusters and users; the refusal never repeats what was sent (a secret)."""
        if not value:
            return value
        import yaml

        try:
            doc = yaml.safe_load(value)
        except yaml.YAMLError:
            doc = None
        if not isinstance(doc, dict) or not doc.get("clusters") or not doc.get("users"):
            raise serializers.ValidationError("Not a kubeconfig: YAML with 'clusters', 'users' and 'contexts' lists.")
        return value

    def validate_pools(self, pools: list[dict]) -> list[dict]:
        names = [p["name"] for p in pools]
        if len(names) != len(set(names)):
            raise serializers.ValidationError("Pool names must be unique within a cluster.")
        return pools

    def create(self, validated: dict) -> Cluster:
        pools = validated.pop("pools", [])
        return services.cluster_create(actor=self.context["request"].user, data=validated, pools=pools)

    def update(self, cluster: Cluster, validated: dict) -> Cluster:
        pools = validated.pop("pools", None)
        return services.cluster_update(actor=self.context["request"].user, cluster=cluster, data=validated, pools=pools)


class SyncRunSerializer(serializers.ModelSerializer):
    duration_ms = serializers.IntegerField(read_only=True, allow_null=True)

    class Meta:
        model = SyncRun
        fields = [
            "id",
            "cluster",
            "trigger",
            "state",
            "generation",
            "attempt",
            "config_hash",
            "app_count",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
        ]


class SyncRunDetailSerializer(SyncRunSerializer):
    class Meta(SyncRunSerializer.Meta):
        fields = [*SyncRunSerializer.Meta.fields, "config_snapshot"]


class UnmanagedAppSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["preexisting", "unexpected", "imperative"])
    carried = serializers.BooleanField(help_text="Sent unchanged with every push until adopted or removed")
    status = serializers.CharField()
    route_prefix = serializers.CharField(allow_null=True)
    config = serializers.DictField(allow_null=True, help_text="The config Ray runs (deployed_app_config)")
    since = serializers.CharField(allow_null=True)
    can_adopt = serializers.BooleanField()
    can_remove = serializers.BooleanField()


class ClusterViewSet(viewsets.ModelViewSet):
    serializer_class = ClusterSerializer
    permission_classes = [StaffWritesOnly]
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]

    @extend_schema(exclude=True)
    def destroy(self, request, *args, **kwargs):
        return Response(
            {"detail": "Clusters are not deleted through the API."}, status=status.HTTP_405_METHOD_NOT_ALLOWED
        )

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no real user
            return Cluster.objects.none()
        return Cluster.objects.prefetch_related("pools").order_by("name")

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        self._last_runs = last_sync_runs(list(page if page is not None else queryset))
        return page

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "last_sync_runs": getattr(self, "_last_runs", None)}

    @extend_schema(responses=UnmanagedAppSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="unmanaged-apps", permission_classes=[IsAdminUser])
    def unmanaged_apps(self, request, pk=None):
        """Apps on the cluster that the control plane did not create: pre-existing, unexpected, imperative."""
        return Response(UnmanagedAppSerializer(unmanaged_apps(self.get_object()), many=True).data)

    @extend_schema(responses={204: None})
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"unmanaged-apps/(?P<app_name>[^/]+)",
        permission_classes=[IsAdminUser],
    )
    def remove_unmanaged(self, request, pk=None, app_name=None):
        """Remove an app the control plane did not create (the next push deletes it from the cluster)."""
        services.unmanaged_remove(actor=request.user, cluster=self.get_object(), name=app_name)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SyncRunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    filterset_class = SyncRunFilter

    def get_serializer_class(self):
        return (
            SyncRunDetailSerializer if self.action == "retrieve" and self.request.user.is_staff else SyncRunSerializer
        )

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no real user
            return SyncRun.objects.none()
        qs = SyncRun.objects.all()
        user = self.request.user
        if not user.is_staff:
            teams = teams_for(user)
            qs = qs.filter(Q(cluster__applications__team__in=teams) | Q(cluster__quotas__team__in=teams)).distinct()
        return qs.order_by("-created_at", "-id")
