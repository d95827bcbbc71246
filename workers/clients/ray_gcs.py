"""Draining a Ray node through the GCS: the one hidden Ray interface the control plane relies on.

``ray drain-node`` asks the GCS to drain a node; Serve then starts replacement replicas elsewhere before
stopping the ones on the node (start-then-stop), so no request is dropped. The node stays ALIVE and empty
until something stops it (the autoscaler, KubeRay, or an operator). Verified against Ray 2.60 in
tests/e2e/test_compaction_ray.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class DrainError(Exception):
    pass


def drain_node(
    *, gcs_address: str, node_id: str, reason_message: str, deadline_s: int = 300, timeout: float = 60
) -> None:
    """Ask the GCS to drain node_id. Raises DrainError with Ray's reason when it refuses."""
    if not gcs_address:
        raise DrainError("the cluster has no GCS address configured; set it to drain nodes")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    cmd = [
        ray_cli,
        "drain-node",
        f"--address={gcs_address}",
        f"--node-id={node_id}",
        "--reason=DRAIN_NODE_REASON_PREEMPTION",
        f"--reason-message={reason_message}",
        f"--deadline-remaining-seconds={deadline_s}",
    ]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DrainError(f"could not run ray drain-node: {exc}") from exc
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise DrainError(f"Ray refused to drain node {node_id[:12]}: {' '.join(lines[-3:])[:1000]}")
