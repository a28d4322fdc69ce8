"""Every write of the moderation panel. docs/moderation.md.

Each function is one thing a moderator does. It checks the moderator's permission
itself (whichever face called it), locks what it changes, does the action through
the accounts services, and writes one audit log row in the same transaction.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.models import User
from common.errors import ApplicationError, Conflict, NotFound, PermissionDenied
from messaging.models import Report
from moderation.models import AccountWarning, ModerationAction
from moderation.roles import ROLE_GRANTED_BY, ROLE_PERMISSIONS
from moderation.selectors import warning_fields
from realtime.publish import publish_on_commit

Kind = ModerationAction.Kind

# What each action needs. Lifting and banning are for staff admins (moderation.roles).
ACTION_PERMISSIONS: dict[str, str] = {
    Kind.ASSIGN: "moderation.handle_report",
    Kind.DISMISS: "moderation.handle_report",
    Kind.WARN: "moderation.warn_user",
    Kind.SUSPEND: "moderation.suspend_user",
    Kind.BAN: "moderation.ban_user",
    Kind.LIFT: "moderation.lift_restriction",
    Kind.REMOVE_FIELD: "moderation.remove_profile_field",
}
# The actions that resolve a report (besides dismissing it); lifting resolves nothing.
RESOLVING_ACTIONS = (Kind.DISMISS, Kind.WARN, Kind.SUSPEND, Kind.BAN, Kind.REMOVE_FIELD)
USER_ACTIONS = (Kind.WARN, Kind.SUSPEND, Kind.BAN, Kind.LIFT, Kind.REMOVE_FIELD)
MAX_SUSPENSION = timedelta(days=366)


@dataclass(frozen=True)
class ActionInput:
    """What a moderator filled in for an action against a user."""

    kind: str
    reason: str
    until: datetime | None = None
    field: str = ""
    note: str = ""


def moderator_can(moderator: User, kind: str) -> bool:
    permission = ACTION_PERMISSIONS.get(kind)
    return bool(
        permission and moderator.is_active and moderator.is_staff and moderator.has_perm(permission)
    )


def _require(moderator: User, kind: str) -> None:
    if not moderator_can(moderator, kind):
        raise PermissionDenied("not_allowed", "Your role does not allow that action.")


def _check_reach(moderator: User, target: User) -> None:
    """No one acts on themselves; only staff admins act on staff; no one on a superuser."""
    if target.pk == moderator.pk:
        raise PermissionDenied("self_target", "You cannot act on your own account.")
    if target.is_superuser:
        raise PermissionDenied("not_allowed", "Superusers are not moderated from the panel.")
    if target.is_staff and not moderator.has_perm("moderation.manage_roles"):
        raise PermissionDenied("not_allowed", "Only staff admins act on staff accounts.")


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise ApplicationError("required", "Say why: the audit log keeps it.", field="reason")
    if len(reason) > 2000:
        raise ApplicationError("too_long", "At most 2000 characters.", field="reason")
    return reason


def _audit(
    *,
    moderator: User | None,
    kind: str,
    reason: str,
    target: User | None = None,
    report: Report | None = None,
    until: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> ModerationAction:
    return ModerationAction.objects.create(
        moderator=moderator,
        moderator_handle=moderator.handle if moderator else "setup",
        target=target,
        target_handle=target.handle if target else "",
        report=report,
        kind=kind,
        reason=reason,
        until=until,
        detail=detail or {},
    )


def _locked_user(user_id: uuid.UUID) -> User:
    user = User.objects.select_for_update().filter(pk=user_id).first()
    if user is None:
        raise NotFound("user_not_found", "No such user.", field="user")
    return user


def _act(
    *, moderator: User, target: User, action: ActionInput, report: Report | None
) -> ModerationAction:
    """Do one action against a locked ``target`` and audit it."""
    reason = _reason(action.reason)
    _require(moderator, action.kind)
    _check_reach(moderator, target)
    if action.kind == Kind.WARN:
        note = action.note.strip()
        if not note:
            raise ApplicationError("required", "Write what the user will read.", field="note")
        entry = _audit(
            moderator=moderator, kind=Kind.WARN, reason=reason, target=target, report=report,
            detail={"note": note},
        )  # fmt: skip
        warning = AccountWarning.objects.create(
            user=target, action=entry, reason=report.reason if report else "", text=note[:2000]
        )
        publish_on_commit(
            user_ids=[target.pk],
            event={"type": "account.warning", "warning": warning_fields(warning)},
        )
        return entry
    if action.kind == Kind.SUSPEND:
        now = timezone.now()
        if action.until is None:
            raise ApplicationError("required", "Choose when the suspension ends.", field="until")
        if action.until <= now:
            raise ApplicationError("invalid", "The end must be in the future.", field="until")
        if action.until > now + MAX_SUSPENSION:
            raise ApplicationError(
                "invalid", "At most a year; a longer one is a ban.", field="until"
            )
        if not target.is_active:
            raise Conflict("already_banned", "This account is banned.", field="user")
        account_services.user_suspend(user=target, until=action.until)
        return _audit(
            moderator=moderator, kind=Kind.SUSPEND, reason=reason, target=target, report=report,
            until=action.until,
        )  # fmt: skip
    if action.kind == Kind.BAN:
        if not target.is_active:
            raise Conflict("already_banned", "This account is already banned.", field="user")
        account_services.user_ban(user=target)
        return _audit(
            moderator=moderator, kind=Kind.BAN, reason=reason, target=target, report=report
        )
    if action.kind == Kind.LIFT:
        if target.is_active and not target.is_suspended:
            raise Conflict(
                "not_restricted", "This account is neither suspended nor banned.", field="user"
            )
        was = "ban" if not target.is_active else "suspension"
        account_services.user_lift_restriction(user=target)
        return _audit(
            moderator=moderator, kind=Kind.LIFT, reason=reason, target=target, report=report,
            detail={"lifted": was},
        )  # fmt: skip
    if action.kind == Kind.REMOVE_FIELD:
        if action.field not in account_services.REMOVABLE_PROFILE_FIELDS:
            raise ApplicationError(
                "invalid_choice", "Choose the bio, the avatar or the display name.", field="field"
            )
        previous = account_services.user_clear_profile_field(user=target, field=action.field)
        if not previous:
            raise Conflict("already_empty", "That field is already empty.", field="field")
        return _audit(
            moderator=moderator, kind=Kind.REMOVE_FIELD, reason=reason, target=target,
            report=report, detail={"field": action.field, "previous": previous},
        )  # fmt: skip
    raise ApplicationError("invalid_choice", "Unknown action.", field="action")


@transaction.atomic
def user_moderate(*, moderator: User, user_id: uuid.UUID, action: ActionInput) -> ModerationAction:
    """An action from a user's page, outside any report. Locks the user row."""
    if action.kind not in USER_ACTIONS:
        raise ApplicationError("invalid_choice", "Unknown action.", field="action")
    _require(moderator, action.kind)
    return _act(moderator=moderator, target=_locked_user(user_id), action=action, report=None)


def _locked_open_report(report_id: uuid.UUID) -> Report:
    # No one handles a report against themselves, and only staff admins those against
    # staff: callers check ``_check_reach`` on the reported user.
    report = Report.objects.select_for_update().filter(pk=report_id).first()
    if report is None:
        raise NotFound("report_not_found", "No such report.", field="report")
    if report.status != Report.Status.OPEN:
        raise Conflict("already_resolved", "This report is already resolved.", field="report")
    return report


@transaction.atomic
def report_assign(*, moderator: User, report_id: uuid.UUID) -> Report:
    """Take a report: it shows as assigned to you in the queue. Taking one assigned to
    someone else is allowed (they may be away) and audited like any other."""
    _require(moderator, Kind.ASSIGN)
    report = _locked_open_report(report_id)
    if report.reported_user is not None:
        _check_reach(moderator, report.reported_user)
    if report.assignee_id == moderator.pk:
        return report
    previous = report.assignee.handle if report.assignee else ""
    report.assignee = moderator
    report.assigned_at = timezone.now()
    report.save(update_fields=["assignee", "assigned_at"])
    _audit(
        moderator=moderator, kind=Kind.ASSIGN, reason="Assigned to self.",
        target=None, report=report, detail={"previous_assignee": previous} if previous else {},
    )  # fmt: skip
    return report


@transaction.atomic
def report_resolve(*, moderator: User, report_id: uuid.UUID, action: ActionInput) -> Report:
    """Resolve a report with an action: dismiss, or act against the reported user.
    Locks the report, then the user (the order every caller uses)."""
    if action.kind not in RESOLVING_ACTIONS:
        raise ApplicationError("invalid_choice", "Unknown action.", field="action")
    _require(moderator, Kind.DISMISS)
    _require(moderator, action.kind)
    report = _locked_open_report(report_id)
    target = _locked_user(report.reported_user_id) if report.reported_user_id else None
    if target is not None:
        _check_reach(moderator, target)
    if action.kind == Kind.DISMISS:
        _audit(
            moderator=moderator, kind=Kind.DISMISS, reason=_reason(action.reason),
            target=target, report=report,
        )  # fmt: skip
    elif target is None:
        raise Conflict("user_gone", "The reported account no longer exists.", field="report")
    else:
        _act(moderator=moderator, target=target, action=action, report=report)
    report.status = Report.Status.RESOLVED
    report.resolved_by = moderator
    report.resolved_at = timezone.now()
    report.resolution = action.kind
    if report.assignee_id is None:
        report.assignee, report.assigned_at = moderator, report.resolved_at
    report.save(
        update_fields=["status", "resolved_by", "resolved_at", "resolution", "assignee",
                       "assigned_at"]
    )  # fmt: skip
    return report


# --- Roles -----------------------------------------------------------------------------------


def _can_grant(granter: User | None, role: str) -> bool:
    if granter is None:  # the setup command, run by the server's operator
        return True
    needed = ROLE_GRANTED_BY[role]
    return granter.is_active and (
        granter.is_superuser or (needed is not None and granter.has_perm(needed))
    )


@transaction.atomic
def role_grant(*, granter: User | None, user_id: uuid.UUID, role: str, reason: str) -> User:
    """Give ``role`` (a group of moderation.roles) and staff status. ``granter`` None is
    the setup command. Audited."""
    if role not in ROLE_PERMISSIONS:
        raise ApplicationError("invalid_choice", "Unknown role.", field="role")
    if not _can_grant(granter, role):
        raise PermissionDenied("not_allowed", "Your role does not allow giving that role.")
    reason = _reason(reason)
    user = _locked_user(user_id)
    if granter is not None and user.pk == granter.pk:
        raise PermissionDenied("self_target", "You cannot change your own roles.")
    if not user.is_active or user.is_suspended:
        raise Conflict("restricted", "A suspended or banned account cannot be staff.", field="user")
    group = Group.objects.get(name=role)
    if user.groups.filter(pk=group.pk).exists():
        raise Conflict("already_has_role", "They already have that role.", field="role")
    user.groups.add(group)
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    _audit(
        moderator=granter, kind=Kind.GRANT_ROLE, reason=reason, target=user, detail={"role": role}
    )
    return user


@transaction.atomic
def role_revoke(*, granter: User | None, user_id: uuid.UUID, role: str, reason: str) -> User:
    """Take ``role`` away; staff status goes with the last role (not from a superuser)."""
    if role not in ROLE_PERMISSIONS:
        raise ApplicationError("invalid_choice", "Unknown role.", field="role")
    if not _can_grant(granter, role):
        raise PermissionDenied("not_allowed", "Your role does not allow taking that role.")
    reason = _reason(reason)
    user = _locked_user(user_id)
    if granter is not None and user.pk == granter.pk:
        raise PermissionDenied("self_target", "You cannot change your own roles.")
    group = Group.objects.get(name=role)
    if not user.groups.filter(pk=group.pk).exists():
        raise Conflict("no_such_role", "They do not have that role.", field="role")
    user.groups.remove(group)
    if not user.is_superuser and not user.groups.filter(name__in=ROLE_PERMISSIONS).exists():
        user.is_staff = False
        user.save(update_fields=["is_staff"])
    _audit(
        moderator=granter, kind=Kind.REVOKE_ROLE, reason=reason, target=user, detail={"role": role}
    )
    return user


# --- Warnings, as their owner sees them ------------------------------------------------------


@transaction.atomic
def warning_acknowledge(*, user: User, warning_id: int) -> AccountWarning:
    warning = AccountWarning.objects.select_for_update().filter(pk=warning_id, user=user).first()
    if warning is None:
        raise NotFound("warning_not_found", "No such warning.", field="warning_id")
    if warning.acknowledged_at is None:
        warning.acknowledged_at = timezone.now()
        warning.save(update_fields=["acknowledged_at"])
    return warning
