from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets

from apps.core.principals import principal_of

from .models import AuditEvent
from .selectors import audit_events_for, filter_events


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label")
    team = serializers.CharField(source="team_slug")

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "at",
            "actor",
            "team",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "source",
            "request_id",
        ]
        read_only_fields = fields


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Read-only: the audit log cannot be changed through the product."""

    serializer_class = AuditEventSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no real user
            return AuditEvent.objects.none()
        return filter_events(audit_events_for(principal_of(self.request)), self.request.query_params).order_by(
            "-at", "-id"
        )

    @extend_schema(
        parameters=[OpenApiParameter(n, str) for n in ("team", "action", "actor", "object_type", "q", "since", "until")]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)
