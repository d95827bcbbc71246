from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from apps.teams.services import token_create


class TokenRequest(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, style={"input_type": "password"})


class ObtainTokenView(APIView):
    """Exchange a username and password for an API token."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    @extend_schema(
        request=TokenRequest,
        responses=inline_serializer(
            "TokenResponse",
            {"token": serializers.CharField(), "expires_at": serializers.DateTimeField(allow_null=True)},
        ),
    )
    def post(self, request):  # type: ignore[no-untyped-def]
        body = TokenRequest(data=request.data)
        body.is_valid(raise_exception=True)
        user = authenticate(request, username=body.validated_data["username"], password=body.validated_data["password"])
        if user is None or not user.is_active:
            return Response(
                {"non_field_errors": ["Unable to log in with the given username and password."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        from datetime import timedelta

        from django.conf import settings
        from django.utils import timezone

        days = settings.API_LOGIN_TOKEN_TTL_DAYS
        expires_at = timezone.now() + timedelta(days=days) if days else None
        # A named, audited, expiring token like any other: the user's token list shows it and can revoke it.
        _, secret = token_create(
            actor=user, name=f"api login {timezone.now():%Y-%m-%d %H:%M}", expires_at=expires_at, source="api"
        )
        return Response({"token": secret, "expires_at": expires_at.isoformat() if expires_at else None})
