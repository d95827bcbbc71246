from __future__ import annotations

from rest_framework import mixins, serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from apps.applications.models import Application
from apps.applications.selectors import visible_application
from apps.core.fields import StrictCharField, StrictIntegerField, parse, says
from apps.metrics.sources import residency
from apps.teams.models import Role
from apps.teams.permissions import TeamScopedViewSet

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


APPLICATION_REQUIRED = says("Required: the id of one of your teams' applications.")


class ModelEntryInputSerializer(serializers.Serializer):
    """The parser of a model's POST and PUT/PATCH: JSON types here; what the values mean (a deployment of the app,
    an allowed URI, a free model id) is judged by the service, which names what is wrong."""

    application = StrictIntegerField(error_messages=APPLICATION_REQUIRED)
    deployment = StrictCharField()
    model_id = StrictCharField()
    uri = StrictCharField()
    size_bytes = StrictIntegerField(required=False, allow_null=True, min_value=0)
    description = StrictCharField(required=False, allow_blank=True, max_length=500)


class ModelEntryViewSet(
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    mixins.ListModelMixin,
    TeamScopedViewSet,
):
    """The multiplexed-model catalog. Writes reach the app's user_config on the next push."""

    filterset_class = ModelEntryFilter

    serializer_class = ModelEntrySerializer
    model = ModelEntry
    team_field = "application__team"

    def base_queryset(self):
        return ModelEntry.objects.select_related("application__team").order_by(
            "application_id", "deployment", "model_id"
        )

    def _writable(self, app: Application) -> None:
        self.require_role(app.team, Role.MEMBER, "change its models")

    def create(self, request, *args, **kwargs):
        data = parse(ModelEntryInputSerializer, request.data)
        app = visible_application(self.principal, data["application"], live=True)
        if app is None:
            raise ValidationError({"application": ["Required: the id of one of your teams' applications."]})
        self._writable(app)
        entry = services.model_create(
            actor=request.user,
            application=app,
            deployment=data["deployment"],
            model_id=data["model_id"],
            uri=data["uri"],
            size_bytes=data.get("size_bytes"),
            description=data.get("description", ""),
        )
        return Response(ModelEntrySerializer(entry).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        entry = self.get_object()
        self._writable(entry.application)
        data = parse(ModelEntryInputSerializer, request.data, partial=True)
        for key in ("application", "deployment", "model_id"):
            if key in data and data[key] != getattr(entry, key if key != "application" else "application_id"):
                raise ValidationError({key: ["Cannot be changed; delete the entry and add a new one."]})
        entry = services.model_update(
            actor=request.user,
            entry=entry,
            uri=data.get("uri", entry.uri),
            size_bytes=data.get("size_bytes", entry.size_bytes),
            description=data.get("description", entry.description),
        )
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
        app = visible_application(self.principal, app_id)
        if app is None:
            raise ValidationError({"application": ["Required: the id of one of your teams' applications."]})
        return Response({"application": app.pk, "resident": residency(app.cluster, app.serve_name)})
