"""RayService manifests for KubeRay clusters: render, validate against the vendored CRD, map status back."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from workers.clients.kuberay import GROUP, VERSION, KubeRayClient

CRD_PATH = Path(__file__).parent / "schemas" / "ray.io_rayservices.yaml"

DEFAULT_RAY_CLUSTER = {
    "rayVersion": "2.60.0",
    "headGroupSpec": {
        "rayStartParams": {"dashboard-host": "0.0.0.0"},
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "ray-head",
                        "image": "rayproject/ray:2.60.0",
                        "resources": {"limits": {"cpu": "2", "memory": "8Gi"}},
                    }
                ]
            }
        },
    },
    "workerGroupSpecs": [],
}


class ManifestInvalid(ValueError):
    pass


@lru_cache(maxsize=1)
def rayservice_schema() -> dict:
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    return version["schema"]["openAPIV3Schema"]


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 extensions that JSON Schema does not know (int-or-string) made explicit; CEL rules dropped."""
    if isinstance(node, dict):
        out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if node.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    return jsonschema.Draft7Validator(_openapi_to_jsonschema(rayservice_schema()))


def validate_manifest(manifest: dict) -> None:
    """Raise ManifestInvalid naming the first problems, as the API server would (CEL rules aside)."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:200]}" for e in errors[:5]]
        raise ManifestInvalid("RayService manifest fails the CRD schema: " + "; ".join(lines))


def serve_config_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def render_rayservice(*, name: str, namespace: str, serve_config: dict, ray_cluster: dict | None) -> dict:
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "ray-serve-control-plane"},
        },
        "spec": {
            "serveConfigV2": serve_config_yaml(serve_config),
            "rayClusterConfig": copy.deepcopy(ray_cluster or DEFAULT_RAY_CLUSTER),
        },
    }
    validate_manifest(manifest)
    return manifest


def serve_status_from_rayservice(obj: dict) -> dict:
    """The CR's status in the shape of Serve's GET /api/serve/applications/ (what observe_cluster reads)."""
    status = obj.get("status") or {}
    active = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    pending = (status.get("pendingServiceStatus") or {}).get("applicationStatuses") or {}
    try:
        deployed = {
            a["name"]: a
            for a in (yaml.safe_load(obj.get("spec", {}).get("serveConfigV2") or "") or {}).get("applications", [])
        }
    except yaml.YAMLError:
        deployed = {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    upgrading = (conditions.get("UpgradeInProgress") or {}).get("status") == "True"
    apps = {}
    for name in set(active) | set(pending):
        current = pending.get(name) if upgrading and name in pending else active.get(name) or pending.get(name) or {}
        apps[name] = {
            "status": current.get("status", "DEPLOYING"),
            "message": current.get("message", ""),
            "deployed_app_config": deployed.get(name),
            "deployments": {
                dep: {"status": d.get("status", ""), "message": d.get("message", ""), "replicas": []}
                for dep, d in (current.get("serveDeploymentStatuses") or {}).items()
            },
        }
    return {
        "applications": apps,
        "ready": (conditions.get("Ready") or {}).get("status") == "True",
        "upgrade_in_progress": upgrading,
    }


def client_for(cluster: Any, *, timeout: float = 30.0, api: Any = None) -> KubeRayClient:
    """The client of the cluster's RayService (its kubeconfig, or the in-cluster service account)."""
    return KubeRayClient(
        namespace=cluster.k8s_namespace, name=cluster.k8s_name, kubeconfig=cluster.kubeconfig, api=api, timeout=timeout
    )


def apply_serve_config(client: KubeRayClient, cluster: Any, config: dict) -> str:
    """Create the cluster's RayService with ``config``, or patch its serveConfigV2 to it; "created" or "patched"."""
    return client.apply(
        serve_config_v2=serve_config_yaml(config),
        create=lambda: render_rayservice(
            name=cluster.k8s_name,
            namespace=cluster.k8s_namespace,
            serve_config=config,
            ray_cluster=cluster.ray_cluster_template or None,
        ),
        validate=validate_manifest,
    )
