"""What a demanding reader sees on the dense pages, measured in Chromium at a laptop's width: the compaction plan's
node maps are wide enough to read and coloured by team as the cluster page is, node ids are as long as elsewhere,
names never break mid-word, and the alert rules' tables line up down the page."""

from __future__ import annotations

import pytest

from apps.applications.services import application_create
from apps.compaction import services
from apps.teams.services import team_create
from tests.e2e.test_browser import login, page  # noqa: F401 - the page fixture
from tests.fake_serve import FakeServe
from tests.test_compaction_service import serve

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Ray's node ids are 56 hex characters.
NODES = {f"{i:x}" * 4 + "7c0ffee5a1d2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4": 4 for i in (10, 11, 12)}


def single_lines(page, selector: str) -> list[str]:  # noqa: F811
    """The texts of the elements that the browser broke over more than one line."""
    return page.eval_on_selector_all(
        selector, "els => els.filter(e => e.getClientRects().length > 1).map(e => e.textContent)"
    )


def test_the_plan_maps_read_like_the_cluster_page_and_rules_line_up(
    page,  # noqa: F811
    live_server,
    staff,
    alice,
    team_a,
    cluster,
    grant,
    monkeypatch,
    tmp_path,
):
    grant(team_a, cluster, "12")
    other = team_create(actor=staff, slug="recommendations-platform", name="Recommendations platform")
    grant(other, cluster, "12")
    ids = list(NODES)
    fake = FakeServe(nodes=NODES)
    for team, name, node in ((team_a, "image-classifier-large", ids[0]), (other, "ranking-transformer-v2", ids[1])):
        spec = {
            "route_prefix": f"/{team.slug}/{name}",
            "import_path": "examples.hello:app",
            "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_gpus": 1}}],
        }
        app = application_create(actor=staff, team=team, cluster=cluster, name=name, spec=spec)
        fake.add(app.serve_name, "Hello", 1.0, [node])
    serve(monkeypatch, fake)
    plan = services.plan_create(actor=staff, cluster=cluster)
    assert plan.nodes_to_drain

    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, live_server, "platform")
    page.goto(f"{live_server.url}/compaction/{plan.pk}/")
    page.screenshot(path=str(tmp_path / "plan.png"), full_page=True)
    widths = page.eval_on_selector_all(".node-map .card", "els => els.map(e => e.getBoundingClientRect().width)")
    assert len(widths) == 2 * len(plan.input["nodes"]) and min(widths) >= 250, widths  # before and after
    assert single_lines(page, ".node-map .text-nowrap, .node-map code, .node-map .badge") == []
    overflowing = page.eval_on_selector_all(
        ".node-map .card-body", "els => els.filter(e => e.scrollWidth > e.clientWidth).map(e => e.textContent)"
    )
    assert overflowing == []
    codes = page.eval_on_selector_all(".node-map code, ol code", "els => els.map(e => e.textContent)")
    moved = {m["replica"] for m in plan.moves}
    node_codes = {c for c in codes if c not in moved}  # the moves list names the replica, then the two nodes
    assert node_codes == {n["id"][:12] for n in plan.input["nodes"]} and {len(c) for c in node_codes} >= {12}
    # Fill in the team's colour, the legend's, as on the cluster page.
    legend = dict(
        page.eval_on_selector_all(
            "#team-legend .badge", "els => els.map(e => [e.textContent, getComputedStyle(e).backgroundColor])"
        )
    )
    assert set(legend) == {"team-a", "recommendations-platform"} and len(set(legend.values())) == 2
    fills = page.eval_on_selector_all(
        ".node-map .progress-bar", "els => els.map(e => [e.title.split(':')[0], getComputedStyle(e).backgroundColor])"
    )
    assert fills and all(legend[team] == colour for team, colour in fills), (fills, legend)

    page.goto(f"{live_server.url}/alert-rules/")
    page.screenshot(path=str(tmp_path / "rules.png"), full_page=True)
    lefts = page.eval_on_selector_all(
        ".rules-table",
        "ts => ts.map(t => [...t.querySelectorAll('th')].map(th => Math.round(th.getBoundingClientRect().left)))",
    )
    assert len(lefts) >= 5 and all(row == lefts[0] for row in lefts), lefts  # every column at the same x

    page.goto(f"{live_server.url}/")
    assert page.locator(".table td a").count() >= 2  # the two teams' names, at least: the check below is not empty
    assert single_lines(page, ".table td a, .table td code") == []
