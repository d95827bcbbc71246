"""The fleet: what one worker core holds when one control plane reconciles and scrapes hundreds of clusters.

    python benchmarks/fleet.py [--clusters 50,200,500] [--apps 20] [--nodes 4] [--rounds 2]

The clusters are simulated by one HTTP server in a separate process that answers as Ray 2.60 does, from the real
answers recorded by benchmarks/record_ray.py (benchmarks/data/ray-2.60/): Serve's status document built from the
config each cluster was last sent (a PUT is kept, as Ray keeps it; every replica RUNNING, spread over the nodes),
the node list, service discovery, each node's metrics page (the recorded page, with the recorded app's lines
repeated for every app the node runs, counters rising per scrape) and the node summary. Each cluster and each of
its nodes has its own loopback address (127.x.y.z, one port), so the control plane reads host:port targets as it
does from Ray, and does not know the difference.

The control plane runs in this process on a fresh database (SQLite in a temp dir, or BENCH_DATABASE_URL), so
this process's CPU time (time.process_time: the server's is not in it) is what a worker core spends, database
client included (with SQLite, the database's own work too). For each fleet size, idle and with 1% of the apps
changing per minute (written through the service, as the API does), it measures per cluster-reconcile and per
scrape: CPU, tasks sent, rows written; then tasks and rows per minute at the default intervals (reconcile every
20 s, scrape every 15 s) and the clusters one core holds. Baseline in the same run: the bare reads (the same
HTTP answers fetched and decoded, the metrics pages parsed, nothing compared or stored).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import hashlib
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "ray-2.60"
RECONCILE_S, SCRAPE_S = 20, 15  # the defaults (settings.RECONCILE_INTERVAL_S, SCRAPE_INTERVAL_S)


# ---- the simulated fleet (a separate process) -----------------------------------------------------------------------


def dashboard_host(c: int) -> str:
    return f"127.1.{c // 256}.{c % 256}"


def node_host(c: int, k: int) -> str:
    return f"127.{10 + k}.{c // 256}.{c % 256}"


class Fleet:
    """Every simulated cluster's state: the config last PUT and the pages built from it."""

    def __init__(self, port: int, nodes: int) -> None:
        self.port, self.nodes = port, nodes
        self.status = json.loads((DATA / "serve_applications.json").read_text())
        self.app_template = self.status["applications"]["team-a--hello"]
        self.listed = json.loads((DATA / "nodes.json").read_text())
        self.summary = json.loads((DATA / "node_summary.json").read_text())
        pages = sorted((gzip.decompress(p.read_bytes()).decode() for p in DATA.glob("metrics_*.txt.gz")), key=len)
        self.page_templates = pages[::-1][: max(1, nodes)]  # the largest: the workers' pages
        self.configs: dict[int, dict] = {}
        self.deployed_at: dict[tuple[int, str], tuple[str, float]] = {}
        self.cache: dict[tuple[int, str], bytes] = {}
        self.scrapes: dict[tuple[int, int], int] = {}
        self.lock = threading.Lock()

    def node_ids(self, c: int) -> list[str]:
        return [hashlib.sha256(f"{c}/{k}".encode()).hexdigest()[:56] for k in range(self.nodes + 1)]  # 0: head

    def put(self, c: int, config: dict) -> None:
        with self.lock:
            now = time.time()
            for app in config.get("applications") or []:
                digest = hashlib.sha256(json.dumps(app, sort_keys=True).encode()).hexdigest()
                old = self.deployed_at.get((c, app["name"]))
                if old is None or old[0] != digest:
                    self.deployed_at[(c, app["name"])] = (digest, now)
            self.configs[c] = config
            for key in [k for k in self.cache if k[0] == c]:
                del self.cache[key]

    def placement(self, c: int) -> dict[str, list[tuple[str, str, int]]]:
        """Each app's replicas: (deployment, replica id, worker index 1..nodes)."""
        out: dict[str, list[tuple[str, str, int]]] = {}
        for app in (self.configs.get(c) or {}).get("applications") or []:
            reps = []
            start = int(hashlib.sha256(app["name"].encode()).hexdigest(), 16) % self.nodes
            for dep in app.get("deployments") or [{"name": "Hello", "num_replicas": 1}]:
                for i in range(int(dep.get("num_replicas") or 1) if dep.get("num_replicas") != "auto" else 1):
                    rid = hashlib.sha256(f"{c}/{app['name']}/{dep['name']}/{i}".encode()).hexdigest()[:8]
                    reps.append((dep["name"], rid, 1 + (start + i) % self.nodes))
            out[app["name"]] = reps
        return out

    def serve_status(self, c: int) -> bytes:
        ids = self.node_ids(c)
        doc = {k: v for k, v in self.status.items() if k != "applications"}
        doc["applications"] = {}
        place = self.placement(c)
        for app in (self.configs.get(c) or {}).get("applications") or []:
            entry = copy.deepcopy(self.app_template)
            entry.update(
                name=app["name"],
                route_prefix=app.get("route_prefix"),
                deployed_app_config=app,
                last_deployed_time_s=self.deployed_at[(c, app["name"])][1],
                status="RUNNING",
            )
            template = entry["deployments"].pop("Hello")
            for dep in app.get("deployments") or []:
                d = copy.deepcopy(template)
                d["name"] = dep["name"]
                d["deployment_config"].update({k: v for k, v in dep.items() if k != "name"}, name=dep["name"])
                rep_t = template["replicas"][0]
                d["replicas"] = [
                    dict(
                        rep_t,
                        replica_id=rid,
                        actor_name=f"SERVE_REPLICA::{app['name']}#{dep['name']}#{rid}",
                        node_id=ids[k],
                        node_ip=node_host(c, k),
                        pid=10000 + n,
                        state="RUNNING",
                    )
                    for n, (name, rid, k) in enumerate(place[app["name"]])
                    if name == dep["name"]
                ]
                entry["deployments"][dep["name"]] = d
            entry["deployment_topology"] = {"app_name": app["name"], "ingress_deployment": "", "nodes": {}}
            doc["applications"][app["name"]] = entry
        return json.dumps(doc).encode()

    def node_list(self, c: int) -> bytes:
        doc = copy.deepcopy(self.listed)
        rows = doc["data"]["result"]["result"]
        head = next(r for r in rows if r["is_head_node"])
        worker = next(r for r in rows if not r["is_head_node"])
        ids = self.node_ids(c)
        out = [dict(head, node_id=ids[0], node_ip=node_host(c, 0))]
        for k in range(1, self.nodes + 1):
            out.append(dict(copy.deepcopy(worker), node_id=ids[k], node_ip=node_host(c, k), node_name=node_host(c, k)))
        doc["data"]["result"]["result"] = out
        doc["data"]["result"]["total"] = doc["data"]["result"]["num_after_truncation"] = len(out)
        return json.dumps(doc).encode()

    def sd(self, c: int) -> bytes:
        targets = [f"{node_host(c, k)}:{self.port}" for k in range(self.nodes + 1)]
        return json.dumps([{"labels": {"job": "ray"}, "targets": targets}]).encode()

    def metrics(self, c: int, k: int) -> bytes:
        """Node k's page: the recorded page, its recorded apps' lines repeated for each app with a replica here,
        every counter risen by the number of scrapes so far."""
        with self.lock:
            n = self.scrapes[(c, k)] = self.scrapes.get((c, k), 0) + 1
        key = (c, f"metrics/{k}")
        lines = self.cache.get(key)
        if lines is None:
            here = [a for a, reps in self.placement(c).items() if any(node == k for _, _, node in reps)]
            template = self.page_templates[k % len(self.page_templates)].splitlines()
            base = [ln for ln in template if 'application="team-' not in ln]
            per_app = [ln for ln in template if 'application="team-a--hello"' in ln]
            lines = base + [ln.replace("team-a--hello", a) for a in here for ln in per_app]
            self.cache[key] = lines
        out = []
        for ln in lines:
            if ln and ln[0] != "#" and ("_total" in ln or "_count" in ln or "_sum" in ln or "_bucket" in ln):
                head, _, value = ln.rpartition(" ")
                with contextlib.suppress(ValueError):
                    ln = f"{head} {float(value) + n}"
            out.append(ln)
        return ("\n".join(out) + "\n").encode()

    def serve(self) -> None:
        fleet = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def where(self) -> tuple[int, int]:
                parts = [int(x) for x in self.headers["Host"].split(":")[0].split(".")]
                return parts[2] * 256 + parts[3], parts[1]

            def answer(self, body: bytes, status: int = 200, kind: str = "application/json", gzipped=False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                if gzipped:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:  # noqa: N802
                c, _ = self.where()
                fleet.put(c, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.answer(b"")

            def do_GET(self) -> None:  # noqa: N802
                c, part = self.where()
                path = self.path
                if part >= 10:  # prometheus_client, as Ray serves it: gzip when the client takes it
                    page = fleet.metrics(c, part - 10)
                    if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                        return self.answer(gzip.compress(page, 6), kind="text/plain; version=0.0.4", gzipped=True)
                    return self.answer(page, kind="text/plain; version=0.0.4")
                if path.startswith("/api/serve/applications"):
                    return self.answer(fleet.serve_status(c))
                if path.startswith("/api/v0/nodes"):
                    return self.answer(fleet.node_list(c))
                if path.startswith("/api/prometheus/sd"):
                    return self.answer(fleet.sd(c))
                if path.startswith("/nodes?view=summary"):
                    return self.answer(json.dumps(fleet.summary).encode())
                if path.startswith("/api/version"):
                    return self.answer(json.dumps({"ray_version": "2.60.0", "version": "4"}).encode())
                self.answer(b"{}", status=404)

        ThreadingHTTPServer.daemon_threads = True
        ThreadingHTTPServer.request_queue_size = 1024
        server = ThreadingHTTPServer(("0.0.0.0", self.port), Handler)
        server.serve_forever()


def _run_fleet(port: int, nodes: int) -> None:
    Fleet(port, nodes).serve()


# ---- the control plane (this process) -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", default="50,200,500")
    parser.add_argument("--apps", type=int, default=20, help="apps per cluster")
    parser.add_argument("--nodes", type=int, default=4, help="worker nodes per cluster (each a metrics target)")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds per fleet size and load")
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--profile", action="store_true", help="print where one cluster's reconcile spends its CPU")
    args = parser.parse_args()
    sizes = [int(x) for x in args.clusters.split(",")]

    proc = multiprocessing.get_context("fork").Process(target=_run_fleet, args=(args.port, args.nodes), daemon=True)
    proc.start()
    try:
        measure(args, sizes)
    finally:
        proc.terminate()


def measure(args: argparse.Namespace, sizes: list[int]) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["CONTROLPLANE_VAR_DIR"] = tempfile.mkdtemp(prefix="cp-fleet-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    if os.environ.get("BENCH_DATABASE_URL"):
        os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    else:
        os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)
    import django
    from django.conf import settings

    django.setup()
    import requests
    from celery.signals import before_task_publish
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from apps.applications.models import Application, Revision
    from apps.applications.services import application_update
    from apps.clusters.models import Cluster
    from apps.clusters.services import cluster_create
    from apps.metrics import services
    from apps.metrics.models import MetricsConfig
    from apps.quotas.services import quota_set
    from apps.servespec.spec import spec_hash
    from apps.teams.services import team_create
    from controlplane import heap
    from controlplane.celery import app as celery_app
    from workers.clients import prometheus
    from workers.tasks.metrics import scrape_cluster
    from workers.tasks.sync import reconcile_cluster

    celery_app.conf.broker_url = "memory://"
    call_command("migrate", verbosity=0)
    sent = [0]
    before_task_publish.connect(lambda **kw: sent.__setitem__(0, sent[0] + 1), weak=False)

    def rows() -> int | None:
        raw = connection.connection
        return raw.total_changes if connection.vendor == "sqlite" else None

    for _ in range(100):  # the fleet process starts
        try:
            requests.get(f"http://{dashboard_host(0)}:{args.port}/api/version", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.1)
    admin = get_user_model().objects.create_user("fleet", password="x-fleet-password-1", is_staff=True)
    teams = [team_create(actor=admin, slug=f"t{i:03d}", name=f"T{i}") for i in range(50)]
    spec = {
        "import_path": "examples.hello:build",
        "deployments": [{"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.25}}],
    }
    print(
        f"database: {connection.vendor}; {args.apps} apps and {args.nodes} worker nodes per cluster; pages asked "
        f"gzipped: {settings.METRICS_SCRAPE_GZIP} (METRICS_SCRAPE_GZIP)"
    )
    print(
        f"{'clusters':>8s} {'metrics':>10s} {'load':>7s} | {'reconcile CPU ms':>16s} {'scrape CPU ms':>14s} | "
        f"{'tasks/min':>9s} {'rows/min rec+scr':>17s} | {'clusters/core':>13s} (goal >= 500)"
    )
    print(f"{'':>8s} {'':>10s} {'':>7s} | {'(bare reads)':>16s} {'(bare reads)':>14s} |")
    made = 0
    for size in sizes:
        clusters = list(Cluster.objects.order_by("pk"))
        made_before = made
        for c in range(made, size):
            cluster = cluster_create(
                actor=admin,
                data={"name": f"c{c:03d}", "dashboard_url": f"http://{dashboard_host(c)}:{args.port}"},
                pools=[{"name": "a100", "resource": "GPU", "capacity": 4 * args.nodes}],
            )
            Cluster.objects.filter(pk=cluster.pk).update(http_port=8000)
            for team in teams[: min(len(teams), args.apps)]:  # every team with an app here
                quota_set(actor=admin, team=team, cluster=cluster, pool_name="a100", gpus=4 * args.nodes)
            new = [
                Application(
                    team=teams[i % len(teams)],
                    cluster=cluster,
                    name=f"app{i}",
                    route_prefix=f"/{teams[i % len(teams)].slug}/app{i}",
                )
                for i in range(args.apps)
            ]
            new = Application.objects.bulk_create(new)
            revs = Revision.objects.bulk_create(
                [
                    Revision(application=a, number=1, spec={**spec, "route_prefix": a.route_prefix}, spec_hash="x")
                    for a in new
                ]
            )
            for a, r in zip(new, revs, strict=True):
                a.current_revision = r
                r.spec_hash = spec_hash(r.spec)
            Application.objects.bulk_update(new, ["current_revision"])
            Revision.objects.bulk_update(revs, ["spec_hash"])
            Cluster.objects.filter(pk=cluster.pk).update(desired_generation=1)
            clusters.append(cluster)
        made = size
        ids = [c.pk for c in clusters]
        for cid in ids[made_before:]:
            # The first reconcile takes the inventory and pushes, the second reads the apps running; the first
            # scrape learns the targets. Not measured: a fleet's steady state is.
            reconcile_cluster(cid)
            reconcile_cluster(cid)
            scrape_cluster(cid)
        apps = list(Application.objects.filter(cluster_id__in=ids).select_related("current_revision"))
        heap.settle()  # as a worker does once it is ready (controlplane/heap.py)
        if args.profile:
            import cProfile
            import pstats

            from django.test.utils import CaptureQueriesContext

            reconcile_cluster(ids[0])
            with CaptureQueriesContext(connection) as ctx:
                reconcile_cluster(ids[0])
            print(f"one idle reconcile: {len(ctx)} queries")
            for q in ctx.captured_queries:
                print("   ", q["sql"][:160])
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(20):
                reconcile_cluster(ids[0])
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(10):
                scrape_cluster(ids[0])
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        modes = [(source, load) for source in ("embedded", "prometheus") for load in ("idle", "1%/min")]
        for source, load in modes:
            # Embedded: the control plane scrapes every node's page. Prometheus: Ray's series are read from the
            # fleet's Prometheus (metrics_source), the scrape samples only the control plane's own series.
            MetricsConfig.objects.filter(cluster_id__in=ids).update(
                metrics_source=source, prometheus_url="http://127.0.0.9:9090" if source == "prometheus" else ""
            )
            rec_cpu, scr_cpu, rec_rows, scr_rows, rec_tasks, scr_tasks = [], [], [], [], [], []
            for r in range(args.rounds):
                if load != "idle":  # 1% of the apps per minute: a reconcile interval's share, through the service
                    k = max(1, round(len(apps) * 0.01 * RECONCILE_S / 60))
                    for j in range(k):
                        a = apps[(r * k + j * 7919) % len(apps)]
                        a.refresh_from_db()
                        body = dict(a.current_revision.spec)
                        dep = dict(body["deployments"][0], num_replicas=1 + (r + j) % 3, user_config={"r": r, "j": j})
                        body["deployments"] = [dep]
                        application_update(actor=admin, application=a, spec=body)  # the web tier's work, not counted
                for task, cpu, tasks, written in (
                    (reconcile_cluster, rec_cpu, rec_tasks, rec_rows),
                    (scrape_cluster, scr_cpu, scr_tasks, scr_rows),
                ):
                    for cid in ids:  # each cluster's task as a worker runs it: CPU, tasks it sent, rows it wrote
                        t0, s0, w0 = time.process_time(), sent[0], rows()
                        task(cid)
                        cpu.append((time.process_time() - t0) * 1000)
                        tasks.append(sent[0] - s0)
                        if w0 is not None:
                            written.append(rows() - w0)
            # Baseline: the same answers fetched and decoded, the pages parsed; nothing compared or stored.
            base = []
            session = requests.Session()
            for cid in ids[: min(len(ids), 50)]:
                c = Cluster.objects.get(pk=cid)
                t0 = time.process_time()
                session.get(f"{c.dashboard_url}/api/serve/applications/", timeout=30).json()
                session.get(f"{c.dashboard_url}/api/v0/nodes?limit=1000&detail=true", timeout=30).json()
                t1 = time.process_time()
                targets = prometheus.discover_targets(c.dashboard_url)
                for t in targets:
                    list(
                        prometheus.parse(
                            prometheus.fetch(t, timeout=30, gzip=settings.METRICS_SCRAPE_GZIP), set(services.FAMILIES)
                        )
                    )
                base.append(((t1 - t0) * 1000, (time.process_time() - t1) * 1000))
            rec, scr = statistics.mean(rec_cpu), statistics.mean(scr_cpu)
            base_rec = statistics.mean(b[0] for b in base)
            base_scr = statistics.mean(b[1] for b in base)
            per_minute_cpu_s = (rec * 60 / RECONCILE_S + scr * 60 / SCRAPE_S) / 1000  # per cluster
            per_core = int(60 / per_minute_cpu_s)
            tasks = size * (
                60 / RECONCILE_S * (1 + statistics.mean(rec_tasks)) + 60 / SCRAPE_S * (1 + statistics.mean(scr_tasks))
            )
            tasks += 60 / RECONCILE_S + 60 / SCRAPE_S  # the fan-outs
            if rec_rows:
                rows_min = (
                    f"{size * 60 / RECONCILE_S * statistics.mean(rec_rows):8.0f}+"
                    f"{size * 60 / SCRAPE_S * statistics.mean(scr_rows):<8.0f}"
                )
            else:
                rows_min = f"{'n/a':>17s}"
            print(
                f"{size:8d} {source:>10s} {load:>7s} | {rec:6.1f} ({base_rec:6.1f}) {scr:5.1f} ({base_scr:5.1f}) | "
                f"{tasks:9.0f} {rows_min:>17s} | {per_core:13d} {'ok' if per_core >= 500 else 'SHORT'}"
            )


if __name__ == "__main__":
    main()
