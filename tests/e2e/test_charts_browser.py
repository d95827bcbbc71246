"""Charts in headless Chromium: the cluster and app pages draw series with data points (scrapes faked at the seam)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.applications.services import application_create
from apps.metrics import services
from tests.e2e.test_browser import login, page  # noqa: F401 - the page fixture
from tests.test_metrics import exposition, fake  # noqa: F401 - the fake fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHART_DATA = """(title) => {
    const fig = [...document.querySelectorAll('figure.chart-card')].find(f => f.textContent.includes(title));
    return fig.querySelector('canvas')._chart.data.datasets.map(d => d.data.map(p => p.y));
}"""


def test_cluster_and_app_pages_draw_charts_with_data(page, live_server, fake, cluster, alice, team_a, grant):  # noqa: F811
    grant(team_a, cluster, "4")
    app = application_create(
        actor=alice,
        team=team_a,
        cluster=cluster,
        name="mux",
        spec={
            "route_prefix": "/team-a/mux",
            "import_path": "examples.multiplexed:app",
            "deployments": [{"name": "Mux"}],
        },
    )
    t0 = timezone.now() - timedelta(minutes=20)
    # the app has run for half an hour: its series are its own (a series older than its app is not shown)
    type(app).objects.filter(pk=app.pk).update(created_at=t0 - timedelta(minutes=10))
    for i in range(10):
        fake["a"] = exposition(10 * i, 3 * i).replace("t--mux", app.serve_name)
        services.scrape_cluster(cluster.pk, targets=["a"], now=t0 + timedelta(minutes=2 * i))
    login(page, live_server, "alice")

    page.goto(f"{live_server.url}/apps/{app.pk}/")
    hit = page.locator("figure.chart-card", has_text="Model cache hit rate")
    hit.locator("canvas[data-chart]").wait_for()
    points = [len(d) for d in page.evaluate(CHART_DATA, "cache hit rate")]
    assert points and points[0] >= 5
    value = page.evaluate(CHART_DATA, "cache hit rate")[0][-1]
    assert value == pytest.approx(70)  # 1 - 3 loads / 10 requests per scrape, as a percentage
    page.get_by_role("group", name="Time range for Model cache hit rate").get_by_role("button", name="24h").click()
    page.locator('figure.chart-card:has-text("cache hit rate") button[aria-pressed="true"]', has_text="24h").wait_for()
    assert page.locator("figure.chart-card", has_text="Requests").locator(".empty-chart").count() == 1  # empty state

    page.goto(f"{live_server.url}/clusters/{cluster.pk}/")
    page.locator('figure.chart-card:has-text("GPUs allocated per node") canvas[data-chart]').wait_for()
    n = len(page.evaluate(CHART_DATA, "GPUs allocated per node")[0])
    assert n >= 5
