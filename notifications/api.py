"""The notifications part of the mobile API (/api/v1/notifications): the centre, the
unread count, preferences and Web Push subscriptions (docs/notifications.md)."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import BaseApi, current_user
from common.pagination import Pagination
from notifications import selectors, services
from notifications.serializers import (
    MarkReadSerializer,
    NotificationSerializer,
    PreferencesSerializer,
    PushKeySerializer,
    PushSubscribeSerializer,
    PushSubscriptionSerializer,
    PushUnsubscribeSerializer,
    UnreadSerializer,
)


class NotificationListApi(BaseApi):
    pagination_class = Pagination
    throttle_scope = "notifications"

    class QuerySerializer(serializers.Serializer):
        unread = serializers.BooleanField(required=False, default=False)

    @extend_schema(
        parameters=[OpenApiParameter("unread", bool, description="Only unread ones.")],
        responses={200: NotificationSerializer(many=True)},
        tags=["notifications"],
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        user = current_user(request)
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.notifications_for(user=user, unread_only=query.validated_data["unread"]),
            request,
            view=self,
        )
        return paginator.get_paginated_response(
            [selectors.notification_fields(notification) for notification in page or []]
        )


class UnreadCountApi(BaseApi):
    throttle_scope = "notifications"

    @extend_schema(responses={200: UnreadSerializer}, tags=["notifications"])
    def get(self, request: Request) -> Response:
        return Response({"unread": selectors.unread_count(user=current_user(request))})


class MarkReadApi(BaseApi):
    throttle_scope = "notifications"

    @extend_schema(
        request=MarkReadSerializer, responses={200: UnreadSerializer}, tags=["notifications"]
    )
    def post(self, request: Request) -> Response:
        body = MarkReadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ids = None if body.validated_data["all"] else body.validated_data["ids"]
        unread = services.notifications_mark_read(user=current_user(request), ids=ids)
        return Response({"unread": unread})


class PreferencesApi(BaseApi):
    throttle_scope = "notifications"

    @extend_schema(responses={200: PreferencesSerializer}, tags=["notifications"])
    def get(self, request: Request) -> Response:
        return Response({"preferences": selectors.preferences_for(user=current_user(request))})

    @extend_schema(
        request=PreferencesSerializer,
        responses={200: PreferencesSerializer},
        tags=["notifications"],
    )
    def put(self, request: Request) -> Response:
        body = PreferencesSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        preferences = services.preferences_update(
            user=current_user(request), changes=body.validated_data["preferences"]
        )
        return Response({"preferences": preferences})


class PushSubscriptionsApi(BaseApi):
    throttle_scope = "push_subscriptions"

    @extend_schema(responses={200: PushKeySerializer}, tags=["notifications"])
    def get(self, request: Request) -> Response:
        """The key to subscribe with (``applicationServerKey``)."""
        return Response({"vapid_public_key": settings.VAPID_PUBLIC_KEY})

    @extend_schema(
        request=PushSubscribeSerializer,
        responses={201: PushSubscriptionSerializer},
        tags=["notifications"],
    )
    def post(self, request: Request) -> Response:
        body = PushSubscribeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        subscription = services.push_subscribe(
            user=current_user(request),
            endpoint=data["endpoint"],
            p256dh=data["keys"]["p256dh"],
            auth=data["keys"]["auth"],
            device_id=data["device_id"],
        )
        return Response({"id": str(subscription.pk)}, status=status.HTTP_201_CREATED)

    @extend_schema(request=PushUnsubscribeSerializer, responses={204: None}, tags=["notifications"])
    def delete(self, request: Request) -> Response:
        body = PushUnsubscribeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.push_unsubscribe(
            user=current_user(request), endpoint=body.validated_data["endpoint"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
