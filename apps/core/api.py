from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from apps.teams.models import TOKEN_PREFIX_LEN, ApiToken, hash_secret


def issue_token(*, user, name: str, team=None, role: str = "", expires_at=None) -> tuple[ApiToken, str]:  # type: ignore[no-untyped-def]
    """Create a token and return it with its secret, which is never stored and never shown again."""
    while True:
        secret = ApiToken.generate_secret()
        if not ApiToken.objects.filter(prefix=secret[:TOKEN_PREFIX_LEN]).exists():
            break
    token = ApiToken.objects.create(
        user=user,
        team=team,
        role=role,
        name=name,
        prefix=secret[:TOKEN_PREFIX_LEN],
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
    )
    return token, secret


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
        request=TokenRequest, responses=inline_serializer("TokenResponse", {"token": serializers.CharField()})
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
        _, secret = issue_token(user=user, name="api login")
        return Response({"token": secret})
