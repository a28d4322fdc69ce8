"""Warnings in the mobile API (/api/v1/me/warnings): what a moderator told the caller,
and saying "I understand". One view per operation. docs/api.md, docs/realtime.md
(the ``account.warning`` event carries the same fields)."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import BaseApi, current_user
from moderation import selectors, services


class AccountWarningSerializer(serializers.Serializer):
    """``moderation.selectors.warning_fields``, for the schema."""

    id = serializers.IntegerField()
    reason = serializers.CharField(help_text="The report's reason, or empty.")
    text = serializers.CharField(help_text="What the moderator wrote to the user.")
    created_at = serializers.DateTimeField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)


class AccountWarningListSerializer(serializers.Serializer):
    results = AccountWarningSerializer(many=True)


class WarningListApi(BaseApi):
    """The caller's warnings, acknowledged or not, newest first."""

    throttle_scope = "notifications"

    @extend_schema(responses={200: AccountWarningListSerializer}, tags=["warnings"])
    def get(self, request: Request) -> Response:
        warnings = selectors.warnings_for(user=current_user(request))
        return Response({"results": [selectors.warning_fields(warning) for warning in warnings]})


class WarningAcknowledgeApi(BaseApi):
    """The user says "I understand" and the warning stops showing. Again is harmless;
    someone else's warning is 404 ``warning_not_found``."""

    throttle_scope = "notifications"

    @extend_schema(request=None, responses={200: AccountWarningSerializer}, tags=["warnings"])
    def post(self, request: Request, warning_id: int) -> Response:
        warning = services.warning_acknowledge(user=current_user(request), warning_id=warning_id)
        return Response(selectors.warning_fields(warning))
