"""A small Kubernetes API server for RayServices: create, get, merge-patch with resourceVersion preconditions.

Enough of the real API's behaviour for the KubeRay client: 404 for a missing object, 409 AlreadyExists on a
second create, 409 Conflict when a patch names a stale metadata.resourceVersion, resourceVersion bumped on
every write. Hooks let a test change the object between the client's read and its write.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = re.compile(r"^/apis/ray\.io/v1/namespaces/(?P<ns>[^/]+)/rayservices(?:/(?P<name>[^/?]+))?")


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.rv = 100
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, int]] = []
        self.before_patch: Callable[[FakeKube, str, str], None] | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "users": [{"name": "fake", "user": {"token": "test-token"}}],
            }
        )

    def bump(self, ns: str, name: str, change: Callable[[dict], None] | None = None) -> None:
        """Another writer (the cluster owner, KubeRay itself) changes the object."""
        with self.lock:
            obj = self.objects[(ns, name)]
            if change:
                change(obj)
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)

    def start(self) -> FakeKube:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # the port refuses connections from now on

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        kube = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                kube.log.append((self.command, self.path, code))  # before the reply: the client may return at once
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": reason,
                        "message": message,
                        "code": code,
                    },
                )

            def _body(self) -> Any:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

            def do_GET(self) -> None:  # noqa: N802
                m = PATH.match(self.path)
                if not m or not m["name"]:
                    return self._status(404, "NotFound", "not found")
                with kube.lock:
                    obj = kube.objects.get((m["ns"], m["name"]))
                if obj is None:
                    return self._status(404, "NotFound", f'rayservices.ray.io "{m["name"]}" not found')
                self._send(200, obj)

            def do_POST(self) -> None:  # noqa: N802
                m = PATH.match(self.path)
                body = self._body()
                name = body.get("metadata", {}).get("name", "")
                with kube.lock:
                    if (m["ns"], name) in kube.objects:
                        return self._status(409, "AlreadyExists", f'rayservices.ray.io "{name}" already exists')
                    kube.rv += 1
                    body["metadata"].update({"resourceVersion": str(kube.rv), "uid": f"uid-{kube.rv}", "generation": 1})
                    kube.objects[(m["ns"], name)] = body
                self._send(201, body)

            def do_PATCH(self) -> None:  # noqa: N802
                m = PATH.match(self.path)
                if self.headers.get("Content-Type") != "application/merge-patch+json":
                    return self._status(415, "UnsupportedMediaType", self.headers.get("Content-Type", ""))
                patch = self._body()
                if kube.before_patch:
                    kube.before_patch(kube, m["ns"], m["name"])
                with kube.lock:
                    obj = kube.objects.get((m["ns"], m["name"]))
                    if obj is None:
                        return self._status(404, "NotFound", "not found")
                    wanted = patch.get("metadata", {}).get("resourceVersion")
                    if wanted and wanted != obj["metadata"]["resourceVersion"]:
                        return self._status(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes "
                            "to the latest version and try again",
                        )
                    merged = merge_patch(obj, patch)
                    kube.rv += 1
                    merged["metadata"]["resourceVersion"] = str(kube.rv)
                    merged["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
                    kube.objects[(m["ns"], m["name"])] = merged
                self._send(200, merged)

        return Handler
