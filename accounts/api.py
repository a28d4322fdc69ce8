"""The accounts part of the mobile API (/api/v1/). One view per operation: parse,
call one service or selector, render. See docs/api.md."""

import uuid
from typing import Any

from django.contrib.auth import logout, update_session_auth_hash
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors, services
from accounts.authentication import request_token
from accounts.models import ApiToken, KeyBackup, SecurityEvent, User
from accounts.serializers import (
    AuthResultSerializer,
    DeviceLinkSerializer,
    DeviceSerializer,
    HistoryKeySerializer,
    KeyBackupSerializer,
    KeyDirectorySerializer,
    MeSerializer,
    ProfileSerializer,
    SecurityEventSerializer,
    TokenSerializer,
    UserLiteSerializer,
)
from common.api import BaseApi, current_user, paginated_response
from common.errors import NotFound
from common.fields import B64uField
from common.net import client_address
from common.pagination import Pagination

SENSITIVE = method_decorator(
    sensitive_post_parameters("password", "old_password", "new_password", "phone_number"),
    name="dispatch",
)


def _auth_result(user: User, token: ApiToken, key: str) -> dict[str, Any]:
    return dict(
        AuthResultSerializer(
            {"user": user, "token": {"id": token.pk, "name": token.name, "key": key}}
        ).data
    )


# --- Sign-up, sign-in, tokens ----------------------------------------------------------------


@SENSITIVE
class SignUpApi(BaseApi):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_scope = "auth"

    class SignUpInputSerializer(serializers.Serializer):
        handle = serializers.CharField(max_length=16)
        email = serializers.CharField(max_length=254)
        password = serializers.CharField(max_length=256, trim_whitespace=False)
        display_name = serializers.CharField(
            max_length=50, required=False, default="", allow_blank=True
        )
        token_name = serializers.CharField(
            max_length=64, required=False, default="", allow_blank=True
        )

    @extend_schema(
        request=SignUpInputSerializer, responses={201: AuthResultSerializer}, tags=["auth"]
    )
    def post(self, request: Request) -> Response:
        data = self.SignUpInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        user = services.user_sign_up(
            handle=values["handle"],
            email=values["email"],
            password=values["password"],
            display_name=values["display_name"],
        )
        token, key = services.api_token_create(user=user, name=values["token_name"])
        return Response(_auth_result(user, token, key), status=status.HTTP_201_CREATED)


@SENSITIVE
class LoginApi(BaseApi):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_scope = "auth"

    class LoginInputSerializer(serializers.Serializer):
        login = serializers.CharField(
            max_length=254, help_text="Handle (with or without @) or e-mail."
        )
        password = serializers.CharField(max_length=256, trim_whitespace=False)
        token_name = serializers.CharField(
            max_length=64, required=False, default="", allow_blank=True
        )

    @extend_schema(
        request=LoginInputSerializer, responses={200: AuthResultSerializer}, tags=["auth"]
    )
    def post(self, request: Request) -> Response:
        data = self.LoginInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        user = services.user_authenticate(
            login=values["login"], password=values["password"], address=client_address(request.META)
        )
        token, key = services.api_token_create(user=user, name=values["token_name"])
        return Response(_auth_result(user, token, key))


class LogoutApi(BaseApi):
    @extend_schema(request=None, responses={204: None}, tags=["auth"])
    def post(self, request: Request) -> Response:
        token = request_token(request)
        if token is not None:
            services.api_token_revoke(user=current_user(request), token_id=token.pk)
        else:
            services.session_end_sockets(session_key=request.session.session_key)
            logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


@SENSITIVE
class PasswordChangeApi(BaseApi):
    throttle_scope = "auth"

    class PasswordChangeInputSerializer(serializers.Serializer):
        old_password = serializers.CharField(max_length=256, trim_whitespace=False)
        new_password = serializers.CharField(max_length=256, trim_whitespace=False)

    @extend_schema(request=PasswordChangeInputSerializer, responses={204: None}, tags=["auth"])
    def post(self, request: Request) -> Response:
        data = self.PasswordChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = current_user(request)
        services.user_change_password(
            user=user,
            old_password=data.validated_data["old_password"],
            new_password=data.validated_data["new_password"],
        )
        if request_token(request) is None:
            update_session_auth_hash(request._request, user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenListApi(BaseApi):
    pagination_class = Pagination

    @extend_schema(responses={200: TokenSerializer(many=True)}, tags=["auth"])
    def get(self, request: Request) -> Response:
        tokens = ApiToken.objects.filter(user=current_user(request), revoked_at__isnull=True)
        return paginated_response(self, request, tokens, TokenSerializer)


class TokenRevokeApi(BaseApi):
    @extend_schema(responses={204: None}, tags=["auth"])
    def delete(self, request: Request, token_id: int) -> Response:
        services.api_token_revoke(user=current_user(request), token_id=token_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Me: profile, privacy, avatar ------------------------------------------------------------


@SENSITIVE
class MeApi(BaseApi):
    class MeInputSerializer(serializers.Serializer):
        display_name = serializers.CharField(max_length=50, required=False, allow_blank=True)
        bio = serializers.CharField(max_length=160, required=False, allow_blank=True)
        email = serializers.CharField(max_length=254, required=False)
        phone_number = serializers.CharField(
            max_length=32,
            required=False,
            allow_blank=True,
            write_only=True,
            help_text="Private and write-only; empty to remove.",
        )
        dm_policy = serializers.CharField(required=False)
        call_policy = serializers.CharField(required=False)
        send_read_receipts = serializers.BooleanField(required=False)
        relay_calls = serializers.BooleanField(required=False)

    @extend_schema(responses={200: MeSerializer}, tags=["me"])
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(current_user(request)).data)

    @extend_schema(request=MeInputSerializer, responses={200: MeSerializer}, tags=["me"])
    def patch(self, request: Request) -> Response:
        data = self.MeInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        user = services.user_update_settings(user=current_user(request), **data.validated_data)
        return Response(MeSerializer(user).data)


class AvatarApi(BaseApi):
    class AvatarInputSerializer(serializers.Serializer):
        avatar = serializers.FileField()

    @extend_schema(
        request={"multipart/form-data": AvatarInputSerializer},
        responses={200: MeSerializer},
        tags=["me"],
    )
    def put(self, request: Request) -> Response:
        # A form upload only: any other body is refused for its type, as attachments are.
        if not (request.content_type or "").lower().startswith("multipart/form-data"):
            raise UnsupportedMediaType(request.content_type)
        data = self.AvatarInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_set_avatar(
            user=current_user(request), upload=data.validated_data["avatar"]
        )
        return Response(MeSerializer(user).data)

    @extend_schema(responses={200: MeSerializer}, tags=["me"])
    def delete(self, request: Request) -> Response:
        user = services.user_remove_avatar(user=current_user(request))
        return Response(MeSerializer(user).data)


class BlockListApi(BaseApi):
    pagination_class = Pagination

    @extend_schema(responses={200: UserLiteSerializer(many=True)}, tags=["me"])
    def get(self, request: Request) -> Response:
        return paginated_response(
            self, request, selectors.blocked_list(user=current_user(request)), UserLiteSerializer
        )


class SecurityEventListApi(BaseApi):
    pagination_class = Pagination

    @extend_schema(responses={200: SecurityEventSerializer(many=True)}, tags=["me"])
    def get(self, request: Request) -> Response:
        events = SecurityEvent.objects.filter(user=current_user(request))
        return paginated_response(self, request, events, SecurityEventSerializer)


# --- Users: profiles, search, the social graph -----------------------------------------------


class UserSearchApi(BaseApi):
    pagination_class = Pagination
    throttle_scope = "search"

    @extend_schema(
        parameters=[OpenApiParameter("q", str, description="Start of a handle or display name.")],
        responses={200: UserLiteSerializer(many=True)},
        tags=["users"],
    )
    def get(self, request: Request) -> Response:
        users = selectors.user_search(
            viewer=current_user(request), query=request.query_params.get("q", "")
        )
        return paginated_response(self, request, users, UserLiteSerializer)


class ProfileApi(BaseApi):
    @extend_schema(responses={200: ProfileSerializer}, tags=["users"])
    def get(self, request: Request, handle: str) -> Response:
        profile = selectors.profile_get(viewer=current_user(request), handle=handle)
        return Response(ProfileSerializer(profile).data)


def _target(request: Request, handle: str) -> User:
    return selectors.user_get_visible(viewer=current_user(request), handle=handle)


class FollowApi(BaseApi):
    throttle_scope = "social"

    @extend_schema(request=None, responses={204: None}, tags=["users"])
    def post(self, request: Request, handle: str) -> Response:
        services.user_follow(follower=current_user(request), followee=_target(request, handle))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={204: None}, tags=["users"])
    def delete(self, request: Request, handle: str) -> Response:
        services.user_unfollow(follower=current_user(request), followee=_target(request, handle))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BlockApi(BaseApi):
    throttle_scope = "social"

    @extend_schema(request=None, responses={204: None}, tags=["users"])
    def post(self, request: Request, handle: str) -> Response:
        services.user_block(blocker=current_user(request), blocked=_target(request, handle))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={204: None}, tags=["users"])
    def delete(self, request: Request, handle: str) -> Response:
        services.user_unblock(blocker=current_user(request), blocked=_target(request, handle))
        return Response(status=status.HTTP_204_NO_CONTENT)


class MuteApi(BaseApi):
    throttle_scope = "social"

    @extend_schema(request=None, responses={204: None}, tags=["users"])
    def post(self, request: Request, handle: str) -> Response:
        services.user_mute(muter=current_user(request), muted=_target(request, handle))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={204: None}, tags=["users"])
    def delete(self, request: Request, handle: str) -> Response:
        services.user_unmute(muter=current_user(request), muted=_target(request, handle))
        return Response(status=status.HTTP_204_NO_CONTENT)


class FollowersApi(BaseApi):
    pagination_class = Pagination

    @extend_schema(responses={200: UserLiteSerializer(many=True)}, tags=["users"])
    def get(self, request: Request, handle: str) -> Response:
        return paginated_response(
            self,
            request,
            selectors.followers_list(user=_target(request, handle)),
            UserLiteSerializer,
        )


class FollowingApi(BaseApi):
    pagination_class = Pagination

    @extend_schema(responses={200: UserLiteSerializer(many=True)}, tags=["users"])
    def get(self, request: Request, handle: str) -> Response:
        return paginated_response(
            self,
            request,
            selectors.following_list(user=_target(request, handle)),
            UserLiteSerializer,
        )


# --- Keys and devices ------------------------------------------------------------------------


class KeyDirectoryApi(BaseApi):
    """Everything a client needs to verify a user's devices itself (PROTOCOL.md section 6)."""

    throttle_scope = "key_directory"

    @extend_schema(responses={200: KeyDirectorySerializer}, tags=["keys"])
    def get(
        self, request: Request, handle: str | None = None, user_id: uuid.UUID | None = None
    ) -> Response:
        user = selectors.key_directory_get(
            viewer=current_user(request), handle=handle, user_id=user_id
        )
        return Response(KeyDirectorySerializer(user).data)


@SENSITIVE
class IdentityKeyApi(BaseApi):
    throttle_scope = "keys_write"

    class IdentityKeyInputSerializer(serializers.Serializer):
        aik_pub = B64uField(length=32)
        password = serializers.CharField(
            max_length=256,
            required=False,
            allow_blank=True,
            trim_whitespace=False,
            help_text="Needed to replace an existing identity key.",
        )

    class IdentityKeyOutputSerializer(serializers.Serializer):
        aik_pub = B64uField(source="public_key")
        valid_from = serializers.DateTimeField()

    @extend_schema(
        request=IdentityKeyInputSerializer,
        responses={200: IdentityKeyOutputSerializer},
        tags=["keys"],
    )
    def put(self, request: Request) -> Response:
        data = self.IdentityKeyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = services.identity_key_set(
            user=current_user(request),
            public_key=data.validated_data["aik_pub"],
            password=data.validated_data.get("password") or None,
        )
        return Response(self.IdentityKeyOutputSerializer(key).data)


class HistoryKeyApi(BaseApi):
    throttle_scope = "keys_write"

    class HistoryKeyInputSerializer(serializers.Serializer):
        hk_pub = B64uField(length=32)
        certificate = B64uField(length=64)

    @extend_schema(
        request=HistoryKeyInputSerializer, responses={200: HistoryKeySerializer}, tags=["keys"]
    )
    def put(self, request: Request) -> Response:
        data = self.HistoryKeyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = services.history_key_set(
            user=current_user(request),
            public_key=data.validated_data["hk_pub"],
            certificate=data.validated_data["certificate"],
        )
        return Response(HistoryKeySerializer(key).data)


class KeyBackupApi(BaseApi):
    throttle_scope = "keys_write"

    @extend_schema(responses={200: KeyBackupSerializer}, tags=["keys"])
    def get(self, request: Request) -> Response:
        backup = KeyBackup.objects.filter(user=current_user(request)).first()
        if backup is None:
            raise NotFound("backup_not_found", "No backup stored.")
        return Response(KeyBackupSerializer(backup).data)

    @extend_schema(request=KeyBackupSerializer, responses={200: KeyBackupSerializer}, tags=["keys"])
    def put(self, request: Request) -> Response:
        data = KeyBackupSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        backup = services.key_backup_put(
            user=current_user(request),
            nonce=values["nonce"],
            ciphertext=values["ciphertext"],
            kdf=values["kdf"],
            salt=values["salt"],
            opslimit=values["opslimit"],
            memlimit=values["memlimit"],
        )
        return Response(KeyBackupSerializer(backup).data)


class DeviceListApi(BaseApi):
    pagination_class = Pagination
    throttle_scope = "keys_write"

    class DeviceListInputSerializer(serializers.Serializer):
        device_id = serializers.UUIDField()
        name = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
        sign_pub = B64uField(length=32)
        box_pub = B64uField(length=32)
        created_at = serializers.IntegerField(min_value=0, max_value=2**53)
        certificate = B64uField(length=64)

    @extend_schema(responses={200: DeviceSerializer(many=True)}, tags=["devices"])
    def get(self, request: Request) -> Response:
        return paginated_response(
            self, request, selectors.devices_of_user(user=current_user(request)), DeviceSerializer
        )

    @extend_schema(
        request=DeviceListInputSerializer, responses={201: DeviceSerializer}, tags=["devices"]
    )
    def post(self, request: Request) -> Response:
        data = self.DeviceListInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        device = services.device_register(
            user=current_user(request),
            device_id=values["device_id"],
            name=values["name"],
            sign_public_key=values["sign_pub"],
            box_public_key=values["box_pub"],
            created_at=values["created_at"],
            certificate=values["certificate"],
            token=request_token(request),
        )
        return Response(DeviceSerializer(device).data, status=status.HTTP_201_CREATED)


class DeviceRevokeApi(BaseApi):
    @extend_schema(responses={200: DeviceSerializer}, tags=["devices"])
    def delete(self, request: Request, device_id: uuid.UUID) -> Response:
        device = services.device_revoke(user=current_user(request), device_id=device_id)
        return Response(DeviceSerializer(device).data)


# --- Linking a new device (docs/keys-and-devices.md, "Linking a device") ---------------------

LINK_DEVICE_PARAMETER = OpenApiParameter(
    "device", OpenApiTypes.UUID, required=False,
    description="Your existing device; implied by a token bound to a device.",
)  # fmt: skip


def _session_key(request: Request) -> str | None:
    """The website session's key, when the request is not made with a token."""
    if request_token(request) is not None:
        return None
    key: str | None = request.session.session_key
    return key


class _DeviceLinkApi(BaseApi):
    """Both devices poll a link while the user compares codes: reads have their own,
    larger allowance, so polling never uses up the one the key writes need."""

    @property
    def throttle_scope(self) -> str:
        return "device_link_read" if self.request.method == "GET" else "keys_write"


class DeviceLinkListApi(_DeviceLinkApi):
    pagination_class = Pagination

    class DeviceLinkCreateInputSerializer(serializers.Serializer):
        commitment = B64uField(
            length=32, help_text="mac(key = new_nonce, data = parley/link/v1 signing input)."
        )

    @extend_schema(
        parameters=[LINK_DEVICE_PARAMETER],
        responses={200: DeviceLinkSerializer(many=True)},
        tags=["devices"],
    )
    def get(self, request: Request) -> Response:
        """Links in progress, for an existing device to answer."""
        user = current_user(request)
        selectors.device_for_caller(
            user=user, token=request_token(request), named=request.query_params.get("device")
        )
        return paginated_response(
            self, request, selectors.device_links_open(user=user), DeviceLinkSerializer
        )

    @extend_schema(
        request=DeviceLinkCreateInputSerializer,
        responses={201: DeviceLinkSerializer},
        tags=["devices"],
    )
    def post(self, request: Request) -> Response:
        """Step 1, on the new device: commit to its keys."""
        data = self.DeviceLinkCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        link = services.device_link_request(
            user=current_user(request),
            commitment=data.validated_data["commitment"],
            token=request_token(request),
            session_key=_session_key(request),
        )
        return Response(DeviceLinkSerializer(link).data, status=status.HTTP_201_CREATED)


class DeviceLinkApi(_DeviceLinkApi):
    @extend_schema(
        parameters=[LINK_DEVICE_PARAMETER], responses={200: DeviceLinkSerializer}, tags=["devices"]
    )
    def get(self, request: Request, link_id: uuid.UUID) -> Response:
        """Poll a link: the new device that asked for it, or an existing device."""
        link = selectors.device_link_get(
            user=current_user(request),
            link_id=link_id,
            token=request_token(request),
            session_key=_session_key(request),
            named_device=request.query_params.get("device"),
        )
        return Response(DeviceLinkSerializer(link).data)

    @extend_schema(responses={204: None}, tags=["devices"])
    def delete(self, request: Request, link_id: uuid.UUID) -> Response:
        """Cancel, on the new device."""
        services.device_link_cancel(
            user=current_user(request),
            link_id=link_id,
            token=request_token(request),
            session_key=_session_key(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeviceLinkChallengeApi(BaseApi):
    throttle_scope = "keys_write"

    class DeviceLinkChallengeInputSerializer(serializers.Serializer):
        device = serializers.UUIDField(
            required=False, help_text="Your existing device; implied by a bound token."
        )
        nonce = B64uField(length=32, help_text="32 random bytes, drawn after seeing the link.")

    @extend_schema(
        request=DeviceLinkChallengeInputSerializer,
        responses={200: DeviceLinkSerializer},
        tags=["devices"],
    )
    def post(self, request: Request, link_id: uuid.UUID) -> Response:
        """Step 2, on an existing device: answer a pending link with a nonce."""
        data = self.DeviceLinkChallengeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user, token = current_user(request), request_token(request)
        link = services.device_link_challenge(
            user=user,
            link_id=link_id,
            device=selectors.device_for_caller(
                user=user, token=token, named=data.validated_data.get("device")
            ),
            nonce=data.validated_data["nonce"],
            token=token,
            session_key=_session_key(request),
        )
        return Response(DeviceLinkSerializer(link).data)


class DeviceLinkRevealApi(BaseApi):
    throttle_scope = "keys_write"

    class DeviceLinkRevealInputSerializer(serializers.Serializer):
        device_id = serializers.UUIDField()
        name = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
        sign_pub = B64uField(length=32)
        box_pub = B64uField(length=32)
        created_at = serializers.IntegerField(min_value=0, max_value=2**53)
        nonce = B64uField(length=32, help_text="The new_nonce the commitment was made with.")

    @extend_schema(
        request=DeviceLinkRevealInputSerializer,
        responses={200: DeviceLinkSerializer},
        tags=["devices"],
    )
    def post(self, request: Request, link_id: uuid.UUID) -> Response:
        """Step 3, on the new device: reveal the committed keys and nonce."""
        data = self.DeviceLinkRevealInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        link = services.device_link_reveal(
            user=current_user(request),
            link_id=link_id,
            token=request_token(request),
            session_key=_session_key(request),
            device_id=values["device_id"],
            name=values["name"],
            sign_public_key=values["sign_pub"],
            box_public_key=values["box_pub"],
            created_at=values["created_at"],
            nonce=values["nonce"],
        )
        return Response(DeviceLinkSerializer(link).data)


class DeviceLinkApproveApi(BaseApi):
    throttle_scope = "keys_write"

    class DeviceLinkApproveInputSerializer(serializers.Serializer):
        device = serializers.UUIDField(
            required=False, help_text="Your existing device; implied by a bound token."
        )
        certificate = B64uField(length=64, help_text="The AIK's certificate of the new device.")
        # A sealed box adds 48 bytes to a non-empty plaintext.
        bundle = B64uField(min_length=49, max_length=services.LINK_BUNDLE_MAX_BYTES)

    @extend_schema(
        request=DeviceLinkApproveInputSerializer,
        responses={200: DeviceLinkSerializer},
        tags=["devices"],
    )
    def post(self, request: Request, link_id: uuid.UUID) -> Response:
        """Step 5, on the existing device that showed the code: certify the new device."""
        data = self.DeviceLinkApproveInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user, token = current_user(request), request_token(request)
        link = services.device_link_approve(
            user=user,
            link_id=link_id,
            device=selectors.device_for_caller(
                user=user, token=token, named=data.validated_data.get("device")
            ),
            certificate=data.validated_data["certificate"],
            bundle=data.validated_data["bundle"],
            token=token,
            session_key=_session_key(request),
        )
        return Response(DeviceLinkSerializer(link).data)


class DeviceLinkDenyApi(BaseApi):
    throttle_scope = "keys_write"

    class DeviceLinkDenyInputSerializer(serializers.Serializer):
        device = serializers.UUIDField(
            required=False, help_text="Your existing device; implied by a bound token."
        )

    @extend_schema(
        request=DeviceLinkDenyInputSerializer,
        responses={200: DeviceLinkSerializer},
        tags=["devices"],
    )
    def post(self, request: Request, link_id: uuid.UUID) -> Response:
        """On an existing device: refuse the link."""
        data = self.DeviceLinkDenyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user, token = current_user(request), request_token(request)
        link = services.device_link_deny(
            user=user,
            link_id=link_id,
            device=selectors.device_for_caller(
                user=user, token=token, named=data.validated_data.get("device")
            ),
            token=token,
            session_key=_session_key(request),
        )
        return Response(DeviceLinkSerializer(link).data)
