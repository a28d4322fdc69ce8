"""The messaging part of the mobile API (/api/v1/). One view per operation: parse,
call one service or selector, render. See docs/messages.md."""

import uuid
from typing import Any

from django.db.models import F
from django.http import FileResponse, HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors as account_selectors
from accounts.authentication import request_token
from accounts.models import Device
from common.api import BaseApi, current_user, paginated_response
from common.errors import NotFound
from common.fields import B64uField
from common.pagination import Pagination
from messaging import selectors, services
from messaging.models import Attachment, Report
from messaging.serializers import (
    ConversationSerializer,
    EnvelopeSerializer,
    InboxEntrySerializer,
    MessageSchemaSerializer,
    MessageSerializer,
)


def _reading_device(request: Request, named: object | None) -> Device:
    return account_selectors.device_for_caller(
        user=current_user(request), token=request_token(request), named=named
    )


class ConversationListApi(BaseApi):
    pagination_class = Pagination
    throttle_scope = "messaging"

    class ConversationCreateInputSerializer(serializers.Serializer):
        kind = serializers.ChoiceField(choices=["direct", "group"])
        handle = serializers.CharField(max_length=16, required=False)
        name = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
        handles = serializers.ListField(
            child=serializers.CharField(max_length=16), required=False, max_length=49
        )

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if attrs["kind"] == "direct" and not attrs.get("handle"):
                raise serializers.ValidationError({"handle": "Name the other person."})
            if attrs["kind"] == "group" and not attrs.get("handles"):
                raise serializers.ValidationError({"handles": "Name the members."})
            return attrs

    @extend_schema(
        parameters=[OpenApiParameter("requests", bool, description="The requests inbox.")],
        responses={200: InboxEntrySerializer(many=True)},
        tags=["conversations"],
    )
    def get(self, request: Request) -> Response:
        requests = request.query_params.get("requests") in {"1", "true"}
        conversations = selectors.inbox(user=current_user(request), requests=requests)
        return paginated_response(self, request, conversations, InboxEntrySerializer)

    @extend_schema(
        request=ConversationCreateInputSerializer,
        responses={200: ConversationSerializer, 201: ConversationSerializer},
        tags=["conversations"],
    )
    def post(self, request: Request) -> Response:
        data = self.ConversationCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        user = current_user(request)
        if values["kind"] == "direct":
            other = account_selectors.user_get_visible(viewer=user, handle=values["handle"])
            conversation, created = services.conversation_get_or_create_direct(
                user=user, other=other
            )
        else:
            members = account_selectors.users_visible_by_handles(
                viewer=user, handles=values["handles"]
            )
            conversation = services.conversation_create_group(
                creator=user, name=values["name"], members=members
            )
            created = True
        conversation = selectors.conversation_get_for_member(
            user=user, conversation_id=conversation.pk
        )
        return Response(
            ConversationSerializer(conversation).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ConversationDetailApi(BaseApi):
    class ConversationUpdateInputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=64, required=False, allow_blank=True)
        disappearing_seconds = serializers.IntegerField(required=False, allow_null=True)

    @extend_schema(responses={200: ConversationSerializer}, tags=["conversations"])
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        conversation = selectors.conversation_get_for_member(
            user=current_user(request), conversation_id=conversation_id
        )
        return Response(ConversationSerializer(conversation).data)

    @extend_schema(
        request=ConversationUpdateInputSerializer,
        responses={200: ConversationSerializer},
        tags=["conversations"],
    )
    def patch(self, request: Request, conversation_id: uuid.UUID) -> Response:
        data = self.ConversationUpdateInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        user = current_user(request)
        conversation = selectors.conversation_get_for_member(
            user=user, conversation_id=conversation_id
        )
        services.conversation_update(
            actor=user,
            conversation=conversation,
            name=data.validated_data.get("name"),
            disappearing_seconds=data.validated_data.get("disappearing_seconds"),
            set_timer="disappearing_seconds" in data.validated_data,
        )
        conversation = selectors.conversation_get_for_member(
            user=user, conversation_id=conversation_id
        )
        return Response(ConversationSerializer(conversation).data)


class MembersApi(BaseApi):
    class MembersAddInputSerializer(serializers.Serializer):
        handles = serializers.ListField(
            child=serializers.CharField(max_length=16), min_length=1, max_length=49
        )

    @extend_schema(
        request=MembersAddInputSerializer, responses={200: ConversationSerializer},
        tags=["conversations"],
    )  # fmt: skip
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        data = self.MembersAddInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = current_user(request)
        conversation = selectors.conversation_get_for_member(
            user=user, conversation_id=conversation_id
        )
        services.group_add_members(
            actor=user,
            conversation=conversation,
            users=account_selectors.users_visible_by_handles(
                viewer=user, handles=data.validated_data["handles"]
            ),
        )
        conversation = selectors.conversation_get_for_member(
            user=user, conversation_id=conversation_id
        )
        return Response(ConversationSerializer(conversation).data)


class MemberRemoveApi(BaseApi):
    @extend_schema(responses={204: None}, tags=["conversations"])
    def delete(self, request: Request, conversation_id: uuid.UUID, handle: str) -> Response:
        user = current_user(request)
        conversation = selectors.conversation_get_for_member(
            user=user, conversation_id=conversation_id
        )
        # Among the members, even one who blocked the admin (and so is hidden elsewhere).
        member = selectors.member_by_handle(conversation=conversation, handle=handle)
        services.group_remove_member(actor=user, conversation=conversation, user=member)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ConversationActionApi(BaseApi):
    """POST /conversations/<id>/<action>: leave, accept, decline, block."""

    action: str = ""
    actions = {
        "leave": services.conversation_leave,
        "accept": services.request_accept,
        "decline": services.request_decline,
        "block": services.request_block,
    }

    @extend_schema(request=None, responses={204: None}, tags=["conversations"])
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        user = current_user(request)
        membership = selectors.membership_get(user=user, conversation_id=conversation_id)
        self.actions[self.action](user=user, conversation=membership.conversation)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MuteApi(BaseApi):
    """POST mutes the conversation's notifications (for ``seconds``, or until unmuted
    with null); DELETE unmutes. Messages still arrive either way."""

    class MuteInputSerializer(serializers.Serializer):
        seconds = serializers.IntegerField(
            allow_null=True, help_text="3600, 28800 or 604800; null: until unmuted."
        )

    class MutedSerializer(serializers.Serializer):
        muted_until = serializers.DateTimeField(allow_null=True)

    @extend_schema(request=MuteInputSerializer, responses={200: MutedSerializer},
                   tags=["conversations"])  # fmt: skip
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        data = self.MuteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = current_user(request)
        membership = selectors.membership_get(user=user, conversation_id=conversation_id)
        membership = services.conversation_mute(
            user=user, conversation=membership.conversation, seconds=data.validated_data["seconds"]
        )
        return Response(self.MutedSerializer(membership).data)

    @extend_schema(request=None, responses={200: MutedSerializer}, tags=["conversations"])
    def delete(self, request: Request, conversation_id: uuid.UUID) -> Response:
        user = current_user(request)
        membership = selectors.membership_get(user=user, conversation_id=conversation_id)
        membership = services.conversation_unmute(user=user, conversation=membership.conversation)
        return Response(self.MutedSerializer(membership).data)


class HistoryPageSerializer(serializers.Serializer):
    results = MessageSchemaSerializer(many=True)


class MessageListApi(BaseApi):
    throttle_scope = "messaging"

    class HistoryQuerySerializer(serializers.Serializer):
        device = serializers.UUIDField(
            required=False, help_text="The reading device; implied by a bound token."
        )
        before = serializers.IntegerField(
            required=False, min_value=1, help_text="Messages with a lower seq."
        )
        limit = serializers.IntegerField(
            required=False, default=50, min_value=1, max_value=200, help_text="At most 200."
        )

    @extend_schema(
        parameters=[HistoryQuerySerializer],
        responses={200: HistoryPageSerializer},
        tags=["messages"],
    )
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        query = self.HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        messages = selectors.history_page(
            user=current_user(request),
            device=_reading_device(request, query.validated_data.get("device")),
            conversation_id=conversation_id,
            before_seq=query.validated_data.get("before"),
            limit=query.validated_data["limit"],
        )
        return Response({"results": MessageSerializer(messages, many=True).data})

    @extend_schema(
        request=EnvelopeSerializer,
        responses={200: MessageSchemaSerializer, 201: MessageSchemaSerializer},
        tags=["messages"],
    )
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        envelope = EnvelopeSerializer(data=request.data)
        envelope.is_valid(raise_exception=True)
        message, created = services.message_send(
            sender=current_user(request),
            conversation_id=conversation_id,
            envelope=envelope.to_envelope(),
            token=request_token(request),
        )
        body = services.message_fields(message)
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class MessageDeleteApi(BaseApi):
    @extend_schema(responses={204: None}, tags=["messages"])
    def delete(
        self, request: Request, conversation_id: uuid.UUID, message_id: uuid.UUID
    ) -> Response:
        services.message_delete_for_everyone(
            user=current_user(request), conversation_id=conversation_id, message_id=message_id
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class SeqSerializer(serializers.Serializer):
    seq = serializers.IntegerField(min_value=0, max_value=2**62)


class DeliveredInputSerializer(SeqSerializer):
    device = serializers.UUIDField(required=False, help_text="Implied by a bound token.")


class ReadApi(BaseApi):
    """Read marks are the user's, whichever device read: no device to name."""

    @extend_schema(request=SeqSerializer, responses={200: SeqSerializer}, tags=["messages"])
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        data = SeqSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        seq = services.read_mark(
            user=current_user(request),
            conversation_id=conversation_id,
            seq=data.validated_data["seq"],
        )
        return Response({"seq": seq})


class ReceiptSerializer(serializers.Serializer):
    user_id = serializers.UUIDField()
    delivered_seq = serializers.IntegerField()
    read_seq = serializers.IntegerField(
        allow_null=True, help_text="null when the member does not send read receipts."
    )


class ReceiptListSerializer(serializers.Serializer):
    results = ReceiptSerializer(many=True)


class ReceiptsApi(BaseApi):
    """Where the other members are: delivered and read marks after a reload."""

    @extend_schema(responses={200: ReceiptListSerializer}, tags=["messages"])
    def get(self, request: Request, conversation_id: uuid.UUID) -> Response:
        receipts = selectors.receipts_get(
            user=current_user(request), conversation_id=conversation_id
        )
        return Response({"results": ReceiptSerializer(receipts, many=True).data})


class DeliveredApi(BaseApi):
    @extend_schema(
        request=DeliveredInputSerializer, responses={200: SeqSerializer}, tags=["messages"]
    )
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        data = DeliveredInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        seq = services.delivery_ack(
            device=_reading_device(request, data.validated_data.get("device")),
            conversation_id=conversation_id,
            seq=data.validated_data["seq"],
        )
        return Response({"seq": seq})


class SyncApi(BaseApi):
    throttle_scope = "messaging"

    class SyncInputSerializer(serializers.Serializer):
        device = serializers.UUIDField(required=False)
        cursor = serializers.CharField(
            max_length=200_000, required=False, allow_null=True, allow_blank=True
        )
        limit = serializers.IntegerField(min_value=1, max_value=500, required=False, default=200)

    class SyncOutputSerializer(serializers.Serializer):
        messages = MessageSchemaSerializer(many=True)
        cursor = serializers.CharField()
        has_more = serializers.BooleanField()

    @extend_schema(
        request=SyncInputSerializer, responses={200: SyncOutputSerializer}, tags=["messages"]
    )
    def post(self, request: Request) -> Response:
        data = self.SyncInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        page = selectors.sync(
            user=current_user(request),
            device=_reading_device(request, data.validated_data.get("device")),
            cursor=data.validated_data.get("cursor"),
            limit=data.validated_data["limit"],
        )
        return Response(
            {
                "messages": MessageSerializer(page.messages, many=True).data,
                "cursor": page.cursor,
                "has_more": page.has_more,
            }
        )


class AttachmentUploadApi(BaseApi):
    parser_classes = [MultiPartParser]
    throttle_scope = "attachments"

    class AttachmentUploadInputSerializer(serializers.Serializer):
        blob = serializers.FileField(help_text="The encrypted file, application/octet-stream.")

    class AttachmentOutputSerializer(serializers.Serializer):
        blob_id = serializers.UUIDField(source="id")
        size = serializers.IntegerField()
        sha256 = serializers.CharField(help_text="Hex SHA-256 of the ciphertext.")

    @extend_schema(
        request={"multipart/form-data": AttachmentUploadInputSerializer},
        responses={201: AttachmentOutputSerializer},
        tags=["attachments"],
    )
    def post(self, request: Request, conversation_id: uuid.UUID) -> Response:
        data = self.AttachmentUploadInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        attachment = services.attachment_upload(
            user=current_user(request),
            conversation_id=conversation_id,
            upload=data.validated_data["blob"],
        )
        return Response(
            self.AttachmentOutputSerializer(attachment).data, status=status.HTTP_201_CREATED
        )


class AttachmentDownloadApi(BaseApi):
    throttle_scope = "attachments"

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY}, tags=["attachments"]
    )
    def get(self, request: Request, attachment_id: uuid.UUID) -> HttpResponseBase:
        user = current_user(request)
        # Members only, and only blobs uploaded since they joined.
        attachment = Attachment.objects.filter(
            pk=attachment_id,
            conversation__memberships__user=user,
            conversation__memberships__left_at__isnull=True,
            conversation__memberships__joined_at__lte=F("created_at"),
        ).first()
        if attachment is None:
            raise NotFound("attachment_not_found", "No such attachment.", field="attachment_id")
        response = FileResponse(attachment.blob.open("rb"), content_type="application/octet-stream")
        response["Content-Length"] = str(attachment.size)
        response["Cache-Control"] = "private, no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response


class ReportCreateApi(BaseApi):
    throttle_scope = "reports"

    class ReportInputSerializer(serializers.Serializer):
        message_id = serializers.UUIDField()
        payload = B64uField(max_length=64 * 1024)
        franking_key = B64uField(length=32)
        franking_stamp = B64uField(length=32, required=False, allow_null=True, default=None)
        reason = serializers.ChoiceField(choices=Report.Reason.choices)
        comment = serializers.CharField(
            max_length=1000, required=False, default="", allow_blank=True
        )

    class ReportOutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        verified = serializers.BooleanField()
        created_at = serializers.DateTimeField()

    @extend_schema(
        request=ReportInputSerializer, responses={201: ReportOutputSerializer}, tags=["reports"]
    )
    def post(self, request: Request) -> Response:
        data = self.ReportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        report = services.report_message(
            reporter=current_user(request),
            message_id=values["message_id"],
            payload=values["payload"],
            franking_key=values["franking_key"],
            franking_stamp_claimed=values["franking_stamp"],
            reason=values["reason"],
            comment=values["comment"],
        )
        return Response(self.ReportOutputSerializer(report).data, status=status.HTTP_201_CREATED)


class ProfileReportCreateApi(BaseApi):
    """Report a profile (handle, display name, bio, avatar); the service keeps a copy of
    it as it is now. 404 for an unknown or banned user; a user who blocks the caller
    can still be reported (``user_get_reportable``)."""

    throttle_scope = "reports"

    class ProfileReportInputSerializer(serializers.Serializer):
        reason = serializers.ChoiceField(choices=Report.Reason.choices)
        comment = serializers.CharField(
            max_length=1000, required=False, default="", allow_blank=True
        )

    class ProfileReportOutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        kind = serializers.CharField()
        created_at = serializers.DateTimeField()

    @extend_schema(
        request=ProfileReportInputSerializer,
        responses={201: ProfileReportOutputSerializer},
        tags=["reports"],
    )
    def post(self, request: Request, handle: str) -> Response:
        reporter = current_user(request)
        reported = account_selectors.user_get_reportable(handle=handle)
        data = self.ProfileReportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        report = services.report_profile(
            reporter=reporter,
            reported=reported,
            reason=values["reason"],
            comment=values["comment"],
        )
        return Response(
            self.ProfileReportOutputSerializer(report).data, status=status.HTTP_201_CREATED
        )
