"""Record what a real Ray 2.60 cluster answers to the control plane's reads, for benchmarks/fleet.py.

    python benchmarks/record_ray.py

Starts the test Ray cluster (apps.localdev.local_ray.TEST: a head and two workers with logical GPUs) unless it
runs, deploys two apps through Serve's REST API (a plain one with two replicas of a fractional GPU, and a
multiplexed one), sends traffic so Serve's series exist, waits for the metrics agents to export them, then writes
to benchmarks/data/ray-2.60/:

- serve_applications.json: GET /api/serve/applications/
- nodes.json: GET /api/v0/nodes?limit=1000&detail=true
- prometheus_sd.json: GET /api/prometheus/sd
- node_summary.json: GET /nodes?view=summary (what the GPU view reads on a cluster with GPUs)
- metrics_<i>.txt.gz: the exposition of each metrics endpoint service discovery names (one per node)

Nothing is edited by hand: fleet.py scales these to each simulated cluster's apps and nodes.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "data" / "ray-2.60"

CONFIG = {
    "applications": [
        {
            "name": "team-a--hello",
            "route_prefix": "/team-a/hello",
            "import_path": "examples.hello:build",
            "args": {"greeting": "hi"},
            "deployments": [
                {"name": "Hello", "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.25}}
            ],
        },
        {
            "name": "team-b--mux",
            "route_prefix": "/team-b/mux",
            "import_path": "examples.multiplexed:app",
            "deployments": [{"name": "Mux", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}}],
        },
    ]
}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    from apps.localdev.local_ray import TEST

    started = not TEST.is_up()
    if started:
        TEST.start()
    try:
        base = TEST.dashboard_url
        body = json.dumps({"http_options": {"host": "0.0.0.0", "port": TEST.serve_port}, **CONFIG})
        requests.put(
            f"{base}/api/serve/applications/", data=body, headers={"Content-Type": "application/json"}, timeout=60
        ).raise_for_status()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            apps = requests.get(f"{base}/api/serve/applications/", timeout=10).json().get("applications") or {}
            if all(apps.get(a["name"], {}).get("status") == "RUNNING" for a in CONFIG["applications"]):
                break
            time.sleep(1)
        else:
            why = {name: (app.get("status"), (app.get("message") or "")[-600:]) for name, app in apps.items()}
            raise SystemExit(f"the apps did not reach RUNNING in 180 s: {why}")
        serve = TEST.serve_url
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the proxies start after the apps run
            try:
                if requests.get(f"{serve}/team-a/hello", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        for i in range(200):
            requests.get(f"{serve}/team-a/hello", timeout=10)
            requests.get(f"{serve}/team-b/mux", headers={"serve_multiplexed_model_id": f"m{i % 3}"}, timeout=30)
        time.sleep(25)  # the metrics agents export every 10 s
        OUT.mkdir(parents=True, exist_ok=True)
        reads = {
            "serve_applications.json": "/api/serve/applications/",
            "nodes.json": "/api/v0/nodes?limit=1000&detail=true",
            "prometheus_sd.json": "/api/prometheus/sd",
            "node_summary.json": "/nodes?view=summary",
        }
        for name, path in reads.items():
            data = requests.get(f"{base}{path}", timeout=30).json()
            (OUT / name).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        targets = sorted(
            {t for g in requests.get(f"{base}/api/prometheus/sd", timeout=30).json() for t in g["targets"]}
        )
        for i, target in enumerate(targets):
            page = requests.get(f"http://{target}/metrics", timeout=30).text
            (OUT / f"metrics_{i}.txt.gz").write_bytes(gzip.compress(page.encode(), 9, mtime=0))
        print(f"recorded into {OUT.relative_to(ROOT)}: {sorted(p.name for p in OUT.iterdir())}")
    finally:
        requests.put(
            f"{TEST.dashboard_url}/api/serve/applications/",
            data=json.dumps({"applications": []}),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        if started and not os.environ.get("KEEP_TEST_RAY"):
            TEST.stop()


if __name__ == "__main__":
    main()
