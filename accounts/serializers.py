"""Output shapes of the accounts app, shared by its API views.

The phone number is write-only everywhere; the e-mail address appears only in the
owner's own ``/me``. Key material travels as unpadded base64url.
"""

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import (
    DeviceLink,
    HistoryKey,
    IdentityKey,
    KeyBackup,
    User,
)
from accounts.selectors import Profile
from common.fields import B64uField


def avatar_url(user: User) -> str | None:
    return user.avatar.url if user.avatar else None


class UserLiteSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    handle = serializers.CharField()
    display_name = serializers.CharField()
    avatar_url = serializers.SerializerMethodField()

    def get_avatar_url(self, user: User) -> str | None:
        return avatar_url(user)


class MeSerializer(UserLiteSerializer):
    bio = serializers.CharField()
    email = serializers.EmailField()
    has_phone_number = serializers.SerializerMethodField()
    dm_policy = serializers.CharField()
    call_policy = serializers.CharField()
    send_read_receipts = serializers.BooleanField()
    relay_calls = serializers.BooleanField()
    date_joined = serializers.DateTimeField()

    def get_has_phone_number(self, user: User) -> bool:
        return bool(user.phone_number)


class RelationshipSerializer(serializers.Serializer):
    following = serializers.BooleanField()
    followed_by = serializers.BooleanField()
    blocking = serializers.BooleanField()
    muting = serializers.BooleanField()


class ProfileSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="user.id")
    handle = serializers.CharField(source="user.handle")
    display_name = serializers.CharField(source="user.display_name")
    avatar_url = serializers.SerializerMethodField()
    bio = serializers.CharField(source="user.bio")
    date_joined = serializers.DateTimeField(source="user.date_joined")
    followers_count = serializers.IntegerField()
    following_count = serializers.IntegerField()
    relationship = RelationshipSerializer()
    can_message = serializers.BooleanField()
    can_call = serializers.BooleanField()

    def get_avatar_url(self, profile: Profile) -> str | None:
        return avatar_url(profile.user)


class TokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    device_id = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class NewTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    key = serializers.CharField(help_text="Shown once. Send as `Authorization: Bearer <key>`.")


class AuthResultSerializer(serializers.Serializer):
    user = MeSerializer()
    token = NewTokenSerializer()


class DeviceSerializer(serializers.Serializer):
    """A device as its owner sees it."""

    device_id = serializers.UUIDField(source="id")
    name = serializers.CharField()
    sign_pub = B64uField(source="sign_public_key")
    box_pub = B64uField(source="box_public_key")
    created_at = serializers.IntegerField()
    certificate = B64uField()
    registered_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class DirectoryDeviceSerializer(serializers.Serializer):
    """A device as anyone sees it in the key directory: what verifies it, no name."""

    device_id = serializers.UUIDField(source="id")
    sign_pub = B64uField(source="sign_public_key")
    box_pub = B64uField(source="box_public_key")
    created_at = serializers.IntegerField()
    certificate = B64uField()


class IdentityKeyHistorySerializer(serializers.Serializer):
    aik_pub = B64uField(source="public_key")
    valid_from = serializers.DateTimeField()
    valid_to = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: IdentityKey) -> dict[str, Any]:
        data = super().to_representation(instance)
        # PROTOCOL.md section 6 names these `from` and `to`.
        return {"aik_pub": data["aik_pub"], "from": data["valid_from"], "to": data["valid_to"]}


class HistoryKeySerializer(serializers.Serializer):
    hk_pub = B64uField(source="public_key")
    certificate = B64uField()


class KeyDirectorySerializer(serializers.Serializer):
    user_id = serializers.UUIDField(source="id")
    handle = serializers.CharField()
    aik_pub = serializers.SerializerMethodField()
    aik_history = serializers.SerializerMethodField()
    devices = DirectoryDeviceSerializer(source="active_devices", many=True)
    history_key = serializers.SerializerMethodField()

    def get_aik_pub(self, user: User) -> str | None:
        current = [key for key in user.identity_keys.all() if key.valid_to is None]
        return B64uField().to_representation(current[0].public_key) if current else None

    def get_aik_history(self, user: User) -> list[dict[str, Any]]:
        return [IdentityKeyHistorySerializer(key).data for key in user.identity_keys.all()]

    def get_history_key(self, user: User) -> dict[str, Any] | None:
        keys: list[HistoryKey] = getattr(user, "current_history_keys", [])
        return dict(HistoryKeySerializer(keys[0]).data) if keys else None


class KeyBackupSerializer(serializers.Serializer):
    nonce = B64uField(length=24)
    # An AEAD ciphertext is at least its 16-byte tag plus some content.
    ciphertext = B64uField(min_length=17, max_length=settings.BACKUP_MAX_BYTES)
    kdf = serializers.ChoiceField(choices=KeyBackup.Kdf.choices)
    salt = B64uField(length=16, required=False, allow_null=True, default=None)
    opslimit = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=2, max_value=64
    )
    # At least libsodium's MEMLIMIT_INTERACTIVE, at most 1 GiB so restoring stays possible.
    memlimit = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=64 * 1024 * 1024,
        max_value=1024 * 1024 * 1024,
    )
    updated_at = serializers.DateTimeField(read_only=True)


class SecurityEventSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField(source="get_kind_display")
    device_id = serializers.UUIDField(allow_null=True)
    created_at = serializers.DateTimeField()


class DeviceLinkRevealedSerializer(serializers.Serializer):
    """What the new device revealed: its nonce and the keys its certificate will name."""

    device_id = serializers.UUIDField(source="new_device_id")
    name = serializers.CharField()
    sign_pub = B64uField(source="sign_public_key")
    box_pub = B64uField(source="box_public_key")
    created_at = serializers.IntegerField(source="device_created_at")
    nonce = B64uField(source="new_nonce")


class DeviceLinkSerializer(serializers.Serializer):
    """A device link as both of its sides see it (docs/keys-and-devices.md)."""

    id = serializers.UUIDField()
    # Not a ChoiceField: an enum named "State" in the schema would collide with others.
    state = serializers.CharField(
        help_text="pending, challenged, revealed, approved, denied or cancelled."
    )
    requested_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    commitment = B64uField()
    challenger_device = serializers.UUIDField(source="challenger_id", allow_null=True)
    existing_nonce = B64uField(allow_null=True)
    revealed = serializers.SerializerMethodField()
    device_id = serializers.UUIDField(
        allow_null=True, help_text="The device registered on approval."
    )
    approved_by = serializers.UUIDField(source="approved_by_id", allow_null=True)
    certificate = B64uField(allow_null=True)
    bundle = B64uField(
        allow_null=True,
        help_text="crypto_box_seal of {aik_seed, hk_secret} to the new device's box key.",
    )

    @extend_schema_field(DeviceLinkRevealedSerializer(allow_null=True))
    def get_revealed(self, link: DeviceLink) -> dict[str, Any] | None:
        if link.new_device_id is None:
            return None
        return dict(DeviceLinkRevealedSerializer(link).data)
