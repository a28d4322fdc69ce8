"""Reads of the accounts app, with the privacy rules that decide who may do what.

The rules (docs/accounts.md, "Privacy"):
- A block works both ways: neither side may follow, message or call the other, nor
  find the other in search; the blocked side sees no profile.
- dm_policy: everyone / people I follow / nobody.
- call_policy: everyone / people I follow / mutual follows / nobody.
"""

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.models import (
    HANDLE_RE,
    ApiToken,
    Block,
    CallPolicy,
    Device,
    DeviceLink,
    DmPolicy,
    Follow,
    HistoryKey,
    IdentityKey,
    Mute,
    User,
)
from common.errors import ApplicationError, NotFound, PermissionDenied


@dataclass(frozen=True)
class Relationship:
    following: bool  # viewer follows target
    followed_by: bool  # target follows viewer
    blocking: bool  # viewer blocks target
    blocked_by: bool  # target blocks viewer
    muting: bool


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # a stable code: "ok", "blocked", "policy_nobody", ...


# What a refusal says to the person refused, by Decision.reason: the API's errors and
# the site's notes beside disabled buttons read the same.
MESSAGE_REFUSALS = {
    "self": "You cannot start a conversation with yourself.",
    "blocked": "You cannot message @{handle}.",
    "unavailable": "@{handle} cannot be messaged at the moment.",
    "policy_nobody": "@{handle} does not accept new messages.",
    "policy_following": "@{handle} only accepts messages from people they follow.",
}
CALL_REFUSALS = {
    "self": "You cannot call yourself.",
    "blocked": "You cannot call @{handle}.",
    "unavailable": "@{handle} cannot be called at the moment.",
    "policy_nobody": "@{handle} does not accept calls.",
    "policy_following": "@{handle} only accepts calls from people they follow.",
    "policy_mutual": "@{handle} only accepts calls from people they follow who follow them back.",
}


def refusal_text(refusals: dict[str, str], reason: str, handle: str) -> str:
    return refusals.get(reason, refusals["blocked"]).format(handle=handle)


def relationships_with(*, viewer: User, targets: list[User]) -> dict[uuid.UUID, Relationship]:
    """The viewer's relationship with each target, in three queries however many."""
    ids = [target.pk for target in targets if target.pk != viewer.pk]
    follows = set(
        Follow.objects.filter(
            Q(follower=viewer, followee__in=ids) | Q(follower__in=ids, followee=viewer)
        ).values_list("follower_id", "followee_id")
    )
    blocks = set(
        Block.objects.filter(
            Q(blocker=viewer, blocked__in=ids) | Q(blocker__in=ids, blocked=viewer)
        ).values_list("blocker_id", "blocked_id")
    )
    muted = set(Mute.objects.filter(muter=viewer, muted__in=ids).values_list("muted_id", flat=True))
    nothing = Relationship(False, False, False, False, False)
    return {
        target.pk: nothing
        if target.pk == viewer.pk
        else Relationship(
            following=(viewer.pk, target.pk) in follows,
            followed_by=(target.pk, viewer.pk) in follows,
            blocking=(viewer.pk, target.pk) in blocks,
            blocked_by=(target.pk, viewer.pk) in blocks,
            muting=target.pk in muted,
        )
        for target in targets
    }


def relationship_get(*, viewer: User, target: User) -> Relationship:
    return relationships_with(viewer=viewer, targets=[target])[target.pk]


def message_permission(
    *, sender: User, recipient: User, rel: Relationship | None = None
) -> Decision:
    """May ``sender`` start a conversation with ``recipient``?"""
    if sender.pk == recipient.pk:
        return Decision(False, "self")
    if not recipient.is_active or recipient.is_suspended:
        return Decision(False, "unavailable")
    rel = rel or relationship_get(viewer=sender, target=recipient)
    if rel.blocking or rel.blocked_by:
        return Decision(False, "blocked")
    if recipient.dm_policy == DmPolicy.NOBODY:
        return Decision(False, "policy_nobody")
    if recipient.dm_policy == DmPolicy.FOLLOWING and not rel.followed_by:
        return Decision(False, "policy_following")
    return Decision(True, "ok")


def call_permission(*, caller: User, callee: User, rel: Relationship | None = None) -> Decision:
    """May ``caller`` ring ``callee``?"""
    if caller.pk == callee.pk:
        return Decision(False, "self")
    if not callee.is_active or callee.is_suspended:
        return Decision(False, "unavailable")
    rel = rel or relationship_get(viewer=caller, target=callee)
    if rel.blocking or rel.blocked_by:
        return Decision(False, "blocked")
    policy = callee.call_policy
    if policy == CallPolicy.NOBODY:
        return Decision(False, "policy_nobody")
    if policy == CallPolicy.FOLLOWING and not rel.followed_by:
        return Decision(False, "policy_following")
    if policy == CallPolicy.MUTUAL and not (rel.followed_by and rel.following):
        return Decision(False, "policy_mutual")
    return Decision(True, "ok")


def _visible_users(*, viewer: User) -> QuerySet[User]:
    """Active users the viewer may see: not blocked either way."""
    return (
        User.objects.filter(is_active=True)
        .exclude(Exists(Block.objects.filter(blocker=viewer, blocked=OuterRef("pk"))))
        .exclude(Exists(Block.objects.filter(blocker=OuterRef("pk"), blocked=viewer)))
    )


def user_get_by_login(*, login: str) -> User | None:
    """The account a sign-in names, by handle (with or without @) or e-mail, any case."""
    login = login.strip()
    if "\x00" in login:
        return None
    if "@" in login[1:]:
        return User.objects.filter(email__iexact=login).first()
    return User.objects.filter(handle__iexact=login.removeprefix("@")).first()


def user_get_visible(*, viewer: User, handle: str) -> User:
    """The user with this handle (any case), as the viewer may see them.

    The blocker still sees whom they blocked (to unblock); the blocked side gets 404.
    """
    handle = handle.removeprefix("@")
    if not HANDLE_RE.fullmatch(handle):  # also keeps NUL and the like away from the database
        raise NotFound("user_not_found", "No such user.", field="handle")
    user = User.objects.filter(handle__iexact=handle, is_active=True).first()
    if user is None or (
        user.pk != viewer.pk and Block.objects.filter(blocker=user, blocked=viewer).exists()
    ):
        raise NotFound("user_not_found", "No such user.", field="handle")
    return user


def user_get_reportable(*, handle: str) -> User:
    """The active user with this handle, for a report. Unlike profiles, a block does not
    hide them: people are often blocked by whoever harasses them, and must still be
    able to report them (it tells them only that the account exists, which they knew).
    """
    handle = handle.removeprefix("@")
    user = (
        User.objects.filter(handle__iexact=handle, is_active=True).first()
        if HANDLE_RE.fullmatch(handle)
        else None
    )
    if user is None:
        raise NotFound("user_not_found", "No such user.", field="handle")
    return user


def users_visible_by_handles(*, viewer: User, handles: list[str]) -> list[User]:
    """The users with these handles (any case, @ optional), in one query; 404 naming the
    first handle that does not exist or is hidden from the viewer."""
    wanted = {handle.strip().removeprefix("@").lower(): handle for handle in handles}
    for key, handle in wanted.items():
        if not HANDLE_RE.fullmatch(key):
            raise NotFound("user_not_found", f"No user @{handle}.", field="handles")
    found = {
        user.handle.lower(): user
        for user in _visible_users(viewer=viewer).annotate(handle_lower=Lower("handle"))
        .filter(handle_lower__in=wanted)
    }  # fmt: skip
    for key, handle in wanted.items():
        if key not in found:
            raise NotFound("user_not_found", f"No user @{handle}.", field="handles")
    return [found[key] for key in wanted]


def user_search(*, viewer: User, query: str) -> QuerySet[User]:
    """Users whose handle or display name starts with ``query``, handles first."""
    query = query.strip().removeprefix("@")
    if not query:
        raise ApplicationError("required", "Type the start of a handle or name.", field="q")
    if len(query) > 50:
        raise ApplicationError("too_long", "At most 50 characters.", field="q")
    if not query.isprintable():
        raise ApplicationError("invalid", "Type letters, digits or spaces.", field="q")
    return (
        _visible_users(viewer=viewer)
        .filter(Q(handle__istartswith=query) | Q(display_name__istartswith=query))
        .order_by("handle")
    )


@dataclass(frozen=True)
class Profile:
    user: User
    followers_count: int
    following_count: int
    relationship: Relationship
    can_message: bool
    can_call: bool


def profile_get(*, viewer: User, handle: str) -> Profile:
    user = user_get_visible(viewer=viewer, handle=handle)
    rel = relationship_get(viewer=viewer, target=user)
    followers, following = follow_counts(user=user)
    return Profile(
        user=user,
        followers_count=followers,
        following_count=following,
        relationship=rel,
        can_message=message_permission(sender=viewer, recipient=user, rel=rel).allowed,
        can_call=call_permission(caller=viewer, callee=user, rel=rel).allowed,
    )


def followers_list(*, user: User) -> QuerySet[User]:
    return User.objects.filter(following_set__followee=user, is_active=True).order_by(
        "-following_set__created_at"
    )


def following_list(*, user: User) -> QuerySet[User]:
    return User.objects.filter(follower_set__follower=user, is_active=True).order_by(
        "-follower_set__created_at"
    )


def blocked_list(*, user: User) -> QuerySet[User]:
    return User.objects.filter(blocked_by_set__blocker=user).order_by("handle")


def follow_counts(*, user: User) -> tuple[int, int]:
    return (
        Follow.objects.filter(followee=user).count(),
        Follow.objects.filter(follower=user).count(),
    )


def devices_active(*, user: User) -> QuerySet[Device]:
    return Device.objects.filter(user=user, revoked_at__isnull=True).order_by("registered_at")


def devices_of_user(*, user: User) -> QuerySet[Device]:
    """Active devices first, then revoked ones, each oldest first."""
    return Device.objects.filter(user=user).order_by(
        F("revoked_at").asc(nulls_first=True), "registered_at"
    )


def contact_ids(*, user: User) -> set[uuid.UUID]:
    """Who should hear of a change to the user's keys: people they follow or who follow
    them, and everyone they share a conversation with."""
    from messaging.models import Membership  # messaging builds on accounts, not the reverse

    following = Follow.objects.filter(follower=user).values_list("followee_id", flat=True)
    followers = Follow.objects.filter(followee=user).values_list("follower_id", flat=True)
    shared = (
        Membership.objects.filter(
            conversation__memberships__user=user,
            conversation__memberships__left_at__isnull=True,
            left_at__isnull=True,
        )
        .exclude(user=user)
        .values_list("user_id", flat=True)
    )
    return set(following) | set(followers) | set(shared)


def device_get_active(*, user: User, device_id: uuid.UUID) -> Device | None:
    return Device.objects.filter(pk=device_id, user=user, revoked_at__isnull=True).first()


def key_directory_get(
    *, viewer: User, handle: str | None = None, user_id: uuid.UUID | None = None
) -> User:
    """The user with everything a client needs to verify them itself: the AIK history,
    active devices with certificates, and the current history key. Three queries."""
    if (handle is None) == (user_id is None):
        raise ValueError("give exactly one of handle and user_id")
    users = User.objects.filter(is_active=True).prefetch_related(
        Prefetch("identity_keys", queryset=IdentityKey.objects.order_by("valid_from")),
        Prefetch(
            "devices",
            queryset=Device.objects.filter(revoked_at__isnull=True).order_by("registered_at"),
            to_attr="active_devices",
        ),
        Prefetch(
            "history_keys",
            queryset=HistoryKey.objects.filter(valid_to__isnull=True),
            to_attr="current_history_keys",
        ),
    )
    if handle is not None:
        if not HANDLE_RE.fullmatch(handle.removeprefix("@")):
            raise NotFound("user_not_found", "No such user.", field="handle")
        users = users.filter(handle__iexact=handle.removeprefix("@"))
    elif user_id is not None:
        users = users.filter(pk=user_id)
    user = users.first()
    if user is None or (
        user.pk != viewer.pk and Block.objects.filter(blocker=user, blocked=viewer).exists()
    ):
        raise NotFound("user_not_found", "No such user.", field="handle" if handle else "user_id")
    return user


# --- Device links (docs/keys-and-devices.md, "Linking a device") -----------------------------


def session_key_digest(session_key: str) -> str:
    """What a link keeps of the website session that asked for it: a SHA-256, never the
    key (a credential) itself."""
    return hashlib.sha256(session_key.encode()).hexdigest()


def device_for_caller(*, user: User, token: ApiToken | None, named: object | None) -> Device:
    """The caller's own active device: a bound token's device (naming another is
    refused), otherwise the one named (a website session or an unbound token). Also
    the device whose wraps a message read returns (messaging.api)."""
    if token is not None and token.device_id is not None:
        if named and str(named) != str(token.device_id):
            raise ApplicationError(
                "wrong_device", "This token belongs to another device.", field="device"
            )
        device_id: uuid.UUID | None = token.device_id
    else:
        try:
            device_id = uuid.UUID(str(named)) if named else None
        except ValueError as exc:
            raise ApplicationError("invalid", "Not a device id.", field="device") from exc
    if device_id is None:
        raise ApplicationError("required", "Name your device.", field="device")
    device = device_get_active(user=user, device_id=device_id)
    if device is None:
        raise NotFound("device_not_found", "That is not an active device of yours.", field="device")
    return device


def device_link_is_requester(
    *, link: DeviceLink, token: ApiToken | None, session_key: str | None
) -> bool:
    """Whether the request comes from the token or website session that asked for the link."""
    if link.requester_token_id is not None:
        return token is not None and token.pk == link.requester_token_id
    if token is not None or not session_key:
        return False
    return hmac.compare_digest(session_key_digest(session_key), link.requester_session)


def device_link_check_live(*, link: DeviceLink) -> None:
    """410 for a link past its ten minutes (an approved one never is)."""
    if link.is_gone(timezone.now()):
        raise ApplicationError(
            "link_expired",
            "This link has expired. Start again on the new device.",
            field="link_id",
            status_code=410,
        )


def device_link_get(
    *,
    user: User,
    link_id: uuid.UUID,
    token: ApiToken | None,
    session_key: str | None,
    named_device: object | None,
) -> DeviceLink:
    """A link as one of its two sides sees it: the token or session that asked for it
    (polling), or an active device of the same user (to read the revealed keys).

    Another user's link is 404, never 403: its existence does not leak. An expired
    link is 410.
    """
    link = DeviceLink.objects.filter(pk=link_id, user=user).first()
    if link is None:
        raise NotFound("link_not_found", "No such link.", field="link_id")
    device_link_check_live(link=link)
    if device_link_is_requester(link=link, token=token, session_key=session_key):
        return link
    if named_device or (token is not None and token.device_id is not None):
        device_for_caller(user=user, token=token, named=named_device)
        return link
    raise PermissionDenied(
        "not_link_party",
        "Only the new device that asked for this link, or one of your devices, can see it.",
        field="device",
    )


def device_links_open(*, user: User) -> QuerySet[DeviceLink]:
    """The user's links still in progress (at most one), for their existing devices."""
    return DeviceLink.objects.filter(
        user=user, state__in=DeviceLink.OPEN_STATES, expires_at__gt=timezone.now()
    ).order_by("-requested_at")
