"""Request body parsers of the API: DRF's, refusing bodies the server cannot take.

Python's JSON decoder recurses once per level of nesting: a body nested thousands deep
raised RecursionError, a 500. Too large a body (DATA_UPLOAD_MAX_MEMORY_SIZE, which DRF
checks through ``request.body``) is turned into a 413 by common.api.exception_handler.
"""

from typing import Any

from rest_framework import exceptions, parsers


class RequestTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "request_too_large"


class JSONParser(parsers.JSONParser):
    """JSON nested too deep to read is a 400 ``parse_error`` like any other bad JSON."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
