from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.fields import StrictBooleanField, StrictCharField, StrictIntegerField, parse, says
from apps.core.roles import Role
from apps.teams.permissions import PrincipalMixin
from apps.teams.principal import principal_of

from . import services, shared
from .filters import AlertRuleFilter, IncidentFilter
from .kinds import KINDS, effective_params
from .models import AlertRule, DeliveryAttempt, Incident, WebhookEndpoint
from .selectors import visible_incidents, visible_rules
from .waste import compute, report_for, week_ending


class IncidentSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    rule = serializers.CharField(source="kind", read_only=True)
    application_name = serializers.CharField(source="application.name", read_only=True, default=None)
    cluster_name = serializers.CharField(source="cluster.name", read_only=True, default=None)
    summary = serializers.CharField(read_only=True, help_text="As your team sees it (a shared incident: your part)")
    evidence = serializers.JSONField(read_only=True, help_text="Your team's part of a shared incident's evidence")
    acknowledged = serializers.BooleanField(read_only=True, help_text="By staff, or (shared) by one of your teams")
    acknowledged_by = serializers.CharField(read_only=True, allow_null=True)
    acknowledged_at = serializers.DateTimeField(read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Incident
        fields = [
            "id",
            "rule",
            "rule_id",
            "state",
            "severity",
            "summary",
            "team",
            "application",
            "application_name",
            "cluster",
            "cluster_name",
            "evidence",
            "opened_at",
            "updated_at",
            "resolved_at",
            "reopened",
            "acknowledged",
            "acknowledged_by",
            "acknowledged_at",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, obj: Any) -> str:
        return services.incident_url(obj.incident)


class IncidentViewSet(PrincipalMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Incidents opened by alert rules: the readers of their team see them; a cluster's incident is shared by the
    teams with apps there, each reading its own part (apps.alerts.shared)."""

    serializer_class = IncidentSerializer
    filterset_class = IncidentFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Incident.objects.none()
        return visible_incidents(self.principal).order_by("-opened_at", "-id")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(IncidentSerializer(shared.views(self.principal, page), many=True).data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(IncidentSerializer(shared.view(self.principal, self.get_object())).data)

    @extend_schema(request=None, responses=IncidentSerializer)
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: Any = None) -> Response:
        """A team's incident: acknowledged for all. A shared one: for your own teams only (staff: for all)."""
        incident = services.acknowledge(actor=self.principal, incident=self.get_object())
        return Response(IncidentSerializer(shared.view(self.principal, incident)).data)


class AlertRuleSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    scope = serializers.CharField(source="scope_label", read_only=True)
    effective_params = serializers.SerializerMethodField()
    label = serializers.SerializerMethodField()

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "kind",
            "label",
            "team",
            "application",
            "cluster",
            "scope",
            "enabled",
            "params",
            "effective_params",
            "quiet_period_s",
            "email",
            "updated_at",
        ]
        read_only_fields = fields

    def get_effective_params(self, obj: AlertRule) -> dict[str, float]:
        return effective_params(obj.kind, obj.params)

    def get_label(self, obj: AlertRule) -> str:
        return KINDS[obj.kind].label


class TeamRefField(serializers.Field):
    """A team by its slug (a string) or its id (an integer)."""

    default_error_messages = {"invalid": "No such team among yours."}

    def to_internal_value(self, data: Any) -> str | int:
        if isinstance(data, bool) or not isinstance(data, str | int):
            self.fail("invalid")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class AlertRuleInputSerializer(serializers.Serializer):
    """The parser of a rule's POST and PATCH, and of the rules page's form: JSON types here, told in the sentences
    people read; what the values mean (the scope, each parameter's bounds) is the service's. Not in the schema,
    which documents the rule as it is read."""

    kind = StrictCharField(required=False, allow_blank=True)
    team = TeamRefField(required=False, allow_null=True)
    application = StrictIntegerField(
        required=False, allow_null=True, error_messages=says("No such application among your teams'.")
    )
    cluster = StrictIntegerField(required=False, allow_null=True, error_messages=says("No such cluster."))
    enabled = StrictBooleanField(required=False)
    email = StrictBooleanField(required=False)
    quiet_period_s = StrictIntegerField(
        required=False, error_messages=says("Must be a whole number of seconds between 0 and 604800.")
    )
    params = serializers.JSONField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "params" in attrs and attrs["params"] in (None, ""):
            attrs["params"] = {}  # no parameters: the kind's defaults
        return attrs


def rule_scope_unchanged(rule: AlertRule, body: dict[str, Any]) -> None:
    """A rule's kind and scope are what it is: changing them is another rule (400 naming each)."""
    errors = {
        key: ["Cannot be changed; make a new rule for another scope."]
        for key in ("kind", "team", "application", "cluster")
        if key in body and body[key] != (rule.kind if key == "kind" else getattr(rule, f"{key}_id"))
    }
    if errors:
        raise serializers.ValidationError(errors)


SETTINGS = ("enabled", "params", "quiet_period_s", "email")


class AlertRuleViewSet(PrincipalMixin, viewsets.ModelViewSet):
    """Rules: defaults (no scope) every team gets; overrides per team, application (team admins) or cluster
    (staff). POST {"kind", "team"|"application"|"cluster", "params", "enabled", "quiet_period_s", "email"}."""

    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilter
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AlertRule.objects.none()
        return visible_rules(self.principal)

    def _may_change(self, rule: AlertRule) -> None:
        if rule.team_id is None:
            if not self.principal.is_staff:
                raise PermissionDenied("Only staff change default and cluster-wide rules.")
        elif not self.principal.can(rule.team, Role.ADMIN):
            raise PermissionDenied(f"You need the admin role in team {rule.team.slug} to change its rules.")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = parse(AlertRuleInputSerializer, request.data)
        rule = services.rule_create(
            actor=self.principal,
            kind=body.get("kind", ""),
            team=body.get("team"),
            application=body.get("application"),
            cluster=body.get("cluster"),
            **{k: body[k] for k in SETTINGS if k in body},
        )
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rule = self.get_object()
        self._may_change(rule)
        body = parse(AlertRuleInputSerializer, request.data)
        rule_scope_unchanged(rule, body)
        rule = services.rule_update(actor=self.principal, rule=rule, **{k: body[k] for k in SETTINGS if k in body})
        return Response(AlertRuleSerializer(rule).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rule = self.get_object()
        self._may_change(rule)
        services.rule_delete(actor=request.user, rule=rule)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookSerializer(serializers.ModelSerializer):
    secret = serializers.CharField(write_only=True)
    last_attempts = serializers.SerializerMethodField()

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "secret",
            "format",
            "enabled",
            "disabled_reason",
            "consecutive_failures",
            "created_at",
            "last_attempts",
        ]
        read_only_fields = ["id", "enabled", "disabled_reason", "consecutive_failures", "created_at"]

    def get_last_attempts(self, obj: WebhookEndpoint) -> list[dict]:
        rows = DeliveryAttempt.objects.filter(delivery__endpoint=obj).order_by("-at", "-id")[:5]
        return [
            {"at": a.at, "ok": a.ok, "status_code": a.status_code, "answer": a.answer, "duration_ms": a.duration_ms}
            for a in rows
        ]


class WebhookInputSerializer(serializers.Serializer):
    """The parser of a new endpoint: JSON strings here; the service judges the URL (public, http(s)), the secret's
    length and the format, and names what is wrong."""

    url = StrictCharField(
        allow_blank=True,
        error_messages={
            "required": "Required: the http(s) URL that receives the signed requests.",
            "invalid": "Required: the http(s) URL that receives the signed requests.",
            "null": "Required: the http(s) URL that receives the signed requests.",
        },
    )
    secret = StrictCharField(
        allow_blank=True,
        error_messages={
            "required": "Required: at least 16 characters, shared with the receiver to verify signatures.",
            "invalid": "Required: at least 16 characters, shared with the receiver to verify signatures.",
            "null": "Required: at least 16 characters, shared with the receiver to verify signatures.",
        },
    )
    format = StrictCharField(required=False)


def _team_admin(request: Request, slug: str) -> Any:
    principal = principal_of(request)
    team = principal.teams().filter(slug=slug).first()
    if team is None:
        raise NotFound("No such team.")
    if not principal.can(team, Role.ADMIN):
        raise PermissionDenied(f"You need the admin role in team {team.slug} to manage its webhooks.")
    return team


class WebhookListView(APIView):
    """A team's webhook endpoints (team admins). The secret is write-only: it is never shown again."""

    @extend_schema(responses=WebhookSerializer(many=True))
    def get(self, request: Request, slug: str) -> Response:
        team = _team_admin(request, slug)
        return Response(WebhookSerializer(team.webhooks.all(), many=True).data)

    @extend_schema(request=WebhookSerializer, responses={201: WebhookSerializer})
    def post(self, request: Request, slug: str) -> Response:
        team = _team_admin(request, slug)
        data = parse(WebhookInputSerializer, request.data)
        endpoint = services.webhook_create(actor=request.user, team=team, **data)
        return Response(WebhookSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    """DELETE removes an endpoint; POST with {"enabled": true} re-enables a disabled one."""

    def _endpoint(self, request: Request, slug: str, pk: int) -> WebhookEndpoint:
        team = _team_admin(request, slug)
        endpoint = team.webhooks.filter(pk=pk).first()
        if endpoint is None:
            raise NotFound("No such webhook endpoint in this team.")
        return endpoint

    @extend_schema(responses=WebhookSerializer)
    def get(self, request: Request, slug: str, pk: int) -> Response:
        return Response(WebhookSerializer(self._endpoint(request, slug, pk)).data)

    @extend_schema(request=None, responses=WebhookSerializer, operation_id="v1_teams_webhooks_enable")
    def post(self, request: Request, slug: str, pk: int) -> Response:
        endpoint = services.webhook_enable(actor=request.user, endpoint=self._endpoint(request, slug, pk))
        return Response(WebhookSerializer(endpoint).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, slug: str, pk: int) -> Response:
        services.webhook_delete(actor=request.user, endpoint=self._endpoint(request, slug, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WasteReportView(APIView):
    """A team's GPU waste report: the week so far (default) or a stored week (``?week=last``)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, slug: str) -> Response:
        team = principal_of(request).teams().filter(slug=slug).first()
        if team is None:
            raise NotFound("No such team.")
        now = timezone.now()
        if request.query_params.get("week") == "last":
            return Response(report_for(team, week_ending(now)).body)
        return Response(compute(team, now - timedelta(days=7), now))
