"""Start and stop a local multi-node Ray cluster with logical GPUs (the demo cluster and the test cluster).

Every node gets its own ports and the cluster its own ``--temp-dir``, so the demo cluster and a test
cluster can run side by side; stopping one kills only the processes that belong to its temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LocalRayCluster:
    temp_dir: str = "/tmp/ray-cp"
    gcs_port: int = 6380
    dashboard_port: int = 8265
    serve_port: int = 8000
    client_port: int = 10001
    node_port_base: int = 21000
    metrics_port_base: int = 8080
    head_cpus: int = 1
    # One entry per worker node: its resources and labels.
    workers: list[dict] = field(
        default_factory=lambda: [
            {"num_cpus": 2, "num_gpus": 4, "resources": {"pool_a100": 4}, "labels": {"pool": "a100"}},
            {"num_cpus": 2, "num_gpus": 4, "resources": {"pool_a100": 4}, "labels": {"pool": "a100"}},
        ]
    )
    env: dict[str, str] = field(default_factory=dict)
    head_gpus: int = 0

    @property
    def auth_headers(self) -> dict[str, str]:
        """What a client of a token-authenticated cluster (``RAY_AUTH_MODE=token``) sends."""
        token = self.env.get("RAY_AUTH_TOKEN", "")
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def _ray(self) -> str:
        return str(Path(sys.executable).with_name("ray"))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # As in an activated virtualenv: the nodes' `ray` command (what a Ray job's entrypoint finds) is this one.
        env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
        env.update(self.env)
        return env

    def _node_ports(self, index: int) -> list[str]:
        base = self.node_port_base + 10 * index
        return [
            f"--node-manager-port={base}",
            f"--object-manager-port={base + 1}",
            f"--dashboard-agent-listen-port={base + 2}",
            f"--dashboard-agent-grpc-port={base + 3}",
            f"--runtime-env-agent-port={base + 4}",
            f"--metrics-export-port={self.metrics_port_base + index}",
            f"--min-worker-port={base + 100}",
            f"--max-worker-port={base + 199}",
        ]

    def is_up(self) -> bool:
        try:
            return requests.get(f"{self.dashboard_url}/api/version", timeout=2, headers=self.auth_headers).ok
        except requests.RequestException:
            return False

    def start(self, log=print) -> None:
        """Start head and workers; returns once the dashboard answers and every node is alive."""
        env = self._env()
        head = [
            self._ray(),
            "start",
            "--head",
            f"--port={self.gcs_port}",
            f"--num-cpus={self.head_cpus}",
            f"--num-gpus={self.head_gpus}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            "--include-dashboard=true",
            *self._node_ports(0),
        ]
        log(f"starting Ray head (dashboard {self.dashboard_url})")
        subprocess.run(head, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for i, worker in enumerate(self.workers, start=1):
            labels = {**worker.get("labels", {}), "nodeidx": str(i)}
            cmd = [
                self._ray(),
                "start",
                f"--address={self.gcs_address}",
                f"--num-cpus={worker['num_cpus']}",
                f"--num-gpus={worker['num_gpus']}",
                f"--resources={json.dumps(worker.get('resources', {}))}",
                f"--labels={','.join(f'{k}={v}' for k, v in labels.items())}",
                "--disable-usage-stats",
                *self._node_ports(i),
            ]
            log(f"starting Ray worker {i} ({worker['num_gpus']} logical GPUs)")
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.wait_for_nodes(1 + len(self.workers))

    def wait_for_nodes(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = requests.get(
                    f"{self.dashboard_url}/api/v0/nodes?limit=100", timeout=5, headers=self.auth_headers
                ).json()
                alive = [n for n in data["data"]["result"]["result"] if n.get("state") == "ALIVE"]
                if len(alive) >= count:
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Ray cluster at {self.dashboard_url} did not show {count} alive nodes in {timeout:.0f} s")

    def _pids(self) -> list[int]:
        pids = []
        marker = self.temp_dir.encode()
        gcs = re.compile(rb"\0--address=[^\0]*:%d\0" % self.gcs_port)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ours = marker + b"/" in cmdline or cmdline.rstrip(b"\0").endswith(marker) or marker + b"\0" in cmdline
            if ours or gcs.search(cmdline):  # Ray's client server names only the GCS address, and outlives its parent
                pids.append(int(entry.name))
        return pids

    def _descendants(self, roots: list[int]) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
        out, stack = [], list(roots)
        while stack:
            pid = stack.pop()
            for child in children.get(pid, []):
                out.append(child)
                stack.append(child)
        return out

    def stop(self, timeout: float = 5) -> int:
        """Kill every process of this cluster (found by its temp dir) and their children."""
        roots = self._pids()
        victims = sorted(set(roots + self._descendants(roots)))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 3)
            while time.monotonic() < deadline and any(_alive(p) for p in victims):
                time.sleep(0.2)
        return len(victims)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


DEMO = LocalRayCluster()
TEST = LocalRayCluster(
    temp_dir="/tmp/ray-cp-test",
    gcs_port=6390,
    dashboard_port=8275,
    serve_port=8010,
    client_port=10011,
    node_port_base=23000,
    metrics_port_base=8090,
    # Four nodes, as compaction needs: a head and three workers with 4 logical GPUs each. CPUs are logical too:
    # four per worker lets a dozen apps with real configs' CPU requests be scheduled at once.
    workers=[
        {"num_cpus": 4, "num_gpus": 4, "resources": {"pool_a100": 4}, "labels": {"pool": "a100"}} for _ in range(3)
    ],
)
