"""Alert rules, incidents and their notifications: opened once, updated, resolved, quiet, delivered and signed."""

from __future__ import annotations

import random
import socket
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

from apps.alerts import services
from apps.alerts.kinds import KINDS
from apps.alerts.models import AlertRule, Delivery, Incident, WebhookEndpoint
from apps.alerts.thrash import suggest_slots
from apps.applications.models import Application
from apps.applications.services import application_create
from apps.deploys.observe import _replica_starts
from apps.quotas.models import AdmissionRefusal
from tests.conftest import app_body
from tests.support.lru import lru_hit_rate
from tests.support.receiver import Receiver
from workers.clients import webhooks

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests-0123456789"


@pytest.fixture(autouse=True)
def _rules(db, settings):
    services.ensure_default_rules()
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receiver runs on loopback
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def make_app(alice, team, cluster, name="llm", gpus=0.5):
    body = app_body(team.slug, cluster.pk, name)
    body["deployments"][0]["ray_actor_options"]["num_gpus"] = gpus
    spec = {k: v for k, v in body.items() if k not in ("team", "cluster", "name")}
    return application_create(actor=alice, team=team, cluster=cluster, name=name, spec=spec)


def set_state(app, state, message="", replicas=1, gpu=0.5, deployed=0.0):
    status = {
        "status": {"running": "RUNNING", "deploy_failed": "DEPLOY_FAILED", "unhealthy": "UNHEALTHY"}[state],
        "message": message,
        "last_deployed_time_s": deployed,
        "deployments": {
            "Hello": {
                "status": "HEALTHY" if state == "running" else "UNHEALTHY",
                "message": message,
                "required_resources": {"CPU": 0.1, "GPU": gpu},
                "replicas": [
                    {"replica_id": f"r{i}", "node_id": "n1", "state": "RUNNING", "actor_id": f"a{i}"}
                    for i in range(replicas)
                ],
            }
        },
    }
    Application.objects.filter(pk=app.pk).update(state=state, status=status, status_message=message)


def run_deliveries():
    for pk in list(Delivery.objects.filter(state="pending").values_list("pk", flat=True)):
        services.deliver(pk, now=timezone.now() + timedelta(hours=2))


def test_an_incident_opens_once_notifies_and_resolves_with_a_second_notification(
    alice, team_a, cluster, grant, django_capture_on_commit_callbacks
):
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    WebhookEndpoint.objects.create(team=team_a, url="http://127.0.0.1:9/x", secret=SECRET)
    alice.email = "alice@example.com"
    alice.save()
    with Receiver(SECRET) as rx:
        WebhookEndpoint.objects.all().update(url=rx.url)
        set_state(app, "deploy_failed", "ImportError: no module named llm")
        first = services.evaluate()
        assert first.opened == 1 and first.notifications == 2  # the webhook and an email
        again = services.evaluate()
        assert again.opened == 0 and again.notifications == 0, "a lasting condition updates, never re-notifies"
        inc = Incident.objects.get()
        assert inc.state == "open" and inc.kind == "app_failed" and "DEPLOY_FAILED" in inc.summary
        assert inc.evidence["message"].startswith("ImportError")
        run_deliveries()
        set_state(app, "running")
        assert services.evaluate().resolved == 1
        run_deliveries()
    assert [r["body"]["state"] for r in rx.received] == ["open", "resolved"]
    assert all(r["verified"] for r in rx.received), "every request carries a valid signature"
    body = rx.received[0]["body"]
    assert body["incident"] == inc.pk and body["rule"] == "app_failed" and body["team"] == "team-a"
    assert body["application"] == "llm" and body["url"].endswith(f"/incidents/{inc.pk}/") and body["summary"]
    assert [m.subject.split(":")[0] for m in mail.outbox] == ["[critical] Opened", "[critical] Resolved"]
    assert mail.outbox[0].to == ["alice@example.com"]


def test_a_condition_back_within_the_quiet_period_reopens_silently(alice, team_a, cluster, grant):
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    set_state(app, "unhealthy", "health check failed")
    services.evaluate()
    set_state(app, "running")
    services.evaluate()
    set_state(app, "unhealthy", "health check failed again")
    result = services.evaluate()
    assert result.reopened == 1 and result.opened == 0 and result.notifications == 0
    inc = Incident.objects.get()
    assert inc.state == "open" and inc.reopened == 1 and "again" in inc.evidence["message"]
    # Outlasting the quiet period, it is announced again.
    assert inc.notified_state == "resolved", "the silent reopening told nobody"
    Incident.objects.filter(pk=inc.pk).update(quiet_until=timezone.now() - timedelta(seconds=1))
    services.evaluate()
    assert Incident.objects.get().notified_state == "open", "announced once it outlasted the quiet period"


def test_a_disabled_rule_or_an_app_override_changes_only_its_scope(alice, team_a, team_b, bob, cluster, grant):
    grant(team_a, cluster, "4")
    grant(team_b, cluster, "4")
    a = make_app(alice, team_a, cluster, "a1")
    b = make_app(bob, team_b, cluster, "b1")
    AlertRule.objects.create(kind="app_failed", application=a, team=team_a, enabled=False)
    set_state(a, "deploy_failed")
    set_state(b, "deploy_failed")
    services.evaluate()
    assert list(Incident.objects.values_list("application_id", flat=True)) == [b.pk]


def test_crash_loop_counts_replicas_started_without_a_config_change(alice, team_a, cluster, grant):
    now = timezone.now()
    old = {"last_deployed_time_s": 10.0, "deployments": {"D": {"replicas": [{"replica_id": "a"}]}}}
    new = {"last_deployed_time_s": 10.0, "deployments": {"D": {"replicas": [{"replica_id": "b"}]}}}
    assert [s["replica_id"] for s in _replica_starts(old, new, now)] == ["b"]
    redeployed = {**new, "last_deployed_time_s": 11.0}
    assert _replica_starts(old, redeployed, now) == [], "a deploy's own new replicas are not restarts"
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    starts = [{"t": now.timestamp() - i, "deployment": "Hello", "replica_id": f"x{i}"} for i in range(3)]
    Application.objects.filter(pk=app.pk).update(replica_starts=starts[:2])
    services.evaluate()
    assert not Incident.objects.exists(), "2 starts are under the default of 3"
    Application.objects.filter(pk=app.pk).update(replica_starts=starts)
    services.evaluate()
    assert Incident.objects.get().kind == "crash_loop"


def test_admission_refusals_are_kept_and_alert_the_team(alice, team_a, cluster, grant, api):
    grant(team_a, cluster, "0.5")
    make_app(alice, team_a, cluster, "one")
    body = app_body("team-a", cluster.pk, "two")
    resp = api(alice).post("/api/v1/applications/", body, format="json")
    assert resp.status_code == 400 and "quota" in resp.json()
    assert AdmissionRefusal.objects.count() == 1, "kept though the write rolled back"
    assert not Application.objects.filter(name="two").exists()
    resp = api(alice).post("/api/v1/applications/?dry_run=true", body, format="json")
    assert resp.status_code == 400 and AdmissionRefusal.objects.count() == 1, "a dry run's refusal is not kept"
    services.evaluate()
    kinds = set(Incident.objects.values_list("kind", flat=True))
    assert "admission_refused" in kinds and "quota_high" in kinds  # 0.5 of 0.5 is above 90%


def test_webhook_endpoint_down_backs_off_blocks_nobody_and_is_disabled(alice, team_a, cluster, grant, settings):
    settings.WEBHOOK_DISABLE_AFTER = 4
    settings.WEBHOOK_MAX_ATTEMPTS = 10
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    with Receiver(SECRET, status=503) as down, Receiver(SECRET) as up:
        bad = WebhookEndpoint.objects.create(team=team_a, url=down.url, secret=SECRET)
        WebhookEndpoint.objects.create(team=team_a, url=up.url, secret=SECRET)
        set_state(app, "deploy_failed")
        services.evaluate()
        good_delivery = Delivery.objects.get(endpoint__url=up.url)
        assert services.deliver(good_delivery.pk) == "sent", "the healthy endpoint is not held up"
        d = Delivery.objects.get(endpoint=bad)
        waits, now = [], timezone.now()
        for _ in range(4):
            assert services.deliver(d.pk, now=now) in ("retry", "gave-up")
            d.refresh_from_db()
            waits.append((d.next_attempt_at - now).total_seconds())
            now = d.next_attempt_at
        bad.refresh_from_db()
    assert len(up.received) == 1 and up.received[0]["verified"]
    assert len(down.received) == 4
    assert waits[1] > waits[0] * 0.7 and waits[2] > waits[1] * 0.7, f"backoff grows: {waits}"
    assert not bad.enabled and "4 failed attempts" in bad.disabled_reason
    assert d.state == "failed" and d.attempt_rows.count() == 4
    assert all(a.status_code == 503 and "maintenance" in a.answer for a in d.attempt_rows.all())


def test_backoff_has_jitter_and_grows(settings):
    settings.WEBHOOK_RETRY_BASE_S, settings.WEBHOOK_RETRY_MAX_S = 10, 3600
    samples = [services.backoff_s(3) for _ in range(200)]
    assert min(samples) >= 20 and max(samples) <= 60 and len({round(s, 3) for s in samples}) > 100


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/h",
        "http://localhost/h",
        "http://10.1.2.3/h",
        "http://192.168.0.5/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/h",
        "http://[::ffff:127.0.0.1]/h",
        "http://[2002:7f00:1::1]/h",  # 6to4 of 127.0.0.1
        "http://[2002:a9fe:a9fe::1]/h",  # 6to4 of 169.254.169.254 (cloud metadata)
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/h",  # Teredo, client 127.0.0.1
        "http://[64:ff9b::7f00:1]/h",  # NAT64 of 127.0.0.1
        "http://0.0.0.0/h",
        "ftp://example.com/h",
        "http://user:pw@example.com/h",
    ],
)
def test_webhooks_to_internal_addresses_are_refused_by_default(url, settings, team_a, alice, api):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(webhooks.UnsafeURL):
        webhooks.check_url(url, allow_private=False)
    resp = api(alice).post(f"/api/v1/teams/{team_a.slug}/webhooks/", {"url": url, "secret": SECRET}, format="json")
    assert resp.status_code == 400 and "url" in resp.json() and not WebhookEndpoint.objects.exists()


def test_webhook_refused_at_send_time_too(settings):
    attempt = webhooks.send("http://127.0.0.1:1/x", SECRET, {"a": 1}, allow_private=False)
    assert not attempt.ok and attempt.answer.startswith("refused")


def test_a_name_that_rebinds_after_the_check_is_called_at_the_checked_address(monkeypatch):
    """DNS rebinding: the check and the call must not resolve separately. The name resolves to a public address
    when checked and to the receiver on loopback afterwards; the call goes to the checked address (where nothing
    answers here), never to loopback."""
    real = socket.getaddrinfo
    lookups = []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "1.2.3.4" if len(lookups) == 1 else "127.0.0.1"  # public (and silent here) when checked
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with Receiver(SECRET) as receiver:
        port = receiver.server.server_address[1]
        attempt = webhooks.send(f"http://rebind.example:{port}/hook", SECRET, {"a": 1}, allow_private=False, timeout=1)
    assert not attempt.ok and receiver.received == [], "the call went to the address found by a second lookup"
    assert lookups == ["rebind.example"], "one lookup: the call connects to the checked address"


class _Slow:
    """A receiver that answers one byte a second (or a huge body), as a hostile endpoint would."""

    def __init__(self, mode: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                if mode == "drip":
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    for _ in range(100):
                        try:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(1)
                else:
                    self.end_headers()
                    chunk = b"y" * 65536
                    try:
                        for _ in range(150 * 16):  # 150 MiB
                            self.wfile.write(chunk)
                    except OSError:
                        return

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_webhook_call_has_a_total_deadline_and_reads_a_bounded_answer():
    import resource

    drip = _Slow("drip")
    started = time.monotonic()
    attempt = webhooks.send(drip.url, SECRET, {"a": 1}, allow_private=True, timeout=2)
    took = time.monotonic() - started
    drip.close()
    assert not attempt.ok and "within 2 s" in attempt.answer
    assert took < 3.5, f"a receiver sending a byte a second held a 2 s call for {took:.1f} s"
    huge = _Slow("huge")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    attempt = webhooks.send(huge.url, SECRET, {"a": 1}, allow_private=True, timeout=10)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    huge.close()
    assert attempt.ok and len(attempt.answer) <= 300
    assert grown_mib < 20, f"a 150 MiB answer grew the process by {grown_mib:.0f} MiB"


def test_signature_verifies_and_tampering_fails():
    body = b'{"incident":1}'
    header = webhooks.sign(SECRET, 1_700_000_000, body)
    assert webhooks.verify(SECRET, header, body, now=1_700_000_010)
    assert not webhooks.verify(SECRET, header, body + b" ", now=1_700_000_010)
    assert not webhooks.verify("other-secret-0123456789", header, body, now=1_700_000_010)
    assert not webhooks.verify(SECRET, header, body, now=1_700_000_000 + 3600), "an old timestamp is a replay"


def test_webhook_api_secret_is_write_only_and_errors_name_fields(alice, team_a, api, bob):
    client = api(alice)
    resp = client.post(
        f"/api/v1/teams/{team_a.slug}/webhooks/", {"url": "http://127.0.0.1:9/h", "secret": "short", "format": "xml"}
    )
    assert resp.status_code == 400 and set(resp.json()) >= {"secret", "format"}
    resp = client.post(
        f"/api/v1/teams/{team_a.slug}/webhooks/",
        {"url": "http://127.0.0.1:9/h", "secret": SECRET, "format": "slack"},
        format="json",
    )
    assert resp.status_code == 201 and "secret" not in resp.json()
    assert SECRET not in client.get(f"/api/v1/teams/{team_a.slug}/webhooks/").content.decode()
    from apps.audit.models import AuditEvent

    assert SECRET not in str(list(AuditEvent.objects.values_list("after", flat=True)))
    with connection.cursor() as cur:
        cur.execute("SELECT secret FROM alerts_webhookendpoint")
        assert SECRET not in cur.fetchone()[0], "encrypted at rest"
    assert api(bob).get(f"/api/v1/teams/{team_a.slug}/webhooks/").status_code == 404


def test_rules_api_validates_and_scopes(alice, team_a, bob, team_b, api, staff):
    client = api(alice)
    resp = client.post(
        "/api/v1/alert-rules/",
        {"kind": "idle_gpu", "team": "team-a", "params": {"window_s": 5, "bogus": 1, "max_requests": "x"}},
        format="json",
    )
    assert resp.status_code == 400
    assert set(resp.json()) == {"params.window_s", "params.bogus", "params.max_requests"}
    resp = client.post(
        "/api/v1/alert-rules/", {"kind": "idle_gpu", "team": "team-a", "params": {"window_s": 600}}, format="json"
    )
    assert resp.status_code == 201 and resp.json()["effective_params"]["window_s"] == 600
    # another team is no team of yours: the answer neither confirms it exists nor names it
    other = client.post("/api/v1/alert-rules/", {"kind": "idle_gpu", "team": "team-b"}, format="json")
    assert other.status_code == 400 and other.json() == {"team": ["No such team among yours."]}
    assert client.post("/api/v1/alert-rules/", {"kind": "drift", "team": "team-a"}, format="json").status_code == 403
    assert client.post("/api/v1/alert-rules/", {"kind": "idle_gpu"}, format="json").status_code == 403
    default = AlertRule.objects.get(kind="idle_gpu", team=None)
    assert client.patch(f"/api/v1/alert-rules/{default.pk}/", {"enabled": False}, format="json").status_code == 403
    assert api(staff).patch(f"/api/v1/alert-rules/{default.pk}/", {"enabled": False}, format="json").status_code == 200
    assert api(staff).delete(f"/api/v1/alert-rules/{default.pk}/").status_code == 400
    listed = {r["scope"] for r in api(bob).get("/api/v1/alert-rules/?kind=idle_gpu").json()["results"]}
    assert listed == {"default"}, "another team's override is not visible"


def test_incident_api_filters_and_acknowledge(alice, bob, team_a, team_b, cluster, grant, api, make_user):
    grant(team_a, cluster, "4")
    grant(team_b, cluster, "4")
    a = make_app(alice, team_a, cluster, "a1")
    b = make_app(bob, team_b, cluster, "b1")
    set_state(a, "deploy_failed")
    set_state(b, "unhealthy")
    services.evaluate()
    mine = api(alice).get("/api/v1/incidents/?state=open").json()["results"]
    assert [i["application"] for i in mine] == [a.pk], "a team sees its own incidents only"
    assert api(alice).get(f"/api/v1/incidents/?application={b.pk}").json()["results"] == []
    assert api(alice).get("/api/v1/incidents/?rule=crash_loop").json()["results"] == []
    assert api(alice).get("/api/v1/incidents/?state=bogus").status_code == 400
    inc = mine[0]["id"]
    resp = api(alice).post(f"/api/v1/incidents/{inc}/acknowledge/")
    assert resp.status_code == 200 and resp.json()["acknowledged_by"] == "alice"
    assert api(bob).post(f"/api/v1/incidents/{inc}/acknowledge/").status_code == 404


def test_evaluation_costs_the_same_queries_for_10_or_50_apps(alice, team_a, cluster, grant):
    grant(team_a, cluster, "100")

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            services.evaluate()
        return len(ctx.captured_queries)

    for i in range(10):
        set_state(make_app(alice, team_a, cluster, f"s{i}", gpus=0.1), "deploy_failed")
    services.evaluate()  # the incidents exist; next passes only update
    small = queries()
    for i in range(10, 50):
        set_state(make_app(alice, team_a, cluster, f"s{i}", gpus=0.1), "deploy_failed")
    services.evaluate()
    assert queries() == small, "O(rules) queries per pass, not O(apps)"


@pytest.mark.parametrize("seed", range(40))
def test_the_slot_suggestion_meets_the_target_when_the_requests_are_replayed_under_lru(seed):
    """Only counters reach the estimate (requests, loads, slots filled, distinct models); the replay uses the
    sequence itself."""
    rng = random.Random(seed)
    models = [f"m{i}" for i in range(rng.randint(3, 12))]
    slots = rng.randint(1, len(models) - 1)
    pattern = rng.choice(["scan", "uniform", "zipf"])
    n = rng.randint(300, 1500)
    if pattern == "scan":
        seq = [models[i % len(models)] for i in range(n)]
    elif pattern == "uniform":
        seq = [rng.choice(models) for _ in range(n)]
    else:
        weights = [1 / (i + 1) for i in range(len(models))]
        seq = rng.choices(models, weights, k=n)
    observed = lru_hit_rate(seq, slots)
    loads = round(n * (1 - observed))
    target = 0.8
    s = suggest_slots(requests=n, loads=loads, distinct_models=len(set(seq)), replicas=1, slots=slots, target=target)
    if s["reachable"]:
        assert lru_hit_rate(seq, s["slots_per_replica"]) >= target, (pattern, slots, s)
    else:
        assert lru_hit_rate(seq, len(set(seq))) < target


def test_pages_render_incidents_rules_webhooks_and_waste(client, alice, team_a, cluster, grant):
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    set_state(app, "deploy_failed", "boom")
    services.evaluate()
    inc = Incident.objects.get()
    client.force_login(alice)
    page = client.get("/incidents/").content.decode()
    assert inc.summary in page
    assert "1</span>" in client.get("/incidents/badge/").content.decode()
    detail = client.get(f"/incidents/{inc.pk}/").content.decode()
    assert "boom" in detail and "Acknowledge" in detail
    client.post(f"/incidents/{inc.pk}/acknowledge/")
    assert Incident.objects.get().acknowledged_by == alice
    assert "badge" not in client.get("/incidents/badge/").content.decode().split("Incidents", 1)[1]
    rules = client.get("/alert-rules/").content.decode()
    assert all(escape(k.label) in rules for k in KINDS.values())
    resp = client.post("/alert-rules/", {"kind": "idle_gpu", "team": "team-a", "param_window_s": "5", "enabled": "on"})
    assert "params.window_s" in resp.content.decode() and not AlertRule.objects.filter(team=team_a).exists()
    resp = client.post("/teams/team-a/webhooks/", {"url": "not a url", "secret": SECRET, "format": "json"})
    assert resp.status_code == 200 and "is-invalid" in resp.content.decode()
    assert "GPU-hours allocated" in client.get("/teams/team-a/waste/").content.decode()
    report = client.get("/api/v1/teams/team-a/waste-report/")
    assert report.status_code == 200 and report.json()["team"] == "team-a"


def test_receiver_port_is_closed_after_use():
    with Receiver(SECRET) as rx:
        port = rx.server.server_address[1]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_failed_app_stays_failed_while_ray_retries_it_and_resolves_when_it_recovers(alice, team_a, cluster, grant):
    """Another team's push makes Ray deploy every failed app again: the same revision DEPLOYING is not a recovery."""
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    Application.objects.filter(pk=app.pk).update(deployed_revision=app.current_revision)
    set_state(app, "deploy_failed", message="ModuleNotFoundError: No module named 'x'")
    services.evaluate()
    incident = Incident.objects.get(kind="app_failed", application=app)
    assert incident.state == "open" and incident.evidence["revision"] == app.current_revision_id
    Application.objects.filter(pk=app.pk).update(state="deploying")  # Ray retries the same revision
    services.evaluate()
    incident.refresh_from_db()
    assert incident.state == "open", "retrying the same revision is not a recovery"
    assert "deploying the same revision again" in incident.summary
    set_state(app, "deploy_failed", message="ModuleNotFoundError: No module named 'x'")
    services.evaluate()
    incident.refresh_from_db()
    assert incident.state == "open" and not incident.reopened
    set_state(app, "running")
    services.evaluate()
    incident.refresh_from_db()
    assert incident.state == "resolved", "it resolves when its own app runs"
