"""The database footprint of the two reads every client makes on opening: the inbox
(``GET /api/v1/conversations``) and a conversation's history
(``GET /api/v1/conversations/{id}/messages``). Counts their SQL queries and times them
in-process, through the whole view and serializer path, and shows how the inbox grows
with the number of conversations the reader has.

The reader is made through the account services (a real API token bound to a certified
device). The people they talk to, the conversations and the messages are written in
bulk (COPY): making 10,000 conversations through the API would take minutes and is not
what is measured. The server never opens a message, so random ciphertext serves.

Run: ``DATABASE_URL=postgres://... python -m bench.footprint`` against a migrated
database. Everything it makes has handles ``fp<run tag>…`` and is deleted at the end.
The app's modules are imported inside the functions, so that the ``__main__`` entry can
set Django up first.
"""

import json
import math
import os
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Model

INBOX_PATH = "/api/v1/conversations"
MESSAGES_PER_CONVERSATION = 3
HISTORY_MESSAGES = 500
HISTORY_OLDER_PAGE = 200
WRAP_BYTES = 24 + 32 + 16  # n_d || box(K), as the envelope serializer checks
SEAL_BYTES = 32 + 48  # seal(K)
CIPHERTEXT_BYTES = 200  # a short text message with its franking key and tag


@dataclass(frozen=True)
class Reader:
    """A signed-in app install: the user, its device and the bearer key bound to it."""

    user_id: uuid.UUID
    device_id: uuid.UUID
    bearer: str


@dataclass(frozen=True)
class Peer:
    user_id: uuid.UUID
    device_id: uuid.UUID


@dataclass(frozen=True)
class Timing:
    queries: int
    sql_ms: float  # the database's share of the captured request
    median_ms: float
    p95_ms: float
    bytes: int
    body: dict[str, Any]


# --- Seeding ---------------------------------------------------------------------------------


def _insert(model: type[Model], rows: Sequence[Model]) -> None:
    """Insert ``rows`` as they are, primary keys included, with COPY: at tens of
    thousands of rows bulk_create spends most of its time building the SQL."""
    from django.db import DEFAULT_DB_ALIAS, connections

    # The connection itself, not the thread-local proxy looked up for every value.
    connection = connections[DEFAULT_DB_ALIAS]
    fields = model._meta.concrete_fields
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    statement = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"

    def values(row: Model) -> list[Any]:
        return [field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields]

    with connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(values(row))


def _take_ids(model: type[Model], count: int) -> list[int]:
    """``count`` values of an auto-increment primary key, so that COPY can write them
    (rows of other tables point at them)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [model._meta.db_table, model._meta.pk.column, count],
        )
        return [row[0] for row in cursor.fetchall()]


def _analyze_seeded_tables() -> None:
    """Fresh statistics, as autovacuum would soon leave them: with none for the rows
    just copied in, the planner guesses one row and picks nested loops."""
    from django.db import connection

    from accounts.models import Device, IdentityKey, User
    from messaging.models import Conversation, Membership, Message

    with connection.cursor() as cursor:
        for model in (User, IdentityKey, Device, Conversation, Membership, Message):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def _make_reader(handle: str) -> Reader:
    """A user with an identity key and one device registered with its API token, as the
    app does on first start."""
    from nacl.public import PrivateKey
    from nacl.signing import SigningKey

    from accounts import crypto
    from accounts import services as account_services

    user = account_services.user_sign_up(
        handle=handle, email=f"{handle}@bench.invalid", password=secrets.token_urlsafe(24)
    )
    aik = SigningKey.generate()
    account_services.identity_key_set(user=user, public_key=bytes(aik.verify_key))
    token, bearer = account_services.api_token_create(user=user, name="footprint")
    device_id = uuid.uuid4()
    sign, box = SigningKey.generate(), PrivateKey.generate()
    created_at = int(time.time())
    certificate_input = crypto.device_certificate_input(
        user_id=user.pk,
        device_id=device_id,
        sign_public_key=bytes(sign.verify_key),
        box_public_key=bytes(box.public_key),
        created_at=created_at,
    )
    account_services.device_register(
        user=user,
        device_id=device_id,
        name="footprint",
        sign_public_key=bytes(sign.verify_key),
        box_public_key=bytes(box.public_key),
        created_at=created_at,
        certificate=aik.sign(certificate_input).signature,
        token=token,
    )
    return Reader(user_id=user.pk, device_id=device_id, bearer=bearer)


def _seed_peers(handles: list[str]) -> list[Peer]:
    """Users with an identity key and one device each. Their keys are random bytes:
    nothing measured here verifies them, and they never sign in."""
    from django.contrib.auth.hashers import make_password
    from django.db import transaction

    from accounts.models import Device, IdentityKey, User
    from bench.seed import random_device

    unusable = make_password(None)
    users = [
        User(id=uuid.uuid4(), handle=handle, email=f"{handle}@bench.invalid", password=unusable)
        for handle in handles
    ]
    identity_keys = [
        IdentityKey(id=key_id, user=user, public_key=secrets.token_bytes(32))
        for key_id, user in zip(_take_ids(IdentityKey, len(users)), users, strict=True)
    ]
    devices = [
        random_device(user, identity_key, "footprint")
        for user, identity_key in zip(users, identity_keys, strict=True)
    ]
    with transaction.atomic():
        _insert(User, users)
        _insert(IdentityKey, identity_keys)
        _insert(Device, devices)
    return [Peer(user.pk, device.pk) for user, device in zip(users, devices, strict=True)]


def _b64u_random(length: int) -> str:
    from common.encoding import b64u_encode

    return b64u_encode(secrets.token_bytes(length))


def _seed_direct_conversations(
    reader: Reader, peers: list[Peer], *, messages_each: int, last_active: list[datetime]
) -> list[uuid.UUID]:
    """One accepted direct conversation between the reader and each peer, last active at
    the matching ``last_active``, with ``messages_each`` messages alternating from the
    peer (first) and the reader, each wrapped for both devices and sealed for both
    users. The reader has read up to their own last message, so unread counts are not
    all zero."""
    from django.db import transaction

    from messaging.models import Conversation, Membership, Message

    conversations: list[Conversation] = []
    memberships: list[Membership] = []
    messages: list[Message] = []
    for peer, last_at in zip(peers, last_active, strict=True):
        low, high = sorted([str(reader.user_id), str(peer.user_id)])
        conversation = Conversation(
            id=uuid.uuid4(),
            kind=Conversation.Kind.DIRECT,
            direct_key=f"{low}:{high}",
            created_by_id=peer.user_id,
            created_at=last_at - timedelta(days=1),
            last_seq=messages_each,
            last_message_at=last_at,
        )
        conversations.append(conversation)
        reader_read = 0
        for seq in range(1, messages_each + 1):
            from_peer = seq % 2 == 1
            if not from_peer:
                reader_read = seq
            sent_at = last_at - timedelta(seconds=messages_each - seq)
            messages.append(
                Message(
                    id=uuid.uuid4(),
                    conversation=conversation,
                    seq=seq,
                    sender_id=peer.user_id if from_peer else reader.user_id,
                    sender_device_id=peer.device_id if from_peer else reader.device_id,
                    client_id=uuid.uuid4(),
                    nonce=secrets.token_bytes(24),
                    ciphertext=secrets.token_bytes(CIPHERTEXT_BYTES),
                    franking_tag=secrets.token_bytes(32),
                    franking_stamp=secrets.token_bytes(32),
                    keys={
                        str(reader.device_id): _b64u_random(WRAP_BYTES),
                        str(peer.device_id): _b64u_random(WRAP_BYTES),
                    },
                    history_keys={
                        str(reader.user_id): _b64u_random(SEAL_BYTES),
                        str(peer.user_id): _b64u_random(SEAL_BYTES),
                    },
                    server_ts=int(sent_at.timestamp() * 1000),
                    size=CIPHERTEXT_BYTES,
                )
            )
        memberships += [
            Membership(
                conversation=conversation, user_id=peer.user_id, joined_at=conversation.created_at,
                last_read_seq=messages_each,
            ),
            Membership(
                conversation=conversation, user_id=reader.user_id, added_by_id=peer.user_id,
                joined_at=conversation.created_at, last_read_seq=reader_read,
            ),
        ]  # fmt: skip
    for membership, membership_id in zip(
        memberships, _take_ids(Membership, len(memberships)), strict=True
    ):
        membership.id = membership_id
    with transaction.atomic():
        _insert(Conversation, conversations)
        _insert(Membership, memberships)
        _insert(Message, messages)
    return [conversation.pk for conversation in conversations]


def _delete_run(prefix: str, reader_handle: str) -> None:
    """Everything this run made: the conversations of its users, then its users.

    The bulk rows go with plain DELETEs: the ORM's delete loads every row to cascade
    in Python, which took most of a minute at 10,000 conversations. Nothing else refers
    to them, and were something to, the deferred foreign keys would fail the
    transaction, not orphan it. The reader, made through the services, goes through
    the ORM and all its cascades.
    """
    from django.db import connection, transaction

    from accounts.models import Device, IdentityKey, User
    from messaging.models import Conversation, Membership, Message

    users = User.objects.filter(handle__startswith=prefix)
    peers = users.exclude(handle=reader_handle).values("pk")

    def delete_where(model: type[Model], column: str, subquery: Any) -> None:
        sql, params = subquery.query.sql_with_params()
        quote = connection.ops.quote_name
        table = quote(model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE {quote(column)} IN ({sql})",  # noqa: S608  (names from the models, values as parameters)
                params,
            )

    with transaction.atomic():
        conversation_ids = list(
            Conversation.objects.filter(memberships__user__in=users.values("pk"))
            .values_list("pk", flat=True)
            .distinct()
        )
        if conversation_ids:
            conversations = Conversation.objects.filter(pk__in=conversation_ids)
            delete_where(Message, "conversation_id", conversations.values("pk"))
            delete_where(Membership, "conversation_id", conversations.values("pk"))
            conversations.delete()
        delete_where(Device, "user_id", peers)
        delete_where(IdentityKey, "user_id", peers)
        delete_where(User, "id", peers)
        # Devices before users: a device PROTECTs the identity key that certified it.
        Device.objects.filter(user__in=users).delete()
        users.delete()


# --- Measuring -------------------------------------------------------------------------------


@contextmanager
def _bench_settings() -> Iterator[None]:
    """The test client's host is ``testserver``. No throttle may refuse a repeated
    request: with no rate for any scope the throttles let everything through and touch
    no cache (common.throttling reads the rates at call time). Registering a device
    e-mails its owner; the console backend of development would print it into the JSON
    this module prints."""
    from django.test.utils import override_settings

    with override_settings(
        ALLOWED_HOSTS=["testserver"],
        API_THROTTLE_RATES={},
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    ):
        yield


def _client(reader: Reader) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {reader.bearer}")
    return client


def _percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: with five samples, p95 is the slowest."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def _measure(client: Any, path: str, params: dict[str, Any], *, repeats: int) -> Timing:
    """One warm-up request (it takes the token's once-a-minute ``last_used_at`` write
    and cold caches), one with its queries captured, then ``repeats`` timed ones without
    the capture's own overhead."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def get() -> Any:
        response = client.get(path, params, secure=True)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.content!r}")
        return response

    get()
    with CaptureQueriesContext(connection) as captured:
        response = get()
    # Now: the start of the next request empties the connection's query log.
    queries = len(captured)
    sql_ms = sum(float(query["time"]) for query in captured.captured_queries) * 1000
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        get()
        durations.append((time.perf_counter() - started) * 1000)
    return Timing(
        queries=queries,
        sql_ms=round(sql_ms, 2),
        median_ms=round(statistics.median(durations), 2),
        p95_ms=round(_percentile(durations, 0.95), 2),
        bytes=len(response.content),
        body=response.json(),
    )


def _inbox(reader: Reader, newest_id: uuid.UUID, size: int, *, repeats: int) -> dict[str, Any]:
    client = _client(reader)
    first = _measure(client, INBOX_PATH, {}, repeats=repeats)
    if first.body["count"] != size or first.body["results"][0]["id"] != str(newest_id):
        raise RuntimeError(f"the inbox does not show the {size} conversations newest first")
    if first.body["results"][0]["unread_count"] != 1:
        raise RuntimeError("the seeded unread message is not counted")
    page_size = len(first.body["results"])
    # The oldest page: limit/offset pagination walks past everything newer to get there.
    last = _measure(client, INBOX_PATH, {"offset": max(0, size - page_size)}, repeats=repeats)
    return {
        "conversations": size,
        "queries": first.queries,
        "sql_ms": first.sql_ms,
        "median_ms": first.median_ms,
        "p95_ms": first.p95_ms,
        "bytes": first.bytes,
        "page_size": page_size,
        "oldest_page_queries": last.queries,
        "oldest_page_sql_ms": last.sql_ms,
        "oldest_page_median_ms": last.median_ms,
        "oldest_page_p95_ms": last.p95_ms,
    }


def _history(reader: Reader, conversation_id: uuid.UUID, *, repeats: int) -> dict[str, Any]:
    client = _client(reader)
    path = f"{INBOX_PATH}/{conversation_id}/messages"
    # Naming the device, as the website does; the bound token implies the same one.
    device = str(reader.device_id)
    newest = _measure(client, path, {"device": device}, repeats=repeats)
    before = HISTORY_MESSAGES // 2 + 1
    older = _measure(
        client, path, {"device": device, "before": before, "limit": HISTORY_OLDER_PAGE},
        repeats=repeats,
    )  # fmt: skip
    for page in (newest, older):
        if not all(message["key"] for message in page.body["results"]):
            raise RuntimeError("a history message came back without the reader's wrap")

    def summary(page: Timing) -> dict[str, Any]:
        return {
            "messages": len(page.body["results"]),
            "queries": page.queries,
            "sql_ms": page.sql_ms,
            "median_ms": page.median_ms,
            "p95_ms": page.p95_ms,
            "bytes": page.bytes,
        }

    return {
        "messages_in_conversation": HISTORY_MESSAGES,
        "newest_page": summary(newest),
        "older_page": {"before": before, "limit": HISTORY_OLDER_PAGE, **summary(older)},
    }


def run_footprint(
    *,
    sizes: Sequence[int] = (100, 1000, 10000),
    repeats: int = 5,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Inbox queries, time and bytes for one reader whose inbox grows through ``sizes``
    conversations, then the history of one conversation of HISTORY_MESSAGES messages.
    Expects django.setup() done against a migrated PostgreSQL database."""
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    if connection.vendor != "postgresql":
        raise RuntimeError("The footprint is measured on PostgreSQL, as deployed.")
    if not sizes:
        raise ValueError("Name at least one inbox size.")
    started = time.perf_counter()
    prefix = f"fp{secrets.token_hex(3)}"
    reader_handle = f"{prefix}r"
    now = timezone.now()
    inbox: list[dict[str, Any]] = []
    try:
        with _bench_settings():
            reader = _make_reader(reader_handle)
            newest_id: uuid.UUID | None = None
            seeded = 0
            for size in sorted(sizes):
                seeding = time.perf_counter()
                # The conversations added at each step are older than those before, so
                # the first page stays the same while the inbox grows behind it.
                numbers = range(seeded, size)
                ids = _seed_direct_conversations(
                    reader,
                    _seed_peers([f"{prefix}{number:07d}" for number in numbers]),
                    messages_each=MESSAGES_PER_CONVERSATION,
                    last_active=[now - timedelta(minutes=number) for number in numbers],
                )
                _analyze_seeded_tables()
                newest_id = newest_id or ids[0]
                seeded = size
                seeded_s = time.perf_counter() - seeding
                row = _inbox(reader, newest_id, size, repeats=repeats)
                inbox.append(row)
                log(
                    f"inbox of {size} conversations (seeded in {seeded_s:.1f} s): "
                    f"{row['queries']} queries ({row['sql_ms']} ms in SQL), "
                    f"median {row['median_ms']} ms, "
                    f"p95 {row['p95_ms']} ms, {row['bytes']} bytes; oldest page: "
                    f"{row['oldest_page_queries']} queries "
                    f"({row['oldest_page_sql_ms']} ms in SQL), "
                    f"median {row['oldest_page_median_ms']} ms"
                )

            (history_conversation,) = _seed_direct_conversations(
                reader,
                _seed_peers([f"{prefix}h"]),
                messages_each=HISTORY_MESSAGES,
                last_active=[now],
            )
            _analyze_seeded_tables()
            history = _history(reader, history_conversation, repeats=repeats)
            log(
                f"history of {HISTORY_MESSAGES} messages: newest page "
                f"{history['newest_page']['queries']} queries, "
                f"median {history['newest_page']['median_ms']} ms; "
                f"{HISTORY_OLDER_PAGE} older: {history['older_page']['queries']} queries, "
                f"median {history['older_page']['median_ms']} ms"
            )
    finally:
        cleaning = time.perf_counter()
        _delete_run(prefix, reader_handle)
        log(f"deleted this run's rows in {time.perf_counter() - cleaning:.1f} s")

    smallest, largest = inbox[0], inbox[-1]
    ratio_key = f"inbox_time_ratio_{largest['conversations']}_vs_{smallest['conversations']}"
    return {
        "debug": settings.DEBUG,
        "repeats": repeats,
        "messages_per_conversation": MESSAGES_PER_CONVERSATION,
        "inbox": inbox,
        ratio_key: round(largest["median_ms"] / smallest["median_ms"], 2),
        "inbox_queries_constant": len(
            {row["queries"] for row in inbox} | {row["oldest_page_queries"] for row in inbox}
        )
        == 1,
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL to a migrated PostgreSQL database.")
    import django

    django.setup()
    result = run_footprint(log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))
