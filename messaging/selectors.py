"""Reads of the messaging app. Each returns only what the caller may see, and for a
device only its own key wrap (or its user's history key seal)."""

import functools
import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import (
    Count,
    F,
    IntegerField,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce

from accounts.models import Block, Device, HistoryKey, User
from common import sql
from common.encoding import b64u_decode, b64u_encode
from common.errors import ApplicationError, NotFound
from messaging.models import Conversation, DeviceCursor, Membership, Message

HISTORY_PAGE_MAX = 200
SYNC_PAGE_MAX = 500


@dataclass(frozen=True)
class SendMember:
    user_id: uuid.UUID
    state: str
    active: bool  # has not left


@dataclass(frozen=True)
class SendContext:
    """What sending one message checks, read in two statements (docs/performance.md)."""

    conversation_found: bool
    kind: str
    last_seq: int
    disappearing_seconds: int | None
    sender_device_active: bool
    reused_client_id: tuple[uuid.UUID, uuid.UUID] | None  # (message id, its conversation)
    members: list[SendMember]  # every membership, left ones too
    devices: list[tuple[uuid.UUID, uuid.UUID]]  # (device, user): active members' active ones
    history_key_holders: set[uuid.UUID]  # active members with a current history key
    blocks: set[tuple[uuid.UUID, uuid.UUID]]  # (blocker, blocked): the sender and a member


@functools.cache
def _send_context_sql(vendor: str) -> tuple[str, str]:
    """Built once per database vendor: building costs more than running them."""
    conversation, membership = sql.table(Conversation), sql.table(Membership)
    message, device = sql.table(Message), sql.table(Device)
    history_key, block = sql.table(HistoryKey), sql.table(Block)

    def c(model: Any, name: str) -> str:
        return sql.column(model, name)

    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    conversation_row = (
        f"SELECT {c(Conversation, 'kind')}, {c(Conversation, 'last_seq')}, "  # noqa: S608
        f"{c(Conversation, 'disappearing_seconds')} FROM {conversation} "
        f"WHERE {c(Conversation, 'id')} = %s{lock}"
    )
    members = (
        f"SELECT {c(Membership, 'user')} FROM {membership} "  # noqa: S608
        f"WHERE {c(Membership, 'conversation')} = %s"
    )
    active_members = f"{members} AND {c(Membership, 'left_at')} IS NULL"
    no_id = sql.null_uuid()
    # One row per fact, tagged by its first column. PostgreSQL resolves each column's
    # type across the branches, so a branch with no id there gives a NULL cast to the
    # UUID type, never an untyped one (which resolves as text).
    everything = f"""
        SELECT 'sender_device', {c(Device, "user")}, {c(Device, "id")}, ''
          FROM {device}
         WHERE {c(Device, "id")} = %s AND {c(Device, "user")} = %s
           AND {c(Device, "revoked_at")} IS NULL
        UNION ALL
        SELECT 'client_id', {c(Message, "conversation")}, {c(Message, "id")}, ''
          FROM {message}
         WHERE {c(Message, "sender_device")} = %s AND {c(Message, "client_id")} = %s
        UNION ALL
        SELECT CASE WHEN {c(Membership, "left_at")} IS NULL THEN 'member' ELSE 'former' END,
               {c(Membership, "user")}, {no_id}, {c(Membership, "state")}
          FROM {membership}
         WHERE {c(Membership, "conversation")} = %s
        UNION ALL
        SELECT 'device', {c(Device, "user")}, {c(Device, "id")}, ''
          FROM {device}
         WHERE {c(Device, "user")} IN ({active_members}) AND {c(Device, "revoked_at")} IS NULL
        UNION ALL
        SELECT 'history_key', {c(HistoryKey, "user")}, {no_id}, ''
          FROM {history_key}
         WHERE {c(HistoryKey, "user")} IN ({active_members})
           AND {c(HistoryKey, "valid_to")} IS NULL
        UNION ALL
        SELECT 'block', {c(Block, "blocker")}, {c(Block, "blocked")}, ''
          FROM {block}
         WHERE ({c(Block, "blocker")} = %s AND {c(Block, "blocked")} IN ({members}))
            OR ({c(Block, "blocked")} = %s AND {c(Block, "blocker")} IN ({members}))
    """  # noqa: S608
    return conversation_row, everything


def message_send_context(
    *, sender: User, conversation_id: uuid.UUID, sender_device_id: uuid.UUID, client_id: uuid.UUID
) -> SendContext:
    """Everything ``messaging.services.message_send`` checks, in two statements instead
    of ten ORM queries: sending is the hottest path there is. Run it inside the sending
    transaction: the first statement locks the conversation row, to take the next seq."""
    conversation_row, everything = _send_context_sql(connection.vendor)
    conversation = sql.db_value(Conversation, "id", conversation_id)
    sender_id = sql.db_value(User, "id", sender.pk)
    device = sql.db_value(Device, "id", sender_device_id)
    with connection.cursor() as cursor:
        cursor.execute(conversation_row, [conversation])
        row = cursor.fetchone()
        cursor.execute(
            everything,
            [
                device, sender_id,
                device, sql.db_value(Message, "client_id", client_id),
                conversation,
                conversation,
                conversation,
                sender_id, conversation, sender_id, conversation,
            ],
        )  # fmt: skip
        facts = cursor.fetchall()
    members: list[SendMember] = []
    devices: list[tuple[uuid.UUID, uuid.UUID]] = []
    holders: set[uuid.UUID] = set()
    blocks: set[tuple[uuid.UUID, uuid.UUID]] = set()
    sender_device_active = False
    reused: tuple[uuid.UUID, uuid.UUID] | None = None
    for kind, first, second, state in facts:
        if kind == "device":
            devices.append((sql.as_uuid(second), sql.as_uuid(first)))
        elif kind in ("member", "former"):
            members.append(SendMember(sql.as_uuid(first), state, kind == "member"))
        elif kind == "history_key":
            holders.add(sql.as_uuid(first))
        elif kind == "block":
            blocks.add((sql.as_uuid(first), sql.as_uuid(second)))
        elif kind == "sender_device":
            sender_device_active = True
        elif kind == "client_id":
            reused = (sql.as_uuid(second), sql.as_uuid(first))
    return SendContext(
        conversation_found=row is not None,
        kind=row[0] if row else "",
        last_seq=int(row[1]) if row else 0,
        disappearing_seconds=row[2] if row else None,
        sender_device_active=sender_device_active,
        reused_client_id=reused,
        members=members,
        devices=devices,
        history_key_holders=holders,
        blocks=blocks,
    )


def conversation_get_for_member(*, user: User, conversation_id: uuid.UUID) -> Conversation:
    conversation = (
        Conversation.objects.filter(
            pk=conversation_id, memberships__user=user, memberships__left_at__isnull=True
        )
        # The same join as the filter: the caller's own membership.
        .annotate(my_state=F("memberships__state"), my_muted_until=F("memberships__muted_until"))
        .prefetch_related(_members_prefetch())
        .first()
    )
    if conversation is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    return conversation


def membership_get(*, user: User, conversation_id: uuid.UUID) -> Membership:
    membership = Membership.objects.filter(
        conversation_id=conversation_id, user=user, left_at__isnull=True
    ).first()
    if membership is None:
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    return membership


def member_by_handle(*, conversation: Conversation, handle: str) -> User:
    membership = (
        Membership.objects.select_related("user")
        .filter(
            conversation=conversation, user__handle__iexact=handle.removeprefix("@"),
            left_at__isnull=True,
        )
        .first()
    )  # fmt: skip
    if membership is None:
        raise NotFound("member_not_found", "No such member.", field="handle")
    return membership.user


def _members_prefetch() -> Prefetch[Any]:
    return Prefetch(
        "memberships",
        queryset=Membership.objects.filter(left_at__isnull=True)
        .select_related("user")
        .order_by("joined_at"),
        to_attr="active_memberships",
    )


def inbox(*, user: User, requests: bool = False) -> QuerySet[Conversation]:
    """The user's conversations, newest activity first, with the last message's metadata
    and the unread count. A fixed number of queries whatever their number: one for the
    conversations with their annotations, one for the members."""
    states = [Membership.State.REQUESTED] if requests else [Membership.State.ACCEPTED]
    # Only what the user may see: nothing from before they joined.
    last = Message.objects.filter(
        conversation=OuterRef("pk"), seq__gte=OuterRef("my_first_seq")
    ).order_by("-seq")
    unread = (
        Message.objects.filter(
            conversation=OuterRef("pk"),
            seq__gt=OuterRef("my_last_read_seq"),
            deleted_at__isnull=True,
        )
        .exclude(sender=user)
        .order_by()
        .values("conversation")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return (
        Conversation.objects.filter(
            memberships__user=user,
            memberships__left_at__isnull=True,
            memberships__state__in=states,
        )
        # The same join as the filter: the user's own membership comes with each row.
        # Looked up again per conversation it cost ten index probes a row, for every
        # row up to the end of the page: deep pages of a large inbox were 6x slower.
        .annotate(
            my_first_seq=F("memberships__first_seq"),
            my_last_read_seq=F("memberships__last_read_seq"),
            my_state=F("memberships__state"),
            my_muted_until=F("memberships__muted_until"),
            my_role=F("memberships__role"),
            last_message_id=Subquery(last.values("id")[:1]),
            last_message_seq=Subquery(last.values("seq")[:1]),
            last_sender_id=Subquery(last.values("sender_id")[:1]),
            last_server_ts=Subquery(last.values("server_ts")[:1]),
            unread_count=Coalesce(Subquery(unread, output_field=IntegerField()), Value(0)),
        )
        .prefetch_related(_members_prefetch())
        .order_by(F("last_message_at").desc(nulls_last=True), "-created_at", "-id")
    )


def _with_own_keys(messages: QuerySet[Message], *, device: Device) -> QuerySet[Message]:
    """Only this device's wrap and its user's history seal leave the database."""
    return messages.defer("keys", "history_keys").annotate(
        device_key=KT(f"keys__{device.pk}"),
        history_key=KT(f"history_keys__{device.user_id}"),
    )


def history_page(
    *, user: User, device: Device, conversation_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[Message]:
    """Messages before ``before_seq`` (newest first), from when the user joined."""
    membership = membership_get(user=user, conversation_id=conversation_id)
    limit = max(1, min(limit, HISTORY_PAGE_MAX))
    messages = Message.objects.filter(
        conversation_id=conversation_id, seq__gte=membership.first_seq
    )
    if before_seq is not None:
        messages = messages.filter(seq__lt=before_seq)
    return list(_with_own_keys(messages, device=device).order_by("-seq")[:limit])


@dataclass
class SyncPage:
    messages: list[Message]
    cursor: str
    has_more: bool


def _decode_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        positions = json.loads(b64u_decode(cursor))
        if not isinstance(positions, dict) or not all(
            isinstance(key, str) and isinstance(value, int) and value >= 0
            for key, value in positions.items()
        ):
            raise ValueError("bad cursor")
        return {str(uuid.UUID(key)): value for key, value in positions.items()}
    except (ValueError, TypeError, RecursionError) as exc:
        raise ApplicationError(
            "invalid_cursor", "That sync cursor is not ours.", field="cursor"
        ) from exc


def _encode_cursor(positions: dict[str, int]) -> str:
    return b64u_encode(json.dumps(positions, separators=(",", ":"), sort_keys=True).encode())


def sync(*, user: User, device: Device, cursor: str | None, limit: int) -> SyncPage:
    """Everything after ``cursor`` in every conversation the user is in, oldest first.

    The cursor is opaque to clients: the last seq seen per conversation. Seqs are
    gap-free and assigned under a lock, so nothing that commits later can land behind
    a cursor. A device starts from when it was registered (it has no wraps before).
    """
    positions = _decode_cursor(cursor)
    limit = max(1, min(limit, SYNC_PAGE_MAX))
    memberships = list(
        Membership.objects.filter(user=user, left_at__isnull=True)
        .exclude(state=Membership.State.DECLINED)
        .values_list("conversation_id", "conversation__last_seq", "first_seq")
    )
    registered_ms = int(device.registered_at.timestamp() * 1000)
    condition = Q()
    for conversation_id, last_seq, first_seq in memberships:
        after = positions.get(str(conversation_id))
        if after is None:
            condition |= Q(
                conversation_id=conversation_id, seq__gte=first_seq, server_ts__gte=registered_ms
            )
        elif after < last_seq:
            condition |= Q(conversation_id=conversation_id, seq__gt=max(after, first_seq - 1))
    if not condition:
        return SyncPage([], _encode_cursor(positions), False)
    rows = list(
        # By conversation, then seq: a page cut never skips a message.
        _with_own_keys(Message.objects.filter(condition), device=device).order_by(
            "conversation_id", "seq"
        )[: limit + 1]
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    for message in rows:
        key = str(message.conversation_id)
        positions[key] = max(positions.get(key, 0), message.seq)
    if not has_more:
        # Conversations with nothing new still get a position, so the next sync is cheap.
        for conversation_id, last_seq, _ in memberships:
            positions.setdefault(str(conversation_id), last_seq)
    # Only conversations the user is still in: the cursor does not grow forever.
    current = {str(conversation_id) for conversation_id, _, _ in memberships}
    positions = {key: value for key, value in positions.items() if key in current}
    return SyncPage(rows, _encode_cursor(positions), has_more)


@dataclass(frozen=True)
class MemberReceipts:
    """How far another member has the conversation: ``read_seq`` is ``None`` when they
    do not send read receipts (or have not accepted: a decline is never told)."""

    user_id: uuid.UUID
    delivered_seq: int
    read_seq: int | None


def receipts_get(*, user: User, conversation_id: uuid.UUID) -> list[MemberReceipts]:
    """Delivered and read marks of the other members, as receipts would have told them
    live, in two queries. Delivered is the furthest of a member's devices."""
    members = list(
        Membership.objects.filter(conversation_id=conversation_id, left_at__isnull=True).values(
            "user_id", "state", "last_read_seq", "user__send_read_receipts"
        )
    )
    if not any(member["user_id"] == user.pk for member in members):
        raise NotFound("conversation_not_found", "No such conversation.", field="conversation_id")
    others = [member for member in members if member["user_id"] != user.pk]
    delivered = dict(
        DeviceCursor.objects.filter(
            conversation_id=conversation_id, device__user__in=[m["user_id"] for m in others]
        )
        .values("device__user")
        .annotate(furthest=Max("delivered_seq"))
        .values_list("device__user", "furthest")
    )
    receipts = []
    for member in others:
        accepted = member["state"] == Membership.State.ACCEPTED
        shares_reads = accepted and member["user__send_read_receipts"]
        receipts.append(
            MemberReceipts(
                user_id=member["user_id"],
                delivered_seq=delivered.get(member["user_id"], 0) if accepted else 0,
                read_seq=member["last_read_seq"] if shares_reads else None,
            )
        )
    return receipts
