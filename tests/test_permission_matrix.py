"""The permission matrix, generated from the URL configuration.

Every route the project serves (API endpoints, pages, htmx partials, exports, charts, JSON endpoints) is requested
with each of its methods by ten principals, on team A's object ("own") and on team B's ("other"), and the status
is checked against the route's rule. Every response to anyone but (unscoped) staff is searched for team B's secrets
(``tests/support/world.py``), and a response to someone below admin in team A for A's people's addresses. Writes run
inside a savepoint that is rolled back, so each request meets the same world.

A route that is not in ``ROUTES`` fails ``test_every_route_is_in_the_matrix``: the next endpoint cannot be
forgotten. The summary line of the test run reports the matrix's size (routes x methods x principals x sides).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from apps.teams.models import ROLE_RANK, Role
from apps.teams.services import issue_token
from tests.support import world as w

pytestmark = pytest.mark.django_db

# principal -> (its role in team A, how it signs in). Staff is an admin member of A for its scoped token.
PRINCIPALS: dict[str, tuple[str | None, str]] = {
    "anonymous": (None, "none"),
    "outsider": (None, "user"),
    "viewer": (Role.VIEWER, "user"),
    "member": (Role.MEMBER, "user"),
    "admin": (Role.ADMIN, "user"),
    "owner": (Role.OWNER, "user"),
    "staff": (Role.OWNER, "user"),
    "viewer_token": (Role.VIEWER, "scoped"),  # the owner's token, scoped to team A as a viewer
    "staff_token": (Role.MEMBER, "scoped"),  # a staff user's token, scoped to team A as a member: not staff
    "deactivated": (None, "gone"),  # a member's token (and session) after the account was deactivated
}
SIZE: dict[str, int] = {"requests": 0}

# ---- rules -----------------------------------------------------------------------------------------------------

OK, DENIED, NOT_FOUND, SIGN_IN, NOT_ALLOWED, ANY = "ok", "denied", "not_found", "sign_in", "not_allowed", "any"


@dataclass(frozen=True)
class Rule:
    """Who may use a method of a route. ``who``: public | signed_in | unscoped | staff | team | team_staff | tokens.
    ``role``: the role in the object's team (team rules). ``other``: what non-staff get on team B's object
    (not_found, or denied where the object is named in a body and refused as a field)."""

    who: str
    role: str = Role.VIEWER
    other: str = NOT_FOUND
    staff_gets: str = OK


def public() -> Rule:
    return Rule("public")


def signed_in() -> Rule:
    return Rule("signed_in")


def unscoped() -> Rule:
    return Rule("unscoped")


def staff(gets: str = OK) -> Rule:
    return Rule("staff", staff_gets=gets)


def team(role: str = Role.VIEWER, other: str = NOT_FOUND) -> Rule:
    return Rule("team", role, other)


def team_read_staff_write() -> Rule:
    return Rule("team_staff", Role.VIEWER)


def team_read_staff_post() -> Rule:
    """A team object that only staff change: its readers are denied (403), other teams' get 404."""
    return Rule("team_staff", Role.ADMIN)


def not_allowed() -> Rule:
    return Rule("not_allowed")


def expected(rule: Rule, principal: str, side: str, page: bool) -> str:
    role, how = PRINCIPALS[principal]
    anonymous_like = how in ("none", "gone") or (page and how == "scoped")  # pages ignore API tokens
    if rule.who == "public":
        return ANY
    if anonymous_like:
        return SIGN_IN
    is_staff = principal == "staff"
    if rule.who == "not_allowed":
        return NOT_ALLOWED
    if rule.who == "signed_in":
        return OK
    if rule.who == "unscoped":
        return DENIED if how == "scoped" else OK
    if rule.who == "staff":
        return rule.staff_gets if is_staff else DENIED
    if rule.who == "tokens":
        if side == "other":
            return NOT_FOUND  # another team's tokens: nobody's to manage here, staff included
        return OK if ROLE_RANK.get(role or "", 0) >= ROLE_RANK[Role.ADMIN] and how == "user" else NOT_FOUND
    if side == "other" and not is_staff:
        return rule.other
    if is_staff:
        return OK
    if rule.who == "team_staff" and rule.role != Role.VIEWER:
        return DENIED
    if role is not None and ROLE_RANK[role] >= ROLE_RANK[rule.role]:
        return OK
    # a team named in a body (not the URL) that the principal may not use is refused as a field, or denied
    return "refused" if rule.other == "refused" else DENIED


def tokens_rule() -> Rule:
    return Rule("tokens")


# ---- routes ------------------------------------------------------------------------------------------------------

Builder = Callable[[w.World, str], Any]


@dataclass
class Route:
    path: Builder
    methods: dict[str, Rule]
    body: dict[str, Builder] = field(default_factory=dict)
    sides: tuple[str, ...] = ("own", "other")
    page: bool = False
    ok: frozenset[int] | None = None  # statuses that mean "allowed" here (default: 2xx, 3xx but sign-in, 400, 409, 410)


def C(x: w.World) -> int:  # noqa: N802
    return x.cluster.pk


def slug(x: w.World, s: str) -> str:
    return x.team(s).slug


def app_id(x: w.World, s: str) -> int:
    return x.app(s).pk


def membership(x: w.World, s: str) -> int:
    from apps.teams.models import Membership

    return Membership.objects.get(team=x.team(s), user=x.obj("member", s)).pk


SINGLE = ("own",)

APP_BODY = {
    "route_prefix": "/team-a/newapp",
    "import_path": "examples.hello:app",
    "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
}

ROUTES: dict[str, Route] = {
    # -- API: auth and accounts
    "api-token": Route(lambda x, s: "/api/v1/auth/token/", {"POST": public()}, sides=SINGLE),
    "api-cli-login": Route(lambda x, s: "/api/v1/auth/cli-login/", {"POST": public()}, sides=SINGLE),
    "api-cli-login-token": Route(
        lambda x, s: "/api/v1/auth/cli-login/unknownrequest000/token/", {"POST": public()}, sides=SINGLE
    ),
    "api-root": Route(lambda x, s: "/api/v1/", {"GET": signed_in()}, sides=SINGLE),
    "schema": Route(lambda x, s: "/api/schema/", {"GET": public()}, sides=SINGLE),
    "api-docs": Route(lambda x, s: "/api/docs/", {"GET": public()}, sides=SINGLE),
    "join-requests": Route(
        lambda x, s: "/api/v1/join-requests/",
        {"GET": unscoped(), "POST": unscoped()},
        body={"POST": lambda x, s: {"team": "team-b"}},
        sides=SINGLE,
    ),
    "token-list": Route(
        lambda x, s: "/api/v1/tokens/",
        {"GET": signed_in(), "POST": unscoped()},
        body={"POST": lambda x, s: {"name": "matrix"}},
        sides=SINGLE,
    ),
    "token-detail": Route(
        lambda x, s: f"/api/v1/tokens/{x.obj('token', s).pk}/", {"GET": tokens_rule(), "DELETE": tokens_rule()}
    ),
    # -- API: teams
    "team-list": Route(
        lambda x, s: "/api/v1/teams/",
        {"GET": signed_in(), "POST": unscoped()},
        body={"POST": lambda x, s: {"slug": "matrix-team", "name": "Matrix"}},
        sides=SINGLE,
    ),
    "team-detail": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/",
        {"GET": team(), "PATCH": team(Role.ADMIN), "DELETE": team(Role.OWNER), "PUT": not_allowed()},
        body={"PATCH": lambda x, s: {"name": "Renamed"}},
    ),
    "team-members": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/members/",
        {"GET": team(), "POST": team(Role.ADMIN)},
        body={"POST": lambda x, s: {"username": "joiner", "role": "member"}},
    ),
    "team-member": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/members/{x.obj('member', s).username}/",
        {"PATCH": team(Role.ADMIN), "DELETE": team(Role.ADMIN)},
        body={"PATCH": lambda x, s: {"role": "viewer"}},
    ),
    "team-serve-config": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/serve-config/?cluster={C(x)}",
        {"GET": team(), "POST": team(Role.MEMBER)},
        body={"POST": lambda x, s: {"applications": []}},
    ),
    "team-webhooks": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/webhooks/",
        {"GET": team(Role.ADMIN), "POST": team(Role.ADMIN)},
        body={"POST": lambda x, s: {"url": "http://127.0.0.1:9/h", "secret": "s" * 20}},
    ),
    "team-webhook": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/webhooks/{x.obj('webhook', s).pk}/",
        {"GET": team(Role.ADMIN), "POST": team(Role.ADMIN), "DELETE": team(Role.ADMIN)},
    ),
    "team-route-grants": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/route-grants/",
        {"GET": team(), "POST": team_read_staff_post()},
        body={"POST": lambda x, s: {"prefix": f"/granted-{s}"}},
    ),
    "team-route-grant": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/route-grants/{x.obj('route_grant', s).pk}/",
        {"DELETE": team_read_staff_post()},
    ),
    "team-waste-report": Route(lambda x, s: f"/api/v1/teams/{slug(x, s)}/waste-report/", {"GET": team()}),
    "team-invitations": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/invitations/",
        {"GET": team(Role.ADMIN), "POST": team(Role.ADMIN)},
        body={"POST": lambda x, s: {"email": "new@x.example", "role": "member"}},
    ),
    "team-invitation": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/invitations/{x.obj('invitation', s).pk}/",
        {"DELETE": team(Role.ADMIN)},
    ),
    "team-join-requests": Route(lambda x, s: f"/api/v1/teams/{slug(x, s)}/join-requests/", {"GET": team(Role.ADMIN)}),
    "team-join-decide": Route(
        lambda x, s: f"/api/v1/teams/{slug(x, s)}/join-requests/{x.obj('join_request', s).pk}/decide/",
        {"POST": team(Role.ADMIN)},
        body={"POST": lambda x, s: {"approve": False}},
    ),
    # -- Ray's own Serve REST API, per team and cluster (apps.deploys.ray_api)
    "ray-version": Route(lambda x, s: f"/ray/{slug(x, s)}/{x.cluster.name}/api/version", {"GET": team()}),
    "ray-ray-version": Route(lambda x, s: f"/ray/{slug(x, s)}/{x.cluster.name}/api/ray/version", {"GET": team()}),
    "ray-serve-applications": Route(
        lambda x, s: f"/ray/{slug(x, s)}/{x.cluster.name}/api/serve/applications/",
        {"GET": team(), "PUT": team(Role.MEMBER), "DELETE": team(Role.MEMBER)},
        body={"PUT": lambda x, s: {"applications": []}},
    ),
    "ray-scale": Route(
        lambda x, s: f"/ray/{slug(x, s)}/{x.cluster.name}/api/v1/applications/{x.app(s).name}/deployments/Hello/scale",
        {"POST": team(Role.MEMBER)},
        body={"POST": lambda x, s: {"target_num_replicas": 1}},
    ),
    "ray-not-served": Route(
        lambda x, s: f"/ray/{slug(x, s)}/{x.cluster.name}/api/jobs/",
        {"GET": team(), "POST": team()},
        ok=frozenset({404}),  # what a member gets: Ray's whole-cluster API is not served at a team's address
    ),
    # -- API: clusters, quotas, pushes
    "cluster-list": Route(
        lambda x, s: "/api/v1/clusters/",
        {"GET": signed_in(), "POST": staff()},
        body={"POST": lambda x, s: {"name": "c2", "kind": "ray", "dashboard_url": "http://127.0.0.1:9"}},
        sides=SINGLE,
    ),
    "cluster-detail": Route(
        lambda x, s: f"/api/v1/clusters/{C(x)}/",
        {"GET": signed_in(), "PATCH": staff(), "PUT": staff(), "DELETE": staff(gets=NOT_ALLOWED)},
        body={
            "PATCH": lambda x, s: {"drift_policy": "flag"},
            "PUT": lambda x, s: {"name": "shared-1", "kind": "ray", "dashboard_url": "http://10.9.9.9:8265"},
        },
        sides=SINGLE,
    ),
    "cluster-gpus": Route(lambda x, s: f"/api/v1/clusters/{C(x)}/gpus/", {"GET": signed_in()}, sides=SINGLE),
    "cluster-state": Route(lambda x, s: f"/api/v1/clusters/{C(x)}/state/", {"GET": signed_in()}, sides=SINGLE),
    "cluster-serve-config": Route(
        lambda x, s: f"/api/v1/clusters/{C(x)}/serve-config/", {"GET": staff()}, sides=SINGLE
    ),
    "cluster-sync": Route(lambda x, s: f"/api/v1/clusters/{C(x)}/sync/", {"POST": staff()}, sides=SINGLE),
    "cluster-unmanaged-apps": Route(
        lambda x, s: f"/api/v1/clusters/{C(x)}/unmanaged-apps/", {"GET": staff()}, sides=SINGLE
    ),
    "cluster-adopt": Route(
        lambda x, s: f"/api/v1/clusters/{C(x)}/unmanaged-apps/{w.UNMANAGED_APP}/adopt/",
        {"POST": staff()},
        body={"POST": lambda x, s: {"team": "team-a"}},
        sides=SINGLE,
    ),
    "cluster-remove-unmanaged": Route(
        lambda x, s: f"/api/v1/clusters/{C(x)}/unmanaged-apps/{w.UNMANAGED_APP}/", {"DELETE": staff()}, sides=SINGLE
    ),
    "quota-list": Route(
        lambda x, s: "/api/v1/quotas/",
        {"GET": signed_in(), "POST": staff()},
        body={"POST": lambda x, s: {"team": "team-b", "cluster": C(x), "pool": "a100", "gpus": "8"}},
        sides=SINGLE,
    ),
    "quota-detail": Route(
        lambda x, s: f"/api/v1/quotas/{x.obj('quota', s).pk}/",
        {
            "GET": team(),
            "PATCH": Rule("team_staff", Role.ADMIN),
            "PUT": Rule("team_staff", Role.ADMIN),
            "DELETE": Rule("team_staff", Role.ADMIN),
        },
        body={
            "PATCH": lambda x, s: {"gpus": "8"},
            "PUT": lambda x, s: {"team": slug(x, s), "cluster": C(x), "pool": "a100", "gpus": "8"},
        },
    ),
    "quotarequest-list": Route(
        lambda x, s: "/api/v1/quota-requests/",
        {"GET": signed_in(), "POST": team(Role.ADMIN, other="refused")},
        body={"POST": lambda x, s: {"team": slug(x, s), "cluster": C(x), "pool": "a100", "gpus": "1", "reason": "x"}},
    ),
    "quotarequest-detail": Route(
        lambda x, s: f"/api/v1/quota-requests/{x.obj('quota_request', s).pk}/", {"GET": team()}
    ),
    "quotarequest-approve": Route(
        lambda x, s: f"/api/v1/quota-requests/{x.obj('quota_request', s).pk}/approve/",
        {"POST": Rule("team_staff", Role.ADMIN)},
    ),
    "quotarequest-reject": Route(
        lambda x, s: f"/api/v1/quota-requests/{x.obj('quota_request', s).pk}/reject/",
        {"POST": Rule("team_staff", Role.ADMIN)},
    ),
    "syncrun-list": Route(lambda x, s: f"/api/v1/sync-runs/?cluster={C(x)}", {"GET": signed_in()}, sides=SINGLE),
    "syncrun-detail": Route(
        lambda x, s: f"/api/v1/sync-runs/{x.objects['sync_run'].pk}/", {"GET": team()}, sides=SINGLE
    ),
    # -- API: applications and models
    "application-list": Route(
        lambda x, s: "/api/v1/applications/?dry_run=true",
        {"GET": signed_in(), "POST": team(Role.MEMBER, other="refused")},
        body={"POST": lambda x, s: {"team": slug(x, s), "cluster": C(x), "name": "newapp", **APP_BODY}},
    ),
    "application-detail": Route(
        lambda x, s: f"/api/v1/applications/{app_id(x, s)}/",
        {"GET": team(), "PATCH": team(Role.MEMBER), "PUT": team(Role.MEMBER), "DELETE": team(Role.MEMBER)},
        body={
            "PATCH": lambda x, s: {"import_path": "examples.hello:app"},
            "PUT": lambda x, s: {
                "team": slug(x, s),
                "cluster": C(x),
                "name": x.app(s).name,
                **APP_BODY,
                "route_prefix": x.app(s).route_prefix,
            },
        },
    ),
    "application-revisions": Route(lambda x, s: f"/api/v1/applications/{app_id(x, s)}/revisions/", {"GET": team()}),
    "application-rollback": Route(
        lambda x, s: f"/api/v1/applications/{app_id(x, s)}/rollback/",
        {"POST": team(Role.MEMBER)},
        body={"POST": lambda x, s: {"revision": 1}},
    ),
    "application-rollouts": Route(
        lambda x, s: f"/api/v1/applications/{app_id(x, s)}/rollouts/",
        {"GET": team(), "POST": team(Role.MEMBER)},
        body={"POST": lambda x, s: {"spec": {**APP_BODY, "route_prefix": x.app(s).route_prefix}}},
    ),
    "rollout-list": Route(lambda x, s: "/api/v1/rollouts/", {"GET": signed_in()}, sides=SINGLE),
    "rollout-detail": Route(lambda x, s: f"/api/v1/rollouts/{x.obj('rollout', s).pk}/", {"GET": team()}),
    **{
        f"rollout-{verb}": Route(
            lambda x, s, verb=verb: f"/api/v1/rollouts/{x.obj('rollout', s).pk}/{verb}/", {"POST": team(Role.MEMBER)}
        )
        for verb in ("pause", "resume", "promote", "abort")
    },
    "modelentry-list": Route(
        lambda x, s: "/api/v1/models/",
        {"GET": signed_in(), "POST": team(Role.MEMBER, other="refused")},
        body={
            "POST": lambda x, s: {
                "application": app_id(x, s),
                "deployment": "Hello",
                "model_id": "m9",
                "uri": "s3://x/y",
            }
        },
    ),
    "modelentry-residency": Route(
        lambda x, s: f"/api/v1/models/residency/?application={app_id(x, s)}", {"GET": team(other="refused")}
    ),
    "modelentry-detail": Route(
        lambda x, s: f"/api/v1/models/{x.obj('model', s).pk}/",
        {"GET": team(), "PATCH": team(Role.MEMBER), "PUT": team(Role.MEMBER), "DELETE": team(Role.MEMBER)},
        body={"PATCH": lambda x, s: {"description": "d"}, "PUT": lambda x, s: {"description": "d"}},
    ),
    # -- API: metrics, alerts, audit, compaction
    "metrics": Route(
        lambda x, s: f"/api/v1/metrics/?series=requests&cluster={C(x)}", {"GET": signed_in()}, sides=SINGLE
    ),
    "incident-list": Route(lambda x, s: "/api/v1/incidents/?state=all", {"GET": signed_in()}, sides=SINGLE),
    "incident-detail": Route(lambda x, s: f"/api/v1/incidents/{x.obj('incident', s).pk}/", {"GET": team()}),
    "incident-acknowledge": Route(
        lambda x, s: f"/api/v1/incidents/{x.obj('incident', s).pk}/acknowledge/", {"POST": team(Role.MEMBER)}
    ),
    "alertrule-list": Route(
        lambda x, s: "/api/v1/alert-rules/",
        {"GET": signed_in(), "POST": team(Role.ADMIN, other="refused")},
        body={"POST": lambda x, s: {"kind": "idle_gpu", "application": app_id(x, s)}},
    ),
    "alertrule-detail": Route(
        lambda x, s: f"/api/v1/alert-rules/{x.obj('rule', s).pk}/",
        {"GET": team(), "PATCH": team(Role.ADMIN), "DELETE": team(Role.ADMIN), "PUT": not_allowed()},
        body={"PATCH": lambda x, s: {"enabled": False}},
    ),
    "auditevent-list": Route(lambda x, s: "/api/v1/audit-events/", {"GET": signed_in()}, sides=SINGLE),
    "auditevent-detail": Route(
        lambda x, s: f"/api/v1/audit-events/{x.obj('audit', s).pk}/", {"GET": team(Role.ADMIN, other=NOT_FOUND)}
    ),
    "compactionplan-list": Route(
        lambda x, s: "/api/v1/compaction/plans/",
        {"GET": staff(), "POST": staff()},
        body={"POST": lambda x, s: {"cluster": C(x)}},
        sides=SINGLE,
    ),
    "compactionplan-detail": Route(
        lambda x, s: f"/api/v1/compaction/plans/{x.objects['plan'].pk}/", {"GET": staff()}, sides=SINGLE
    ),
    "compactionplan-execute": Route(
        lambda x, s: f"/api/v1/compaction/plans/{x.objects['plan'].pk}/execute/", {"POST": staff()}, sides=SINGLE
    ),
}


def page(path: Builder, methods: dict[str, Rule], body: dict[str, Builder] | None = None, sides=SINGLE) -> Route:
    return Route(path, methods, body or {}, sides, page=True)


PAGES: dict[str, Route] = {
    "login": page(lambda x, s: "/accounts/login/", {"GET": public()}),
    "favicon": page(lambda x, s: "/favicon.ico", {"GET": public()}),
    "signup": page(lambda x, s: "/accounts/signup/", {"GET": public()}),
    "logout": page(lambda x, s: "/accounts/logout/", {"POST": public()}),
    "verify_email": page(lambda x, s: "/accounts/verify-email/not-a-token/", {"GET": public()}),
    "verify_email_resend": page(lambda x, s: "/accounts/verify-email/", {"POST": signed_in()}),
    "sso_login": page(lambda x, s: "/accounts/oidc/login/", {"GET": public()}),
    "sso_callback": page(lambda x, s: "/accounts/oidc/callback/", {"GET": public()}),
    "password_change": page(lambda x, s: "/accounts/password_change/", {"GET": signed_in()}),
    "password_change_done": page(lambda x, s: "/accounts/password_change/done/", {"GET": signed_in()}),
    "password_reset": page(lambda x, s: "/accounts/password_reset/", {"GET": public()}),
    "password_reset_done": page(lambda x, s: "/accounts/password_reset/done/", {"GET": public()}),
    "password_reset_confirm": page(lambda x, s: "/accounts/reset/MQ/not-a-token/", {"GET": public()}),
    "password_reset_complete": page(lambda x, s: "/accounts/reset/done/", {"GET": public()}),
    "dashboard:home": page(lambda x, s: "/", {"GET": signed_in()}),
    "dashboard:healthz": page(lambda x, s: "/healthz", {"GET": public()}),
    "dashboard:readyz": page(lambda x, s: "/readyz", {"GET": public()}),
    "dashboard:metrics": page(lambda x, s: "/metrics", {"GET": public()}),
    "dashboard:chart": page(lambda x, s: f"/charts/?series=requests&cluster={C(x)}", {"GET": signed_in()}),
    "dashboard:metrics_source": page(lambda x, s: f"/clusters/{C(x)}/metrics-source/", {"GET": signed_in()}),
    "dashboard:models": page(
        lambda x, s: "/models/",
        {"GET": signed_in(), "POST": team(Role.MEMBER, other="refused")},
        {"POST": lambda x, s: {"application": app_id(x, s), "deployment": "Hello", "model_id": "m9", "uri": "s3://x"}},
        sides=("own", "other"),
    ),
    "dashboard:model_delete": page(
        lambda x, s: f"/models/{x.obj('model', s).pk}/delete/", {"POST": team(Role.MEMBER)}, sides=("own", "other")
    ),
    "dashboard:cluster_list": page(lambda x, s: "/clusters/", {"GET": signed_in()}),
    "dashboard:cluster_detail": page(lambda x, s: f"/clusters/{C(x)}/", {"GET": signed_in()}),
    "dashboard:cluster_sync": page(lambda x, s: f"/clusters/{C(x)}/sync/", {"POST": staff()}),
    "dashboard:cluster_adopt": page(
        lambda x, s: f"/clusters/{C(x)}/adopt/",
        {"POST": staff()},
        {"POST": lambda x, s: {"team": "team-a", "app": w.UNMANAGED_APP}},
    ),
    "dashboard:cluster_unmanaged_remove": page(
        lambda x, s: f"/clusters/{C(x)}/unmanaged/remove/",
        {"POST": staff()},
        {"POST": lambda x, s: {"app": w.UNMANAGED_APP, "confirm": w.UNMANAGED_APP}},
    ),
    "dashboard:compaction_new": page(lambda x, s: f"/clusters/{C(x)}/compaction/", {"POST": staff()}),
    "dashboard:compaction_plan": page(lambda x, s: f"/compaction/{x.objects['plan'].pk}/", {"GET": staff()}),
    "dashboard:compaction_steps": page(lambda x, s: f"/compaction/{x.objects['plan'].pk}/steps/", {"GET": staff()}),
    "dashboard:compaction_execute": page(
        lambda x, s: f"/compaction/{x.objects['plan'].pk}/execute/", {"POST": staff()}
    ),
    "dashboard:incidents": page(lambda x, s: "/incidents/?state=all", {"GET": signed_in()}),
    "dashboard:incident_badge": page(lambda x, s: "/incidents/badge/", {"GET": signed_in()}),
    "dashboard:incident_detail": page(
        lambda x, s: f"/incidents/{x.obj('incident', s).pk}/", {"GET": team()}, sides=("own", "other")
    ),
    "dashboard:incident_acknowledge": page(
        lambda x, s: f"/incidents/{x.obj('incident', s).pk}/acknowledge/",
        {"POST": team(Role.MEMBER)},
        sides=("own", "other"),
    ),
    "dashboard:alert_rules": page(
        lambda x, s: "/alert-rules/",
        {"GET": signed_in(), "POST": team(Role.ADMIN, other="refused")},
        {"POST": lambda x, s: {"kind": "idle_gpu", "application": str(app_id(x, s)), "param_window_s": "600"}},
        sides=("own", "other"),
    ),
    "dashboard:team_webhooks": page(
        lambda x, s: f"/teams/{slug(x, s)}/webhooks/",
        {"GET": team(), "POST": team(Role.ADMIN)},
        {"POST": lambda x, s: {"url": "http://127.0.0.1:9/hook", "secret": "s" * 20}},
        sides=("own", "other"),
    ),
    "dashboard:team_webhook_delete": page(
        lambda x, s: f"/teams/{slug(x, s)}/webhooks/{x.obj('webhook', s).pk}/delete/",
        {"POST": team(Role.ADMIN)},
        sides=("own", "other"),
    ),
    "dashboard:team_webhook_enable": page(
        lambda x, s: f"/teams/{slug(x, s)}/webhooks/{x.obj('webhook', s).pk}/enable/",
        {"POST": team(Role.ADMIN)},
        sides=("own", "other"),
    ),
    "dashboard:team_waste": page(lambda x, s: f"/teams/{slug(x, s)}/waste/", {"GET": team()}, sides=("own", "other")),
    "dashboard:welcome": page(lambda x, s: "/welcome/", {"GET": signed_in()}),
    "dashboard:cli_login": page(lambda x, s: "/cli-login/unknownrequest000/", {"GET": signed_in()}),
    "dashboard:deploy_template": page(
        lambda x, s: "/welcome/deploy-template/",
        {"POST": team(Role.MEMBER, other="refused")},
        {"POST": lambda x, s: {"team": slug(x, s)}},
        sides=("own", "other"),
    ),
    "dashboard:my_tokens": page(lambda x, s: "/account/tokens/", {"GET": signed_in()}),
    # Only the owner of a personal token revokes it; none of these principals has one: every signed-in one gets
    # 404 (the team tokens of the world are not personal), the signed-out the sign-in page.
    "dashboard:my_token_revoke": Route(
        lambda x, s: f"/account/tokens/{x.obj('token', 'own').pk}/revoke/",
        {"POST": signed_in()},
        sides=SINGLE,
        page=True,
        ok=frozenset({404}),
    ),
    "dashboard:audit": page(lambda x, s: "/audit/", {"GET": signed_in()}),
    "dashboard:quota_requests": page(lambda x, s: "/quota-requests/", {"GET": staff()}),
    "dashboard:team_create": page(lambda x, s: "/teams/new/", {"GET": signed_in()}),
    "dashboard:team_detail": page(lambda x, s: f"/teams/{slug(x, s)}/", {"GET": team()}, sides=("own", "other")),
    "dashboard:team_members": page(
        lambda x, s: f"/teams/{slug(x, s)}/members/", {"GET": team()}, sides=("own", "other")
    ),
    "dashboard:team_member_add": page(
        lambda x, s: f"/teams/{slug(x, s)}/members/add/",
        {"POST": team(Role.ADMIN)},
        {"POST": lambda x, s: {"username": "joiner", "role": "member"}},
        sides=("own", "other"),
    ),
    "dashboard:team_member_role": page(
        lambda x, s: f"/teams/{slug(x, s)}/members/{membership(x, s)}/role/",
        {"POST": team(Role.ADMIN)},
        {"POST": lambda x, s: {"role": "viewer"}},
        sides=("own", "other"),
    ),
    "dashboard:team_member_remove": page(
        lambda x, s: f"/teams/{slug(x, s)}/members/{membership(x, s)}/remove/",
        {"POST": team(Role.ADMIN)},
        sides=("own", "other"),
    ),
    "dashboard:team_invitation_send": page(
        lambda x, s: f"/teams/{slug(x, s)}/invitations/",
        {"POST": team(Role.ADMIN)},
        {"POST": lambda x, s: {"email": "new@x.example", "role": "member"}},
        sides=("own", "other"),
    ),
    "dashboard:team_invitation_revoke": page(
        lambda x, s: f"/teams/{slug(x, s)}/invitations/{x.obj('invitation', s).pk}/revoke/",
        {"POST": team(Role.ADMIN)},
        sides=("own", "other"),
    ),
    "dashboard:team_join_request_approve": page(
        lambda x, s: f"/teams/{slug(x, s)}/join-requests/{x.obj('join_request', s).pk}/approve/",
        {"POST": team(Role.ADMIN)},
        {"POST": lambda x, s: {"role": "viewer"}},
        sides=("own", "other"),
    ),
    "dashboard:team_join_request_reject": page(
        lambda x, s: f"/teams/{slug(x, s)}/join-requests/{x.obj('join_request', s).pk}/reject/",
        {"POST": team(Role.ADMIN)},
        sides=("own", "other"),
    ),
    "dashboard:invitation": page(lambda x, s: "/invitations/not-a-token/", {"GET": public()}),
    "dashboard:join_team": page(lambda x, s: "/join-team/", {"GET": signed_in()}),
    "dashboard:team_quota": page(lambda x, s: f"/teams/{slug(x, s)}/quota/", {"GET": team()}, sides=("own", "other")),
    "dashboard:team_tokens": page(
        lambda x, s: f"/teams/{slug(x, s)}/tokens/", {"GET": team(Role.ADMIN)}, sides=("own", "other")
    ),
    "dashboard:team_token_revoke": page(
        lambda x, s: f"/teams/{slug(x, s)}/tokens/{x.obj('token', s).pk}/revoke/",
        {"POST": team(Role.ADMIN)},
        sides=("own", "other"),
    ),
    "dashboard:team_serve_config": page(
        lambda x, s: f"/teams/{slug(x, s)}/serve-config/", {"GET": team()}, sides=("own", "other")
    ),
    "dashboard:team_delete": page(
        lambda x, s: f"/teams/{slug(x, s)}/delete/",
        {"POST": team(Role.OWNER)},
        {"POST": lambda x, s: {"confirm": slug(x, s)}},
        sides=("own", "other"),
    ),
    "dashboard:team_apps_fragment": page(
        lambda x, s: f"/teams/{slug(x, s)}/apps/status/", {"GET": team()}, sides=("own", "other")
    ),
    "dashboard:app_create": page(lambda x, s: "/apps/new/", {"GET": signed_in()}),
    "dashboard:app_detail": page(lambda x, s: f"/apps/{app_id(x, s)}/", {"GET": team()}, sides=("own", "other")),
    "dashboard:app_status_fragment": page(
        lambda x, s: f"/apps/{app_id(x, s)}/status/", {"GET": team()}, sides=("own", "other")
    ),
    "dashboard:app_edit": page(
        lambda x, s: f"/apps/{app_id(x, s)}/edit/", {"GET": team(Role.MEMBER)}, sides=("own", "other")
    ),
    "dashboard:app_rollback": page(
        lambda x, s: f"/apps/{app_id(x, s)}/rollback/",
        {"POST": team(Role.MEMBER)},
        {"POST": lambda x, s: {"revision": "1"}},
        sides=("own", "other"),
    ),
    "dashboard:app_delete": page(
        lambda x, s: f"/apps/{app_id(x, s)}/delete/",
        {"POST": team(Role.MEMBER)},
        {"POST": lambda x, s: {"confirm": x.app(s).name}},
        sides=("own", "other"),
    ),
    "dashboard:app_diff": page(
        lambda x, s: f"/apps/{app_id(x, s)}/diff/?from=1&to=1", {"GET": team()}, sides=("own", "other")
    ),
    "dashboard:rollout_new": page(
        lambda x, s: f"/apps/{app_id(x, s)}/rollouts/new/",
        {"POST": team(Role.MEMBER)},
        {"POST": lambda x, s: {"revision": "99", "steps": "50, 100", "step_seconds": "30"}},
        sides=("own", "other"),
    ),
    "dashboard:rollout_detail": page(
        lambda x, s: f"/rollouts/{x.obj('rollout', s).pk}/", {"GET": team()}, sides=("own", "other")
    ),
    "dashboard:rollout_status": page(
        lambda x, s: f"/rollouts/{x.obj('rollout', s).pk}/status/", {"GET": team()}, sides=("own", "other")
    ),
    "dashboard:rollout_act": page(
        lambda x, s: f"/rollouts/{x.obj('rollout', s).pk}/pause/", {"POST": team(Role.MEMBER)}, sides=("own", "other")
    ),
}
ALL = {**ROUTES, **PAGES}


def _walk(patterns: list, prefix: str = "", ns: str = "") -> list[tuple[str, str | None]]:
    out = []
    for p in patterns:
        if isinstance(p, URLResolver):
            out += _walk(p.url_patterns, prefix + str(p.pattern), ns + (f"{p.namespace}:" if p.namespace else ""))
        elif isinstance(p, URLPattern):
            route = prefix + str(p.pattern)
            if "(?P<format>" in route or "<drf_format_suffix:format>" in route or route.startswith("admin/"):
                continue  # the same views with a ".json" suffix; Django's own admin (staff, its own checks)
            out.append((route, f"{ns}{p.name}" if p.name else None))
    return out


def test_every_route_is_in_the_matrix():
    served = _walk(get_resolver().url_patterns)
    unnamed = [route for route, name in served if name is None]
    assert not unnamed, f"routes without a name cannot be in the matrix: {unnamed}"
    missing = sorted({name for _, name in served} - set(ALL))
    assert not missing, f"routes the permission matrix does not know (add them to ROUTES or PAGES): {missing}"
    stale = sorted(set(ALL) - {name for _, name in served})
    assert not stale, f"the matrix names routes that no longer exist: {stale}"


# ---- running it --------------------------------------------------------------------------------------------------


class Principals:
    """One client per principal: API clients send a token; page clients a session (token principals: the token)."""

    def __init__(self, world: w.World) -> None:
        u = world.users
        self.api: dict[str, APIClient] = {}
        self.pages: dict[str, Client] = {}
        tokens = {
            "viewer_token": issue_token(user=u["owner"], name="scoped", team=world.teams["a"], role=Role.VIEWER)[1],
            "staff_token": issue_token(user=u["staff"], name="scoped", team=world.teams["a"], role=Role.MEMBER)[1],
        }
        for name, (_, how) in PRINCIPALS.items():
            api, web = APIClient(), Client()
            if how in ("user", "gone"):
                user = u["deactivated"] if how == "gone" else u[name]
                secret = issue_token(user=user, name="personal")[1]
                api.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
                web.force_login(user)
            elif how == "scoped":
                api.credentials(HTTP_AUTHORIZATION=f"Token {tokens[name]}")
                web.defaults["HTTP_AUTHORIZATION"] = f"Token {tokens[name]}"
            self.api[name], self.pages[name] = api, web
        u["deactivated"].is_active = False
        u["deactivated"].save(update_fields=["is_active"])


def _ray_sees_every_app() -> dict:
    from apps.applications.models import Application

    apps = Application.objects.select_related("team", "current_revision")
    return {
        "controller_info": {"node_id": "n1"},
        "applications": {
            a.serve_name: {
                "name": a.serve_name,
                "status": "RUNNING",
                "message": "",
                "deployed_app_config": {
                    "name": a.serve_name,
                    **(a.current_revision.spec if a.current_revision else {}),
                },
            }
            for a in apps
        },
    }


def _outcome(status: int, location: str, page: bool, body: bytes = b"") -> set[str]:
    """What a status means: the outcomes it is consistent with."""
    if status >= 500:
        return {"error"}
    if status == 401 or (page and status == 302 and location.startswith("/accounts/login/")):
        return {SIGN_IN, ANY}
    if status == 403 and body.startswith(b"Forbidden: Invalid authentication token"):
        return {SIGN_IN, ANY}  # Ray's answer to a token it does not take (the Ray-compatible API says it as Ray)
    if status == 405:
        return {NOT_ALLOWED, ANY}
    if status == 404:
        return {NOT_FOUND, DENIED, "refused", ANY}
    if status == 403:
        return {DENIED, "refused", ANY}
    if status == 400:
        return {OK, "refused", ANY}  # a valid request of the wrong team is refused as a field; a bad one as well
    return {OK, ANY}


def _forbidden_text(principal: str, world: w.World) -> list[str]:
    role, how = PRINCIPALS[principal]
    if principal == "staff":
        return []
    text = list(w.B_MARKERS)
    if ROLE_RANK.get(role or "", 0) < ROLE_RANK[Role.ADMIN]:
        own = world.users.get(principal)
        text += [e for e in w.A_EMAILS if not own or own.email != e]
    return text


CASES = [(name, method) for name, route in ALL.items() for method in route.methods]


@pytest.mark.parametrize(("name", "method"), CASES, ids=[f"{n}:{m}" for n, m in CASES])
def test_route(name: str, method: str, settings, monkeypatch) -> None:
    settings.PASSWORD_SIGNUP = True
    world = w.build()
    if name.startswith("ray-"):  # Ray, at the clients seam, reports every team's apps with their secrets
        from workers.clients.ray_dashboard import RayDashboardClient

        monkeypatch.setattr(RayDashboardClient, "get_serve_applications", lambda self: _ray_sees_every_app())
    principals = Principals(world)
    route = ALL[name]
    rule = route.methods[method]
    failures = []
    for side in route.sides:
        for principal in PRINCIPALS:
            want = expected(rule, principal, side, route.page)
            client = principals.pages[principal] if route.page else principals.api[principal]
            path = route.path(world, side)
            body = route.body[method](world, side) if method in route.body else None
            with transaction.atomic():
                call = getattr(client, method.lower())
                if route.page:
                    resp = call(path, body or {}) if method == "POST" else call(path)
                else:
                    resp = call(path, body, format="json") if body is not None else call(path)
                transaction.set_rollback(True)
            SIZE["requests"] += 1
            got = _outcome(resp.status_code, resp.get("Location", "") or "", route.page, resp.content)
            if route.ok and resp.status_code in route.ok:
                got |= {OK}
            if want not in got:
                failures.append(f"{side} {principal}: expected {want}, got {resp.status_code}")
                continue
            content = resp.content.decode("utf-8", "replace") if hasattr(resp, "content") else ""
            seen = [t for t in _forbidden_text(principal, world) if t in content]
            if seen:
                failures.append(f"{side} {principal}: {resp.status_code} shows {seen}")
    assert not failures, f"{method} {name}:\n  " + "\n  ".join(failures)


def test_authority_is_decided_by_the_principal_only():
    """By construction: no view, template or selector reads staff-ness or a token's scope from the user (a staff
    user's scoped token would keep staff powers), and none uses DRF's IsAdminUser (which reads request.user)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    pattern = re.compile(r"\buser\.is_staff\b|\bIsAdminUser\b|\b_token_team_id\b|\b_token_role\b")
    allowed = {"apps/teams/principal.py", "apps/sso/services.py"}  # the principal itself; the SSO group mapping
    offenders = []
    for path in [*root.glob("apps/**/*.py"), *root.glob("controlplane/**/*.py"), *root.glob("templates/**/*.html")]:
        rel = path.relative_to(root).as_posix()
        if rel in allowed or "/migrations/" in rel:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "authority read from the user instead of the principal:\n" + "\n".join(offenders)
