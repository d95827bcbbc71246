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
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import bounded

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


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped (::ffff:a.b.c.d), 6to4 (2002:aabb:ccdd::), Teredo
    (2001:0::, server and client), NAT64 (64:ff9b::a.b.c.d). Each reaches that IPv4 host."""
    out = []
    if ip.ipv4_mapped:
        out.append(ip.ipv4_mapped)
    if ip.sixtofour:
        out.append(ip.sixtofour)
    if ip.teredo:
        out.extend(ip.teredo)
    if ip in NAT64:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and any(_internal(v4) for v4 in _embedded_v4(ip)):
        return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check_url(url: str, *, allow_private: bool, deadline_s: float = 5.0) -> str | None:
    """Raise UnsafeURL naming the reason when url must not be called; else the address to connect to (every
    address the name resolves to was checked; the call goes to the first, not to a second lookup)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("must be an http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeURL("has no host")
    if parts.username or parts.password:
        raise UnsafeURL("must not carry credentials; use the secret to authenticate requests")
    if allow_private:
        return None
    try:
        addresses = bounded.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), deadline_s)
    except bounded.CallFailed as exc:
        raise UnsafeURL(f"host {parts.hostname!r} does not resolve") from exc
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if _internal(ip):
            raise UnsafeURL(
                f"resolves to {ip}, a loopback, private or internal address; the operator allows those only with "
                "WEBHOOK_ALLOW_PRIVATE=true"
            )
    return addresses[0]


@dataclass
class Attempt:
    ok: bool
    status_code: int | None
    answer: str
    duration_ms: float


MAX_ANSWER_BYTES = 64 * 1024  # what is kept of a receiver's answer is 300 characters; more is never read


def send(url: str, secret: str, payload: dict[str, Any], *, allow_private: bool, timeout: float = 5.0) -> Attempt:
    """POST payload, signed, within ``timeout`` seconds in all (resolving, connecting, sending, reading), to the
    address that was checked, reading at most 64 KiB of the answer; never follows redirects (a redirect to an
    internal address is the classic bypass)."""
    started = time.perf_counter()
    try:
        address = check_url(url, allow_private=allow_private, deadline_s=timeout)
    except UnsafeURL as exc:
        return Attempt(False, None, f"refused: the URL {exc}", 0.0)
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Signature": sign(secret, int(time.time()), body),
    }
    remaining = timeout - (time.perf_counter() - started)
    try:
        resp = bounded.request(
            "POST",
            url,
            body=body,
            headers=headers,
            deadline_s=max(0.001, remaining),
            max_bytes=MAX_ANSWER_BYTES,
            connect_to=address,
            truncate=True,
        )
    except bounded.DeadlinePassed:
        return Attempt(False, None, f"no complete answer within {timeout:g} s", (time.perf_counter() - started) * 1000)
    except bounded.CallFailed as exc:
        return Attempt(False, None, str(exc), (time.perf_counter() - started) * 1000)
    elapsed = (time.perf_counter() - started) * 1000
    text = resp.text[:300]
    if 300 <= resp.status < 400:
        return Attempt(
            False, resp.status, f"redirect to {resp.headers.get('location', '?')[:200]} not followed", elapsed
        )
    return Attempt(200 <= resp.status < 300, resp.status, text, elapsed)
