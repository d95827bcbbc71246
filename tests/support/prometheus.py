"""A real Prometheus server (Debian's ``prometheus``) for tests and benchmarks: it finds Ray's metrics endpoints
through the dashboard's service discovery (``/api/prometheus/sd``, as Ray's docs set Prometheus up) and labels
every series of that cluster with ``ray_cluster``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests


def binary() -> str | None:
    return shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(
        self,
        workdir: Path,
        dashboard_url: str | None = None,
        cluster_label: str = "cp-test",
        scrape_interval: str = "2s",
        data: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = data or workdir / "data"
        jobs = ""
        if dashboard_url:
            jobs = (
                "scrape_configs:\n"
                "  - job_name: ray\n"
                "    http_sd_configs:\n"
                f"      - url: {dashboard_url.rstrip('/')}/api/prometheus/sd\n"
                "        refresh_interval: 5s\n"
                "    relabel_configs:\n"
                "      - target_label: ray_cluster\n"
                f"        replacement: {cluster_label}\n"
            )
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n{jobs}"
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Prometheus:
        self.log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary() or "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=60d",
                "--query.lookback-delta=1m",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("prometheus did not become ready")

    def targets_up(self) -> int:
        data = requests.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return sum(1 for t in data if t.get("health") == "up")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()


def backfill(openmetrics: Path, data: Path) -> None:
    """Write OpenMetrics text (with timestamps) into TSDB blocks Prometheus then serves (promtool)."""
    promtool = shutil.which("promtool")
    if not promtool:
        raise RuntimeError("promtool is missing (Debian's prometheus package has it)")
    data.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(data)],
        check=True,
        capture_output=True,
    )
