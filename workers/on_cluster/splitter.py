"""The rollout splitter: a small Serve deployment that the control plane places at an application's route during a
rollout, forwarding each request to the running version or the new one by weight.

Serve has no weighted routing between two applications, so the two versions run as two Serve applications at
internal routes, and the splitter sits at the app's public route. It forwards over HTTP through the Serve proxy
on its own node, so any HTTP application works unchanged (FastAPI or a plain ``__call__``, any method, path,
query, body and status). The weight arrives as ``user_config``: Serve applies a new one by calling
``reconfigure`` on the running replicas, without restarting them, so a step or a rollback drops no request in
flight. A request that names a multiplexed model (``serve_multiplexed_model_id``) goes to a side chosen by a hash
of the model id: within a step all of a model's requests land on one side, so its cache stays on one version.

Each answer says which side served it (``x-serve-rollout-side``), for the control plane's health gates and tests.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import aiohttp
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

SIDE_HEADER = "x-serve-rollout-side"
HOP_HEADER = "x-serve-rollout-hop"  # set on a request the splitter sent again to the app's own route
STICKY_HEADER = "serve_multiplexed_model_id"
# Hop-by-hop headers (RFC 9110 7.6.1) and what the client library sets itself.
NOT_FORWARDED = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def share(key: str) -> float:
    """A stable point in [0, 100) for a key: the same model id always falls on the same side of a weight."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 10_000 / 100


@serve.deployment(ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=1000)
class Splitter:
    def __init__(self, stable: str, canary: str, proxy: str = "http://127.0.0.1:8000", timeout_s: float = 300) -> None:
        self.routes = {"stable": stable.rstrip("/"), "canary": canary.rstrip("/")}
        self.proxy = proxy.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.weight = 0.0
        self.session: aiohttp.ClientSession | None = None

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.weight = min(100.0, max(0.0, float(config.get("weight", 0))))

    def side(self, request: Request) -> str:
        model = request.headers.get(STICKY_HEADER)
        point = share(model) if model else random.uniform(0, 100)
        return "canary" if point < self.weight else "stable"

    async def __call__(self, request: Request) -> Response:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=self.timeout, auto_decompress=False)
        side = self.side(request)
        root = request.scope.get("root_path", "")
        path = request.url.path
        rest = path[len(root) :] if root and path.startswith(root) else path
        url = f"{self.proxy}{self.routes[side]}{rest}"
        if request.url.query:
            url += f"?{request.url.query}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED}
        body = await request.body()
        status, content, out = await self._forward(request.method, url, headers, body)
        if status == 404 and root and HOP_HEADER not in request.headers and _route_missing(content):
            # The version's internal route is gone from the proxy's table: the app took its own route back (a
            # rollout ending, or beginning while this node's proxy still had the old table). The app answers at
            # the route this request came in on; sent there once, marked, so it can never loop.
            again = f"{self.proxy}{root}{rest}" + (f"?{request.url.query}" if request.url.query else "")
            status, content, out = await self._forward(request.method, again, {**headers, HOP_HEADER: "1"}, body)
        out[SIDE_HEADER] = side
        return Response(content=content, status_code=status, headers=out)

    async def _forward(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        assert self.session is not None
        async with self.session.request(method, url, headers=headers, data=body or None) as answer:
            content = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in NOT_FORWARDED}
            return answer.status, content, out


def _route_missing(content: bytes) -> bool:
    """Serve's proxy's own 404 for a path no application holds (an app's own 404 passes through as it is)."""
    return content.startswith(b"Path '") and b"not found. Ping http://.../-/routes" in content


def build(args: dict[str, Any]) -> serve.Application:
    """``import_path: workers.on_cluster.splitter:build`` with ``args: {stable, canary, proxy}``: the internal
    routes of the two versions, and the Serve proxy to reach them through (its own node's)."""
    return Splitter.bind(
        stable=args["stable"],
        canary=args["canary"],
        proxy=args.get("proxy", "http://127.0.0.1:8000"),
        timeout_s=float(args.get("timeout_s", 300)),
    )
