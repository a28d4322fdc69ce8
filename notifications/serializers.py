"""Request and response shapes of the notifications API (docs/api.md)."""

from rest_framework import serializers


class ActorSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    handle = serializers.CharField()
    display_name = serializers.CharField()


class NotificationSerializer(serializers.Serializer):
    """Renders ``selectors.notification_fields``: who did what and where, never content."""

    id = serializers.UUIDField()
    kind = serializers.CharField()
    title = serializers.CharField()
    body = serializers.CharField()
    url = serializers.CharField(help_text="Site-relative link to what it is about.")
    count = serializers.IntegerField(help_text="Messages gathered into it.")
    read = serializers.BooleanField()
    actor = ActorSerializer(allow_null=True)
    conversation_id = serializers.UUIDField(allow_null=True)
    call_id = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class UnreadSerializer(serializers.Serializer):
    unread = serializers.IntegerField()


class MarkReadSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=500)
    all = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        if bool(attrs.get("ids")) == bool(attrs.get("all")):
            raise serializers.ValidationError(
                {"ids": "Give the ids to mark read, or all: true (not both)."}, code="required"
            )
        return attrs


class ChannelChoicesSerializer(serializers.Serializer):
    email = serializers.BooleanField(required=False)
    push = serializers.BooleanField(required=False)


class PreferencesSerializer(serializers.Serializer):
    preferences = serializers.DictField(
        child=serializers.DictField(child=serializers.BooleanField()),
        help_text="{kind: {channel: enabled}}; kinds message, message_request, missed_call, "
        "new_follower (email, push) and digest (email).",
    )


class PushKeysSerializer(serializers.Serializer):
    p256dh = serializers.CharField(max_length=100)
    auth = serializers.CharField(max_length=40)


class PushSubscribeSerializer(serializers.Serializer):
    """What the browser's PushSubscription.toJSON() gives, and this browser's device."""

    endpoint = serializers.URLField(max_length=1024)
    keys = PushKeysSerializer()
    device_id = serializers.UUIDField(help_text="This browser's device: unlinking it ends pushes.")


class PushUnsubscribeSerializer(serializers.Serializer):
    endpoint = serializers.URLField(max_length=1024)


class PushSubscriptionSerializer(serializers.Serializer):
    id = serializers.UUIDField()


class PushKeySerializer(serializers.Serializer):
    vapid_public_key = serializers.CharField(
        allow_blank=True, help_text="The applicationServerKey; empty when push is off."
    )
