from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.utils import model_meta

from apps.teams.permissions import IsStaff, PrincipalMixin, StaffWritesOnly

from . import parts, services
from .models import Cluster, GpuPool, SyncRun
from .selectors import last_sync_runs, unmanaged_apps
from .visibility import push_error_for_team


class PoolSerializer(serializers.ModelSerializer):
    capacity = serializers.DecimalField(max_digits=12, decimal_places=4, min_value=Decimal(0), coerce_to_string=True)

    class Meta:
        model = GpuPool
        fields = ["name", "resource", "capacity"]


class ClusterSerializer(serializers.ModelSerializer):
    pools = PoolSerializer(many=True, required=False)
    # a string, not a "uri": non-staff read it empty (Ray's endpoints are staff's); validate_dashboard_url checks it
    dashboard_url = serializers.CharField(max_length=200, help_text="Ray dashboard, e.g. http://127.0.0.1:8265")
    auth_token = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=500)
    has_auth_token = serializers.SerializerMethodField()
    has_kubeconfig = serializers.SerializerMethodField()
    runtime_env_policy = serializers.DictField(required=False)
    metrics_targets = serializers.ListField(
        child=serializers.CharField(max_length=300),
        required=False,
        max_length=1000,
        source="metrics_config.metrics_targets",
    )
    ray_cluster_template = serializers.DictField(required=False)
    kubeconfig = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=100_000)
    # checked by the metrics source's own row when it is written
    prometheus_matchers = serializers.JSONField(required=False, source="metrics_config.prometheus_matchers")
    prometheus_credential = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=10_000,
        trim_whitespace=True,
        source="metrics_config.prometheus_credential",
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
            "team_max_apps",
            "team_max_replicas",
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

    def validate_runtime_env_policy(self, value: dict) -> dict:
        from apps.servespec.runtime_env import check_policy_document

        errors = check_policy_document(value)
        if errors:
            raise serializers.ValidationError([f"{k}: {' '.join(v)}" for k, v in errors.items()])
        return value

    def validate_dashboard_url(self, value: str) -> str:
        try:
            URLValidator(schemes=["http", "https"])(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError("Must be an http:// or https:// URL.") from exc
        return value

    def get_has_prometheus_credential(self, cluster: Cluster) -> bool:
        return bool(cluster.metrics_config.prometheus_credential)

    def build_field(self, field_name: str, info: Any, model_class: Any, nested_depth: int) -> tuple:
        """A field of another app's part of the cluster is built from that part's model, read through it."""
        part = parts.owner_of(field_name)
        if part is None:
            return super().build_field(field_name, info, model_class, nested_depth)
        field_class, kwargs = super().build_field(
            field_name, model_meta.get_field_info(part.model), part.model, nested_depth
        )
        return field_class, {**kwargs, "source": f"{part.accessor}.{field_name}"}

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
        return SyncRunSerializer(run, context=self.context).data if run else None

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
        from workers.clients.kuberay import kubeconfig_runs_code

        if kubeconfig_runs_code(doc):
            raise serializers.ValidationError(
                "A user of this kubeconfig runs a command ('exec' or 'auth-provider'): the worker would run it. "
                "Give a token or a client certificate."
            )
        return value

    def validate_pools(self, pools: list[dict]) -> list[dict]:
        names = [p["name"] for p in pools]
        if len(names) != len(set(names)):
            raise serializers.ValidationError("Pool names must be unique within a cluster.")
        return pools

    def create(self, validated: dict) -> Cluster:
        validated = parts.flatten(validated)
        pools = validated.pop("pools", [])
        return services.cluster_create(actor=self.context["request"].user, data=validated, pools=pools)

    def update(self, cluster: Cluster, validated: dict) -> Cluster:
        validated = parts.flatten(validated)
        pools = validated.pop("pools", None)
        return services.cluster_update(actor=self.context["request"].user, cluster=cluster, data=validated, pools=pools)


class SyncRunSerializer(serializers.ModelSerializer):
    """A push. Its error is read through the context's ``run_error`` (the principal's view: staff get Ray's text,
    a team its own apps' faults); without one, no app's part is shown."""

    duration_ms = serializers.IntegerField(read_only=True, allow_null=True)
    error = serializers.SerializerMethodField()

    def get_error(self, run: SyncRun) -> str:
        view = self.context.get("run_error")
        return view(run) if view else push_error_for_team(run.error, run.error_kind, run.faults, ())

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
            "error_kind",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
        ]


class SyncRunDetailSerializer(SyncRunSerializer):
    class Meta(SyncRunSerializer.Meta):
        fields = [*SyncRunSerializer.Meta.fields, "faults", "config_snapshot"]


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


class ClusterViewSet(PrincipalMixin, viewsets.ModelViewSet):
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
        return Cluster.objects.select_related(*parts.related()).prefetch_related("pools").order_by("name")

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        self._last_runs = last_sync_runs(list(page if page is not None else queryset))
        return page

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "last_sync_runs": getattr(self, "_last_runs", None)}

    @extend_schema(responses=UnmanagedAppSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="unmanaged-apps", permission_classes=[IsStaff])
    def unmanaged_apps(self, request, pk=None):
        """Apps on the cluster that the control plane did not create: pre-existing, unexpected, imperative."""
        return Response(UnmanagedAppSerializer(unmanaged_apps(self.get_object()), many=True).data)

    @extend_schema(responses={204: None})
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"unmanaged-apps/(?P<app_name>[^/]+)",
        permission_classes=[IsStaff],
    )
    def remove_unmanaged(self, request, pk=None, app_name=None):
        """Remove an app the control plane did not create (the next push deletes it from the cluster)."""
        services.unmanaged_remove(actor=request.user, cluster=self.get_object(), name=app_name)
        return Response(status=status.HTTP_204_NO_CONTENT)
