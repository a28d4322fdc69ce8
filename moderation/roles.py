"""The panel's roles: groups whose permissions are defined here and nowhere else.

- **Moderators** work the report queue: they see reports and the metadata of users,
  and can dismiss, warn, suspend and remove a profile field.
- **Staff admins** do all that, and also ban, lift suspensions and bans, appoint and
  remove moderators, see e-mail addresses and the devices, tokens and deliveries pages.
- A **superuser** is for setup only: it appoints the first staff admins.

``roles_sync`` runs after every migrate and sets each group's permissions to exactly
this list, so a permission added by hand in the database does not survive.
"""

from django.contrib.auth.models import Group, Permission
from django.db import transaction

MODERATORS = "Moderators"
STAFF_ADMINS = "Staff admins"

_MODERATOR_PERMISSIONS = (
    "messaging.view_report",
    "accounts.view_user",
    "moderation.view_moderationaction",
    "moderation.handle_report",
    "moderation.warn_user",
    "moderation.suspend_user",
    "moderation.remove_profile_field",
    "moderation.view_dashboard",
)

ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    MODERATORS: _MODERATOR_PERMISSIONS,
    STAFF_ADMINS: (
        *_MODERATOR_PERMISSIONS,
        "moderation.ban_user",
        "moderation.lift_restriction",
        "moderation.manage_roles",
        "moderation.view_email",
        "accounts.view_device",
        "accounts.view_apitoken",
        "accounts.view_securityevent",
        "calls.view_call",
        "notifications.view_delivery",
    ),
}

# Who may hand out a role: moderators are appointed by staff admins, staff admins only
# by a superuser.
ROLE_GRANTED_BY = {MODERATORS: "moderation.manage_roles", STAFF_ADMINS: None}


def _permissions(names: tuple[str, ...], using: str) -> list[Permission]:
    found = []
    for name in names:
        app_label, codename = name.split(".")
        permission = (
            Permission.objects.using(using)
            .filter(content_type__app_label=app_label, codename=codename)
            .first()
        )
        if permission is None:
            # Permissions are made by post_migrate too; the order of the handlers is
            # the order of INSTALLED_APPS, and moderation comes after the apps it names.
            raise LookupError(f"Permission {name} does not exist.")
        found.append(permission)
    return found


@transaction.atomic
def roles_sync(*, using: str = "default") -> None:
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role)
        group.permissions.set(_permissions(names, using))
