"""The only code that sends webhooks: signs the body, refuses private addresses, and reports one attempt.

Signature: ``X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the endpoint's secret>``.
A receiver recomputes the HMAC over the timestamp and the raw body it received, compares in constant time, and
refuses timestamps too far from its clock (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

USER_AGENT = "ray-serve-control-plane-webhooks/1.0"


class UnsafeURL(ValueError):
    """The URL points at a loopback, private, link-local or otherwise internal address (server-side request
    forgery), or is not http(s)."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None, tolerance_s: int = 300) -> bool:
    """What a receiver does: parse the header, recompute, compare in constant time, check the timestamp."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - t) > tolerance_s:
        return False
    expected = sign(secret, t, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise UnsafeURL naming the reason when url must not be called."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("must be an http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeURL("has no host")
    if parts.username or parts.password:
        raise UnsafeURL("must not carry credentials; use the secret to authenticate requests")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"host {parts.hostname!r} does not resolve") from exc
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if _internal(ip):
            raise UnsafeURL(
                f"resolves to {ip}, a loopback, private or internal address; the operator allows those only with "
                "WEBHOOK_ALLOW_PRIVATE=true"
            )


@dataclass
class Attempt:
    ok: bool
    status_code: int | None
    answer: str
    duration_ms: float


def send(url: str, secret: str, payload: dict[str, Any], *, allow_private: bool, timeout: float = 5.0) -> Attempt:
    """POST payload, signed; never follows redirects (a redirect to an internal address is the classic bypass)."""
    started = time.perf_counter()
    try:
        check_url(url, allow_private=allow_private)
    except UnsafeURL as exc:
        return Attempt(False, None, f"refused: the URL {exc}", 0.0)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Signature": sign(secret, int(time.time()), body),
    }
    try:
        resp = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.Timeout:
        return Attempt(False, None, f"no answer within {timeout:g} s", (time.perf_counter() - started) * 1000)
    except requests.RequestException as exc:
        reason = (
            "connection refused or host unreachable"
            if isinstance(exc, requests.ConnectionError)
            else type(exc).__name__
        )
        return Attempt(False, None, reason, (time.perf_counter() - started) * 1000)
    elapsed = (time.perf_counter() - started) * 1000
    text = (resp.text or "")[:300]
    if 300 <= resp.status_code < 400:
        return Attempt(
            False, resp.status_code, f"redirect to {resp.headers.get('Location', '?')[:200]} not followed", elapsed
        )
    return Attempt(200 <= resp.status_code < 300, resp.status_code, text, elapsed)
