"""Issue 25's defects that a newcomer meets first: Ray's failures readable at a glance, links in mails that lead to
the dashboard, the documented servectl, a favicon, the deploy form's only team chosen."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from apps.applications.models import Application
from apps.dashboard.templatetags.ray_text import ray_cause, strip_ansi
from apps.localdev.management.commands.run_local import child_env

# What Ray 2.60 reports for a typo in the import path (the message of a DEPLOY_FAILED application), colours kept.
RAY_FAILURE = (
    "Deploying app 'broken' failed with exception:\n"
    "\x1b[36mray::build_serve_application()\x1b[39m (pid=4242, ip=10.0.0.1)\n"
    '  File "/ray/serve/_private/api.py", line 95, in build_serve_application\n'
    "    app = import_attr(import_path)\n"
    '  File "/ray/_private/utils.py", line 1120, in import_attr\n'
    "    module = importlib.import_module(module_name)\n"
    "[36mray::build_serve_application()[39m (the escape lost on the way)\n"
    "ModuleNotFoundError: No module named 'examples.helo'\n"
)


def test_the_cause_of_a_ray_failure_is_one_line_without_colour_codes():
    assert ray_cause(RAY_FAILURE) == "ModuleNotFoundError: No module named 'examples.helo'"
    clean = strip_ansi(RAY_FAILURE)
    assert "\x1b" not in clean and "[36m" not in clean and "[39m" not in clean
    assert "ray::build_serve_application()" in clean
    assert ray_cause("Deployment 'Hello' has 1 replicas that failed to start") == (
        "Deployment 'Hello' has 1 replicas that failed to start"
    )
    assert ray_cause("") == "" and len(ray_cause("x" * 1000)) == 300


@pytest.mark.django_db
def test_the_app_page_says_the_cause_first_and_folds_ray_s_message(alice, team_a, cluster, grant, api):
    grant(team_a, cluster, "2")
    resp = api(alice).post(
        "/api/v1/applications/",
        {"team": "team-a", "cluster": cluster.pk, "name": "broken", "route_prefix": "/team-a/broken",
         "import_path": "examples.helo:app"},
        format="json",
    )  # fmt: skip
    assert resp.status_code == 201, resp.content
    Application.objects.filter(pk=resp.json()["id"]).update(
        state="deploy_failed", status_message=RAY_FAILURE, status={"status": "DEPLOY_FAILED", "deployments": {}}
    )
    page = Client()
    page.force_login(alice)
    html = page.get(f"/apps/{resp.json()['id']}/").content.decode()
    cause = html.index('ray-cause">ModuleNotFoundError: No module named &#x27;examples.helo&#x27;</p>')
    assert cause < html.index("<details><summary") < html.index('class="small ray-message"')
    assert "[36m" not in html and "\x1b" not in html


def test_links_in_mails_lead_to_the_dashboard_that_make_run_serves(tmp_path):
    env = child_env({"PATH": os.environ["PATH"]}, port=8088, metrics_dir=tmp_path)
    assert env["PUBLIC_URL"] == "http://127.0.0.1:8088"
    assert child_env({"PUBLIC_URL": "https://cp.example"}, port=8088, metrics_dir=tmp_path)["PUBLIC_URL"] == (
        "https://cp.example"
    )
    from django.conf import settings

    if "PUBLIC_URL" not in os.environ:
        assert settings.PUBLIC_URL == "http://127.0.0.1:8088", "the default is the dashboard, not Serve's port"


def test_the_documented_servectl_is_found_where_the_docs_say():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme[readme.index("source .venv/bin/activate") :]
    assert block.index("source .venv/bin/activate") < block.index("servectl login")  # activated before the first use
    run_local = (root / "apps/localdev/management/commands/run_local.py").read_text()
    assert "servectl   {Path(sys.executable).parent / 'servectl'}" in run_local  # make run's banner prints the path


@pytest.mark.django_db
def test_every_page_names_a_favicon_that_exists_and_one_team_is_chosen(alice, team_a):
    page = Client()
    page.force_login(alice)
    html = page.get("/apps/new/").content.decode()
    assert '<link rel="icon" href="/static/favicon.svg"' in html and finders.find("favicon.svg")
    icon = Client().get("/favicon.ico")  # what browsers ask on pages that name no icon
    assert icon.status_code == 301 and icon["Location"] == "/static/favicon.svg"
    assert "Choose…" not in html and '<option value="team-a" selected>' in html


@pytest.mark.django_db
def test_staff_see_every_team_without_being_called_its_owner(staff, alice, team_a, team_b):
    from apps.teams.models import Membership

    Membership.objects.create(team=team_b, user=staff, role="viewer")
    page = Client()
    page.force_login(staff)
    html = page.get("/").content.decode()
    assert '<h1 class="h3 mb-0">Teams</h1>' in html and "Your teams" not in html
    row_a = html[html.index(">team-a</a>") :].split("</tr>")[0]
    row_b = html[html.index(">team-b</a>") :].split("</tr>")[0]
    assert "not a member (staff)" in row_a and "owner" not in row_a
    assert "<td>viewer</td>" in row_b
    mine = Client()
    mine.force_login(alice)
    assert "Your teams" in mine.get("/").content.decode()


def test_the_traffic_generator_says_which_app_failed_and_why():
    from collections import Counter

    from apps.localdev.management.commands.traffic import report

    failures = Counter({("/search/models", "HTTP 503"): 3, ("/vision/hello", "ConnectionError"): 1})
    line = report(500, 4, failures)
    assert (
        line
        == "traffic: 500 requests sent, 4 failed (/search/models: 3 x HTTP 503, /vision/hello: 1 x ConnectionError)"
    )
    assert report(500, 0, Counter()) == "traffic: 500 requests sent, 0 failed"


@pytest.mark.django_db
def test_a_starter_grant_used_as_intended_opens_no_incident_and_a_refusal_is_not_mailed(
    alice, team_a, team_b, bob, cluster, grant, api
):
    from django.core import mail

    from apps.alerts import services
    from apps.alerts.models import AlertRule, Incident
    from apps.quotas.models import Quota
    from tests.conftest import app_body

    services.ensure_default_rules()
    assert not AlertRule.objects.get(kind="admission_refused", team=None).email
    assert AlertRule.objects.get(kind="quota_high", team=None).email
    grant(team_a, cluster, "0.5")
    grant(team_b, cluster, "0.5")
    Quota.objects.filter(team=team_a).update(starter=True)  # team A's is its starter grant, team B's a real quota
    for who, team in ((alice, "team-a"), (bob, "team-b")):
        body = app_body(team, cluster.pk, "first")
        body["deployments"][0]["ray_actor_options"] = {"num_cpus": 0.1, "num_gpus": 0.5}
        assert api(who).post("/api/v1/applications/", body, format="json").status_code == 201
    assert (
        api(alice).post("/api/v1/applications/", app_body("team-a", cluster.pk, "second"), format="json").status_code
        == 400
    )
    mail.outbox.clear()
    services.evaluate()
    opened = set(Incident.objects.values_list("kind", "team__slug"))
    assert ("quota_high", "team-b") in opened, "a real quota used up still warns"
    assert ("quota_high", "team-a") not in opened, "the starter grant used as intended is not an incident"
    assert ("admission_refused", "team-a") in opened
    assert not any("refused" in m.subject.lower() for m in mail.outbox), "the refusal was answered on the form"


def test_structured_values_read_as_sentences_cut_at_a_word():
    from apps.dashboard.templatetags.readable import fields, pretty_json, summary

    after = {"user": "bob", "role": "admin", "note": "a rather long sentence " * 10}
    line = summary(after, 80)
    assert line.startswith("user: bob; role: admin; note: a rather long") and line.endswith("…")
    assert len(line) <= 80 and not line[:-1].endswith("sent"), "cut at a word, not mid-word"
    evidence = {"message": RAY_FAILURE, "deployments": {"Hello": {"status": "UNHEALTHY"}}, "starts": [1, 2, 3]}
    rows = dict(fields(evidence))
    assert rows["message"] == "ModuleNotFoundError: No module named 'examples.helo'"
    assert rows["deployments"] == "{Hello: {status: UNHEALTHY}}" and rows["starts"] == "1, 2, 3"
    assert '"status": "UNHEALTHY"' in pretty_json(evidence) and "\x1b" not in pretty_json(evidence)


@pytest.mark.django_db
def test_the_audit_log_and_an_incident_show_summaries_with_the_details_folded(alice, team_a, cluster, grant, staff):
    from apps.alerts import services
    from apps.alerts.models import Incident
    from tests.test_alerts import make_app, set_state

    services.ensure_default_rules()
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    set_state(app, "deploy_failed", RAY_FAILURE)
    services.evaluate()
    incident = Incident.objects.get(kind="app_failed")
    page = Client()
    page.force_login(alice)
    html = page.get(f"/incidents/{incident.pk}/").content.decode()
    fields_html = html[html.index('id="evidence-fields"') : html.index("</dl>", html.index('id="evidence-fields"'))]
    assert "ModuleNotFoundError: No module named &#x27;examples.helo&#x27;" in fields_html
    assert "{&#x27;" not in fields_html, "no Python dict printed as-is"
    assert "<details><summary" in html[html.index("</dl>") :]
    staff_page = Client()
    staff_page.force_login(staff)
    audit = staff_page.get("/audit/").content.decode()
    assert 'class="small audit-change"><details><summary>' in audit


def test_labels_and_times_read_as_words():
    from datetime import timedelta

    from django.utils import timezone

    from apps.dashboard.templatetags.readable import ago, param_label

    assert param_label("window_s") == "window (seconds)" and param_label("max_hit_rate") == "max hit rate"
    assert ago(timezone.now() - timedelta(seconds=5)) == "just now"
    assert ago(timezone.now() - timedelta(minutes=5)) == "5\xa0minutes ago" and ago(None) == "never"


@pytest.mark.django_db
def test_staff_find_how_to_register_a_cluster_and_the_push_progress_is_explained(staff, alice, cluster):
    page = Client()
    page.force_login(staff)
    assert 'id="register-cluster" href="/admin/clusters/cluster/add/"' in page.get("/clusters/").content.decode()
    detail = page.get(f"/clusters/{cluster.pk}/").content.decode()
    assert "every change pushed (config generation" in detail or "pushing: config generation" in detail
    team_page = Client()
    team_page.force_login(alice)
    assert 'id="register-cluster"' not in team_page.get("/clusters/").content.decode()


@pytest.mark.django_db
def test_the_pushing_flash_is_cleared_once_the_app_has_settled(alice, team_a, cluster, grant):
    from tests.test_alerts import make_app, set_state

    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    page = Client()
    page.force_login(alice)
    assert '<div id="flash">' in page.get(f"/apps/{app.pk}/").content.decode()
    pending = page.get(f"/apps/{app.pk}/status/").content.decode()
    assert 'hx-swap-oob="true"' not in pending, "still pushing: the flash stays"
    set_state(app, "running")
    settled = page.get(f"/apps/{app.pk}/status/").content.decode()
    assert '<div id="flash" hx-swap-oob="true"></div>' in settled


@pytest.mark.django_db
def test_getting_started_opens_what_a_done_step_made_not_a_blank_form(alice, team_a, cluster, grant):
    from tests.test_alerts import make_app

    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    page = Client()
    page.force_login(alice)
    html = page.get("/welcome/").content.decode()
    opens = [chunk.split('"')[0] for chunk in html.split('class="btn btn-sm btn-link step-open" href="')[1:]]
    assert "/teams/team-a/" in opens and f"/apps/{app.pk}/" in opens
    assert not any(o.startswith("/teams/new/") or o.startswith("/apps/new/") for o in opens)


def holds_half_a_gpu(app: Application, running: bool) -> None:
    """What Ray reports of the app: one running replica holding 0.5 GPU (what the allocation series samples)."""
    app.status = (
        {"deployments": {"Hello": {"required_resources": {"GPU": 0.5}, "replicas": [{"state": "RUNNING"}]}}}
        if running
        else {}
    )
    app.save(update_fields=["status"])


@pytest.mark.django_db
def test_the_waste_page_and_the_showback_count_the_same_gpu_hours(alice, team_a, cluster, grant, settings):
    """A new team's first minutes of allocation: the showback and the waste page must say the same GPU-hours (the
    waste page read the week from hourly rollups, which had none yet, and said 0 beside the showback's 0.18)."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.dashboard.selectors import showback
    from apps.metrics import services as metrics
    from apps.metrics.models import Point
    from tests.test_alerts import make_app

    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    holds_half_a_gpu(app, True)
    settings.SCRAPE_INTERVAL_S = 60
    now = timezone.now()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=30)
    for i in range(24):  # 24 minutes of 0.5 GPU: 0.2 GPU-hours
        metrics.scrape_cluster(cluster.pk, targets=[], now=first + timedelta(minutes=i))
    metrics.rollup(Point.MINUTE, lookback=timedelta(hours=2), now=now)

    shown = showback(team_a, [app])
    assert sum(shown["totals"]) == pytest.approx(0.2)
    page = Client()
    page.force_login(alice)
    html = page.get(f"/teams/{team_a.slug}/waste/").content.decode()
    assert '<div class="fs-3" id="alloc">0.2</div>' in html, html[html.find('id="alloc"') - 40 :][:200]
    assert "No GPUs were allocated" not in html
    assert "to the last complete minute" in html


@pytest.mark.django_db
def test_the_quota_chart_shows_what_the_team_holds_and_fills_the_window_it_has(alice, team_a, cluster, grant, settings):
    """The team line is read against the quota: a bucket in which the replicas started shows what they hold, not
    half of it; a 1 h window over ten minutes of record starts at the first sample and says so."""
    import json
    import re
    from datetime import timedelta

    from django.utils import timezone

    from apps.metrics import services as metrics
    from tests.test_alerts import make_app

    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    settings.SCRAPE_INTERVAL_S = 15
    now = timezone.now()
    begin = now - timedelta(minutes=10)
    type(team_a).objects.filter(pk=team_a.pk).update(created_at=begin - timedelta(minutes=1))  # visible from then
    for i in range(40):  # 10 minutes, a scrape every 15 s; the replica runs from the third scrape on
        holds_half_a_gpu(app, i >= 2)
        metrics.scrape_cluster(cluster.pk, targets=[], now=begin + timedelta(seconds=15 * i))
    page = Client()
    page.force_login(alice)
    html = page.get(f"/charts/?series=team_gpus_allocated&cluster={cluster.pk}&team=team-a&range=1h").content.decode()
    data = json.loads(re.search(r'<script id="[^"]+-data" type="application/json">(.*?)</script>', html, re.S)[1])
    team_line = next(d for d in data["datasets"] if not d.get("quota"))
    values = [p["y"] for p in team_line["data"]]
    assert values[0] == 0.0 and values[1:] == [0.5] * (len(values) - 1), values  # never the 0.25 of an average
    first = team_line["data"][0]["x"]
    assert first <= data["min"] + 60_000 < first + 60_000, (data["min"], first)  # a bucket back, not 50 min back
    assert data["max"] - data["min"] < 12 * 60_000
    assert "Recorded since" in html and "the 1h window starts before the first sample" in html
