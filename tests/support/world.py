"""Two teams on one shared cluster, each with something to hide: the world the tenancy tests attack.

Team A (``team-a``) is the attacker's team, with one person per role. Team B (``team-b``) is the victim: every
place a team's data can show up holds one of B's secrets (``B_MARKERS``): an ``env_vars`` value in its app's spec
and in the cluster's drift, an unmanaged app's password on the cluster, a webhook URL with a token, its admins' and
members' addresses, a model's bucket, a module name in Ray's refusal, and the name of its app. Nothing here talks to
Ray: the observed state (drift, nodes, replicas, push errors, incidents, metrics) is written as the worker would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

B_SECRET = "B-SECRET-VALUE-4471"
B_SECRET_NEW = "B-SECRET-NEW-VALUE-9912"
B_APP = "bravo-hidden"
B_HOOK = "https://hooks.example.com/services/B-HOOK-TOKEN-55"
B_OWNER_EMAIL = "bob-owner@b.example"
B_MEMBER_EMAIL = "bmember@b.example"
B_INVITEE = "invitee-b@b.example"
B_BUCKET = "s3://b-bucket-secret/m1"
B_MODULE = "bravo_policy_secret"
UNMANAGED_PASS = "UNMANAGED-PASS-3318"
UNMANAGED_APP = "legacy-hidden"

B_MARKERS = (
    B_SECRET,
    B_SECRET_NEW,
    B_APP,
    "B-HOOK-TOKEN-55",
    B_OWNER_EMAIL,
    B_MEMBER_EMAIL,
    B_INVITEE,
    "b-bucket-secret",
    B_MODULE,
    UNMANAGED_PASS,
    UNMANAGED_APP,
)
# Team A's people's addresses: its admins read them, its viewers and members do not.
A_EMAILS = ("aowner@a.example", "aadmin@a.example", "amember@a.example")

NODE_1 = "a" * 56
NODE_2 = "b" * 56


@dataclass
class World:
    cluster: Any
    teams: dict[str, Any]
    users: dict[str, Any]
    apps: dict[str, Any]
    objects: dict[str, Any] = field(default_factory=dict)

    def team(self, side: str) -> Any:
        return self.teams["a" if side == "own" else "b"]

    def app(self, side: str) -> Any:
        return self.apps["a" if side == "own" else "b"]

    def obj(self, name: str, side: str) -> Any:
        return self.objects[f"{name}:{'a' if side == 'own' else 'b'}"]


def _spec(name: str, secret: str, route: str) -> dict:
    return {
        "route_prefix": route,
        "import_path": "examples.hello:app",
        "runtime_env": {"env_vars": {"API_KEY": secret}},
        "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5}}],
    }


def build() -> World:
    """The world, in the database of the running test."""
    from apps.alerts.models import AlertRule, Delivery, DeliveryAttempt, Incident, WebhookEndpoint
    from apps.applications.models import Application
    from apps.applications.services import application_create
    from apps.catalog.services import model_create
    from apps.clusters.models import Cluster, SyncRun
    from apps.clusters.services import cluster_create
    from apps.compaction.models import CompactionPlan
    from apps.metrics.models import Point, Series
    from apps.quotas.services import quota_request_create, quota_set
    from apps.teams.models import Membership, Role, Team
    from apps.teams.services import invitation_create, issue_token, join_request_create, team_create

    User = get_user_model()  # noqa: N806
    password = "a-Long-test-passw0rd"

    def user(username: str, email: str, **extra: Any) -> Any:
        return User.objects.create_user(username=username, password=password, email=email, **extra)

    staff = user("platform", "platform@ops.example", is_staff=True)
    users = {
        "staff": staff,
        "owner": user("aowner", A_EMAILS[0]),
        "admin": user("aadmin", A_EMAILS[1]),
        "member": user("amember", A_EMAILS[2]),
        "viewer": user("aviewer", "aviewer@a.example"),
        "outsider": user("outsider", "outsider@x.example"),
        "deactivated": user("gone", "gone@a.example"),
        "b_owner": user("bob", B_OWNER_EMAIL),
        "b_member": user("bmember", B_MEMBER_EMAIL),
        "joiner": user("joiner", "joiner@x.example"),
    }
    team_a = team_create(actor=users["owner"], slug="team-a", name="Team A")
    team_b = team_create(actor=users["b_owner"], slug="team-b", name="Team B")
    for role, key in ((Role.ADMIN, "admin"), (Role.MEMBER, "member"), (Role.VIEWER, "viewer")):
        Membership.objects.create(team=team_a, user=users[key], role=role)
    Membership.objects.create(team=team_a, user=users["deactivated"], role=Role.MEMBER)
    Membership.objects.create(team=team_a, user=staff, role=Role.ADMIN)  # for the staff user's scoped token
    Membership.objects.create(team=team_b, user=users["b_member"], role=Role.MEMBER)

    cluster = cluster_create(
        actor=staff,
        data={"name": "shared-1", "kind": "ray", "dashboard_url": "http://10.9.9.9:8265"},
        pools=[{"name": "a100", "resource": "GPU", "capacity": Decimal(8)}],
    )
    for team in (team_a, team_b):
        quota_set(actor=staff, team=team, cluster=cluster, pool_name="a100", gpus=Decimal(4))
    app_a = application_create(
        actor=users["owner"],
        team=team_a,
        cluster=cluster,
        name="alpha",
        spec=_spec("alpha", "A-VALUE", "/team-a/alpha"),
    )
    app_b = application_create(
        actor=users["b_owner"], team=team_b, cluster=cluster, name=B_APP, spec=_spec(B_APP, B_SECRET, "/team-b/x")
    )
    now = timezone.now()

    # What the worker observed: replicas on nodes, drift in both teams' apps, an app nobody registered.
    def status(app: Application, node: str) -> dict:
        replica = {"replica_id": f"{app.name}-r1", "node_id": node, "node_ip": "10.0.0.1", "state": "RUNNING"}
        deployment = {"status": "HEALTHY", "replicas": [replica], "required_resources": {"CPU": 0.1, "GPU": 0.5}}
        return {"status": "RUNNING", "deployments": {"Hello": deployment}}

    hour_ago = now - timedelta(hours=1)  # they have run for an hour: their series below are theirs
    Application.objects.filter(pk=app_a.pk).update(status=status(app_a, NODE_1), observed_at=now, created_at=hour_ago)
    Application.objects.filter(pk=app_b.pk).update(status=status(app_b, NODE_2), observed_at=now, created_at=hour_ago)
    Team.objects.filter(pk__in=[team_a.pk, team_b.pk]).update(created_at=hour_ago)
    for obj in (app_a, app_b, team_a, team_b):
        obj.refresh_from_db()

    def changed(app: Application, old: str, new: str) -> dict:
        diff = [{"field": "runtime_env.env_vars.API_KEY", "desired": old, "observed": new}]
        return {"app": app.serve_name, "kind": "changed", "detail": "the cluster runs a different config", "diff": diff}

    drift = [
        changed(app_a, "A-VALUE", "A-NEW-VALUE"),
        changed(app_b, B_SECRET, B_SECRET_NEW),
        {"app": UNMANAGED_APP, "kind": "unexpected", "detail": "on the cluster but not in the control plane"},
    ]
    unmanaged = [
        {
            "name": UNMANAGED_APP,
            "kind": "unexpected",
            "status": "RUNNING",
            "route_prefix": "/legacy",
            "config": {"name": UNMANAGED_APP, "runtime_env": {"env_vars": {"PASS": UNMANAGED_PASS}}},
            "since": now.isoformat(),
            "carried": False,
            "can_adopt": True,
            "can_remove": True,
        }
    ]
    nodes = [
        {"node_id": n, "node_ip": ip, "state": "ALIVE", "is_head_node": False, "resources_total": {"GPU": 4, "CPU": 8}}
        for n, ip in ((NODE_1, "10.0.0.1"), (NODE_2, "10.0.0.2"))
    ]
    Cluster.objects.filter(pk=cluster.pk).update(
        drift=drift,
        unmanaged_apps=unmanaged,
        nodes=nodes,
        last_seen_at=now,
        health_message="dashboard at http://10.9.9.9:8265 answered 500",
        inventory_taken_at=now,
    )
    cluster.refresh_from_db()
    # One real GPU (as the node summary reports it) holding both teams' replicas: A's sees only its own by name.
    from apps.metrics.models import MetricsConfig

    def proc(app: Any, pid: int, mib: float, replica: str, allocated: float) -> dict:
        return {
            "pid": pid,
            "memory_mib": mib,
            "utilization": 20.0,
            "application_id": app.pk,
            "application": app.serve_name,
            "team": app.team.slug,
            "name": app.name,
            "deployment": "Hello",
            "replica": replica,
            "allocated": allocated,
            "card_share": round(mib / 81559, 4),
            "over_allocation": mib / 81559 > allocated + 0.05,
        }

    card = {"node_id": NODE_1, "ip": "10.0.0.1", "index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-w0"}
    card |= {"memory_total_mib": 81559.0, "memory_used_mib": 69632.0, "utilization": 40.0}
    card["processes"] = [proc(app_a, 101, 61440.0, "ra", 0.25), proc(app_b, 202, 8192.0, f"rb-{B_APP}", 0.5)]
    MetricsConfig.objects.filter(pk=cluster.pk).update(gpus=[card], gpus_at=now)
    refusal = f"Ray refused the config: {app_b.serve_name}: ModuleNotFoundError: No module named '{B_MODULE}'"
    run = SyncRun.objects.create(
        cluster=cluster,
        state=SyncRun.State.FAILED,
        error=refusal,
        error_kind=SyncRun.ErrorKind.REFUSED,
        faults={app_b.serve_name: f"ModuleNotFoundError: No module named '{B_MODULE}'"},
        config_snapshot={"applications": [{"name": app_b.serve_name, "runtime_env": {"env_vars": {"K": B_SECRET}}}]},
        started_at=now,
        finished_at=now,
    )

    # Alerts: shared (cluster) incidents carrying both teams' evidence, each team's own incident, deliveries.
    hooks = {
        "a": WebhookEndpoint.objects.create(
            team=team_a, url="https://hooks.example.com/services/A-HOOK", secret="s" * 20
        ),
        "b": WebhookEndpoint.objects.create(team=team_b, url=B_HOOK, secret="s" * 20),
    }
    rule = {k: AlertRule.objects.get_or_create(kind=k, team=None, application=None, cluster=None)[0] for k in (
        "drift", "push_failed", "app_failed"
    )}  # fmt: skip
    shared = Incident.objects.create(
        rule=rule["drift"],
        kind="drift",
        key=f"drift:cluster:{cluster.pk}",
        cluster=cluster,
        summary=f"shared-1 runs something other than its stored configs ({app_a.serve_name}, {app_b.serve_name})",
        evidence={"drift": drift, "policy": "repair"},
    )
    pushed = Incident.objects.create(
        rule=rule["push_failed"],
        kind="push_failed",
        key=f"push_failed:cluster:{cluster.pk}",
        cluster=cluster,
        summary="The last push of shared-1's Serve config failed",
        evidence={"error": refusal, "error_kind": "refused", "faults": run.faults},
    )
    incidents = {}
    for side, team, app in (("a", team_a, app_a), ("b", team_b, app_b)):
        incidents[side] = Incident.objects.create(
            rule=rule["app_failed"],
            kind="app_failed",
            key=f"app_failed:app:{app.pk}",
            team=team,
            application=app,
            cluster=cluster,
            summary=f"{app.name} is DEPLOY_FAILED",
            evidence={"message": f"failed with {B_SECRET if side == 'b' else 'A-VALUE'}"},
        )
    for side, team_emails in (("a", [A_EMAILS[0], A_EMAILS[1]]), ("b", [B_OWNER_EMAIL])):
        team = team_a if side == "a" else team_b
        d = Delivery.objects.create(incident=shared, event="open", channel="webhook", endpoint=hooks[side], team=team)
        DeliveryAttempt.objects.create(delivery=d, ok=False, status_code=500, answer=f"receiver said no to {side}")
        Delivery.objects.create(incident=shared, event="open", channel="email", team=team, recipients=team_emails)

    # Metrics: each app's requests and each team's allocation, as the scrape stores them.
    def series(name: str, labels: dict, value: float) -> None:
        key = hashlib.sha1(f"{name}{sorted(labels.items())}".encode()).hexdigest()
        s = Series.objects.create(cluster=cluster, name=name, labels=labels, key=key, kind="gauge")
        Point.objects.bulk_create(Point(series=s, ts=now - timedelta(seconds=15 * i), value=value) for i in range(1, 8))

    for app in (app_a, app_b):
        series("ray_serve_num_http_requests", {"application": app.serve_name}, 3.0)
        series("cp_team_gpus_allocated", {"team": app.team.slug}, 0.5)

    models = {
        "a": model_create(actor=users["owner"], application=app_a, deployment="Hello", model_id="m1", uri="s3://a/m1"),
        "b": model_create(actor=users["b_owner"], application=app_b, deployment="Hello", model_id="m1", uri=B_BUCKET),
    }
    quota_requests = {
        side: quota_request_create(
            actor=owner, team=team, cluster=cluster, pool_name="a100", gpus="1", reason=f"more for {team.slug}"
        )
        for side, team, owner in (("a", team_a, users["owner"]), ("b", team_b, users["b_owner"]))
    }
    invitations = {
        "a": invitation_create(actor=users["owner"], team=team_a, email="invitee-a@a.example")[0],
        "b": invitation_create(actor=users["b_owner"], team=team_b, email=B_INVITEE)[0],
    }
    joins = {
        "a": join_request_create(user=users["joiner"], team_slug="team-a", message="let me in"),
        "b": join_request_create(user=users["joiner"], team_slug="team-b", message="let me in"),
    }
    tokens = {
        "a": issue_token(user=users["admin"], name="ci-a", team=team_a, role=Role.MEMBER)[0],
        "b": issue_token(user=users["b_owner"], name="ci-b", team=team_b, role=Role.MEMBER)[0],
    }
    from apps.applications.models import RouteGrant

    route_grants = {
        "a": RouteGrant.objects.create(team=team_a, prefix="/alpha-extra"),
        "b": RouteGrant.objects.create(team=team_b, prefix="/bravo-extra"),
    }
    rules = {
        "a": AlertRule.objects.create(kind="idle_gpu", team=team_a),
        "b": AlertRule.objects.create(kind="idle_gpu", team=team_b, application=app_b),
    }
    plan = CompactionPlan.objects.create(
        cluster=cluster,
        input={
            "nodes": [{"id": NODE_2, "resources": {"GPU": 4}, "head": False, "pool": "a100"}],
            "replicas": [
                {"id": "r1", "node": NODE_2, "app": app_b.serve_name, "deployment": "Hello", "resources": {"GPU": 0.5}}
            ],
        },
    )
    from apps.audit.models import AuditEvent

    audit = {
        "a": AuditEvent.objects.filter(team=team_a).order_by("id").first(),
        "b": AuditEvent.objects.filter(team=team_b).order_by("id").first(),
    }
    from apps.applications.models import Revision
    from apps.rollouts.models import Rollout

    rollouts = {}
    for side, app, author in (("a", app_a, users["owner"]), ("b", app_b, users["b_owner"])):
        app.refresh_from_db()
        spec = {**app.current_revision.spec, "args": {"greeting": f"v2 of {side}"}}
        new = Revision.objects.create(application=app, number=99, spec=spec, spec_hash=f"{side}-v2", author=author)
        rollouts[side] = Rollout.objects.create(
            application=app,
            from_revision=app.current_revision,
            to_revision=new,
            steps=[10, 100],
            phase=Rollout.Phase.SPLIT,
            step_index=0,
            weight=10,
            created_by=author,
            deadline_at=timezone.now() + timedelta(hours=2),
        )
    world = World(cluster=cluster, teams={"a": team_a, "b": team_b}, users=users, apps={"a": app_a, "b": app_b})
    for name, pair in (
        ("incident", incidents),
        ("webhook", hooks),
        ("model", models),
        ("quota_request", quota_requests),
        ("invitation", invitations),
        ("join_request", joins),
        ("token", tokens),
        ("rule", rules),
        ("route_grant", route_grants),
        ("audit", audit),
        ("rollout", rollouts),
    ):
        for side, obj in pair.items():
            world.objects[f"{name}:{side}"] = obj
    from apps.quotas.models import Quota

    for side, team in (("a", team_a), ("b", team_b)):
        world.objects[f"quota:{side}"] = Quota.objects.get(team=team)
        world.objects[f"member:{side}"] = users["member"] if side == "a" else users["b_member"]
    world.objects["shared_incident"] = shared
    world.objects["push_incident"] = pushed
    world.objects["sync_run"] = run
    world.objects["plan"] = plan
    return world
