"""A cluster's parts owned by other apps (push state, metrics source, compaction policy, starter grant): the data
migration that moved them off the cluster's row, the rows every new cluster gets, and the API that still shows one
flat cluster."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.clusters import parts
from apps.clusters.models import Cluster
from apps.compaction.models import CompactionSettings
from apps.deploys.models import PushState
from apps.metrics.models import MetricsConfig
from apps.quotas.models import StarterGrant

BEFORE = [
    ("clusters", "0013_team_caps"),
    ("compaction", "0002_execution_outcome"),
    ("metrics", "0002_series_fillfactor"),
    ("quotas", "0004_starter_grant"),
    ("deploys", None),
]
AFTER = [("clusters", "0014_split_parts")]


def migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_every_value_to_its_owner_and_back():
    try:
        old = migrate(BEFORE).loader.project_state(BEFORE[:4]).apps
        OldCluster = old.get_model("clusters", "Cluster")
        OldCluster.objects.create(
            name="moved",
            dashboard_url="http://127.0.0.1:1",
            drift_policy="flag",
            desired_generation=7,
            pushed_generation=5,
            last_pushed_hash="a" * 64,
            lock_owner="worker-1",
            poll_requests=3,
            metrics_source="prometheus",
            prometheus_url="http://prometheus:9090",
            prometheus_matchers={"ray_cluster": "prod"},
            prometheus_credential="bearer-S3CR3T",
            metrics_targets=["10.0.0.1:8080"],
            scrape_owner="scraper",
            gcs_address="10.0.0.1:6379",
            compaction_policy="automatic",
            compaction_threshold=2,
            compaction_window="01:00-05:00",
            starter_pool="a100",
            starter_gpus=Decimal("0.5"),
            starter_days=14,
        )
        new = migrate(AFTER).loader.project_state(AFTER).apps
        cluster = new.get_model("clusters", "Cluster").objects.get(name="moved")
        assert cluster.desired_generation == 7  # the desired state's version stays the cluster's
        push = new.get_model("deploys", "PushState").objects.get(cluster=cluster)
        assert (push.drift_policy, push.pushed_generation, push.last_pushed_hash) == ("flag", 5, "a" * 64)
        assert (push.lock_owner, push.poll_requests) == ("worker-1", 3)
        source = new.get_model("metrics", "MetricsConfig").objects.get(cluster=cluster)
        assert (source.metrics_source, source.prometheus_url) == ("prometheus", "http://prometheus:9090")
        assert source.prometheus_matchers == {"ray_cluster": "prod"} and source.metrics_targets == ["10.0.0.1:8080"]
        assert source.prometheus_credential == "bearer-S3CR3T" and source.scrape_owner == "scraper"
        with connection.cursor() as cur:  # still encrypted at rest in its new table
            cur.execute("SELECT prometheus_credential FROM metrics_metricsconfig WHERE cluster_id = %s", [cluster.pk])
            assert "S3CR3T" not in cur.fetchone()[0]
        policy = new.get_model("compaction", "CompactionSettings").objects.get(cluster=cluster)
        assert (policy.gcs_address, policy.compaction_policy) == ("10.0.0.1:6379", "automatic")
        assert (policy.compaction_threshold, policy.compaction_window) == (2, "01:00-05:00")
        grant = new.get_model("quotas", "StarterGrant").objects.get(cluster=cluster)
        assert (grant.starter_pool, grant.starter_gpus, grant.starter_days) == ("a100", Decimal("0.5"), 14)

        back = migrate(BEFORE).loader.project_state(BEFORE[:4]).apps
        again = back.get_model("clusters", "Cluster").objects.get(name="moved")
        assert (again.pushed_generation, again.drift_policy, again.prometheus_credential) == (
            5,
            "flag",
            "bearer-S3CR3T",
        )
        assert (again.compaction_policy, again.starter_gpus) == ("automatic", Decimal("0.5"))
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.mark.django_db
def test_every_new_cluster_gets_each_part_with_its_owners_defaults():
    cluster = Cluster.objects.create(name="fresh", dashboard_url="http://127.0.0.1:1")
    assert PushState.objects.get(pk=cluster.pk).drift_policy == "repair"
    assert MetricsConfig.objects.get(pk=cluster.pk).metrics_source == "embedded"
    assert CompactionSettings.objects.get(pk=cluster.pk).compaction_policy == "suggest"
    assert StarterGrant.objects.get(pk=cluster.pk).starter_gpus == 0
    assert sorted(parts.accessors()) == ["compaction_settings", "metrics_config", "push_state", "starter_grant"]


def test_a_field_belongs_to_one_part_and_the_api_names_are_flat():
    assert parts.owner_of("prometheus_url").accessor == "metrics_config"
    assert parts.owner_of("drift_policy").accessor == "push_state"
    assert parts.owner_of("name") is None
    own, theirs = parts.split({"name": "c", "gcs_address": "h:1", "starter_gpus": 1, "metrics_source": "embedded"})
    assert own == {"name": "c"}
    assert theirs == {
        "compaction_settings": {"gcs_address": "h:1"},
        "starter_grant": {"starter_gpus": 1},
        "metrics_config": {"metrics_source": "embedded"},
    }
    with pytest.raises(ValueError, match="another part's"):
        parts.register(parts.Part(accessor="other", model=StarterGrant, writable=()))


@pytest.mark.django_db
def test_the_api_writes_each_part_in_one_request_and_refuses_their_state(api, staff, make_cluster):
    cluster = make_cluster(name="flat")
    client = api(staff)
    resp = client.patch(
        f"/api/v1/clusters/{cluster.pk}/",
        {"drift_policy": "flag", "compaction_window": "02:00-04:00", "prometheus_url": "http://p:9090"},
        format="json",
    )
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["drift_policy"], body["compaction_window"], body["prometheus_url"]) == (
        "flag",
        "02:00-04:00",
        "http://p:9090",
    )
    assert PushState.objects.get(pk=cluster.pk).drift_policy == "flag"
    # a part's state is read-only, as it was on the cluster
    resp = client.patch(f"/api/v1/clusters/{cluster.pk}/", {"pushed_generation": 99}, format="json")
    assert resp.status_code == 200 and PushState.objects.get(pk=cluster.pk).pushed_generation != 99
    # one bad value in one part changes nothing anywhere
    resp = client.patch(
        f"/api/v1/clusters/{cluster.pk}/",
        {"http_port": 8100, "drift_policy": "repair", "metrics_source": "prometheus", "prometheus_url": ""},
        format="json",
    )
    assert resp.status_code == 400 and "prometheus_url" in resp.json()
    cluster.refresh_from_db()
    assert cluster.http_port == 8000 and PushState.objects.get(pk=cluster.pk).drift_policy == "flag"


@pytest.mark.django_db
def test_the_admin_edits_each_part_on_the_cluster_s_page_with_the_credential_write_only(staff, make_cluster):
    from django.test import Client

    staff.is_superuser = True
    staff.save()
    cluster = make_cluster(name="adm-parts")
    MetricsConfig.objects.filter(pk=cluster.pk).update(prometheus_credential="bearer-S3CR3T")
    page = Client()
    page.force_login(staff)
    html = page.get(f"/admin/clusters/cluster/{cluster.pk}/change/").content.decode()
    for part, field in (
        ("push_state", "drift_policy"),
        ("metrics_config", "prometheus_url"),
        ("compaction_settings", "compaction_window"),
        ("starter_grant", "starter_gpus"),
    ):
        assert f'name="{part}-0-{field}"' in html, field
    assert "bearer-S3CR3T" not in html, "the credential is never shown"
    assert page.get("/admin/clusters/cluster/add/").status_code == 200
