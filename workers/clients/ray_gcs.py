"""Draining Ray nodes: the one hidden Ray interface the control plane relies on.

A drain asks the GCS to mark a node as draining (``DrainNode``, what ``ray drain-node`` and the autoscaler
call). A draining node takes no new work; Serve starts replacements for its replicas elsewhere, then stops the
old ones (start-then-stop), so no request is dropped. The node stays ALIVE and empty until something stops it
(the autoscaler, KubeRay, or an operator). Verified against Ray 2.60 in tests/e2e/test_compaction_ray.py.

Every node of a request is drained by one process with one GCS client, one call after the other, so the nodes
become draining within milliseconds of each other: Serve then never places a replacement on a node that is
about to be drained (which would move that replica twice).

Two ways to reach the GCS, the same script either way:

- through the dashboard alone (the default; all a registered cluster has): a short Ray job whose entrypoint
  runs the script on the head node, where the job's ``RAY_ADDRESS`` is the local GCS;
- straight to a GCS address the operator gave (an optional override), from the worker's own Ray install.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import uuid

from .ray_dashboard import RayDashboardClient, RayError, RayRejected, RayUnavailable

# Runs where Ray is installed: argv[1] is {"address", "nodes", "message", "deadline_s"}; prints one JSON line per
# node, {"node", "accepted", "error"}, and exits 1 if any drain was refused.
DRAIN_SCRIPT = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])
from ray._raylet import GcsClient
from ray.core.generated import autoscaler_pb2
client = GcsClient(address=args.get("address") or os.environ["RAY_ADDRESS"])
deadline_ms = int(time.time() * 1000) + int(args["deadline_s"]) * 1000
reason = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION")
failed = 0
for node in args["nodes"]:
    try:
        accepted, error = client.drain_node(node, reason, args["message"], deadline_ms)
    except Exception as exc:
        accepted, error = False, f"{type(exc).__name__}: {exc}"
    failed += not accepted
    print("DRAIN " + json.dumps({"node": node, "accepted": bool(accepted), "error": error or ""}), flush=True)
sys.exit(1 if failed else 0)
"""

# The head's Python is the one its ``ray`` command runs with (its shebang); plain python3 when that is unknown.
_FIND_PYTHON = (
    'R="$(command -v ray)"; PY=""; '
    '[ -n "$R" ] && PY="$(head -n1 "$R" | sed -n "s|^#![[:space:]]*||p" | cut -d" " -f1)"; '
    'case "$PY" in */python*) ;; *) PY=python3 ;; esac; '
)


class DrainError(Exception):
    pass


def _results(output: str, nodes: list[str]) -> dict[str, dict]:
    out = {}
    for line in output.splitlines():
        if line.startswith("DRAIN "):
            try:
                row = json.loads(line[6:])
            except ValueError:
                continue
            out[row.get("node", "")] = row
    missing = [n for n in nodes if n not in out]
    refused = [r for r in out.values() if not r.get("accepted")]
    if refused or missing:
        tail = " ".join(line for line in output.strip().splitlines()[-4:] if line.strip())[:1000]
        why = "; ".join(f"{r['node'][:12]}: {r.get('error') or 'refused'}" for r in refused)
        if missing and not refused:
            why = f"no answer for {', '.join(n[:12] for n in missing)} ({tail or 'no output'})"
        raise DrainError(f"Ray did not drain every node: {why}")
    return out


def drain_nodes(*, gcs_address: str, node_ids: list[str], reason_message: str, deadline_s: int = 3600) -> None:
    """Drain node_ids through the GCS at gcs_address, from this machine's Ray install."""
    args = {"address": gcs_address, "nodes": node_ids, "message": reason_message, "deadline_s": deadline_s}
    try:
        result = subprocess.run(
            [sys.executable, "-c", DRAIN_SCRIPT, json.dumps(args)], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DrainError(f"could not reach the GCS at {gcs_address}: {exc}") from exc
    _results(result.stdout + result.stderr, node_ids)


def drain_command(node_ids: list[str], reason_message: str, deadline_s: int = 3600) -> str:
    """The shell entrypoint of the drain job: the script, run with the head node's Ray."""
    args = {"nodes": node_ids, "message": reason_message, "deadline_s": deadline_s}
    return f'{_FIND_PYTHON}exec "$PY" -c {shlex.quote(DRAIN_SCRIPT)} {shlex.quote(json.dumps(args))}'


def _submit_once(
    client: RayDashboardClient, body: dict, submission_id: str, started: float, timeout_s: float, poll_s: float
) -> None:
    """Submit the job exactly once, though the dashboard may answer slowly or drop the answer.

    A submission that timed out may still have created the job: its submission id (ours) tells, so a retry
    first asks for it and submits again only when Ray does not know it.
    """
    while True:
        try:
            client.submit_job(body)
            return
        except RayRejected as exc:
            if exc.status == 400 and "already exists" in exc.message:
                return  # an earlier attempt whose answer was lost did create it
            raise DrainError(f"the dashboard refused the drain job: {exc}") from exc
        except RayError as exc:
            if time.monotonic() - started > timeout_s:
                raise DrainError(f"could not submit the drain job through the dashboard: {exc}") from exc
        try:
            client.job_status(submission_id)
            return  # the job exists: the lost answer was a success
        except RayRejected as exc:
            if exc.status != 404:
                raise DrainError(f"could not submit the drain job through the dashboard: {exc}") from exc
        except RayError:
            pass
        time.sleep(poll_s)


def drain_nodes_via_job(
    client: RayDashboardClient,
    *,
    node_ids: list[str],
    reason_message: str,
    deadline_s: int = 3600,
    timeout_s: float = 120,
    poll_s: float = 0.5,
) -> str:
    """Drain node_ids with a Ray job run on the head node through the dashboard's job API.

    Returns the job's submission id. Raises DrainError with Ray's reason (or the job's log) when a drain is
    refused, the job fails, or it does not finish within timeout_s.
    """
    submission_id = f"serve-control-plane-drain-{uuid.uuid4().hex[:12]}"
    body = {
        "entrypoint": drain_command(node_ids, reason_message, deadline_s),
        "submission_id": submission_id,
        "entrypoint_num_cpus": 0,
        "metadata": {"created_by": "serve-control-plane", "purpose": "compaction drain"},
    }
    started = time.monotonic()
    _submit_once(client, body, submission_id, started, timeout_s, poll_s)
    status: dict = {}
    last_error: RayError | None = None
    while True:
        # The job runs on the cluster whatever the dashboard's answer time: a slow or dropped answer while
        # polling is retried until timeout_s, never taken for the job's result.
        try:
            status = client.job_status(submission_id)
            last_error = None
        except RayRejected as exc:
            raise DrainError(f"could not follow the drain job {submission_id} through the dashboard: {exc}") from exc
        except RayError as exc:
            last_error = exc
        if status.get("status") in ("SUCCEEDED", "FAILED", "STOPPED") and last_error is None:
            break
        if time.monotonic() - started > timeout_s:
            why = f" (last answer: {last_error})" if last_error else ""
            raise DrainError(f"the drain job {submission_id} did not finish within {timeout_s:.0f} s{why}")
        time.sleep(poll_s)
    logs = ""
    for _ in range(5):
        try:
            logs = client.job_logs(submission_id)
            break
        except RayUnavailable:
            time.sleep(poll_s)
        except RayError as exc:
            raise DrainError(f"could not read the drain job's log through the dashboard: {exc}") from exc
    try:
        _results(logs, node_ids)
    except DrainError as exc:
        message = status.get("message") or ""
        raise DrainError(f"{exc} (job {submission_id} {status.get('status')}: {message[:300]})") from exc
    return submission_id
