"""Request ids: every request gets one (or keeps the caller's X-Request-ID); logs and audit events carry it."""

from __future__ import annotations

import contextvars
import ipaddress
import json
import logging
import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(value: str) -> contextvars.Token:
    return _request_id.set(value)


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        request.request_id = rid
        # Not reset after the response: Django logs 4xx/5xx responses after the middleware chain returns,
        # and those lines should carry the id too. The next request in this thread sets its own.
        _request_id.set(rid)
        response = self.get_response(request)
        response["X-Request-ID"] = rid
        return response


class ClientAddressMiddleware:
    """The client's address, as everything downstream (rate limits, logs) sees it in ``REMOTE_ADDR``.

    ``X-Forwarded-For`` is believed only when the connection comes from a proxy listed in ``TRUSTED_PROXIES``, and
    then only up to the first address that is not such a proxy (reading from the right, as each proxy appends the
    address it saw). From anyone else the header is dropped: a client cannot choose its own address.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:

        from django.conf import settings

        self.get_response = get_response
        self.trusted = [ipaddress.ip_network(p.strip(), strict=False) for p in settings.TRUSTED_PROXIES if p.strip()]

    def _trusted(self, address: str) -> bool:

        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        forwarded = request.META.pop("HTTP_X_FORWARDED_FOR", "")
        remote = request.META.get("REMOTE_ADDR", "")
        if forwarded and self._trusted(remote):
            for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
                remote = hop
                if not self._trusted(hop):
                    break
            request.META["REMOTE_ADDR"] = remote
        return self.get_response(request)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id: what log shippers want in production."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RejectNulBytesMiddleware:
    """NUL bytes in a URL or query string are never meaningful here, and PostgreSQL refuses them in text."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            "\x00" in request.path
            or "\x00" in request.META.get("QUERY_STRING", "")
            or any("\x00" in v for values in request.GET.lists() for v in values[1])
        ):
            return HttpResponse(
                '{"detail": "NUL bytes are not allowed in URLs."}', status=400, content_type="application/json"
            )
        return self.get_response(request)


class BodyLimitMiddleware:
    """An API body over the upload limit is a JSON 413 that names the limit, before anything reads it (Django's
    own refusal is an HTML 400 page, raised wherever the body happens to be read)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.conf import settings

        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = request.META.get("CONTENT_LENGTH") or "0"
        if request.path.startswith("/api/") and limit and length.isdigit() and int(length) > limit:
            return too_large(limit)
        return self.get_response(request)


def too_large(limit: int) -> HttpResponse:
    import json

    body = {"detail": f"The body is larger than {limit // 1024} KiB, the most this API accepts."}
    return HttpResponse(json.dumps(body), status=413, content_type="application/json")


class DatabaseUnavailableMiddleware:
    """A database that is down or restarting answers 503 with Retry-After, never a 500 page with a traceback."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from django.db import InterfaceError, OperationalError

        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logging.getLogger(__name__).warning("database unavailable: %s", type(exception).__name__)
        from django.db import connections

        for conn in connections.all():
            conn.close_if_unusable_or_obsolete()
        if request.path.startswith("/api/"):
            body = json.dumps({"detail": "The database is unavailable; try again shortly."})
            response = HttpResponse(body, status=503, content_type="application/json")
        else:
            response = HttpResponse(
                "<h1>Service unavailable</h1><p>The database is restarting; try again in a few seconds.</p>", status=503
            )
        response["Retry-After"] = "5"
        return response
