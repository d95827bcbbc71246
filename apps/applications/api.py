from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.clusters.models import Cluster
from apps.clusters.selectors import cluster_by_id
from apps.core.errors import flat_errors
from apps.core.fields import StrictCharField, StrictIntegerField, parse
from apps.core.ids import parse_id
from apps.servespec.spec import SPEC_KEYS
from apps.teams.models import Role, Team
from apps.teams.permissions import PrincipalMixin, TeamScopedViewSet
from apps.teams.principal import principal_of

from . import serve_files, services
from .filters import ApplicationFilter
from .models import Application, Revision

DRY_RUN = OpenApiParameter("dry_run", OpenApiTypes.BOOL, description="Validate and check quota; save nothing.")


class DeploymentSchemaSerializer(serializers.Serializer):
    """A deployment under Ray Serve's own field names. The fields below are checked here; every other field of
    Ray's DeploymentSchema is passed on as given and judged by Ray's schema, naming the field."""

    name = StrictCharField()
    num_replicas = serializers.JSONField(required=False, help_text='A whole number, or "auto"')
    autoscaling_config = serializers.DictField(required=False)
    ray_actor_options = serializers.DictField(required=False)
    max_ongoing_requests = StrictIntegerField(required=False)
    user_config = serializers.DictField(required=False)

    def to_internal_value(self, data: Any) -> Any:
        super().to_internal_value(data)
        return data  # as given: Ray's schema judges every field next


class ApplicationWriteSerializer(serializers.Serializer):
    """An application as written: its team, cluster and name (fixed once created) and its spec under Ray Serve's
    field names. A PUT replaces the spec; a PATCH changes the fields it carries."""

    # context: ``request``; for a PUT or PATCH also ``application``, whose team, cluster and name cannot change

    team = StrictCharField(help_text="Team slug")
    cluster = StrictIntegerField()
    name = StrictCharField()
    route_prefix = StrictCharField(required=False, allow_null=True, help_text='Default "/"; null: no HTTP route')
    import_path = StrictCharField()
    args = serializers.DictField(required=False)
    runtime_env = serializers.DictField(required=False)
    deployments = DeploymentSchemaSerializer(many=True, required=False)
    logging_config = serializers.DictField(required=False, allow_null=True)
    autoscaling_policy = serializers.DictField(required=False, allow_null=True)
    external_scaler_enabled = serializers.BooleanField(required=False)
    version = serializers.IntegerField(required=False, help_text="For updates: the version you read")

    def to_internal_value(self, data: Any) -> dict:
        errors = {}
        if isinstance(data, dict):
            for key in sorted(set(data) - set(self.fields)):
                errors[key] = [f"Unknown field {key!r}."]
        try:
            values = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({**flat_errors(exc.detail), **errors}) from exc
        if errors:
            raise serializers.ValidationError(errors)
        return values

    def _unchanged(self, key: str, value: Any, current: Any) -> None:
        if value != current:
            raise serializers.ValidationError(f"Cannot be changed ({current!r}); create a new application instead.")

    def validate_team(self, slug: str) -> Team:
        app = self.context.get("application")
        if app is not None:
            self._unchanged("team", slug, app.team.slug)
            return app.team
        team = principal_of(self.context["request"]).teams().filter(slug=slug).first()
        if team is None:
            raise serializers.ValidationError("Required: the slug of a team you belong to.")
        return team

    def validate_cluster(self, value: int) -> Cluster:
        app = self.context.get("application")
        if app is not None:
            self._unchanged("cluster", value, app.cluster_id)
            return app.cluster
        cluster = cluster_by_id(value)
        if cluster is None:
            raise serializers.ValidationError("Required: the id of a registered cluster.")
        return cluster

    def validate_name(self, value: str) -> str:
        app = self.context.get("application")
        if app is not None:
            self._unchanged("name", value, app.name)
        return value

    def spec(self) -> dict:
        """The spec part of the body as sent (Ray's schema validates and normalises it next)."""
        return {k: self.initial_data[k] for k in SPEC_KEYS if k in self.initial_data}


class ApplicationSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug")
    revision = serializers.IntegerField(source="current_revision.number", allow_null=True)
    deployed_revision = serializers.IntegerField(source="deployed_revision.number", allow_null=True)
    serve_name = serializers.CharField()
    observed_at = serializers.DateTimeField(source="last_observed_at", read_only=True, allow_null=True)
    route_prefix = serializers.SerializerMethodField()
    import_path = serializers.SerializerMethodField()
    args = serializers.SerializerMethodField()
    runtime_env = serializers.SerializerMethodField()
    deployments = serializers.SerializerMethodField()
    logging_config = serializers.SerializerMethodField()
    autoscaling_policy = serializers.SerializerMethodField()
    external_scaler_enabled = serializers.SerializerMethodField()

    class Meta:
        model = Application
        fields = [
            "id",
            "team",
            "cluster",
            "name",
            "serve_name",
            "route_prefix",
            "import_path",
            "args",
            "runtime_env",
            "deployments",
            "logging_config",
            "autoscaling_policy",
            "external_scaler_enabled",
            "revision",
            "deployed_revision",
            "version",
            "state",
            "status",
            "status_message",
            "config_diff",
            "observed_at",
            "created_at",
            "updated_at",
        ]

    def _spec(self, app: Application) -> dict:
        return app.current_revision.spec if app.current_revision else {}

    def get_route_prefix(self, app: Application) -> str | None:
        return app.route_prefix or None

    def get_import_path(self, app: Application) -> str:
        return self._spec(app).get("import_path", "")

    def get_args(self, app: Application) -> dict:
        return self._spec(app).get("args", {})

    def get_runtime_env(self, app: Application) -> dict:
        return self._spec(app).get("runtime_env", {})

    def get_deployments(self, app: Application) -> list:
        return self._spec(app).get("deployments", [])

    def get_logging_config(self, app: Application) -> dict | None:
        return self._spec(app).get("logging_config")

    def get_autoscaling_policy(self, app: Application) -> dict | None:
        return self._spec(app).get("autoscaling_policy")

    def get_external_scaler_enabled(self, app: Application) -> bool:
        return bool(self._spec(app).get("external_scaler_enabled", False))


class RevisionSerializer(serializers.ModelSerializer):
    author = serializers.CharField(source="author.username", allow_null=True, default=None)

    class Meta:
        model = Revision
        fields = ["number", "spec", "spec_hash", "author", "message", "created_at"]


def _dry_run(request: Request) -> bool:
    return request.query_params.get("dry_run", "").lower() in ("1", "true", "yes")


def _expected_version(request: Request) -> int | None:
    header = request.headers.get("If-Match", "").strip()
    raw: Any = (
        header.strip("W/").strip('"')
        if header
        else request.data.get("version")
        if isinstance(request.data, dict)
        else None
    )
    if raw in (None, "", "*"):
        return None
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"version": ["Must be the integer version you read (If-Match or body field)."]}) from exc


class RollbackInputSerializer(serializers.Serializer):
    revision = StrictIntegerField(
        error_messages={
            "required": "Required: the number of an earlier revision.",
            "invalid": "Required: the number of an earlier revision.",
            "null": "Required: the number of an earlier revision.",
        }
    )


class ApplicationViewSet(
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    mixins.ListModelMixin,
    TeamScopedViewSet,
):
    filterset_class = ApplicationFilter
    serializer_class = ApplicationSerializer
    model = Application

    def base_queryset(self) -> QuerySet[Application]:
        qs = Application.objects.select_related("team", "cluster", "current_revision", "deployed_revision")
        return qs.order_by("team__slug", "name", "id")

    def _respond(self, app: Application, code: int = status.HTTP_200_OK, warnings: list[str] | None = None) -> Response:
        app = self.get_queryset().get(pk=app.pk)
        data = dict(ApplicationSerializer(app).data)
        if warnings:
            data["warnings"] = warnings  # renamed keys that were translated
        return Response(data, status=code, headers={"ETag": f'"{app.version}"'})

    def retrieve(self, request, *args, **kwargs):
        app = self.get_object()
        return Response(ApplicationSerializer(app).data, headers={"ETag": f'"{app.version}"'})

    def _writable(self, app: Application) -> None:
        self.require_role(app.team, Role.MEMBER, "change its applications")

    @extend_schema(request=ApplicationWriteSerializer, parameters=[DRY_RUN], responses=ApplicationSerializer)
    def create(self, request, *args, **kwargs):
        body = ApplicationWriteSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        team, cluster = body.validated_data["team"], body.validated_data["cluster"]
        self.require_role(team, Role.MEMBER, "deploy applications")
        spec = body.spec()
        warnings: list[str] = []
        try:
            app = services.application_create(
                actor=request.user,
                team=team,
                cluster=cluster,
                name=body.validated_data["name"],
                spec=spec,
                dry_run=_dry_run(request),
                warnings=warnings,
            )
        except services.DryRun as dry:
            return Response({"dry_run": True, **dry.result})
        return self._respond(app, status.HTTP_201_CREATED, warnings)

    def _update(self, request: Request, partial: bool) -> Response:
        app = self.get_object()
        self._writable(app)
        body = ApplicationWriteSerializer(
            data=request.data, partial=True, context={"request": request, "application": app}
        )
        body.is_valid(raise_exception=True)
        spec = dict(app.current_revision.spec) if partial and app.current_revision else {}
        spec.update(body.spec())
        warnings: list[str] = []
        try:
            app = services.application_update(
                actor=request.user,
                application=app,
                spec=spec,
                expected_version=_expected_version(request),
                dry_run=_dry_run(request),
                warnings=warnings,
            )
        except services.DryRun as dry:
            return Response({"dry_run": True, **dry.result})
        return self._respond(app, warnings=warnings)

    @extend_schema(request=ApplicationWriteSerializer, parameters=[DRY_RUN], responses=ApplicationSerializer)
    def update(self, request, *args, **kwargs):
        return self._update(request, partial=False)

    @extend_schema(request=ApplicationWriteSerializer, parameters=[DRY_RUN], responses=ApplicationSerializer)
    def partial_update(self, request, *args, **kwargs):
        return self._update(request, partial=True)

    def destroy(self, request, *args, **kwargs):
        app = self.get_object()
        self._writable(app)
        services.application_delete(actor=request.user, application=app, expected_version=_expected_version(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=RevisionSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def revisions(self, request, pk=None):
        app = self.get_object()
        page = self.paginate_queryset(app.revisions.select_related("author").order_by("-number"))
        return self.get_paginated_response(RevisionSerializer(page, many=True).data)

    @extend_schema(
        request=serializers.Serializer,
        parameters=[DRY_RUN],
        responses=ApplicationSerializer,
        description='Body {"revision": n}: makes a new revision with the spec of revision n.',
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        app = self.get_object()
        self._writable(app)
        revision = parse(RollbackInputSerializer, request.data)["revision"]
        try:
            app = services.application_rollback(
                actor=request.user,
                application=app,
                revision_number=revision,
                expected_version=_expected_version(request),
                dry_run=_dry_run(request),
            )
        except services.DryRun as dry:
            return Response({"dry_run": True, **dry.result})
        return self._respond(app)


FILE_QUERY = [
    OpenApiParameter("cluster", OpenApiTypes.INT, required=True, description="The cluster the file describes."),
    OpenApiParameter("dry_run", OpenApiTypes.BOOL, description="Plan only: per-app create/update/unchanged/delete."),
    OpenApiParameter("prune", OpenApiTypes.BOOL, description="Delete the team's apps on the cluster missing from it."),
    OpenApiParameter("format", OpenApiTypes.STR, description='GET: "yaml" for YAML (or Accept: application/yaml).'),
]


class YAMLRenderer(BaseRenderer):
    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return serve_files.dump_yaml(data).encode() if data is not None else b""


class ServeConfigFileView(PrincipalMixin, APIView):
    """A team's apps on one cluster as a standard Serve config file: POST applies one, GET exports one."""

    renderer_classes = [JSONRenderer, YAMLRenderer]

    def _team_and_cluster(self, request: Request, slug: str) -> tuple[Team, Cluster]:
        team = self.principal.teams().filter(slug=slug).first()
        if team is None:
            raise NotFound("No such team.")
        cluster_id = parse_id(request.query_params.get("cluster"))
        cluster = Cluster.objects.filter(pk=cluster_id).first() if cluster_id else None
        if cluster is None:
            raise ValidationError({"cluster": ["Required query parameter: the id of a registered cluster."]})
        return team, cluster

    @extend_schema(parameters=FILE_QUERY, responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, slug: str) -> Response:
        team, cluster = self._team_and_cluster(request, slug)
        return Response(serve_files.export_file(team=team, cluster=cluster))

    @extend_schema(
        parameters=FILE_QUERY,
        request={"application/json": OpenApiTypes.OBJECT, "application/yaml": OpenApiTypes.STR},
        responses={200: OpenApiTypes.OBJECT},
        description="Body: a Serve config file (JSON, or YAML with a YAML content type), as `serve build` writes it.",
    )
    def post(self, request: Request, slug: str) -> Response:
        team, cluster = self._team_and_cluster(request, slug)
        self.require_role(team, Role.MEMBER, "deploy applications")
        document = serve_files.parse_document(request.body, request.content_type or "")
        flag = lambda name: request.query_params.get(name, "").lower() in ("1", "true", "yes")  # noqa: E731
        result = serve_files.apply_file(
            actor=request.user,
            team=team,
            cluster=cluster,
            document=document,
            dry_run=flag("dry_run"),
            prune=flag("prune"),
        )
        return Response(result)


class RouteGrantSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.slug", read_only=True)
    granted_by = serializers.CharField(source="granted_by.username", default=None, read_only=True)

    class Meta:
        from .models import RouteGrant

        model = RouteGrant
        fields = ["id", "team", "prefix", "granted_by", "created_at"]
        read_only_fields = ["id", "team", "granted_by", "created_at"]


class RouteGrantInputSerializer(serializers.Serializer):
    prefix = StrictCharField(max_length=100, help_text="A route prefix, e.g. /shared/search")


class RouteGrantsView(PrincipalMixin, APIView):
    """Where a team's routes may live besides ``/<team-slug>``: its members read, staff grant (POST {"prefix"})."""

    def _team(self, slug: str) -> Team:
        team = self.principal.teams().filter(slug=slug).first()
        if team is None:
            raise NotFound("No such team.")
        return team

    @extend_schema(responses=RouteGrantSerializer(many=True), operation_id="team_route_grants_list")
    def get(self, request: Request, slug: str) -> Response:
        team = self._team(slug)
        return Response(RouteGrantSerializer(team.route_grants.select_related("team", "granted_by"), many=True).data)

    @extend_schema(request=RouteGrantSerializer, responses={201: RouteGrantSerializer}, operation_id="team_route_grant")
    def post(self, request: Request, slug: str) -> Response:
        team = self._team(slug)
        if not self.principal.is_staff:
            raise PermissionDenied("Only platform staff grant route prefixes.")
        prefix = parse(RouteGrantInputSerializer, request.data)["prefix"]
        grant = services.route_grant_create(actor=request.user, team=team, prefix=prefix)
        return Response(RouteGrantSerializer(grant).data, status=status.HTTP_201_CREATED)


class RouteGrantView(PrincipalMixin, APIView):
    @extend_schema(responses={204: None}, operation_id="team_route_grant_revoke")
    def delete(self, request: Request, slug: str, pk: int) -> Response:
        team = self.principal.teams().filter(slug=slug).first()
        grant = team.route_grants.filter(pk=pk).first() if team else None
        if grant is None:
            raise NotFound("No such route grant.")
        if not self.principal.is_staff:
            raise PermissionDenied("Only platform staff revoke route prefixes.")
        services.route_grant_delete(actor=request.user, grant=grant)
        return Response(status=status.HTTP_204_NO_CONTENT)
