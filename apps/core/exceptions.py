"""The one handler that maps every error to an HTTP answer with a DRF-style body, never a 500 page for bad input:
what services raise (Django's ValidationError and PermissionDenied, Http404, and the control plane's own in
``apps.core.errors``), what DRF's parsers and serializers raise, and what the database does."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import Conflict, PayloadTooLarge, PreconditionFailed, error_detail


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):  # a body without a Content-Length that turned out too large
        from django.conf import settings

        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The body is larger than {limit // 1024} KiB, the most this API accepts."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(error_detail(exc))
    if isinstance(exc, PayloadTooLarge):
        return Response({"detail": exc.detail}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, PreconditionFailed):
        return Response(exc.detail, status=status.HTTP_412_PRECONDITION_FAILED)
    if isinstance(exc, Conflict):
        return Response(exc.detail, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DataError):  # a value the database cannot store (NUL bytes, out-of-range numbers)
        return Response(
            {"non_field_errors": ["A value in the request cannot be stored."]}, status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, IntegrityError):  # a constraint the validation missed: refuse, never a 500
        logging.getLogger(__name__).error("integrity error escaped validation: %s", exc)
        return Response(
            {"non_field_errors": ["The change conflicts with existing data."]}, status=status.HTTP_409_CONFLICT
        )
    if isinstance(exc, (OperationalError, InterfaceError)):  # the database is down or restarting
        return Response(
            {"detail": "The database is unavailable; try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    return drf_exception_handler(exc, context)
