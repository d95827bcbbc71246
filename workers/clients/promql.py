"""Prometheus's HTTP query API (also answered by Thanos, Mimir, Cortex and VictoriaMetrics): the only code that
queries it.

The credential is a bearer token, or ``user:password`` for basic auth. It goes only into the request's
Authorization header; no error message, log line or exception repeats it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import requests

USER_AGENT = "ray-serve-control-plane/1.0"


class PromQLError(Exception):
    """The query endpoint did not answer, refused the query, or answered something that is not a query result."""


@dataclass(frozen=True)
class Result:
    """One series of a result: its labels and its (unix seconds, value) points; NaN and infinities dropped."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(matchers: dict[str, str], extra: dict[str, str] | None = None, regex: dict[str, str] | None = None) -> str:
    """``{a="x",b="y",c=~"z.+"}`` from label matchers (equality), the cluster's and the query's own, and regular
    expression matchers (``regex``: already patterns; quote any value put in them with ``re.escape``)."""
    labels = {**(matchers or {}), **(extra or {})}
    parts = [f"{k}={quote(v)}" for k, v in sorted(labels.items())]
    parts += [f"{k}=~{quote(v)}" for k, v in sorted((regex or {}).items())]
    return "{" + ",".join(parts) + "}"


class PromQLClient:
    def __init__(self, base_url: str, credential: str = "", timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        if credential:
            if ":" in credential and not credential.lower().startswith("bearer "):
                user, _, password = credential.partition(":")
                self._session.auth = (user, password)
            else:
                token = credential[7:] if credential.lower().startswith("bearer ") else credential
                self._session.headers["Authorization"] = f"Bearer {token}"

    def query(self, expr: str, at: float | None = None) -> list[Result]:
        """An instant query: one point per series (at ``at``, default now)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._results(self._get("/api/v1/query", params))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Result]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return self._results(self._get("/api/v1/query_range", params))

    def _get(self, path: str, params: dict[str, str]) -> dict:
        where = f"Prometheus at {self.base_url}"
        try:
            resp = self._session.get(self.base_url + path, params=params, timeout=self.timeout)
        except requests.Timeout as exc:
            raise PromQLError(f"{where} did not answer within {self.timeout:g} s") from exc
        except requests.RequestException as exc:
            raise PromQLError(f"{where} is unreachable ({type(exc).__name__})") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code in (401, 403):
            raise PromQLError(f"{where} refused the credential (HTTP {resp.status_code})")
        if not isinstance(body, dict):
            raise PromQLError(f"{where} answered HTTP {resp.status_code} with no query result (is it a query API?)")
        if body.get("status") != "success":
            error = str(body.get("error") or f"HTTP {resp.status_code}")[:300]
            raise PromQLError(f"{where} refused the query: {error}")
        return body.get("data") or {}

    @staticmethod
    def _results(data: dict) -> list[Result]:
        kind = data.get("resultType")
        rows = data.get("result")
        if kind == "scalar" and isinstance(rows, list) and len(rows) == 2:
            rows, kind = [{"metric": {}, "value": rows}], "vector"
        if kind not in ("vector", "matrix") or not isinstance(rows, list):
            raise PromQLError(f"unexpected result type {kind!r}")
        out = []
        try:
            for row in rows:
                raw = [row["value"]] if "value" in row else row.get("values") or []
                points = []
                for ts, value in raw:
                    v = float(value)
                    if not math.isnan(v) and not math.isinf(v):
                        points.append((float(ts), v))
                out.append(Result({str(k): str(v) for k, v in (row.get("metric") or {}).items()}, points))
        except (KeyError, TypeError, ValueError) as exc:
            raise PromQLError(f"malformed query result: {type(exc).__name__}") from exc
        return out
