from __future__ import annotations

from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from apps.applications.models import Application
from apps.applications.selectors import visible_application
from apps.metrics.selectors import residency
from apps.teams.models import Role
from apps.teams.selectors import can, teams_for

from . import services
from .filters import ModelEntryFilter
from .models import ModelEntry


class ModelEntrySerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="application.team.slug", read_only=True)

    class Meta:
        model = ModelEntry
        fields = [
            "id",
            "team",
            "application",
            "deployment",
            "model_id",
            "uri",
            "size_bytes",
            "description",
            "created_at",
        ]
        read_only_fields = ["id", "team", "created_at"]


class ModelEntryViewSet(viewsets.ModelViewSet):
    """The multiplexed-model catalog. Writes reach the app's user_config on the next push."""

    filterset_class = ModelEntryFilter

    serializer_class = ModelEntrySerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ModelEntry.objects.none()
        qs = ModelEntry.objects.filter(application__team__in=teams_for(self.request.user)).select_related(
            "application__team"
        )
        return qs.order_by("application_id", "deployment", "model_id")

    def _writable(self, app: Application) -> None:
        if not can(self.request.user, app.team, Role.MEMBER):
            raise PermissionDenied(f"You need the member role in team {app.team.slug} to change its models.")

    def create(self, request, *args, **kwargs):
        data = request.data if isinstance(request.data, dict) else {}
        app_id = data.get("application")
        app = visible_application(request.user, app_id, live=True) if isinstance(app_id, int) else None
        if app is None:
            raise ValidationError({"application": ["Required: the id of one of your teams' applications."]})
        self._writable(app)
        entry = services.model_create(
            actor=request.user,
            application=app,
            deployment=data.get("deployment"),
            model_id=data.get("model_id"),
            uri=data.get("uri"),
            size_bytes=data.get("size_bytes"),
            description=data.get("description", ""),
        )
        return Response(ModelEntrySerializer(entry).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        entry = self.get_object()
        self._writable(entry.application)
        data = request.data if isinstance(request.data, dict) else {}
        for key in ("application", "deployment", "model_id"):
            if key in data and data[key] != getattr(entry, key if key != "application" else "application_id"):
                raise ValidationError({key: ["Cannot be changed; delete the entry and add a new one."]})
        entry = services.model_update(actor=request.user, entry=entry, data=data)
        return Response(ModelEntrySerializer(entry).data)

    def destroy(self, request, *args, **kwargs):
        entry = self.get_object()
        self._writable(entry.application)
        services.model_delete(actor=request.user, entry=entry)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=False, methods=["get"])
    def residency(self, request):
        """Which replicas hold which models now (from ray_serve_registered_multiplexed_model_id)."""
        app_id = request.query_params.get("application", "")
        app = visible_application(request.user, app_id)
        if app is None:
            raise ValidationError({"application": ["Required: the id of one of your teams' applications."]})
        return Response({"application": app.pk, "resident": residency(app.cluster, app.serve_name)})
