"""The rollouts API: ``/api/v1/applications/{id}/rollouts/`` (list, start) and ``/api/v1/rollouts/`` (read, pause,
resume, promote, abort). Every rollout is read through its application's team, so another team's is a 404."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.applications.models import Application
from apps.core.fields import StrictIntegerField, parse
from apps.core.pagination import Pagination
from apps.teams.models import Role
from apps.teams.permissions import PrincipalMixin, TeamScopedViewSet

from . import services
from .models import Rollout


class RolloutSerializer(serializers.ModelSerializer):
    application_name = serializers.CharField(source="application.name")
    team = serializers.CharField(source="application.team.slug")
    cluster = serializers.IntegerField(source="application.cluster_id")
    from_revision = serializers.IntegerField(source="from_revision.number")
    to_revision = serializers.IntegerField(source="to_revision.number")
    created_by = serializers.CharField(source="created_by.username", allow_null=True, default=None)
    step = serializers.SerializerMethodField(help_text="The step under way, counted from 1 (0 before the first).")

    class Meta:
        model = Rollout
        fields = [
            "id",
            "application",
            "application_name",
            "team",
            "cluster",
            "from_revision",
            "to_revision",
            "state",
            "phase",
            "steps",
            "step_seconds",
            "gates",
            "step",
            "weight",
            "promoted",
            "verdicts",
            "reason",
            "created_by",
            "created_at",
            "deadline_at",
            "step_started_at",
            "decided_at",
            "finished_at",
        ]

    def get_step(self, r: Rollout) -> int:
        return r.step_index + 1


class RolloutStartSerializer(serializers.Serializer):
    """The new version, as a spec in Serve's field names (a new revision is made) or an existing revision's
    number; the steps (percent of requests to the new version), each step's seconds, and the gates."""

    spec = serializers.DictField(required=False)
    revision = StrictIntegerField(required=False)
    steps = serializers.JSONField(required=False)
    step_seconds = serializers.JSONField(required=False)
    gates = serializers.JSONField(required=False)

    def to_internal_value(self, data: Any) -> dict:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({k: [f"Unknown field {k!r}."] for k in unknown})
        return super().to_internal_value(data)


def _rollouts() -> QuerySet[Rollout]:
    return Rollout.objects.select_related("application__team", "from_revision", "to_revision", "created_by").order_by(
        "-created_at", "-id"
    )


class ApplicationRolloutsView(PrincipalMixin, APIView):
    """GET: the application's rollouts, newest first. POST: start one (members)."""

    def _app(self, pk: int) -> Application:
        apps = self.principal.restrict(
            Application.objects.filter(deleted_at__isnull=True).select_related("team", "cluster"), "team", Role.VIEWER
        )
        return get_object_or_404(apps, pk=pk)

    @extend_schema(responses=RolloutSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        app = self._app(pk)
        paginator = Pagination()
        page = paginator.paginate_queryset(_rollouts().filter(application=app), request, view=self)
        return paginator.get_paginated_response(RolloutSerializer(page, many=True).data)

    @extend_schema(request=RolloutStartSerializer, responses={201: RolloutSerializer})
    def post(self, request: Request, pk: int) -> Response:
        app = self._app(pk)
        self.require_role(app.team, Role.MEMBER, "roll out its applications")
        body = parse(RolloutStartSerializer, request.data)
        rollout = services.rollout_start(actor=request.user, application=app, **body)
        return Response(RolloutSerializer(_rollouts().get(pk=rollout.pk)).data, status=status.HTTP_201_CREATED)


class RolloutViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TeamScopedViewSet):
    """Rollouts of the teams the principal reads; members pause, resume, promote or abort them."""

    serializer_class = RolloutSerializer
    model = Rollout
    team_field = "application__team"

    def base_queryset(self) -> QuerySet[Rollout]:
        qs = _rollouts()
        params = getattr(self, "request", None) and self.request.query_params
        if params and params.get("application", "").isdigit():
            qs = qs.filter(application_id=int(params["application"]))
        if params and params.get("state"):
            qs = qs.filter(state=params["state"])
        return qs

    def _act(self, fn: Any, verb: str) -> Response:
        rollout = self.get_object()
        self.require_role(rollout.application.team, Role.MEMBER, f"{verb} its rollouts")
        fn(actor=self.request.user, rollout=rollout)
        return Response(RolloutSerializer(_rollouts().get(pk=rollout.pk)).data)

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: Any = None) -> Response:
        return self._act(services.rollout_pause, "pause")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: Any = None) -> Response:
        return self._act(services.rollout_resume, "resume")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk: Any = None) -> Response:
        return self._act(services.rollout_promote, "promote")

    @extend_schema(request=None, responses=RolloutSerializer)
    @action(detail=True, methods=["post"])
    def abort(self, request: Request, pk: Any = None) -> Response:
        return self._act(services.rollout_abort, "abort")
