"""The relying party: Authlib's OpenID Connect client, configured from settings alone.

Authlib does the protocol: discovery from the issuer, the authorization request with ``state``, ``nonce`` and a
PKCE S256 challenge (kept in the session), the code exchange, and the ID token's checks (signature against the
provider's keys, ``iss``, ``aud``, ``exp``/``iat`` with ``OIDC_CLOCK_SKEW_S`` of leeway, ``nonce``). This module adds
what it leaves to the application: the issuer in the discovery document must be the configured one, and a token
answer without an ID token is refused.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from authlib.integrations.base_client import MismatchingStateError
from authlib.integrations.django_client import DjangoOAuth2App, OAuth, OAuthError
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError

logger = logging.getLogger(__name__)


class SignInFailed(Exception):
    """The provider's answer cannot be trusted or used; the message says why, and holds no token."""


@functools.lru_cache(maxsize=4)
def _client(issuer: str, client_id: str, client_secret: str, scopes: str, timeout: int) -> DjangoOAuth2App:
    oauth = OAuth()
    return oauth.register(
        "oidc",
        client_id=client_id,
        client_secret=client_secret,
        server_metadata_url=issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": scopes, "code_challenge_method": "S256", "default_timeout": timeout},
    )


def client() -> DjangoOAuth2App:
    app = _client(
        settings.OIDC_ISSUER,
        settings.OIDC_CLIENT_ID,
        settings.OIDC_CLIENT_SECRET,
        settings.OIDC_SCOPES,
        settings.OIDC_TIMEOUT_S,
    )
    try:
        metadata = app.load_server_metadata()
    except Exception as exc:  # noqa: BLE001 - any failure to reach or read discovery means no sign-in now
        raise SignInFailed(f"The sign-in provider did not answer ({type(exc).__name__}); try again shortly.") from exc
    if metadata.get("issuer") != settings.OIDC_ISSUER:
        app.server_metadata.clear()  # read it again next time
        raise SignInFailed(
            f"The provider's discovery document names issuer {metadata.get('issuer')!r}, "
            f"not the configured {settings.OIDC_ISSUER!r}."
        )
    return app


def start(request: HttpRequest, redirect_uri: str) -> HttpResponse:
    """Redirect to the provider; state, nonce and the PKCE verifier stay in this browser's session."""
    return client().authorize_redirect(request, redirect_uri)


def finish(request: HttpRequest) -> dict[str, Any]:
    """The verified ID token's claims, from the provider's redirect. The token itself is not kept anywhere."""
    app = client()
    try:
        token = app.authorize_access_token(request, leeway=settings.OIDC_CLOCK_SKEW_S)
    except MismatchingStateError as exc:  # no state, or one this browser's session did not start (or used up)
        raise SignInFailed("The sign-in's state does not match this browser's: start the sign-in again.") from exc
    except OAuthError as exc:
        raise SignInFailed(f"The provider refused the sign-in: {exc.description or exc.error}.") from exc
    except (JoseError, ValueError) as exc:
        logger.warning("ID token refused: %s", type(exc).__name__)
        raise SignInFailed(f"The ID token was refused: {_reason(exc)}.") from exc
    except Exception as exc:  # noqa: BLE001 - a dropped connection or a non-JSON answer from the token endpoint
        raise SignInFailed(f"The code exchange with the provider failed ({type(exc).__name__}).") from exc
    claims = token.get("userinfo")
    if not token.get("id_token") or not claims:
        raise SignInFailed("The provider's token answer holds no ID token.")
    return {**_userinfo(app, token, claims["sub"]), **claims}


def _userinfo(app: DjangoOAuth2App, token: dict[str, Any], sub: str) -> dict[str, Any]:
    """The UserInfo endpoint's claims. Many providers (oidc-provider by default, Okta for some claims) put email and
    groups there rather than in the ID token. Its ``sub`` must be the ID token's; when it cannot be read, the ID
    token's claims alone are used."""
    if not app.server_metadata.get("userinfo_endpoint") or not token.get("access_token"):
        return {}
    try:
        info = dict(app.userinfo(token=token))
    except Exception:  # noqa: BLE001 - the ID token is verified; the extra claims are a bonus
        logger.warning("the provider's userinfo endpoint did not answer; using the ID token's claims")
        return {}
    if info.get("sub") != sub:
        raise SignInFailed("The provider's userinfo names another person than the ID token (sub differs).")
    return info


def _reason(exc: Exception) -> str:
    if isinstance(exc, ExpiredTokenError):
        return "it has expired"
    if isinstance(exc, BadSignatureError):
        return "its signature does not verify against the provider's keys"
    if isinstance(exc, InvalidClaimError | MissingClaimError):
        return f"its {exc.claim} claim is {'missing' if isinstance(exc, MissingClaimError) else 'wrong'}"
    return getattr(exc, "description", None) or type(exc).__name__


def logout_url(post_logout_redirect_uri: str) -> str | None:
    """Where to send the browser so the provider ends its session too; None when it offers no end-session URL.
    The client id stands in for the ID token hint (RP-initiated logout allows either), so no ID token is stored."""
    try:
        app = client()
    except SignInFailed:
        return None
    if not app.server_metadata.get("end_session_endpoint"):
        return None
    return app.create_logout_url(post_logout_redirect_uri=post_logout_redirect_uri, client_id=app.client_id)["url"]
