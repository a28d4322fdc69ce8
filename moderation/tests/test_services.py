"""The moderation services and what the panel shows: verified content only, the
append-only audit log, actions and their effects, roles."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.db.models import ProtectedError
from django.test import Client
from django.utils import timezone

from accounts.models import ApiToken, User
from accounts.tests.factories import make_user
from common.encoding import b64u_encode
from common.errors import ApplicationError, Conflict, PermissionDenied
from messaging.models import Message, Report
from messaging.services import report_profile
from moderation import services
from moderation.models import AccountWarning, AuditLogIsAppendOnly, ModerationAction
from moderation.roles import MODERATORS, ROLE_PERMISSIONS, STAFF_ADMINS, roles_sync
from moderation.services import ActionInput
from moderation.tests.support import panel, reported_conversation, staff

pytestmark = pytest.mark.django_db

Kind = ModerationAction.Kind


def _page(client: Client, report: Report) -> str:
    response = client.get(f"/admin/messaging/report/{report.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


# --- What the report page shows --------------------------------------------------------------


def test_a_valid_proof_shows_exactly_the_reported_message_and_nothing_else() -> None:
    texts = [f"first MARK-{uuid.uuid4().hex}", f"second MARK-{uuid.uuid4().hex}",
             f"third MARK-{uuid.uuid4().hex}"]  # fmt: skip
    _alice, _bob, report = reported_conversation(texts, reported=1)
    page = _page(panel(staff(MODERATORS)), report)
    assert texts[1] in page
    assert texts[0] not in page and texts[2] not in page
    assert "Verified: the franking proof shows" in page
    # No ciphertext, nonce, tag, stamp or key of any message reaches the page.
    for message in Message.objects.all():
        for secret in (message.ciphertext, message.nonce, message.franking_tag,
                       message.franking_stamp):  # fmt: skip
            assert b64u_encode(bytes(secret)) not in page
            assert bytes(secret).hex() not in page
        for wrap in message.keys.values():
            assert wrap not in page
    assert b64u_encode(bytes(report.franking_key)) not in page


def test_a_forged_proof_is_refused_and_stores_nothing() -> None:
    _alice, bob, report = reported_conversation(["real words"], reported=0)
    message = Message.objects.get()
    forged = b'{"type":"text","body":"words she never wrote"}'
    response = bob.phones[0].api.post(
        "/api/v1/reports",
        {"message_id": str(message.pk), "payload": b64u_encode(forged),
         "franking_key": b64u_encode(bytes(report.franking_key)), "reason": "harassment"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_franking_proof"
    assert Report.objects.count() == 1
    assert not Report.objects.filter(content__contains="never wrote").exists()


def test_a_report_row_changed_in_the_database_shows_no_content() -> None:
    """The page checks the proof again: a row edited to put words in someone's mouth
    (or a key that no longer matches) shows nothing."""
    _alice, _bob, report = reported_conversation(["what was really said"], reported=0)
    Report.objects.filter(pk=report.pk).update(content="words never said FORGED")
    page = _page(panel(staff(MODERATORS)), report)
    assert "FORGED" not in page and "what was really said" not in page
    assert "Not shown: the franking proof does not hold" in page


def test_a_profile_report_shows_the_profile_as_it_was() -> None:
    reporter, reported = make_user(), make_user()
    reported.bio = "buy followers at SPAMSITE"
    reported.save()
    report = report_profile(reporter=reporter, reported=reported, reason="spam", comment="bot")
    reported.bio = "innocent now"
    reported.save()
    page = _page(panel(staff(MODERATORS)), report)
    assert "buy followers at SPAMSITE" in page
    assert "Profile (nothing to verify)" not in page  # the filter is on the queue only


# --- Actions ---------------------------------------------------------------------------------


def test_resolving_with_a_suspension_ends_everything_and_is_audited() -> None:
    alice, _bob, report = reported_conversation(["threat"], reported=0)
    moderator = staff(MODERATORS)
    website = Client()
    website.force_login(alice.user)
    until = timezone.now() + timedelta(days=2)
    services.report_resolve(
        moderator=moderator,
        report_id=report.pk,
        action=ActionInput(kind=Kind.SUSPEND, reason="credible threat", until=until),
    )
    alice.user.refresh_from_db()
    report.refresh_from_db()
    assert alice.user.is_suspended and alice.user.suspended_until == until
    assert report.status == Report.Status.RESOLVED and report.resolution == "suspend"
    assert report.resolved_by == moderator and report.assignee == moderator
    assert not ApiToken.objects.filter(user=alice.user, revoked_at__isnull=True).exists()
    assert website.get("/settings/profile").status_code == 302  # the session ended
    (entry,) = ModerationAction.objects.filter(kind=Kind.SUSPEND)
    assert (entry.moderator, entry.target, entry.report, entry.until) == (
        moderator,
        alice.user,
        Report.objects.get(pk=report.pk),
        until,
    )
    assert entry.reason == "credible threat"
    with pytest.raises(Conflict):
        services.report_resolve(
            moderator=moderator,
            report_id=report.pk,
            action=ActionInput(kind=Kind.DISMISS, reason="again"),
        )
    assert ModerationAction.objects.filter(report=report).count() == 1


def test_a_warning_reaches_its_user_and_removing_a_field_keeps_what_it_held() -> None:
    alice, _bob, _report = reported_conversation(["rude"], reported=0)
    alice.user.bio = "my rude bio"
    alice.user.save()
    moderator = staff(MODERATORS)
    services.user_moderate(
        moderator=moderator, user_id=alice.user.pk,
        action=ActionInput(kind=Kind.WARN, reason="first offence", note="Be civil, please."),
    )  # fmt: skip
    (warning,) = AccountWarning.objects.filter(user=alice.user)
    assert warning.text == "Be civil, please." and warning.acknowledged_at is None
    services.user_moderate(
        moderator=moderator, user_id=alice.user.pk,
        action=ActionInput(kind=Kind.REMOVE_FIELD, reason="slur in bio", field="bio"),
    )  # fmt: skip
    alice.user.refresh_from_db()
    assert alice.user.bio == ""
    entry = ModerationAction.objects.get(kind=Kind.REMOVE_FIELD)
    assert entry.detail == {"field": "bio", "previous": "my rude bio"}
    with pytest.raises(Conflict):  # nothing left to remove
        services.user_moderate(
            moderator=moderator, user_id=alice.user.pk,
            action=ActionInput(kind=Kind.REMOVE_FIELD, reason="again", field="bio"),
        )  # fmt: skip


@pytest.mark.parametrize(
    ("action", "field"),
    [
        (ActionInput(kind=Kind.SUSPEND, reason=""), "reason"),
        (ActionInput(kind=Kind.SUSPEND, reason="x"), "until"),
        (ActionInput(kind=Kind.SUSPEND, reason="x", until=timezone.now()), "until"),
        (ActionInput(kind=Kind.WARN, reason="x", note="  "), "note"),
        (ActionInput(kind=Kind.REMOVE_FIELD, reason="x", field="email"), "field"),
        (ActionInput(kind="delete_account", reason="x"), "action"),
    ],
)
def test_bad_action_input_names_the_field_and_changes_nothing(
    action: ActionInput, field: str
) -> None:
    target = make_user()
    with pytest.raises(ApplicationError) as refused:
        services.user_moderate(moderator=staff(MODERATORS), user_id=target.pk, action=action)
    assert refused.value.field == field
    target.refresh_from_db()
    assert target.is_active and target.suspended_until is None
    assert not ModerationAction.objects.exclude(kind=Kind.GRANT_ROLE).exists()
    assert not AccountWarning.objects.exists()


def test_reach_no_one_acts_on_themselves_moderators_not_on_staff() -> None:
    moderator, other_moderator, admin = staff(MODERATORS), staff(MODERATORS), staff(STAFF_ADMINS)
    warn = ActionInput(kind=Kind.WARN, reason="test", note="n")
    for target in (moderator, other_moderator, admin):
        with pytest.raises(PermissionDenied):
            services.user_moderate(moderator=moderator, user_id=target.pk, action=warn)
    services.user_moderate(moderator=admin, user_id=other_moderator.pk, action=warn)
    root = User.objects.create_superuser("root", "root@example.com", "a long root password")
    with pytest.raises(PermissionDenied):
        services.user_moderate(moderator=admin, user_id=root.pk, action=warn)


def test_a_lifted_ban_restores_sign_in_but_not_old_tokens() -> None:
    target = make_user()
    token = ApiToken.objects.create(user=target, name="old", key_hash="x" * 64, prefix="p")
    admin = staff(STAFF_ADMINS)
    services.user_moderate(
        moderator=admin, user_id=target.pk, action=ActionInput(kind=Kind.BAN, reason="spam ring")
    )
    target.refresh_from_db()
    assert not target.is_active
    token.refresh_from_db()
    assert token.revoked_at is not None
    services.user_moderate(
        moderator=admin, user_id=target.pk, action=ActionInput(kind=Kind.LIFT, reason="appeal")
    )
    target.refresh_from_db()
    assert target.is_active and target.suspended_until is None
    token.refresh_from_db()
    assert token.revoked_at is not None
    with pytest.raises(Conflict):
        services.user_moderate(
            moderator=admin, user_id=target.pk, action=ActionInput(kind=Kind.LIFT, reason="x")
        )
    assert list(
        ModerationAction.objects.filter(target=target).order_by("id").values_list("kind", "detail")
    ) == [("ban", {}), ("lift", {"lifted": "ban"})]


def test_assigning_then_taking_over_is_audited() -> None:
    _alice, _bob, report = reported_conversation(["x"], reported=0)
    first, second = staff(MODERATORS), staff(MODERATORS)
    services.report_assign(moderator=first, report_id=report.pk)
    services.report_assign(moderator=first, report_id=report.pk)  # again: nothing new
    services.report_assign(moderator=second, report_id=report.pk)
    report.refresh_from_db()
    assert report.assignee == second
    assert list(
        ModerationAction.objects.filter(kind=Kind.ASSIGN)
        .order_by("id")
        .values_list("moderator_handle", "detail")
    ) == [(first.handle, {}), (second.handle, {"previous_assignee": first.handle})]


# --- The audit log refuses change and deletion -----------------------------------------------


def _an_entry() -> ModerationAction:
    target = make_user()
    return services.user_moderate(
        moderator=staff(MODERATORS), user_id=target.pk,
        action=ActionInput(kind=Kind.WARN, reason="original reason", note="n"),
    )  # fmt: skip


def test_the_audit_log_refuses_change_and_deletion_through_the_orm() -> None:
    entry = _an_entry()
    entry.reason = "rewritten"
    with pytest.raises(AuditLogIsAppendOnly):
        entry.save()
    with pytest.raises(AuditLogIsAppendOnly):
        entry.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        ModerationAction.objects.filter(pk=entry.pk).update(reason="rewritten")
    with pytest.raises(AuditLogIsAppendOnly):
        ModerationAction.objects.all().delete()
    with pytest.raises(AuditLogIsAppendOnly):
        ModerationAction.objects.bulk_update([entry], ["reason"])
    # What it points at cannot be deleted from under it either.
    with pytest.raises(ProtectedError):
        entry.target.delete()  # type: ignore[union-attr]
    assert ModerationAction.objects.get(pk=entry.pk).reason == "original reason"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE moderation_moderationaction SET reason = 'rewritten'",
        "DELETE FROM moderation_moderationaction",
    ],
)
def test_the_database_refuses_change_and_deletion_of_the_audit_log(statement: str) -> None:
    entry = _an_entry()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert ModerationAction.objects.get(pk=entry.pk).reason == "original reason"


def test_the_panel_refuses_change_and_deletion_of_the_audit_log() -> None:
    entry = _an_entry()
    root = User.objects.create_superuser("root", "root@example.com", "a long root password")
    for user in (staff(STAFF_ADMINS), root):
        client = panel(user)
        url = f"/admin/moderation/moderationaction/{entry.pk}/"
        assert client.get(f"{url}change/").status_code == 200  # readable
        assert client.post(f"{url}change/", {"reason": "rewritten"}).status_code == 403
        assert client.get(f"{url}delete/").status_code == 403
        assert client.post(f"{url}delete/", {"post": "yes"}).status_code == 403
        assert client.get("/admin/moderation/moderationaction/add/").status_code == 403
        changelist = client.post(
            "/admin/moderation/moderationaction/",
            {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
        )
        assert changelist.status_code in (200, 302)
    assert ModerationAction.objects.get(pk=entry.pk).reason == "original reason"


# --- Roles -----------------------------------------------------------------------------------


def test_roles_hold_exactly_their_permissions_even_after_a_hand_edit() -> None:
    moderators = Group.objects.get(name=MODERATORS)
    moderators.permissions.add(Permission.objects.get(codename="ban_user"))
    roles_sync()
    for role, names in ROLE_PERMISSIONS.items():
        held = {
            f"{app}.{codename}"
            for app, codename in Group.objects.get(name=role).permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        assert held == set(names), role
    assert "moderation.ban_user" not in ROLE_PERMISSIONS[MODERATORS]


def test_who_may_give_which_role() -> None:
    moderator, admin = staff(MODERATORS), staff(STAFF_ADMINS)
    root = User.objects.create_superuser("root", "root@example.com", "a long root password")
    newcomer = make_user()
    with pytest.raises(PermissionDenied):
        services.role_grant(granter=moderator, user_id=newcomer.pk, role=MODERATORS, reason="x")
    with pytest.raises(PermissionDenied):
        services.role_grant(granter=admin, user_id=newcomer.pk, role=STAFF_ADMINS, reason="x")
    services.role_grant(granter=admin, user_id=newcomer.pk, role=MODERATORS, reason="hired")
    newcomer.refresh_from_db()
    assert newcomer.is_staff and newcomer.has_perm("moderation.handle_report")
    services.role_grant(granter=root, user_id=newcomer.pk, role=STAFF_ADMINS, reason="promoted")
    services.role_revoke(granter=root, user_id=newcomer.pk, role=STAFF_ADMINS, reason="back")
    services.role_revoke(granter=admin, user_id=newcomer.pk, role=MODERATORS, reason="left")
    newcomer = User.objects.get(pk=newcomer.pk)  # a fresh permission cache
    assert not newcomer.is_staff and not newcomer.has_perm("moderation.handle_report")
    assert list(
        ModerationAction.objects.filter(target=newcomer)
        .order_by("id")
        .values_list("kind", "moderator_handle", "detail")
    ) == [
        ("grant_role", admin.handle, {"role": MODERATORS}),
        ("grant_role", "root", {"role": STAFF_ADMINS}),
        ("revoke_role", "root", {"role": STAFF_ADMINS}),
        ("revoke_role", admin.handle, {"role": MODERATORS}),
    ]


def test_the_setup_command_gives_a_role_and_audits_it() -> None:
    user = make_user("firstadmin")
    call_command("grant_role", "firstadmin", STAFF_ADMINS, reason="first admin")
    user.refresh_from_db()
    assert user.is_staff and user.groups.filter(name=STAFF_ADMINS).exists()
    entry = ModerationAction.objects.get(target=user)
    assert (entry.moderator, entry.moderator_handle, entry.kind) == (None, "setup", "grant_role")


# --- Found in review -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "/admin/accounts/user/?phone_number__startswith=%2B1555",
        "/admin/accounts/user/?email__startswith=a",
        "/admin/accounts/user/?password__startswith=argon2",
        "/admin/messaging/report/?content__startswith=secret",
        "/admin/messaging/report/?franking_key__isnull=False",
        "/admin/accounts/device/?box_public_key__isnull=False",
    ],
)
def test_the_url_filters_only_through_the_pages_own_filters(query: str) -> None:
    """Django lets any field lookup through the URL; that would let a moderator test a
    phone number or a report's hidden text letter by letter."""
    admin = staff(STAFF_ADMINS)
    assert panel(admin).get(query).status_code == 400
    assert panel(admin).get(query.split("?")[0]).status_code == 200  # the page itself


def test_the_pages_own_filters_still_work() -> None:
    client = panel(staff(MODERATORS))
    for query in (
        "/admin/messaging/report/?status__exact=open&reason__exact=spam&age=week",
        "/admin/messaging/report/?verification=profile&assigned=me&kind__exact=message",
        "/admin/accounts/user/?status=suspended&is_staff__exact=1",
        "/admin/moderation/moderationaction/?kind__exact=warn",
    ):
        assert client.get(query).status_code == 200, query


def test_no_one_handles_a_report_against_themselves() -> None:
    moderator, reporter = staff(MODERATORS), make_user()
    report = report_profile(reporter=reporter, reported=moderator, reason="spam")
    for call in (
        lambda: services.report_assign(moderator=moderator, report_id=report.pk),
        lambda: services.report_resolve(
            moderator=moderator,
            report_id=report.pk,
            action=ActionInput(kind=Kind.DISMISS, reason="nothing here"),
        ),
    ):
        with pytest.raises(PermissionDenied):
            call()
    report.refresh_from_db()
    assert report.status == Report.Status.OPEN and report.assignee is None
    services.report_resolve(
        moderator=staff(STAFF_ADMINS),
        report_id=report.pk,
        action=ActionInput(kind=Kind.DISMISS, reason="nothing here"),
    )


def test_the_panel_login_refuses_a_suspended_moderator_with_the_reason() -> None:
    moderator = staff(MODERATORS)
    from accounts.services import user_suspend
    from accounts.tests.factories import PASSWORD

    user_suspend(user=moderator, until=timezone.now() + timedelta(days=1))
    response = Client().post(
        "/admin/login/?next=/admin/", {"username": moderator.handle, "password": PASSWORD}
    )
    assert response.status_code == 200
    assert "This account is suspended until" in response.content.decode()
    regular = make_user()
    response = Client().post(
        "/admin/login/?next=/admin/", {"username": regular.handle, "password": PASSWORD}
    )
    assert response.status_code == 200  # not staff: the admin's own refusal
    assert "_auth_user_id" not in Client().session
