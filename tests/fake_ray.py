"""A stand-in for a Ray dashboard, for tests and benchmarks whose subject is not Ray itself.

It answers the Serve REST API the way Ray 2.60 does where it matters to the control plane: a PUT replaces every
declarative app (apps deployed with serve.run stay), ``deployed_app_config`` is the config passed through Ray's own
``ServeApplicationSchema`` and dumped with ``exclude_unset`` (so ``1`` comes back as ``1.0``), and apps report
RUNNING after ``settle_after`` GETs. Tests that are about talking to Ray use the real local cluster instead.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeRay:
    def __init__(self, settle_after: int = 1) -> None:
        self.apps: dict[str, dict] = {}
        self.puts: list[dict] = []
        self.gets = 0
        self.settle_after = settle_after
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_PUT(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                config = json.loads(self.rfile.read(length) or b"{}")
                error = outer.put(config)
                self._send(400 if error else 200, error)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/api/serve/applications"):
                    self._send(200, outer.status())
                elif self.path.startswith("/api/v0/nodes"):
                    self._send(200, {"data": {"result": {"result": outer.nodes()}}})
                elif self.path.startswith("/api/prometheus/sd"):
                    self._send(200, [])
                else:
                    self._send(404, {"error": "not here"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeRay:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what Ray does ---------------------------------------------------------------------------------------

    def put(self, config: dict) -> str | None:
        from ray.serve.schema import ServeDeploySchema  # Ray's own, not the control plane's wrapper of it

        try:
            parsed = ServeDeploySchema.model_validate(copy.deepcopy(config))
        except Exception as exc:
            return str(exc)
        with self.lock:
            self.puts.append(config)
            wanted = {}
            for app in parsed.applications:
                dumped = app.model_dump(mode="json", exclude_unset=True)
                old = self.apps.get(app.name)
                same = old is not None and old["deployed_app_config"] == dumped
                wanted[app.name] = old if same else self._app(app.name, dumped)
            keep = {n: a for n, a in self.apps.items() if a["source"] == "imperative"}
            self.apps = {**keep, **wanted}
        return None

    def _app(self, name: str, config: dict) -> dict:
        return {
            "name": name,
            "route_prefix": config.get("route_prefix", "/"),
            "status": "DEPLOYING",
            "source": "declarative",
            "message": "",
            "last_deployed_time_s": time.time(),
            "deployed_app_config": config,
            "deployments": {
                d["name"]: {"status": "UPDATING", "replicas": [], "required_resources": {}}
                for d in config.get("deployments", [])
            },
            "_gets": 0,
        }

    def add_imperative(self, name: str, route: str = "/imp") -> None:
        with self.lock:
            self.apps[name] = {**self._app(name, {}), "source": "imperative", "deployed_app_config": None}
            self.apps[name]["route_prefix"] = route

    def status(self) -> dict:
        with self.lock:
            self.gets += 1
            out = {}
            for name, app in self.apps.items():
                app["_gets"] += 1
                if app["_gets"] > self.settle_after:
                    app["status"] = "RUNNING"
                    for dep in app["deployments"].values():
                        dep["status"] = "HEALTHY"
                out[name] = {k: v for k, v in app.items() if not k.startswith("_")}
            return {"applications": copy.deepcopy(out)}

    def nodes(self) -> list[dict]:
        return [
            {
                "node_id": "head0",
                "node_ip": "127.0.0.1",
                "state": "ALIVE",
                "is_head_node": True,
                "resources_total": {"CPU": 1},
                "labels": {},
            }
        ]
