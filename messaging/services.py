"""Every write of the messaging app (PROTOCOL.md sections 3 to 5; docs/messages.md).

The server checks shapes, membership and device sets, stores opaque bytes and
relays them. It never sees a payload, except the one a reporter discloses with a
valid franking proof.
"""

import functools
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NoReturn

from django.conf import settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from nacl.encoding import RawEncoder
from nacl.hash import blake2b

from accounts import services as account_services
from accounts.models import ApiToken, Block, Device, Follow, User
from accounts.selectors import (
    MESSAGE_REFUSALS,
    message_permission,
    refusal_text,
    relationships_with,
)
from common import sql
from common.encoding import b64u_encode, signing_input
from common.errors import ApplicationError, Conflict, NotFound, PermissionDenied, RateLimited
from messaging.models import (
    MUTED_FOREVER,
    Attachment,
    Conversation,
    DeviceCursor,
    Membership,
    Message,
    Report,
)
from messaging.selectors import SendContext, message_send_context
from notifications import services as notification_services
from realtime.publish import publish_now, publish_on_commit

MAX_GROUP_MEMBERS = 50
DELETE_FOR_EVERYONE_WINDOW = timedelta(hours=48)
# Timers a conversation may have, in seconds (none, 30 s ... 4 weeks).
# The disappearing-message timers a conversation may have, in seconds, with their names.
DISAPPEARING_TIMERS = {
    30: "30 seconds",
    300: "5 minutes",
    3600: "1 hour",
    8 * 3600: "8 hours",
    86400: "1 day",
    7 * 86400: "1 week",
    28 * 86400: "4 weeks",
}
DISAPPEARING_CHOICES = tuple(DISAPPEARING_TIMERS)
TYPING_INTERVAL_SECONDS = 2


@dataclass(frozen=True)
class Envelope:
    """A message as the sender's client built it, decoded and length-checked."""

    client_id: uuid.UUID
    sender_device_id: uuid.UUID
    nonce: bytes
    ciphertext: bytes
    franking_tag: bytes
    keys: dict[str, str]  # device id -> b64u wrap (checked to decode to 72 bytes)
    history_keys: dict[str, str] = field(default_factory=dict)  # user id -> b64u seal
    expires_in: int | None = None


# --- Conversations ---------------------------------------------------------------------------


def _direct_key(a: User, b: User) -> str:
    low, high = sorted([str(a.pk), str(b.pk)])
    return f"{low}:{high}"


def _follows(follower: User, followee: User) -> bool:
    return Follow.objects.filter(follower=follower, followee=followee).exists()


def _member_ids(
    conversation_id: uuid.UUID,
    *,
    excluding: User | None = None,
    skip_declined: bool = False,
) -> list[uuid.UUID]:
    """Ids of the active members, for publishing events to."""
    members = Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True)
    if excluding is not None:
        members = members.exclude(user=excluding)
    if skip_declined:
        members = members.exclude(state=Membership.State.DECLINED)
    return list(members.values_list("user_id", flat=True))


def _publish_conversation_updated(conversation: Conversation) -> None:
    publish_on_commit(
        user_ids=_member_ids(conversation.pk),
        event={"type": "conversation.updated", "conversation_id": str(conversation.pk)},
    )


@transaction.atomic
def conversation_get_or_create_direct(*, user: User, other: User) -> tuple[Conversation, bool]:
    """The one direct conversation of a pair, made on first request. Idempotent.

    The other side's membership starts as a message request unless they follow
    ``user``.
    """
    existing = Conversation.objects.filter(direct_key=_direct_key(user, other)).first()
    if existing is not None:
        return existing, False
    decision = message_permission(sender=user, recipient=other)
    if not decision.allowed:
        raise PermissionDenied(
            decision.reason,
            refusal_text(MESSAGE_REFUSALS, decision.reason, other.handle),
            field="handle",
        )
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                kind=Conversation.Kind.DIRECT, direct_key=_direct_key(user, other), created_by=user
            )
    except IntegrityError:  # created concurrently by the other side
        return Conversation.objects.get(direct_key=_direct_key(user, other)), False
    Membership.objects.create(conversation=conversation, user=user)
    Membership.objects.create(
        conversation=conversation,
        user=other,
        added_by=user,
        state=Membership.State.ACCEPTED if _follows(other, user) else Membership.State.REQUESTED,
    )
    _publish_conversation_updated(conversation)
    return conversation, True


def _check_can_add(*, adder: User, users: list[User]) -> None:
    relationships = relationships_with(viewer=adder, targets=users)
    for user in users:
        decision = message_permission(sender=adder, recipient=user, rel=relationships[user.pk])
        if not decision.allowed:
            raise PermissionDenied(
                decision.reason,
                refusal_text(MESSAGE_REFUSALS, decision.reason, user.handle),
                field="handles",
            )


@transaction.atomic
def conversation_create_group(*, creator: User, name: str, members: list[User]) -> Conversation:
    others = {user.pk: user for user in members if user.pk != creator.pk}
    if not 1 <= len(others) <= MAX_GROUP_MEMBERS - 1:
        raise ApplicationError(
            "invalid_size",
            f"A group has 2 to {MAX_GROUP_MEMBERS} members, you included.",
            field="handles",
        )
    _check_can_add(adder=creator, users=list(others.values()))
    conversation = Conversation.objects.create(
        kind=Conversation.Kind.GROUP, name=name.strip()[:64], created_by=creator
    )
    Membership.objects.create(conversation=conversation, user=creator, role=Membership.Role.ADMIN)
    following_creator = set(
        Follow.objects.filter(followee=creator, follower__in=others).values_list(
            "follower_id", flat=True
        )
    )
    Membership.objects.bulk_create(
        Membership(
            conversation=conversation,
            user=user,
            added_by=creator,
            state=Membership.State.ACCEPTED
            if user.pk in following_creator
            else Membership.State.REQUESTED,
        )
        for user in others.values()
    )
    _publish_conversation_updated(conversation)
    return conversation


def _active_membership(*, user: User, conversation: Conversation, lock: bool = False) -> Membership:
    memberships = Membership.objects.filter(
        conversation=conversation, user=user, left_at__isnull=True
    )
    if lock:
        memberships = memberships.select_for_update()
    membership = memberships.first()
    if membership is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    return membership


def _require_group_admin(*, user: User, conversation: Conversation) -> None:
    if conversation.kind != Conversation.Kind.GROUP:
        raise ApplicationError("not_a_group", "Only groups have admins and members to manage.")
    if _active_membership(user=user, conversation=conversation).role != Membership.Role.ADMIN:
        raise PermissionDenied("not_admin", "Only an admin of the group may do that.")


@transaction.atomic
def group_rename(*, actor: User, conversation: Conversation, name: str) -> Conversation:
    if conversation.kind != Conversation.Kind.GROUP:
        raise ApplicationError("not_a_group", "Only groups have names.", field="name")
    _active_membership(user=actor, conversation=conversation)
    conversation.name = name.strip()[:64]
    conversation.save(update_fields=["name"])
    _publish_conversation_updated(conversation)
    return conversation


@transaction.atomic
def group_add_members(*, actor: User, conversation: Conversation, users: list[User]) -> None:
    """Add members. New members read only what is sent after they join."""
    _require_group_admin(user=actor, conversation=conversation)
    conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
    active = set(
        Membership.objects.filter(conversation=conversation, left_at__isnull=True).values_list(
            "user_id", flat=True
        )
    )
    new = [user for user in users if user.pk not in active]
    if len(active) + len(new) > MAX_GROUP_MEMBERS:
        raise ApplicationError(
            "group_full", f"A group has at most {MAX_GROUP_MEMBERS} members.", field="handles"
        )
    _check_can_add(adder=actor, users=new)
    following_actor = set(
        Follow.objects.filter(followee=actor, follower__in=new).values_list(
            "follower_id", flat=True
        )
    )
    for user in new:
        Membership.objects.update_or_create(
            conversation=conversation,
            user=user,
            defaults={
                "left_at": None,
                "added_by": actor,
                "role": Membership.Role.MEMBER,
                "joined_at": timezone.now(),
                "state": Membership.State.ACCEPTED
                if user.pk in following_actor
                else Membership.State.REQUESTED,
                "last_read_seq": conversation.last_seq,
                "first_seq": conversation.last_seq + 1,
            },
        )
    _publish_conversation_updated(conversation)


@transaction.atomic
def group_remove_member(*, actor: User, conversation: Conversation, user: User) -> None:
    """Remove a member (admins). Locks the conversation, as sending does, so no
    message is sent to the member while they are being removed."""
    if user.pk == actor.pk:
        conversation_leave(user=actor, conversation=conversation)
        return
    _require_group_admin(user=actor, conversation=conversation)
    Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
    membership = _active_membership(user=user, conversation=conversation, lock=True)
    _publish_conversation_updated(conversation)  # before, so the removed member hears it
    membership.left_at = timezone.now()
    membership.save(update_fields=["left_at"])


@transaction.atomic
def conversation_leave(*, user: User, conversation: Conversation) -> None:
    """Leave a group. A direct conversation is not left (block or mute instead): its
    two members are fixed, and leaving would silently drop the other's messages."""
    if conversation.kind != Conversation.Kind.GROUP:
        raise ApplicationError(
            "not_a_group", "A direct conversation cannot be left; block or mute instead."
        )
    Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
    membership = _active_membership(user=user, conversation=conversation, lock=True)
    membership.left_at = timezone.now()
    membership.save(update_fields=["left_at"])
    if conversation.kind == Conversation.Kind.GROUP and membership.role == Membership.Role.ADMIN:
        # A group never loses its last admin: the longest-standing member takes over.
        remaining = Membership.objects.filter(conversation=conversation, left_at__isnull=True)
        if not remaining.filter(role=Membership.Role.ADMIN).exists():
            successor = remaining.order_by("joined_at").first()
            if successor is not None:
                successor.role = Membership.Role.ADMIN
                successor.save(update_fields=["role"])
    _publish_conversation_updated(conversation)


@transaction.atomic
def request_accept(*, user: User, conversation: Conversation) -> Membership:
    membership = _active_membership(user=user, conversation=conversation, lock=True)
    if membership.state != Membership.State.ACCEPTED:
        membership.state = Membership.State.ACCEPTED
        membership.save(update_fields=["state"])
        _publish_conversation_updated(conversation)
    return membership


@transaction.atomic
def request_decline(*, user: User, conversation: Conversation) -> Membership:
    """Hide the request. The sender is not told: their messages still go through."""
    membership = _active_membership(user=user, conversation=conversation, lock=True)
    if membership.state == Membership.State.ACCEPTED:
        raise ApplicationError("not_a_request", "This conversation is not a request.")
    membership.state = Membership.State.DECLINED
    membership.save(update_fields=["state"])
    return membership


@transaction.atomic
def request_block(*, user: User, conversation: Conversation) -> Membership:
    """Decline a request and block whoever put the user in the conversation."""
    membership = request_decline(user=user, conversation=conversation)
    adder = membership.added_by
    if adder is not None and adder.pk != user.pk:
        account_services.user_block(blocker=user, blocked=adder)
    return membership


MUTE_CHOICES = (3600, 8 * 3600, 7 * 24 * 3600)


@transaction.atomic
def conversation_mute(*, user: User, conversation: Conversation, seconds: int | None) -> Membership:
    """No notifications from this conversation for ``seconds`` (one of MUTE_CHOICES),
    or until unmuted (``None``). Messages still arrive; only telling of them stops."""
    if seconds is not None and seconds not in MUTE_CHOICES:
        raise ApplicationError(
            "invalid_choice",
            f"Mute for one of {', '.join(map(str, MUTE_CHOICES))} seconds, or null for "
            "until unmuted.",
            field="seconds",
        )
    membership = _active_membership(user=user, conversation=conversation, lock=True)
    membership.muted_until = (
        MUTED_FOREVER if seconds is None else timezone.now() + timedelta(seconds=seconds)
    )
    membership.save(update_fields=["muted_until"])
    return membership


@transaction.atomic
def conversation_unmute(*, user: User, conversation: Conversation) -> Membership:
    membership = _active_membership(user=user, conversation=conversation, lock=True)
    membership.muted_until = None
    membership.save(update_fields=["muted_until"])
    return membership


@transaction.atomic
def conversation_update(
    *,
    actor: User,
    conversation: Conversation,
    name: str | None = None,
    disappearing_seconds: int | None = None,
    set_timer: bool = False,
) -> Conversation:
    """Rename and/or set the timer, all or nothing."""
    if name is not None:
        group_rename(actor=actor, conversation=conversation, name=name)
    if set_timer:
        conversation_set_timer(actor=actor, conversation=conversation, seconds=disappearing_seconds)
    return conversation


@transaction.atomic
def conversation_set_timer(
    *, actor: User, conversation: Conversation, seconds: int | None
) -> Conversation:
    """Set the disappearing-messages timer for messages sent from now on."""
    if seconds is not None and seconds not in DISAPPEARING_CHOICES:
        raise ApplicationError(
            "invalid_choice",
            f"The timer is off or one of {', '.join(map(str, DISAPPEARING_CHOICES))} seconds.",
            field="disappearing_seconds",
        )
    membership = _active_membership(user=actor, conversation=conversation)
    if conversation.kind == Conversation.Kind.GROUP and membership.role != Membership.Role.ADMIN:
        raise PermissionDenied("not_admin", "Only an admin of the group may set the timer.")
    conversation.disappearing_seconds = seconds
    conversation.save(update_fields=["disappearing_seconds"])
    _publish_conversation_updated(conversation)
    return conversation


# --- Sending ---------------------------------------------------------------------------------


def _check_may_send(*, sender: User, conversation: Conversation, membership: Membership) -> None:
    """For writes other than sending (typing, attachments), with the ORM."""
    if membership.state != Membership.State.ACCEPTED:
        _refuse_not_accepted()
    if conversation.kind != Conversation.Kind.DIRECT:
        return
    peer_membership = (
        Membership.objects.filter(conversation=conversation).exclude(user=sender).first()
    )
    if peer_membership is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    peer_id = peer_membership.user_id
    blocked = Block.objects.filter(
        Q(blocker_id=peer_id, blocked=sender) | Q(blocker=sender, blocked_id=peer_id)
    ).exists()
    _check_direct_peer(
        sender=sender, peer_id=peer_id, peer_state=peer_membership.state, blocked=blocked
    )


def _check_may_send_from_context(*, sender: User, context: SendContext, state: str) -> None:
    """The same rules as ``_check_may_send``, on what ``message_send_context`` read."""
    if state != Membership.State.ACCEPTED:
        _refuse_not_accepted()
    if context.kind != Conversation.Kind.DIRECT:
        return
    peer = next((m for m in context.members if m.user_id != sender.pk), None)
    if peer is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    blocked = bool({(peer.user_id, sender.pk), (sender.pk, peer.user_id)} & context.blocks)
    _check_direct_peer(sender=sender, peer_id=peer.user_id, peer_state=peer.state, blocked=blocked)


def _refuse_not_accepted() -> NoReturn:
    raise PermissionDenied("request_not_accepted", "Accept the message request before replying.")


def _check_direct_peer(*, sender: User, peer_id: uuid.UUID, peer_state: str, blocked: bool) -> None:
    if blocked:
        raise PermissionDenied("blocked", "You cannot message this account.")
    if peer_state != Membership.State.ACCEPTED:
        # Until the peer accepts, their privacy settings decide.
        peer = User.objects.get(pk=peer_id)
        decision = message_permission(sender=sender, recipient=peer)
        if not decision.allowed:
            raise PermissionDenied(
                decision.reason, refusal_text(MESSAGE_REFUSALS, decision.reason, peer.handle)
            )


def _check_recipients(
    *,
    envelope: Envelope,
    devices: list[tuple[uuid.UUID, uuid.UUID]],
    history_key_holders: set[uuid.UUID],
) -> set[uuid.UUID]:
    """``keys`` must name exactly the active devices of the active members (``devices``:
    (device, user) pairs), and ``history_keys`` exactly the members who have a history
    key (409 otherwise). Returns the members who have an active device besides the
    sending one: the users the message goes to."""
    expected_devices = {str(device_id) for device_id, _ in devices}
    expected_history = {str(user_id) for user_id in history_key_holders}
    given_devices, given_history = set(envelope.keys), set(envelope.history_keys)
    if given_devices != expected_devices or given_history != expected_history:
        raise Conflict(
            "recipients_changed",
            "The devices of this conversation changed: fetch the key directory and encrypt again.",
            field="keys",
            extra={
                "missing": sorted(expected_devices - given_devices),
                "extra": sorted(given_devices - expected_devices),
                "missing_history_keys": sorted(expected_history - given_history),
                "extra_history_keys": sorted(given_history - expected_history),
            },
        )
    return {user_id for device_id, user_id in devices if device_id != envelope.sender_device_id}


def franking_stamp(
    *, franking_tag: bytes, conversation_id: uuid.UUID, sender_id: uuid.UUID,
    message_id: uuid.UUID, server_ts: int,
) -> bytes:  # fmt: skip
    """HMAC-SHA256(FRANKING_SECRET, "parley/frank/v1\\n{tag}\\n{conv}\\n{sender}\\n{id}\\n{ts}")."""
    data = signing_input(
        "parley/frank/v1",
        b64u_encode(franking_tag),
        str(conversation_id),
        str(sender_id),
        str(message_id),
        server_ts,
    )
    return hmac.new(settings.FRANKING_SECRET.encode(), data, hashlib.sha256).digest()


def message_event(message: Message) -> dict[str, object]:
    """The ``message.new`` event; each device gets its own wrap as ``key``. The sending
    device has no entry, so it gets nothing (it had ``message.sent``)."""
    sender_device = str(message.sender_device_id)
    return {
        "type": "message.new",
        **message_fields(message),
        "_per_device": {
            device_id: {"key": wrap}
            for device_id, wrap in message.keys.items()
            if device_id != sender_device
        },
    }


def message_fields(message: Message) -> dict[str, object]:
    """A message as every reader sees it, without any key. A message past its expiry
    reads as erased even before the periodic sweep has erased it."""
    erased = message.deleted_at is not None or (
        message.expires_at is not None and message.expires_at <= timezone.now()
    )
    return {
        "v": 1,
        "id": str(message.pk),
        "conversation_id": str(message.conversation_id),
        "seq": message.seq,
        "sender_id": str(message.sender_id) if message.sender_id else None,
        "sender_device": str(message.sender_device_id) if message.sender_device_id else None,
        "client_id": str(message.client_id),
        "nonce": None if erased else b64u_encode(bytes(message.nonce)),
        "ciphertext": None if erased else b64u_encode(bytes(message.ciphertext)),
        "franking_tag": b64u_encode(bytes(message.franking_tag)),
        "franking_stamp": b64u_encode(bytes(message.franking_stamp)),
        "server_ts": message.server_ts,
        "expires_at": message.expires_at.isoformat() if message.expires_at else None,
        "deleted": erased,
    }


def message_send(
    *,
    sender: User,
    conversation_id: uuid.UUID,
    envelope: Envelope,
    token: ApiToken | None = None,
) -> tuple[Message, bool]:
    """Store one encrypted message and deliver it after commit. Returns (message, created).

    A repeated ``client_id`` from the same device returns the stored message and
    stores nothing. Locks the conversation row (``select_for_update``) to take the
    next ``seq``, so seqs are gap-free and unique under concurrent senders.

    The hottest write there is: each round trip to the database counts (docs/performance.md).
    """
    try:
        with transaction.atomic():
            return _message_store(
                sender=sender, conversation_id=conversation_id, envelope=envelope, token=token
            )
    except IntegrityError:
        # The same client_id from the same device committed meanwhile: an idempotent
        # retry. The insert failing rolled the whole transaction back, so nothing of
        # this attempt is stored.
        existing = Message.objects.filter(
            sender_device_id=envelope.sender_device_id, client_id=envelope.client_id
        ).first()
        if existing is None:
            raise
        if existing.conversation_id != conversation_id:
            raise Conflict(
                "client_id_reused", "That client_id was used for another message.",
                field="client_id",
            ) from None  # fmt: skip
        return existing, False


_MESSAGE_INSERT_FIELDS = (
    "id", "conversation", "seq", "sender", "sender_device", "client_id", "nonce",
    "ciphertext", "franking_tag", "franking_stamp", "keys", "history_keys", "server_ts",
    "size", "expires_at",
)  # fmt: skip


def _message_store(
    *, sender: User, conversation_id: uuid.UUID, envelope: Envelope, token: ApiToken | None
) -> tuple[Message, bool]:
    """The checks and writes of ``message_send``, as hand-written SQL: five statements
    where the ORM took ten queries and most of the time building them (docs/performance.md).
    The rules, and their order, are those of the rest of this module."""
    if (
        token is not None
        and token.device_id is not None
        and token.device_id != envelope.sender_device_id
    ):
        raise PermissionDenied(
            "wrong_device", "This token belongs to another device.", field="sender_device"
        )
    context = message_send_context(
        sender=sender,
        conversation_id=conversation_id,
        sender_device_id=envelope.sender_device_id,
        client_id=envelope.client_id,
    )
    if not context.sender_device_active:
        raise PermissionDenied(
            "unknown_device", "That is not an active device of yours.", field="sender_device"
        )
    if context.reused_client_id is not None:
        existing_id, existing_conversation_id = context.reused_client_id
        if existing_conversation_id != conversation_id:
            raise Conflict(
                "client_id_reused", "That client_id was used for another message.",
                field="client_id",
            )  # fmt: skip
        return Message.objects.get(pk=existing_id), False
    membership = next((m for m in context.members if m.active and m.user_id == sender.pk), None)
    if not context.conversation_found or membership is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    _check_may_send_from_context(sender=sender, context=context, state=membership.state)
    active = [m for m in context.members if m.active]
    reached = _check_recipients(
        envelope=envelope,
        devices=context.devices,
        history_key_holders=context.history_key_holders,
    )

    now = timezone.now()
    server_ts = int(now.timestamp() * 1000)
    lifetime = envelope.expires_in or context.disappearing_seconds
    if envelope.expires_in and context.disappearing_seconds:
        lifetime = min(envelope.expires_in, context.disappearing_seconds)
    message_id = uuid.uuid4()
    message = Message(
        id=message_id,
        conversation_id=conversation_id,
        seq=context.last_seq + 1,
        sender=sender,
        sender_device_id=envelope.sender_device_id,
        client_id=envelope.client_id,
        nonce=envelope.nonce,
        ciphertext=envelope.ciphertext,
        franking_tag=envelope.franking_tag,
        franking_stamp=franking_stamp(
            franking_tag=envelope.franking_tag,
            conversation_id=conversation_id,
            sender_id=sender.pk,
            message_id=message_id,
            server_ts=server_ts,
        ),
        keys=envelope.keys,
        history_keys=envelope.history_keys,
        server_ts=server_ts,
        size=len(envelope.ciphertext),
        expires_at=now + timedelta(seconds=lifetime) if lifetime else None,
    )
    message._state.adding = False  # stored below, not by save()
    message._state.db = connection.alias
    _message_write(message, now=now)
    # Not to users with no device but the sending one: the sender's own socket would
    # get the event only to drop it (each device takes only its own wrap).
    publish_on_commit(
        user_ids=[
            m.user_id
            for m in active
            if m.state != Membership.State.DECLINED and m.user_id in reached
        ],
        event=message_event(message),
    )
    notification_services.message_sent_on_commit(
        message_id=message.pk, conversation_id=conversation_id, seq=message.seq
    )
    return message, True


def _message_write(message: Message, *, now: datetime) -> None:
    """Insert the message, move the conversation's seq on, and mark the sender as having
    read it: three statements, with no ORM query to build."""
    values = [getattr(message, sql.field(Message, name).attname) for name in _MESSAGE_INSERT_FIELDS]
    conversation_id = sql.db_value(Conversation, "id", message.conversation_id)
    insert, move_seq, mark_read = _message_write_sql(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(insert, sql.insert_values(Message, _MESSAGE_INSERT_FIELDS, values))
        cursor.execute(
            move_seq,
            [message.seq, sql.db_value(Conversation, "last_message_at", now), conversation_id],
        )
        cursor.execute(
            mark_read, [message.seq, conversation_id, sql.db_value(User, "id", message.sender_id)]
        )


@functools.cache
def _message_write_sql(vendor: str) -> tuple[str, str, str]:
    """Built once per database vendor: building costs more than running them."""
    conversation, membership = sql.table(Conversation), sql.table(Membership)
    return (
        sql.insert_sql(Message, _MESSAGE_INSERT_FIELDS),
        f"UPDATE {conversation} SET {sql.column(Conversation, 'last_seq')} = %s, "  # noqa: S608
        f"{sql.column(Conversation, 'last_message_at')} = %s "
        f"WHERE {sql.column(Conversation, 'id')} = %s",
        f"UPDATE {membership} SET {sql.column(Membership, 'last_read_seq')} = %s "  # noqa: S608
        f"WHERE {sql.column(Membership, 'conversation')} = %s "
        f"AND {sql.column(Membership, 'user')} = %s",
    )


# --- Deleting and expiring -------------------------------------------------------------------


def _erase(messages: list[Message], *, now: datetime) -> None:
    for message in messages:
        message.nonce = b""
        message.ciphertext = b""
        message.keys = {}
        message.history_keys = {}
        message.deleted_at = now
    Message.objects.bulk_update(
        messages, ["nonce", "ciphertext", "keys", "history_keys", "deleted_at"]
    )


@transaction.atomic
def message_delete_for_everyone(
    *, user: User, conversation_id: uuid.UUID, message_id: uuid.UUID
) -> Message:
    """Tombstone a message: its ciphertext and keys are erased for good. The sender
    only, within 48 hours."""
    message = (
        Message.objects.select_for_update(of=("self",))
        .filter(
            pk=message_id,
            conversation_id=conversation_id,
            conversation__memberships__user=user,
            conversation__memberships__left_at__isnull=True,
        )
        .first()
    )
    if message is None:
        raise NotFound("message_not_found", "No such message.", field="message_id")
    if message.sender_id != user.pk:
        raise PermissionDenied("not_sender", "Only the sender may delete a message for everyone.")
    if message.deleted_at is not None:
        return message
    now = timezone.now()
    if (
        now.timestamp() * 1000 - message.server_ts
        > DELETE_FOR_EVERYONE_WINDOW.total_seconds() * 1000
    ):
        raise PermissionDenied("too_late", "Messages can be deleted for everyone for 48 hours.")
    _erase([message], now=now)
    publish_on_commit(
        user_ids=_member_ids(message.conversation_id),
        event={
            "type": "message.deleted",
            "conversation_id": str(message.conversation_id),
            "id": str(message.pk),
            "seq": message.seq,
        },
    )
    return message


@transaction.atomic
def messages_erase_expired(*, batch_size: int = 500) -> int:
    """Erase disappearing messages that are due. Idempotent; returns how many."""
    due = list(
        Message.objects.select_for_update(skip_locked=True)
        .filter(expires_at__lte=timezone.now(), deleted_at__isnull=True)
        .order_by("expires_at")[:batch_size]
    )
    _erase(due, now=timezone.now())
    return len(due)


# --- Receipts and typing ---------------------------------------------------------------------


@transaction.atomic
def delivery_ack(*, device: Device, conversation_id: uuid.UUID, seq: int) -> int:
    """The device has everything up to ``seq``: tell the senders of those messages.

    Only a member who accepted the conversation sends receipts: a pending request and
    a declined one look the same to the sender (no "delivered"), so a decline is never
    told.
    """
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    user = device.user
    membership = _active_membership(user=user, conversation=conversation)
    seq = min(seq, conversation.last_seq)
    cursor, _ = DeviceCursor.objects.select_for_update().get_or_create(
        device=device, conversation=conversation
    )
    if seq <= cursor.delivered_seq:
        return cursor.delivered_seq
    senders = set(
        Message.objects.filter(
            conversation=conversation,
            seq__gt=max(cursor.delivered_seq, membership.first_seq - 1),
            seq__lte=seq,
        )
        .exclude(sender=user)
        .values_list("sender_id", flat=True)
    )
    cursor.delivered_seq = seq
    cursor.updated_at = timezone.now()
    cursor.save(update_fields=["delivered_seq", "updated_at"])
    senders.discard(None)
    if senders and membership.state == Membership.State.ACCEPTED:
        publish_on_commit(
            user_ids=list(senders),
            event={
                "type": "receipt.delivered",
                "conversation_id": str(conversation.pk),
                "user_id": str(user.pk),
                "device_id": str(device.pk),
                "seq": seq,
            },
        )
    return seq


@transaction.atomic
def read_mark(*, user: User, conversation_id: uuid.UUID, seq: int) -> int:
    """The user read up to ``seq``. Their other devices always hear of it; the other
    members only if the user sends read receipts."""
    # Lock the membership alone: message_send locks the conversation and then the
    # membership, so taking both here in the other order could deadlock.
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("conversation", "user")
        .filter(conversation_id=conversation_id, user=user, left_at__isnull=True)
        .first()
    )
    if membership is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    # The setting as it is now: ``user`` may be a socket's copy from when it connected.
    shares_reads = membership.user.send_read_receipts
    seq = min(seq, membership.conversation.last_seq)
    if seq <= membership.last_read_seq:
        return membership.last_read_seq
    membership.last_read_seq = seq
    membership.save(update_fields=["last_read_seq"])
    notification_services.notifications_read_for_conversation(
        user=user, conversation_id=conversation_id, seq=seq
    )
    event = {
        "type": "receipt.read",
        "conversation_id": str(conversation_id),
        "user_id": str(user.pk),
        "seq": seq,
    }
    publish_on_commit(user_ids=[user.pk], event=event)
    if shares_reads and membership.state == Membership.State.ACCEPTED:
        publish_on_commit(user_ids=_member_ids(conversation_id, excluding=user), event=event)
    return seq


def typing_notify(*, user: User, conversation_id: uuid.UUID) -> None:
    """Tell the other members that ``user`` is typing. Never stored; at most one
    event every two seconds per user and conversation."""
    # The allowance first: a refused frame costs no query.
    if not cache.add(f"typing:{user.pk}:{conversation_id}", 1, timeout=TYPING_INTERVAL_SECONDS):
        raise RateLimited(
            "rate_limited", "Typing events are limited.", retry_after=TYPING_INTERVAL_SECONDS
        )
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    membership = _active_membership(user=user, conversation=conversation)
    _check_may_send(sender=user, conversation=conversation, membership=membership)
    publish_now(
        user_ids=_member_ids(conversation_id, excluding=user, skip_declined=True),
        event={"type": "typing", "conversation_id": str(conversation_id), "user_id": str(user.pk)},
    )


# --- Attachments -----------------------------------------------------------------------------


@transaction.atomic
def attachment_upload(
    *, user: User, conversation_id: uuid.UUID, upload: UploadedFile
) -> Attachment:
    """Store an encrypted blob for a conversation the user is in. Opaque bytes only."""
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    membership = _active_membership(user=user, conversation=conversation)
    _check_may_send(sender=user, conversation=conversation, membership=membership)
    size = upload.size or 0
    if size > settings.ATTACHMENT_MAX_BYTES:
        raise ApplicationError(
            "file_too_large",
            f"An attachment may be at most {settings.ATTACHMENT_MAX_BYTES // (1024 * 1024)} MiB.",
            field="blob",
        )
    if size == 0:
        raise ApplicationError("empty", "The blob is empty.", field="blob")
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    attachment_id = uuid.uuid4()
    attachment = Attachment(
        id=attachment_id,
        conversation=conversation,
        uploader=user,
        size=size,
        sha256=digest.hexdigest(),
    )
    # Named by id alone: the client's file name never reaches the server's disk.
    attachment.blob.save(attachment_id.hex, ContentFile(upload.read()), save=False)
    attachment.save(force_insert=True)
    return attachment


# --- Reports (PROTOCOL.md section 4) ---------------------------------------------------------


def _stamp_of(message: Message) -> bytes:
    """The stamp the server gave ``message`` when it stored it, computed again."""
    return franking_stamp(
        franking_tag=bytes(message.franking_tag),
        conversation_id=message.conversation_id,
        sender_id=message.sender_id or uuid.UUID(int=0),
        message_id=message.pk,
        server_ts=message.server_ts,
    )


@transaction.atomic
def report_message(
    *,
    reporter: User,
    message_id: uuid.UUID,
    payload: bytes,
    franking_key: bytes,
    franking_stamp_claimed: bytes | None,
    reason: str,
    comment: str = "",
) -> Report:
    """Accept a report only with a valid franking proof: the payload with its key must
    give the stored tag, and the stored stamp must be ours for that tag, message,
    sender and time. Then the payload is verified content from that sender."""
    message = (
        Message.objects.select_related("conversation")
        .filter(pk=message_id, conversation__memberships__user=reporter)
        .first()
    )
    if message is None:
        raise NotFound("message_not_found", "No such message.", field="message_id")
    if message.sender_id == reporter.pk:
        raise ApplicationError("own_message", "You cannot report your own message.")
    if reason not in Report.Reason.values:
        raise ApplicationError("invalid_choice", "Unknown reason.", field="reason")
    tag = blake2b(payload, key=franking_key, digest_size=32, encoder=RawEncoder)
    stamp = _stamp_of(message)
    if not hmac.compare_digest(tag, bytes(message.franking_tag)):
        raise ApplicationError(
            "invalid_franking_proof",
            "The payload and key do not match what was sent.",
            field="franking_key",
        )
    if not hmac.compare_digest(stamp, bytes(message.franking_stamp)) or (
        franking_stamp_claimed is not None
        and not hmac.compare_digest(stamp, franking_stamp_claimed)
    ):
        raise ApplicationError(
            "invalid_franking_proof", "The franking stamp does not match.", field="franking_stamp"
        )
    try:
        content = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApplicationError(
            "invalid_payload", "The payload is not UTF-8.", field="payload"
        ) from exc
    report, created = Report.objects.get_or_create(
        reporter=reporter,
        message=message,
        defaults={
            "reported_user_id": message.sender_id,
            "message_sent_at": message.server_ts,
            "reason": reason,
            "comment": comment.strip()[:1000],
            "verified": True,
            "content": content,
            "franking_key": franking_key,
        },
    )
    if not created:
        raise Conflict("already_reported", "You already reported this message.", field="message_id")
    return report


def franking_proof_holds(*, report: Report) -> bool:
    """Check a message report's proof again, from what the report keeps and the stored
    message: the panel shows content only while this holds. A message erased since
    (disappearing, deleted) keeps its tag and stamp, so its proof still checks."""
    message = report.message
    if report.kind != Report.Kind.MESSAGE or not report.verified or message is None:
        return False
    key = bytes(report.franking_key)
    if len(key) != 32:
        return False
    payload = report.content.encode("utf-8")
    tag = blake2b(payload, key=key, digest_size=32, encoder=RawEncoder)
    stamp = _stamp_of(message)
    return (
        hmac.compare_digest(tag, bytes(message.franking_tag))
        and hmac.compare_digest(stamp, bytes(message.franking_stamp))
        and message.sender_id == report.reported_user_id
    )


@transaction.atomic
def report_profile(*, reporter: User, reported: User, reason: str, comment: str = "") -> Report:
    """Report a profile (handle, display name, bio, avatar). The public profile is kept
    as it was, since it may change before a moderator looks. One open report per
    reporter and profile."""
    if reported.pk == reporter.pk:
        raise ApplicationError("self_target", "You cannot report yourself.", field="handle")
    if reason not in Report.Reason.values:
        raise ApplicationError("invalid_choice", "Unknown reason.", field="reason")
    snapshot = {
        "handle": reported.handle,
        "display_name": reported.display_name,
        "bio": reported.bio,
        "avatar": reported.avatar.name or "",
    }
    try:
        with transaction.atomic():
            return Report.objects.create(
                kind=Report.Kind.PROFILE,
                reporter=reporter,
                reported_user=reported,
                reason=reason,
                comment=comment.strip()[:1000],
                profile_snapshot=snapshot,
            )
    except IntegrityError as exc:
        raise Conflict(
            "already_reported",
            "You already reported this profile; a moderator will look at it.",
            field="handle",
        ) from exc
