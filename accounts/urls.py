"""The accounts pages of the website (the API is in accounts.api_urls)."""

from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("signup", views.signup, name="signup"),
    path("login", views.login_view, name="login"),
    path("logout", views.logout_view, name="logout"),
    path("search", views.search, name="search"),
    path("settings/profile", views.settings_profile, name="settings-profile"),
    path("settings/privacy", views.settings_privacy, name="settings-privacy"),
    path("settings/password", views.settings_password, name="settings-password"),
    path("settings/devices", views.settings_devices, name="settings-devices"),
    path("settings/keys", views.settings_keys, name="settings-keys"),
    path("settings/safety", views.settings_safety, name="settings-safety"),
    path("setup", views.keys_setup, name="setup"),
    path("settings/devices/<uuid:device_id>/remove", views.device_revoke, name="device-revoke"),
    path("@<str:handle>", views.profile, name="profile"),
    *(
        path(f"@<str:handle>/{action}", views.social_action, {"action": action}, name=action)
        for action in views.SOCIAL_ACTIONS
    ),
]
