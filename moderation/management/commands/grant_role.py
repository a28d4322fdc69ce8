"""Setup: give (or take) a panel role from the command line, audited as "setup".

manage.py grant_role alice "Staff admins" --reason "first admin"
manage.py grant_role bob Moderators --revoke --reason "left the team"
"""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.selectors import user_get_by_login
from common.errors import ApplicationError
from moderation import services
from moderation.roles import ROLE_PERMISSIONS


class Command(BaseCommand):
    help = "Give or take a moderation panel role (Moderators, Staff admins)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("handle")
        parser.add_argument("role", choices=list(ROLE_PERMISSIONS))
        parser.add_argument("--reason", required=True, help="Kept in the audit log.")
        parser.add_argument("--revoke", action="store_true", help="Take the role away.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = user_get_by_login(login=options["handle"])
        if user is None:
            raise CommandError(f"No user {options['handle']}.")
        change = services.role_revoke if options["revoke"] else services.role_grant
        try:
            change(granter=None, user_id=user.pk, role=options["role"], reason=options["reason"])
        except ApplicationError as error:
            raise CommandError(error.message) from error
        done = "no longer has" if options["revoke"] else "now has"
        self.stdout.write(f"@{user.handle} {done} the role {options['role']}.")
