from rest_framework.exceptions import ParseError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, but a document nested deeper than Python's recursion limit is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - the document is nested too deeply.") from exc
