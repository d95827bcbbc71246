"""``Authorization: Token <secret>`` for API tokens, stored hashed."""

from __future__ import annotations

from datetime import timedelta

from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.teams.models import TOKEN_PREFIX_LEN, ApiToken, hash_secret

BAD_TOKENS_ALLOWED = 30
BAD_TOKEN_WINDOW_S = 300


def _count_bad_token(request) -> None:
    """Guessing tokens is throttled per client address: after 30 wrong ones in 5 minutes, 429."""
    key = f"bad-token:{request.META.get('REMOTE_ADDR', '?')}"
    cache.add(key, 0, BAD_TOKEN_WINDOW_S)
    try:
        count = cache.incr(key)
    except ValueError:
        cache.set(key, 1, BAD_TOKEN_WINDOW_S)
        count = 1
    if count > BAD_TOKENS_ALLOWED:
        raise exceptions.Throttled(wait=BAD_TOKEN_WINDOW_S, detail="Too many invalid tokens from this address.")


class TokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: expected 'Token <secret>'.")
        try:
            secret = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        return self.check_secret(request, secret)

    def check_secret(self, request, secret: str):
        """The token's user and the token, or AuthenticationFailed (a wrong secret counts towards the throttle)."""
        token = (
            ApiToken.objects.select_related("user")
            .filter(prefix=secret[:TOKEN_PREFIX_LEN], secret_hash=hash_secret(secret))
            .first()
        )
        now = timezone.now()
        if token is None or not token.user.is_active:
            _count_bad_token(request)
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Token has been revoked.")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("Token has expired.")
        if token.last_used_at is None or now - token.last_used_at > timedelta(seconds=60):
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return (token.user, token)  # its scope is read from the token by the request principal

    def authenticate_header(self, request) -> str:
        return self.keyword


class RayTokenAuthentication(TokenAuthentication):
    """The same API tokens as Ray's own tools send them with ``RAY_AUTH_MODE=token``: ``Authorization: Bearer
    <token>``, or ``X-Ray-Authorization`` (what Ray's proxies and KubeRay forward), as Ray's dashboard reads them;
    ``Token <token>`` as the rest of the API takes it."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION") or request.META.get("HTTP_X_RAY_AUTHORIZATION") or ""
        scheme, _, secret = header.strip().partition(" ")
        if not header:
            return None
        if scheme.lower() not in ("bearer", "token") or not secret.strip() or not secret.strip().isascii():
            raise exceptions.AuthenticationFailed("Invalid token.")
        return self.check_secret(request, secret.strip())


try:
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
        target_class = "apps.teams.authentication.TokenAuthentication"
        name = "tokenAuth"

        def get_security_definition(self, auto_schema):
            return {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": 'API token, sent as "Token <secret>". Get one from POST /api/v1/auth/token/ or the UI.',
            }
except ImportError:  # pragma: no cover - drf-spectacular is a dependency; this keeps auth importable alone
    pass
