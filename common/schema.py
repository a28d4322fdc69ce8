"""The API's OpenAPI schema: drf-spectacular's, plus the errors an operation may answer.

Views describe their successes; the error shape is the same everywhere (docs/api.md,
"Errors"), so it is added here to every operation, with the statuses that apply to it.
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable: clients branch on it.")
    message = serializers.CharField(help_text="For people; may change.")
    field = serializers.CharField(
        allow_null=True, help_text="The request field at fault (a dotted path), or null."
    )
    retry_after = serializers.IntegerField(
        required=False,
        help_text="429 and 503 only: seconds to wait (also the Retry-After header).",
    )
    # The metaclass takes declared fields out of the class, so the name is free to use.
    fields = serializers.DictField(  # type: ignore[assignment]
        required=False, help_text="400 validation only: every field's problems."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


ERROR_DESCRIPTIONS = {
    400: "Invalid input (`fields` lists every problem) or malformed JSON (`parse_error`).",
    401: "Not signed in, or the token is invalid or revoked.",
    403: "Refused because of who the caller is or what they did not give.",
    404: "No such thing, or not one the caller may see.",
    409: "A conflict with what is stored.",
    413: "The request body is too large.",
    415: "The request body is not in a media type this operation takes.",
    429: "Throttled or locked out: retry after `retry_after` seconds.",
    503: "A part behind the server is down for a moment: retry after `retry_after` seconds.",
}


class AutoSchema(SpectacularAutoSchema):
    def _error_statuses(self) -> list[int]:
        statuses = [400, 403, 404, 429, 503]
        if not all(isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            statuses.append(401)
        if self.method in {"POST", "PUT", "PATCH", "DELETE"}:
            # Every write reads its body first, also one that takes none (common.api).
            statuses += [409, 413, 415]
        return sorted(statuses)

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for status in self._error_statuses():
            response = OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[status])
            responses.setdefault(
                str(status), self._get_response_for_code(response, str(status), direction=direction)
            )
        return responses
