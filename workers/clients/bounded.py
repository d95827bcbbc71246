"""One HTTP call with a total deadline and a size limit, to the address that was checked.

``requests``' ``timeout`` bounds each socket read, not the call: a server sending one byte a second holds a 2 s call
for as long as it likes, and a 150 MiB answer is read whole into memory. Here every call has one deadline for name
resolution, connection, sending and reading together, and the answer is read in pieces up to ``max_bytes``, then
refused. ``connect_to`` connects to a given address (the one a caller checked) while the URL's host still names
the server for TLS (SNI and the certificate) and the Host header, so a name that resolves elsewhere the second time
(DNS rebinding) cannot move the call.
"""

from __future__ import annotations

import concurrent.futures
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3

_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


class CallFailed(Exception):
    """The call did not end with an answer; the message says why (it never includes what was sent)."""


class DeadlinePassed(CallFailed):
    pass


class AnswerTooLarge(CallFailed):
    pass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: float
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def resolve(host: str, port: int, deadline_s: float) -> list[str]:
    """The addresses a name resolves to, within the deadline (getaddrinfo itself has none)."""
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=max(0.001, deadline_s))
    except concurrent.futures.TimeoutError as exc:
        raise DeadlinePassed(f"the name {host!r} did not resolve within {deadline_s:.3g} s") from exc
    except (OSError, UnicodeError) as exc:
        raise CallFailed(f"the name {host!r} does not resolve") from exc
    return list(dict.fromkeys(info[4][0].split("%", 1)[0] for info in infos))


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    deadline_s: float,
    max_bytes: int,
    connect_to: str | None = None,
    truncate: bool = False,
    chunk_bytes: int = 65536,
) -> Answer:
    """``method url`` within ``deadline_s`` seconds in all, reading at most ``max_bytes`` of the answer (more:
    AnswerTooLarge, or with ``truncate`` the first ``max_bytes``), in pieces of up to ``chunk_bytes``. An answer
    the server compressed (only when the caller asked, with Accept-Encoding) is counted decompressed. Redirects are
    not followed."""
    started = time.monotonic()
    end = started + deadline_s

    def left() -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise DeadlinePassed(f"no complete answer within {deadline_s:g} s")
        return remaining

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallFailed("not an http(s) URL")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = connect_to or host
    timeout = urllib3.Timeout(connect=left(), read=left())
    if parts.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            target,
            port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = urllib3.HTTPConnectionPool(target, port, timeout=timeout, retries=False, maxsize=1)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    try:
        resp = pool.urlopen(
            method,
            path,
            body=body,
            headers={"Host": netloc, **(headers or {})},
            preload_content=False,
            redirect=False,
            retries=False,
            timeout=urllib3.Timeout(connect=left(), read=left()),
        )
    except urllib3.exceptions.NewConnectionError as exc:  # (a ConnectTimeoutError in urllib3's hierarchy)
        pool.close()
        if "timed out" in str(exc).lower():
            raise DeadlinePassed(f"no answer within {deadline_s:g} s") from exc
        raise CallFailed("connection refused or host unreachable") from exc
    except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
        pool.close()
        raise DeadlinePassed(f"no answer within {deadline_s:g} s") from exc
    except urllib3.exceptions.HTTPError as exc:
        pool.close()
        reason = "connection refused or host unreachable"
        if isinstance(exc, urllib3.exceptions.SSLError):
            reason = "TLS failed (the certificate does not match the host, or is not trusted)"
        raise CallFailed(reason) from exc
    try:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes and not truncate:
            raise AnswerTooLarge(f"the answer is {int(declared)} bytes; at most {max_bytes} are read")
        chunks: list[bytes] = []
        size = 0
        truncated = False
        while True:
            sock = getattr(resp.connection, "sock", None) if resp.connection is not None else None
            if sock is not None:
                sock.settimeout(left())  # each read waits at most what is left of the whole call
            try:
                chunk = resp.read1(chunk_bytes)
            except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
                raise DeadlinePassed(f"no complete answer within {deadline_s:g} s") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise CallFailed("the connection broke while reading the answer") from exc
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                if not truncate:
                    raise AnswerTooLarge(f"the answer is larger than {max_bytes} bytes; nothing more was read")
                chunks.append(chunk[: max_bytes - (size - len(chunk))])
                truncated = True
                break
            chunks.append(chunk)
            left()
        return Answer(
            status=resp.status,
            headers={k.lower(): v for k, v in resp.headers.items()},
            body=b"".join(chunks),
            elapsed_ms=(time.monotonic() - started) * 1000,
            truncated=truncated,
        )
    finally:
        resp.release_conn()
        resp.close()
        pool.close()
