"""The whole API fuzzed from its own OpenAPI schema (schemathesis): no 500s and no other team's data, for an
outsider, a team member and staff. Responses are also checked against the documented schema."""

from __future__ import annotations

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from apps.applications.services import application_create
from apps.core.api import issue_token
from apps.quotas.services import quota_set
from apps.teams.services import team_create

SCHEMA = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
SECRET_MARK = "hiddenteam"


@pytest.fixture
def fuzz_world(make_user, make_cluster, staff):  # type: ignore[no-untyped-def]
    owner = make_user("hiddenowner")
    hidden = team_create(actor=owner, slug=SECRET_MARK, name="Hidden team")
    cluster = make_cluster()
    quota_set(actor=staff, team=hidden, cluster=cluster, pool_name="a100", gpus=4)
    application_create(
        actor=owner,
        team=hidden,
        cluster=cluster,
        name="hiddenapp",
        spec={
            "route_prefix": "/hiddenteam/app",
            "import_path": "examples.hello:app",
            "deployments": [{"name": "Hello"}],
        },
    )
    outsider = make_user("fuzzer")
    mine = team_create(actor=outsider, slug="fuzzteam", name="Fuzz team")
    quota_set(actor=staff, team=mine, cluster=cluster, pool_name="a100", gpus=2)
    return {
        "outsider": issue_token(user=outsider, name="fuzz")[1],
        "staff": issue_token(user=staff, name="fuzz")[1],
    }


@pytest.mark.django_db(transaction=True)
@SCHEMA.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_fuzz(case, live_server, fuzz_world):  # type: ignore[no-untyped-def]
    from django.core.cache import cache

    cache.clear()  # the fuzzer would otherwise trip the rate limits, which are tested on their own
    for role, token in fuzz_world.items():
        response = case.call(base_url=live_server.url, headers={"Authorization": f"Token {token}"})
        case.validate_response(response, checks=[not_a_server_error])
        if role == "outsider":
            assert SECRET_MARK not in response.text and "hiddenapp" not in response.text, (
                case.method,
                case.formatted_path,
            )
