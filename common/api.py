"""One error shape for the whole API, and small helpers shared by API views."""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponseBase, JsonResponse
from django.utils.cache import add_never_cache_headers
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import (
    RETRY_UNAVAILABLE_SECONDS,
    SERVICE_UNAVAILABLE_ERRORS,
    UNAVAILABLE_MESSAGE,
    ApplicationError,
    RateLimited,
)
from common.pagination import Pagination
from common.parsers import RequestTooLarge
from common.throttling import AnonThrottle, ScopedThrottle, UserThrottle

logger = logging.getLogger(__name__)


class BaseApi(APIView):
    """Every API view: signed-in by default, throttled per user and per kind
    (``throttle_scope``)."""

    permission_classes = [IsAuthenticated]
    throttle_classes = [AnonThrottle, UserThrottle, ScopedThrottle]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Only for a method the view has: any other is a 405, whatever its body.
        if request.method not in SAFE_METHODS and hasattr(self, (request.method or "").lower()):
            # The body is read (and refused when it is too large, malformed or of a
            # media type the view does not take) before the view acts, also by a view
            # that takes none: a request the server cannot read changes nothing.
            request.data  # noqa: B018

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        not_stored_by_caches(response)
        return response


def not_stored_by_caches(response: HttpResponseBase) -> None:
    """API answers are someone's own data (and a session-authenticated request is
    cached on its URL alone): no cache keeps them, unless the view said otherwise."""
    if not response.has_header("Cache-Control"):
        add_never_cache_headers(response)


def current_user(request: Request) -> Any:
    """The signed-in user of an API request (views are behind IsAuthenticated)."""
    user = request.user
    if not user.is_authenticated:
        raise exceptions.NotAuthenticated()
    return user


def paginated_response(
    view: APIView,
    request: Request,
    queryset: QuerySet[Any],
    serializer: type[serializers.BaseSerializer[Any]],
) -> Response:
    """One page of ``queryset`` (limit/offset), serialized, with the pagination links."""
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def first_error(detail: Any, prefix: str = "") -> tuple[str | None, str, str]:
    """Walk a DRF ValidationError detail to its first message: (field, message, code)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = str(key)
            field = None if name == "non_field_errors" else f"{prefix}{name}"
            sub_field, message, code = first_error(value, f"{field}." if field else prefix)
            return (sub_field or field), message, code
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                sub_field, message, code = first_error(value, f"{prefix}{index}.")
                return (sub_field or (f"{prefix}{index}" if prefix else None)), message, code
            return None, str(value), getattr(value, "code", "invalid") or "invalid"
    return None, str(detail), getattr(detail, "code", "invalid") or "invalid"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, SERVICE_UNAVAILABLE_ERRORS):
        # 503 with Retry-After, not a 500: the client tries again (docs/reliability.md).
        logger.warning("backing service unavailable: %s", type(exc).__name__)
        response = Response(
            error_body("unavailable", UNAVAILABLE_MESSAGE, retry_after=RETRY_UNAVAILABLE_SECONDS),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        response["Retry-After"] = str(RETRY_UNAVAILABLE_SECONDS)
        return response

    if isinstance(exc, ApplicationError):
        response = Response(
            {"error": exc.as_dict()},
            status=exc.status_code,
        )
        if isinstance(exc, RateLimited):
            response["Retry-After"] = str(exc.retry_after)
        return response

    if isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge()  # Django's own answer would be a bare 400
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    handled = drf_exception_handler(exc, context)
    if handled is None:
        return None  # an unexpected error: Django's handler500 answers without details
    response = handled

    if isinstance(exc, exceptions.ValidationError):
        field, message, code = first_error(exc.detail)
        response.data = error_body(
            code,
            message,
            field,
            fields=exc.detail if isinstance(exc.detail, dict) else None,
        )
        response.status_code = status.HTTP_400_BAD_REQUEST
    else:
        detail = getattr(exc, "detail", str(exc))
        error_code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        extra: dict[str, Any] = {}
        wait = getattr(exc, "wait", None)
        if isinstance(exc, exceptions.Throttled) and wait is not None:
            extra["retry_after"] = int(wait)
        response.data = error_body(str(error_code), str(detail), None, **extra)
    return response


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    response = JsonResponse(error_body("not_found", "Not found."), status=404)
    add_never_cache_headers(response)
    return response


def json_server_error(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(
        error_body("server_error", "Something went wrong on our side. Try again later."),
        status=500,
    )
    add_never_cache_headers(response)
    return response
