"""The calls part of the mobile API (/api/v1/calls): history, and the calls ringing
for a device. Signaling itself goes over the live socket (docs/calls.md)."""

import uuid

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors as account_selectors
from accounts.authentication import request_token
from calls import selectors
from calls.serializers import CallSerializer, RingingCallSerializer
from common.api import BaseApi, current_user
from common.pagination import Pagination


class CallListApi(BaseApi):
    pagination_class = Pagination
    throttle_scope = "calls"

    class QuerySerializer(serializers.Serializer):
        peer = serializers.UUIDField(required=False)

    @extend_schema(
        parameters=[OpenApiParameter("peer", uuid.UUID, description="Only calls with this user.")],
        responses={200: CallSerializer(many=True)},
        tags=["calls"],
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = current_user(request)
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.calls_of(user=user, peer_id=query.validated_data.get("peer")),
            request,
            view=self,
        )
        views = selectors.call_views(user=user, calls=page or [])
        return paginator.get_paginated_response(CallSerializer(views, many=True).data)


class CallDetailApi(BaseApi):
    throttle_scope = "calls"

    @extend_schema(responses={200: CallSerializer}, tags=["calls"])
    def get(self, request: Request, call_id: uuid.UUID) -> Response:
        user = current_user(request)
        call = selectors.call_get_for_party(user=user, call_id=call_id)
        return Response(CallSerializer(selectors.CallView(call=call, viewer=user)).data)


class RingingCallsApi(BaseApi):
    """Calls ringing now for the requesting device, each with its own boxed offer: a
    device that connects while it rings (a new tab, an app woken up) rings too."""

    throttle_scope = "calls"

    class QuerySerializer(serializers.Serializer):
        device = serializers.UUIDField(required=False)

    class RingingListSerializer(serializers.Serializer):
        results = RingingCallSerializer(many=True)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "device", uuid.UUID, description="The reading device (unless the token is bound)."
            )
        ],
        responses={200: RingingListSerializer},
        tags=["calls"],
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = current_user(request)
        device = account_selectors.device_for_caller(
            user=user, token=request_token(request), named=query.validated_data.get("device")
        )
        results = [
            {
                **selectors.incoming_fields(
                    call, relay_only=selectors.callee_relay_only(callee=user, caller=call.caller)
                ),
                "offer": call.offers[str(device.pk)],
            }
            for call in selectors.calls_ringing_for_device(user=user, device_id=device.pk)
        ]
        return Response({"results": results})
