from __future__ import annotations

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from rest_framework.exceptions import ParseError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser


class IdsFirstPaginator(Paginator):
    """Django's paginator, but a page of a queryset is found by its ids first (a narrow query: the database sorts
    and skips ids, not whole rows with their JSON), then its rows are read by id (benchmarks/scale.py: the middle
    page of 10,000 apps)."""

    def page(self, number: int | str) -> Page:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        ids = list(qs.values_list("pk", flat=True)[bottom:top])
        found = {row.pk: row for row in qs.order_by().filter(pk__in=ids)}
        return self._get_page([found[i] for i in ids if i in found], number, self)


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500
    django_paginator_class = IdsFirstPaginator


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, but a document nested deeper than Python's recursion limit is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - the document is nested too deeply.") from exc
