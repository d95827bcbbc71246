"""The embedded store's fast paths: the exposition parser gives what prometheus_client's gives, stored deltas are
right whichever database writes them (COPY on PostgreSQL, executemany on SQLite), retention deletes in batches."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.metrics import services
from apps.metrics.models import Point, Series
from workers.clients.prometheus import ScrapeError, parse

pytestmark = pytest.mark.django_db

ESCAPES = 'application="a\\"b\\\\c\\nd",route="/x"'


def page(seed: int) -> str:
    """Ray-like exposition text: wanted and unwanted families, histograms, escapes, NaN/Inf, timestamps."""
    rng = random.Random(seed)
    lines = [
        "# HELP ray_serve_num_http_requests_total Requests.",
        "# TYPE ray_serve_num_http_requests_total counter",
    ]
    for i in range(40):
        lines.append(
            f'ray_serve_num_http_requests_total{{application="app{i % 5}",route="/r{i}",status_code="200",'
            f'NodeAddress="10.0.0.{i % 3}"}} {rng.randint(0, 10**6)}.0'
        )
    lines.append(f"ray_serve_num_http_requests_total{{{ESCAPES}}} 7")
    lines += ["# TYPE ray_node_mem_used gauge"] + [f'ray_node_mem_used{{ip="10.0.0.{i}"}} {i}e9' for i in range(30)]
    lines.append("# TYPE ray_serve_http_request_latency_ms histogram")
    for le in ("1.0", "10.0", "100.0", "+Inf"):
        lines.append(f'ray_serve_http_request_latency_ms_bucket{{application="a",le="{le}"}} {rng.randint(0, 9)}')
    lines += [
        'ray_serve_http_request_latency_ms_sum{application="a"} 12.5',
        'ray_serve_http_request_latency_ms_count{application="a"} 9',
        "# TYPE ray_serve_num_multiplexed_models gauge",
        'ray_serve_num_multiplexed_models{application="a",replica="r"} NaN',
        'ray_serve_num_multiplexed_models{application="b",replica="r"} +Inf 1700000000000',
        "ray_serve_num_multiplexed_models 3",
        "# TYPE ray_other_total counter",
        'ray_other_total{x="}{"} 1',
        "# TYPE ray_serve_num_http_requests_extra_total counter",  # a wanted family's name is its prefix
        'ray_serve_num_http_requests_extra_total{application="a"} 4',
    ]
    if seed % 2:  # braces that do not pair inside a label value: the page is checked line by line, and passes
        lines.append('ray_other_total{x="{"} 2')
    text = "\n".join(lines) + "\n"
    return text.replace("\n", "\r\n") if seed == 3 else text


def reference(text: str, wanted: set[str]) -> list[tuple]:
    out = []
    for family in text_string_to_metric_families(text):
        if family.name in wanted:
            for s in family.samples:
                out.append((family.name, s.name, family.type, dict(s.labels), repr(float(s.value))))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_the_fast_parser_gives_what_prometheus_clients_parser_gives(seed):
    text = page(seed)
    wanted = set(services.FAMILIES)
    mine = [(s.family, s.name, s.kind, s.labels, repr(s.value)) for s in parse(text, wanted)]
    assert mine == reference(text, wanted)
    assert any(s[3].get("application") == 'a"b\\c\nd' for s in mine)  # escapes undone


def test_a_series_seen_before_parses_as_the_first_time_and_its_bad_value_is_still_refused():
    """Label blocks are taken apart once and remembered by their text; what comes after one is still checked."""
    wanted = set(services.FAMILIES)
    for seed in range(5):
        text = page(seed)
        first = [(s.family, s.name, s.kind, dict(s.labels), repr(s.value)) for s in parse(text, wanted)]
        for s in parse(text, wanted):
            s.labels["mutated"] = "yes"  # a caller's change to one sample's labels reaches no later parse
        again = [(s.family, s.name, s.kind, s.labels, repr(s.value)) for s in parse(text, wanted)]
        assert first == again == reference(text, wanted)
    head = 'ray_serve_num_http_requests_total{application="app0",route="/r0",status_code="200",NodeAddress="10.0.0.0"}'
    assert [s.value for s in parse(f"{head} 5\n", wanted)] == [5.0]
    for tail in (" twelve", " 1 2 3", "5", " 1 x"):
        with pytest.raises(ScrapeError, match="malformed"):
            list(parse(f"{head}{tail}\n", wanted))
    assert [(s.value, s.labels["route"]) for s in parse(f"{head} 7 1700000000000\n", wanted)] == [(7.0, "/r0")]


def test_the_series_memos_are_bounded_and_start_over_when_full(monkeypatch):
    from workers.clients import prometheus

    monkeypatch.setattr(prometheus, "_HEADS_MAX", 10)
    monkeypatch.setattr(services, "_SHAPES_MAX", 10)
    prometheus._HEADS.clear()
    services._SHAPES.clear()
    wanted = set(services.FAMILIES)
    for seed in range(5):
        text = page(seed)
        samples = list(parse(text, wanted))
        assert [(s.family, s.name, s.kind, s.labels, repr(s.value)) for s in samples] == reference(text, wanted)
        stored = services._normalise(samples)
        assert len(prometheus._HEADS) <= 10 and len(services._SHAPES) <= 10
    labels = {"application": "app0", "route": "/r0", "status_code": "200", "NodeAddress": "10.0.0.0"}
    key = ("ray_serve_num_http_requests", services.series_key("ray_serve_num_http_requests", labels))
    assert stored[key][1] == labels  # what is stored is right, whatever the memo held


@pytest.mark.parametrize(
    "text",
    [
        "<html><body>502 Bad Gateway</body></html>\n",
        'ray_serve_x{unterminated="oops 1\n',
        'ray_serve_num_http_requests_total{application="a"} twelve\n',
        "ray_serve_num_http_requests_total{application=a} 1\n",
        '# TYPE ray_serve_num_http_requests_total counter\nray_serve_num_http_requests_total{a="1"} 1\n'
        'ray_node_mem_used{ip="10.0.0.1" 5\n',  # cut off in a family nobody reads
        'ray_serve_num_http_requests_total{a="1"} 1\n  ray_node_mem_used 5\n',
    ],
)
def test_what_is_not_exposition_text_is_refused(text):
    with pytest.raises(ScrapeError, match="malformed"):
        list(parse(text, set(services.FAMILIES)))


def test_stored_deltas_and_gauges_are_exact_through_the_bulk_writer(make_cluster):
    cluster = make_cluster(name="bulk")
    now = timezone.now()
    n = 2500  # more than one statement's chunk of ids
    for k, bump in enumerate((0, 5, 2)):  # the third scrape's counters dropped: a restart
        values = {}
        for i in range(n):
            labels = {"application": f"a{i}", "replica": "r"}
            ck = services.series_key("ray_serve_num_http_requests", labels)
            gk = services.series_key("ray_serve_num_multiplexed_models", labels)
            values[("ray_serve_num_http_requests", ck)] = ("counter", labels, float(i + bump * (k > 0) + 10 * (k < 2)))
            values[("ray_serve_num_multiplexed_models", gk)] = ("gauge", labels, float(i % 4))
        services._store(cluster, values, now + timedelta(seconds=15 * k), fresh=set())
    assert Series.objects.filter(cluster=cluster).count() == 2 * n
    c = Series.objects.get(cluster=cluster, name="ray_serve_num_http_requests", labels__application="a7")
    deltas = list(Point.objects.filter(series=c).order_by("ts").values_list("value", flat=True))
    assert deltas == [5.0, 9.0]  # 17 -> 22 (+5), then 22 -> 9: restarted, counts 9 from zero
    assert c.last_raw == 9.0 and c.last_seen_at == now + timedelta(seconds=30)
    g = Series.objects.get(cluster=cluster, name="ray_serve_num_multiplexed_models", labels__application="a7")
    assert list(Point.objects.filter(series=g).values_list("value", flat=True)) == [3.0, 3.0, 3.0]
    assert g.last_seen_at == now  # refreshed only once it is older than SEEN_REFRESH: no row update per scrape
    services._store(
        cluster, {k: v for k, v in values.items() if k[0].endswith("models")}, now + timedelta(hours=1), set()
    )
    g.refresh_from_db()
    assert g.last_seen_at == now + timedelta(hours=1)


def test_retention_deletes_in_batches_and_keeps_what_is_young(make_cluster):
    cluster = make_cluster(name="ret")
    series = Series.objects.create(cluster=cluster, name="x", labels={}, key="x", kind="gauge")
    now = timezone.now()
    old = [Point(series=series, ts=now - timedelta(days=2, minutes=i), value=1) for i in range(25)]
    young = [Point(series=series, ts=now - timedelta(hours=1, minutes=i), value=1) for i in range(5)]
    Point.objects.bulk_create(old + young)
    assert services.enforce_retention(now=now, batch=7) == 25  # four batches
    assert Point.objects.filter(series=series).count() == 5
