"""The whole API fuzzed from its own OpenAPI schema (schemathesis) as every role: an outsider, a viewer, a member,
an admin and an owner of a team, and staff. No response is a 5xx; every documented response matches its schema
(body and content type); nobody outside a team sees its data. The cases run per role are counted and printed
in the test session's summary."""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from schemathesis.config import SchemathesisConfig

from apps.applications.services import application_create
from apps.quotas.services import quota_set
from apps.teams.models import Membership
from apps.teams.services import issue_token, team_create

SCHEMA = schemathesis.openapi.from_dict(
    SchemaGenerator().get_schema(request=None, public=True),
    # Examples and random fuzzing for every operation; the boundary-value "coverage" phase is left out, as it
    # multiplies the calls tenfold without reaching code the fuzzing phase does not (measured: 38,000 calls, 11 min).
    config=SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}}}),
)
SECRET_MARK = "hiddenteam"
ROLES = ("outsider", "viewer", "member", "admin", "owner", "staff")
CASES: Counter[str] = Counter()  # role -> API calls made (printed by tests/conftest.py's summary hook)
EXAMPLES = 10


@pytest.fixture
def fuzz_world(make_user, make_cluster, staff):
    owner_of_hidden = make_user("hiddenowner")
    hidden = team_create(actor=owner_of_hidden, slug=SECRET_MARK, name="Hidden team")
    cluster = make_cluster()
    quota_set(actor=staff, team=hidden, cluster=cluster, pool_name="a100", gpus=4)
    application_create(
        actor=owner_of_hidden,
        team=hidden,
        cluster=cluster,
        name="hiddenapp",
        spec={
            "route_prefix": "/hiddenteam/app",
            "import_path": "examples.hello:app",
            "deployments": [{"name": "Hello"}],
        },
    )
    owner = make_user("fuzzowner")
    mine = team_create(actor=owner, slug="fuzzteam", name="Fuzz team")
    quota_set(actor=staff, team=mine, cluster=cluster, pool_name="a100", gpus=2)
    tokens = {"owner": issue_token(user=owner, name="fuzz")[1], "staff": issue_token(user=staff, name="fuzz")[1]}
    for role in ("viewer", "member", "admin"):
        user = make_user(f"fuzz{role}")
        Membership.objects.create(team=mine, user=user, role=role)
        tokens[role] = issue_token(user=user, name="fuzz")[1]
    tokens["outsider"] = issue_token(user=make_user("fuzzer"), name="fuzz")[1]
    return tokens


@pytest.mark.django_db(transaction=True)
@SCHEMA.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_fuzz(case, live_server, fuzz_world):
    from django.core.cache import cache

    cache.clear()  # the fuzzer would otherwise trip the rate limits, which are tested on their own
    for role in ROLES:
        response = case.call(base_url=live_server.url, headers={"Authorization": f"Token {fuzz_world[role]}"})
        CASES[role] += 1
        case.validate_response(
            response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
        )
        if role != "staff":  # no team member of fuzzteam, nor an outsider, belongs to the hidden team
            assert SECRET_MARK not in response.text and "hiddenapp" not in response.text, (
                role,
                case.method,
                case.formatted_path,
            )
