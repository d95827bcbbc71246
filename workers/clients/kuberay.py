"""The only code that talks to Kubernetes: create or patch a RayService, read its status."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import yaml

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"


class KubeError(Exception):
    """Transient or unexpected failure talking to the API server."""


class KubeRejected(Exception):
    """The manifest or patch was refused (schema, 4xx other than conflicts)."""


def kubeconfig_runs_code(doc: Any) -> bool:
    """Whether a kubeconfig's users run a command to get credentials (``exec``, ``auth-provider``): the kubernetes
    client would run it in the worker."""
    users = doc.get("users") if isinstance(doc, dict) else None
    for entry in users or []:
        user = (entry or {}).get("user") if isinstance(entry, dict) else None
        if isinstance(user, dict) and (user.get("exec") or user.get("auth-provider")):
            return True
    return False


def api_for(kubeconfig: str) -> Any:
    """A CustomObjectsApi from a kubeconfig document, or the in-cluster service account when it is empty. A
    kubeconfig whose user runs a command is refused here too, whatever was stored before that rule."""
    from kubernetes import client, config

    if kubeconfig:
        doc = yaml.safe_load(kubeconfig)
        if kubeconfig_runs_code(doc):
            raise ValueError("the kubeconfig's user runs a command (exec or auth-provider); refused")
        api_client = config.new_client_from_config_dict(doc)
    else:
        config.load_incluster_config()
        api_client = client.ApiClient()
    return client.CustomObjectsApi(api_client)


class KubeRayClient:
    """One RayService, ``namespace/name``: read it, create it, or patch its ``spec.serveConfigV2``."""

    def __init__(
        self,
        *,
        namespace: str,
        name: str,
        kubeconfig: str = "",
        api: Any = None,
        conflict_retries: int = 5,
        timeout: float = 30.0,
    ) -> None:
        self.namespace, self.name = namespace, name
        self.api = api or api_for(kubeconfig)
        self.retries = conflict_retries
        self.timeout = timeout

    def _call(self, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        # connect, read: an API server that accepts and never answers is as unreachable as one that refuses
        kwargs.setdefault("_request_timeout", (min(5.0, self.timeout), self.timeout))
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise exc
        except (HTTPError, OSError) as exc:
            raise KubeError(f"Kubernetes API unreachable: {type(exc).__name__}: {str(exc)[:300]}") from exc

    def get(self) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call(
                self.api.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            where = f"{self.namespace}/{self.name}"
            raise KubeError(f"reading RayService {where}: HTTP {exc.status} {exc.reason}") from exc

    def apply(
        self,
        *,
        serve_config_v2: str,
        create: Callable[[], dict],
        validate: Callable[[dict], None] | None = None,
    ) -> str:
        """Create the RayService (``create()`` renders its manifest), or patch only spec.serveConfigV2 with a
        resourceVersion precondition.

        Every other field stays as the cluster owner set it; ``validate`` sees the object as it will be after the
        patch. A conflict (someone else wrote in between) is retried with the fresh resourceVersion. Returns
        "created" or "patched".
        """
        from kubernetes.client.exceptions import ApiException

        ns, name = self.namespace, self.name
        for attempt in range(self.retries):
            current = self.get()
            try:
                if current is None:
                    manifest = create()
                    self._call(self.api.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, manifest)
                    return "created"
                candidate = dict(current)
                candidate["spec"] = {**current.get("spec", {}), "serveConfigV2": serve_config_v2}
                candidate.pop("status", None)
                if validate is not None:
                    validate({k: v for k, v in candidate.items() if k in ("apiVersion", "kind", "metadata", "spec")})
                patch = {
                    "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                    "spec": {"serveConfigV2": candidate["spec"]["serveConfigV2"]},
                }
                self._call(self.api.patch_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name, patch)
                return "patched"
            except ApiException as exc:
                if exc.status == 409 and attempt + 1 < self.retries:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if exc.status in (400, 403, 404, 409, 422):
                    raise KubeRejected(
                        f"RayService {ns}/{name}: HTTP {exc.status} {exc.reason}: {str(exc.body)[:500]}"
                    ) from exc
                raise KubeError(f"RayService {ns}/{name}: HTTP {exc.status} {exc.reason}") from exc
        raise KubeRejected(f"RayService {ns}/{name}: still conflicting after {self.retries} attempts")
