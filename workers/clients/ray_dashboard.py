"""The only code that talks HTTP to a Ray dashboard (Serve REST API and State API)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from . import bounded

USER_AGENT = "ray-serve-control-plane/1.0"  # Ray refuses PUT/DELETE from browser-looking clients
IMPORT_FAILURE = re.compile(r"ModuleNotFoundError|ImportError|No module named")


class RayError(Exception):
    """Base class for failures talking to a Ray dashboard."""


class RayUnavailable(RayError):
    """Transient: connection refused, timeout, 5xx or an answer that is not what a dashboard sends."""


class RayRejected(RayError):
    """Permanent: Ray answered 4xx (e.g. the config failed its validation). Retrying will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Ray rejected the request (HTTP {status}): {message}")
        self.status = status
        self.message = message


@dataclass
class _Response:
    status_code: int
    text: str
    content: bytes
    reason: str = ""

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class RayDashboardClient:
    base_url: str
    token: str = ""
    timeout: float = 10.0
    max_bytes: int = 64 * 1024 * 1024

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """One call within ``timeout`` seconds in all (connecting, sending, reading), reading at most
        ``max_bytes`` of the answer (workers/clients/bounded.py)."""
        url = self.base_url.rstrip("/") + path
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            answer = bounded.request(
                method, url, body=data, headers=headers, deadline_s=self.timeout, max_bytes=self.max_bytes
            )
        except bounded.DeadlinePassed as exc:
            raise RayUnavailable(f"Ray dashboard at {self.base_url} did not answer within {self.timeout:g} s") from exc
        except bounded.AnswerTooLarge as exc:
            raise RayUnavailable(f"Ray dashboard at {self.base_url} answered {path} with too much: {exc}") from exc
        except bounded.CallFailed as exc:
            raise RayUnavailable(f"Cannot reach the Ray dashboard at {self.base_url}: {exc}") from exc
        resp = _Response(answer.status, answer.text, answer.body)
        if resp.status_code >= 500 and IMPORT_FAILURE.search(resp.text or ""):
            # Ray's dashboard imports the autoscaling policies and request routers a config names while it
            # validates it, and answers 500 when one is not installed where it runs: no retry will change that.
            lines = [line.strip() for line in resp.text.strip().splitlines() if line.strip()]
            raise RayRejected(
                resp.status_code,
                "Ray's dashboard could not import code the config names (custom autoscaling policies and request "
                f"routers must be in the image Ray runs, not only in an app's runtime_env): {lines[-1][:500]}",
            )
        if resp.status_code >= 500:
            raise RayUnavailable(
                f"Ray dashboard at {self.base_url} answered HTTP {resp.status_code}: {resp.text[:500]}"
            )
        if resp.status_code >= 400:
            raise RayRejected(resp.status_code, resp.text[:4000] or resp.reason)
        if not resp.content:
            return None
        try:
            return resp.json()
        except (ValueError, json.JSONDecodeError) as exc:
            raise RayUnavailable(
                f"Ray dashboard at {self.base_url} answered {path} with something that is not JSON: {resp.text[:200]!r}"
            ) from exc

    def put_serve_config(self, config: dict) -> None:
        """PUT the whole-cluster Serve config. Ray deletes every declarative app missing from it."""
        self._request("PUT", "/api/serve/applications/", config)

    def scale_deployment(self, app_name: str, deployment: str, target: int) -> None:
        """Ray's external scaler endpoint: set a deployment's replica target now (apps with external_scaler_enabled)."""
        path = f"/api/v1/applications/{quote(app_name, safe='')}/deployments/{quote(deployment, safe='')}/scale"
        self._request("POST", path, {"target_num_replicas": target})

    def get_serve_applications(self) -> dict:
        data = self._request("GET", "/api/serve/applications/")
        if not isinstance(data, dict):
            raise RayUnavailable(f"Ray dashboard at {self.base_url} sent an unexpected Serve status document")
        apps = data.get("applications")
        if apps is not None and not isinstance(apps, dict):
            raise RayUnavailable(f"Ray dashboard at {self.base_url} sent 'applications' that is not an object")
        return data

    def list_nodes(self) -> list[dict]:
        data = self._request("GET", "/api/v0/nodes?limit=1000&detail=true")
        try:
            return list(data["data"]["result"]["result"])
        except (KeyError, TypeError) as exc:
            raise RayUnavailable(f"Ray dashboard at {self.base_url} sent an unexpected node list") from exc

    def node_summary(self) -> list[dict]:
        """GET /nodes?view=summary: each node's physical stats, among them its GPUs as NVML reads them (``gpus``:
        index, name, uuid, utilizationGpu, memoryUsed and memoryTotal in MiB, processesPids with each process's
        gpuMemoryUsage in MiB and gpuUtilization). Logical GPUs report none."""
        data = self._request("GET", "/nodes?view=summary")
        try:
            return list(data["data"]["summary"])
        except (KeyError, TypeError) as exc:
            raise RayUnavailable(f"Ray dashboard at {self.base_url} sent an unexpected node summary") from exc

    def submit_job(self, body: dict) -> dict:
        """POST /api/jobs/: run an entrypoint on the head node (Ray's job submission API)."""
        data = self._request("POST", "/api/jobs/", body)
        return data if isinstance(data, dict) else {}

    def job_status(self, submission_id: str) -> dict:
        data = self._request("GET", f"/api/jobs/{submission_id}")
        if not isinstance(data, dict):
            raise RayUnavailable(f"Ray dashboard at {self.base_url} sent an unexpected job status")
        return data

    def job_logs(self, submission_id: str) -> str:
        data = self._request("GET", f"/api/jobs/{submission_id}/logs")
        return str((data or {}).get("logs") or "") if isinstance(data, dict) else ""


def client_for(cluster: Any, timeout: float | None = None) -> RayDashboardClient:
    from django.conf import settings

    return RayDashboardClient(
        base_url=cluster.dashboard_url,
        token=cluster.auth_token,
        timeout=timeout if timeout is not None else settings.RAY_HTTP_TIMEOUT_S,
        max_bytes=settings.RAY_MAX_ANSWER_BYTES,
    )
