"""Demo data: a staff user, two teams with members, the local Ray cluster with its GPU pool, quotas and apps."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.applications.models import Application
from apps.applications.services import application_create
from apps.catalog.models import ModelEntry
from apps.catalog.services import model_create
from apps.clusters.models import Cluster
from apps.clusters.services import cluster_create
from apps.quotas.services import quota_set
from apps.teams.models import Membership, Role, Team
from apps.teams.services import team_create

from .seed_models import write_models

DEMO_PASSWORD = "demo-password-1"


class Command(BaseCommand):
    help = "Create demo users, teams, the local cluster, quotas and one running app per team (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--dashboard-url", default=os.environ.get("DEMO_RAY_DASHBOARD", "http://127.0.0.1:8265"))
        parser.add_argument("--serve-url", default=os.environ.get("DEMO_RAY_SERVE", "http://127.0.0.1:8000"))
        parser.add_argument("--http-port", type=int, default=8000)
        parser.add_argument("--gpus", default="8", help="GPUs in the a100 pool (logical GPUs of the workers)")

    @transaction.atomic
    def handle(self, *args, **options):
        User = get_user_model()
        admin, created = User.objects.get_or_create(
            username="admin", defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(os.environ.get("DEMO_ADMIN_PASSWORD", DEMO_PASSWORD))
            admin.save()
        people = {}
        for name in ("alice", "bob", "carol"):
            user, made = User.objects.get_or_create(username=name, defaults={"email": f"{name}@example.com"})
            if made:
                user.set_password(DEMO_PASSWORD)
                user.save()
            people[name] = user

        cluster = Cluster.objects.filter(name="local").first()
        if cluster is None:
            cluster = cluster_create(
                actor=admin,
                data={
                    "name": "local",
                    "kind": "ray",
                    "dashboard_url": options["dashboard_url"],
                    "serve_url": options["serve_url"],
                    "gcs_address": os.environ.get("DEMO_RAY_GCS", "127.0.0.1:6380"),
                    "http_port": options["http_port"],
                    # a new team (sign up, or sign in through a provider) can deploy at once, with no admin step
                    "starter_pool": "a100",
                    "starter_gpus": Decimal("0.5"),
                    "starter_days": 14,
                },
                pools=[{"name": "a100", "resource": "GPU", "capacity": Decimal(options["gpus"])}],
            )
        teams = {}
        for slug, name, owner in (("vision", "Vision team", "alice"), ("search", "Search team", "bob")):
            team = Team.objects.filter(slug=slug).first() or team_create(
                actor=people[owner], slug=slug, name=name, source="seed"
            )
            teams[slug] = team
            quota_set(actor=admin, team=team, cluster=cluster, pool_name="a100", gpus=Decimal("4"), source="seed")
        Membership.objects.get_or_create(team=teams["vision"], user=people["carol"], defaults={"role": Role.VIEWER})

        model_dir = Path(settings.BASE_DIR) / "var" / "models"
        write_models(model_dir, 8)
        demo_apps = [
            (
                "vision",
                "hello",
                {
                    "route_prefix": "/vision/hello",
                    "import_path": "examples.hello:app",
                    "deployments": [
                        {"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5}}
                    ],
                },
            ),
            (
                "search",
                "pipeline",
                {
                    "route_prefix": "/search/pipeline",
                    "import_path": "examples.pipeline:app",
                    "deployments": [
                        {"name": "Ingress", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}},
                        {"name": "Preprocess", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}},
                        {
                            "name": "LengthModel",
                            "num_replicas": 1,
                            "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.25},
                        },
                        {
                            "name": "SentimentModel",
                            "num_replicas": 1,
                            "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.25},
                        },
                    ],
                },
            ),
            (
                "search",
                "models",
                {
                    "route_prefix": "/search/models",
                    "import_path": "examples.multiplexed:app",
                    "deployments": [
                        {
                            "name": "Mux",
                            "num_replicas": 2,
                            "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5},
                        }
                    ],
                },
            ),
        ]
        for slug, name, spec in demo_apps:
            if not Application.objects.filter(team=teams[slug], name=name, deleted_at__isnull=True).exists():
                application_create(
                    actor=teams[slug].created_by, team=teams[slug], cluster=cluster, name=name, spec=spec, source="seed"
                )
        # The multiplexed app's models come from the catalog, which the push puts into its user_config.

        mux = Application.objects.get(team=teams["search"], name="models", deleted_at__isnull=True)
        for i in range(1, 9):
            if not ModelEntry.objects.filter(application=mux, model_id=f"model-{i}").exists():
                model_create(
                    actor=teams["search"].created_by,
                    application=mux,
                    deployment="Mux",
                    model_id=f"model-{i}",
                    uri=f"file://{model_dir}/model-{i}.npy",
                    size_bytes=(model_dir / f"model-{i}.npy").stat().st_size,
                    description=f"demo linear model {i}",
                    source="seed",
                )
        admin_password = os.environ.get("DEMO_ADMIN_PASSWORD", DEMO_PASSWORD)
        self.stdout.write(
            self.style.SUCCESS(
                f"demo data ready: log in as admin / {admin_password} (staff) or alice, bob, carol / {DEMO_PASSWORD}"
            )
        )
