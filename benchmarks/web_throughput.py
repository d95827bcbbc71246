"""Throughput of the web tier (gunicorn, PostgreSQL) under wrk on loopback, for the main read endpoints.

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/cpbench python benchmarks/web_throughput.py

Needs wrk (apt-get install wrk) and an empty PostgreSQL database. Seeds 1,000 applications in 100 teams,
starts gunicorn with 2 workers x 4 threads (this machine has 2 cores), and runs wrk for 10 s per endpoint
with 16 connections; /healthz (no database) is the baseline in the same run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url or not shutil.which("wrk"):
        sys.exit("set BENCH_DATABASE_URL to an empty PostgreSQL database and install wrk (apt-get install wrk)")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "false",
        "SECRET_KEY": "b" * 60,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "ERROR",
        "CONTROLPLANE_VAR_DIR": "/tmp/cp-throughput",
    }
    env.pop("CELERY_BROKER_URL", None)
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    seed = (
        "from django.contrib.auth.models import User; from apps.clusters.services import cluster_create; "
        "from apps.teams.services import team_create; from apps.quotas.services import quota_set; "
        "from apps.applications.services import application_create; from apps.teams.services import issue_token; "
        "u = User.objects.create_user('bench', is_staff=True); "
        "c = cluster_create(actor=u, data={'name': 'c', 'dashboard_url': 'http://127.0.0.1:1'}, "
        "pools=[{'name': 'a100', 'resource': 'GPU', 'capacity': 1000}]); "
        "ts = [team_create(actor=u, slug=f't{i}', name='T') for i in range(100)]; "
        "[quota_set(actor=u, team=t, cluster=c, pool_name='a100', gpus=100) for t in ts]; "
        "[application_create(actor=u, team=ts[i % 100], cluster=c, name=f'a{i}', "
        "spec={'route_prefix': f'/t{i % 100}/a{i}', "
        "'import_path': 'examples.hello:app', 'deployments': [{'name': 'Hello'}]}) for i in range(1000)]; "
        "print(issue_token(user=u, name='b')[1])"
    )
    token = (
        subprocess.run(
            [py, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = subprocess.Popen(
        [
            str(Path(py).with_name("gunicorn")),
            "controlplane.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(60):
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        first = requests.get(
            f"{base}/api/v1/applications/", headers={"Authorization": f"Token {token}"}, timeout=10
        ).json()
        app_id = first["results"][0]["id"]
        print(f"{'endpoint':36s} {'req/s':>8s} {'p50':>8s} {'p99':>8s}")
        for path, auth in (
            ("/healthz", False),
            ("/api/v1/applications/", True),
            (f"/api/v1/applications/{app_id}/", True),
            ("/api/v1/teams/", True),
            ("/api/v1/sync-runs/", True),
        ):
            cmd = ["wrk", "-t2", "-c16", "-d10s", "--latency", f"{base}{path}"]
            if auth:
                cmd[1:1] = ["-H", f"Authorization: Token {token}"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
            p50 = re.search(r"50%\s+([\d.]+\w+)", out).group(1)
            p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)
            errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            print(
                f"{path[:36]:36s} {float(rps):8.0f} {p50:>8s} {p99:>8s}"
                + (f"  non-2xx: {errors.group(1)}" if errors else "")
            )
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)


if __name__ == "__main__":
    main()
