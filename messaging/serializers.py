"""Shapes of the messaging API. Envelopes are checked here to the byte (lengths,
strict base64url); device sets and permissions in the services."""

from typing import Any

from django.conf import settings
from rest_framework import serializers

from accounts.serializers import UserLiteSerializer
from common.fields import B64uField, uuid_keyed_b64u_map
from messaging.models import Conversation, Membership, Message
from messaging.services import Envelope, message_fields

WRAP_BYTES = 24 + 32 + 16  # n_d || box(K)
SEAL_BYTES = 32 + 48  # seal(K)


class EnvelopeSerializer(serializers.Serializer):
    """PROTOCOL.md section 3: what a client sends."""

    v = serializers.IntegerField(min_value=1, max_value=1)
    client_id = serializers.UUIDField()
    sender_device = serializers.UUIDField()
    nonce = B64uField(length=24)
    # At least the 32-byte franking key and the 16-byte tag.
    ciphertext = B64uField(min_length=48, max_length=settings.MESSAGE_MAX_CIPHERTEXT_BYTES)
    franking_tag = B64uField(length=32)
    keys = serializers.DictField(child=serializers.CharField(), allow_empty=False)
    history_keys = serializers.DictField(
        child=serializers.CharField(), required=False, default=dict
    )
    expires_in = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=28 * 86400
    )

    def validate_keys(self, value: Any) -> dict[str, str]:
        return uuid_keyed_b64u_map(value, length=WRAP_BYTES, name="keys")

    def validate_history_keys(self, value: Any) -> dict[str, str]:
        return uuid_keyed_b64u_map(value, length=SEAL_BYTES, name="history_keys")

    def to_envelope(self) -> Envelope:
        data = self.validated_data
        return Envelope(
            client_id=data["client_id"],
            sender_device_id=data["sender_device"],
            nonce=data["nonce"],
            ciphertext=data["ciphertext"],
            franking_tag=data["franking_tag"],
            keys=data["keys"],
            history_keys=data["history_keys"],
            expires_in=data["expires_in"],
        )


class MessageSerializer(serializers.BaseSerializer):
    """A message for one device: only its own wrap (``key``), or its user's history
    seal (``history_key``) when the device was certified after the message."""

    def to_representation(self, message: Message) -> dict[str, Any]:
        fields = message_fields(message)
        erased = bool(fields["deleted"])
        fields["key"] = None if erased else getattr(message, "device_key", None)
        fields["history_key"] = None if erased else getattr(message, "history_key", None)
        return fields


class MessageSchemaSerializer(serializers.Serializer):
    """The fields of MessageSerializer, for the OpenAPI schema."""

    v = serializers.IntegerField(help_text="Protocol version of the envelope: 1.")
    id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    seq = serializers.IntegerField()
    sender_id = serializers.UUIDField(allow_null=True)
    sender_device = serializers.UUIDField(allow_null=True)
    client_id = serializers.UUIDField()
    nonce = serializers.CharField(allow_null=True)
    ciphertext = serializers.CharField(allow_null=True)
    franking_tag = serializers.CharField()
    franking_stamp = serializers.CharField()
    server_ts = serializers.IntegerField(help_text="Unix milliseconds.")
    expires_at = serializers.DateTimeField(allow_null=True)
    deleted = serializers.BooleanField()
    key = serializers.CharField(allow_null=True, help_text="This device's wrap of K.")
    history_key = serializers.CharField(allow_null=True, help_text="seal(K) to the user's HK.")


class MemberSerializer(serializers.Serializer):
    """A member as the others see them. Their request state (accepted, pending,
    declined) is theirs alone: a sender is never told of a decline."""

    user = UserLiteSerializer()
    role = serializers.CharField()


class ConversationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    disappearing_seconds = serializers.IntegerField(allow_null=True)
    members = serializers.SerializerMethodField()
    my_state = serializers.CharField(
        help_text="accepted, requested (a message request) or declined."
    )
    muted_until = serializers.DateTimeField(
        source="my_muted_until", allow_null=True, read_only=True,
        help_text="No notifications from it until then (year 9999: until unmuted).",
    )  # fmt: skip

    def get_members(self, conversation: Conversation) -> list[dict[str, Any]]:
        memberships: list[Membership] = getattr(conversation, "active_memberships", [])
        return [dict(MemberSerializer(membership).data) for membership in memberships]


class InboxEntrySerializer(ConversationSerializer):
    my_role = serializers.CharField()
    unread_count = serializers.IntegerField()
    last_message = serializers.SerializerMethodField()

    def get_last_message(self, conversation: Conversation) -> dict[str, Any] | None:
        message_id = getattr(conversation, "last_message_id", None)
        if message_id is None:
            return None
        sender = getattr(conversation, "last_sender_id", None)
        return {
            "id": str(message_id),
            "seq": getattr(conversation, "last_message_seq", None),
            "sender_id": str(sender) if sender else None,
            "server_ts": getattr(conversation, "last_server_ts", None),
        }
