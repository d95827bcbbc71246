"""Send steady demo traffic to every running application, with Zipf-distributed model ids for multiplexed apps."""

from __future__ import annotations

import random
import time
from collections import Counter
from urllib.parse import urlsplit

import requests
from django.core.management.base import BaseCommand

from apps.applications.models import Application


def zipf_choice(rng: random.Random, items: list[str], s: float = 1.2) -> str:
    weights = [1 / (rank**s) for rank in range(1, len(items) + 1)]
    return rng.choices(items, weights=weights, k=1)[0]


def report(sent: int, failed: int, failures: Counter[tuple[str, str]]) -> str:
    """One line: how many were sent and failed, and which route failed how (the most frequent first)."""
    line = f"traffic: {sent} requests sent, {failed} failed"
    if failures:
        line += " (" + ", ".join(f"{route}: {n} x {why}" for (route, why), n in failures.most_common(5)) + ")"
    return line


class Command(BaseCommand):
    help = "Send demo traffic to the running applications (Ctrl-C to stop)."

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=float, default=5.0, help="requests per second in all")
        parser.add_argument("--duration", type=float, default=0, help="seconds; 0 runs until stopped")
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, **options):
        rng = random.Random(options["seed"])
        session = requests.Session()
        started = time.monotonic()
        sent = failed = 0
        failures: Counter[tuple[str, str]] = Counter()  # (route, reason) since the last report
        targets: list[tuple[str, list[str]]] = []
        refreshed = 0.0
        while not options["duration"] or time.monotonic() - started < options["duration"]:
            if time.monotonic() - refreshed > 15:
                targets = self._targets()
                refreshed = time.monotonic()
            if not targets:
                time.sleep(1)
                continue
            url, models = rng.choice(targets)
            headers = {"serve_multiplexed_model_id": zipf_choice(rng, models)} if models else {}
            try:
                resp = session.get(url, headers=headers, timeout=5)
                ok, reason = resp.ok, f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                ok, reason = False, type(exc).__name__
            sent += 1
            if not ok:
                failed += 1
                failures[(urlsplit(url).path, reason)] += 1
            if sent % 500 == 0:
                self.stdout.write(report(sent, failed, failures))
                failures.clear()
            time.sleep(1 / max(options["rate"], 0.1))

    def _targets(self) -> list[tuple[str, list[str]]]:
        out = []
        apps = Application.objects.filter(state=Application.State.RUNNING, deleted_at__isnull=True).select_related(
            "cluster", "current_revision"
        )
        for app in apps:
            if not app.cluster.serve_url:
                continue
            models = sorted(app.models.values_list("model_id", flat=True))  # the catalog: Zipf over it
            out.append((app.cluster.serve_url.rstrip("/") + app.route_prefix, models))
        return out
