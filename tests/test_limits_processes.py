"""Rate limits hold across a real multi-worker server (gunicorn, 3 workers), whatever X-Forwarded-For says."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["database", "redis"])
def server(request, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")}
    env.update({"CONTROLPLANE_VAR_DIR": str(tmp_path), "AUTH_THROTTLE_RATE": "40/min", "TRUSTED_PROXIES": ""})
    if request.param == "redis":
        url = os.environ.get("TEST_REDIS_CACHE_URL", "redis://127.0.0.1:6379/13")
        try:
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()
        except Exception:
            from tests.conftest import require

            require("a Redis server for the shared cache", "apt-get install redis-server")
        env["CACHE_URL"] = url
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    make_user = (
        "from django.contrib.auth.models import User; User.objects.create_user('eve', password='right-Passw0rd!')"
    )
    subprocess.run([*manage, "shell", "-c", make_user], cwd=ROOT, env=env, check=True, capture_output=True)

    def start(**extra: str) -> tuple[subprocess.Popen, str]:
        port = _free_port()
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "controlplane.wsgi",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(WORKERS),
            ],
            cwd=ROOT,
            env={**env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.25)
        return proc, base

    started: list[subprocess.Popen] = []

    def run(**extra: str) -> str:
        proc, base = start(**extra)
        started.append(proc)
        return base

    yield run
    for proc in started:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_token_endpoint_limit_counts_across_workers_and_ignores_spoofed_addresses(server):
    base = server()
    answered = 0
    for _ in range(100):  # a new connection each time: the three workers share the requests
        spoof = {"X-Forwarded-For": f"203.0.113.{random.randint(1, 254)}"}
        resp = requests.post(
            f"{base}/api/v1/auth/token/", json={"username": "eve", "password": "wrong"}, headers=spoof, timeout=10
        )
        if resp.status_code != 429:
            answered += 1
    # One limit for the whole server: per process it would have let up to three times through.
    assert answered == 40, f"{answered} requests got past a 40/min limit"


def test_logins_and_bad_tokens_are_limited_across_workers(server):
    base = server()
    codes = []
    for _ in range(15):
        session = requests.Session()
        page = session.get(f"{base}/accounts/login/", timeout=10)
        token = page.cookies.get("csrftoken")
        resp = session.post(
            f"{base}/accounts/login/",
            data={"username": "eve", "password": "wrong", "csrfmiddlewaretoken": token},
            headers={"Referer": f"{base}/accounts/login/", "X-Forwarded-For": f"198.51.100.{random.randint(1, 254)}"},
            timeout=10,
        )
        codes.append(resp.status_code)
    assert codes.count(429) == 5 and codes[:10] == [200] * 10  # the 11th failure onwards is refused
    bad = [
        requests.get(f"{base}/api/v1/teams/", headers={"Authorization": f"Token nope{i}"}, timeout=10).status_code
        for i in range(40)
    ]
    assert bad.count(401) == 30 and bad.count(429) == 10


def test_forwarded_addresses_are_believed_only_from_trusted_proxies(server):
    base = server(TRUSTED_PROXIES="127.0.0.1")

    def attempts(client: str) -> int:
        ok = 0
        for _ in range(45):
            resp = requests.post(
                f"{base}/api/v1/auth/token/",
                json={"username": "eve", "password": "wrong"},
                headers={"X-Forwarded-For": f"{client}, 127.0.0.1"},
                timeout=10,
            )
            ok += resp.status_code != 429
        return ok

    # Behind a trusted proxy each real client has its own budget.
    assert attempts("192.0.2.10") == 40
    assert attempts("192.0.2.11") == 40
