from django.urls import path

from accounts import api

urlpatterns = [
    path("auth/signup", api.SignUpApi.as_view(), name="signup"),
    path("auth/login", api.LoginApi.as_view(), name="login"),
    path("auth/logout", api.LogoutApi.as_view(), name="logout"),
    path("auth/password", api.PasswordChangeApi.as_view(), name="password"),
    path("auth/tokens", api.TokenListApi.as_view(), name="tokens"),
    path("auth/tokens/<int:token_id>", api.TokenRevokeApi.as_view(), name="token"),
    path("me", api.MeApi.as_view(), name="me"),
    path("me/avatar", api.AvatarApi.as_view(), name="avatar"),
    path("me/blocks", api.BlockListApi.as_view(), name="blocks"),
    path("me/security-events", api.SecurityEventListApi.as_view(), name="security-events"),
    path("users", api.UserSearchApi.as_view(), name="user-search"),
    path("users/<str:handle>", api.ProfileApi.as_view(), name="profile"),
    path("users/<str:handle>/follow", api.FollowApi.as_view(), name="follow"),
    path("users/<str:handle>/block", api.BlockApi.as_view(), name="block"),
    path("users/<str:handle>/mute", api.MuteApi.as_view(), name="mute"),
    path("users/<str:handle>/followers", api.FollowersApi.as_view(), name="followers"),
    path("users/<str:handle>/following", api.FollowingApi.as_view(), name="following"),
    path("users/<str:handle>/keys", api.KeyDirectoryApi.as_view(), name="key-directory"),
    path("keys/<uuid:user_id>", api.KeyDirectoryApi.as_view(), name="key-directory-by-id"),
    path("keys/identity", api.IdentityKeyApi.as_view(), name="identity-key"),
    path("keys/history", api.HistoryKeyApi.as_view(), name="history-key"),
    path("keys/backup", api.KeyBackupApi.as_view(), name="key-backup"),
    path("devices", api.DeviceListApi.as_view(), name="devices"),
    path("devices/<uuid:device_id>", api.DeviceRevokeApi.as_view(), name="device"),
    path("devices/links", api.DeviceLinkListApi.as_view(), name="device-links"),
    path("devices/links/<uuid:link_id>", api.DeviceLinkApi.as_view(), name="device-link"),
    path(
        "devices/links/<uuid:link_id>/challenge",
        api.DeviceLinkChallengeApi.as_view(),
        name="device-link-challenge",
    ),
    path(
        "devices/links/<uuid:link_id>/reveal",
        api.DeviceLinkRevealApi.as_view(),
        name="device-link-reveal",
    ),
    path(
        "devices/links/<uuid:link_id>/approve",
        api.DeviceLinkApproveApi.as_view(),
        name="device-link-approve",
    ),
    path(
        "devices/links/<uuid:link_id>/deny",
        api.DeviceLinkDenyApi.as_view(),
        name="device-link-deny",
    ),
]
