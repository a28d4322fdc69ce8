"""Shapes of call frames and of the calls API (docs/calls.md)."""

from typing import Any

from rest_framework import serializers

from accounts.serializers import UserLiteSerializer
from calls.models import Call
from calls.services import MAX_CANDIDATE_BYTES, MAX_OFFER_BYTES
from common.fields import B64uField, uuid_keyed_b64u_map

BOX_OVERHEAD = 24 + 16  # nonce and MAC of n || box(...)


class PrepareSerializer(serializers.Serializer):
    callee = serializers.CharField(max_length=17)
    media = serializers.ChoiceField(choices=Call.Media.choices)


class OffersField(serializers.Field):
    """{callee device id: b64u(n || box(offer))}."""

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if isinstance(data, dict) and not data:
            raise serializers.ValidationError("Box the offer to at least one device.")
        return uuid_keyed_b64u_map(
            data, name="offers", min_length=BOX_OVERHEAD + 1, max_length=MAX_OFFER_BYTES
        )

    def to_representation(self, value: dict[str, str]) -> dict[str, str]:
        return value


class InviteSerializer(PrepareSerializer):
    call_id = serializers.UUIDField()
    offers = OffersField()


class CallIdSerializer(serializers.Serializer):
    call_id = serializers.UUIDField()


class AcceptSerializer(CallIdSerializer):
    answer = B64uField(min_length=BOX_OVERHEAD + 1, max_length=MAX_OFFER_BYTES)


class CandidateSerializer(CallIdSerializer):
    candidate = B64uField(min_length=BOX_OVERHEAD, max_length=MAX_CANDIDATE_BYTES)


class HangupSerializer(CallIdSerializer):
    reason = serializers.ChoiceField(
        choices=[Call.EndReason.HANGUP, Call.EndReason.FAILED], default=Call.EndReason.HANGUP
    )


class CallSerializer(serializers.Serializer):
    """One call as the requesting party sees it (calls.selectors.CallView)."""

    id = serializers.UUIDField()
    direction = serializers.ChoiceField(choices=["outgoing", "incoming"])
    peer = UserLiteSerializer()
    media = serializers.ChoiceField(choices=Call.Media.choices)
    state = serializers.ChoiceField(choices=Call.State.choices)
    end_reason = serializers.CharField()
    missed = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    answered_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    duration = serializers.IntegerField(allow_null=True, help_text="Seconds, once answered.")


class IceServerSerializer(serializers.Serializer):
    urls = serializers.ListField(child=serializers.CharField())
    username = serializers.CharField()
    credential = serializers.CharField()


class CallerSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    handle = serializers.CharField()
    name = serializers.CharField()


class RingingCallSerializer(serializers.Serializer):
    """The fields of ``call.incoming``, for a device that connects while it rings."""

    call_id = serializers.UUIDField()
    caller = CallerSerializer()
    caller_device = serializers.UUIDField()
    media = serializers.ChoiceField(choices=Call.Media.choices)
    offer = serializers.CharField(help_text="b64u(n || box(offer)) for the requesting device.")
    ice_servers = IceServerSerializer(many=True)
    relay_only = serializers.BooleanField()
    ring_deadline = serializers.DateTimeField()
    ring_seconds = serializers.IntegerField(help_text="Seconds left to ring.")
