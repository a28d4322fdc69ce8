from typing import Any

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import post_migrate


def _sync_roles(**kwargs: Any) -> None:
    from moderation.roles import roles_sync

    roles_sync(using=kwargs.get("using", "default"))


class ModerationConfig(AppConfig):
    default = True
    name = "moderation"
    verbose_name = "Moderation"

    def ready(self) -> None:
        # After every migrate (and every test flush), the role groups hold exactly the
        # permissions the code gives them: a role is defined in code, not edited by hand.
        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="moderation.roles_sync")


class PanelAdminConfig(admin_apps.AdminConfig):
    """The Django admin, as Parley's moderation panel (with its dashboard)."""

    default = False  # named in INSTALLED_APPS; "moderation" alone is ModerationConfig
    default_site = "moderation.panel.PanelSite"
