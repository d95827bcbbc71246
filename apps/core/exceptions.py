"""API error handling: DRF-style bodies for everything, never a 500 page for bad input."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(Exception):
    """A write based on a stale version, or one that collides with current state (HTTP 409)."""

    def __init__(self, detail: dict[str, Any]) -> None:
        super().__init__(detail)
        self.detail = detail


class PreconditionFailed(Conflict):
    """If-Match named a version that is not the current one (HTTP 412)."""


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})
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
