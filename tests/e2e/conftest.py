"""Fixtures of the browser tests that sign in through a real OpenID provider (tests/support/oidc_provider.py)."""

from __future__ import annotations

import pytest

from tests.conftest import require
from tests.support.oidc_provider import Provider, node_ready

SECRET = "test-client-secret-0123456789"
ACCOUNTS = {
    "erin": {"password": "erin-pass-123", "email": "erin@corp.example", "name": "Erin", "groups": []},
    "newbie": {"password": "newbie-pass-123", "email": "newbie@corp.example", "name": "New", "groups": ["contractors"]},
}


@pytest.fixture(scope="session")
def provider(live_server, tmp_path_factory):
    missing = node_ready()
    if missing:
        require(missing, "apt-get install nodejs npm; npm ci --prefix tests/support/oidc")
    callback = f"{live_server.url}/accounts/oidc/callback/"
    clients = [
        {
            "client_id": client_id,
            "client_secret": SECRET,
            "redirect_uris": [callback],
            "post_logout_redirect_uris": [f"{live_server.url}/accounts/login/"],
        }
        for client_id in ("controlplane", "controlplane-short")
    ]
    p = Provider(clients, ACCOUNTS, {"controlplane-short": 1}, tmp_path_factory.mktemp("oidc"))
    yield p
    p.stop()


@pytest.fixture
def sso(provider, settings):
    settings.OIDC_ISSUER = provider.issuer
    settings.OIDC_CLIENT_ID = "controlplane"
    settings.OIDC_CLIENT_SECRET = SECRET
    settings.OIDC_SCOPES = "openid email profile groups"
    settings.OIDC_PROVIDER_NAME = "Corp SSO"
    settings.OIDC_GROUP_TEAMS = "ml-platform=platform:admin,ml-readers=platform:viewer,search=search"
    settings.OIDC_STAFF_GROUP = "cp-admins"
    provider.set_accounts(ACCOUNTS)
    provider.tamper, provider.delay_s = None, 0.0
    provider.token_answers.clear()
    return provider
