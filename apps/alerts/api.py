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

from apps.core.roles import Role
from apps.teams.selectors import can, teams_for

from . import services
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
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", read_only=True, default=None)
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
            "acknowledged_by",
            "acknowledged_at",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, obj: Incident) -> str:
        return services.incident_url(obj)


class IncidentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Incidents opened by alert rules: the readers of their team (or of the cluster's teams) see them."""

    serializer_class = IncidentSerializer
    filterset_class = IncidentFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Incident.objects.none()
        return visible_incidents(self.request.user).order_by("-opened_at", "-id")

    @extend_schema(request=None, responses=IncidentSerializer)
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: Any = None) -> Response:
        incident = self.get_object()
        teams = [incident.team] if incident.team_id else list(teams_for(request.user))
        if not request.user.is_staff and not any(can(request.user, t, Role.MEMBER) for t in teams):
            raise PermissionDenied("You need the member role in the incident's team to acknowledge it.")
        return Response(IncidentSerializer(services.acknowledge(actor=request.user, incident=incident)).data)


class AlertRuleSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
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


class AlertRuleViewSet(viewsets.ModelViewSet):
    """Rules: defaults (no scope) every team gets; overrides per team, application (team admins) or cluster
    (staff). POST {"kind", "team"|"application"|"cluster", "params", "enabled", "quiet_period_s", "email"}."""

    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilter
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AlertRule.objects.none()
        return visible_rules(self.request.user)

    def _can_admin(self, team: Any) -> bool:
        return can(self.request.user, team, Role.ADMIN)

    def _may_change(self, rule: AlertRule) -> None:
        if rule.team_id is None:
            if not self.request.user.is_staff:
                raise PermissionDenied("Only staff change default and cluster-wide rules.")
        elif not self._can_admin(rule.team):
            raise PermissionDenied(f"You need the admin role in team {rule.team.slug} to change its rules.")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        rule = services.rule_save(actor=request.user, data=data, can_admin_team=self._can_admin)
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rule = self.get_object()
        self._may_change(rule)
        data = request.data if isinstance(request.data, dict) else {}
        rule = services.rule_save(actor=request.user, data=data, rule=rule, can_admin_team=self._can_admin)
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


def _team_admin(request: Request, slug: str) -> Any:
    team = teams_for(request.user).filter(slug=slug).first()
    if team is None:
        raise NotFound("No such team.")
    if not can(request.user, team, Role.ADMIN):
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
        data = request.data if isinstance(request.data, dict) else {}
        endpoint = services.webhook_create(actor=request.user, team=team, data=data)
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
        team = teams_for(request.user).filter(slug=slug).first()
        if team is None:
            raise NotFound("No such team.")
        now = timezone.now()
        if request.query_params.get("week") == "last":
            return Response(report_for(team, week_ending(now)).body)
        return Response(compute(team, now - timedelta(days=7), now))
